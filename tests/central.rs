//! Central nodes whose state is in PostgreSQL: the database going away in the middle of a
//! branch's rollup, and two central nodes sharing one database behind HAProxy, one of them
//! killed in the middle of a rollup. In each, the branch's next rollup completes and the
//! central side holds exactly what the branch holds: nothing lost, nothing counted twice.
//!
//! Both need a PostgreSQL server: they run when `WSUS_TEST_POSTGRES` names one (CI's second
//! pass, on the server it starts) and say they were skipped otherwise.

// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use wsus_edge::node::Running;
use wsus_edge::simulate::wua;
use wsus_edge::testkit::wan::{Link, Relay};
use wsus_edge::wsusss::rollup_client::RollupStatus;

/// A proxy in front of an upstream that, once armed, holds the next call of one SOAP
/// operation until the test lets it go: the middle of a rollup, at a known step.
struct Gate {
    addr: SocketAddr,
    held: Arc<Held>,
}

struct Held {
    operation: &'static str,
    armed: AtomicBool,
    reached: Notify,
    go: Notify,
}

impl Gate {
    async fn start(target: SocketAddr, operation: &'static str) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = Arc::new(Held {
            operation,
            armed: AtomicBool::new(false),
            reached: Notify::new(),
            go: Notify::new(),
        });
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let shared = held.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (held, client) = (shared.clone(), client.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (held, client) = (held.clone(), client.clone());
                        async move { Ok::<_, Infallible>(pass(&held, &client, target, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Gate { addr, held }
    }

    fn arm(&self) {
        self.held.armed.store(true, Ordering::SeqCst);
    }

    async fn reached(&self) {
        tokio::time::timeout(Duration::from_secs(60), self.held.reached.notified())
            .await
            .unwrap_or_else(|_| panic!("no {} call within 60 s", self.held.operation));
    }

    fn release(&self) {
        self.held.go.notify_one();
    }
}

async fn pass(
    held: &Held,
    client: &Client<HttpConnector, Full<Bytes>>,
    target: SocketAddr,
    req: http::Request<Incoming>,
) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let text = match parts.headers.get(http::header::CONTENT_ENCODING) {
        Some(coding) if coding == "gzip" => {
            wsus_edge::http::coding::gunzip(&body, 64 << 20).unwrap()
        }
        _ => body.to_vec(),
    };
    let tag = format!("<{} ", held.operation);
    if text.windows(tag.len()).any(|w| w == tag.as_bytes())
        && held.armed.swap(false, Ordering::SeqCst)
    {
        // Registered before the test hears of it, so that its go is not missed.
        let go = held.go.notified();
        held.reached.notify_one();
        go.await;
    }
    let mut forward = http::Request::builder()
        .method(parts.method)
        .uri(format!("http://{target}{}", parts.uri.path()));
    for (k, v) in &parts.headers {
        forward = forward.header(k, v);
    }
    let answer = match client.request(forward.body(Full::new(body)).unwrap()).await {
        Ok(answer) => answer,
        // What a client of a balancer that lost its backend sees.
        Err(_) => {
            return http::Response::builder()
                .status(502)
                .body(Full::new(Bytes::new()))
                .unwrap();
        }
    };
    let (parts, body) = answer.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut out = http::Response::builder().status(parts.status);
    for (k, v) in &parts.headers {
        if k != http::header::CONTENT_LENGTH && k != http::header::TRANSFER_ENCODING {
            out = out.header(k, v);
        }
    }
    out.body(Full::new(body)).unwrap()
}

/// `n` clients of `branch` (ids from `first`) scan, install and report (every third install
/// fails).
async fn clients_report(branch: &Running, first: u64, n: u64) {
    let soap = wua::soap_client();
    let base = format!("http://{}", branch.listening().http);
    for id in first..first + n {
        let machine = wua::Machine::new(id, None);
        let mut scan = wua::scan(&soap, &base, &machine).await.unwrap();
        assert!(!scan.offered.is_empty());
        wua::report(&soap, &base, &machine, &mut scan, 3)
            .await
            .unwrap();
    }
}

/// Every computer an admin API lists, with its (update, state) pairs, sorted.
async fn computers(admin: SocketAddr) -> BTreeMap<String, Vec<(String, String)>> {
    let json = |got: Got| -> serde_json::Value {
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
        serde_json::from_slice(&got.body).unwrap()
    };
    let listed = json(get(&format!("http://{admin}/api/v1/computers"), &[]).await);
    let mut out = BTreeMap::new();
    for computer in listed.as_array().unwrap() {
        let id = computer["client_id"].as_str().unwrap().to_owned();
        let one = json(get(&format!("http://{admin}/api/v1/computers/{id}"), &[]).await);
        out.insert(id, update_states(&one));
    }
    out
}

/// (computers, installs that succeeded, installs that failed) the central side keeps of
/// server `id` (its rolled-up summaries, summed over operating systems).
async fn installs_at(admin: SocketAddr, id: &str) -> (i64, i64, i64) {
    let got = get(&format!("http://{admin}/api/v1/downstreams"), &[]).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    installs(&serde_json::from_slice(&got.body).unwrap(), id)
}

/// The central side holds exactly the branch's computers and states, and counts each install
/// once.
async fn holds_what_the_branch_holds(central_admin: SocketAddr, branch: &Running) {
    let theirs = computers(branch.listening().admin).await;
    assert!(!theirs.is_empty());
    assert_eq!(computers(central_admin).await, theirs);
    let count = |state: &str| -> i64 {
        theirs
            .values()
            .flatten()
            .filter(|(_, s)| s == state)
            .count() as i64
    };
    assert_eq!(
        installs_at(central_admin, &branch.app.served.server_id().to_string()).await,
        (theirs.len() as i64, count("installed"), count("failed")),
        "each install counted once"
    );
}

/// Ask for a rollup; the task ends with it, failed or not.
fn rollup_started(branch: &Running) -> tokio::task::JoinHandle<RollupStatus> {
    let rollup = branch.app.rollup.clone().expect("a downstream");
    let before = {
        let s = rollup.status().borrow().clone();
        s.rollups + s.failed
    };
    rollup.rollup_now();
    tokio::spawn(async move {
        let mut status = rollup.status();
        loop {
            let s = status.borrow_and_update().clone();
            if s.rollups + s.failed > before {
                return s;
            }
            status.changed().await.unwrap();
        }
    })
}

async fn ended(rollup: tokio::task::JoinHandle<RollupStatus>) -> RollupStatus {
    tokio::time::timeout(Duration::from_secs(60), rollup)
        .await
        .expect("the rollup ends within 60 s")
        .unwrap()
}

/// A branch of `upstream` (synced) through a [`Gate`] on RollupComputerStatus.
async fn gated_branch(dir: &Path, upstream: SocketAddr) -> (Gate, Running) {
    let gate = Gate::start(upstream, "RollupComputerStatus").await;
    let branch = branch_with(
        &dir.join("branch"),
        &format!("http://{}", gate.addr),
        "sync_interval = \"1h\"\ntimeout = \"10s\"\nconnect_timeout = \"1s\"",
        "",
    )
    .await;
    replica_until(&branch, |s| s.syncs >= 1 && s.failed_syncs == 0).await;
    (gate, branch)
}

/// Skipped (with a word why) without a PostgreSQL server to run against.
fn without_postgres() -> bool {
    let without = postgres_server().is_none();
    if without {
        eprintln!("skipped: WSUS_TEST_POSTGRES names no PostgreSQL server");
    }
    without
}

/// The central node's database goes away after the branch's rollup sent its computers and
/// before its update states are kept: that rollup fails, nothing it lacked was acknowledged,
/// and once the database is back the next one completes with nothing lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_gone_mid_rollup_loses_nothing() {
    if without_postgres() {
        return;
    }
    logs();
    let dir = tempfile::tempdir().unwrap();
    let direct = postgres_url(&dir.path().join("root")).unwrap();
    let server = postgres_addr(&direct);
    // The root reaches its database through a relay the test can cut.
    let link = Relay::start("127.0.0.1:0".parse().unwrap(), server, Link::default())
        .await
        .unwrap();
    let relayed = link.addr();
    let (root, _, _) = catalog_root_with(
        dir.path(),
        &format!(
            "[state]\ndatabase = {:?}\npool_wait = \"2s\"\n",
            through(&direct, relayed)
        ),
    )
    .await;
    let (gate, branch) = gated_branch(dir.path(), root.listening().http).await;
    clients_report(&branch, 700, 5).await;

    gate.arm();
    let rollup = rollup_started(&branch);
    gate.reached().await;
    link.stop().await;
    gate.release();
    let failed = ended(rollup).await;
    assert!(
        failed.last_error.is_some(),
        "the rollup failed with the database gone: {failed:#?}"
    );

    let _link = Relay::start(relayed, server, Link::default())
        .await
        .unwrap();
    rolled_up(&branch).await;
    holds_what_the_branch_holds(root.listening().admin, &branch).await;
    // And once more: a rollup with nothing new changes nothing.
    rolled_up(&branch).await;
    holds_what_the_branch_holds(root.listening().admin, &branch).await;
}

