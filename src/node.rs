//! The composition root: a node built from its parts and started. Opens the content store,
//! the catalog in service and both protocols over it, the upstream link, the journal and the
//! tokens; binds every listener; puts the whole into an [`App`] and hands it to the listeners of
//! `server`, then runs the node's background work (catalog reloads, syncs, prefetches, rollups,
//! cache maintenance) until [`Running::shutdown`].
//!
//! Also what an operator is told before a node starts ([`preflight`], [`advisories`]), since it
//! is the one place that sees the whole configuration put together. The only module that knows
//! every part; nothing in the node calls it (the CLI does).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin;
use crate::app::{App, Listening, Reloadable};
use crate::config::Config;
use crate::content::{self, Store};
use crate::error::{Error, Kind, Result};
use crate::http::Parsers;
use crate::metrics::Metrics;
use crate::served::Served;
use crate::server;
use crate::upstream::{self, Upstream};
use crate::{wsusss, wusp};

/// A started node. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    pub app: Arc<App>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    pub fn listening(&self) -> Listening {
        self.app.listen
    }

    pub fn store(&self) -> &Store {
        &self.app.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.app.metrics
    }

    /// Stop accepting, let open connections finish (up to `grace`), then return.
    pub async fn shutdown(mut self, grace: Duration) {
        self.app.ready.store(false, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.abort_all();
    }
}

