//! Real download clients and a real upstream against a branch node: curl (resume), aria2c
//! (segmented download), wget (continue, spider) and nginx serving a WSUS content folder as the
//! branch's upstream. Every process talks to 127.0.0.1 only and runs under a timeout; a missing
//! tool is a failure, not a skip (.ci/run installs them).
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::TcpListener as StdTcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::*;
use tokio::process::{Child, Command};
use wsus_edge::simulate::SplitMix;

const MIB: usize = 1 << 20;
const SLICE: u64 = 4 << 20;
/// The most any one tool run may take; it is killed after that.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// A command for an external tool: no proxy from the environment, stdin closed, killed when
/// dropped (so a timed-out future takes its process with it).
fn tool(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

fn missing_tool(what: &str, e: std::io::Error) -> ! {
    panic!(
        "expected to start {what}, but could not ({e}); the tests need curl, aria2c, wget and \
         nginx installed (.ci/run installs them)"
    )
}

/// Run a tool to completion within [`TOOL_TIMEOUT`], capturing its output; killed on timeout.
async fn run(cmd: &mut Command, what: &str) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| missing_tool(what, e));
    match tokio::time::timeout(TOOL_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => output.unwrap_or_else(|e| panic!("{what}: waiting for it failed: {e}")),
        // Dropping the future dropped the child, which kill_on_drop kills.
        Err(_) => {
            panic!("expected {what} to finish within {TOOL_TIMEOUT:?}; it did not and was killed")
        }
    }
}

/// aria2c fetching `url` in four 1 MiB-split segments at once into `dir/name`, with `extra`
/// options.
fn aria2c_segments(dir: &std::path::Path, name: &str, url: &str, extra: &[&str]) -> Command {
    let mut cmd = tool("aria2c");
    cmd.args([
        "--no-conf",
        "--summary-interval=0",
        "--console-log-level=warn",
        "-x4",
        "-s4",
        "-k1M",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
    ])
    .args(extra)
    .arg("-d")
    .arg(dir)
    .args(["-o", name, url]);
    cmd
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let start = text.len().saturating_sub(4000);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "expected {what} to exit 0, it exited {}\n--- stderr:\n{}\n--- stdout:\n{}",
        output.status,
        tail(&output.stderr),
        tail(&output.stdout)
    );
}

/// The upper-case SHA-1 a content URL path names.
fn digest_in(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap();
    name.split('.').next().unwrap().to_ascii_uppercase()
}

/// The downloaded file hashes to the digest in its URL.
fn assert_file_matches(file: &Path, path: &str, what: &str) {
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("{what}: reading {file:?}: {e}"));
    let got = sha1(&bytes).to_hex_upper();
    assert_eq!(
        got,
        digest_in(path),
        "expected the file {what} downloaded ({} bytes) to hash to the name in {path}; it hashes to {got}",
        bytes.len()
    );
}

