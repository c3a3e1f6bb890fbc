//! The reporting phase of the server-server protocol, downstream side: a node with an
//! `[upstream]` rolls up, every `reports.rollup_interval` (the first at start, then with
//! back-off after failures, so a branch that was offline sends what it owes once the WAN is
//! back), this server and the servers below it (RollupDownstreamServers), the computers that
//! changed since the last acknowledged rollup (RollupComputers, with details), and the update
//! states the upstream lacks (GetOutOfSyncComputers, then full RollupComputerStatus), in
//! batches of the sizes the upstream gives (MS-WSUSSS §3.2.4.5).
//!
//! Nothing needs a cursor of its own for states: each computer's status carries a number that
//! moves with every change, and the upstream says which numbers it lacks. The computers
//! cursor is persisted and advanced only after the upstream acknowledged; a changed
//! RollupResetGuid (the upstream lost its data) resets it, so everything is sent again.
//! `RollupComputerStatusResult` false (upstream busy): wait and send again.
//!
//! Owns: the requests a downstream sends in that phase. Calls `report` (what to send and the
//! cursor), [`super::sync`] (the SOAP exchange), `upstream`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::SERVER_SYNC_NS;
use super::sync::{Schedule, post};
use crate::catalog::Guid;
use crate::catalog::{FileState, UpdateCounts};
use crate::clock::unix_now;
use crate::error::{Error, Kind, Result};
use crate::report::{
    ComputerCounts, OsGroup, RolledComputer, RolledServer, RolledStatus, ServerSummary,
};
use crate::soap::xsd::format_datetime;
use crate::soap::{self, Element};
use crate::soap_client::Failure;
use crate::state::Database;
use crate::state::Journal;
use crate::upstream::Upstream;

const REPORTING_PATH: &str = "/ReportingWebService/ReportingWebService.asmx";
/// Update states one RollupComputerStatus carries at most (about 190 bytes each on the wire,
/// before gzip: ~9.5 MB), however many computers the upstream takes per call: computers of a
/// large catalog hold thousands of states each, and an upstream bounds a call's size.
const MAX_STATES_PER_CALL: usize = 50_000;
/// The rollup cookie is fixed (MS-WSUSSS §3.1.4.13.2.1).
const COOKIE: &str =
    "<cookie><Expiration>9999-12-31T23:59:59.9999999</Expiration><EncryptedData/></cookie>";
/// "No time" on the wire (MS-WSUSSS §3.2.4.5: a NULL time stamp is sent as 1753-01-01).
const NEVER: &str = "1753-01-01T00:00:00";
/// How long to wait after the upstream said it is busy, and how often to try before giving
/// the rest to the next rollup.
const BUSY_WAIT: Duration = Duration::from_secs(60);
const BUSY_TRIES: u32 = 3;

/// What one rollup sent.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RollupReport {
    pub servers: usize,
    pub computers: usize,
    /// Computers whose update states the upstream lacked, and were sent.
    pub statuses: usize,
    pub calls: usize,
    /// Bytes of the requests' SOAP operations, as written (before compression).
    pub body_bytes: u64,
    /// Bytes of the requests as they crossed the link up (gzip-coded when the upstream
    /// reads that).
    pub sent_bytes: u64,
    /// The upstream's RollupResetGuid changed since the last rollup: everything was sent.
    pub reset: bool,
    pub elapsed_ms: u64,
}

/// What the rollups did so far.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RollupStatus {
    pub rollups: u64,
    pub failed: u64,
    pub failures_in_a_row: u32,
    pub last_success: Option<i64>,
    pub last: Option<RollupReport>,
    pub last_error: Option<String>,
}

/// What the update half of this server's summary is counted from.
pub struct Sources {
    /// The catalog clients are served from.
    pub served: Arc<crate::served::Served>,
    /// Where payload files are (or are not yet).
    pub content: crate::content::Store,
    /// The prefetches, whose failures are the server errors (none: a node without sync).
    pub replica: Option<Arc<super::replica::Replica>>,
}

