//! The catalog and the client protocol at the size of a real WSUS catalog: 10,000 generated
//! software updates (with their categories and detectoids), every deployable one approved for
//! All Computers.
//!
//! - `catalog/load_10k`: `Store::load`, what start-up and every reload cost.
//! - `catalog/scope_10k`: the scope of a group set not seen before (cached afterwards).
//! - `catalog/sync_walk_rescan`: the sans-IO walk alone, for the rescan below.
//! - `sync_updates/first_page`: a first-time client's first SyncUpdates, through the whole
//!   handler (SOAP parse, cookie unseal, walk, answer written): a full page of non-leaf updates.
//! - `sync_updates/rescan`: the daily rescan of a client that finished its walk and holds all it
//!   was sent (InstalledNonLeafUpdateIDs / OtherCachedUpdateIDs): nothing new to send. What
//!   5,000 clients a day mostly ask.
//! - `soap/parse_rescan`: that request's SOAP parse alone, its id lists packed as the
//!   handler's limits say.
//! - `coding/{first_page,extended}_{gzip,xpress}`: the answer codings of a first SyncUpdates
//!   page and of a GetExtendedUpdateInfo of the most updates one may ask, what a first scan
//!   mostly sends (the throughput printed is of the answer as written).
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use wsus_edge::catalog::{ALL_COMPUTERS, Action, UpdateType, scope};
use wsus_edge::clock::unix_now;
use wsus_edge::http::{coding, xpress};
use wsus_edge::served::Served;
use wsus_edge::simulate::wua::{Machine, request};
use wsus_edge::soap::{self, Limits};
use wsus_edge::soap_client::{Caller::WindowsClient, envelope};
use wsus_edge::state::{Database, Store};
use wsus_edge::testkit::generate;
use wsus_edge::wusp::{CLIENT_NS, Call, Endpoint, SIMPLE_AUTH_NS, Service, Settings};

const UPDATES: usize = 10_000;

/// One call through the service; the answer's operation element (a fault panics).
fn call(
    rt: &tokio::runtime::Runtime,
    service: &Arc<Service>,
    endpoint: Endpoint,
    body: &str,
) -> String {
    // Parsed as the server parses it: under the limits of the call's operation.
    let limits = wsus_edge::wusp::limits_for(
        service.limits(),
        soap::operation_name(body.as_bytes()).as_deref(),
    );
    let envelope = soap::parse(body.as_bytes(), &limits).expect("a SOAP request");
    let call = Call {
        endpoint,
        action: None,
        content_base: "http://127.0.0.1:8530",
        now: unix_now(),
    };
    let reply = rt.block_on(service.call(call, envelope));
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body
}

