//! The hit path through a socket: a root node on loopback, in this process, answering hyper
//! clients on keep-alive connections. Per request: a 4 KiB object over HTTP/1.1 (W1's shape).
//! Per byte: a 64 MiB object over HTTP/1.1, sent from the page cache by `sendfile`, against the
//! same over HTTP/2, read from the file and copied through the node. Wall time of the client and
//! the node together, on loopback: the two paths compared in one run, not a server's CPU alone
//! (`benches/e2e/compare.py` measures that, pinned, against nginx).
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use wsus_edge::config::Config;
use wsus_edge::content::ContentPath;
use wsus_edge::simulate::SplitMix;

const LARGE: usize = 64 << 20;

/// Bytes of one GET's body on `sender`, checked for length.
async fn get<S>(sender: &mut S, uri: &str, want: usize) -> usize
where
    S: Send1,
{
    let mut body = sender.send(uri).await.into_body();
    // Counted as it arrives: the client holds no copy of the body.
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        n += frame.unwrap().data_ref().map_or(0, Bytes::len);
    }
    assert_eq!(n, want);
    n
}

/// One request on an HTTP/1.1 or an HTTP/2 client connection.
trait Send1 {
    async fn send(&mut self, uri: &str) -> http::Response<hyper::body::Incoming>;
}

impl Send1 for hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    async fn send(&mut self, uri: &str) -> http::Response<hyper::body::Incoming> {
        self.ready().await.unwrap();
        let request = Request::get(uri).header("host", "bench");
        self.send_request(request.body(Empty::new()).unwrap())
            .await
            .unwrap()
    }
}

impl Send1 for hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    async fn send(&mut self, uri: &str) -> http::Response<hyper::body::Incoming> {
        self.ready().await.unwrap();
        self.send_request(Request::get(uri).body(Empty::new()).unwrap())
            .await
            .unwrap()
    }
}

fn bench(c: &mut Criterion) {
    // The node's runtime and the client's, each with one worker: two cores, one each.
    let node_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    let mut rng = SplitMix(11);
    let mut small = vec![0u8; 4096];
    let mut large = vec![0u8; LARGE];
    rng.fill(&mut small);
    rng.fill(&mut large);
    std::fs::write(source.join("small.cab"), &small).unwrap();
    std::fs::write(source.join("large.exe"), &large).unwrap();
    let data = dir.path().join("data");
    let report = wsus_edge::content::import_dir(&data, &source).unwrap();
    let path_of = |len: usize, ext: &str| {
        let (digest, _) = report
            .objects
            .iter()
            .find(|(_, size)| *size == len as u64)
            .unwrap();
        ContentPath {
            digest: *digest,
            ext: ext.to_owned(),
        }
        .url_path()
    };
    let config = Config::parse(
        &format!(
            "[node]\nname = \"bench\"\ndata_dir = {:?}\n[listen]\nhttp = \"127.0.0.1:0\"\n\
             admin = \"127.0.0.1:0\"\n",
            data.to_string_lossy()
        ),
        "bench",
        &[],
    )
    .unwrap();
    let node = node_rt.block_on(wsus_edge::node::start(&config)).unwrap();
    let addr = node.listening().http;
    let small_uri = format!("http://{addr}{}", path_of(4096, "cab"));
    let large_uri = format!("http://{addr}{}", path_of(LARGE, "exe"));

    let (mut h1, mut h2) = client_rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (h2, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        (h1, h2)
    });
    // Once each: every slice of the large object checked against its seal and noted, and
    // each connection past the node's header timeout (a connection that never asks is closed).
    client_rt.block_on(async {
        get(&mut h1, &small_uri, 4096).await;
        get(&mut h1, &large_uri, LARGE).await;
        get(&mut h2, &large_uri, LARGE).await;
    });

    let mut group = c.benchmark_group("serve");
    group.throughput(Throughput::Elements(1));
    group.bench_function("http1_4KiB", |b| {
        b.iter(|| client_rt.block_on(get(&mut h1, &small_uri, 4096)))
    });
    group.throughput(Throughput::Bytes(LARGE as u64));
    group.sample_size(20);
    group.bench_function("http1_64MiB_sendfile", |b| {
        b.iter(|| client_rt.block_on(get(&mut h1, &large_uri, LARGE)))
    });
    group.bench_function("http2_64MiB_read", |b| {
        b.iter(|| client_rt.block_on(get(&mut h2, &large_uri, LARGE)))
    });
    group.finish();
    drop(node);
}

criterion_group!(benches, bench);
criterion_main!(benches);
