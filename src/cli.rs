//! The subcommands: `serve`, `check-config`, `status`, `health`, `import`, `approve`, `decline`,
//! `group`, `sync`, `cert`, `generate`, `demo`, `simulate`, and the test tool `wan-emulator`.
//! Each returns an exit code: 0 done, 1 runtime failure, 2 usage or configuration error
//! (DESIGN.md §5).
//! Calls `config`, `server`, `content`, `simulate`, `metrics`, `logging`, `systemd`, `pki`,
//! `progress`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::catalog::{Action, CatalogError, Decision, Guid};
use crate::config::units::{format_bytes, format_duration};
use crate::config::{Config, ConfigError};
use crate::content;
use crate::error::{Error, Kind};
use crate::logging::{FilterChange, Logging};
use crate::metrics::{Metrics, TierLabels};
use crate::node;
use crate::progress::{Progress, Unit};
use crate::simulate;
use crate::state::Store;

/// `--version`: the package version and the commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BUILD_COMMIT"),
    ")"
);

#[derive(Parser, Debug)]
#[command(
    name = "wsus-edge",
    version = VERSION,
    about = "A Windows update server for branch offices"
)]
pub struct Cli {
    /// Configuration file (TOML). Without it, built-in defaults with data_dir = ./data.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the node until SIGTERM or SIGINT; SIGHUP reloads token files, admin.read_networks
    /// and log.level.
    Serve,
    /// Check a configuration file and the files it names; print every problem with its key.
    CheckConfig {
        /// The file to check (or --config FILE).
        file: Option<PathBuf>,
    },
    /// Ask a running node how it is: role, upstream, last sync and rollup, prefetch, cache,
    /// computers.
    Status {
        /// The node's answer as JSON (what GET /api/v1/status gives).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminAddress,
    },
    /// Exit 0 when a running node is alive (/livez), or with --ready ready (/readyz); else 1.
    /// For health checks that have no HTTP client at hand (containers).
    Health {
        #[arg(long)]
        ready: bool,
        #[command(flatten)]
        admin: AdminAddress,
    },
    /// Make the certificates of an estate: a CA, node (server) and branch (client)
    /// certificates signed by it.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Write shell completions or man pages, made from this command line's definition.
    Generate {
        #[command(subcommand)]
        command: GenerateCommand,
    },
    /// Import a catalog: DIR/updates/*.xml (update documents) and DIR/content/** (payloads);
    /// a DIR without those folders is all payloads. Or --generate N: a synthetic catalog.
    Import {
        /// The folder to import (not with --generate).
        #[arg(required_unless_present = "generate", conflicts_with = "generate")]
        dir: Option<PathBuf>,
        /// Generate a synthetic catalog of N software updates (with categories, detectoids
        /// and payload files).
        #[arg(long, value_name = "N")]
        generate: Option<usize>,
        /// The most the generated payload files add up to, e.g. "1GiB".
        #[arg(long, default_value = "1GiB", requires = "generate")]
        payload_bytes: String,
        /// Seed of the generated catalog (the same seed gives the same catalog).
        #[arg(long, default_value_t = 1, requires = "generate")]
        seed: u64,
    },
    /// Approve updates for a target group (a root's deployments).
    Approve {
        /// The UpdateID (GUID) of an update to approve; repeat for several.
        #[arg(long = "update", value_name = "GUID", required_unless_present = "all")]
        updates: Vec<String>,
        /// Every update that can be approved on its own (explicitly deployable software).
        #[arg(long, conflicts_with = "updates")]
        all: bool,
        /// The target group, e.g. "All Computers".
        #[arg(long)]
        group: String,
        /// install, optional, uninstall, block, or notapproved (takes an approval back).
        #[arg(long, default_value = "install")]
        action: String,
        /// Install by this time (xs:dateTime, e.g. 2026-12-24T18:00:00Z).
        #[arg(long)]
        deadline: Option<String>,
    },
    /// Decline updates (never offered; their approvals are taken back), or --undo that.
    Decline {
        /// The UpdateID (GUID) of an update; repeat for several.
        #[arg(long = "update", value_name = "GUID", required = true)]
        updates: Vec<String>,
        #[arg(long)]
        undo: bool,
    },
    /// Sync now from the upstream (a downstream server): catalog, target groups, approvals
    /// and declines; a node running on the same data_dir serves the result and prefetches.
    Sync,
    /// Manage target groups.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Start a root and a branch on loopback, drive simulated Delivery Optimization downloads
    /// through the branch, and print what happened.
    Demo {
        /// Simulated clients downloading at the same time.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Keep both nodes running after the summary, until interrupted.
        #[arg(long)]
        keep_running: bool,
    },
    /// Simulated Windows Update clients against a node: the scan sequence, optionally the
    /// downloads and the reports; prints scans per second and SOAP latency.
    Simulate {
        /// The node clients scan, e.g. http://branch:8530.
        #[arg(long)]
        server: String,
        #[arg(long, default_value_t = 10)]
        clients: usize,
        /// Clients scanning at the same time.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Client-side targeting group of every client.
        #[arg(long)]
        group: Option<String>,
        /// Download what each client is told to install.
        #[arg(long)]
        download: bool,
        /// Download from this server instead (an alternate download server).
        #[arg(long, value_name = "URL")]
        content_server: Option<String>,
        /// Report install events after the scan.
        #[arg(long)]
        report: bool,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Once every client has scanned, each scans this many more times with what it holds
        /// (the daily rescans a branch mostly answers); reported apart.
        #[arg(long, default_value_t = 0)]
        rescans: usize,
    },
    /// A WAN between a branch and its upstream, for tests and benchmarks (no config file):
    /// delay, bandwidth, queue and loss, as a TCP+UDP relay or between two TUN devices.
    WanEmulator {
        /// Relay mode: listen on LISTEN (TCP and UDP) and forward to TARGET ("LISTEN=TARGET").
        #[arg(long, value_name = "LISTEN=TARGET", conflicts_with = "tun")]
        relay: Option<String>,
        /// Packet mode: create TUN devices A (branch side) and B (upstream side) and forward
        /// every IP packet between them ("A,B"; needs CAP_NET_ADMIN).
        #[arg(long, value_name = "A,B")]
        tun: Option<String>,
        /// One-way delay, e.g. "20ms".
        #[arg(long, default_value = "0ms")]
        delay: String,
        /// Bandwidth each way, e.g. "50Mbit/s", or "unlimited".
        #[arg(long, default_value = "unlimited")]
        rate: String,
        /// Random packet loss, e.g. "2%" (relay: UDP only; TUN: every packet).
        #[arg(long, default_value = "0%")]
        loss: String,
        /// The bottleneck's buffer as link time, e.g. "100ms".
        #[arg(long, default_value = "100ms")]
        queue: String,
        /// Drop every UDP packet (a firewall blocking QUIC).
        #[arg(long)]
        block_udp: bool,
    },
}

