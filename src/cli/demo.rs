//! `demo`: a root and a branch on loopback, each configured as an operator would; a synthetic
//! catalog approved at the root, the branch's sync and prefetch, simulated clients through the
//! branch, the rollup to the root, and what happened.
//! Calls the crate's `node`, `simulate::wua`, `metrics`, `catalog`, and its siblings
//! `catalog::{generate_catalog, print_sync}`, `simulate::print_fleet`,
//! `serve::wait_for_signal`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::catalog::{Action, Decision};
use crate::config::Config;
use crate::config::units::{format_bytes, format_duration};
use crate::error::{Error, Kind};
use crate::metrics::{Metrics, TierLabels};
use crate::node;
use crate::simulate;
use crate::state::Store;

use super::catalog::{generate_catalog, print_sync};
use super::serve::wait_for_signal;
use super::simulate::print_fleet;

/// The demo's catalog: a month of updates, scaled down.
const DEMO_UPDATES: usize = 30;
const DEMO_PAYLOAD_BYTES: u64 = 160 << 20;

/// The branch's first sync and the prefetch after it, within a minute.
async fn synced(node: &node::Running) -> Result<crate::wsusss::replica::ReplicaStatus, Error> {
    let Some(replica) = &node.app.replica else {
        return Err(Error::internal(Kind::Config, "the branch has no upstream"));
    };
    let mut status = replica.status();
    let done = tokio::time::timeout(
        Duration::from_secs(60),
        status.wait_for(|s| {
            s.failed_syncs > 0
                || (s.syncs > 0
                    && s.prefetches > 0
                    && s.last_prefetch.as_ref().is_some_and(|p| p.files > 0))
        }),
    )
    .await;
    let status = match done {
        Ok(Ok(s)) => s.clone(),
        _ => {
            return Err(Error::internal(
                Kind::Io,
                "the branch did not sync within a minute",
            ));
        }
    };
    match &status.last_error {
        Some(e) => Err(Error::internal(
            Kind::Io,
            format!("the branch's sync failed: {e}"),
        )),
        None => Ok(status),
    }
}