/// A central node as a process of its own (so that it can be killed), its state in `url`.
async fn central(dir: &Path, name: &str, url: &str) -> Spawned {
    let data = dir.join(name);
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[node]\nname = {name:?}\ndata_dir = {:?}\n\
             [listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
             [downstream]\nallow_anonymous = true\n[state]\ndatabase = {url:?}\n",
            data.to_string_lossy()
        ),
    )
    .unwrap();
    spawn(&config).await
}

/// HAProxy balancing HTTP requests round-robin over `servers`, on a free loopback port; ready
/// when a request through it reaches one of them.
struct Balancer {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn haproxy(dir: &Path, servers: &[SocketAddr]) -> Balancer {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = format!(
        "global\n  maxconn 256\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n\
         timeout server 30s\n  retries 3\n  option redispatch\n\
         frontend central\n  bind {addr}\n  default_backend nodes\n\
         backend nodes\n  balance roundrobin\n"
    );
    for (i, server) in servers.iter().enumerate() {
        config.push_str(&format!(
            "  server n{i} {server} check inter 200ms fall 1 rise 1\n"
        ));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let child = std::process::Command::new("haproxy")
        .arg("-f")
        .arg(&path)
        .arg("-db")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("haproxy.log")).unwrap())
        .spawn()
        .expect("haproxy runs (.ci/run installs it)");
    let balancer = Balancer { child, addr };
    until(
        "HAProxy reaching a node",
        Duration::from_secs(30),
        async || {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return Err("not listening yet".to_string());
            }
            // 503: no node is up yet by its health checks.
            let got = get(&format!("http://{addr}/selfupdate/"), &[]).await;
            if got.status == 503 {
                Err(got.status.to_string())
            } else {
                Ok(())
            }
        },
    )
    .await;
    balancer
}