fn file_len(file: &Path) -> u64 {
    std::fs::metadata(file).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_resumes_an_interrupted_download() {
    logs();
    let origin = Origin::start().await;
    let bytes = payload(24 * MIB, 101);
    let len = bytes.len() as u64;
    let path = origin.add(bytes, "exe");
    let node_dir = tempfile::tempdir().unwrap();
    let node = branch(node_dir.path(), &origin.url(), "").await;
    let url = url(&node, &path);
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("download.exe");

    // 4 MB/s per upstream response: the first slice reaches curl after ~1 s, the last after ~2 s,
    // leaving a window to interrupt curl part-way.
    origin.throttle(4_000_000);
    let mut first = tool("curl");
    first
        .args(["-q", "-s", "-S", "--noproxy", "*", "-o"])
        .arg(&file)
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = first.spawn().unwrap_or_else(|e| missing_tool("curl", e));
    // Some((status, bytes written)) when curl exited first.
    let exited = until(
        "the first curl to write more than 5 MiB",
        Duration::from_secs(60),
        async || {
            let have = file_len(&file);
            if have > 5 * MIB as u64 {
                return Ok(None);
            }
            match child.try_wait().unwrap() {
                Some(status) => Ok(Some((status, have))),
                None => Err(format!("{have} bytes written")),
            }
        },
    )
    .await;
    if let Some((status, have)) = exited {
        let out = child.wait_with_output().await.unwrap();
        panic!(
            "expected curl to still be downloading (to interrupt it past 5 MiB), but it exited \
             {status} with {have} of {len} bytes\n--- stderr:\n{}",
            tail(&out.stderr)
        );
    }
    child.kill().await.expect("kill the first curl");
    let partial = file_len(&file);
    assert!(
        partial > 5 * MIB as u64 && partial < len,
        "expected the interrupted download to hold part of the object (5 MiB < n < {len}); it holds {partial} bytes"
    );

    origin.throttle(0);
    let output = run(
        tool("curl")
            .args([
                "-q",
                "-s",
                "-S",
                "--noproxy",
                "*",
                "-w",
                "%{http_code} %{size_download}",
                "-C",
                "-",
                "-o",
            ])
            .arg(&file)
            .arg(&url),
        "curl -C - (resume)",
    )
    .await;
    assert_success(&output, "curl -C - (resume)");
    let written = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        written.trim(),
        format!("206 {}", len - partial),
        "expected the resumed curl to get a 206 with the {} missing bytes (status, bytes)",
        len - partial
    );
    assert_eq!(
        file_len(&file),
        len,
        "expected the resumed file to be {len} bytes"
    );
    assert_file_matches(&file, &path, "curl -C -");
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aria2c_segmented_download_of_a_cold_object() {
    logs();
    let origin = Origin::start().await;
    let bytes = payload(40 * MIB, 202);
    let len = bytes.len() as u64;
    let path = origin.add(bytes, "cab");
    let node_dir = tempfile::tempdir().unwrap();
    let node = branch(node_dir.path(), &origin.url(), "").await;
    let url = url(&node, &path);
    let out_dir = tempfile::tempdir().unwrap();
    let name = path.rsplit('/').next().unwrap().to_owned();

    let output = run(
        &mut aria2c_segments(out_dir.path(), &name, &url, &[]),
        "aria2c -x4 -s4",
    )
    .await;
    assert_success(&output, "aria2c -x4 -s4");
    let file = out_dir.path().join(&name);
    assert_eq!(
        file_len(&file),
        len,
        "expected aria2c's file to be {len} bytes"
    );
    assert_file_matches(&file, &path, "aria2c");
    let upstream = origin.body_bytes();
    assert!(
        upstream <= len + SLICE,
        "expected the origin to serve at most the object plus one slice ({} bytes) for aria2c's \
         segments; it served {upstream}: {:?}",
        len + SLICE,
        origin.requests_for(&path)
    );
    node.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wget_continues_a_partial_file_and_spiders() {
    logs();
    let origin = Origin::start().await;
    let bytes = payload(12 * MIB, 303);
    let len = bytes.len() as u64;
    let path = origin.add(bytes.clone(), "cab");
    let node_dir = tempfile::tempdir().unwrap();
    let node = branch(node_dir.path(), &origin.url(), "").await;
    let url = url(&node, &path);
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("download.cab");

    // What an interrupted download leaves behind.
    let partial = 3 * MIB + 12345;
    std::fs::write(&file, &bytes[..partial]).unwrap();
    let output = run(
        tool("wget")
            .args(["--no-config", "--no-proxy", "-q", "-c", "-O"])
            .arg(&file)
            .arg(&url),
        "wget -c",
    )
    .await;
    assert_success(&output, "wget -c");
    assert_eq!(
        file_len(&file),
        len,
        "expected wget -c to complete the file to {len} bytes"
    );
    assert_file_matches(&file, &path, "wget -c");
    // It continued: the node sent only the missing bytes (counted before they are sent).
    let served = metric(&node, "wsus_edge_served_bytes_total", "").await as u64;
    assert_eq!(
        served,
        len - partial as u64,
        "expected wget -c to fetch only the {} missing bytes; the node served {served}",
        len - partial as u64
    );

    let output = run(
        tool("wget")
            .args(["--no-config", "--no-proxy", "-q", "--spider"])
            .arg(&url),
        "wget --spider",
    )
    .await;
    assert_success(&output, "wget --spider (HEAD)");
    node.shutdown(Duration::from_secs(1)).await;
}

/// A real nginx on 127.0.0.1 serving `root`, running as a child process; killed when dropped.
struct Nginx {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Nginx {
    async fn start(dir: &Path, root: &Path) -> Nginx {
        // /proc/self belongs to the effective user; as root, workers must stay root to read the
        // temp dir (0700).
        let root_user = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let user = if root_user { "user root;\n" } else { "" };
        for tmp in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.join("tmp").join(tmp)).unwrap();
        }
        let d = dir.display();
        let mut last_error = String::new();
        for _attempt in 0..5 {
            let port = {
                let probe = StdTcpListener::bind("127.0.0.1:0").unwrap();
                probe.local_addr().unwrap().port()
            };
            let conf = format!(
                "{user}master_process off;\n\
                 worker_processes 1;\n\
                 error_log {d}/error.log info;\n\
                 pid {d}/nginx.pid;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n\
                 client_body_temp_path {d}/tmp/client_body;\n\
                 proxy_temp_path {d}/tmp/proxy;\n\
                 fastcgi_temp_path {d}/tmp/fastcgi;\n\
                 uwsgi_temp_path {d}/tmp/uwsgi;\n\
                 scgi_temp_path {d}/tmp/scgi;\n\
                 log_format wsus '$status $request $http_range $body_bytes_sent';\n\
                 access_log {d}/access.log wsus;\n\
                 server {{\n\
                 listen 127.0.0.1:{port};\n\
                 root {root};\n\
                 location = /__ready {{ access_log off; return 204; }}\n\
                 }}\n\
                 }}\n",
                root = root.display()
            );
            std::fs::write(dir.join("nginx.conf"), conf).unwrap();
            let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
            let child = tool("nginx")
                .arg("-p")
                .arg(dir)
                .arg("-e")
                .arg(dir.join("error.log"))
                .arg("-c")
                .arg(dir.join("nginx.conf"))
                .args(["-g", "daemon off;"])
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .unwrap_or_else(|e| missing_tool("nginx", e));
            let mut nginx = Nginx {
                child,
                port,
                dir: dir.to_owned(),
            };
            let ready = format!("http://127.0.0.1:{port}/__ready");
            // Some(status) when nginx exited instead of answering.
            let exited = until(
                &format!("nginx to answer on 127.0.0.1:{port}"),
                Duration::from_secs(15),
                async || {
                    if let Some(status) = nginx.child.try_wait().unwrap() {
                        return Ok(Some(status));
                    }
                    let probe = http::Request::get(&ready)
                        .body(http_body_util::Empty::new())
                        .unwrap();
                    if let Ok(Ok(response)) =
                        tokio::time::timeout(Duration::from_secs(1), client().request(probe)).await
                        && response.status() == 204
                    {
                        return Ok(None);
                    }
                    Err(format!("no answer; error.log:\n{}", nginx.error_log()))
                },
            )
            .await;
            let Some(status) = exited else {
                return nginx;
            };
            last_error = format!(
                "nginx exited {status}\n--- stderr:\n{}\n--- error.log:\n{}",
                std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default(),
                nginx.error_log()
            );
            if !last_error.contains("Address already in use") {
                panic!("expected nginx to start; {last_error}");
            }
            // Another process took the port: try another.
        }
        panic!("expected nginx to bind a free port within 5 attempts; last: {last_error}");
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One access-log line: `$status $request $http_range $body_bytes_sent`.
struct Access {
    status: u16,
    request: String,
    range: String,
    body_bytes: u64,
}

fn parse_access(line: &str) -> Access {
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert!(
        fields.len() >= 4,
        "unexpected nginx access-log line {line:?}"
    );
    Access {
        status: fields[0].parse().unwrap_or(0),
        request: fields[1..fields.len() - 2].join(" "),
        range: fields[fields.len() - 2].to_owned(),
        body_bytes: fields[fields.len() - 1].parse().unwrap_or(u64::MAX),
    }
}

/// The slice start a Range header asks for, if it is one aligned slice of an object of `len`
/// bytes: `bytes=S-E` with S a multiple of the slice size and E its last byte (or, for the last
/// slice, the object's last byte).
fn aligned_slice(range: &str, len: u64) -> Option<u64> {
    let (a, b) = range.strip_prefix("bytes=")?.split_once('-')?;
    let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    let full_end = a + SLICE - 1;
    (a % SLICE == 0 && a < len && (b == full_end || (full_end >= len && b == len - 1))).then_some(a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_as_upstream_gets_each_aligned_slice_once() {
    logs();
    let bytes = payload(10 * MIB + 4321, 404);
    let len = bytes.len() as u64;
    let path = content_path(&bytes, "cab");
    let nginx_dir = tempfile::tempdir().unwrap();
    let www = nginx_dir.path().join("www");
    let file_on_disk = www.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(file_on_disk.parent().unwrap()).unwrap();
    std::fs::write(&file_on_disk, &bytes).unwrap();
    let nginx = Nginx::start(nginx_dir.path(), &www).await;

    let node_dir = tempfile::tempdir().unwrap();
    let upstream = format!("http://127.0.0.1:{}", nginx.port);
    let node = branch(node_dir.path(), &upstream, "").await;
    let url = url(&node, &path);

    // The whole object with curl.
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("whole.cab");
    let output = run(
        tool("curl")
            .args(["-q", "-s", "-S", "-f", "--noproxy", "*", "-o"])
            .arg(&file)
            .arg(&url),
        "curl through the branch of nginx",
    )
    .await;
    assert_success(&output, "curl through the branch of nginx");
    let got = std::fs::read(&file).unwrap();
    assert!(
        got == bytes,
        "expected curl's {} bytes to equal nginx's file ({len} bytes)",
        got.len()
    );

    // 20 random ranges, every form.
    let mut rng = SplitMix(404);
    for i in 0..20 {
        let (header, first, last) = match i % 3 {
            0 => {
                let a = rng.next_u64() % len;
                let b = a + rng.next_u64() % (len - a);
                (format!("bytes={a}-{b}"), a, b)
            }
            1 => {
                let a = rng.next_u64() % len;
                (format!("bytes={a}-"), a, len - 1)
            }
            _ => {
                let n = 1 + rng.next_u64() % len;
                (format!("bytes=-{n}"), len - n, len - 1)
            }
        };
        let got = get(&url, &[("range", &header)]).await;
        assert_eq!(
            got.status, 206,
            "expected 206 for Range: {header}, got {}",
            got.status
        );
        assert!(
            !got.broken,
            "expected the body for Range: {header} to complete; it broke"
        );
        let content_range = got
            .headers
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert_eq!(
            content_range,
            format!("bytes {first}-{last}/{len}"),
            "Content-Range for Range: {header}"
        );
        assert!(
            got.body[..] == bytes[first as usize..=last as usize],
            "expected bytes {first}-{last} of the file for Range: {header}; got {} different bytes",
            got.body.len()
        );
    }

    // nginx logs a request when it has sent it; wait until the log shows every slice.
    let slices = len.div_ceil(SLICE);
    let (Ok(lines) | Err(lines)) = within(Duration::from_secs(10), async || {
        let lines = nginx.access_log();
        if lines.len() as u64 >= slices {
            Ok(lines)
        } else {
            Err(lines)
        }
    })
    .await;
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for line in &lines {
        let access = parse_access(line);
        assert_eq!(
            access.request,
            format!("GET {path} HTTP/1.1"),
            "expected nginx to see only GETs of {path}; it saw {line:?}\nall: {lines:#?}"
        );
        assert_eq!(
            access.status, 206,
            "expected a 206 for every slice; nginx logged {line:?}\nall: {lines:#?}"
        );
        let start = aligned_slice(&access.range, len).unwrap_or_else(|| {
            panic!("expected an aligned 4 MiB slice range; nginx logged {line:?}\nall: {lines:#?}")
        });
        assert_eq!(
            access.body_bytes,
            SLICE.min(len - start),
            "expected nginx to send the whole slice at {start}; it logged {line:?}"
        );
        *seen.entry(start).or_default() += 1;
    }
    for s in 0..slices {
        assert_eq!(
            seen.get(&(s * SLICE)),
            Some(&1),
            "expected the slice at {} to be requested from nginx exactly once; log: {lines:#?}",
            s * SLICE
        );
    }
    assert_eq!(
        seen.len() as u64,
        slices,
        "expected only the {slices} slices; log: {lines:#?}"
    );

    node.shutdown(Duration::from_secs(1)).await;
    nginx.stop().await;
}

/// Whether a download of `size` bytes ended as a complete file and a success: what no client
/// may get from an object whose upstream bytes are wrong.
fn accepted_whole(outputs: &[&Output], file: &Path, size: u64) -> bool {
    outputs.iter().all(|o| o.status.success()) && file.exists() && file_len(file) == size
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_client_assembles_a_complete_wrong_file_from_ranges() {
    logs();
    let origin = Origin::start().await;
    let node_dir = tempfile::tempdir().unwrap();
    let node = branch(node_dir.path(), &origin.url(), "").await;
    let out = tempfile::tempdir().unwrap();
    let size = 8 * MIB as u64;
    // Each client its own object, each served wrong by the origin (same length, other bytes).
    let wrong = |seed: u64| {
        let path = origin.add(payload(8 * MIB, seed), "cab");
        origin.fault(&path, Fault::WrongBytes);
        url(&node, &path)
    };
    let curl = |url: &str, range: &str, file: &Path, append: bool| {
        let mut cmd = tool("curl");
        cmd.args(["-sS", "--fail", "-r", range, url]);
        let file = file.to_owned();
        async move {
            let output = run(&mut cmd, "curl").await;
            let mut bytes = if append {
                std::fs::read(&file).unwrap_or_default()
            } else {
                Vec::new()
            };
            bytes.extend_from_slice(&output.stdout);
            std::fs::write(&file, bytes).unwrap();
            output
        }
    };

    // The last 100 bytes, then all but the last byte.
    let u = wrong(301);
    let (tail_file, head_file) = (out.path().join("tail"), out.path().join("head"));
    let a = curl(&u, "-100", &tail_file, false).await;
    let b = curl(&u, "0-8388606", &head_file, false).await;
    let got = file_len(&tail_file) + file_len(&head_file);
    assert!(
        !(a.status.success() && b.status.success() && got >= size),
        "curl -r -100 then -r 0-8388606 both succeeded with {got} bytes"
    );

    // Two 4 MiB halves, one after the other.
    let u = wrong(302);
    let halves = out.path().join("halves");
    let a = curl(&u, "0-4194303", &halves, false).await;
    let b = curl(&u, "4194304-", &halves, true).await;
    assert!(
        !accepted_whole(&[&a, &b], &halves, size),
        "two halves made a whole wrong file"
    );

    // aria2c, four segments at once.
    let u = wrong(303);
    let output = run(
        &mut aria2c_segments(
            out.path(),
            "aria2c.cab",
            &u,
            &["--max-tries=3", "--retry-wait=1"],
        ),
        "aria2c -x4 -s4",
    )
    .await;
    let file = out.path().join("aria2c.cab");
    assert!(
        !(output.status.success() && file_len(&file) == size),
        "aria2c accepted a complete wrong file"
    );

    // wget -c resuming a first half fetched before.
    let u = wrong(304);
    let resumed = out.path().join("wget.cab");
    let a = curl(&u, "0-4194303", &resumed, false).await;
    let b = run(
        tool("wget")
            .args(["-q", "-c", "--tries=3", "--waitretry=1", "-O"])
            .arg(&resumed)
            .arg(&u),
        "wget -c",
    )
    .await;
    assert!(
        !accepted_whole(&[&a, &b], &resumed, size),
        "wget -c completed a wrong file"
    );
    assert!(metric(&node, "wsus_edge_fill_errors_total", "reason=\"digest\"").await >= 4.0);
}