/// Start a node from its configuration: open the store (recovering what a crash left), bind
/// every listener, and serve. Returns once the node is ready.
pub async fn start(config: &Config) -> Result<Running> {
    // Everything lives under data_dir: a place the node cannot make is the operator's to fix.
    let data_dir = &config.node.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|e| {
        Error::internal(
            Kind::Config,
            format!("node.data_dir {}: cannot create", data_dir.display()),
        )
        .with_source(e)
    })?;
    let metrics = Arc::new(Metrics::new());
    if let Some(limit) = server::raise_descriptor_limit() {
        metrics.descriptors_limit.set(gauge(limit));
    }
    metrics.set_node(&config.node.name, config.upstream.is_some());
    metrics.cache_disk_limit.set(gauge(config.cache.disk_bytes));
    metrics
        .cache_min_free_disk
        .set(gauge(config.cache.min_free_disk));
    if let Some(up) = &config.upstream {
        metrics.sync_interval.set(gauge(up.sync_interval.as_secs()));
        metrics
            .rollup_interval
            .set(gauge(config.reports.rollup_interval.as_secs()));
    }
    let admin_tokens = admin::tokens(&config.admin)?;
    let downstream_tokens = crate::auth::Tokens::from_file(
        "downstream.token_file",
        config.downstream.token_file.as_deref(),
    )?;
    let upstream = match &config.upstream {
        Some(up) => {
            let settings = upstream::Settings::from_config(up, &config.wan)?;
            Some(Arc::new(Upstream::new(settings, metrics.clone())?))
        }
        None => None,
    };
    let store = Store::open(
        content::Settings::from_config(config),
        upstream.clone(),
        metrics.clone(),
    )
    .await?;

    // Both protocols serve the same catalog; opening them reads the state (and brings a
    // PostgreSQL database's schema up to date).
    let (database, served, wusp, wsusss, reports) = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let database = crate::state::Database::from_config(&config)?;
            let served = Arc::new(Served::open(&database)?);
            let settings = wusp::Settings::default();
            let limits = settings.limits;
            let wusp = Arc::new(wusp::Service::open(served.clone(), &database, settings)?);
            let wsusss = Arc::new(wsusss::Service::open(served.clone(), &database, limits)?);
            let reports = admin::open_reports(&database)?;
            Ok::<_, crate::catalog::CatalogError>((database, served, wusp, wsusss, reports))
        })
        .await
        .map_err(|e| Error::internal(Kind::Io, format!("opening state.db: {e}")))?
        .map_err(Error::from)?
    };
    let bind = |addr: SocketAddr, key: &'static str| async move {
        TcpListener::bind(addr).await.map_err(|e| {
            Error::internal(Kind::Config, format!("listen.{key} {addr}: cannot bind"))
                .with_source(e)
        })
    };
    let http = bind(config.listen.http, "http").await?;
    let admin_listener = bind(config.listen.admin, "admin").await?;
    let local = |l: &TcpListener| {
        l.local_addr()
            .map_err(|e| Error::io("reading a bound address", e))
    };
    // HTTP/3 takes the UDP port of the same number as the HTTPS listener's actual port.
    let (https, quic) = match (config.listen.https, &config.tls) {
        (Some(addr), Some(tls)) => {
            let server = crate::tls::server_config(&tls.cert, &tls.key, tls.client_ca.as_deref())?;
            let listener = bind(addr, "https").await?;
            let quic = server::h3::bind(local(&listener)?, &server)?;
            (
                Some((listener, tokio_rustls::TlsAcceptor::from(Arc::new(server)))),
                Some(quic),
            )
        }
        _ => (None, None),
    };
    let listen = Listening {
        http: local(&http)?,
        https: match &https {
            Some((l, _)) => Some(local(l)?),
            None => None,
        },
        quic: match &quic {
            Some(endpoint) => Some(
                endpoint
                    .local_addr()
                    .map_err(|e| Error::io("reading a bound address", e))?,
            ),
            None => None,
        },
        admin: local(&admin_listener)?,
    };

    let replica = match (&config.upstream, &upstream) {
        (Some(up), Some(link)) => Some(Arc::new(wsusss::replica::Replica::new(
            wsusss::sync::Syncer::new(link.clone(), database.clone(), &config.node.name)
                .with_drivers(up.drivers)
                .with_replication(up.replication),
            up.sync_interval,
            config.cache.prefetch == crate::config::Prefetch::Approved,
        ))),
        _ => None,
    };
    let rollup = upstream.as_ref().map(|link| {
        Arc::new(
            wsusss::rollup_client::Rollup::new(
                link.clone(),
                wsusss::rollup_client::Sources {
                    served: served.clone(),
                    content: store.clone(),
                    replica: replica.clone(),
                },
                database.clone(),
                served.server_id(),
                &config.node.name,
                config.reports.rollup_interval,
            )
            .with_replica(
                config
                    .upstream
                    .as_ref()
                    .is_none_or(|up| up.replication.is_replica()),
            ),
        )
    });
    let app = Arc::new(App {
        name: config.node.name.clone(),
        replica: replica.clone(),
        rollup: rollup.clone(),
        reports,
        store: store.clone(),
        served,
        wsusss,
        wusp,
        metrics,
        upstream,
        upstream_config: config.upstream.clone(),
        admin_tokens,
        admin_names: admin_names(config),
        admin_read_networks: std::sync::RwLock::new(config.admin.read_networks.clone()),
        reloadable: std::sync::Mutex::new(Reloadable {
            admin_token_file: config.admin.token_file.clone(),
            downstream_token_file: config.downstream.token_file.clone(),
        }),
        downstream_tokens,
        downstream_certificates: config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
        downstream_open: config.downstream.allow_anonymous,
        compress_answers: config.listen.compress_answers,
        admission: crate::http::Admission::new(
            config
                .listen
                .max_soap_calls
                .unwrap_or_else(|| 4 * std::thread::available_parallelism().map_or(2, |n| n.get())),
            config.listen.max_soap_wait,
        ),
        parsers: Parsers::for_this_machine(),
        limits: config.listen.limits,
        started: Instant::now(),
        ready: AtomicBool::new(false),
        listen,
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tasks.spawn(reload_catalog(
        app.served.clone(),
        replica.clone(),
        shutdown_rx.clone(),
    ));
    if let Some(replica) = &replica {
        tasks.spawn(
            replica
                .clone()
                .run_syncs(app.served.clone(), shutdown_rx.clone()),
        );
        tasks.spawn(replica.clone().run_prefetches(
            app.served.clone(),
            store.clone(),
            shutdown_rx.clone(),
        ));
        // What is approved already and not here yet (a restart, a sync made by the CLI).
        replica.catalog_changed();
    }
    if let Some(rollup) = &rollup {
        tasks.spawn(rollup.clone().run(shutdown_rx.clone()));
    }
    let maintenance = store.spawn_maintenance();
    {
        let mut rx = shutdown_rx.clone();
        tasks.spawn(async move {
            let _ = rx.changed().await;
            maintenance.abort();
        });
    }
    tasks.spawn(server::serve_tcp(
        http,
        None,
        app.clone(),
        server::Role::Clients,
        shutdown_rx.clone(),
    ));
    if let Some((listener, acceptor)) = https {
        tasks.spawn(server::serve_tcp(
            listener,
            Some(acceptor),
            app.clone(),
            server::Role::Clients,
            shutdown_rx.clone(),
        ));
    }
    if let Some(endpoint) = quic {
        tasks.spawn(server::h3::serve(
            endpoint,
            app.clone(),
            shutdown_rx.clone(),
        ));
    }
    tasks.spawn(server::serve_tcp(
        admin_listener,
        None,
        app.clone(),
        server::Role::Admin,
        shutdown_rx,
    ));
    for advisory in advisories(config) {
        tracing::warn!(key = %advisory.key, "{}", advisory.message);
    }
    app.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        node = %app.name,
        http = %listen.http,
        https = %listen.https.map_or("-".into(), |a| a.to_string()),
        quic = %listen.quic.map_or("-".into(), |a| a.to_string()),
        admin = %listen.admin,
        upstream = app.upstream.as_ref().map_or("none (root)", |u| u.url()),
        "ready"
    );
    Ok(Running {
        app,
        shutdown,
        tasks,
    })
}

