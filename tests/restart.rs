//! Restarts and crashes of a real `wsus-edge serve` process: committed objects are hits after a
//! restart without any upstream, partial objects keep the slices that still verify, `kill -9`
//! in the middle of a fill never leads to wrong bytes, temp files are swept.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const MIB: u64 = 1 << 20;

struct Node {
    child: Child,
    http: SocketAddr,
    admin: SocketAddr,
}

impl Node {
    /// Start `wsus-edge serve` and wait for its readiness line.
    async fn spawn(config: &Path) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wsus-edge"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("WSUS_EDGE_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn wsus-edge");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("ready within 30 s")
            .unwrap()
            .expect("a readiness line");
        let field = |name: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
                .parse()
                .unwrap()
        };
        assert!(line.starts_with("wsus-edge ready"), "{line}");
        let (http, admin) = (field("http"), field("admin"));
        Node { child, http, admin }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    async fn kill9(mut self) {
        let pid = self.child.id().unwrap() as i32;
        let status = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let _ = self.child.wait().await;
    }

    /// The admin API's view of one object (None when the cache does not hold it).
    async fn object(&self, path: &str) -> Option<serde_json::Value> {
        let hex = path.rsplit('/').next()?.split('.').next()?.to_owned();
        let got = get(&format!("http://{}/api/v1/content/{hex}", self.admin), &[]).await;
        (got.status == 200).then(|| serde_json::from_slice(&got.body).unwrap())
    }

    /// Poll the admin API until `check` holds (or fail after 20 s).
    async fn wait_for(&self, path: &str, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
        until(
            &format!("{what} of {path}"),
            Duration::from_secs(20),
            async || match self.object(path).await {
                Some(v) if check(&v) => Ok(()),
                Some(v) => Err(v.to_string()),
                None => Err("not in the cache".to_owned()),
            },
        )
        .await;
    }
}

fn write_config(dir: &Path, origin: &str) -> PathBuf {
    let path = dir.join("node.toml");
    let text = format!(
        "[node]\ndata_dir = {:?}\n[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
         [upstream]\nurl = {origin:?}\ntimeout = \"2s\"\nconnect_timeout = \"1s\"\nsync_interval = \"0s\"\n\
         [reports]\nrollup_interval = \"0s\"\n{}",
        dir.join("data").to_string_lossy(),
        state_section(&dir.join("data"))
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_objects_survive_a_crash_and_serve_without_upstream() {
    let origin = Origin::start().await;
    let whole = payload((9 * MIB + 3) as usize, 21);
    let part = payload((12 * MIB) as usize, 22);
    let whole_path = origin.add(whole.clone(), "exe");
    let part_path = origin.add(part.clone(), "cab");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &origin.url());

    let node = Node::spawn(&config).await;
    assert!(get(&node.url(&whole_path), &[]).await.body == whole);
    let got = get(&node.url(&part_path), &[("range", "bytes=1000-1999")]).await;
    assert!(got.status == 206 && got.body == part.slice(1000..2000));
    node.wait_for(&whole_path, "the commit", |v| v["state"] == "committed")
        .await;
    node.wait_for(&part_path, "slice 0 on disk", |v| v["slices_present"] == 1)
        .await;
    node.kill9().await;

    // Debris a crash could leave in tmp/ is swept at start-up.
    let junk = dir.path().join("data/tmp/import-1-1");
    std::fs::write(&junk, b"half an import").unwrap();
    origin.stop();
    let node = Node::spawn(&config).await;
    assert!(!junk.exists(), "temp files swept");
    let got = get(&node.url(&whole_path), &[]).await;
    assert_eq!(got.status, 200);
    assert!(
        got.body == whole,
        "committed object served after restart, upstream down"
    );
    let got = get(&node.url(&whole_path), &[("range", "bytes=-100")]).await;
    assert!(got.status == 206 && got.body == whole.slice(whole.len() - 100..));
    // The kept slice of the partial object is served; the missing rest cannot be.
    let got = get(&node.url(&part_path), &[("range", "bytes=0-4194303")]).await;
    assert_eq!(got.status, 206);
    assert!(got.body == part.slice(0..4 * MIB as usize));
    let got = get(&node.url(&part_path), &[("range", "bytes=5000000-5000099")]).await;
    assert!(
        got.status != 206 || got.broken,
        "bytes nobody has cannot be served"
    );
    node.kill9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_fill_resumes_without_wrong_bytes() {
    let origin = Origin::start().await;
    // 10 MB/s: the fill of 32 MiB takes seconds, so the kill lands in the middle.
    origin.throttle(10_000_000);
    let bytes = payload((32 * MIB) as usize, 23);
    let path = origin.add(bytes.clone(), "esd");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &origin.url());

    let node = Node::spawn(&config).await;
    let url = node.url(&path);
    let download = tokio::spawn(async move { get(&url, &[]).await });
    node.wait_for(&path, "two slices on disk", |v| {
        v["slices_present"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    let present_before = node.object(&path).await.unwrap()["slices_present"]
        .as_u64()
        .unwrap();
    node.kill9().await;
    let interrupted = download.await.unwrap();
    assert!(interrupted.broken || interrupted.body.len() < bytes.len());
    let requests_before = origin.requests_for(&path).len();

    origin.throttle(0);
    let node = Node::spawn(&config).await;
    let state = node
        .object(&path)
        .await
        .expect("the partial object was recovered");
    assert_eq!(state["state"], "filling");
    assert!(state["slices_present"].as_u64().unwrap() >= present_before.min(2));
    let got = get(&node.url(&path), &[]).await;
    assert_eq!((got.status.as_u16(), got.broken), (200, false));
    assert!(got.body == bytes, "the resumed fill is byte-exact");
    // Slices kept on disk were not fetched again.
    let after: Vec<_> = origin.requests_for(&path)[requests_before..].to_vec();
    let refetched = after.len() as u64;
    let kept = state["slices_present"].as_u64().unwrap();
    assert_eq!(refetched, 8 - kept, "{after:?}");
    node.wait_for(&path, "the commit", |v| v["state"] == "committed")
        .await;
    node.kill9().await;
}