pub(super) async fn demo(base: &Config, clients: usize, keep_running: bool) -> Result<(), Error> {
    let root_dir = base.node.data_dir.join("demo");
    let io = |what: &str| {
        let what = what.to_owned();
        move |e| Error::io(what, e)
    };
    if root_dir.exists() {
        std::fs::remove_dir_all(&root_dir).map_err(io("clearing the demo directory"))?;
    }
    std::fs::create_dir_all(&root_dir).map_err(io("creating the demo directory"))?;
    // The branch's token, the one line of the root's downstream.token_file.
    let token = root_dir.join("downstream.token");
    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| Error::internal(Kind::Io, "no randomness for the demo's token"))?;
    std::fs::write(&token, format!("{}\n", hex::encode(secret)))
        .map_err(io("writing the demo's token"))?;
    let root = demo_config("demo-root", &root_dir.join("root"), None, &token)?;
    println!("generating a catalog of {DEMO_UPDATES} updates with their payloads …");
    generate_catalog(&root, DEMO_UPDATES, 0, DEMO_PAYLOAD_BYTES, 0x5eed).await?;
    let approved = {
        let state = root.clone();
        tokio::task::spawn_blocking(move || {
            let mut store = Store::open(&crate::state::Database::from_config(&state)?)?;
            let catalog = store.load()?;
            store.decide(
                &catalog,
                None,
                "All Computers",
                Decision::Approve(Action::Install),
                None,
            )
        })
        .await
        .map_err(|e| Error::internal(Kind::Io, e.to_string()))??
    };
    println!("approved {approved} updates for All Computers at the root");
    let root_node = node::start(&root).await?;
    let branch = demo_config(
        "demo-branch",
        &root_dir.join("branch"),
        Some(&format!("http://{}", root_node.listening().http)),
        &token,
    )?;
    let branch_node = node::start(&branch).await?;
    let branch_http = branch_node.listening().http;
    println!(
        "root   {} (admin http://{}/)\nbranch {} (admin http://{}/), upstream = root",
        root_node.listening().http,
        root_node.listening().admin,
        branch_http,
        branch_node.listening().admin
    );
    println!("the branch syncs from the root (MS-WSUSSS) and prefetches the approved content …");
    let status = synced(&branch_node).await?;
    let sync = status.last_sync.clone().unwrap_or_default();
    print_sync(&sync);
    if let Some(p) = &status.last_prefetch {
        println!(
            "prefetch            {} files of approved updates, {} fetched ({}) in {}",
            p.files,
            p.fetched,
            format_bytes(p.bytes),
            format_duration(Duration::from_millis(p.elapsed_ms))
        );
    }
    let prefetched = branch_node.metrics().upstream_bytes.get();
    println!(
        "{clients} Windows Update clients scan the branch over SOAP, download what they are told \
         to install from it Delivery Optimization style, and report …"
    );
    let fleet = simulate::wua::Fleet {
        server: format!("http://{branch_http}"),
        content_server: None,
        clients,
        concurrency: clients,
        group: None,
        download: true,
        report: true,
        seed: 1,
        rescans: 0,
        // Some installs fail, so that the status at the root has something to show.
        fail_every: 5,
        rate: None,
        rescan_rate: None,
        accepts: crate::http::coding::Coding::Xpress,
        drivers: None,
    };
    let started = Instant::now();
    let outcome = simulate::wua::run(&fleet).await;
    let elapsed = started.elapsed();
    if let Some(f) = outcome.failures.first() {
        return Err(Error::internal(
            Kind::Io,
            format!("a simulated client failed: {f}"),
        ));
    }
    let total = outcome.distinct_bytes;
    let (mut requests, mut served, mut verified) = (0u64, 0u64, 0u64);
    let mut worst_first_byte = Duration::ZERO;
    for o in &outcome.downloads {
        requests += o.requests;
        served += o.body_bytes;
        verified += u64::from(o.verified);
        worst_first_byte = worst_first_byte.max(o.first_byte);
    }
    let downloads = outcome.downloads.len() as u64;
    let m = branch_node.metrics();
    let hits = hits(m);
    let misses = m.cache_misses.get();
    // Content only: the sync's SOAP answers crossed the same link.
    let upstream_bytes = m.upstream_bytes.get().saturating_sub(sync.answer_bytes);
    let during_scans = m.upstream_bytes.get().saturating_sub(prefetched);
    println!("\n── what happened ──────────────────────────────────────────");
    print_fleet(&outcome);
    println!("range requests      {requests} (every answer 206 with the exact Content-Range)");
    println!(
        "cache hit ratio     {:.1}% ({hits} hits, {misses} needed upstream)",
        100.0 * hits as f64 / (hits + misses).max(1) as f64
    );
    println!("bytes served        {}", format_bytes(served));
    let once = if upstream_bytes <= total {
        "each slice crossed the WAN once"
    } else {
        "some bytes crossed the WAN more than once"
    };
    println!(
        "bytes from upstream {} ({:.2}× the {} of distinct content; {once})",
        format_bytes(upstream_bytes),
        upstream_bytes as f64 / total.max(1) as f64,
        format_bytes(total)
    );
    println!(
        "during the scans    {} from upstream (the rest was prefetched)",
        format_bytes(during_scans)
    );
    println!(
        "upstream requests   {}",
        m.upstream_requests
            .get_or_create(&crate::metrics::TransportLabels { transport: "http1" })
            .get()
    );
    println!("slowest first byte  {}", format_duration(worst_first_byte));
    println!(
        "elapsed             {} ({}/s to clients)",
        format_duration(elapsed),
        format_bytes((served as f64 / elapsed.as_secs_f64().max(1e-3)) as u64)
    );
    println!(
        "admin (branch)      http://{}/  ·  metrics http://{}/metrics",
        branch_node.listening().admin,
        branch_node.listening().admin
    );
    let ok = verified == downloads;

    // The status goes up: the branch rolls up its computers and their updates to the root.
    if let Some(rollup) = &branch_node.app.rollup {
        let mut status = rollup.status();
        rollup.rollup_now();
        let done =
            tokio::time::timeout(Duration::from_secs(60), status.wait_for(|s| s.rollups > 0)).await;
        match done.ok().and_then(|d| d.ok()).map(|s| s.clone()) {
            Some(s) if s.last_error.is_none() => {
                let r = s.last.unwrap_or_default();
                println!(
                    "\n── status at the root (rollup: {} computers, {} with their update states, \
                     {} SOAP calls) ──",
                    r.computers, r.statuses, r.calls
                );
            }
            Some(s) => println!("rollup failed: {}", s.last_error.unwrap_or_default()),
            None => println!("rollup did not finish within a minute"),
        }
        let reports = root_node.app.reports.clone();
        let servers =
            tokio::task::spawn_blocking(move || crate::lock::lock(&reports).downstreams())
                .await
                .map_err(|e| Error::internal(Kind::Io, e.to_string()))??;
        for d in servers.iter().filter(|d| d.last_rollup.is_some()) {
            println!(
                "branch {:<14} {} computers: {} up to date, {} needing updates, {} with errors",
                d.name,
                d.computers.unwrap_or(0),
                d.up_to_date.unwrap_or(0),
                d.needing_updates.unwrap_or(0),
                d.with_errors.unwrap_or(0),
            );
            if let Some(m) = &d.summary {
                let installs = d.clients.iter().fold((0, 0), |(ok, failed), c| {
                    (ok + c.installs_succeeded, failed + c.installs_failed)
                });
                println!(
                    "  updates           {} approved of {}, {} with files still to come; \
                     {} installs succeeded, {} failed",
                    m.approved, m.updates, m.updates_needing_files, installs.0, installs.1
                );
            }
        }
        println!(
            "root status page    http://{}/  (branches, computers, updates)",
            root_node.listening().admin
        );
    }
    if keep_running {
        println!("nodes keep running; Ctrl-C stops them");
        wait_for_signal().await;
    } else {
        println!("(pass --keep-running to keep both nodes up and browse the admin pages)");
    }
    branch_node.shutdown(Duration::from_secs(2)).await;
    root_node.shutdown(Duration::from_secs(2)).await;
    if ok {
        Ok(())
    } else {
        Err(Error::internal(
            Kind::Digest,
            format!("{} downloads did not verify", downloads - verified),
        ))
    }
}