/// Where a running node's admin listener is.
#[derive(clap::Args, Debug)]
pub struct AdminAddress {
    /// The admin listener, e.g. http://127.0.0.1:8540 (default: listen.admin of the
    /// configuration).
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// A file holding an admin token, for a node that is not on this machine.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// A new CA: OUT/ca.pem and OUT/ca-key.pem (keep the key offline when you can).
    Ca {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long, default_value = "wsus-edge CA")]
        name: String,
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// A node's server certificate (tls.cert, tls.key): OUT/NAME.pem and OUT/NAME-key.pem.
    Node {
        /// The folder of ca.pem and ca-key.pem.
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The host name clients and branches use (in WUServer, in upstream.url).
        #[arg(long)]
        name: String,
        /// More names or IP addresses the node is reached by; repeat for several.
        #[arg(long, value_name = "NAME_OR_IP")]
        san: Vec<String>,
        #[arg(long, default_value_t = 825)]
        days: u32,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// A branch's client certificate for mutual TLS (upstream.client_cert, client_key).
    Client {
        #[arg(long, value_name = "DIR")]
        ca: PathBuf,
        /// The branch's name.
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 825)]
        days: u32,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum GenerateCommand {
    /// Shell completions, to stdout.
    Completions { shell: clap_complete::Shell },
    /// Man pages (wsus-edge.1 and one per subcommand) into DIR.
    Man { dir: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// Add a target group (under All Computers unless --parent names another).
    Add {
        name: String,
        #[arg(long)]
        parent: Option<String>,
    },
}

pub enum Exit {
    Ok = 0,
    Failure = 1,
    Usage = 2,
}

/// Run a parsed command line. `env` is the process environment (for `WSUS_EDGE_*` overrides);
/// `logging` changes how the process logs (serve applies `[log]` and reloads it on SIGHUP).
pub async fn run(cli: Cli, env: Vec<(String, String)>, logging: Logging) -> Exit {
    match cli.command {
        Command::CheckConfig { file } => check_config(file.or(cli.config).as_deref(), &env),
        Command::Serve => serve(cli.config.as_deref(), &env, &logging).await,
        Command::Status { json, admin } => status(cli.config.as_deref(), &env, &admin, json).await,
        Command::Health { ready, admin } => {
            health(cli.config.as_deref(), &env, &admin, ready).await
        }
        Command::Cert { command } => cert(command),
        Command::Generate { command } => generate(command),
        Command::Import {
            dir,
            generate,
            payload_bytes,
            seed,
        } => match load(cli.config.as_deref(), &env) {
            Some(config) => match (dir, generate) {
                (Some(dir), None) => import(&config, &dir).await,
                (_, Some(n)) => match crate::config::units::parse_bytes(&payload_bytes) {
                    Ok(budget) => report(generate_catalog(&config, n, budget, seed).await),
                    Err(e) => {
                        eprintln!("wsus-edge import: --payload-bytes: {e}");
                        Exit::Usage
                    }
                },
                (None, None) => Exit::Usage,
            },
            None => Exit::Usage,
        },
        Command::Approve {
            updates,
            all,
            group,
            action,
            deadline,
        } => match load(cli.config.as_deref(), &env) {
            Some(config) => {
                approve(&config, &updates, all, &group, &action, deadline.as_deref()).await
            }
            None => Exit::Usage,
        },
        Command::Sync => match load(cli.config.as_deref(), &env) {
            Some(config) => sync(&config).await,
            None => Exit::Usage,
        },
        Command::Decline { updates, undo } => match load(cli.config.as_deref(), &env) {
            Some(config) => decline(&config, &updates, !undo).await,
            None => Exit::Usage,
        },
        Command::Group {
            command: GroupCommand::Add { name, parent },
        } => match load(cli.config.as_deref(), &env) {
            Some(config) => {
                let outcome = catalog_change(&config, move |store, _| {
                    store
                        .add_group(&name, parent.as_deref())
                        .map(|id| (name, id))
                })
                .await;
                match outcome {
                    Ok((name, id)) => {
                        println!("target group {name:?} added ({id})");
                        Exit::Ok
                    }
                    Err(e) => catalog_failure(e),
                }
            }
            None => Exit::Usage,
        },
        Command::Demo {
            clients,
            keep_running,
        } => match load(cli.config.as_deref(), &env) {
            Some(config) => report(demo(&config, clients, keep_running).await),
            None => Exit::Usage,
        },
        Command::Simulate {
            server,
            clients,
            concurrency,
            group,
            download,
            content_server,
            report: send_reports,
            seed,
            rescans,
        } => {
            let fleet = simulate::wua::Fleet {
                server: server.trim_end_matches('/').to_owned(),
                content_server,
                clients,
                concurrency,
                group,
                download: download || send_reports,
                report: send_reports,
                seed,
                rescans,
                fail_every: 0,
            };
            let outcome = simulate::wua::run(&fleet).await;
            print_fleet(&outcome);
            let rescans_failed = outcome
                .rescans
                .as_ref()
                .is_some_and(|r| !r.failures.is_empty());
            if outcome.failures.is_empty() && !rescans_failed {
                Exit::Ok
            } else {
                Exit::Failure
            }
        }
        Command::WanEmulator {
            relay,
            tun,
            delay,
            rate,
            loss,
            queue,
            block_udp,
        } => {
            let link = match wan_link(&delay, &rate, &loss, &queue, block_udp) {
                Ok(link) => link,
                Err(e) => {
                    eprintln!("wsus-edge wan-emulator: {e}");
                    return Exit::Usage;
                }
            };
            report(wan_emulator(relay, tun, link).await)
        }
    }
}

fn wan_link(
    delay: &str,
    rate: &str,
    loss: &str,
    queue: &str,
    block_udp: bool,
) -> Result<crate::testkit::wan::Link, String> {
    use crate::config::units::{parse_duration, parse_rate};
    let loss = match loss.trim().strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => loss.trim().parse::<f64>(),
    }
    .ok()
    .filter(|l| (0.0..=1.0).contains(l))
    .ok_or_else(|| format!("--loss {loss:?}: a percentage (\"2%\") or a fraction (0.02)"))?;
    Ok(crate::testkit::wan::Link {
        delay: parse_duration(delay).map_err(|e| format!("--delay: {e}"))?,
        rate: parse_rate(rate).map_err(|e| format!("--rate: {e}"))?,
        loss,
        block_udp,
        queue: parse_duration(queue).map_err(|e| format!("--queue: {e}"))?,
    })
}

/// Run the emulator until SIGINT/SIGTERM; print a ready line, then what crossed it. Lines on
/// stdin change it while it runs: `loss 2%`, `block-udp on|off`, `stats`.
async fn wan_emulator(
    relay: Option<String>,
    tun: Option<String>,
    link: crate::testkit::wan::Link,
) -> Result<(), Error> {
    use crate::testkit::wan::Relay;
    let usage = |m: &str| Error::internal(Kind::Config, m.to_owned());
    let controls = if let Some(spec) = relay {
        let (listen, target) = spec
            .split_once('=')
            .and_then(|(l, t)| Some((l.parse().ok()?, t.parse().ok()?)))
            .ok_or_else(|| usage("--relay LISTEN=TARGET, both ip:port"))?;
        let relay = Relay::start(listen, target, link)
            .await
            .map_err(|e| Error::io(format!("relay on {listen}"), e))?;
        println!("wan-emulator ready relay={}", relay.addr());
        let controls = relay.controls().clone();
        run_until_signal(&controls).await;
        relay.stop().await;
        controls
    } else if let Some(spec) = tun {
        tun_emulator(&spec, link).await?
    } else {
        return Err(usage("give --relay LISTEN=TARGET or --tun A,B"));
    };
    println!("{}", emulator_stats(&controls));
    Ok(())
}
/// The packet form of the emulator: two TUN devices, every IP packet across the link.
#[cfg(feature = "wan-tun")]
async fn tun_emulator(
    spec: &str,
    link: crate::testkit::wan::Link,
) -> Result<std::sync::Arc<crate::testkit::wan::Controls>, Error> {
    use crate::testkit::wan::Controls;
    use crate::testkit::wan::tun::Tun;
    let usage = |m: &str| Error::internal(Kind::Config, m.to_owned());
    let (a, b) = spec
        .split_once(',')
        .ok_or_else(|| usage("--tun A,B: two device names"))?;
    let open = |name: &str| Tun::open(name).map_err(|e| Error::io(format!("TUN {name}"), e));
    let (a, b) = (open(a)?, open(b)?);
    println!("wan-emulator ready tun={},{}", a.name(), b.name());
    let controls = Controls::new(&link);
    let task = tokio::spawn(crate::testkit::wan::tun::run(a, b, link, controls.clone()));
    run_until_signal(&controls).await;
    task.abort();
    Ok(controls)
}

