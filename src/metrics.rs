//! The Prometheus metrics of one node (DESIGN.md §5): names prefixed `wsus_edge_`, base units
//! (seconds, bytes), `_total` on counters (added by the encoder). One registry per node, so several
//! nodes can run in one process (the demo, the tests). Label values come from fixed lists, never
//! from what a client sent, so the number of series is bounded.
//!
//! Counters and histograms are updated where things happen; the gauges that describe state
//! (pending reports, free disk, sync age) are set by the admin listener just before it encodes.
//! The standard `process_*` metrics are read from `/proc/self` at encoding.
//! Calls nothing else in the crate.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route class (`content`, `soap`, `selfupdate`, `admin`, `other`), never the raw
    /// path: bounded cardinality.
    pub path: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `content`, `soap`, `admin` or `other`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// One of [`SOAP_OPERATIONS`], or `unknown`.
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SoapCallLabels {
    pub operation: &'static str,
    /// `ok`, or the WSUS ErrorCode of the fault.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    pub tier: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FoundByLabels {
    pub found_by: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    name: String,
    role: &'static str,
}

/// The SOAP operations of both protocols (MS-WUSP, MS-WSUSSS): the values the `operation` label
/// may take besides `unknown`.
pub const SOAP_OPERATIONS: [&str; 29] = [
    "GetConfig",
    "GetConfig2",
    "GetCookie",
    "RegisterComputer",
    "StartCategoryScan",
    "SyncUpdates",
    "SyncPrinterCatalog",
    "RefreshCache",
    "GetExtendedUpdateInfo",
    "GetExtendedUpdateInfo2",
    "GetFileLocations",
    "GetTimestamps",
    "GetAuthorizationCookie",
    "ReportEventBatch",
    "GetAuthConfig",
    "GetConfigData",
    "GetRevisionIdList",
    "GetUpdateData",
    "GetUpdateDecryptionData",
    "GetDriverIdList",
    "GetDeployments",
    "GetRelatedRevisionsForUpdates",
    "DownloadFiles",
    "Ping",
    "GetRollupConfiguration",
    "RollupDownstreamServers",
    "RollupComputers",
    "GetOutOfSyncComputers",
    "RollupComputerStatus",
];

/// The label value of an operation name as a caller sent it.
pub fn operation_label(name: &str) -> &'static str {
    SOAP_OPERATIONS
        .iter()
        .find(|known| **known == name)
        .copied()
        .unwrap_or("unknown")
}

/// The `reason` of `wsus_edge_fill_errors_total`.
pub const FILL_ERROR_REASONS: [&str; 8] = [
    "digest",
    "disk",
    "disk_full",
    "not_found",
    "partial_limit",
    "too_large",
    "unavailable",
    "upstream",
];
/// The `reason` of `wsus_edge_upstream_errors_total`.
pub const UPSTREAM_ERROR_REASONS: [&str; 6] =
    ["connect", "tls", "timeout", "status", "body", "request"];
/// The `reason` of `wsus_edge_requests_refused_total`.
pub const REFUSED_REASONS: [&str; 7] = [
    "unauthenticated",
    "busy",
    "body_too_large",
    "body_broken",
    "body_timeout",
    "host",
    "admin_host",
];
/// The `reason` of `wsus_edge_connections_closed_total`: closed by the node, not by the peer.
pub const CLOSED_REASONS: [&str; 3] = ["limit", "header_timeout", "idle_timeout"];
/// The `listener` of `wsus_edge_connections_open`.
pub const LISTENERS: [&str; 3] = ["http", "https", "admin"];
/// The `transport` of the upstream metrics.
pub const TRANSPORTS: [&str; 3] = ["http1", "http2", "http3"];

