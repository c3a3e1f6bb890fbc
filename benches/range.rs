//! Cost of the per-request range decision (`content::range`), which runs on every /Content hit.
//!
//! Cases: a typical Delivery Optimization request (one 1 MiB range of a ~195 MiB object, no
//! conditions), a 16-range multipart request (the most `Limits::default()` serves) plus its body
//! layout, and a 1,000-spec overlapping header (the shape of a range-amplification attempt).
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use wsus_edge::content::range::{Conditions, Limits, Plan, Validators, evaluate, multipart};

const LEN: u64 = 204_745_168;
const VALIDATORS: Validators<'static> = Validators {
    etag: "\"2f88df42aa9b0c1d2e3f40516273849506a7b8c9\"",
    last_modified: 1_700_000_000,
};

fn ranged(header: &[u8]) -> Conditions<'_> {
    Conditions {
        range: Some(header),
        ..Conditions::default()
    }
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();

    let single = b"bytes=102760448-103809023";
    assert!(matches!(
        evaluate(&ranged(single), LEN, &VALIDATORS, &limits),
        Plan::Partial(ref r) if r.len() == 1
    ));
    c.bench_function("evaluate/delivery_optimization_single", |b| {
        b.iter(|| {
            evaluate(
                black_box(&ranged(single)),
                black_box(LEN),
                &VALIDATORS,
                &limits,
            )
        })
    });

    // 16 disjoint 64 KiB ranges spread over the object, in order.
    let sixteen = format!(
        "bytes={}",
        (0..16u64)
            .map(|i| {
                let start = i * 12_000_000;
                format!("{}-{}", start, start + 65_535)
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let Plan::Partial(ranges) = evaluate(&ranged(sixteen.as_bytes()), LEN, &VALIDATORS, &limits)
    else {
        panic!("16 ranges should be served as multipart");
    };
    assert_eq!(ranges.len(), 16);
    c.bench_function("evaluate/multipart_16", |b| {
        b.iter(|| {
            evaluate(
                black_box(&ranged(sixteen.as_bytes())),
                black_box(LEN),
                &VALIDATORS,
                &limits,
            )
        })
    });
    c.bench_function("multipart/layout_16", |b| {
        b.iter(|| {
            multipart(
                black_box(&ranges),
                black_box(LEN),
                "application/octet-stream",
                "3d6b6a416f9b5",
            )
        })
    });

    // 1,000 overlapping specs (about 12 KB, under the 16 KiB header limit) that coalesce to one.
    let overlapping = format!(
        "bytes={}",
        (0..1000u64)
            .map(|i| format!("{}-{}", i * 1000, i * 1000 + 4095))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(overlapping.len() <= limits.max_header_bytes);
    assert!(matches!(
        evaluate(&ranged(overlapping.as_bytes()), LEN, &VALIDATORS, &limits),
        Plan::Partial(ref r) if r.len() == 1
    ));
    c.bench_function("evaluate/overlapping_1000", |b| {
        b.iter(|| {
            evaluate(
                black_box(&ranged(overlapping.as_bytes())),
                black_box(LEN),
                &VALIDATORS,
                &limits,
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