#[cfg(not(feature = "wan-tun"))]
async fn tun_emulator(
    _spec: &str,
    _link: crate::testkit::wan::Link,
) -> Result<std::sync::Arc<crate::testkit::wan::Controls>, Error> {
    Err(Error::internal(
        Kind::Config,
        "--tun: this build has no TUN support; build with `--features wan-tun`",
    ))
}

/// Obey stdin's commands until SIGINT/SIGTERM (or stdin's end, then only the signal).
async fn run_until_signal(controls: &crate::testkit::wan::Controls) {
    // A thread of its own reads stdin: a read blocked in the runtime's blocking pool would keep
    // the runtime (and so the process) from ending after the signal.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let signal = wait_for_signal();
    tokio::pin!(signal);
    let mut stdin_open = true;
    loop {
        tokio::select! {
            _ = &mut signal => return,
            line = lines.recv(), if stdin_open => {
                let Some(line) = line else {
                    stdin_open = false;
                    continue;
                };
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["loss", value] => match wan_link("0ms", "unlimited", value, "1ms", false) {
                        Ok(link) => {
                            controls.set_loss(link.loss);
                            println!("ok loss={}", controls.loss());
                        }
                        Err(e) => println!("error {e}"),
                    },
                    ["block-udp", on] => {
                        controls.block_udp(*on == "on");
                        println!("ok block-udp={on}");
                    }
                    ["stats"] => println!("{}", emulator_stats(controls)),
                    _ => println!("error commands: loss X%, block-udp on|off, stats"),
                }
            }
        }
    }
}

fn emulator_stats(controls: &crate::testkit::wan::Controls) -> String {
    let s = &controls.stats;
    let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    format!(
        "wan-emulator stats tcp_connections={} tcp_bytes_up={} tcp_bytes_down={} packets_up={} \
         packets_down={} packet_bytes_up={} packet_bytes_down={} dropped={}",
        get(&s.tcp_connections),
        get(&s.tcp_bytes_up),
        get(&s.tcp_bytes_down),
        get(&s.packets_up),
        get(&s.packets_down),
        get(&s.packet_bytes_up),
        get(&s.packet_bytes_down),
        get(&s.dropped),
    )
}

fn load(path: Option<&Path>, env: &[(String, String)]) -> Option<Config> {
    match Config::load(path, env) {
        Ok(config) => Some(config),
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

fn report(result: Result<(), Error>) -> Exit {
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("wsus-edge: {e}");
            if e.kind() == Kind::Config {
                Exit::Usage
            } else {
                Exit::Failure
            }
        }
    }
}

/// The configuration at `path` with every problem of it and of the files it names, as
/// `check-config` lists them and `serve` refuses them; the problems already printed on error.
fn checked(path: Option<&Path>, env: &[(String, String)]) -> Option<Config> {
    let source = path.map_or("built-in defaults".into(), |p| p.display().to_string());
    let config = match Config::load(path, env) {
        Ok(config) => config,
        Err(mut e) => {
            // Every problem at once: the files the configuration names are checked even
            // when other keys are wrong.
            let text = path.and_then(|p| std::fs::read_to_string(p).ok());
            let files = Config::check_files_of_text(text.as_deref().unwrap_or(""), env);
            for problem in files {
                if !e.problems.iter().any(|p| p.key == problem.key) {
                    e.problems.push(problem);
                }
            }
            eprintln!("{e}");
            return None;
        }
    };
    let problems = node::preflight(&config);
    if !problems.is_empty() {
        eprintln!("{}", ConfigError { source, problems });
        return None;
    }
    Some(config)
}

fn check_config(path: Option<&Path>, env: &[(String, String)]) -> Exit {
    let Some(config) = checked(path, env) else {
        return Exit::Usage;
    };
    let source = path.map_or("built-in defaults".into(), |p| p.display().to_string());
    let role = match &config.upstream {
        Some(up) => format!("downstream of {}", up.url),
        None => "root (no upstream)".into(),
    };
    println!(
        "{source}: ok — node {:?}, {role}, data_dir {}, http {}, admin {}",
        config.node.name,
        config.node.data_dir.display(),
        config.listen.http,
        config.listen.admin
    );
    println!(
        "server-server services: {}",
        node::downstream_access(&config)
    );
    for advisory in node::advisories(&config) {
        println!("warning: {advisory}");
    }
    Exit::Ok
}

/// Run a node until SIGTERM or SIGINT, telling systemd where it is; SIGHUP reloads.
async fn serve(path: Option<&Path>, env: &[(String, String)], logging: &Logging) -> Exit {
    // From here on SIGHUP reloads and SIGTERM stops gracefully, even while the node starts.
    let mut signals = Signals::listen();
    let Some(config) = checked(path, env) else {
        return Exit::Usage;
    };
    logging.set_json(config.log.format == crate::config::LogFormat::Json);
    if let FilterChange::Invalid(e) = logging.set_filter(&config.log.level) {
        eprintln!("wsus-edge: log.level: {e}");
        return Exit::Usage;
    }
    let running = match node::start(&config).await {
        Ok(r) => r,
        Err(e) => return report(Err(e)),
    };
    let l = running.listening();
    // The readiness line: scripts and tests wait for it to learn the bound ports.
    let https = l.https.map(|a| format!(" https={a}")).unwrap_or_default();
    let quic = l.quic.map(|a| format!(" quic={a}")).unwrap_or_default();
    println!(
        "wsus-edge ready http={} admin={}{https}{quic}",
        l.http, l.admin
    );
    // Every listener is bound and the catalog is loaded: what READY=1 means for a unit. A branch
    // that has not synced yet says so in /readyz (a load balancer's business, not systemd's).
    crate::systemd::ready(&format!(
        "serving clients on {}, admin on {}",
        l.http, l.admin
    ));
    let watchdog =
        crate::systemd::watchdog_period().map(|p| tokio::spawn(crate::systemd::watchdog(p)));
    let mut config = config;
    loop {
        match signals.next().await {
            Signal::Stop => break,
            Signal::Reload => {
                crate::systemd::reloading();
                config = reload(path, env, config, &running, logging);
                crate::systemd::ready("reloaded");
            }
        }
    }
    let grace = config.node.shutdown_grace;
    tracing::info!(grace = %format_duration(grace), "shutting down: no new connections, requests in flight finish");
    crate::systemd::stopping("draining requests in flight");
    running.shutdown(grace).await;
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    tracing::info!("stopped");
    Exit::Ok
}

