//! `check-config` and `serve`: a configuration checked with the files it names, a node run
//! until SIGTERM or SIGINT, SIGHUP's reload (what applies while running, what needs a
//! restart), and the signals a process obeys (`wait_for_signal`, for the other long-running
//! commands).
//! Calls `super` (`Exit`, `report`) and the crate's `config`, `node`, `logging`, `systemd`;
//! no sibling.

use std::path::Path;

use crate::config::units::format_duration;
use crate::config::{Config, ConfigError};
use crate::logging::{FilterChange, Logging};
use crate::node;

use super::{Exit, report};

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

pub(super) fn check_config(path: Option<&Path>, env: &[(String, String)]) -> Exit {
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
pub(super) async fn serve(
    path: Option<&Path>,
    env: &[(String, String)],
    logging: &Logging,
) -> Exit {
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
pub(super) async fn wait_for_signal() {
    let mut signals = Signals::listen();
    while let Signal::Reload = signals.next().await {}
}