/// Seconds: from a memory hit (tens of µs) to a large SOAP answer or a slow upstream.
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Seconds: a sync or a rollup, from an incremental one to a first one over a slow WAN.
const JOB_BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type Latencies<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of a node. Cheap to update from any task (atomics).
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    /// Until the response head is ready, by route class.
    pub request_duration: Latencies<KindLabels>,
    pub soap_calls: Family<SoapCallLabels, Counter>,
    pub soap_duration: Latencies<OperationLabels>,
    /// Content requests answered without the upstream, by the slowest tier touched.
    pub cache_hits: Family<TierLabels, Counter>,
    /// Content requests that needed the upstream for at least one byte.
    pub cache_misses: Counter,
    pub upstream_requests: Family<TransportLabels, Counter>,
    /// Until the upstream's response head.
    pub upstream_duration: Latencies<TransportLabels>,
    /// Requests to the upstream that got no usable answer, by why.
    pub upstream_errors: Family<ReasonLabels, Counter>,
    pub upstream_bytes: Counter,
    pub served_bytes: Counter,
    /// The part of `served_bytes` sent from the page cache by `sendfile`.
    pub sendfile_bytes: Counter,
    /// Bytes held per tier (`memory`, `disk`); disk counts partial objects at their full size.
    pub cache_bytes: Family<TierLabels, Gauge>,
    pub cache_disk_limit: Gauge,
    pub cache_min_free_disk: Gauge,
    /// Free bytes of the filesystem holding data_dir (set at encoding).
    pub data_dir_free: Gauge,
    pub fill_errors: Family<ReasonLabels, Counter>,
    pub fills_in_progress: Gauge,
    /// Objects removed to make room.
    pub evictions: Counter,
    /// Client events accepted and not yet acknowledged by the upstream (set at encoding).
    pub reports_pending: Gauge,
    pub computers: Gauge,
    pub sync_duration: Histogram,
    pub sync_failures: Counter,
    /// Seconds since the epoch; 0 = never.
    pub sync_last_success: Gauge,
    pub sync_interval: Gauge,
    pub rollup_duration: Histogram,
    pub rollup_failures: Counter,
    pub rollup_last_success: Gauge,
    pub rollup_interval: Gauge,
    /// What the prefetch under way still has to fetch (0 when none runs).
    pub prefetch_pending_files: Gauge,
    pub prefetch_pending_bytes: Gauge,
    /// What prefetches fetched.
    pub prefetch_files: Counter,
    pub prefetch_bytes: Counter,
    /// 1 while `/readyz` says ready.
    pub ready: Gauge,
    /// Requests answered with a refusal before their service saw them, by why.
    pub refused: Family<ReasonLabels, Counter>,
    /// Connections the node closed on its own, by why.
    pub connections_closed: Family<ReasonLabels, Counter>,
    pub connections_open: Family<ListenerLabels, Gauge>,
    /// Committed bytes the scrub re-read and checked.
    pub scrubbed_bytes: Counter,
    /// Committed objects found changed on disk, by what found them (`read`, `scrub`).
    pub corrupt: Family<FoundByLabels, Counter>,
    /// Committed objects without a seal (from before seals) that the scrub sealed.
    pub sealed: Counter,
    /// The soft limit on open descriptors after start.
    pub descriptors_limit: Gauge,
    node_info: Family<NodeLabels, Gauge>,
}