/// SIGHUP: read the configuration again and apply what can change while the node runs (token
/// files, admin.read_networks, log.level); say what else changed and needs a restart. A
/// configuration with problems changes nothing. Returns the configuration now in service.
fn reload(
    path: Option<&Path>,
    env: &[(String, String)],
    current: Config,
    running: &node::Running,
    logging: &Logging,
) -> Config {
    let source = path.map_or("built-in defaults".into(), |p| p.display().to_string());
    let new = match Config::load(path, env) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(problems = %e.problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
                "reload refused: {source} has problems; nothing changed");
            return current;
        }
    };
    let mut done = running.app.reload(&new);
    match logging.set_filter(&new.log.level) {
        FilterChange::Changed { before } => done
            .applied
            .push(format!("log.level ({before} → {})", new.log.level)),
        FilterChange::Invalid(e) => done.failed.push(format!("log.level: {e}")),
        FilterChange::Pinned => {
            if new.log.level != current.log.level {
                done.failed
                    .push("log.level: WSUS_EDGE_LOG is set and wins over the file".into());
            }
        }
        FilterChange::Same | FilterChange::Unmanaged => {}
    }
    let restart = needs_restart(&current, &new);
    for failure in &done.failed {
        tracing::error!(problem = %failure, "reload: not applied, the value in service stays");
    }
    tracing::info!(
        reloaded = %if done.applied.is_empty() { "nothing changed".to_owned() } else { done.applied.join(", ") },
        needs_restart = %if restart.is_empty() { "-".to_owned() } else { restart.join(", ") },
        "reloaded {source}"
    );
    // What is not applied keeps its value in service, so that the next reload compares with
    // what runs.
    Config {
        admin: new.admin,
        downstream: new.downstream,
        log: crate::config::Log {
            level: new.log.level,
            format: current.log.format,
        },
        ..current
    }
}

/// The sections (or keys) that differ between `a` and `b` and that only a restart applies.
fn needs_restart(a: &Config, b: &Config) -> Vec<&'static str> {
    let differs =
        |x: &dyn std::fmt::Debug, y: &dyn std::fmt::Debug| format!("{x:?}") != format!("{y:?}");
    let mut out = Vec::new();
    for (name, changed) in [
        ("[node]", differs(&a.node, &b.node)),
        ("[listen]", differs(&a.listen, &b.listen)),
        ("[tls]", differs(&a.tls, &b.tls)),
        ("[upstream]", differs(&a.upstream, &b.upstream)),
        ("[cache]", differs(&a.cache, &b.cache)),
        ("[wan]", differs(&a.wan, &b.wan)),
        ("[reports]", differs(&a.reports, &b.reports)),
        ("log.format", a.log.format != b.log.format),
    ] {
        if changed {
            out.push(name);
        }
    }
    out
}

enum Signal {
    Stop,
    Reload,
}

/// The signals a process obeys, listened to from its start to its end (a SIGHUP during a
/// reload is kept for the next one, never lost nor fatal).
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn listen() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// The next SIGTERM/SIGINT (stop) or SIGHUP (reload).
    async fn next(&mut self) -> Signal {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.term) => Signal::Stop,
            _ = recv(&mut self.int) => Signal::Stop,
            _ = recv(&mut self.hup) => Signal::Reload,
        }
    }
}

/// Until SIGTERM or SIGINT.
async fn wait_for_signal() {
    let mut signals = Signals::listen();
    while let Signal::Reload = signals.next().await {}
}

/// A catalog error: a usage problem when it names something wrong, else a failure.
fn catalog_failure(e: CatalogError) -> Exit {
    eprintln!("wsus-edge: {e}");
    match e {
        CatalogError::Unknown(_)
        | CatalogError::Document(_)
        | CatalogError::Invalid(_)
        | CatalogError::Exists(_) => Exit::Usage,
        CatalogError::Store(_) => Exit::Failure,
    }
}

/// What an import did, whatever it imported.
#[derive(Default)]
struct Imported {
    content: Option<content::ImportReport>,
    documents: usize,
    new_revisions: usize,
}

/// Import `DIR/updates/*.xml` into the catalog and `DIR/content` (or all of DIR) into the
/// content store. Blocking.
fn import_blocking(data_dir: &Path, dir: &Path) -> Result<Imported, Error> {
    let updates = dir.join("updates");
    let payloads = dir.join("content");
    let mut out = Imported::default();
    if updates.is_dir() {
        let mut docs = Vec::new();
        let mut names: Vec<_> = std::fs::read_dir(&updates)
            .map_err(|e| Error::io(format!("reading {}", updates.display()), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("xml")))
            .collect();
        names.sort();
        for path in names {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            // Name the file that does not parse: the store's error would not.
            crate::catalog::update::parse(&text)
                .map_err(|e| Error::internal(Kind::Config, format!("{}: {e}", path.display())))?;
            docs.push(text);
        }
        let mut store =
            Store::open(data_dir).map_err(|e| Error::internal(Kind::Io, e.to_string()))?;
        // One transaction: its progress is its end.
        eprintln!("importing {} update documents into state.db …", docs.len());
        let (new, _) = store
            .import(&docs)
            .map_err(|e| Error::internal(Kind::Io, e.to_string()))?;
        out.documents = docs.len();
        out.new_revisions = new;
    }
    let content_dir = if payloads.is_dir() {
        Some(payloads)
    } else if updates.is_dir() {
        None
    } else {
        Some(dir.to_path_buf())
    };
    if let Some(content_dir) = content_dir {
        let progress = Progress::new("payloads", tree_bytes(&content_dir), Unit::Bytes);
        let imported =
            content::import_dir_with_progress(data_dir, &content_dir, &mut |n| progress.inc(n));
        progress.finish();
        out.content = Some(imported?);
    }
    Ok(out)
}

fn print_import(config: &Config, imported: &Imported, started: Instant) {
    if imported.documents > 0 {
        println!(
            "imported {} update documents ({} new revisions) into {}",
            imported.documents,
            imported.new_revisions,
            config.node.data_dir.join("state.db").display()
        );
    }
    if let Some(r) = &imported.content {
        println!(
            "imported {} files ({} new, {}) into {}",
            r.files,
            r.new,
            format_bytes(r.bytes),
            config.node.data_dir.display()
        );
    }
    println!("in {}", format_duration(started.elapsed()));
}

async fn import(config: &Config, dir: &Path) -> Exit {
    let (data_dir, dir) = (config.node.data_dir.clone(), dir.to_path_buf());
    let started = Instant::now();
    match tokio::task::spawn_blocking(move || import_blocking(&data_dir, &dir)).await {
        Ok(Ok(imported)) => {
            print_import(config, &imported, started);
            Exit::Ok
        }
        Ok(Err(e)) => report(Err(e)),
        Err(e) => report(Err(Error::internal(Kind::Io, format!("import task: {e}")))),
    }
}

/// Write a synthetic catalog of `n` updates into the node.
async fn generate_catalog(config: &Config, n: usize, budget: u64, seed: u64) -> Result<(), Error> {
    let data_dir = config.node.data_dir.clone();
    let started = Instant::now();
    let (imported, generated) = tokio::task::spawn_blocking(move || {
        let work = data_dir
            .join("tmp")
            .join(format!("generate-{}", std::process::id()));
        let content_dir = work.join("content");
        let updates = work.join("updates");
        std::fs::create_dir_all(&content_dir)
            .map_err(|e| Error::io("creating a work folder", e))?;
        std::fs::create_dir_all(&updates).map_err(|e| Error::io("creating a work folder", e))?;
        let progress = Progress::new("generating", n as u64, Unit::Items("updates"));
        let generated = crate::testkit::generate::generate_with_progress(
            n,
            seed,
            budget,
            &content_dir,
            &mut |_| progress.inc(1),
        )
        .map_err(|e| Error::io("writing payloads", e))?;
        progress.finish();
        for (i, doc) in generated.documents.iter().enumerate() {
            std::fs::write(updates.join(format!("{i:06}.xml")), doc)
                .map_err(|e| Error::io("writing update documents", e))?;
        }
        let imported = import_blocking(&data_dir, &work);
        let _ = std::fs::remove_dir_all(&work);
        Ok::<_, Error>((imported?, generated))
    })
    .await
    .map_err(|e| Error::internal(Kind::Io, format!("generate task: {e}")))??;
    println!(
        "generated {} software updates ({} deployable), {} categories, {} detectoids, {} of payloads",
        generated.software,
        generated.deployable.len(),
        generated.categories,
        generated.detectoids,
        format_bytes(generated.payload_bytes)
    );
    print_import(config, &imported, started);
    Ok(())
}

