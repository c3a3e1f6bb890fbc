//! The hit path without sockets: a root store holding committed objects, `respond()` building
//! the answer and the body drained, for a 4 KiB object (W1's shape) from the memory tier; a
//! Delivery Optimization 1 MiB range of a 64 MiB object (W5's shape) from the page cache, its
//! slices checked once (the memory tier's notes), read 512 KiB at a time as a connection that
//! cannot `sendfile` (TLS, HTTP/2) gets them; the same range with the memory tier off (two slice
//! reads per request, each checked against the object's seal); and that once more without the
//! seal (what the check costs).
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::BodyExt;
use wsus_edge::content::path::ContentPath;
use wsus_edge::content::response::respond;
use wsus_edge::content::{Settings, Store};
use wsus_edge::metrics::Metrics;
use wsus_edge::simulate::SplitMix;

fn store(rt: &tokio::runtime::Runtime, dir: &std::path::Path, memory_bytes: u64) -> Store {
    rt.block_on(Store::open(
        Settings {
            data_dir: dir.to_path_buf(),
            slice_bytes: 4 << 20,
            memory_bytes,
            disk_bytes: 1 << 40,
            min_free_disk: 0,
            max_ranges: 16,
            read_ahead: 0,
            max_object_bytes: 1 << 40,
            max_partial_objects: 1024,
            scrub_rate: 0,
            hold_ranges: true,
            per_object: 4,
            retries: 4,
            fill_timeout: std::time::Duration::from_secs(300),
            mismatch_backoff: std::time::Duration::from_secs(120),
        },
        None,
        Arc::new(Metrics::new()),
    ))
    .expect("store opens")
}

async fn drain(store: &Store, path: &str, headers: &HeaderMap) -> usize {
    let requester = wsus_edge::access::Requester::new(None, headers);
    let response = respond(store, &Method::GET, path, headers, requester, None).await;
    let mut body = response.into_body();
    let mut n = 0;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            n += data.len();
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("source");
    std::fs::create_dir_all(&source).expect("mkdir");
    let mut rng = SplitMix(9);
    let mut small = vec![0u8; 4096];
    let mut large = vec![0u8; 64 << 20];
    rng.fill(&mut small);
    rng.fill(&mut large);
    std::fs::write(source.join("small.cab"), &small).expect("write");
    std::fs::write(source.join("large.exe"), &large).expect("write");
    let data = dir.path().join("data");
    let report = wsus_edge::content::import_dir(&data, &source).expect("import");
    let path_of = |len: u64, ext: &str| {
        let (digest, _) = report
            .objects
            .iter()
            .find(|(_, size)| *size == len)
            .expect("object");
        ContentPath {
            digest: *digest,
            ext: ext.to_owned(),
        }
        .url_path()
    };
    let small_path = path_of(4096, "cab");
    let large_path = path_of(64 << 20, "exe");
    let none = HeaderMap::new();
    let mut ranged = HeaderMap::new();
    ranged.insert(
        http::header::RANGE,
        HeaderValue::from_static("bytes=12345678-13394253"),
    );

    let warm = store(&rt, &data, 256 << 20);
    rt.block_on(async {
        drain(&warm, &small_path, &none).await;
        drain(&warm, &large_path, &ranged).await;
    });
    let mut group = c.benchmark_group("hit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("memory_4KiB_whole", |b| {
        b.iter(|| rt.block_on(drain(&warm, &small_path, &none)))
    });
    group.throughput(Throughput::Bytes(1 << 20));
    group.bench_function("page_cache_1MiB_range", |b| {
        b.iter(|| rt.block_on(drain(&warm, &large_path, &ranged)))
    });
    let cold = store(&rt, &data, 0);
    group.bench_function("disk_1MiB_range", |b| {
        b.iter(|| rt.block_on(drain(&cold, &large_path, &ranged)))
    });
    // The same without the check against the seal (an object from before seals): what the
    // check costs per slice read from disk.
    let hex = large_path
        .rsplit('/')
        .next()
        .and_then(|name| name.split('.').next())
        .expect("digest")
        .to_ascii_lowercase();
    let seal = data
        .join("content")
        .join(&hex[38..])
        .join(format!("{hex}.seal"));
    std::fs::remove_file(&seal).expect("the import sealed the object");
    group.bench_function("disk_1MiB_range_unsealed", |b| {
        b.iter(|| rt.block_on(drain(&cold, &large_path, &ranged)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
