//! Client status at branch scale, one measured run each (not criterion: these are minutes of
//! work, not microseconds):
//!
//! - ingestion: ReportEventBatch-sized batches (50 events) appended to the journal with
//!   durability on (synchronous=FULL, one transaction per batch, as a client's `true` waits
//!   for): events per second.
//! - rollup: a branch holding COMPUTERS computers × UPDATES update states rolls them up to a
//!   root over loopback (both nodes in this process, release build): time, SOAP calls, bytes
//!   each way, peak memory (VmHWM of the process, both nodes).
//!
//!     cargo bench --bench reports [-- --computers 50000 --updates 200]
// A test: a panic is a failed check, and what it shares with other tests is its own business.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use wsus_edge::catalog::Guid;
use wsus_edge::config::Config;
use wsus_edge::report::{Computer, Event};
use wsus_edge::state::{Database, Journal};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn ingestion(dir: &std::path::Path) {
    const CLIENTS: usize = 1000;
    const BATCH: usize = 50;
    const BATCHES: usize = 400;
    std::fs::create_dir_all(dir).unwrap();
    let mut journal = Journal::open(&Database::sqlite(dir)).unwrap();
    for n in 0..CLIENTS {
        let c = Computer {
            client_id: format!("client-{n}"),
            dns_name: format!("pc{n}.branch.example"),
            ..Computer::default()
        };
        journal.register(&c, 1).unwrap();
    }
    let update = Guid::random();
    let batches: Vec<Vec<Event>> = (0..BATCHES)
        .map(|b| {
            (0..BATCH)
                .map(|_| Event {
                    client_id: format!("client-{}", b % CLIENTS),
                    instance: Guid::random(),
                    event_id: 183,
                    source_id: 101,
                    update: Some((update, 200)),
                    hresult: 0,
                    time: 1_700_000_000 + b as i64,
                    misc: vec!["A=1".into()],
                })
                .collect()
        })
        .collect();
    let started = Instant::now();
    for batch in &batches {
        journal.append(batch, 1_700_000_000).unwrap();
    }
    let elapsed = started.elapsed();
    let events = BATCH * BATCHES;
    println!(
        "ingestion: {events} events in {BATCHES} batches of {BATCH}, each durable before its \
         answer: {:.2} s, {:.0} events/s, {:.1} ms per batch",
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / BATCHES as f64
    );
}

/// A branch's state.db with `computers` × `updates` states, written directly.
fn fill_branch(dir: &std::path::Path, computers: usize, updates: usize) {
    std::fs::create_dir_all(dir).unwrap();
    drop(Journal::open(&Database::sqlite(dir)).unwrap());
    let mut db = rusqlite::Connection::open(dir.join("state.db")).unwrap();
    let tx = db.transaction().unwrap();
    {
        let mut computer = tx
            .prepare(
                "INSERT INTO computers (client_id, dns_name, os_version, os_locale, manufacturer,
                 model, processor, client_version, groups, registered_at, last_sync,
                 last_status, rollup_number)
                 VALUES (?1, ?2, '10.0.26200.0', 'en-US', 'Contoso', 'Bench', 'x64',
                 '10.0.26100.1', '', ?3, ?3, ?3, 1)",
            )
            .unwrap();
        let mut status = tx
            .prepare(
                "INSERT INTO update_status (client_id, update_id, state, changed_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .unwrap();
        let ids: Vec<String> = (0..updates).map(|_| Guid::random().to_string()).collect();
        let now = wsus_edge::clock::unix_now();
        for c in 0..computers {
            let id = format!("{:08x}-bench-computer", c);
            computer
                .execute(rusqlite::params![id, format!("pc{c}.branch.example"), now])
                .unwrap();
            for (u, update) in ids.iter().enumerate() {
                let state = if (c + u) % 17 == 0 { 5 } else { 4 };
                status
                    .execute(rusqlite::params![id, update, state, now])
                    .unwrap();
            }
        }
    }
    tx.commit().unwrap();
}

fn config(text: &str) -> Config {
    Config::parse(text, "bench", &[]).unwrap()
}

fn main() {
    let computers = arg("--computers", 50_000);
    let updates = arg("--updates", 200);
    let work = tempfile::tempdir().unwrap();
    ingestion(&work.path().join("ingestion"));

    let (root_dir, branch_dir) = (work.path().join("root"), work.path().join("branch"));
    let started = Instant::now();
    fill_branch(&branch_dir, computers, updates);
    println!(
        "rollup: a branch with {computers} computers × {updates} update states ({} rows) \
         written in {:.1} s",
        computers * updates,
        started.elapsed().as_secs_f64()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let quiet = "[listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n";
        let root = wsus_edge::node::start(&config(&format!(
            // Its server-server services open to the branch beside it on loopback (they take
            // a token or a client certificate otherwise).
            "[node]\nname = \"root\"\ndata_dir = {:?}\n{quiet}[downstream]\nallow_anonymous = true\n",
            root_dir.to_string_lossy()
        )))
        .await
        .unwrap();
        let branch = wsus_edge::node::start(&config(&format!(
            "[node]\nname = \"branch\"\ndata_dir = {:?}\n{quiet}[upstream]\nurl = \"http://{}\"\n\
             sync_interval = \"0s\"\ntimeout = \"120s\"\n[cache]\nprefetch = \"none\"\n\
             [reports]\nrollup_interval = \"0s\"\n",
            branch_dir.to_string_lossy(),
            root.listening().http
        )))
        .await
        .unwrap();
        let rollup = branch.app.rollup.clone().unwrap();
        let mut status = rollup.status();
        let started = Instant::now();
        rollup.rollup_now();
        let done = status.wait_for(|s| s.rollups > 0).await.unwrap().clone();
        let elapsed = started.elapsed();
        let report = done.last.unwrap_or_else(|| panic!("{:?}", done.last_error));
        let answers = branch.metrics().upstream_bytes.get();
        println!(
            "rollup: {} computers, {} with their states, in {:.1} s over {} SOAP calls; \
             {:.1} MiB up ({:.1} MiB of SOAP before gzip), {:.2} MiB down; \
             peak RSS of both nodes {:.0} MiB",
            report.computers,
            report.statuses,
            elapsed.as_secs_f64(),
            report.calls,
            report.sent_bytes as f64 / (1 << 20) as f64,
            report.body_bytes as f64 / (1 << 20) as f64,
            answers as f64 / (1 << 20) as f64,
            peak_rss_mib()
        );
        let kept = root
            .app
            .reports
            .lock()
            .unwrap()
            .computers(wsus_edge::report::ComputerFilter::All);
        println!(
            "root holds {} computers",
            kept.map(|c| c.len()).unwrap_or(0)
        );
        branch.shutdown(Duration::from_secs(2)).await;
        root.shutdown(Duration::from_secs(2)).await;
    });
}
