//! Nodes under test. In this process: configurations ([`node_config`]), roots, branches and
//! downstreams started from them, a root with a generated catalog ([`catalog_root`]), and waits
//! on their sync and rollup. As a process of its own: `wsus-edge serve` spawned ([`spawn`]),
//! its addresses learnt from its readiness line, and its admin status polled.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http_body_util::BodyExt;
use wsus_edge::config::Config;
use wsus_edge::node::{self, Running};

use super::{client, until};

/// A node's configuration: a loopback root or branch with `extra` TOML appended (sections
/// given in `extra` must not repeat [node], [listen] or [upstream]).
pub fn node_config(
    data_dir: &Path,
    upstream: Option<&str>,
    upstream_extra: &str,
    extra: &str,
) -> Config {
    let mut text = format!(
        "[node]\nname = \"test\"\ndata_dir = {:?}\n[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
        data_dir.to_string_lossy()
    );
    if let Some(url) = upstream {
        text.push_str(&format!("[upstream]\nurl = {url:?}\n{upstream_extra}\n"));
        // Most tests' upstreams serve content only: no metadata sync unless a test asks.
        if !upstream_extra.contains("sync_interval") {
            text.push_str("sync_interval = \"0s\"\n");
        }
    }
    text.push_str(extra);
    if !extra.contains("[state]") {
        text.push_str(&super::state_section(data_dir));
    }
    // Nodes here serve their downstreams without credentials unless a test names them: the
    // tests of authentication say [downstream] themselves.
    if !extra.contains("[downstream]") {
        text.push_str("\n[downstream]\nallow_anonymous = true\n");
    }
    // Nor a rollup of client status.
    if upstream.is_some() && !extra.contains("rollup_interval") {
        text.push_str("\n[reports]\nrollup_interval = \"0s\"\n");
    }
    Config::parse(&text, "test", &[]).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

pub async fn start(config: &Config) -> Running {
    node::start(config).await.expect("node starts")
}

/// A branch of `origin`. The stall timeout is generous: under load tests the test's own
/// clients compete with the node for the same two cores.
pub async fn branch(data_dir: &Path, origin: &str, extra: &str) -> Running {
    branch_with(
        data_dir,
        origin,
        "timeout = \"10s\"\nconnect_timeout = \"1s\"",
        extra,
    )
    .await
}

/// A branch with its own `[upstream]` keys (besides url).
pub async fn branch_with(data_dir: &Path, origin: &str, upstream: &str, extra: &str) -> Running {
    start(&node_config(data_dir, Some(origin), upstream, extra)).await
}

/// A root whose catalog was generated (60 updates, the keys of the encrypted ones held) with
/// approvals: the first four deployable updates for All Computers, the next six for "Ring 1". Returns the node and the update ids
/// each approval set holds.
pub async fn catalog_root(
    dir: &Path,
) -> (
    Running,
    Vec<wsus_edge::catalog::Guid>,
    Vec<wsus_edge::catalog::Guid>,
) {
    catalog_root_with(dir, "").await
}

/// [`catalog_root`] with `extra` configuration.
pub async fn catalog_root_with(
    dir: &Path,
    extra: &str,
) -> (
    Running,
    Vec<wsus_edge::catalog::Guid>,
    Vec<wsus_edge::catalog::Guid>,
) {
    let data = dir.join("root");
    let (all, ringed) = root_catalog(dir, &data);
    let root = start(&node_config(&data, None, "", extra)).await;
    (root, all, ringed)
}

/// The catalog of [`catalog_root`] put into `data`'s state (its payloads in `dir/payloads`):
/// the update ids of its two approval sets.
pub fn root_catalog(
    dir: &Path,
    data: &Path,
) -> (Vec<wsus_edge::catalog::Guid>, Vec<wsus_edge::catalog::Guid>) {
    let payloads = dir.join("payloads");
    std::fs::create_dir_all(&payloads).unwrap();
    use wsus_edge::catalog::{ALL_COMPUTERS, Action, Guid};
    use wsus_edge::state::Store;
    use wsus_edge::testkit::generate;
    let g = generate::generate(60, 11, 24 << 20, &payloads).unwrap();
    wsus_edge::content::import_dir(data, &payloads).unwrap();
    let mut store = Store::open(&super::database(data)).unwrap();
    store.import(&g.documents).unwrap();
    store.set_keys(&g.keys).unwrap();
    let ring = store.add_group("Ring 1", None).unwrap();
    let latest = |store: &Store, id: &Guid| *store.revisions_of(*id).unwrap().last().unwrap();
    let (all, ringed) = (g.deployable[..4].to_vec(), g.deployable[4..10].to_vec());
    let revs: Vec<u32> = all.iter().map(|id| latest(&store, id)).collect();
    store
        .approve(&revs, ALL_COMPUTERS, Action::Install, None, 1_000)
        .unwrap();
    let revs: Vec<u32> = ringed.iter().map(|id| latest(&store, id)).collect();
    store
        .approve(&revs, ring, Action::Install, None, 2_000)
        .unwrap();
    drop(store);
    (all, ringed)
}

/// A downstream of `upstream` that syncs at start and rolls up when asked.
pub async fn downstream(dir: &Path, name: &str, upstream: &Running) -> Running {
    branch_with(
        &dir.join(name),
        &format!("http://{}", upstream.listening().http),
        "sync_interval = \"1h\"\ntimeout = \"10s\"\nconnect_timeout = \"1s\"",
        "",
    )
    .await
}

/// Wait (at most a minute) until a downstream node's sync status satisfies `done`.
pub async fn replica_until(
    node: &Running,
    done: impl Fn(&wsus_edge::wsusss::replica::ReplicaStatus) -> bool,
) -> wsus_edge::wsusss::replica::ReplicaStatus {
    let replica = node.app.replica.as_ref().expect("a replica");
    until(
        "the replica's sync status",
        Duration::from_secs(60),
        async || {
            let status = replica.status().borrow().clone();
            if done(&status) {
                Ok(status)
            } else {
                Err(format!("{status:#?}"))
            }
        },
    )
    .await
}

/// Roll up now and wait (bounded) for it to succeed.
pub async fn rolled_up(node: &Running) -> wsus_edge::wsusss::rollup_client::RollupReport {
    let rollup = node.app.rollup.as_ref().expect("a downstream");
    let before = rollup.status().borrow().rollups;
    rollup.rollup_now();
    let status = until("the rollup", Duration::from_secs(60), async || {
        let status = rollup.status().borrow().clone();
        if status.rollups > before {
            Ok(status)
        } else {
            Err(format!("{status:#?}"))
        }
    })
    .await;
    assert_eq!(status.last_error, None);
    status.last.unwrap()
}

/// (computers, installs that succeeded, installs that failed) of a server in the list of
/// `/api/v1/downstreams`, summed over its operating systems.
pub fn installs(servers: &serde_json::Value, id: &str) -> (i64, i64, i64) {
    let server = servers
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("{id} in {servers}"));
    let sum = |field: &str| -> i64 {
        server["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c[field].as_i64().unwrap())
            .sum()
    };
    (
        sum("computers"),
        sum("installs_succeeded"),
        sum("installs_failed"),
    )
}

/// The (update, state) pairs of a computer of `/api/v1/computers/{id}`, sorted.
pub fn update_states(computer: &serde_json::Value) -> Vec<(String, String)> {
    let mut states: Vec<(String, String)> = computer["update_states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["update"].as_str().unwrap().to_owned(),
                u["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    states.sort();
    states
}

/// A node as a process of its own (to kill it, to measure its memory), with the addresses it
/// said it listens on; killed when dropped.
pub struct Spawned {
    pub child: std::process::Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `wsus-edge serve` on the configuration file `config` (its log goes beside it) and wait
/// (bounded) for its readiness line. The configuration gives 127.0.0.1:0 for its listeners:
/// each port is chosen as it is bound, and the line says which.
pub async fn spawn(config: &Path) -> Spawned {
    let log = config.with_extension("log");
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wsus-edge"))
        .args(["--config", &config.to_string_lossy(), "serve"])
        .env("WSUS_EDGE_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("the binary runs");
    // The readiness line is the one the node writes to stdout; stdout is read to its end, so
    // the node never writes to a closed pipe.
    let stdout = child.stdout.take().unwrap();
    let (ready, line) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut ready = Some(ready);
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("wsus-edge ready")
                && let Some(ready) = ready.take()
            {
                let _ = ready.send(line);
            }
        }
    });
    let said = || String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    let line = match tokio::time::timeout(Duration::from_secs(60), line).await {
        Ok(Ok(line)) => line,
        Ok(Err(_)) => panic!(
            "the node ended without a readiness line; its log:\n{}",
            said()
        ),
        Err(_) => panic!("no readiness line within a minute; the log:\n{}", said()),
    };
    let address = |name: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
            .parse()
            .unwrap()
    };
    Spawned {
        http: address("http"),
        admin: address("admin"),
        child,
    }
}

/// Poll `admin`'s status (bounded) until `done` says so.
pub async fn status_until(admin: &str, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    until(what, Duration::from_secs(60), async || {
        // Not listening yet is no failure: the process is starting.
        let asked = client()
            .request(
                http::Request::get(format!("{admin}/api/v1/status"))
                    .body(http_body_util::Empty::new())
                    .unwrap(),
            )
            .await;
        let response = asked.map_err(|e| format!("no answer: {e}"))?;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(status) if done(&status) => Ok(()),
            Ok(status) => Err(status.to_string()),
            Err(_) => Err(String::from_utf8_lossy(&body).into_owned()),
        }
    })
    .await
}
