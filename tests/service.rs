//! `wsus-edge serve` as a service manager runs it: a real process, told where systemd listens
//! (`NOTIFY_SOCKET`), reloaded by SIGHUP, stopped by SIGTERM, its stderr a file or the journal;
//! operator mistakes reported as such; `status` and `health` asking it how it is.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead as _, Read as _};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use http_body_util::BodyExt as _;
use wsus_edge::wsusss::SERVER_SYNC_NS;

const BIN: &str = env!("CARGO_BIN_EXE_wsus-edge");
const SYNC: &str = "/ServerSyncWebService/ServerSyncWebService.asmx";

/// A node running as a process of its own, with the addresses it printed when ready.
struct Process {
    child: Child,
    http: String,
    admin: String,
    stderr: PathBuf,
}

impl Process {
    /// Start `serve` on the config file `config` (stderr to `config`.log, emptied) with `env`,
    /// and wait (bounded) for its readiness line.
    fn start(config: &Path, env: &[(&str, &str)]) -> Process {
        let log = std::fs::File::create(config.with_extension("log")).unwrap();
        Process::launch(config, env, log)
    }

    /// [`Process::start`] with stderr to `log`.
    fn launch(config: &Path, env: &[(&str, &str)], log: std::fs::File) -> Process {
        let stderr = config.with_extension("log");
        let mut cmd = Command::new(BIN);
        cmd.args(["--config", &config.to_string_lossy(), "serve"])
            .env_remove("WSUS_EDGE_LOG")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the binary runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no ready line; log:\n{}", read(&stderr)));
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {line:?}; log:\n{}", read(&stderr)))
                .to_owned()
        };
        Process {
            http: format!("http://{}", field("http")),
            admin: format!("http://{}", field("admin")),
            child,
            stderr,
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then the exit status (bounded).
    fn stop(mut self) -> (i32, String) {
        self.signal("TERM");
        let status = until_blocking(
            "the node to stop on SIGTERM",
            Duration::from_secs(60),
            || self.child.try_wait().unwrap().ok_or("still running"),
        );
        (status.code().unwrap_or(-1), read(&self.stderr))
    }

    fn log(&self) -> String {
        read(&self.stderr)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// A root's configuration file in `dir` with `extra` TOML appended.
fn root_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("node.toml");
    std::fs::write(
        &path,
        format!(
            "[node]\nname = \"svc\"\ndata_dir = {:?}\nshutdown_grace = \"20s\"\n\
             [listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{extra}",
            dir.join("data").to_string_lossy()
        ),
    )
    .unwrap();
    path
}

/// The next datagram on the notify socket that contains `word`, within `within`; every
/// datagram seen on the way is returned too.
fn notified(socket: &UnixDatagram, word: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {word} within {within:?}; got {seen:?}");
        socket.set_read_timeout(Some(left)).unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let found = text.lines().any(|l| l == word);
            seen.push(text);
            if found {
                return seen;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_once_readyz_is_200_then_reloading_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let config = root_config(dir.path(), "");
    let node = Process::start(
        &config,
        &[
            ("NOTIFY_SOCKET", &socket_path.to_string_lossy()),
            // 400 ms: a ping every 200 ms.
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let seen = notified(&socket, "READY=1", Duration::from_secs(60));
    // The moment systemd hears READY=1, the node answers: the probe and a client request.
    let ready = get(&format!("{}/readyz", node.admin), &[]).await;
    assert_eq!(ready.status, 200, "{seen:?}");
    let missing = get(
        &format!("{}/Content/00/{}.cab", node.http, "0".repeat(40)),
        &[],
    )
    .await;
    assert_eq!(missing.status, 404);
    assert!(
        seen.iter().any(|d| d.contains("STATUS=serving clients")),
        "{seen:?}"
    );
    notified(&socket, "WATCHDOG=1", Duration::from_secs(10));
    node.signal("HUP");
    let reload = notified(&socket, "RELOADING=1", Duration::from_secs(10));
    assert!(
        reload.last().unwrap().contains("MONOTONIC_USEC="),
        "systemd 253 wants the time with RELOADING=1: {reload:?}"
    );
    notified(&socket, "READY=1", Duration::from_secs(10));
    let pid = node.child.id();
    let (code, log) = node.stop();
    notified(&socket, "STOPPING=1", Duration::from_secs(10));
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("reloaded"), "{log}");
    assert!(pid > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_accepts_a_new_downstream_token_while_a_download_finishes_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("downstream.tokens");
    std::fs::write(&tokens, "alpha-secret\n").unwrap();
    // 24 MiB served by the root while the reload happens.
    let bytes = payload(24 << 20, 7);
    let source = dir.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("big.cab"), &bytes).unwrap();
    wsus_edge::content::import_dir(&dir.path().join("data"), &source).unwrap();
    let config = root_config(
        dir.path(),
        &format!(
            "[downstream]\ntoken_file = {:?}\n",
            tokens.to_string_lossy()
        ),
    );
    let node = Process::start(&config, &[]);
    let pid = node.child.id();
    let sync = format!("{}{SYNC}", node.http);
    let call = |token: &'static str| {
        let sync = sync.clone();
        async move {
            soap_call_to(&sync, SERVER_SYNC_NS, "GetAuthConfig", "", Some(token))
                .await
                .0
        }
    };
    assert_eq!(call("alpha-secret").await, 200);
    assert_eq!(call("beta-secret").await, 401);

    // A download in flight: its head and first bytes are here, the rest is not read yet.
    let response = client()
        .request(
            http::Request::get(format!("{}{}", node.http, content_path(&bytes, "cab")))
                .body(http_body_util::Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = Vec::with_capacity(bytes.len());
    while received.len() < (1 << 20) {
        let frame = body.frame().await.unwrap().unwrap();
        received.extend_from_slice(&frame.into_data().unwrap());
    }

    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&tokens)
        .unwrap();
    std::io::Write::write_all(&mut file, b"beta-secret\n").unwrap();
    node.signal("HUP");
    until(
        "the new token to be accepted after SIGHUP",
        Duration::from_secs(30),
        async || match call("beta-secret").await {
            200 => Ok(()),
            status => Err(format!("{status}; the log:\n{}", node.log())),
        },
    )
    .await;
    assert_eq!(call("alpha-secret").await, 200);
    assert_eq!(call("gamma-secret").await, 401);
    let log = node.log();
    assert!(
        log.contains("downstream.token_file (2 tokens)"),
        "the log says what was reloaded:\n{log}"
    );

    while let Some(frame) = body.frame().await {
        received.extend_from_slice(&frame.unwrap().into_data().unwrap());
    }
    assert_eq!(received.len(), bytes.len());
    assert_eq!(
        sha1(&received),
        sha1(&bytes),
        "the download finished byte-exact"
    );
    assert_eq!(node.child.id(), pid);
    let (code, log) = node.stop();
    assert_eq!(code, 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_says_what_needs_a_restart_and_refuses_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = root_config(dir.path(), "[log]\nlevel = \"info\"\n");
    let node = Process::start(&config, &[]);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("level = \"info\"", "level = \"debug\"")
            + "[cache]\nmemory_bytes = \"64MiB\"\n",
    )
    .unwrap();
    node.signal("HUP");
    wait_for_log(&node, "needs_restart");
    let log = node.log();
    let line = log.lines().find(|l| l.contains("needs_restart")).unwrap();
    assert!(line.contains("log.level (info → debug)"), "{line}");
    assert!(line.contains("[cache]"), "{line}");
    // A file with a mistake changes nothing and keeps the node up.
    std::fs::write(&config, "[cache]\nmemory_bytes = \"lots\"\n").unwrap();
    node.signal("HUP");
    wait_for_log(&node, "reload refused");
    assert!(node.log().contains("cache.memory_bytes"), "{}", node.log());
    let ready = get(&format!("{}/readyz", node.admin), &[]).await;
    assert_eq!(ready.status, 200);
    let (code, log) = node.stop();
    assert_eq!(code, 0, "{log}");
}

fn wait_for_log(node: &Process, word: &str) {
    until_blocking(
        &format!("{word:?} in the log"),
        Duration::from_secs(30),
        || {
            let log = node.log();
            if log.contains(word) {
                Ok(())
            } else {
                Err(format!("\n{log}"))
            }
        },
    );
}

/// Client requests of every kind against a node: a content hit, a SOAP call, a 404.
async fn some_traffic(node: &Process, bytes: &[u8]) -> (String, String) {
    let hit = request(
        "GET",
        &format!("{}{}", node.http, content_path(bytes, "cab")),
        &[
            ("user-agent", "Microsoft BITS/7.8"),
            ("range", "bytes=0-99"),
        ],
    )
    .await;
    assert_eq!(hit.status, 206);
    let id = hit.headers["x-request-id"].to_str().unwrap().to_owned();
    let (status, _, _) = soap_call_to(
        &format!("{}/ClientWebService/client.asmx", node.http),
        "http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService",
        "GetConfig",
        "<protocolVersion>1.20</protocolVersion>",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let missing = get(&format!("{}/nothing-here", node.http), &[]).await;
    assert_eq!(missing.status, 404);
    (
        id,
        missing.headers["x-request-id"].to_str().unwrap().to_owned(),
    )
}

fn root_with_payload(dir: &Path, extra: &str) -> (PathBuf, bytes::Bytes) {
    let bytes = payload(300_000, 3);
    let source = dir.join("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("x.cab"), &bytes).unwrap();
    wsus_edge::content::import_dir(&dir.join("data"), &source).unwrap();
    (root_config(dir, extra), bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_in_a_file_are_flat_lines_with_who_asked_and_every_soap_call() {
    let dir = tempfile::tempdir().unwrap();
    let (config, bytes) = root_with_payload(dir.path(), "[log]\nformat = \"json\"\n");
    let node = Process::start(&config, &[]);
    let (hit_id, _) = some_traffic(&node, &bytes).await;
    let (code, log) = node.stop();
    assert_eq!(code, 0, "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no escape characters in a file:\n{log}"
    );
    assert!(
        !log.contains("\"None\""),
        "no Rust Option in the fields:\n{log}"
    );
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for line in &lines {
        for key in ["timestamp", "level", "target"] {
            assert!(line[key].is_string(), "{key} in {line}");
        }
        // Flat: no nested objects.
        assert!(
            line.as_object().unwrap().values().all(|v| !v.is_object()),
            "{line}"
        );
    }
    let access = |f: &dyn Fn(&serde_json::Value) -> bool| {
        lines
            .iter()
            .find(|l| l["target"] == "wsus_edge::access" && f(l))
            .cloned()
            .unwrap_or_else(|| panic!("no such access line in:\n{log}"))
    };
    let hit = access(&|l| {
        l["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/Content/"))
    });
    assert_eq!(hit["request_id"], hit_id.as_str());
    assert_eq!(hit["user_agent"], "Microsoft BITS/7.8");
    assert!(
        hit["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{hit}"
    );
    assert_eq!(hit["status"], 206);
    assert_eq!(hit["cache"], "hit-disk");
    let soap = access(&|l| l["operation"] == "GetConfig");
    assert_eq!(soap["status"], 200);
    assert_eq!(soap["fault"], "-");
    assert_eq!(soap["method"], "POST");
    assert!(
        soap["ms"].is_u64() && soap["bytes"].as_u64().unwrap() > 100,
        "{soap}"
    );
    assert_eq!(soap["request_id"].as_str().unwrap().len(), 16);
    let missing = access(&|l| l["path"] == "/nothing-here");
    assert_eq!(missing["status"], 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_have_no_colour_in_a_file_and_priorities_in_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (config, bytes) = root_with_payload(dir.path(), "");
    let node = Process::start(&config, &[]);
    some_traffic(&node, &bytes).await;
    let (code, log) = node.stop();
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains('\u{1b}'), "{log}");
    assert!(log.contains("operation=GetConfig"), "{log}");

    // systemd names the journal's stream in JOURNAL_STREAM: stderr is then that stream.
    let journal = dir.path().join("node.log");
    let config2 = dir.path().join("node2.toml");
    std::fs::copy(&config, &config2).unwrap();
    let stream = {
        let file = std::fs::File::create(config2.with_extension("log")).unwrap();
        let meta = file.metadata().unwrap();
        format!(
            "{}:{}",
            std::os::unix::fs::MetadataExt::dev(&meta),
            std::os::unix::fs::MetadataExt::ino(&meta)
        )
    };
    let node = spawn_keeping_log(&config2, &[("JOURNAL_STREAM", &stream)]);
    some_traffic(&node, &bytes).await;
    let (code, log) = node.stop();
    assert_eq!(code, 0, "{log}");
    assert!(!log.is_empty());
    for line in log.lines() {
        let priority = line
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .map(|(p, _)| p)
            .unwrap_or_else(|| panic!("no priority: {line}"));
        assert!(["3", "4", "6", "7"].contains(&priority), "{line}");
    }
    assert!(log.contains("<6> INFO"), "{log}");
    assert!(journal.exists());
}

/// [`Process::start`] without emptying the log file (its device and inode are the stream's).
fn spawn_keeping_log(config: &Path, env: &[(&str, &str)]) -> Process {
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(config.with_extension("log"))
        .unwrap();
    Process::launch(config, env, log)
}

/// `wsus-edge ARGS`: (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("WSUS_EDGE_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_and_check_config_find_the_same_problems() {
    let dir = tempfile::tempdir().unwrap();
    let unreadable = dir.path().join("tokens");
    std::fs::write(&unreadable, "").unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let config = root_config(
        dir.path(),
        &format!(
            "https = \"127.0.0.1:0\"\n[tls]\ncert = {junk:?}\nkey = {junk:?}\n\
             [admin]\ntoken_file = {unreadable:?}\n[cache]\nmax_ranges = \"16\"\n\
             read_ahead = \"many\"\n",
        ),
    );
    let path = config.to_string_lossy().into_owned();
    let (check_code, _, check) = run(&["check-config", &path]);
    let (serve_code, _, serve) = run(&["--config", &path, "serve"]);
    assert_eq!(check_code, 2, "{check}");
    assert_eq!(serve_code, 2, "{serve}");
    assert_eq!(check, serve, "the same problems, the same words");
    assert!(check.contains("cache.read_ahead"), "{check}");
    // A number given as a string is a number.
    assert!(!check.contains("cache.max_ranges"), "{check}");

    // Now every file parses, but one token file is empty: both say so.
    let config = root_config(
        dir.path(),
        &format!("[admin]\ntoken_file = {unreadable:?}\n"),
    );
    let path = config.to_string_lossy().into_owned();
    let (check_code, _, check) = run(&["check-config", &path]);
    let (serve_code, _, serve) = run(&["--config", &path, "serve"]);
    assert_eq!((check_code, serve_code), (2, 2));
    assert_eq!(check, serve);
    assert!(
        check.contains("admin.token_file") && check.contains("holds no token"),
        "{check}"
    );
}

#[test]
fn a_port_in_use_is_a_configuration_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = root_config(dir.path(), "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "http = \"127.0.0.1:0\"",
        &format!("http = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&config, text).unwrap();
    let (code, _, stderr) = run(&["--config", &config.to_string_lossy(), "serve"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "configuration error: listen.http 127.0.0.1:{port}: cannot bind"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(!stderr.contains("internal"), "{stderr}");

    // A data_dir the node cannot make (procfs takes no new directories, not even from root).
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&format!("127.0.0.1:{port}"), "127.0.0.1:0");
    let data_dir = format!("{:?}", dir.path().join("data").to_string_lossy());
    std::fs::write(&config, text.replace(&data_dir, "\"/proc/wsus-edge-test\"")).unwrap();
    let (code, _, stderr) = run(&["--config", &config.to_string_lossy(), "serve"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("configuration error: node.data_dir /proc/wsus-edge-test: cannot create"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_health_ask_the_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = root_with_payload(dir.path(), "");
    let node = Process::start(&config, &[]);
    let admin = node.admin.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || run(&["status", "--admin", &admin]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    for line in [
        "node         svc (root), wsus-edge 0.1.0 (commit ",
        "ready        yes",
        "upstream     none (a root)",
        "cache        1 objects",
        "computers    0;",
    ] {
        assert!(out.contains(line), "{line:?} in:\n{out}");
    }
    let admin = node.admin.clone();
    let (code, out, _) =
        tokio::task::spawn_blocking(move || run(&["status", "--json", "--admin", &admin]))
            .await
            .unwrap();
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["role"], "root");
    // The configuration tells where the admin listener is (here a fixed port, since 0 would
    // not say which).
    let admin = node.admin.clone();
    let (code, out, _) =
        tokio::task::spawn_blocking(move || run(&["health", "--ready", "--admin", &admin]))
            .await
            .unwrap();
    assert_eq!((code, out.trim()), (0, "ready"));
    let (code, _) = node.stop();
    assert_eq!(code, 0);
    // Nobody there: exit 1, says so.
    let nobody = Refusing::new();
    let (code, _, err) = run(&["health", "--admin", &nobody.url()]);
    assert_eq!(code, 1);
    assert!(err.contains("no answer"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_that_never_synced_is_alive_but_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    // An upstream that refuses every connection, for as long as the test runs.
    let nowhere = Refusing::new();
    let config = root_config(
        dir.path(),
        &format!(
            "[upstream]\nurl = {:?}\nconnect_timeout = \"1s\"\n",
            nowhere.url()
        ),
    );
    let node = Process::start(&config, &[]);
    let live = get(&format!("{}/livez", node.admin), &[]).await;
    assert_eq!(live.status, 200);
    // Not ready, and why (the first sync is under way or failed), however long it takes.
    let ready = get(&format!("{}/readyz", node.admin), &[]).await;
    assert_eq!(ready.status, 503);
    let text = String::from_utf8_lossy(&ready.body);
    assert!(text.contains("no catalog yet"), "{text}");
    let admin = node.admin.clone();
    let (code, _, _) =
        tokio::task::spawn_blocking(move || run(&["health", "--ready", "--admin", &admin]))
            .await
            .unwrap();
    assert_eq!(code, 1);
    let metrics = get(&format!("{}/metrics", node.admin), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.contains("\nwsus_edge_ready 0\n"), "{text}");
    let (code, _) = node.stop();
    assert_eq!(code, 0);
}

#[test]
fn the_stop_grace_lets_a_slow_download_finish() {
    // SIGTERM arrives while most of a download is still to be sent (more than the socket
    // buffers hold): the client still gets every byte within the grace.
    let dir = tempfile::tempdir().unwrap();
    let bytes = payload(64 << 20, 11);
    let source = dir.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(source.join("slow.cab"), &bytes).unwrap();
    wsus_edge::content::import_dir(&dir.path().join("data"), &source).unwrap();
    let config = root_config(dir.path(), "");
    let node = Process::start(&config, &[]);
    let addr = node.http.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    std::io::Write::write_all(
        &mut stream,
        format!(
            "GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
            content_path(&bytes, "cab")
        )
        .as_bytes(),
    )
    .unwrap();
    let mut first = vec![0u8; 64 << 10];
    stream.read_exact(&mut first).unwrap();
    node.signal("TERM");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    let body_at = first.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(sha1(&first[body_at..]), sha1(&bytes));
    let (code, log) = node.stop();
    assert_eq!(code, 0, "{log}");
}