async fn approve(
    config: &Config,
    updates: &[String],
    all: bool,
    group: &str,
    action: &str,
    deadline: Option<&str>,
) -> Exit {
    let Some(decision) = Decision::parse(action) else {
        eprintln!(
            "wsus-edge approve: --action {action:?}: {}",
            Decision::CHOICES
        );
        return Exit::Usage;
    };
    let deadline = match deadline.map(crate::soap::xsd::parse_datetime) {
        Some(None) => {
            eprintln!("wsus-edge approve: --deadline: an xs:dateTime, e.g. 2026-12-24T18:00:00Z");
            return Exit::Usage;
        }
        Some(Some(t)) => Some(t),
        None => None,
    };
    let Some(ids) = update_ids("approve", updates) else {
        return Exit::Usage;
    };
    let group = group.to_owned();
    let outcome = catalog_change(config, move |store, catalog| {
        let updates = (!all).then_some(ids.as_slice());
        let n = store.decide(catalog, updates, &group, decision, deadline)?;
        Ok((n, group))
    })
    .await;
    match outcome {
        Ok((n, group)) => {
            match decision {
                Decision::Approve(a) => {
                    println!("approved {n} updates for {group:?} ({})", a.as_str());
                }
                Decision::NotApproved => {
                    println!("took back {n} approvals for {group:?}");
                }
            }
            Exit::Ok
        }
        Err(e) => catalog_failure(e),
    }
}

async fn sync(config: &Config) -> Exit {
    let Some(up) = &config.upstream else {
        eprintln!("wsus-edge sync: the configuration has no [upstream] to sync from");
        return Exit::Usage;
    };
    let link = crate::upstream::Settings::from_config(up, &config.wan)
        .and_then(|settings| crate::upstream::Upstream::new(settings, Arc::new(Metrics::new())));
    let link = match link {
        Ok(l) => Arc::new(l),
        Err(e) => return report(Err(e)),
    };
    let progress: Arc<std::sync::Mutex<Option<Progress>>> = Arc::default();
    let shown = progress.clone();
    let syncer =
        crate::wsusss::sync::Syncer::new(link, config.node.data_dir.clone(), &config.node.name)
            .with_progress(Arc::new(move |fetched, wanted| {
                let mut shown = crate::lock::lock(&shown);
                let bar = shown.get_or_insert_with(|| {
                    Progress::new("documents", wanted as u64, Unit::Items("fetched"))
                });
                bar.inc(fetched as u64 - bar.done());
            }));
    let outcome = syncer.run().await;
    if let Some(bar) = crate::lock::lock(&progress).take() {
        bar.finish();
    }
    match outcome {
        Ok(done) => {
            println!("synced from {}", up.url);
            print_sync(&done);
            Exit::Ok
        }
        Err(e) => report(Err(e.context(format!("syncing from {}", up.url)))),
    }
}

/// What a sync did, one line per step.
fn print_sync(r: &crate::wsusss::sync::SyncReport) {
    println!(
        "revision list       {} categories/classifications/detectoids, {} updates{}",
        r.config_listed,
        r.updates_listed,
        if r.server_changed {
            " (the upstream changed: full lists)"
        } else {
            ""
        }
    );
    println!(
        "update documents    {} fetched; {} new revisions, {} changed",
        r.fetched, r.applied.new_revisions, r.applied.changed_revisions
    );
    println!(
        "approvals           {} received, {} applied, {} removed, {} skipped; {} declined updates",
        r.deployments_received,
        r.applied.deployments,
        r.applied.removed_deployments,
        r.applied.skipped_deployments,
        r.applied.hidden
    );
    println!(
        "wire                {} SOAP calls, {} of answers, {}",
        r.calls,
        format_bytes(r.answer_bytes),
        format_duration(Duration::from_millis(r.elapsed_ms))
    );
}

async fn decline(config: &Config, updates: &[String], declined: bool) -> Exit {
    let Some(ids) = update_ids("decline", updates) else {
        return Exit::Usage;
    };
    match catalog_change(config, move |store, catalog| {
        store.decline(catalog, &ids, declined)
    })
    .await
    {
        Ok(n) => {
            let what = if declined {
                "declined"
            } else {
                "no longer declined"
            };
            println!("{n} updates {what}");
            Exit::Ok
        }
        Err(e) => catalog_failure(e),
    }
}

/// `--update` values as GUIDs, or None after saying which is not one.
fn update_ids(command: &str, updates: &[String]) -> Option<Vec<Guid>> {
    updates
        .iter()
        .map(|u| {
            let id = Guid::parse(u);
            if id.is_none() {
                eprintln!("wsus-edge {command}: --update {u:?} is not a GUID");
            }
            id
        })
        .collect()
}

/// Change the catalog of `config`'s data_dir with `change`, off the async workers.
async fn catalog_change<T: Send + 'static>(
    config: &Config,
    change: impl FnOnce(&mut Store, &crate::catalog::Catalog) -> Result<T, CatalogError>
    + Send
    + 'static,
) -> Result<T, CatalogError> {
    if let Some(up) = &config.upstream {
        return Err(crate::catalog::replica::replica_refusal(&up.url));
    }
    let data_dir = config.node.data_dir.clone();
    tokio::task::spawn_blocking(move || {
        let mut store = Store::open(&data_dir)?;
        let catalog = store.load()?;
        change(&mut store, &catalog)
    })
    .await
    .map_err(|e| CatalogError::Store(format!("catalog task: {e}")))?
}

/// The demo's catalog: a month of updates, scaled down.
const DEMO_UPDATES: usize = 30;
const DEMO_PAYLOAD_BYTES: u64 = 160 << 20;

fn print_fleet(r: &simulate::wua::FleetReport) {
    let secs = r.elapsed.as_secs_f64().max(1e-3);
    println!(
        "scans               {} in {} ({:.1} scans/s), {} SyncUpdates pages, {} failed",
        r.scans,
        format_duration(r.elapsed),
        r.scans as f64 / secs,
        r.pages,
        r.failures.len()
    );
    println!(
        "SOAP calls          {} (latency p50 {}, p99 {})",
        r.calls.len(),
        format_duration(r.percentile(50.0)),
        format_duration(r.percentile(99.0))
    );
    println!(
        "offered updates     {} ({:.1} per client)",
        r.offered,
        r.offered as f64 / r.scans.max(1) as f64
    );
    if !r.downloads.is_empty() {
        let verified = r.downloads.iter().filter(|d| d.verified).count();
        println!(
            "downloads           {} ({verified} verified against their SHA-1)",
            r.downloads.len()
        );
    }
    if r.events > 0 {
        println!("events reported     {}", r.events);
    }
    for f in r.failures.iter().take(5) {
        println!("failed: {f}");
    }
    if let Some(re) = &r.rescans {
        println!(
            "rescans             {} in {} ({:.1} scans/s), {} SyncUpdates pages, {} revisions \
             received, {} failed",
            re.scans,
            format_duration(re.elapsed),
            re.scans as f64 / re.elapsed.as_secs_f64().max(1e-3),
            re.pages,
            re.received,
            re.failures.len()
        );
        println!(
            "rescan SOAP calls   {} (latency p50 {}, p99 {})",
            re.calls.len(),
            format_duration(simulate::wua::percentile(&re.calls, 50.0)),
            format_duration(simulate::wua::percentile(&re.calls, 99.0))
        );
        for f in re.failures.iter().take(5) {
            println!("failed rescan: {f}");
        }
    }
}