pub struct Rollup {
    upstream: Arc<Upstream>,
    sources: Sources,
    database: Database,
    server_id: Guid,
    name: String,
    /// Zero: only when asked.
    interval: Duration,
    /// Said to the upstream as IsReplica: whether this node's approvals are the upstream's.
    is_replica: bool,
    now: Notify,
    status: watch::Sender<RollupStatus>,
}

/// The limits the upstream gave in GetRollupConfiguration.
struct Config {
    reset: Guid,
    servers: usize,
    computers: usize,
    out_of_sync: usize,
    statuses: usize,
}

impl Rollup {
    pub fn new(
        upstream: Arc<Upstream>,
        sources: Sources,
        database: Database,
        server_id: Guid,
        name: &str,
        interval: Duration,
    ) -> Rollup {
        Rollup {
            upstream,
            sources,
            database,
            server_id,
            name: name.to_owned(),
            interval,
            is_replica: true,
            now: Notify::new(),
            status: watch::Sender::new(RollupStatus::default()),
        }
    }

    /// Tell the upstream this node is an autonomous downstream server (`is_replica` false) or
    /// a replica (the default).
    pub fn with_replica(mut self, is_replica: bool) -> Rollup {
        self.is_replica = is_replica;
        self
    }

    /// Roll up as soon as the current one (if any) is done.
    pub fn rollup_now(&self) {
        self.now.notify_one();
    }

    pub fn status(&self) -> watch::Receiver<RollupStatus> {
        self.status.subscribe()
    }