fn element(body: &str) -> soap::Element {
    let limits = Limits {
        max_bytes: 64 << 20,
        ..Limits::default()
    };
    soap::parse(body.as_bytes(), &limits)
        .expect("a SOAP answer")
        .operation
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("node");
    let payloads = dir.path().join("payloads");
    std::fs::create_dir_all(&payloads).expect("mkdir");
    // Payload files are not read here; the smallest budget keeps them at 1 KiB each.
    let g = generate::generate(UPDATES, 7, 1, &payloads).expect("generate");
    let mut store = Store::open(&Database::sqlite(&data)).expect("state.db");
    store.import(&g.documents).expect("import");
    let catalog = store.load().expect("load");
    let approved = store
        .decide(
            &catalog,
            None,
            "All Computers",
            wsus_edge::catalog::Decision::Approve(Action::Install),
            None,
        )
        .expect("approve");
    println!(
        "catalog: {} revisions, {approved} approved for All Computers",
        catalog.len()
    );

    c.bench_function("catalog/load_10k", |b| {
        b.iter(|| store.load().expect("load"))
    });
    let catalog = store.load().expect("load");
    c.bench_function("catalog/scope_10k", |b| {
        b.iter(|| scope::scope(&catalog, &[ALL_COMPUTERS], i64::MAX))
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let served = Arc::new(Served::open(&Database::sqlite(&data)).expect("catalog in service"));
    let service = Arc::new(
        Service::open(served, &Database::sqlite(&data), Settings::default()).expect("service"),
    );
    let machine = Machine::new(1, None);
    let config = element(&call(
        &rt,
        &service,
        Endpoint::Client,
        &envelope(
            WindowsClient,
            CLIENT_NS,
            "GetConfig",
            "<protocolVersion>2.90</protocolVersion>",
        ),
    ));
    let last_change = config
        .child("GetConfigResult")
        .and_then(|r| r.child_text("LastChange"))
        .unwrap_or("")
        .to_owned();
    let auth = element(&call(
        &rt,
        &service,
        Endpoint::SimpleAuth,
        &envelope(
            WindowsClient,
            SIMPLE_AUTH_NS,
            "GetAuthorizationCookie",
            &request::authorization_cookie(&machine),
        ),
    ));
    let auth_data = auth
        .child("GetAuthorizationCookieResult")
        .and_then(|r| r.child_text("CookieData"))
        .unwrap_or("")
        .to_owned();
    let cookie = element(&call(
        &rt,
        &service,
        Endpoint::Client,
        &envelope(
            WindowsClient,
            CLIENT_NS,
            "GetCookie",
            &request::get_cookie(&auth_data, &last_change, unix_now(), None),
        ),
    ));
    let cookie = request::read_cookie(cookie.child("GetCookieResult")).expect("cookie");
    call(
        &rt,
        &service,
        Endpoint::Client,
        &envelope(
            WindowsClient,
            CLIENT_NS,
            "RegisterComputer",
            &request::register_computer(&cookie, &machine),
        ),
    );

    let first = envelope(
        WindowsClient,
        CLIENT_NS,
        "SyncUpdates",
        &request::sync_software(&cookie, &[], &[]),
    );
    let first_answer = call(&rt, &service, Endpoint::Client, &first);
    let answer = element(&first_answer);
    let sent = answer
        .child("SyncUpdatesResult")
        .and_then(|r| r.child("NewUpdates"))
        .map_or(0, |n| n.children_named("UpdateInfo").count());
    assert!(sent > 0, "the first page sends updates");
    c.bench_function("sync_updates/first_page", |b| {
        b.iter(|| call(&rt, &service, Endpoint::Client, &first))
    });

    // A client that finished its walk: what it was sent, non-leaf categories and detectoids as
    // installed (software is what it scans for), everything else as cached. The walk is the
    // sans-IO one the handler runs.
    let in_scope = scope::scope(&catalog, &[ALL_COMPUTERS], i64::MAX);
    let (mut installed, mut other): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
    for _ in 0..1_000 {
        let page = scope::sync(
            &catalog,
            &in_scope,
            &scope::SyncRequest {
                installed_non_leaf: installed.clone(),
                other_cached: other.clone(),
                page_size: Settings::default().page_size,
                ..scope::SyncRequest::default()
            },
        );
        if page.new_updates.is_empty() && !page.truncated {
            break;
        }
        for offer in page.new_updates {
            let kind = catalog.revision(offer.revision).map(|r| r.update_type);
            if !offer.is_leaf && kind != Some(UpdateType::Software) {
                installed.push(offer.revision);
            } else {
                other.push(offer.revision);
            }
        }
    }
    installed.sort_unstable();
    other.sort_unstable();
    let request = scope::SyncRequest {
        installed_non_leaf: installed.clone(),
        other_cached: other.clone(),
        page_size: Settings::default().page_size,
        anchor: i64::MAX,
        ..scope::SyncRequest::default()
    };
    c.bench_function("catalog/sync_walk_rescan", |b| {
        b.iter(|| scope::sync(&catalog, &in_scope, &request))
    });

    // The cookie of a client that synced: it carries what the client has seen, so unchanged
    // deployments are not resent as ChangedUpdates.
    let synced = envelope(
        WindowsClient,
        CLIENT_NS,
        "SyncUpdates",
        &request::sync_software(&cookie, &installed, &other),
    );
    let answer = element(&call(&rt, &service, Endpoint::Client, &synced));
    let cookie = request::read_cookie(
        answer
            .child("SyncUpdatesResult")
            .and_then(|r| r.child("NewCookie")),
    )
    .expect("a new cookie");
    let rescan = envelope(
        WindowsClient,
        CLIENT_NS,
        "SyncUpdates",
        &request::sync_software(&cookie, &installed, &other),
    );
    let answer = element(&call(&rt, &service, Endpoint::Client, &rescan));
    let result = answer.child("SyncUpdatesResult").expect("a result");
    for list in ["NewUpdates", "ChangedUpdates"] {
        assert!(
            result
                .child(list)
                .is_none_or(|n| n.children_named("UpdateInfo").count() == 0),
            "a client holding everything is sent nothing in {list}"
        );
    }
    assert!(
        result
            .child("OutOfScopeRevisionIDs")
            .is_none_or(|n| n.children_named("int").count() == 0),
        "nothing it holds is out of scope"
    );
    println!(
        "rescan request: {} installed non-leaf + {} other cached ids, {} KiB",
        installed.len(),
        other.len(),
        rescan.len() >> 10
    );
    c.bench_function("sync_updates/rescan", |b| {
        b.iter(|| call(&rt, &service, Endpoint::Client, &rescan))
    });
    let limits = wsus_edge::wusp::limits_for(service.limits(), Some("SyncUpdates"));
    c.bench_function("soap/parse_rescan", |b| {
        b.iter(|| soap::parse(rescan.as_bytes(), &limits).expect("a SOAP request"))
    });
    let unpacked = Limits {
        packed: &[],
        ..limits
    };
    c.bench_function("soap/parse_rescan_unpacked", |b| {
        b.iter(|| soap::parse(rescan.as_bytes(), &unpacked).expect("a SOAP request"))
    });

    let most = other.len().min(Settings::default().max_extended);
    let extended = call(
        &rt,
        &service,
        Endpoint::Client,
        &envelope(
            WindowsClient,
            CLIENT_NS,
            "GetExtendedUpdateInfo",
            &request::extended_update_info(&cookie, &other[..most]),
        ),
    );
    let mut group = c.benchmark_group("coding");
    for (name, answer) in [("first_page", &first_answer), ("extended", &extended)] {
        group.throughput(criterion::Throughput::Bytes(answer.len() as u64));
        println!(
            "{name}: {} bytes, gzip {}, xpress {}",
            answer.len(),
            coding::gzip(answer.as_bytes()).expect("gzip").len(),
            xpress::compress(answer.as_bytes()).len()
        );
        group.bench_function(format!("{name}_gzip"), |b| {
            b.iter(|| coding::gzip(answer.as_bytes()).expect("gzip"))
        });
        group.bench_function(format!("{name}_xpress"), |b| {
            b.iter(|| xpress::compress(answer.as_bytes()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