/// The branch's first sync and the prefetch after it, within a minute.
async fn synced(node: &node::Running) -> Result<crate::wsusss::replica::ReplicaStatus, Error> {
    let Some(replica) = &node.app.replica else {
        return Err(Error::internal(Kind::Config, "the branch has no upstream"));
    };
    let mut status = replica.status();
    let done = tokio::time::timeout(
        Duration::from_secs(60),
        status.wait_for(|s| {
            s.failed_syncs > 0
                || (s.syncs > 0
                    && s.prefetches > 0
                    && s.last_prefetch.as_ref().is_some_and(|p| p.files > 0))
        }),
    )
    .await;
    let status = match done {
        Ok(Ok(s)) => s.clone(),
        _ => {
            return Err(Error::internal(
                Kind::Io,
                "the branch did not sync within a minute",
            ));
        }
    };
    match &status.last_error {
        Some(e) => Err(Error::internal(
            Kind::Io,
            format!("the branch's sync failed: {e}"),
        )),
        None => Ok(status),
    }
}

async fn demo(base: &Config, clients: usize, keep_running: bool) -> Result<(), Error> {
    let root_dir = base.node.data_dir.join("demo");
    let io = |what: &str| {
        let what = what.to_owned();
        move |e| Error::io(what, e)
    };
    if root_dir.exists() {
        std::fs::remove_dir_all(&root_dir).map_err(io("clearing the demo directory"))?;
    }
    std::fs::create_dir_all(&root_dir).map_err(io("creating the demo directory"))?;
    // The branch's token, the one line of the root's downstream.token_file.
    let token = root_dir.join("downstream.token");
    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| Error::internal(Kind::Io, "no randomness for the demo's token"))?;
    std::fs::write(&token, format!("{}\n", hex::encode(secret)))
        .map_err(io("writing the demo's token"))?;
    let root = demo_config("demo-root", &root_dir.join("root"), None, &token)?;
    println!("generating a catalog of {DEMO_UPDATES} updates with their payloads …");
    generate_catalog(&root, DEMO_UPDATES, DEMO_PAYLOAD_BYTES, 0x5eed).await?;
    let approved = {
        let data_dir = root.node.data_dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = Store::open(&data_dir)?;
            let catalog = store.load()?;
            store.decide(
                &catalog,
                None,
                "All Computers",
                Decision::Approve(Action::Install),
                None,
            )
        })
        .await
        .map_err(|e| Error::internal(Kind::Io, e.to_string()))?
        .map_err(|e| Error::internal(Kind::Io, e.to_string()))?
    };
    println!("approved {approved} updates for All Computers at the root");
    let root_node = node::start(&root).await?;
    let branch = demo_config(
        "demo-branch",
        &root_dir.join("branch"),
        Some(&format!("http://{}", root_node.listening().http)),
        &token,
    )?;
    let branch_node = node::start(&branch).await?;
    let branch_http = branch_node.listening().http;
    println!(
        "root   {} (admin http://{}/)\nbranch {} (admin http://{}/), upstream = root",
        root_node.listening().http,
        root_node.listening().admin,
        branch_http,
        branch_node.listening().admin
    );
    println!("the branch syncs from the root (MS-WSUSSS) and prefetches the approved content …");
    let status = synced(&branch_node).await?;
    let sync = status.last_sync.clone().unwrap_or_default();
    print_sync(&sync);
    if let Some(p) = &status.last_prefetch {
        println!(
            "prefetch            {} files of approved updates, {} fetched ({}) in {}",
            p.files,
            p.fetched,
            format_bytes(p.bytes),
            format_duration(Duration::from_millis(p.elapsed_ms))
        );
    }
    let prefetched = branch_node.metrics().upstream_bytes.get();
    println!(
        "{clients} Windows Update clients scan the branch over SOAP, download what they are told \
         to install from it Delivery Optimization style, and report …"
    );
    let fleet = simulate::wua::Fleet {
        server: format!("http://{branch_http}"),
        content_server: None,
        clients,
        concurrency: clients,
        group: None,
        download: true,
        report: true,
        seed: 1,
        rescans: 0,
        // Some installs fail, so that the status at the root has something to show.
        fail_every: 5,
    };
    let started = Instant::now();
    let outcome = simulate::wua::run(&fleet).await;
    let elapsed = started.elapsed();
    if let Some(f) = outcome.failures.first() {
        return Err(Error::internal(
            Kind::Io,
            format!("a simulated client failed: {f}"),
        ));
    }
    let total = outcome.distinct_bytes;
    let (mut requests, mut served, mut verified) = (0u64, 0u64, 0u64);
    let mut worst_first_byte = Duration::ZERO;
    for o in &outcome.downloads {
        requests += o.requests;
        served += o.body_bytes;
        verified += u64::from(o.verified);
        worst_first_byte = worst_first_byte.max(o.first_byte);
    }
    let downloads = outcome.downloads.len() as u64;
    let m = branch_node.metrics();
    let hits = hits(m);
    let misses = m.cache_misses.get();
    // Content only: the sync's SOAP answers crossed the same link.
    let upstream_bytes = m.upstream_bytes.get().saturating_sub(sync.answer_bytes);
    let during_scans = m.upstream_bytes.get().saturating_sub(prefetched);
    println!("\n── what happened ──────────────────────────────────────────");
    print_fleet(&outcome);
    println!("range requests      {requests} (every answer 206 with the exact Content-Range)");
    println!(
        "cache hit ratio     {:.1}% ({hits} hits, {misses} needed upstream)",
        100.0 * hits as f64 / (hits + misses).max(1) as f64
    );
    println!("bytes served        {}", format_bytes(served));
    let once = if upstream_bytes <= total {
        "each slice crossed the WAN once"
    } else {
        "some bytes crossed the WAN more than once"
    };
    println!(
        "bytes from upstream {} ({:.2}× the {} of distinct content; {once})",
        format_bytes(upstream_bytes),
        upstream_bytes as f64 / total.max(1) as f64,
        format_bytes(total)
    );
    println!(
        "during the scans    {} from upstream (the rest was prefetched)",
        format_bytes(during_scans)
    );
    println!(
        "upstream requests   {}",
        m.upstream_requests
            .get_or_create(&crate::metrics::TransportLabels { transport: "http1" })
            .get()
    );
    println!("slowest first byte  {}", format_duration(worst_first_byte));
    println!(
        "elapsed             {} ({}/s to clients)",
        format_duration(elapsed),
        format_bytes((served as f64 / elapsed.as_secs_f64().max(1e-3)) as u64)
    );
    println!(
        "admin (branch)      http://{}/  ·  metrics http://{}/metrics",
        branch_node.listening().admin,
        branch_node.listening().admin
    );
    let ok = verified == downloads;

    // The status goes up: the branch rolls up its computers and their updates to the root.
    if let Some(rollup) = &branch_node.app.rollup {
        let mut status = rollup.status();
        rollup.rollup_now();
        let done =
            tokio::time::timeout(Duration::from_secs(60), status.wait_for(|s| s.rollups > 0)).await;
        match done.ok().and_then(|d| d.ok()).map(|s| s.clone()) {
            Some(s) if s.last_error.is_none() => {
                let r = s.last.unwrap_or_default();
                println!(
                    "\n── status at the root (rollup: {} computers, {} with their update states, \
                     {} SOAP calls) ──",
                    r.computers, r.statuses, r.calls
                );
            }
            Some(s) => println!("rollup failed: {}", s.last_error.unwrap_or_default()),
            None => println!("rollup did not finish within a minute"),
        }
        let reports = root_node.app.reports.clone();
        let servers =
            tokio::task::spawn_blocking(move || crate::lock::lock(&reports).downstreams())
                .await
                .map_err(|e| Error::internal(Kind::Io, e.to_string()))?
                .map_err(|e| Error::internal(Kind::Io, e.to_string()))?;
        for d in servers.iter().filter(|d| d.last_rollup.is_some()) {
            println!(
                "branch {:<14} {} computers: {} up to date, {} needing updates, {} with errors",
                d.name,
                d.computers.unwrap_or(0),
                d.up_to_date.unwrap_or(0),
                d.needing_updates.unwrap_or(0),
                d.with_errors.unwrap_or(0),
            );
            if let Some(m) = &d.summary {
                let installs = d.clients.iter().fold((0, 0), |(ok, failed), c| {
                    (ok + c.installs_succeeded, failed + c.installs_failed)
                });
                println!(
                    "  updates           {} approved of {}, {} with files still to come; \
                     {} installs succeeded, {} failed",
                    m.approved, m.updates, m.updates_needing_files, installs.0, installs.1
                );
            }
        }
        println!(
            "root status page    http://{}/  (branches, computers, updates)",
            root_node.listening().admin
        );
    }
    if keep_running {
        println!("nodes keep running; Ctrl-C stops them");
        wait_for_signal().await;
    } else {
        println!("(pass --keep-running to keep both nodes up and browse the admin pages)");
    }
    branch_node.shutdown(Duration::from_secs(2)).await;
    root_node.shutdown(Duration::from_secs(2)).await;
    if ok {
        Ok(())
    } else {
        Err(Error::internal(
            Kind::Digest,
            format!("{} downloads did not verify", downloads - verified),
        ))
    }
}