    /// Roll up on schedule until `shutdown`.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut schedule = Schedule::new(self.interval);
        while schedule.next(&self.now, &mut shutdown).await {
            let started = Instant::now();
            let outcome = self.once().await;
            let metrics = self.upstream.metrics();
            metrics
                .rollup_duration
                .observe(started.elapsed().as_secs_f64());
            match outcome {
                Ok(report) => {
                    schedule.done(true);
                    metrics.rollup_last_success.set(unix_now());
                    tracing::info!(
                        servers = report.servers,
                        computers = report.computers,
                        statuses = report.statuses,
                        reset = report.reset,
                        "rolled up to upstream"
                    );
                    self.status.send_modify(|s| {
                        s.rollups += 1;
                        s.failures_in_a_row = 0;
                        s.last_success = Some(unix_now());
                        s.last = Some(report);
                        s.last_error = None;
                    });
                }
                Err(e) => {
                    metrics.rollup_failures.inc();
                    let (failures, retry_in) = schedule.done(false);
                    tracing::error!(error = %e, ?retry_in,
                        "rollup to upstream failed; what was not acknowledged is kept");
                    self.status.send_modify(|s| {
                        s.rollups += 1;
                        s.failed += 1;
                        s.failures_in_a_row = failures;
                        s.last_error = Some(e.to_string());
                    });
                }
            }
        }
    }

    async fn journal<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Journal) -> std::result::Result<T, crate::catalog::CatalogError>
        + Send
        + 'static,
    ) -> Result<T> {
        let database = self.database.clone();
        tokio::task::spawn_blocking(move || f(&mut Journal::open(&database)?))
            .await
            .map_err(|e| Error::internal(Kind::Io, format!("rollup task: {e}")))?
            .map_err(Error::from)
    }

    /// The catalog's update counts, with each approved file as the content store and the
    /// last prefetch know it.
    async fn update_counts(&self) -> Result<UpdateCounts> {
        let catalog = self.sources.served.catalog();
        let content = self.sources.content.clone();
        let failed = self
            .sources
            .replica
            .as_ref()
            .and_then(|r| {
                r.status()
                    .borrow()
                    .last_prefetch
                    .as_ref()
                    .map(|p| p.failed_files.clone())
            })
            .unwrap_or_default();
        let database = self.database.clone();
        tokio::task::spawn_blocking(move || {
            let hidden = crate::state::Store::open(&database)?.hidden()?;
            Ok(catalog.update_counts(&hidden.into_iter().collect(), |f| {
                let digest = crate::content::path::Digest(f.sha1);
                if content
                    .describe(&digest)
                    .is_some_and(|i| i.state == "committed")
                {
                    FileState::Present
                } else if failed.contains(&f.sha1) {
                    FileState::Failed
                } else {
                    FileState::Missing
                }
            }))
        })
        .await
        .map_err(|e| Error::internal(Kind::Io, format!("rollup task: {e}")))?
        .map_err(|e: crate::catalog::CatalogError| Error::from(e))
    }

    async fn call(
        &self,
        report: &mut RollupReport,
        operation: &str,
        inner: &str,
    ) -> Result<Element> {
        report.calls += 1;
        report.body_bytes += inner.len() as u64;
        let answer = post(
            &self.upstream,
            REPORTING_PATH,
            SERVER_SYNC_NS,
            operation,
            inner,
        )
        .await
        .map_err(Failure::into_error)?;
        report.sent_bytes += answer.sent;
        Ok(answer.op)
    }

    /// One whole rollup.
    pub async fn once(&self) -> Result<RollupReport> {
        let started = Instant::now();
        let mut report = RollupReport::default();
        let config = self.configuration(&mut report).await?;
        let (known_reset, mut sent_until) = self.journal(|j| j.rollup_position()).await?;
        if known_reset != Some(config.reset) {
            report.reset = known_reset.is_some();
            sent_until = 0;
        }
        let rollup_started = unix_now();

        // This server, then every server below that rolled up here.
        let own = self.server_id;
        let updates = self.update_counts().await?;
        let (computers, below, (activity_sent, pending)) = self
            .journal(|j| {
                Ok((
                    j.computer_counts()?,
                    j.servers_below()?,
                    j.activity_position()?,
                ))
            })
            .await?;
        // The installs since the last acknowledged summary. One sent without an answer goes
        // again as it was, under the same LastRollupTime: the upstream applies it once.
        let (upto, stamp) = match pending {
            Some(pending) => pending,
            None => {
                self.journal(move |j| j.begin_activity(rollup_started))
                    .await?
            }
        };
        let clients = self
            .journal(move |j| j.own_clients(activity_sent, upto))
            .await?;
        let mut servers = vec![RolledServer {
            id: own,
            name: self.name.clone(),
            // The nil GUID: the server receiving this (MS-WSUSSS §3.2.4.5).
            parent: Guid::NIL,
            is_replica: self.is_replica,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            last_sync: self
                .sources
                .replica
                .as_ref()
                .and_then(|r| r.status().borrow().last_success),
            last_rollup: Some(stamp),
            sent_at: stamp,
            summary: summary(&updates, &computers),
            clients,
        }];
        servers.extend(below);
        let mut sent = std::collections::HashSet::new();
        for batch in server_batches(servers, config.servers) {
            self.call(&mut report, "RollupDownstreamServers", &servers_xml(&batch))
                .await?;
            sent.extend(batch.iter().map(|s| s.id));
            let passed_on: Vec<RolledServer> = batch.into_iter().filter(|s| s.id != own).collect();
            self.journal(move |j| j.forwarded(&passed_on)).await?;
        }
        report.servers = sent.len();
        self.journal(move |j| j.activity_acknowledged(upto)).await?;

        // Computers changed since the last acknowledged rollup.
        let computers = self
            .journal(move |j| j.computers_to_roll(sent_until, own))
            .await?;
        for batch in computers.chunks(config.computers.max(1)) {
            self.call(&mut report, "RollupComputers", &computers_xml(batch))
                .await?;
            report.computers += batch.len();
        }
        self.journal(move |j| j.set_rollup_position(config.reset, rollup_started))
            .await?;

        // The states the upstream lacks.
        let numbers = self.journal(|j| j.rollup_numbers()).await?;
        for batch in numbers.chunks(config.out_of_sync.max(1)) {
            let mut inner =
                format!("{COOKIE}<parentServerId>{own}</parentServerId><lastRollupNumbers>");
            for (id, number) in batch {
                inner.push_str("<ComputerLastRollupNumber>");
                soap::text_element(&mut inner, "ComputerId", id);
                let _ = write!(
                    inner,
                    "<RollupNumber>{number}</RollupNumber></ComputerLastRollupNumber>"
                );
            }
            inner.push_str("</lastRollupNumbers>");
            let answer = self
                .call(&mut report, "GetOutOfSyncComputers", &inner)
                .await?;
            let behind = read_out_of_sync(&answer);
            for ids in behind.chunks(config.statuses.max(1)) {
                let ids = ids.to_vec();
                let statuses = self.journal(move |j| j.statuses(&ids)).await?;
                for batch in status_batches(&statuses, MAX_STATES_PER_CALL) {
                    self.send_statuses(&mut report, own, batch).await?;
                }
                report.statuses += statuses.len();
            }
        }
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    async fn configuration(&self, report: &mut RollupReport) -> Result<Config> {
        let answer = self.call(report, "GetRollupConfiguration", COOKIE).await?;
        read_configuration(&answer)
    }

    /// RollupComputerStatus, again after a wait while the upstream says it is busy.
    async fn send_statuses(
        &self,
        report: &mut RollupReport,
        own: Guid,
        statuses: &[RolledStatus],
    ) -> Result<()> {
        let inner = statuses_xml(own, statuses);
        for attempt in 1..=BUSY_TRIES {
            let answer = self.call(report, "RollupComputerStatus", &inner).await?;
            if answer.child_text("RollupComputerStatusResult") == Some("true") {
                return Ok(());
            }
            tracing::info!(
                attempt,
                "upstream busy (RollupComputerStatus false); waiting"
            );
            if attempt < BUSY_TRIES {
                tokio::time::sleep(BUSY_WAIT).await;
            }
        }
        Err(Error::upstream(
            Kind::Unavailable,
            "RollupComputerStatus: the upstream stayed busy",
        ))
    }
}

