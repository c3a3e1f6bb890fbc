//! Central ingest: BRANCHES simulated branches roll up concurrently into one root node (in
//! this process, release build), with the calls and messages of the rollup client:
//! RollupDownstreamServers, RollupComputers (COMPUTERS computers with details),
//! RollupComputerStatus (UPDATES states each, full, at most 50,000 states a call); then a round
//! of deltas (DELTA percent of each computer's states changed, not full). Meanwhile a reader
//! asks the root's admin API `/api/v1/computers?state=needed` and
//! `/api/v1/updates/{id}/status` in turn, one at a time, 50 ms apart (`--no-reads`: none, to
//! see what ingest alone costs).
//!
//! Printed per round: time, states per second, CPU of this process (root and generator) and of
//! the PostgreSQL server's processes per million states; then the database's size and the
//! admin reads' p50 and p99.
//!
//!     cargo bench --bench ingest -- [--branches 100] [--computers 100] [--updates 2000]
//!         [--delta 1] [--concurrency 8] [--postgres postgres://user@host:port/db] [--no-reads]
//!
//! Without `--postgres` the root's state is its state.db; with it, a fresh schema of that
//! database (dropped at the end).
// A benchmark: a panic is a failed run.
#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wsus_edge::catalog::Guid;
use wsus_edge::config::Config;
use wsus_edge::metrics::Metrics;
use wsus_edge::report::{
    Computer, RolledComputer, RolledServer, RolledStatus, ServerSummary, UpdateState,
};
use wsus_edge::upstream::{Settings, Upstream};
use wsus_edge::wsusss::rollup_client::{
    computers_xml, send, servers_xml, status_batches, statuses_xml,
};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn number(name: &str, default: usize) -> usize {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU seconds (user + system) of the processes whose `comm` is `name` (none: this one).
fn cpu_seconds(name: Option<&str>) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let of = |stat: &str| -> f64 {
        // After the command's closing parenthesis: fields 3…; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok());
        (field(14).unwrap_or(0.0) + field(15).unwrap_or(0.0)) / ticks
    };
    match name {
        None => of(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default()),
        Some(name) => std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == name)
            })
            .map(|e| of(&std::fs::read_to_string(e.path().join("stat")).unwrap_or_default()))
            .sum(),
    }
}

/// What one round cost.
struct Round {
    states: usize,
    elapsed: Duration,
    cpu: f64,
    database_cpu: f64,
}

impl Round {
    fn print(&self, what: &str, database: bool) {
        let millions = self.states as f64 / 1e6;
        print!(
            "{what}: {} states in {:.1} s, {:.0} states/s; CPU per million states: {:.1} s this \
             process",
            self.states,
            self.elapsed.as_secs_f64(),
            self.states as f64 / self.elapsed.as_secs_f64(),
            self.cpu / millions
        );
        if database {
            print!(", {:.1} s PostgreSQL", self.database_cpu / millions);
        }
        println!();
    }
}

/// One simulated branch: its id and its computers.
struct Branch {
    id: Guid,
    computers: Vec<String>,
}

fn computer(id: &str, parent: Guid, now: i64) -> RolledComputer {
    RolledComputer {
        id: id.to_owned(),
        parent,
        last_sync: Some(now),
        last_status: Some(now),
        details: Some(Computer {
            client_id: id.to_owned(),
            dns_name: format!("{id}.branch.example"),
            os_version: "10.0.26200.0".into(),
            os_locale: "en-US".into(),
            manufacturer: "Contoso".into(),
            model: "Bench".into(),
            processor: "x64".into(),
            client_version: "10.0.26100.1".into(),
            groups: Vec::new(),
        }),
    }
}

/// Every fifth needed, one in seventeen failed, the rest installed: shifted by `turn`.
fn state(c: usize, u: usize, turn: usize) -> UpdateState {
    match (c + u + turn) % 17 {
        0 => UpdateState::Failed,
        1..=3 => UpdateState::NotInstalled,
        _ => UpdateState::Installed,
    }
}