/// This machine's host name (as the kernel has it), the node's name and `admin.server_names`,
/// in lower case.
fn admin_names(config: &Config) -> Vec<String> {
    let mut names = config.admin.server_names.clone();
    names.push(config.node.name.to_ascii_lowercase());
    if let Ok(host) = rustix::system::uname().nodename().to_str() {
        names.push(host.to_ascii_lowercase());
    }
    names.retain(|n| !n.is_empty());
    names
}

/// A byte count or a number of seconds as a gauge's value (an i64).
fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Take a new catalog into service when state.db changed (an import, an approval, a sync).
async fn reload_catalog(
    served: Arc<Served>,
    replica: Option<Arc<wsusss::replica::Replica>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let service = served.clone();
        match tokio::task::spawn_blocking(move || service.reload_if_changed()).await {
            Ok(Ok(true)) => {
                tracing::info!("catalog reloaded");
                if let Some(replica) = &replica {
                    replica.catalog_changed();
                }
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "reloading the catalog failed"),
            Err(e) => tracing::warn!(error = %e, "reloading the catalog failed"),
        }
    }
}

/// What in `config` works but may not be what the operator meant: `check-config` prints these
/// as warnings and `serve` logs them. The filesystem is looked at (the cache's room).
pub fn advisories(config: &Config) -> Vec<crate::config::Problem> {
    use crate::config::units::format_bytes;
    let mut out = Vec::new();
    let mut warn = |key: &str, message: String| {
        out.push(crate::config::Problem {
            key: key.to_owned(),
            message,
        })
    };
    if config.downstream.allow_anonymous {
        warn(
            "downstream.allow_anonymous",
            format!(
                "the server-server services (sync, content, rollup) are open to anyone who \
                 reaches {}: anyone may read the catalog and add computers to the reports",
                config.listen.http
            ),
        );
    }
    let cache = &config.cache;
    if let Ok(fs) = rustix::fs::statvfs(&config.node.data_dir) {
        let size = fs.f_blocks.saturating_mul(fs.f_frsize);
        let free = fs.f_bavail.saturating_mul(fs.f_frsize);
        if size <= cache.min_free_disk {
            warn(
                "cache.min_free_disk",
                format!(
                    "{} is at least the whole filesystem of node.data_dir ({}): nothing will be \
                     cached, every download goes to the upstream",
                    format_bytes(cache.min_free_disk),
                    format_bytes(size)
                ),
            );
        } else if free <= cache.min_free_disk {
            warn(
                "cache.min_free_disk",
                format!(
                    "node.data_dir's filesystem has {} free, no more than the {} the cache \
                     leaves free: nothing new will be cached until space is freed",
                    format_bytes(free),
                    format_bytes(cache.min_free_disk)
                ),
            );
        }
    }
    out
}

/// Who may use the server-server services, in words (for `check-config` and the start line).
pub fn downstream_access(config: &Config) -> &'static str {
    let tokens = config.downstream.token_file.is_some();
    let certificates = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    match (config.downstream.allow_anonymous, tokens, certificates) {
        (true, _, _) => "anyone (downstream.allow_anonymous)",
        (false, true, true) => "downstream servers with a token or a client certificate",
        (false, true, false) => "downstream servers with a token",
        (false, false, true) => "downstream servers with a client certificate (HTTPS only)",
        (false, false, false) => {
            "nobody (no downstream.token_file or tls.client_ca: this node takes no downstream \
             servers)"
        }
    }
}

/// Every problem of `config` that the files it names reveal: they exist and can be read
/// ([`Config::check_files`]), certificates and keys parse, each key fits its certificate, a
/// node's or a branch's own certificate is one a peer accepts (not a CA, not expired, the right
/// usage), token files hold tokens. `serve` refuses to start on any of them, and `check-config`
/// lists the same.
pub fn preflight(config: &Config) -> Vec<crate::config::Problem> {
    use crate::tls::{self, Use};
    let mut c = Preflight::new(config.check_files());
    if let Some(t) = &config.tls {
        let fine = c.certificate("tls.cert", Some(&t.cert), Some(Use::Server))
            & c.key("tls.key", Some(&t.key))
            & c.certificate("tls.client_ca", t.client_ca.as_deref(), None);
        if fine && let Err(e) = tls::server_config(&t.cert, &t.key, None) {
            c.add("tls.key", format!("does not fit tls.cert: {}", e.message()));
        }
    }
    if let Some(up) = &config.upstream {
        c.certificate("upstream.ca", up.ca.as_deref(), None);
        let fine = c.certificate(
            "upstream.client_cert",
            up.client_cert.as_deref(),
            Some(Use::Client),
        ) & c.key("upstream.client_key", up.client_key.as_deref());
        if fine
            && let (Some(cert), Some(key)) = (&up.client_cert, &up.client_key)
            && let Err(e) = tls::client_config(None, Some((cert, key)))
        {
            c.add(
                "upstream.client_key",
                format!("does not fit upstream.client_cert: {}", e.message()),
            );
        }
        c.tokens("upstream.token_file", up.token_file.as_deref());
    }
    c.tokens(
        "downstream.token_file",
        config.downstream.token_file.as_deref(),
    );
    c.tokens("admin.token_file", config.admin.token_file.as_deref());
    c.problems
}