/// GetRollupConfigurationResult: the reset id and the batch sizes; an upstream that takes no
/// detailed rollup is refused.
fn read_configuration(answer: &Element) -> Result<Config> {
    let bad = |what: &str| {
        Error::upstream(
            Kind::BadUpstream,
            format!("GetRollupConfiguration: the answer lacks a valid {what}"),
        )
    };
    let r = answer
        .child("GetRollupConfigurationResult")
        .ok_or_else(|| bad("GetRollupConfigurationResult"))?;
    let size = |name: &str| -> Result<usize> {
        r.child_text(name)
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| bad(name))
    };
    let detailed = r.child_text("DoDetailedRollup") == Some("true");
    if !detailed {
        return Err(Error::upstream(
            Kind::BadUpstream,
            "the upstream takes no detailed rollup (DoDetailedRollup false)",
        )
        .retryable(false));
    }
    Ok(Config {
        reset: r
            .child_text("RollupResetGuid")
            .and_then(Guid::parse)
            .ok_or_else(|| bad("RollupResetGuid"))?,
        servers: size("RollupDownstreamServersMaxBatchSize")?,
        computers: size("RollupComputersMaxBatchSize")?,
        out_of_sync: size("GetOutOfSyncComputersMaxBatchSize")?,
        statuses: size("RollupComputerStatusMaxBatchSize")?,
    })
}