async fn call(link: &Upstream, operation: &str, inner: &str) {
    // A busy root says so (false, or ServerBusy): wait and go again, as the rollup does.
    for _ in 0..600 {
        match send(link, operation, inner).await {
            Ok(answer) if answer.child_text(&format!("{operation}Result")) != Some("false") => {
                return;
            }
            Ok(_) => {}
            Err(e) if e.is_retryable() => {}
            Err(e) => panic!("{operation}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{operation}: the root stayed busy");
}

/// Roll up `branch`'s states: all of them (`full`), or `percent` of each computer's.
async fn roll(
    link: &Upstream,
    branch: &Branch,
    updates: &[Guid],
    full: bool,
    percent: usize,
) -> usize {
    let now = wsus_edge::clock::unix_now();
    let statuses: Vec<RolledStatus> = branch
        .computers
        .iter()
        .enumerate()
        .map(|(c, id)| {
            let chosen: Vec<(Guid, UpdateState, i64)> = if full {
                updates
                    .iter()
                    .enumerate()
                    .map(|(u, g)| (*g, state(c, u, 0), now))
                    .collect()
            } else {
                let every = (100 / percent.max(1)).max(1);
                updates
                    .iter()
                    .enumerate()
                    .filter(|(u, _)| (u + c) % every == 0)
                    .map(|(u, g)| (*g, state(c, u, 1), now + 1))
                    .collect()
            };
            RolledStatus {
                id: id.clone(),
                rollup_number: if full { 1 } else { 2 },
                full,
                detection: Some(now),
                updates: chosen,
            }
        })
        .collect();
    let mut sent = 0;
    for batch in status_batches(&statuses, 50_000) {
        call(
            link,
            "RollupComputerStatus",
            &statuses_xml(branch.id, batch),
        )
        .await;
        sent += batch.iter().map(|s| s.updates.len()).sum::<usize>();
    }
    sent
}

/// The branches' rounds, `concurrency` at a time; what they cost.
async fn round(
    link: &Arc<Upstream>,
    branches: &Arc<Vec<Branch>>,
    updates: &Arc<Vec<Guid>>,
    concurrency: usize,
    full: bool,
    percent: usize,
) -> Round {
    let (cpu, database_cpu) = (cpu_seconds(None), cpu_seconds(Some("postgres")));
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (link, branches, updates, next) = (
            link.clone(),
            branches.clone(),
            updates.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut states = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(branch) = branches.get(i) else {
                    return states;
                };
                if full {
                    let now = wsus_edge::clock::unix_now();
                    let server = RolledServer {
                        id: branch.id,
                        name: format!("branch-{i}"),
                        parent: Guid::NIL,
                        is_replica: true,
                        version: "bench".into(),
                        last_sync: Some(now),
                        last_rollup: Some(now),
                        sent_at: now,
                        summary: ServerSummary::default(),
                        clients: Vec::new(),
                    };
                    call(&link, "RollupDownstreamServers", &servers_xml(&[server])).await;
                    let computers: Vec<RolledComputer> = branch
                        .computers
                        .iter()
                        .map(|c| computer(c, branch.id, now))
                        .collect();
                    call(&link, "RollupComputers", &computers_xml(&computers)).await;
                }
                states += roll(&link, branch, &updates, full, percent).await;
            }
        }));
    }
    let mut states = 0;
    for w in workers {
        states += w.await.unwrap();
    }
    Round {
        states,
        elapsed: started.elapsed(),
        cpu: cpu_seconds(None) - cpu,
        database_cpu: cpu_seconds(Some("postgres")) - database_cpu,
    }
}