/// SOAP calls of rollup operations a node answered, from its metrics.
async fn rollup_calls(admin: SocketAddr) -> f64 {
    let text = get(&format!("http://{admin}/metrics"), &[]).await;
    String::from_utf8_lossy(&text.body)
        .lines()
        .filter(|l| l.starts_with("wsus_edge_soap_calls_total{") && l.contains("Rollup"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Two central nodes share one database behind HAProxy: both take rollups and answer the
/// admin API alike; one is killed while a rollup is under way, and the branch's next rollup
/// through the balancer completes with nothing lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_central_nodes_share_one_database_behind_haproxy() {
    if without_postgres() {
        return;
    }
    logs();
    let dir = tempfile::tempdir().unwrap();
    // One database (the schema named after the first node), both nodes' content imported.
    let url = postgres_url(&dir.path().join("central-a")).unwrap();
    root_catalog(dir.path(), &dir.path().join("central-a"));
    wsus_edge::content::import_dir(&dir.path().join("central-b"), &dir.path().join("payloads"))
        .unwrap();
    let mut a = central(dir.path(), "central-a", &url).await;
    let b = central(dir.path(), "central-b", &url).await;
    let balancer = haproxy(dir.path(), &[a.http, b.http]).await;
    let (gate, branch) = gated_branch(dir.path(), balancer.addr).await;

    clients_report(&branch, 800, 4).await;
    rolled_up(&branch).await;
    assert!(
        rollup_calls(a.admin).await > 0.0,
        "the balancer sent rollups to a"
    );
    assert!(
        rollup_calls(b.admin).await > 0.0,
        "the balancer sent rollups to b"
    );
    holds_what_the_branch_holds(a.admin, &branch).await;
    assert_eq!(computers(a.admin).await, computers(b.admin).await);
    assert_eq!(
        get(&format!("http://{}/api/v1/downstreams", a.admin), &[])
            .await
            .body,
        get(&format!("http://{}/api/v1/downstreams", b.admin), &[])
            .await
            .body,
        "both answer the admin API alike"
    );

    // More reports; a is killed while their rollup is on its way.
    clients_report(&branch, 900, 3).await;
    gate.arm();
    let rollup = rollup_started(&branch);
    gate.reached().await;
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    gate.release();
    // Through the balancer it may even have completed on b; either way, nothing is lost.
    ended(rollup).await;
    rolled_up(&branch).await;
    holds_what_the_branch_holds(b.admin, &branch).await;
}