/// GetOutOfSyncComputersResult: the computers whose statuses the upstream wants again.
fn read_out_of_sync(answer: &Element) -> Vec<String> {
    answer
        .child("GetOutOfSyncComputersResult")
        .map(|r| {
            r.children_named("string")
                .map(|s| s.text().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Everything a rollup takes from an answer to `operation` (the response element): how many
/// items it held. For the fuzz targets and their tests.
pub fn read_result(operation: &str, answer: &Element) -> Result<usize> {
    match operation {
        "GetRollupConfiguration" => read_configuration(answer).map(|_| 1),
        "GetOutOfSyncComputers" => Ok(read_out_of_sync(answer).len()),
        other => Err(Error::upstream(
            Kind::BadUpstream,
            format!("{other}: not an answer a rollup reads"),
        )),
    }
}

fn time(t: Option<i64>) -> String {
    t.map_or_else(|| NEVER.to_owned(), format_datetime)
}

/// This server's [`ServerSummary`]: the update counts of its catalog, the computer counts
/// of its own computers.
fn summary(u: &UpdateCounts, c: &ComputerCounts) -> ServerSummary {
    ServerSummary {
        updates: u.updates,
        declined: u.declined,
        approved: u.approved,
        not_approved: u.not_approved,
        stale_approvals: u.stale_approvals,
        // Nothing expires in this catalog: updates are declined or kept.
        expired: 0,
        critical_not_approved: u.critical_not_approved,
        infrastructure_not_approved: u.infrastructure_not_approved,
        updates_with_client_errors: c.updates_with_errors,
        updates_with_server_errors: u.with_server_errors,
        updates_needing_files: u.needing_files,
        updates_needed: c.updates_needed,
        updates_up_to_date: c.updates_up_to_date,
        custom_groups: u.custom_groups,
        computers: c.computers,
        computers_needing: c.needing,
        computers_with_errors: c.with_errors,
        computers_up_to_date: c.computers - c.needing,
    }
}

/// RollupDownstreamServers requests, in order: at most `max` client summaries in each
/// (summed over its servers) and at most `max` servers; a server with more summaries than fit
/// goes as several entries, each with a share of them (MS-WSUSSS §3.2.4.5).
fn server_batches(servers: Vec<RolledServer>, max: usize) -> Vec<Vec<RolledServer>> {
    let max = max.max(1);
    let mut batches = Vec::new();
    let mut batch: Vec<RolledServer> = Vec::new();
    let mut used = 0;
    for mut server in servers {
        let mut clients = std::mem::take(&mut server.clients);
        loop {
            if batch.len() == max || (used == max && !clients.is_empty()) {
                batches.push(std::mem::take(&mut batch));
                used = 0;
            }
            let rest = clients.split_off(clients.len().min(max - used));
            used += clients.len();
            batch.push(RolledServer {
                clients,
                ..server.clone()
            });
            if rest.is_empty() {
                break;
            }
            clients = rest;
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

/// `statuses` in runs of at most `max_states` update states (a computer with more goes alone).
pub fn status_batches(statuses: &[RolledStatus], max_states: usize) -> Vec<&[RolledStatus]> {
    let mut batches = Vec::new();
    let (mut start, mut states) = (0, 0);
    for (i, s) in statuses.iter().enumerate() {
        if i > start && states + s.updates.len() > max_states {
            batches.push(&statuses[start..i]);
            (start, states) = (i, 0);
        }
        states += s.updates.len();
    }
    if start < statuses.len() {
        batches.push(&statuses[start..]);
    }
    batches
}

/// One call of the rollup as [`Rollup`] makes it (the fixed rollup cookie is in what the
/// message builders return): the operation's answer element. For load generators.
pub async fn send(upstream: &Upstream, operation: &str, inner: &str) -> Result<Element> {
    post(upstream, REPORTING_PATH, SERVER_SYNC_NS, operation, inner)
        .await
        .map(|answer| answer.op)
        .map_err(Failure::into_error)
}

/// RollupDownstreamServers' parameters: `servers` and their client summaries.
pub fn servers_xml(servers: &[RolledServer]) -> String {
    let mut out = format!(
        "{COOKIE}<clientTime>{}</clientTime><downstreamServers>",
        format_datetime(unix_now())
    );
    for s in servers {
        let _ = write!(
            out,
            "<DownstreamServerRollupInfo><ServerId>{}</ServerId>",
            s.id
        );
        soap::text_element(&mut out, "FullDomainName", &s.name);
        let _ = write!(
            out,
            "<LastSyncTime>{}</LastSyncTime><ParentServerId>{}</ParentServerId>",
            time(s.last_sync),
            s.parent
        );
        soap::text_element(&mut out, "Version", &s.version);
        let _ = write!(
            out,
            "<IsReplica>{}</IsReplica><LastRollupTime>{}</LastRollupTime><ServerSummary>",
            s.is_replica,
            time(s.last_rollup)
        );
        for (name, value) in s.summary.counts() {
            let _ = write!(out, "<{name}>{value}</{name}>");
        }
        out.push_str("</ServerSummary><ClientSummaries>");
        for c in &s.clients {
            let [major, minor, build, sp_major, sp_minor] = c.os.version;
            let _ = write!(
                out,
                "<DownstreamServerRollupClientSummary><OSMajorVersion>{major}</OSMajorVersion>\
                 <OSMinorVersion>{minor}</OSMinorVersion><OSBuildNumber>{build}</OSBuildNumber>\
                 <OSServicePackMajorNumber>{sp_major}</OSServicePackMajorNumber>\
                 <OSServicePackMinorNumber>{sp_minor}</OSServicePackMinorNumber>"
            );
            soap::text_element(&mut out, "OSLocale", &c.os.locale);
            let _ = write!(
                out,
                "<SuiteMask>0</SuiteMask><OldProductType>1</OldProductType>\
                 <NewProductType>1</NewProductType><SystemMetrics>0</SystemMetrics>"
            );
            soap::text_element(&mut out, "ProcessorArchitecture", &c.os.processor);
            let _ = write!(out, "<Count>{}</Count><ActivitySummaries>", c.count);
            for a in &c.activity {
                let _ = write!(
                    out,
                    "<DownstreamServerRollupClientActivitySummary><UpdateId>{}</UpdateId>\
                     <RevisionNumber>{}</RevisionNumber>\
                     <InstallSuccessCount>{}</InstallSuccessCount>\
                     <InstallFailureCount>{}</InstallFailureCount>\
                     </DownstreamServerRollupClientActivitySummary>",
                    a.update, a.revision, a.succeeded, a.failed
                );
            }
            out.push_str("</ActivitySummaries></DownstreamServerRollupClientSummary>");
        }
        out.push_str("</ClientSummaries></DownstreamServerRollupInfo>");
    }
    out.push_str("</downstreamServers>");
    out
}

/// RollupComputers' parameters.
pub fn computers_xml(computers: &[RolledComputer]) -> String {
    let mut out = format!(
        "{COOKIE}<clientTime>{}</clientTime><computers>",
        format_datetime(unix_now())
    );
    for c in computers {
        let _ = write!(
            out,
            "<ComputerRollupInfo ComputerId=\"{}\" LastSyncTime=\"{}\" LastSyncResult=\"1\" \
             LastReportedRebootTime=\"{NEVER}\" LastReportedStatusTime=\"{}\" \
             LastInventoryTime=\"{NEVER}\" ParentServerId=\"{}\">",
            soap::escape(&c.id),
            time(c.last_sync),
            time(c.last_status),
            c.parent
        );
        if let Some(d) = &c.details {
            let [major, minor, build, sp, _] = OsGroup::of(&d.os_version, "", "").version;
            let _ = write!(
                out,
                "<Details FullDomainName=\"{}\" OSMajorVersion=\"{major}\" \
                 OSMinorVersion=\"{minor}\" OSBuildNumber=\"{build}\" \
                 OSServicePackMajorNumber=\"{sp}\" OSServicePackMinorNumber=\"0\" \
                 OSLocale=\"{}\" ComputerMake=\"{}\" ComputerModel=\"{}\" \
                 BiosReleaseDate=\"{NEVER}\" ProcessorArchitecture=\"{}\" SuiteMask=\"0\" \
                 OldProductType=\"1\" NewProductType=\"1\" SystemMetrics=\"0\" \
                 ClientVersion=\"{}\"><TargetGroupIdList>",
                soap::escape(&d.dns_name),
                soap::escape(&d.os_locale),
                soap::escape(&d.manufacturer),
                soap::escape(&d.model),
                soap::escape(&d.processor),
                soap::escape(&d.client_version),
            );
            for g in &d.groups {
                let _ = write!(out, "<guid>{g}</guid>");
            }
            out.push_str("</TargetGroupIdList></Details>");
        }
        out.push_str("</ComputerRollupInfo>");
    }
    out.push_str("</computers>");
    out
}

/// RollupComputerStatus' parameters, from server `own`.
pub fn statuses_xml(own: Guid, statuses: &[RolledStatus]) -> String {
    let now = format_datetime(unix_now());
    let mut out = format!(
        "{COOKIE}<clientTime>{now}</clientTime><parentServerId>{own}</parentServerId><computers>"
    );
    for s in statuses {
        let _ = write!(
            out,
            "<ComputerStatusRollupInfo><InstanceId>{}</InstanceId>",
            Guid::random()
        );
        soap::text_element(&mut out, "ComputerId", &s.id);
        let _ = write!(
            out,
            "<EffectiveLastDetectionTime>{}</EffectiveLastDetectionTime>\
             <RollupNumber>{}</RollupNumber><IsFullRollup>{}</IsFullRollup><UpdateStatus>",
            s.detection.map_or_else(|| now.clone(), format_datetime),
            s.rollup_number,
            s.full
        );
        for (update, state, changed) in &s.updates {
            let _ = write!(
                out,
                "<ComputerStatusRollupUpdateStatus><UpdateId>{update}</UpdateId>\
                 <SummarizationState>{}</SummarizationState><LastChangeTime>{}\
                 </LastChangeTime></ComputerStatusRollupUpdateStatus>",
                state.code(),
                format_datetime(*changed)
            );
        }
        out.push_str("</UpdateStatus></ComputerStatusRollupInfo>");
    }
    out.push_str("</computers>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ClientSummary, OsGroup};

    fn server(id: u128, clients: usize) -> RolledServer {
        RolledServer {
            id: Guid(id),
            name: format!("s{id}"),
            parent: Guid::NIL,
            is_replica: true,
            version: "1".into(),
            last_sync: None,
            last_rollup: None,
            sent_at: 0,
            summary: ServerSummary::default(),
            clients: (0..clients)
                .map(|n| ClientSummary {
                    os: OsGroup::of(&format!("10.0.{n}"), "en-US", "x64"),
                    count: 1,
                    activity: Vec::new(),
                })
                .collect(),
        }
    }

    /// At most `max` client summaries and `max` servers per request, order kept, a server's
    /// summaries spread over entries of its own, none lost or repeated.
    #[test]
    fn status_batches_stay_under_the_states_per_call() {
        let status = |n: usize| RolledStatus {
            id: format!("pc{n}"),
            rollup_number: 1,
            full: true,
            detection: None,
            updates: vec![(Guid::NIL, crate::report::UpdateState::Installed, 0); n],
        };
        let statuses: Vec<RolledStatus> = [3, 4, 2, 9, 1, 1].into_iter().map(status).collect();
        let sizes: Vec<Vec<usize>> = status_batches(&statuses, 7)
            .iter()
            .map(|b| b.iter().map(|s| s.updates.len()).collect())
            .collect();
        assert_eq!(sizes, [vec![3, 4], vec![2], vec![9], vec![1, 1]]);
        assert!(status_batches(&[], 7).is_empty());
    }

    #[test]
    fn batches_keep_within_the_maximum_and_the_order() {
        let servers = vec![server(1, 2), server(2, 7), server(3, 0), server(4, 1)];
        let batches = server_batches(servers, 3);
        for b in &batches {
            assert!(b.len() <= 3);
            assert!(b.iter().map(|s| s.clients.len()).sum::<usize>() <= 3);
        }
        let flat: Vec<(u128, OsGroup)> = batches
            .iter()
            .flatten()
            .flat_map(|s| s.clients.iter().map(move |c| (s.id.0, c.os.clone())))
            .collect();
        let mut want = Vec::new();
        for (id, n) in [(1, 2), (2, 7), (4, 1)] {
            for k in 0..n {
                want.push((id, OsGroup::of(&format!("10.0.{k}"), "en-US", "x64")));
            }
        }
        assert_eq!(flat, want);
        let ids: Vec<u128> = batches.iter().flatten().map(|s| s.id.0).collect();
        assert!(ids.is_sorted(), "{ids:?}");
        assert!(ids.contains(&3), "a server without summaries is sent too");
        assert_eq!(server_batches(Vec::new(), 3).len(), 0);
    }
}
