//! Large committed objects leave from the page cache: on a plain HTTP/1 connection by
//! `sendfile` (counted in `wsus_edge_sendfile_bytes_total`), on HTTP/2 read from the file; the
//! bytes are the object's either way, whole, by range, several ranges, and many responses in a
//! row on one connection. So do the slices a fill has written while the object is still
//! incomplete.
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use wsus_edge::node::Running;

const MIB: usize = 1 << 20;

/// A branch holding `bytes` committed (fetched once from an origin, then committed).
async fn committed(dir: &std::path::Path, bytes: &Bytes) -> (Origin, Running, String) {
    committed_in_slices(dir, bytes, "1MiB").await
}

async fn committed_in_slices(
    dir: &std::path::Path,
    bytes: &Bytes,
    slice_bytes: &str,
) -> (Origin, Running, String) {
    let origin = Origin::start().await;
    let path = origin.add(bytes.clone(), "cab");
    let extra = format!("[cache]\nslice_bytes = \"{slice_bytes}\"\n");
    let node = branch(dir, &origin.url(), &extra).await;
    assert!(get(&url(&node, &path), &[]).await.body == *bytes);
    let info = format!(
        "http://{}/api/v1/content/{}",
        node.listening().admin,
        &path[12..52]
    );
    until("the commit", Duration::from_secs(10), async || {
        let body = String::from_utf8_lossy(&get(&info, &[]).await.body).into_owned();
        if body.contains("\"state\": \"committed\"") {
            Ok(())
        } else {
            Err(body)
        }
    })
    .await;
    (origin, node, path)
}

async fn sent_by_sendfile(node: &Running) -> u64 {
    metric(node, "wsus_edge_sendfile_bytes_total", "").await as u64
}

