//! What every handler may see of a running node ([`App`]): its content store, the catalog in
//! service and both protocols, the links to its upstream, the journal, the tokens, the
//! addresses bound; whether it is ready, and what a reload may change.
//!
//! Built by the composition root (`node`), read by `admin` and `server`. May call the modules
//! whose parts it holds; holds no listener and answers no request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::config::Config;
use crate::content::Store;
use crate::http::Parsers;
use crate::metrics::Metrics;
use crate::served::Served;
use crate::upstream::Upstream;
use crate::{wsusss, wusp};

/// What every handler may see of the node.
pub struct App {
    pub name: String,
    pub store: Store,
    /// The catalog in service, which both protocols answer from.
    pub served: Arc<Served>,
    /// The client protocol (SOAP), answered from the catalog.
    pub wusp: Arc<wusp::Service>,
    /// The server-server protocol's upstream side, from the same catalog.
    pub wsusss: Arc<wsusss::Service>,
    /// The tokens downstream servers may show.
    pub downstream_tokens: crate::auth::Tokens,
    /// A client certificate verified by the TLS listener (`tls.client_ca`) makes a downstream.
    pub downstream_certificates: bool,
    /// `downstream.allow_anonymous`: the server-server services are open to anyone.
    pub downstream_open: bool,
    /// `listen.compress_answers`: SOAP answers in the coding the caller offers.
    pub compress_answers: bool,
    /// SOAP calls answered at once, and how long the others wait (`listen.max_soap_*`).
    pub admission: crate::http::Admission,
    /// Large SOAP bodies parse here, a bounded number at once.
    pub parsers: Parsers,
    /// What each connection may hold and for how long.
    pub limits: crate::config::ConnectionLimits,
    pub metrics: Arc<Metrics>,
    pub upstream: Option<Arc<Upstream>>,
    /// `[upstream]` as the node was started with it (None: a root).
    pub upstream_config: Option<crate::config::Upstream>,
    /// The syncs and prefetches of a downstream server (none on a root).
    pub replica: Option<Arc<wsusss::replica::Replica>>,
    /// The rollup of client status to the upstream (none on a root).
    pub rollup: Option<Arc<wsusss::rollup_client::Rollup>>,
    /// A connection to the report journal for the admin views.
    pub reports: Arc<std::sync::Mutex<crate::state::Journal>>,
    /// Who may change state through the admin API (and read it from afar).
    pub admin_tokens: crate::auth::Tokens,
    /// The names the admin listener answers to (lower case), besides IP literals and localhost.
    pub admin_names: Vec<String>,
    /// Who may read the admin views without a token, besides loopback (SIGHUP may change it).
    pub admin_read_networks: std::sync::RwLock<Vec<crate::config::Network>>,
    /// What SIGHUP re-reads.
    pub reloadable: std::sync::Mutex<Reloadable>,
    pub started: Instant,
    /// Every listener is up and the node is not stopping.
    pub ready: AtomicBool,
    pub listen: Listening,
}

/// The keys a reload may change, as they are in service.
pub struct Reloadable {
    pub admin_token_file: Option<std::path::PathBuf>,
    pub downstream_token_file: Option<std::path::PathBuf>,
}

/// Whether a node should get traffic, and if not, why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why not (empty when ready).
    pub reasons: Vec<String>,
    /// Worth knowing, but no reason to send traffic elsewhere: a branch that cannot reach its
    /// upstream still serves its catalog and cache.
    pub notes: Vec<String>,
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// What was re-read, e.g. "downstream.token_file (3 tokens)".
    pub applied: Vec<String>,
    /// What could not be applied, with why (the old value stays).
    pub failed: Vec<String>,
}

impl App {
    /// Ready: the listeners are up, the node is not stopping, and a branch that syncs on a
    /// schedule has a catalog to serve (synced once, in this run or a previous one). A branch
    /// that syncs only when asked (its upstream serves content only) needs no catalog.
    pub fn readiness(&self) -> Readiness {
        let mut r = Readiness {
            ready: true,
            reasons: Vec::new(),
            notes: Vec::new(),
        };
        if !self.ready.load(Ordering::Relaxed) {
            r.reasons
                .push("the listeners are not up, or the node is stopping".into());
        }
        if let Some(replica) = self.replica.as_ref().filter(|r| r.syncs_on_schedule()) {
            let status = replica.status().borrow().clone();
            let has_catalog =
                status.last_success.is_some() || !self.served.catalog().revisions().is_empty();
            if !has_catalog {
                r.reasons.push(match &status.last_error {
                    Some(e) => format!("no catalog yet: the first sync failed: {e}"),
                    None => "no catalog yet: the first sync from the upstream is under way".into(),
                });
            } else if status.failures_in_a_row > 0 {
                r.notes.push(format!(
                    "the last {} syncs from the upstream failed; the catalog in service is kept",
                    status.failures_in_a_row
                ));
            }
        }
        r.ready = r.reasons.is_empty();
        r
    }

    /// Apply what can change while the node runs: the token files (read again even when their
    /// path did not change), `admin.read_networks`. Everything else of `config` is ignored here;
    /// the caller says what needs a restart.
    pub fn reload(&self, config: &Config) -> Reloaded {
        let mut done = Reloaded::default();
        let mut reloadable = crate::lock::lock(&self.reloadable);
        let reloadable = &mut *reloadable;
        let files = [
            (
                "admin.token_file",
                &self.admin_tokens,
                &mut reloadable.admin_token_file,
                &config.admin.token_file,
                "the admin API is read-only",
            ),
            (
                "downstream.token_file",
                &self.downstream_tokens,
                &mut reloadable.downstream_token_file,
                &config.downstream.token_file,
                "downstream servers need no token",
            ),
        ];
        for (key, tokens, in_service, wanted, without) in files {
            if in_service.is_none() && wanted.is_none() {
                continue;
            }
            match tokens.reload(key, wanted.as_deref()) {
                Ok(n) => {
                    *in_service = wanted.clone();
                    done.applied.push(match wanted {
                        Some(_) => format!("{key} ({n} tokens)"),
                        None => format!("{key} (none: {without})"),
                    });
                }
                Err(e) => done.failed.push(e.message().to_owned()),
            }
        }
        let mut networks = crate::lock::write(&self.admin_read_networks);
        if *networks != config.admin.read_networks {
            *networks = config.admin.read_networks.clone();
            done.applied
                .push(format!("admin.read_networks ({} networks)", networks.len()));
        }
        done
    }
}

/// The addresses actually bound (ports chosen by the OS when configured as 0).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Listening {
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    /// HTTP/3 (UDP), on the HTTPS port.
    pub quic: Option<SocketAddr>,
    pub admin: SocketAddr,
}