fn hits(m: &Arc<Metrics>) -> u64 {
    ["memory", "disk"]
        .iter()
        .map(|tier| m.cache_hits.get_or_create(&TierLabels { tier }).get())
        .sum()
}

/// A loopback node on the built-in defaults, written as the TOML an operator would write. The
/// branch shows the root a token the root lists, as a real one does: `token` is that file.
fn demo_config(
    name: &str,
    data_dir: &Path,
    upstream: Option<&str>,
    token: &Path,
) -> Result<Config, Error> {
    let quoted = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let mut text = format!(
        "[node]\nname = {}\ndata_dir = {}\n[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
        quoted(name),
        quoted(&data_dir.to_string_lossy()),
    );
    let token = quoted(&token.to_string_lossy());
    match upstream {
        // The demo counts what crosses the link: the status rollup's calls would blur it.
        Some(url) => text.push_str(&format!(
            "[upstream]\nurl = {}\ntoken_file = {token}\n[reports]\nrollup_interval = \"0s\"\n",
            quoted(url)
        )),
        None => text.push_str(&format!("[downstream]\ntoken_file = {token}\n")),
    }
    Config::parse(&text, "demo", &[]).map_err(|e| Error::internal(Kind::Config, e.to_string()))
}

/// The admin listener to ask: `--admin`, else the configuration's `listen.admin` (an unspecified
/// address means this machine).
fn admin_url(
    path: Option<&Path>,
    env: &[(String, String)],
    admin: &AdminAddress,
) -> Option<String> {
    if let Some(url) = &admin.admin {
        return Some(url.trim_end_matches('/').to_owned());
    }
    let config = load(path, env)?;
    let mut addr = config.listen.admin;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Some(format!("http://{addr}"))
}

/// GET `url` (plain HTTP) within a few seconds: (status, body).
async fn admin_get(url: &str, token_file: Option<&Path>) -> Result<(u16, String), Error> {
    use http_body_util::BodyExt as _;
    let uri: http::Uri = url
        .parse()
        .map_err(|e| Error::internal(Kind::Config, format!("--admin {url}: {e}")))?;
    let mut request = http::Request::get(uri);
    if let Some(file) = token_file {
        let token = crate::config::read_tokens("--token-file", file)
            .map_err(|p| Error::internal(Kind::Config, p.to_string()))?;
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {}", token[0]));
    }
    let request = request
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| Error::internal(Kind::Config, format!("--admin {url}: {e}")))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let exchange = async {
        let response = client.request(request).await.map_err(|e| {
            Error::internal(Kind::Io, format!("{url}: no answer (is the node running?)"))
                .with_source(e)
        })?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::internal(Kind::Io, format!("{url}: {e}")))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| Error::internal(Kind::Io, format!("{url}: no answer within 10 s")))?
}

/// `wsus-edge health`: 0 when /livez (or /readyz) answers 200.
async fn health(
    path: Option<&Path>,
    env: &[(String, String)],
    admin: &AdminAddress,
    ready: bool,
) -> Exit {
    let Some(base) = admin_url(path, env, admin) else {
        return Exit::Usage;
    };
    let probe = if ready { "/readyz" } else { "/livez" };
    match admin_get(&format!("{base}{probe}"), None).await {
        Ok((200, body)) => {
            println!("{}", body.trim());
            Exit::Ok
        }
        Ok((status, body)) => {
            println!("{status}: {}", body.trim());
            Exit::Failure
        }
        Err(e) => {
            eprintln!("wsus-edge health: {e}");
            Exit::Failure
        }
    }
}

/// `wsus-edge status`: what a running node says of itself, for people (or as JSON).
async fn status(
    path: Option<&Path>,
    env: &[(String, String)],
    admin: &AdminAddress,
    json: bool,
) -> Exit {
    let Some(base) = admin_url(path, env, admin) else {
        return Exit::Usage;
    };
    let url = format!("{base}/api/v1/status");
    let body = match admin_get(&url, admin.token_file.as_deref()).await {
        Ok((200, body)) => body,
        Ok((status, body)) => {
            eprintln!("wsus-edge status: {url}: {status} {}", body.trim());
            return Exit::Failure;
        }
        Err(e) => {
            eprintln!("wsus-edge status: {e}");
            return Exit::Failure;
        }
    };
    if json {
        println!("{}", body.trim());
        return Exit::Ok;
    }
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(value) => {
            print!("{}", describe_status(&value, crate::clock::unix_now()));
            Exit::Ok
        }
        Err(e) => {
            eprintln!("wsus-edge status: {url}: not JSON ({e})");
            Exit::Failure
        }
    }
}