/// The problems found so far; a file that could not be read is not looked into (one problem
/// per file, not three).
struct Preflight {
    problems: Vec<crate::config::Problem>,
    unreadable: Vec<String>,
    now: i64,
}

impl Preflight {
    fn new(problems: Vec<crate::config::Problem>) -> Preflight {
        Preflight {
            unreadable: problems.iter().map(|p| p.key.clone()).collect(),
            problems,
            now: crate::clock::unix_now(),
        }
    }

    fn add(&mut self, key: &str, message: String) {
        self.problems.push(crate::config::Problem {
            key: key.to_owned(),
            message,
        });
    }

    /// The path a key names, when it names one that could be read.
    fn readable<'p>(
        &self,
        key: &str,
        path: Option<&'p std::path::Path>,
    ) -> Option<&'p std::path::Path> {
        path.filter(|_| !self.unreadable.iter().any(|k| k == key))
    }

    /// A PEM certificate file parses, and its first certificate, when it is this node's own
    /// (`usage`), is one a peer accepts. True when nothing is wrong (or nothing was named).
    fn certificate(
        &mut self,
        key: &str,
        path: Option<&std::path::Path>,
        usage: Option<crate::tls::Use>,
    ) -> bool {
        let Some(path) = self.readable(key, path) else {
            return path.is_none();
        };
        let problems = match crate::tls::load_certs(path) {
            Ok(certs) => match usage {
                Some(usage) => crate::tls::end_entity_problems(&certs[0], usage, self.now)
                    .into_iter()
                    .map(|p| format!("{}: {p}", path.display()))
                    .collect(),
                None => Vec::new(),
            },
            Err(e) => vec![e.message().to_owned()],
        };
        let fine = problems.is_empty();
        for p in problems {
            self.add(key, p);
        }
        fine
    }

    /// A PEM private key parses.
    fn key(&mut self, key: &str, path: Option<&std::path::Path>) -> bool {
        let Some(path) = self.readable(key, path) else {
            return path.is_none();
        };
        match crate::tls::load_key(path) {
            Ok(_) => true,
            Err(e) => {
                self.add(key, e.message().to_owned());
                false
            }
        }
    }

    /// A token file holds at least one token.
    fn tokens(&mut self, key: &str, path: Option<&std::path::Path>) {
        if let Some(path) = self.readable(key, path)
            && let Err(p) = crate::config::read_tokens(key, path)
        {
            self.add(&p.key, p.message);
        }
    }
}

/// The admin listener's view of the node.
impl admin::Node for App {
    fn name(&self) -> &str {
        &self.name
    }

    fn started(&self) -> Instant {
        self.started
    }

    fn listening(&self) -> Listening {
        self.listen
    }

    fn readiness(&self) -> crate::app::Readiness {
        App::readiness(self)
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn body_timeout(&self) -> Duration {
        self.limits.body_timeout
    }

    fn names(&self) -> &[String] {
        &self.admin_names
    }

    fn read_networks(&self) -> Vec<crate::config::Network> {
        crate::lock::read(&self.admin_read_networks).clone()
    }

    fn tokens(&self) -> &crate::auth::Tokens {
        &self.admin_tokens
    }

    fn content(&self) -> &Store {
        &self.store
    }

    fn served(&self) -> &Arc<Served> {
        &self.served
    }

    fn reports(&self) -> &Arc<std::sync::Mutex<crate::state::Journal>> {
        &self.reports
    }

    fn wsusss(&self) -> &Arc<wsusss::Service> {
        &self.wsusss
    }

    fn upstream(&self) -> Option<&Arc<Upstream>> {
        self.upstream.as_ref()
    }

    fn upstream_config(&self) -> Option<&crate::config::Upstream> {
        self.upstream_config.as_ref()
    }

    fn replica(&self) -> Option<&Arc<wsusss::replica::Replica>> {
        self.replica.as_ref()
    }

    fn rollup(&self) -> Option<&Arc<wsusss::rollup_client::Rollup>> {
        self.rollup.as_ref()
    }
}