fn hits(m: &Arc<Metrics>) -> u64 {
    ["memory", "disk"]
        .iter()
        .map(|tier| m.cache_hits.get_or_create(&TierLabels { tier }).get())
        .sum()
}

/// A loopback node on the built-in defaults, written as the TOML an operator would write. The
/// branch shows the root a token the root lists, as a real one does: `token` is that file.
fn demo_config(
    name: &str,
    data_dir: &Path,
    upstream: Option<&str>,
    token: &Path,
) -> Result<Config, Error> {
    let quoted = |s: &str| toml::Value::String(s.to_owned()).to_string();
    let mut text = format!(
        "[node]\nname = {}\ndata_dir = {}\n[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
        quoted(name),
        quoted(&data_dir.to_string_lossy()),
    );
    let token = quoted(&token.to_string_lossy());
    match upstream {
        // The demo counts what crosses the link: the status rollup's calls would blur it.
        Some(url) => text.push_str(&format!(
            "[upstream]\nurl = {}\ntoken_file = {token}\n[reports]\nrollup_interval = \"0s\"\n",
            quoted(url)
        )),
        None => text.push_str(&format!("[downstream]\ntoken_file = {token}\n")),
    }
    Config::parse(&text, "demo", &[]).map_err(|e| Error::internal(Kind::Config, e.to_string()))
}