/// `/api/v1/status` as lines for people; `now` in seconds since the epoch.
fn describe_status(s: &serde_json::Value, now: i64) -> String {
    use std::fmt::Write as _;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    let int = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let ago = |v: &serde_json::Value| match v.as_i64() {
        Some(t) => format!(
            "{} ({} ago)",
            crate::soap::xsd::format_datetime(t),
            format_duration(Duration::from_secs(now.saturating_sub(t).max(0) as u64))
        ),
        None => "never".to_owned(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node         {} ({}), wsus-edge {} (commit {}), up {}",
        text(&s["name"]),
        text(&s["role"]),
        text(&s["version"]),
        text(&s["commit"]),
        format_duration(Duration::from_secs(int(&s["uptime_seconds"])))
    );
    let readiness = &s["readiness"];
    let reasons: Vec<String> = readiness["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(readiness["notes"].as_array().into_iter().flatten())
        .map(text)
        .collect();
    let _ = writeln!(
        out,
        "ready        {}{}",
        if s["ready"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        },
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" — {}", reasons.join("; "))
        }
    );
    let listen = &s["listen"];
    let _ = writeln!(
        out,
        "listening    http {}, https {}, admin {}",
        text(&listen["http"]),
        text(&listen["https"]),
        text(&listen["admin"])
    );
    let up = &s["upstream"];
    if up.is_object() {
        let t = &up["transport"];
        let _ = writeln!(
            out,
            "upstream     {} (transport {}, last used {})",
            text(&up["url"]),
            text(&t["mode"]),
            text(&t["last_used"])
        );
        // A periodic job of a downstream server: when it last succeeded, how it fails now.
        let job = |out: &mut String, label: &str, v: &serde_json::Value| {
            let _ = writeln!(
                out,
                "{label:<12} {}; {} failed in a row{}",
                ago(&v["last_success"]),
                int(&v["failures_in_a_row"]),
                v["last_error"]
                    .as_str()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            );
        };
        let sync = &up["sync"];
        if sync.is_object() {
            job(&mut out, "last sync", sync);
            let running = &sync["prefetch_in_progress"];
            if running.is_object() {
                let _ = writeln!(
                    out,
                    "prefetch     running: {}/{} files, {} of {} still to fetch",
                    int(&running["done"]),
                    int(&running["files"]),
                    format_bytes(int(&running["pending_bytes"])),
                    format_bytes(int(&running["bytes"]))
                );
            }
            let last = &sync["last_prefetch"];
            if last.is_object() {
                let _ = writeln!(
                    out,
                    "last prefetch {} files: {} fetched ({}), {} failed, in {}",
                    int(&last["files"]),
                    int(&last["fetched"]),
                    format_bytes(int(&last["bytes"])),
                    int(&last["failed"]),
                    format_duration(Duration::from_millis(int(&last["elapsed_ms"])))
                );
            }
        }
        let rollup = &up["rollup"];
        if rollup.is_object() {
            job(&mut out, "last rollup", rollup);
        }
    } else {
        let _ = writeln!(out, "upstream     none (a root)");
    }
    let cache = &s["cache"];
    let _ = writeln!(
        out,
        "cache        {} objects, {} of {} on disk, {} filling; memory tier {}",
        int(&cache["objects"]),
        format_bytes(int(&cache["disk_bytes"])),
        format_bytes(int(&s["cache_disk_limit"])),
        int(&cache["filling"]),
        format_bytes(int(&cache["memory_bytes"]))
    );
    let _ = writeln!(
        out,
        "computers    {}; {} client events not yet acknowledged upstream",
        int(&s["computers"]),
        int(&s["reports_pending"])
    );
    out
}

/// `wsus-edge cert …`.
fn cert(command: CertCommand) -> Exit {
    use crate::pki::{Leaf, make_ca, make_leaf};
    let made = match &command {
        CertCommand::Ca { out, name, days } => make_ca(out, name, *days),
        CertCommand::Node {
            ca,
            name,
            san,
            days,
            out,
        } => make_leaf(Leaf::Node, ca, out, name, san, *days),
        CertCommand::Client {
            ca,
            name,
            days,
            out,
        } => make_leaf(Leaf::Client, ca, out, name, &[], *days),
    };
    let made = match made {
        Ok(made) => made,
        Err(e) => return report(Err(e)),
    };
    println!("certificate  {}", made.cert.display());
    println!("private key  {} (mode 0600)", made.key.display());
    match command {
        CertCommand::Ca { .. } => println!(
            "next: wsus-edge cert node --ca DIR --name HOST --out DIR for each node with HTTPS; \
             give ca.pem to the branches (upstream.ca) and to Windows clients (Trusted Root)"
        ),
        CertCommand::Node { .. } => println!(
            "use: [tls] cert = \"{}\", key = \"{}\" (readable by the service's user only)",
            made.cert.display(),
            made.key.display()
        ),
        CertCommand::Client { .. } => println!(
            "use on the branch: [upstream] client_cert = \"{}\", client_key = \"{}\"; the \
             upstream trusts it with tls.client_ca = its ca.pem",
            made.cert.display(),
            made.key.display()
        ),
    }
    Exit::Ok
}

/// `wsus-edge generate …`.
fn generate(command: GenerateCommand) -> Exit {
    use clap::CommandFactory as _;
    let mut cli = Cli::command();
    match command {
        GenerateCommand::Completions { shell } => {
            clap_complete::generate(shell, &mut cli, "wsus-edge", &mut std::io::stdout());
            Exit::Ok
        }
        GenerateCommand::Man { dir } => match write_man_pages(&cli, &dir) {
            Ok(n) => {
                println!("wrote {n} man pages into {}", dir.display());
                Exit::Ok
            }
            Err(e) => report(Err(e)),
        },
    }
}

/// `wsus-edge.1` and `wsus-edge-SUB.1` (and deeper, `wsus-edge-cert-node.1`) into `dir`.
fn write_man_pages(cli: &clap::Command, dir: &Path) -> Result<usize, Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut written = 0;
    let mut pending = vec![(cli.clone().version(VERSION), "wsus-edge".to_owned())];
    while let Some((command, name)) = pending.pop() {
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            let sub_name = format!("{name}-{}", sub.get_name());
            pending.push((sub.clone().name(sub_name.clone()), sub_name));
        }
        let path = dir.join(format!("{name}.1"));
        let mut file = std::fs::File::create(&path)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        clap_mangen::Man::new(command)
            .render(&mut file)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        written += 1;
    }
    Ok(written)
}

/// The bytes of every regular file under `dir` (for a progress bar's total).
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => pending.push(entry.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reads_as_lines_for_people() {
        let now = 1_796_400_000;
        let json = serde_json::json!({
            "name": "branch-a", "role": "downstream", "version": "0.1.0",
            "commit": "1a2b3c4d5e6f", "uptime_seconds": 11_520, "ready": true,
            "readiness": {"ready": true, "reasons": [],
                          "notes": ["the last 2 syncs from the upstream failed; the catalog in service is kept"]},
            "listen": {"http": "0.0.0.0:8530", "https": null, "admin": "127.0.0.1:8540"},
            "upstream": {
                "url": "https://central.example.org:8531",
                "transport": {"mode": "auto", "last_used": "http3", "quic": "connected"},
                "sync": {"last_success": now - 570, "failures_in_a_row": 2,
                         "last_error": "upstream error: cannot connect",
                         "prefetch_in_progress": {"started_at": now - 60, "files": 412, "done": 400,
                                                  "bytes": 4_000_000_000u64, "pending_bytes": 2_147_483_648u64},
                         "last_prefetch": {"files": 412, "fetched": 12, "bytes": 2_040_109_465u64,
                                           "failed": 0, "elapsed_ms": 242_000}},
                "rollup": {"last_success": now - 361, "failures_in_a_row": 0, "last_error": null}
            },
            "cache": {"objects": 3108, "filling": 0, "disk_bytes": 194_562_755_788u64,
                      "memory_bytes": 536_870_912u64},
            "cache_disk_limit": 214_748_364_800u64,
            "computers": 412, "reports_pending": 1280
        });
        let text = describe_status(&json, now);
        for line in [
            "node         branch-a (downstream), wsus-edge 0.1.0 (commit 1a2b3c4d5e6f), up ",
            "ready        yes — the last 2 syncs from the upstream failed",
            "listening    http 0.0.0.0:8530, https -, admin 127.0.0.1:8540",
            "upstream     https://central.example.org:8531 (transport auto, last used http3)",
            "; 2 failed in a row (last error: upstream error: cannot connect)",
            "prefetch     running: 400/412 files, ",
            "last prefetch 412 files: 12 fetched (",
            "last rollup  ",
            "cache        3108 objects, ",
            "computers    412; 1280 client events not yet acknowledged upstream",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        let root = serde_json::json!({"name": "central", "role": "root", "upstream": null});
        assert!(describe_status(&root, now).contains("upstream     none (a root)"));
    }
}