/// The commit the binary was built from (build.rs), or "unknown".
pub const COMMIT: &str = env!("BUILD_COMMIT");

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("wsus_edge");
        let requests = Family::<RequestLabels, Counter>::default();
        r.register("requests", "HTTP requests answered", requests.clone());
        let request_duration: Latencies<KindLabels> =
            Family::new_with_constructor(latency_histogram);
        r.register(
            "request_duration_seconds",
            "Time until the response head was ready, by route class",
            request_duration.clone(),
        );
        let soap_calls = Family::<SoapCallLabels, Counter>::default();
        r.register(
            "soap_calls",
            "SOAP calls answered, by operation and outcome (ok or the fault's ErrorCode)",
            soap_calls.clone(),
        );
        let soap_duration: Latencies<OperationLabels> =
            Family::new_with_constructor(latency_histogram);
        r.register(
            "soap_call_duration_seconds",
            "Time to answer a SOAP call, body read included, by operation",
            soap_duration.clone(),
        );
        let cache_hits = Family::<TierLabels, Counter>::default();
        r.register(
            "cache_hits",
            "Content requests answered from the cache, by tier",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        r.register(
            "cache_misses",
            "Content requests that needed bytes from the upstream",
            cache_misses.clone(),
        );
        let upstream_requests = Family::<TransportLabels, Counter>::default();
        r.register(
            "upstream_requests",
            "Requests sent to the upstream server that got a response",
            upstream_requests.clone(),
        );
        let upstream_duration: Latencies<TransportLabels> =
            Family::new_with_constructor(latency_histogram);
        r.register(
            "upstream_request_duration_seconds",
            "Time until the upstream's response head, by transport",
            upstream_duration.clone(),
        );
        let upstream_errors = Family::<ReasonLabels, Counter>::default();
        r.register(
            "upstream_errors",
            "Requests to the upstream without a usable answer (connect, tls, timeout, status, \
             body, request)",
            upstream_errors.clone(),
        );
        let upstream_bytes = Counter::default();
        r.register(
            "upstream_bytes",
            "Body bytes received from the upstream server",
            upstream_bytes.clone(),
        );
        let served_bytes = Counter::default();
        r.register(
            "served_bytes",
            "Content body bytes sent to clients",
            served_bytes.clone(),
        );
        let sendfile_bytes = Counter::default();
        r.register(
            "sendfile_bytes",
            "Content body bytes sent from the page cache by sendfile (part of served_bytes)",
            sendfile_bytes.clone(),
        );
        let cache_bytes = Family::<TierLabels, Gauge>::default();
        r.register(
            "cache_bytes",
            "Bytes held by the cache, by tier",
            cache_bytes.clone(),
        );
        let cache_disk_limit = Gauge::default();
        r.register(
            "cache_disk_limit_bytes",
            "The most the disk tier may hold (cache.disk_bytes)",
            cache_disk_limit.clone(),
        );
        let cache_min_free_disk = Gauge::default();
        r.register(
            "cache_min_free_disk_bytes",
            "Free space the cache always leaves on data_dir's filesystem (cache.min_free_disk)",
            cache_min_free_disk.clone(),
        );
        let data_dir_free = Gauge::default();
        r.register(
            "data_dir_free_bytes",
            "Free bytes of the filesystem holding data_dir",
            data_dir_free.clone(),
        );
        let fill_errors = Family::<ReasonLabels, Counter>::default();
        r.register(
            "fill_errors",
            "Failed fills from upstream, by reason",
            fill_errors.clone(),
        );
        let fills_in_progress = Gauge::default();
        r.register(
            "fills_in_progress",
            "Objects being filled from the upstream now",
            fills_in_progress.clone(),
        );
        let evictions = Counter::default();
        r.register(
            "cache_evictions",
            "Objects evicted from the disk cache",
            evictions.clone(),
        );
        let reports_pending = Gauge::default();
        r.register(
            "reports_pending",
            "Client events accepted and not yet acknowledged by the upstream",
            reports_pending.clone(),
        );
        let computers = Gauge::default();
        r.register(
            "computers",
            "Computers known to this node (its own and those rolled up from below)",
            computers.clone(),
        );
        let sync_duration = Histogram::new(JOB_BUCKETS);
        r.register(
            "sync_duration_seconds",
            "Duration of syncs from the upstream, failed ones included",
            sync_duration.clone(),
        );
        let sync_failures = Counter::default();
        r.register(
            "sync_failures",
            "Syncs from the upstream that failed",
            sync_failures.clone(),
        );
        let sync_last_success = Gauge::default();
        r.register(
            "sync_last_success_timestamp_seconds",
            "When the last sync from the upstream succeeded (0: never)",
            sync_last_success.clone(),
        );
        let sync_interval = Gauge::default();
        r.register(
            "sync_interval_seconds",
            "upstream.sync_interval (0: only when asked, or no upstream)",
            sync_interval.clone(),
        );
        let rollup_duration = Histogram::new(JOB_BUCKETS);
        r.register(
            "rollup_duration_seconds",
            "Duration of status rollups to the upstream, failed ones included",
            rollup_duration.clone(),
        );
        let rollup_failures = Counter::default();
        r.register(
            "rollup_failures",
            "Status rollups to the upstream that failed",
            rollup_failures.clone(),
        );
        let rollup_last_success = Gauge::default();
        r.register(
            "rollup_last_success_timestamp_seconds",
            "When the last status rollup succeeded (0: never)",
            rollup_last_success.clone(),
        );
        let rollup_interval = Gauge::default();
        r.register(
            "rollup_interval_seconds",
            "reports.rollup_interval (0: only when asked, or no upstream)",
            rollup_interval.clone(),
        );
        let prefetch_pending_files = Gauge::default();
        r.register(
            "prefetch_pending_files",
            "Files the prefetch under way has still to fetch",
            prefetch_pending_files.clone(),
        );
        let prefetch_pending_bytes = Gauge::default();
        r.register(
            "prefetch_pending_bytes",
            "Bytes the prefetch under way has still to fetch",
            prefetch_pending_bytes.clone(),
        );
        let prefetch_files = Counter::default();
        r.register(
            "prefetch_files",
            "Files fetched by prefetches",
            prefetch_files.clone(),
        );
        let prefetch_bytes = Counter::default();
        r.register(
            "prefetch_bytes",
            "Bytes of the files fetched by prefetches",
            prefetch_bytes.clone(),
        );
        let ready = Gauge::default();
        r.register("ready", "1 when /readyz says ready", ready.clone());
        let refused = Family::<ReasonLabels, Counter>::default();
        r.register(
            "requests_refused",
            "Requests refused before their service saw them (unauthenticated, busy, body_*, \
             host, admin_host)",
            refused.clone(),
        );
        let connections_closed = Family::<ReasonLabels, Counter>::default();
        r.register(
            "connections_closed",
            "Connections the node closed on its own (limit, header_timeout, idle_timeout)",
            connections_closed.clone(),
        );
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        r.register(
            "connections_open",
            "Open connections, by listener",
            connections_open.clone(),
        );
        let scrubbed_bytes = Counter::default();
        r.register(
            "cache_scrubbed_bytes",
            "Committed bytes the background scrub re-read and checked against their seals",
            scrubbed_bytes.clone(),
        );
        let corrupt = Family::<FoundByLabels, Counter>::default();
        r.register(
            "cache_corrupt_objects",
            "Committed objects whose bytes on disk no longer matched their seal (found_by read \
             or scrub)",
            corrupt.clone(),
        );
        let sealed = Counter::default();
        r.register(
            "cache_sealed_objects",
            "Committed objects from before seals that the scrub verified and sealed",
            sealed.clone(),
        );
        let descriptors_limit = Gauge::default();
        r.register(
            "descriptors_limit",
            "The soft limit on this process's open descriptors (raised to the hard one at start)",
            descriptors_limit.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: COMMIT,
            })
            .set(1);
        r.register(
            "build_info",
            "The version and commit of this binary",
            build_info,
        );
        let node_info = Family::<NodeLabels, Gauge>::default();
        r.register(
            "node_info",
            "This node's name and role (root or downstream)",
            node_info.clone(),
        );
        // Every series an alert or a panel asks for exists from the start at zero: a counter
        // that appears only with its first increment hides that increment from increase().
        for reason in FILL_ERROR_REASONS {
            let _ = fill_errors.get_or_create(&ReasonLabels { reason });
        }
        for reason in UPSTREAM_ERROR_REASONS {
            let _ = upstream_errors.get_or_create(&ReasonLabels { reason });
        }
        for transport in TRANSPORTS {
            let labels = TransportLabels { transport };
            let _ = upstream_requests.get_or_create(&labels);
            let _ = upstream_duration.get_or_create(&labels);
        }
        for tier in ["memory", "disk"] {
            let _ = cache_hits.get_or_create(&TierLabels { tier });
        }
        for reason in REFUSED_REASONS {
            let _ = refused.get_or_create(&ReasonLabels { reason });
        }
        for reason in CLOSED_REASONS {
            let _ = connections_closed.get_or_create(&ReasonLabels { reason });
        }
        for found_by in ["read", "scrub"] {
            let _ = corrupt.get_or_create(&FoundByLabels { found_by });
        }
        for listener in LISTENERS {
            let _ = connections_open.get_or_create(&ListenerLabels { listener });
        }
        Metrics {
            registry: r,
            requests,
            request_duration,
            soap_calls,
            soap_duration,
            cache_hits,
            cache_misses,
            upstream_requests,
            upstream_duration,
            upstream_errors,
            upstream_bytes,
            served_bytes,
            sendfile_bytes,
            cache_bytes,
            cache_disk_limit,
            cache_min_free_disk,
            data_dir_free,
            fill_errors,
            fills_in_progress,
            evictions,
            reports_pending,
            computers,
            sync_duration,
            sync_failures,
            sync_last_success,
            sync_interval,
            rollup_duration,
            rollup_failures,
            rollup_last_success,
            rollup_interval,
            prefetch_pending_files,
            prefetch_pending_bytes,
            prefetch_files,
            prefetch_bytes,
            ready,
            refused,
            connections_closed,
            connections_open,
            scrubbed_bytes,
            corrupt,
            sealed,
            descriptors_limit,
            node_info,
        }
    }

    /// Name this node and its role in `wsus_edge_node_info`.
    pub fn set_node(&self, name: &str, downstream: bool) {
        self.node_info.clear();
        self.node_info
            .get_or_create(&NodeLabels {
                name: name.to_owned(),
                role: if downstream { "downstream" } else { "root" },
            })
            .set(1);
    }

    /// The exposition of every metric (OpenMetrics text), the process's own at the end.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        let _ = process::encode(&mut out);
        out.push_str("# EOF\n");
        out
    }

    /// The same in the Prometheus text format (0.0.4), for scrapers that do not ask for
    /// OpenMetrics (and `promtool check metrics`): a counter family is named with its `_total`
    /// there, and there is no `# EOF`.
    pub fn encode_text(&self) -> String {
        openmetrics_to_text(&self.encode())
    }

    pub fn fill_error(&self, reason: &'static str) {
        self.fill_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn connection_closed(&self, reason: &'static str) {
        self.connections_closed
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn upstream_error(&self, reason: &'static str) {
        self.upstream_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// One answered request: its class, status and time to the response head.
    pub fn request(&self, path: &'static str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels { path, status })
            .inc();
        self.request_duration
            .get_or_create(&KindLabels { kind: path })
            .observe(elapsed.as_secs_f64());
    }

    /// One answered SOAP call.
    pub fn soap_call(&self, operation: &str, fault: Option<&'static str>, elapsed: Duration) {
        let operation = operation_label(operation);
        self.soap_calls
            .get_or_create(&SoapCallLabels {
                operation,
                outcome: fault.unwrap_or("ok"),
            })
            .inc();
        self.soap_duration
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }
}

/// OpenMetrics text as the Prometheus text format: the HELP and TYPE lines of each counter family
/// take the name its samples have (`_total`); `# EOF` is dropped.
fn openmetrics_to_text(open: &str) -> String {
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

pub use process::own_cpu_seconds;

/// The standard process metrics (names as the Prometheus client libraries give them), read
/// from procfs; on another system, or when procfs is not mounted, none.
mod process {
    use std::fmt::Write as _;

    pub(super) fn encode(out: &mut String) -> std::fmt::Result {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return Ok(());
        };
        // The fields after the command name, which is in parentheses and may hold spaces.
        let Some(fields) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            return Ok(());
        };
        let fields: Vec<&str> = fields.split_whitespace().collect();
        let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
        let page = rustix::param::page_size().max(1) as f64;
        let field = |n: usize| fields.get(n).and_then(|f| f.parse::<f64>().ok());
        // proc(5) numbers the fields from 1 with the state as field 3, here index 0.
        let (start, rss) = (field(19), field(21));
        if let Some(cpu) = cpu_seconds(&fields) {
            gauge_or_counter(
                out,
                "process_cpu_seconds",
                "counter",
                "User and system CPU time spent, in seconds",
                cpu,
            )?;
        }
        if let Some(rss) = rss {
            gauge_or_counter(
                out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes",
                rss * page,
            )?;
        }
        if let (Some(start), Some(boot)) = (start, boot_time()) {
            gauge_or_counter(
                out,
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since the epoch, in seconds",
                boot + start / ticks,
            )?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge_or_counter(
                out,
                "process_open_fds",
                "gauge",
                "Open file descriptors",
                fds.count() as f64,
            )?;
        }
        if let Some(soft) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
            gauge_or_counter(
                out,
                "process_max_fds",
                "gauge",
                "The soft limit of open file descriptors",
                soft as f64,
            )?;
        }
        Ok(())
    }

    /// User and system time from the fields of `/proc/self/stat` after the command name.
    fn cpu_seconds(fields: &[&str]) -> Option<f64> {
        let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / ticks)
    }

    /// This process's CPU time so far, in seconds (for a load generator to state its own cost).
    pub fn own_cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields = stat.rsplit_once(')')?.1;
        cpu_seconds(&fields.split_whitespace().collect::<Vec<_>>())
    }

    fn boot_time() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        stat.lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    }

    fn gauge_or_counter(
        out: &mut String,
        name: &str,
        kind: &str,
        help: &str,
        value: f64,
    ) -> std::fmt::Result {
        let sample = if kind == "counter" {
            format!("{name}_total")
        } else {
            name.to_owned()
        };
        write!(
            out,
            "# HELP {name} {help}.\n# TYPE {name} {kind}\n{sample} {value}\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        let m = Metrics::new();
        m.request("content", 206, Duration::from_millis(2));
        m.fill_error("digest");
        m.cache_hits
            .get_or_create(&TierLabels { tier: "memory" })
            .inc();
        m.upstream_requests
            .get_or_create(&TransportLabels { transport: "http1" })
            .inc();
        m.soap_call("SyncUpdates", None, Duration::from_millis(3));
        m.soap_call("<script>", Some("InvalidParameters"), Duration::ZERO);
        m.set_node("branch-a", true);
        let text = m.encode();
        for name in [
            "wsus_edge_requests_total{path=\"content\",status=\"206\"} 1",
            "wsus_edge_request_duration_seconds_bucket{le=\"0.0025\",kind=\"content\"} 1",
            "wsus_edge_fill_errors_total{reason=\"digest\"} 1",
            "wsus_edge_cache_hits_total{tier=\"memory\"} 1",
            "wsus_edge_cache_misses_total 0",
            "wsus_edge_upstream_requests_total{transport=\"http1\"} 1",
            "wsus_edge_upstream_bytes_total 0",
            "wsus_edge_served_bytes_total 0",
            "wsus_edge_soap_calls_total{operation=\"SyncUpdates\",outcome=\"ok\"} 1",
            "wsus_edge_soap_calls_total{operation=\"unknown\",outcome=\"InvalidParameters\"} 1",
            "wsus_edge_node_info{name=\"branch-a\",role=\"downstream\"} 1",
            "wsus_edge_build_info{version=\"",
            "# TYPE process_cpu_seconds counter",
            "process_open_fds ",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
        let plain = m.encode_text();
        assert!(!plain.contains("# EOF"));
        assert!(
            plain.contains("# TYPE wsus_edge_requests_total counter\n"),
            "{plain}"
        );
        assert!(plain.contains("# HELP wsus_edge_requests_total HTTP requests answered"));
        assert!(plain.contains("# TYPE wsus_edge_ready gauge\n"));
        assert!(plain.contains("# TYPE process_cpu_seconds_total counter\n"));
    }
}
