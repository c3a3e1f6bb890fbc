//! What a hostile or broken peer must not do to a node: crash it, make it allocate by what it
//! claims, hold its descriptors, or get wrong bytes accepted. Each reproduction against a real
//! node and a misbehaving origin.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// This process's resident memory, in bytes.
fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Wait until a metric has reached `at_least` (a fill's failure is counted by its own task, as
/// the response goes out); fail after 10 s.
async fn metric_reaches(node: &wsus_edge::node::Running, name: &str, labels: &str, at_least: f64) {
    until(
        &format!("{name}{{{labels}}} to reach {at_least}"),
        std::time::Duration::from_secs(10),
        async || {
            let value = metric(node, name, labels).await;
            if value >= at_least {
                Ok(())
            } else {
                Err(value)
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_claiming_a_huge_size_gets_a_502_and_no_allocation() {
    logs();
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = branch(dir.path(), &origin.url(), "").await;
    let before = resident();
    let claims = [u64::MAX, (1 << 63) - 1, 1 << 46, 64 << 30];
    for (i, claim) in claims.into_iter().enumerate() {
        let path = origin.add(payload(1 << 20, 40 + i as u64), "cab");
        origin.fault(&path, Fault::ClaimTotal(claim));
        for method in ["GET", "HEAD"] {
            let got = request(method, &url(&node, &path), &[]).await;
            assert_eq!(got.status, 502, "{method} of a {claim}-byte claim");
        }
        // Ranges anywhere in it too.
        let got = get(&url(&node, &path), &[("range", "bytes=1000-1999")]).await;
        assert_eq!(got.status, 502);
    }
    let grown = resident().saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "resident memory grew by {} MiB",
        grown >> 20
    );
    // Counted per fill: a request that comes while the previous one's fill is still failing
    // joins it, so each object counts at least once rather than once per request.
    metric_reaches(
        &node,
        "wsus_edge_fill_errors_total",
        "reason=\"too_large\"",
        claims.len() as f64,
    )
    .await;
    // The node serves on: an honest object of the same origin, byte-exact.
    let bytes = payload(3 << 20, 9);
    let path = origin.add(bytes.clone(), "cab");
    assert_eq!(get(&url(&node, &path), &[]).await.body, bytes);
    assert_eq!(
        get(&format!("http://{}/livez", node.listening().admin), &[])
            .await
            .status,
        200
    );
    assert!(!logged(&["the upstream claims"]).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_over_the_configured_limit_is_refused() {
    logs();
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = branch(
        dir.path(),
        &origin.url(),
        "[cache]\nslice_bytes = \"1MiB\"\nmax_object_bytes = \"2MiB\"\n",
    )
    .await;
    let small = payload(1 << 20, 1);
    let large = payload(3 << 20, 2);
    let (small_path, large_path) = (origin.add(small.clone(), "cab"), origin.add(large, "cab"));
    assert_eq!(get(&url(&node, &large_path), &[]).await.status, 502);
    assert_eq!(get(&url(&node, &small_path), &[]).await.body, small);
}

const SERVER_SYNC: &str = "/ServerSyncWebService/ServerSyncWebService.asmx";
const REPORTING: &str = "/ReportingWebService/ReportingWebService.asmx";
const CLIENT: &str = "/ClientWebService/client.asmx";
const SERVER_NS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/ServerSyncWebService";
const CLIENT_NS: &str = "http://www.microsoft.com/SoftwareDistribution/Server/ClientWebService";
const REPORTING_NS: &str = "http://www.microsoft.com/SoftwareDistribution";

/// POST `body` (gzip-coded when `gzip`) as a SOAP call: (status, headers, body).
async fn post(
    url: &str,
    operation: &str,
    ns: &str,
    body: Vec<u8>,
    gzip: bool,
    token: Option<&str>,
) -> (u16, http::HeaderMap, String) {
    let mut request = http::Request::post(url)
        .header("content-type", "text/xml; charset=utf-8")
        .header("soapaction", format!("\"{ns}/{operation}\""));
    if gzip {
        request = request.header("content-encoding", "gzip");
    }
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let body = if gzip {
        wsus_edge::http::coding::gzip(&body).unwrap()
    } else {
        body
    };
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let response =
        tokio::time::timeout(std::time::Duration::from_secs(60), client.request(request))
            .await
            .expect("an answer within a minute");
    // Refused by its declared length, the node closes before the body is all sent.
    let Ok(response) = response else {
        return (0, http::HeaderMap::new(), String::new());
    };
    let (parts, body) = response.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// A root node's configuration with `extra` appended, in a directory of its own (kept as long
/// as the returned guard).
fn root_config(extra: &str) -> (tempfile::TempDir, wsus_edge::config::Config) {
    let dir = tempfile::tempdir().unwrap();
    let config = node_config(&dir.path().join("root"), None, "", extra);
    (dir, config)
}

/// A RollupComputerStatus of `elements` empty elements: a few KiB once compressed.
fn rollup_bomb(elements: usize) -> Vec<u8> {
    soap_envelope(
        REPORTING_NS,
        "RollupComputerStatus",
        &format!("<computers>{}</computers>", "<x/>".repeat(elements)),
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_server_services_need_credentials_by_default() {
    logs();
    // No downstream.token_file, no tls.client_ca, no allow_anonymous: the defaults.
    let (_dir, config) = root_config("[downstream]\n");
    let node = start(&config).await;
    let (status, headers, _) = post(
        &url(&node, SERVER_SYNC),
        "GetAuthConfig",
        SERVER_NS,
        soap_envelope(SERVER_NS, "GetAuthConfig", "").into_bytes(),
        false,
        None,
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    // A rollup on the clients' Reporting path, 2 million elements in a few KiB: refused
    // before it is parsed, so it costs nothing like the hundreds of MiB a parse would.
    let before = resident();
    let bomb = rollup_bomb(2_000_000);
    let (status, _, _) = post(
        &url(&node, REPORTING),
        "RollupComputerStatus",
        REPORTING_NS,
        bomb.clone(),
        true,
        None,
    )
    .await;
    assert_eq!(status, 500, "8 MB decoded: over the clients' limit");
    let (status, _, _) = post(
        &url(&node, REPORTING),
        "RollupComputerStatus",
        REPORTING_NS,
        rollup_bomb(900_000),
        true,
        None,
    )
    .await;
    assert_eq!(status, 401, "an unauthenticated rollup");
    let grown = resident().saturating_sub(before);
    assert!(
        grown < 48 << 20,
        "resident memory grew by {} MiB",
        grown >> 20
    );
    // Under its own size limit, too: the clients' (4 MiB), not the rollups' (32 MiB).
    let (status, _, body) = post(
        &url(&node, REPORTING),
        "RollupComputerStatus",
        REPORTING_NS,
        bomb,
        false,
        None,
    )
    .await;
    assert!(
        status == 0 || (status == 500 && body.contains("request body over")),
        "an uncompressed 8 MB body from anyone: {status} {body}"
    );
    metric_reaches(
        &node,
        "wsus_edge_requests_refused_total",
        "reason=\"unauthenticated\"",
        2.0,
    )
    .await;
    // Clients still report on that path.
    let (status, _, body) = post(
        &url(&node, REPORTING),
        "ReportEventBatch",
        REPORTING_NS,
        soap_envelope(REPORTING_NS, "ReportEventBatch", "").into_bytes(),
        false,
        None,
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("InvalidParameters") || body.contains("InvalidCookie"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_only_a_known_downstream_may_roll_up() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("downstream.tokens");
    std::fs::write(&tokens, "branch-one-secret\n").unwrap();
    let extra = format!(
        "[downstream]\ntoken_file = {:?}\n",
        tokens.to_string_lossy()
    );
    let node = start(&node_config(&dir.path().join("root"), None, "", &extra)).await;
    let configuration = soap_envelope(
        REPORTING_NS,
        "GetRollupConfiguration",
        "<cookie><Expiration>9999-12-31T23:59:59.9999999</Expiration><EncryptedData/></cookie>",
    )
    .into_bytes();
    let reporting = url(&node, REPORTING);
    let (status, _, _) = post(
        &reporting,
        "GetRollupConfiguration",
        REPORTING_NS,
        configuration.clone(),
        false,
        Some("guess"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, body) = post(
        &reporting,
        "GetRollupConfiguration",
        REPORTING_NS,
        configuration,
        false,
        Some("branch-one-secret"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("RollupComputerStatusMaxBatchSize"));
    // A known downstream's bomb is parsed, under the operation's element limit.
    let (status, _, body) = post(
        &reporting,
        "RollupComputerStatus",
        REPORTING_NS,
        rollup_bomb(2_100_000),
        true,
        Some("branch-one-secret"),
    )
    .await;
    assert_eq!(status, 500);
    assert!(body.contains("elements"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_calls_are_parsed_under_their_operations_limits() {
    logs();
    let (_dir, config) = root_config("");
    let node = start(&config).await;
    let before = resident();
    // GetConfig carries a few dozen elements: 200,000 in 4 KiB of gzip are refused early.
    let bomb = soap_envelope(CLIENT_NS, "GetConfig", &"<x/>".repeat(200_000)).into_bytes();
    let started = std::time::Instant::now();
    for _ in 0..40 {
        let (status, _, body) = post(
            &url(&node, CLIENT),
            "GetConfig",
            CLIENT_NS,
            bomb.clone(),
            true,
            None,
        )
        .await;
        assert_eq!(status, 500);
        assert!(
            body.contains("more than 2000 elements") || body.contains("2000"),
            "{body}"
        );
    }
    let grown = resident().saturating_sub(before);
    assert!(
        grown < 48 << 20,
        "resident memory grew by {} MiB",
        grown >> 20
    );
    eprintln!("40 GetConfig bombs refused in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_of_large_calls_is_told_the_server_is_busy() {
    logs();
    let (_dir, config) = root_config("");
    let node = start(&config).await;
    // SyncUpdates may carry 100,000 elements: each of these parses whole, then faults.
    let large = soap_envelope(CLIENT_NS, "SyncUpdates", &"<x/>".repeat(99_000)).into_bytes();
    let calls: Vec<_> = (0..48)
        .map(|_| {
            let (url, large) = (url(&node, CLIENT), large.clone());
            tokio::spawn(
                async move { post(&url, "SyncUpdates", CLIENT_NS, large, true, None).await },
            )
        })
        .collect();
    let mut busy = 0;
    for call in calls {
        let (status, headers, body) = call.await.unwrap();
        match status {
            503 => {
                busy += 1;
                assert_eq!(headers["retry-after"], "10");
                assert!(body.contains("ServerBusy"), "{body}");
            }
            500 => assert!(
                body.contains("InvalidCookie") || body.contains("Invalid"),
                "{body}"
            ),
            other => panic!("status {other}: {body}"),
        }
    }
    assert!(busy > 0, "48 large calls at once and none told to wait");
    assert_eq!(
        metric(&node, "wsus_edge_requests_refused_total", "reason=\"busy\"").await,
        f64::from(busy)
    );
    // And the node answers at once again.
    let (status, _, _) = post(
        &url(&node, CLIENT),
        "SyncUpdates",
        CLIENT_NS,
        large,
        true,
        None,
    )
    .await;
    assert_eq!(status, 500);
}

/// More calls than a node answers at once (`listen.max_soap_calls`), none allowed to wait
/// (`max_soap_wait = "0s"`): the rest are told ServerBusy at once, 503 with Retry-After, and
/// counted; the node answers normally when the storm has passed, and simulated clients that
/// meet it come back and finish their scans.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_past_what_the_node_answers_at_once_are_told_it_is_busy() {
    logs();
    let (_dir, mut config) = root_config("");
    config.listen.max_soap_calls = Some(1);
    config.listen.max_soap_wait = Duration::ZERO;
    let node = start(&config).await;
    // Parsed where they arrive (packed SyncUpdates under 512 KiB), milliseconds each.
    let heavy = soap_envelope(CLIENT_NS, "SyncUpdates", &"<x/>".repeat(90_000)).into_bytes();
    let mut busy = 0;
    let mut storms = 0;
    // Calls that never overlap would all be answered: a storm at a time until one is refused
    // (the first nearly always suffices).
    while busy == 0 && storms < 10 {
        storms += 1;
        let calls: Vec<_> = (0..32)
            .map(|_| {
                let (url, heavy) = (url(&node, CLIENT), heavy.clone());
                tokio::spawn(async move {
                    let started = Instant::now();
                    let answer = post(&url, "SyncUpdates", CLIENT_NS, heavy, false, None).await;
                    (answer, started.elapsed())
                })
            })
            .collect();
        for call in calls {
            let ((status, headers, body), took) = call.await.unwrap();
            match status {
                503 => {
                    busy += 1;
                    assert_eq!(headers["retry-after"], "10");
                    assert!(body.contains("<ErrorCode>ServerBusy</ErrorCode>"), "{body}");
                    assert!(body.contains("as many calls as it may"), "{body}");
                    assert!(took < Duration::from_secs(5), "told busy after {took:?}");
                }
                500 => assert!(body.contains("InvalidCookie"), "{body}"),
                other => panic!("status {other}: {body}"),
            }
        }
    }
    assert!(
        busy > 0,
        "{storms} storms of 32 calls, one answered at a time, none refused"
    );
    assert_eq!(
        metric(&node, "wsus_edge_requests_refused_total", "reason=\"busy\"").await,
        f64::from(busy)
    );

    // Clients scanning all at once through a node that answers one call at a time: each call
    // told busy is made again, and every scan completes.
    let fleet = wsus_edge::simulate::wua::Fleet {
        server: format!("http://{}", node.listening().http),
        content_server: None,
        clients: 12,
        concurrency: 12,
        group: None,
        download: false,
        report: false,
        seed: 5,
        rescans: 1,
        fail_every: 0,
        rate: None,
        rescan_rate: None,
        accepts: wsus_edge::http::coding::Coding::Xpress,
        drivers: None,
    };
    let scanned = wsus_edge::simulate::wua::run(&fleet).await;
    assert!(scanned.failures.is_empty(), "{:?}", scanned.failures);
    assert_eq!(scanned.scans, 12);
    let rescans = scanned.rescans.unwrap();
    assert!(rescans.failures.is_empty(), "{:?}", rescans.failures);
    eprintln!(
        "{busy} calls told busy in {storms} storms; the fleet was told busy {} times",
        scanned.busy + rescans.busy
    );
    node.shutdown(Duration::from_secs(1)).await;
}

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How many descriptors this process holds.
fn descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Whether the node closed `socket` within `within`: EOF or a reset on read.
async fn closed(socket: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(within, socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or 400 the node said before closing: read on.
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// Send raw bytes on a fresh connection; what came back until the node closed it or
/// `within` passed.
async fn raw(addr: std::net::SocketAddr, request: &[u8], within: Duration) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(within, socket.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed_and_hits_stay_fast() {
    logs();
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = node_config(dir.path(), Some(&origin.url()), "", "");
    config.listen.limits.header_timeout = Duration::from_secs(2);
    config.listen.limits.idle_timeout = Duration::from_secs(3);
    let node = start(&config).await;
    let bytes = payload(256 << 10, 5);
    let path = origin.add(bytes.clone(), "cab");
    assert_eq!(get(&url(&node, &path), &[]).await.body, bytes);
    let baseline = descriptors();
    let addr = node.listening().http;
    // 600 sockets that send nothing, 100 that trickle a request head a byte at a time.
    let mut idle = Vec::new();
    for _ in 0..600 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let opened = Instant::now();
    let trickle: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn(async move {
                let mut socket = TcpStream::connect(addr).await.unwrap();
                let head =
                    b"GET /Content/00/0000000000000000000000000000000000000000.cab HTTP/1.1\r\n";
                for byte in head.iter() {
                    if socket.write_all(&[*byte]).await.is_err() {
                        return Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                None
            })
        })
        .collect();
    // Legitimate hits meanwhile, each on a fresh connection.
    let mut latencies = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let got = get(&url(&node, &path), &[("range", "bytes=0-65535")]).await;
        latencies.push(started.elapsed());
        assert_eq!(got.status, 206);
        assert_eq!(got.body, bytes.slice(..65536));
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "hit p50 {:?} p99 {:?} with 700 idle or slow sockets",
        latencies[100], p99
    );
    assert!(p99 < Duration::from_millis(100), "hit p99 {p99:?}");
    // Every idle socket is closed once the header timeout has passed (2 s, with slack).
    for socket in &mut idle {
        let left = Duration::from_secs(8).saturating_sub(opened.elapsed());
        assert!(
            closed(socket, left.max(Duration::from_millis(10))).await,
            "an idle socket held"
        );
    }
    for t in trickle {
        let cut = t
            .await
            .unwrap()
            .expect("a slowloris head outlived the header timeout");
        assert!(cut.duration_since(opened) < Duration::from_secs(10));
    }
    drop(idle);
    assert!(
        metric(
            &node,
            "wsus_edge_connections_closed_total",
            "reason=\"header_timeout\""
        )
        .await
            >= 700.0
    );
    // The node's ends are gone with them.
    until(
        &format!("the descriptors to come back to {baseline} (+8)"),
        Duration::from_secs(5),
        async || {
            let open = descriptors();
            if open <= baseline + 8 {
                Ok(())
            } else {
                Err(format!("{open} descriptors, {baseline} before"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_left_idle_is_closed() {
    logs();
    let (_dir, mut config) = root_config("");
    config.listen.limits.idle_timeout = Duration::from_secs(1);
    let node = start(&config).await;
    let mut socket = TcpStream::connect(node.listening().http).await.unwrap();
    socket
        .write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 404"));
    let after = Instant::now();
    assert!(closed(&mut socket, Duration::from_secs(5)).await);
    assert!(after.elapsed() >= Duration::from_millis(900));
    assert!(
        metric(
            &node,
            "wsus_edge_connections_closed_total",
            "reason=\"idle_timeout\""
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_at_once() {
    logs();
    let (_dir, mut config) = root_config("");
    config.listen.limits.max_connections = 16;
    config.listen.limits.header_timeout = Duration::from_secs(2);
    let node = start(&config).await;
    let addr = node.listening().http;
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    // Let the accept loop take them all before the one too many.
    until(
        "16 connections accepted",
        Duration::from_secs(5),
        async || {
            let open = metric(&node, "wsus_edge_connections_open", "listener=\"http\"").await;
            if open >= 16.0 { Ok(()) } else { Err(open) }
        },
    )
    .await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    assert!(closed(&mut extra, Duration::from_secs(1)).await);
    assert!(
        metric(
            &node,
            "wsus_edge_connections_closed_total",
            "reason=\"limit\""
        )
        .await
            >= 1.0
    );
    // The held ones time out, and the listener takes new connections again.
    for socket in &mut held {
        assert!(closed(socket, Duration::from_secs(5)).await);
    }
    let answer = raw(
        addr,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_is_cut_at_the_body_timeout() {
    logs();
    let (_dir, mut config) = root_config("");
    config.listen.limits.body_timeout = Duration::from_secs(1);
    let node = start(&config).await;
    let mut socket = TcpStream::connect(node.listening().http).await.unwrap();
    let head = format!(
        "POST {CLIENT} HTTP/1.1\r\nHost: a\r\nContent-Type: text/xml\r\nContent-Length: 5000\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    // A byte every 200 ms: never idle, never done.
    loop {
        let mut buf = [0u8; 1024];
        tokio::select! {
            read = socket.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if socket.write_all(b"<").await.is_err() { break; }
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the body was never cut"
        );
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        metric(
            &node,
            "wsus_edge_requests_refused_total",
            "reason=\"body_timeout\""
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_headers_follow_rfc_9112_and_heads_are_bounded() {
    logs();
    let (_dir, config) = root_config("");
    let node = start(&config).await;
    let addr = node.listening().http;
    let within = Duration::from_secs(5);
    let answer = raw(
        addr,
        b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n",
        within,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "no Host: {answer}");
    let answer = raw(
        addr,
        b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        within,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "two Hosts: {answer}");
    let answer = raw(addr, b"GET /x HTTP/1.0\r\n\r\n", within).await;
    assert!(
        answer.starts_with("HTTP/1.0 404") || answer.starts_with("HTTP/1.1 404"),
        "HTTP/1.0 without Host: {answer}"
    );
    let answer = raw(
        addr,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        within,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    // A 100 KiB header: 431, the node unharmed.
    let big = format!(
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 << 10)
    );
    let answer = raw(addr, big.as_bytes(), within).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert!(metric(&node, "wsus_edge_requests_refused_total", "reason=\"host\"").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_answers_only_to_its_own_names() {
    logs();
    let (_dir, config) = root_config("[admin]\nserver_names = [\"wsus-admin.example.org\"]\n");
    let node = start(&config).await;
    let admin = node.listening().admin;
    let status = |host: &'static str, path: &'static str| async move {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let answer = raw(admin, request.as_bytes(), Duration::from_secs(5)).await;
        answer[9..12].parse::<u16>().unwrap()
    };
    // A page on another site whose name was rebound to this machine.
    assert_eq!(status("attacker.example", "/api/v1/status").await, 421);
    assert_eq!(status("attacker.example:8540", "/metrics").await, 421);
    assert_eq!(status("localhost:8540", "/api/v1/status").await, 200);
    assert_eq!(status("127.0.0.1", "/api/v1/status").await, 200);
    assert_eq!(status("[::1]:8540", "/api/v1/status").await, 200);
    assert_eq!(
        status("wsus-admin.example.org", "/api/v1/status").await,
        200
    );
    assert_eq!(
        status("test", "/api/v1/status").await,
        200,
        "the node's name"
    );
    // Probes answer whatever name they are sent with (load balancers, kubelets).
    assert_eq!(status("attacker.example", "/livez").await, 200);
    assert!(
        metric(
            &node,
            "wsus_edge_requests_refused_total",
            "reason=\"admin_host\""
        )
        .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_descriptor_limit_is_raised_to_the_hard_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    logs();
    // One below the hard limit (not lower: the other tests of this process hold sockets), so
    // that the raise is seen even where the soft limit starts at the hard one.
    let Rlimit { maximum, .. } = getrlimit(Resource::Nofile);
    let below = maximum.map_or(1 << 20, |hard| hard - 1);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(below),
            maximum,
        },
    )
    .unwrap();
    let (_dir, config) = root_config("");
    let node = start(&config).await;
    let after = getrlimit(Resource::Nofile);
    assert_eq!(after.current, maximum, "the soft limit is the hard one");
    // A gauge is an i64: unlimited shows as its maximum.
    let expected = after
        .current
        .map_or(i64::MAX as f64, |n| n.min(i64::MAX as u64) as f64);
    assert_eq!(
        metric(&node, "wsus_edge_descriptors_limit", "").await,
        expected
    );
}

#[test]
fn check_config_warns_when_the_cache_has_no_room() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = {:?}\n[cache]\nmin_free_disk = \"1000TiB\"\n[downstream]\nallow_anonymous = true\n",
            dir.path().join("data").to_string_lossy()
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsus-edge"))
        .args(["--config", &config.to_string_lossy(), "check-config"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("warning: cache.min_free_disk:"), "{stdout}");
    assert!(stdout.contains("nothing will be cached"), "{stdout}");
    assert!(
        stdout.contains("warning: downstream.allow_anonymous:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("server-server services: anyone"),
        "{stdout}"
    );
}

/// The partial files this process holds open (the node runs in it).
fn open_partial_files(data_dir: &std::path::Path) -> usize {
    let partial = data_dir.join("partial");
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(&partial))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_objects_are_bounded_and_new_objects_are_still_cached() {
    logs();
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("branch");
    let extra = "[cache]\nslice_bytes = \"64KiB\"\nmax_partial_objects = 40\n";
    let node = branch(&data, &origin.url(), extra).await;
    // A one-byte suffix range of each of 120 objects: each stays partial (its last slice only).
    let mut paths = Vec::new();
    for i in 0..120 {
        let bytes = payload(256 << 10, 1000 + i);
        let path = origin.add(bytes.clone(), "cab");
        let got = get(&url(&node, &path), &[("range", "bytes=-1")]).await;
        assert_eq!(got.status, 206);
        assert_eq!(got.body, bytes.slice(bytes.len() - 1..));
        paths.push(path);
    }
    let open = open_partial_files(&data);
    assert!(open <= 2 * 40, "{open} partial files open");
    let on_disk = std::fs::read_dir(data.join("partial")).unwrap().count();
    assert!(on_disk <= 2 * 40, "{on_disk} partial files on disk");
    // A new object is cached as before: fetched once, then served from the cache.
    let bytes = payload(256 << 10, 7);
    let path = origin.add(bytes.clone(), "cab");
    assert_eq!(get(&url(&node, &path), &[]).await.body, bytes);
    assert_eq!(get(&url(&node, &path), &[]).await.body, bytes);
    assert_eq!(origin.requests_for(&path).len(), 4, "one fetch per slice");
    assert_eq!(
        metric(
            &node,
            "wsus_edge_fill_errors_total",
            "reason=\"partial_limit\""
        )
        .await,
        0.0
    );
    // A restart under a lower bound keeps the most recent and discards the rest.
    node.shutdown(Duration::from_secs(1)).await;
    let extra = "[cache]\nslice_bytes = \"64KiB\"\nmax_partial_objects = 10\n";
    let node = branch(&data, &origin.url(), extra).await;
    let on_disk = std::fs::read_dir(data.join("partial")).unwrap().count();
    assert!(
        on_disk <= 2 * 10,
        "{on_disk} partial files after the restart"
    );
    let open = open_partial_files(&data);
    assert!(
        open <= 2 * 10,
        "{open} partial files open after the restart"
    );
    let last = paths.last().unwrap();
    assert_eq!(
        get(&url(&node, last), &[("range", "bytes=-1")])
            .await
            .status,
        206
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_trickles_every_resumption_meets_the_fill_deadline() {
    logs();
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let node = branch_with(
        dir.path(),
        &origin.url(),
        "timeout = \"1s\"\nretries = 4\nfill_timeout = \"3s\"\n",
        "",
    )
    .await;
    let bytes = payload(1 << 20, 77);
    let path = origin.add(bytes.clone(), "cab");
    // Each answer sends 1,000 bytes and stalls: progress every time, so the resumptions alone
    // would go on for 40 attempts of a second each.
    origin.fault(
        &path,
        Fault::StallAfter {
            bytes: 1000,
            times: 1000,
        },
    );
    let started = Instant::now();
    let got = get(&url(&node, &path), &[]).await;
    let took = started.elapsed();
    assert!(
        got.status == 504 || got.broken,
        "status {} broken {}",
        got.status,
        got.broken
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(!logged(&["upstream.fill_timeout"]).is_empty());
}

/// Where a committed object lives under `data_dir`.
fn committed_file(data_dir: &std::path::Path, bytes: &[u8]) -> std::path::PathBuf {
    let hex = sha1(bytes).to_hex();
    data_dir.join("content").join(&hex[38..]).join(&hex)
}

/// Wait until `path` exists (a commit, a seal); fail after 10 s.
async fn appears(path: &std::path::Path) {
    until(
        &format!("{} to appear", path.display()),
        Duration::from_secs(10),
        async || if path.exists() { Ok(()) } else { Err("absent") },
    )
    .await;
}

/// Flip one byte of a file in place.
fn flip(path: &std::path::Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x20], at).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_on_a_branchs_disk_is_never_served() {
    logs();
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "[cache]\nslice_bytes = \"1MiB\"\nmemory_bytes = 0\nscrub_rate = \"off\"\n";
    let node = branch(dir.path(), &origin.url(), extra).await;
    let bytes = payload(3 << 20, 31);
    let path = origin.add(bytes.clone(), "cab");
    assert_eq!(get(&url(&node, &path), &[]).await.body, bytes);
    let file = committed_file(dir.path(), &bytes);
    appears(&file).await;
    appears(&file.with_extension("seal")).await;
    flip(&file, (1 << 20) + 12_345);
    // The slice with the flipped byte is never sent: not whole, not by range.
    let got = get(&url(&node, &path), &[("range", "bytes=1048576-2097151")]).await;
    assert!(
        got.status.is_server_error() || got.broken,
        "status {}",
        got.status
    );
    assert_ne!(got.body, bytes.slice(1 << 20..2 << 20));
    metric_reaches(
        &node,
        "wsus_edge_cache_corrupt_objects_total",
        "found_by=\"read\"",
        1.0,
    )
    .await;
    // It is gone from the disk, and the next request fetches it again: right bytes.
    assert!(!file.exists());
    let before = origin.requests_for(&path).len();
    assert_eq!(get(&url(&node, &path), &[]).await.body, bytes);
    assert!(origin.requests_for(&path).len() > before);
    assert!(!logged(&["no longer match its digest", "removed"]).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_on_a_roots_disk_is_reported_and_never_served() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("root");
    let source = dir.path().join("payloads");
    std::fs::create_dir_all(&source).unwrap();
    let bytes = payload(300 << 10, 32);
    std::fs::write(source.join("update.cab"), &bytes).unwrap();
    wsus_edge::content::import_dir(&data, &source).unwrap();
    let file = committed_file(&data, &bytes);
    assert!(file.with_extension("seal").exists(), "import seals");
    flip(&file, 7);
    let config = node_config(
        &data,
        None,
        "",
        "[cache]\nmemory_bytes = 0\nscrub_rate = \"off\"\n",
    );
    let node = start(&config).await;
    let path = content_path(&bytes, "cab");
    let got = get(&url(&node, &path), &[]).await;
    assert!(
        got.status.is_server_error() || got.broken,
        "status {}",
        got.status
    );
    assert_ne!(got.body, bytes);
    metric_reaches(
        &node,
        "wsus_edge_cache_corrupt_objects_total",
        "found_by=\"read\"",
        1.0,
    )
    .await;
    // Kept for the operator under corrupt/, and not served again.
    assert!(data.join("corrupt").join(sha1(&bytes).to_hex()).exists());
    assert_eq!(get(&url(&node, &path), &[]).await.status, 404);
    assert!(!logged(&["moved to corrupt/"]).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrub_finds_a_flipped_byte_and_seals_unsealed_objects() {
    logs();
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = "[cache]\nslice_bytes = \"1MiB\"\nmemory_bytes = 0\nscrub_rate = \"1GiB/s\"\n";
    let node = branch(dir.path(), &origin.url(), extra).await;
    let (good, bad) = (payload(2 << 20, 41), payload(2 << 20, 42));
    let (good_path, bad_path) = (
        origin.add(good.clone(), "cab"),
        origin.add(bad.clone(), "cab"),
    );
    assert_eq!(get(&url(&node, &good_path), &[]).await.body, good);
    assert_eq!(get(&url(&node, &bad_path), &[]).await.body, bad);
    let (good_file, bad_file) = (
        committed_file(dir.path(), &good),
        committed_file(dir.path(), &bad),
    );
    appears(&good_file.with_extension("seal")).await;
    appears(&bad_file.with_extension("seal")).await;
    // An object as an older version left it (no seal), and one whose disk went bad.
    std::fs::remove_file(good_file.with_extension("seal")).unwrap();
    flip(&bad_file, 1_500_000);
    metric_reaches(
        &node,
        "wsus_edge_cache_corrupt_objects_total",
        "found_by=\"scrub\"",
        1.0,
    )
    .await;
    metric_reaches(&node, "wsus_edge_cache_sealed_objects_total", "", 1.0).await;
    assert!(good_file.with_extension("seal").exists());
    assert!(!bad_file.exists());
    assert!(metric(&node, "wsus_edge_cache_scrubbed_bytes_total", "").await >= (2 << 20) as f64);
    // The damaged one comes from the upstream again, right.
    assert_eq!(get(&url(&node, &bad_path), &[]).await.body, bad);
    assert_eq!(get(&url(&node, &good_path), &[]).await.body, good);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_slice_gone_bad_on_disk_is_fetched_again() {
    // Without a memory tier every read is checked; with one, the first response that would
    // send the slice from the file reads it back and checks it first.
    for memory in ["0", "64MiB"] {
        partial_slice_gone_bad(memory).await;
    }
}

async fn partial_slice_gone_bad(memory_bytes: &str) {
    logs();
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("[cache]\nslice_bytes = \"1MiB\"\nmemory_bytes = \"{memory_bytes}\"\n");
    let node = branch(dir.path(), &origin.url(), &extra).await;
    let bytes = payload(3 << 20, 51);
    let path = origin.add(bytes.clone(), "cab");
    // The first slice only: the object stays partial.
    let got = get(&url(&node, &path), &[("range", "bytes=0-99")]).await;
    assert_eq!(got.body, bytes.slice(0..100));
    // Until the slice is on disk (its fill goes on after the 100 bytes were sent).
    let info = format!(
        "http://{}/api/v1/content/{}",
        node.listening().admin,
        sha1(&bytes).to_hex()
    );
    until(
        "the first slice on disk",
        Duration::from_secs(10),
        async || {
            let got = get(&info, &[]).await;
            let json: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
            if json["slices_present"] == 1 {
                Ok(())
            } else {
                Err(json)
            }
        },
    )
    .await;
    let data = dir
        .path()
        .join("partial")
        .join(format!("{}.data", sha1(&bytes).to_hex()));
    flip(&data, 50);
    let fetched = origin.requests_for(&path).len();
    let got = get(&url(&node, &path), &[("range", "bytes=0-99")]).await;
    assert_eq!(got.status, 206);
    assert_eq!(got.body, bytes.slice(0..100), "memory_bytes {memory_bytes}");
    assert!(
        origin.requests_for(&path).len() > fetched,
        "fetched again (memory_bytes {memory_bytes})"
    );
}