/// Requests one after another on one HTTP/1.1 connection: the answers' statuses and bodies.
async fn on_one_connection(
    node: &Running,
    requests: &[(&str, Option<String>)],
) -> Vec<(u16, Bytes)> {
    let stream = tokio::net::TcpStream::connect(node.listening().http)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut answers = Vec::new();
    for (path, range) in requests {
        let mut builder = Request::get(*path).header("host", "edge");
        if let Some(range) = range {
            builder = builder.header("range", range);
        }
        sender.ready().await.unwrap();
        let response = sender
            .send_request(builder.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        answers.push((status, body));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_objects_and_ranges_go_out_by_sendfile_with_the_right_bytes() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let bytes = payload(5 * MIB + 12_345, 61);
    let (_origin, node, path) = committed(dir.path(), &bytes).await;

    // The first read of each slice checks it against the seal (and sends what it read); from
    // then on the note in the memory tier lets the page cache's bytes go out by sendfile.
    let got = get(&url(&node, &path), &[]).await;
    assert!(got.status == 200 && !got.broken && got.body == bytes);
    let before = sent_by_sendfile(&node).await;
    let got = get(&url(&node, &path), &[]).await;
    assert!(got.status == 200 && !got.broken);
    assert_eq!(sha1(&got.body), sha1(&bytes), "whole object, by sendfile");
    let whole = sent_by_sendfile(&node).await - before;
    assert_eq!(whole, bytes.len() as u64, "every byte of it by sendfile");

    // A range across a slice boundary, one that ends at the object's end, a suffix range.
    for (range, from, to) in [
        ("bytes=1048000-3145999", 1_048_000, 3_146_000),
        ("bytes=5000000-", 5_000_000, bytes.len()),
        ("bytes=-70000", bytes.len() - 70_000, bytes.len()),
    ] {
        let before = sent_by_sendfile(&node).await;
        let got = get(&url(&node, &path), &[("range", range)]).await;
        assert_eq!(got.status, 206, "{range}");
        assert!(!got.broken && got.body == bytes.slice(from..to), "{range}");
        assert_eq!(sent_by_sendfile(&node).await - before, (to - from) as u64);
    }

    // Several ranges: multipart framing from memory between file ranges, in order.
    let got = get(
        &url(&node, &path),
        &[("range", "bytes=10-19,2097150-2097160,5242000-5242999")],
    )
    .await;
    assert_eq!(got.status, 206);
    let body = got.body.clone();
    let at = |part: &[u8]| body.windows(part.len()).position(|w| w == part);
    let parts = [
        bytes.slice(10..20),
        bytes.slice(2_097_150..2_097_161),
        bytes.slice(5_242_000..5_243_000),
    ];
    let positions: Vec<_> = parts.iter().map(|p| at(p).expect("each part")).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "in order");
    assert!(
        String::from_utf8_lossy(&body).contains("Content-Range: bytes 2097150-2097160/5255225")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_in_a_row_on_one_connection_keep_their_order() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let bytes = payload(3 * MIB + 7, 62);
    let (origin, node, path) = committed(dir.path(), &bytes).await;
    let small = payload(4096, 63);
    let small_path = origin.add(small.clone(), "cab");
    assert!(get(&url(&node, &small_path), &[]).await.body == small);
    // Checked once, so that what follows goes out by sendfile.
    assert!(get(&url(&node, &path), &[]).await.body == bytes);

    let before = sent_by_sendfile(&node).await;
    let ranges: Vec<(usize, usize)> = (0..12)
        .map(|i| {
            let start = (i * 262_139) % (bytes.len() - 300_000);
            (start, start + 1 + (i * 37_003) % 300_000)
        })
        .collect();
    let mut requests = Vec::new();
    for (start, end) in &ranges {
        requests.push((path.as_str(), Some(format!("bytes={start}-{}", end - 1))));
        requests.push((small_path.as_str(), None));
    }
    requests.push((path.as_str(), None));
    let answers = on_one_connection(&node, &requests).await;
    for (i, (start, end)) in ranges.iter().enumerate() {
        assert_eq!(answers[2 * i].0, 206);
        assert!(answers[2 * i].1 == bytes.slice(*start..*end), "range {i}");
        assert_eq!(answers[2 * i + 1].0, 200);
        assert!(
            answers[2 * i + 1].1 == small,
            "small object after range {i}"
        );
    }
    assert!(answers.last().unwrap().1 == bytes);
    let ranged: usize = ranges.iter().map(|(s, e)| e - s).sum();
    assert_eq!(
        sent_by_sendfile(&node).await - before,
        (ranged + bytes.len()) as u64,
        "the large object's bytes by sendfile, the small one's from memory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_reads_the_file_instead() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let bytes = payload(4 * MIB + 99, 64);
    let (_origin, node, path) = committed(dir.path(), &bytes).await;
    assert!(get(&url(&node, &path), &[]).await.body == bytes);

    let before = sent_by_sendfile(&node).await;
    let stream = tokio::net::TcpStream::connect(node.listening().http)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let uri = format!("http://{}{}", node.listening().http, path);
    let mut bodies = Vec::new();
    for range in [None, Some("bytes=1000000-2999999")] {
        let mut builder = Request::get(&uri);
        if let Some(range) = range {
            builder = builder.header("range", range);
        }
        let response = sender
            .send_request(builder.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        bodies.push(response.into_body().collect().await.unwrap().to_bytes());
    }
    assert_eq!(sha1(&bodies[0]), sha1(&bytes));
    assert!(bodies[1] == bytes.slice(1_000_000..3_000_000));
    assert_eq!(
        sent_by_sendfile(&node).await,
        before,
        "no sendfile on HTTP/2"
    );
}

/// The info the admin API gives of one object.
async fn described(node: &Running, path: &str) -> serde_json::Value {
    let info = format!(
        "http://{}/api/v1/content/{}",
        node.listening().admin,
        &path[12..52]
    );
    serde_json::from_slice(&get(&info, &[]).await.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_written_while_the_object_fills_go_out_by_sendfile() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start().await;
    let bytes = payload(4 * MIB + 5, 65);
    let path = origin.add(bytes.clone(), "cab");
    let node = branch(
        dir.path(),
        &origin.url(),
        "[cache]\nslice_bytes = \"1MiB\"\nread_ahead = 0\n",
    )
    .await;
    // The first three slices are fetched (and followed from the fill: no sendfile), the
    // fourth and the tail never asked for, so the object stays incomplete.
    let first = format!("bytes=0-{}", 3 * MIB - 1);
    let got = get(&url(&node, &path), &[("range", &first)]).await;
    assert!(got.status == 206 && !got.broken && got.body == bytes.slice(..3 * MIB));
    until(
        "three slices on disk",
        Duration::from_secs(10),
        async || {
            let info = described(&node, &path).await;
            if info["slices_present"] == 3 {
                Ok(())
            } else {
                Err(info.to_string())
            }
        },
    )
    .await;

    // The first response on a file-sending connection that finds a slice written reads it
    // back and checks it (sending what it read); from then on it leaves the partial file by
    // sendfile. (The first response, which followed the fill, may have done so for its later
    // slices already.)
    let got = get(&url(&node, &path), &[("range", &first)]).await;
    assert!(got.status == 206 && !got.broken && got.body == bytes.slice(..3 * MIB));
    let before = sent_by_sendfile(&node).await;
    let across = (MIB - 10, 2 * MIB + 20);
    let answers = on_one_connection(
        &node,
        &[
            (&path, Some(first.clone())),
            (&path, Some(format!("bytes={}-{}", across.0, across.1 - 1))),
        ],
    )
    .await;
    assert_eq!(answers[0].0, 206);
    assert!(
        answers[0].1 == bytes.slice(..3 * MIB),
        "written slices, in order"
    );
    assert_eq!(answers[1].0, 206);
    assert!(
        answers[1].1 == bytes.slice(across.0..across.1),
        "a range across them"
    );
    assert_eq!(
        sent_by_sendfile(&node).await - before,
        (3 * MIB + across.1 - across.0) as u64,
        "every byte from the partial file"
    );
    let info = described(&node, &path).await;
    assert_eq!(info["state"], "filling", "{info}");
    assert_eq!(
        origin.requests_for(&path).len(),
        3,
        "each slice fetched once; nothing read back from upstream"
    );

    // The rest of the object: the fill completes and is checked; a whole response that began
    // on written slices ends right.
    let got = get(&url(&node, &path), &[]).await;
    assert!(got.status == 200 && !got.broken);
    assert_eq!(sha1(&got.body), sha1(&bytes));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_large_object_leaves_the_memory_tier_without_another_request() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    // Many slices, so that the memory tier's own upkeep runs while they fill and holds them.
    // One GET fills and commits the object; nothing touches the cache after it but the reads
    // of the admin API.
    let (_origin, node, _path) =
        committed_in_slices(dir.path(), &payload(6 * MIB + 3, 66), "64KiB").await;
    let status = format!("http://{}/api/v1/status", node.listening().admin);
    until(
        "the slices let go at the commit",
        Duration::from_secs(10),
        async || {
            let status: serde_json::Value =
                serde_json::from_slice(&get(&status, &[]).await.body).unwrap();
            match status["cache"]["memory_bytes"].as_u64() {
                Some(0) => Ok(()),
                held => Err(format!("{held:?}")),
            }
        },
    )
    .await;
}
