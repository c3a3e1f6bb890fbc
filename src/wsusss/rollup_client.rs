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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::SERVER_SYNC_NS;
use super::sync::{Failure, Schedule, post};
use crate::catalog::Guid;
use crate::catalog::store::unix_now;
use crate::error::{Error, Kind, Result};
use crate::report::{ComputerFilter, Journal, RolledComputer, RolledServer, RolledStatus};
use crate::soap::xsd::format_datetime;
use crate::soap::{self, Element};
use crate::upstream::Upstream;

const REPORTING_PATH: &str = "/ReportingWebService/ReportingWebService.asmx";
/// The rollup cookie is fixed (MS-WSUSSS §3.1.4.13.2.1).
const COOKIE: &str =
    "<cookie><Expiration>9999-12-31T23:59:59.9999999</Expiration><EncryptedData/></cookie>";
/// "No time" on the wire.
const NEVER: &str = "0001-01-01T00:00:00";
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
    /// Bytes of the requests' SOAP bodies (what crossed the link up, before compression).
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

pub struct Rollup {
    upstream: Arc<Upstream>,
    data_dir: PathBuf,
    server_id: Guid,
    name: String,
    /// Zero: only when asked.
    interval: Duration,
    now: Notify,
    status: watch::Sender<RollupStatus>,
}

/// The limits the upstream gave in GetRollupConfiguration.
struct Config {
    reset: Guid,
    /// The upstream's ServerId: this server's parent in what it rolls up.
    upstream_id: Guid,
    servers: usize,
    computers: usize,
    out_of_sync: usize,
    statuses: usize,
}

impl Rollup {
    pub fn new(
        upstream: Arc<Upstream>,
        data_dir: PathBuf,
        server_id: Guid,
        name: &str,
        interval: Duration,
    ) -> Rollup {
        Rollup {
            upstream,
            data_dir,
            server_id,
            name: name.to_owned(),
            interval,
            now: Notify::new(),
            status: watch::Sender::new(RollupStatus::default()),
        }
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
            match self.once().await {
                Ok(report) => {
                    schedule.done(true);
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
        let data_dir = self.data_dir.clone();
        tokio::task::spawn_blocking(move || f(&mut Journal::open(&data_dir)?))
            .await
            .map_err(|e| Error::internal(Kind::Io, format!("rollup task: {e}")))?
            .map_err(|e| Error::internal(Kind::Io, e.to_string()))
    }

    async fn call(
        &self,
        report: &mut RollupReport,
        operation: &str,
        inner: &str,
    ) -> Result<Element> {
        report.calls += 1;
        report.sent_bytes += inner.len() as u64;
        let answer = post(
            &self.upstream,
            REPORTING_PATH,
            SERVER_SYNC_NS,
            operation,
            inner,
        )
        .await
        .map_err(Failure::into_error)?;
        Ok(answer.0)
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
        let name = self.name.clone();
        let (mine, below) = self
            .journal(move |j| {
                let computers = j.computers(ComputerFilter::All)?;
                let local: Vec<_> = computers
                    .iter()
                    .filter(|c| c.parent_server.is_none())
                    .collect();
                let count = |f: &dyn Fn(&crate::report::ComputerStatus) -> bool| {
                    local.iter().filter(|c| f(c)).count() as i64
                };
                let mine = RolledServer {
                    id: own,
                    name,
                    parent: Guid::NIL,
                    is_replica: true,
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    last_sync: None,
                    computers: local.len() as i64,
                    needing: count(&|c| !c.up_to_date()),
                    with_errors: count(&|c| c.updates.get("failed").is_some_and(|n| *n > 0)),
                    up_to_date: count(&|c| c.up_to_date()),
                };
                Ok((mine, j.servers_below()?))
            })
            .await?;
        let mut servers = vec![RolledServer {
            parent: config.upstream_id,
            ..mine
        }];
        servers.extend(below);
        for batch in servers.chunks(config.servers.max(1)) {
            self.call(&mut report, "RollupDownstreamServers", &servers_xml(batch))
                .await?;
            report.servers += batch.len();
        }

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
            let behind: Vec<String> = answer
                .child("GetOutOfSyncComputersResult")
                .map(|r| {
                    r.children_named("string")
                        .map(|s| s.text().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            for ids in behind.chunks(config.statuses.max(1)) {
                let ids = ids.to_vec();
                let statuses = self.journal(move |j| j.statuses(&ids)).await?;
                self.send_statuses(&mut report, own, &statuses).await?;
                report.statuses += statuses.len();
            }
        }
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    async fn configuration(&self, report: &mut RollupReport) -> Result<Config> {
        let answer = self.call(report, "GetRollupConfiguration", COOKIE).await?;
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
            upstream_id: r
                .child_text("ServerId")
                .and_then(Guid::parse)
                .ok_or_else(|| bad("ServerId"))?,
            servers: size("RollupDownstreamServersMaxBatchSize")?,
            computers: size("RollupComputersMaxBatchSize")?,
            out_of_sync: size("GetOutOfSyncComputersMaxBatchSize")?,
            statuses: size("RollupComputerStatusMaxBatchSize")?,
        })
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

fn time(t: Option<i64>) -> String {
    t.map_or_else(|| NEVER.to_owned(), format_datetime)
}

fn servers_xml(servers: &[RolledServer]) -> String {
    let now = format_datetime(unix_now());
    let mut out = format!("{COOKIE}<clientTime>{now}</clientTime><downstreamServers>");
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
            "<IsReplica>{}</IsReplica><LastRollupTime>{now}</LastRollupTime><ServerSummary>",
            s.is_replica
        );
        for (name, value) in [
            ("UpdateCount", 0),
            ("DeclinedUpdateCount", 0),
            ("ApprovedUpdateCount", 0),
            ("NotApprovedUpdateCount", 0),
            ("UpdatesWithStaleUpdateApprovalsCount", 0),
            ("ExpiredUpdateCount", 0),
            ("CriticalOrSecurityUpdatesNotApprovedForInstallCount", 0),
            ("WsusInfrastructureUpdatesNotApprovedForInstallCount", 0),
            ("UpdatesWithClientErrorsCount", 0),
            ("UpdatesWithServerErrorsCount", 0),
            ("UpdatesNeedingFilesCount", 0),
            ("UpdatesNeededByComputersCount", 0),
            ("UpdatesUpToDateCount", 0),
            ("CustomComputerTargetGroupCount", 0),
            ("ComputerTargetCount", s.computers),
            ("ComputerTargetsNeedingUpdatesCount", s.needing),
            ("ComputerTargetsWithUpdateErrorsCount", s.with_errors),
            ("ComputersUpToDateCount", s.up_to_date),
        ] {
            let _ = write!(out, "<{name}>{value}</{name}>");
        }
        out.push_str("</ServerSummary><ClientSummaries/></DownstreamServerRollupInfo>");
    }
    out.push_str("</downstreamServers>");
    out
}

fn computers_xml(computers: &[RolledComputer]) -> String {
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
            let mut version = d
                .os_version
                .split('.')
                .map(|p| p.parse::<i64>().unwrap_or(0));
            let mut next = || version.next().unwrap_or(0);
            let (major, minor, build, sp) = (next(), next(), next(), next());
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

fn statuses_xml(own: Guid, statuses: &[RolledStatus]) -> String {
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