/// Admin reads one at a time until `done`: the latencies of each kind, in milliseconds.
async fn reads(admin: String, update: Guid, done: Arc<AtomicBool>) -> [Vec<f64>; 2] {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let paths = [
        "/api/v1/computers?state=needed".to_string(),
        format!("/api/v1/updates/{update}/status"),
    ];
    let mut out = [Vec::new(), Vec::new()];
    let mut turn = 0;
    while !done.load(Ordering::Relaxed) {
        let started = Instant::now();
        let answer = client
            .get(format!("{admin}{}", paths[turn]).parse().unwrap())
            .await
            .unwrap();
        let status = answer.status();
        http_body_util::BodyExt::collect(answer.into_body())
            .await
            .unwrap();
        assert!(status.is_success(), "{}: {status}", paths[turn]);
        out[turn].push(started.elapsed().as_secs_f64() * 1000.0);
        turn = 1 - turn;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A fresh schema of the database `url` names, made with psql: the URL that uses it.
fn schema(url: &str) -> (String, String) {
    let name = format!("ingest_{}", std::process::id());
    let made = std::process::Command::new("psql")
        .arg(url)
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!("CREATE SCHEMA {name}"))
        .status()
        .expect("psql runs");
    assert!(made.success());
    let separator = if url.contains('?') { '&' } else { '?' };
    (
        format!("{url}{separator}options=-c%20search_path%3D{name}"),
        name,
    )
}

fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .arg(url)
        .args(["-Atq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn main() {
    let (branches_n, computers_n, updates_n) = (
        number("--branches", 100),
        number("--computers", 100),
        number("--updates", 2000),
    );
    let (delta, concurrency) = (number("--delta", 1), number("--concurrency", 8));
    let postgres = arg("--postgres");
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("root");
    let schema = postgres.as_deref().map(schema);
    let state = match &schema {
        Some((url, _)) => format!("[state]\ndatabase = {url:?}\n"),
        None => String::new(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let root = wsus_edge::node::start(
            &Config::parse(
                &format!(
                    "[node]\nname = \"central\"\ndata_dir = {:?}\n\
                     [listen]\nhttp = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
                     max_soap_calls = {concurrency}\nmax_soap_wait = \"30s\"\n\
                     [downstream]\nallow_anonymous = true\n[log]\nlevel = \"warn\"\n{state}",
                    data.to_string_lossy()
                ),
                "bench",
                &[],
            )
            .unwrap(),
        )
        .await
        .unwrap();
        let link = Config::parse(
            &format!(
                "[upstream]\nurl = \"http://{}\"\ntimeout = \"600s\"\n",
                root.listening().http
            ),
            "bench",
            &[],
        )
        .unwrap();
        let link = Arc::new(
            Upstream::new(
                Settings::from_config(link.upstream.as_ref().unwrap(), &link.wan).unwrap(),
                Arc::new(Metrics::new()),
            )
            .unwrap(),
        );
        let updates: Arc<Vec<Guid>> = Arc::new((0..updates_n).map(|_| Guid::random()).collect());
        let branches: Arc<Vec<Branch>> = Arc::new(
            (0..branches_n)
                .map(|b| Branch {
                    id: Guid::random(),
                    computers: (0..computers_n).map(|c| format!("b{b:04}-pc{c:03}")).collect(),
                })
                .collect(),
        );
        println!(
            "central ingest into {}: {branches_n} branches × {computers_n} computers × \
             {updates_n} update states, {concurrency} branches at a time",
            if postgres.is_some() { "PostgreSQL" } else { "SQLite" }
        );
        let done = Arc::new(AtomicBool::new(std::env::args().any(|a| a == "--no-reads")));
        let reader = tokio::spawn(reads(
            format!("http://{}", root.listening().admin),
            updates[0],
            done.clone(),
        ));
        let full = round(&link, &branches, &updates, concurrency, true, 100).await;
        full.print("full rollups", postgres.is_some());
        let deltas = round(&link, &branches, &updates, concurrency, false, delta).await;
        deltas.print(&format!("deltas of {delta}%"), postgres.is_some());
        done.store(true, Ordering::Relaxed);
        let [mut needed, mut status] = reader.await.unwrap();
        match &schema {
            Some((url, name)) => println!(
                "database: {} MiB",
                psql(
                    url,
                    &format!(
                        "SELECT (sum(pg_total_relation_size(c.oid)) / 1048576)::bigint FROM pg_class c \
                         JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE n.nspname = '{name}' AND c.relkind = 'r'"
                    )
                )
            ),
            None => {
                let size: u64 = ["state.db", "state.db-wal"]
                    .iter()
                    .filter_map(|f| std::fs::metadata(data.join(f)).ok())
                    .map(|m| m.len())
                    .sum();
                println!("database: {} MiB", size >> 20);
            }
        }
        for (what, kept) in [
            ("/api/v1/computers?state=needed", &mut needed),
            ("/api/v1/updates/{id}/status", &mut status),
        ] {
            kept.sort_by(f64::total_cmp);
            println!(
                "admin {what} during ingest: {} reads, p50 {:.0} ms, p99 {:.0} ms",
                kept.len(),
                percentile(kept, 0.5),
                percentile(kept, 0.99)
            );
        }
        root.shutdown(Duration::from_secs(1)).await;
    });
    if let Some((url, name)) = &schema {
        psql(url, &format!("DROP SCHEMA {name} CASCADE"));
    }
}
