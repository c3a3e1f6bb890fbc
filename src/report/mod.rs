//! What clients tell a node about themselves: the computers that registered (RegisterComputer)
//! and the events they report (ReportEventBatch), kept in `data_dir/state.db` before a client is
//! told they were received, and what those events say of each computer's updates (the
//! per-computer, per-update state WSUS calls SummarizationState, with when it changed); and the
//! downstream servers that sync from it (MS-WSUSSS). The status rollup upstream builds on this
//! journal.
//!
//! Owns the model: computers, events, the per-update states they imply, downstream servers and
//! what they roll up. Where they are kept is `state` ([`crate::state::Journal`]). Sans-IO; may
//! call `catalog` (ids).

use crate::catalog::Guid;
use crate::catalog::listing::StateCounts;

mod rollup;
pub use rollup::{
    Activity, ClientGroupTotals, ClientSummary, ComputerCounts, OsGroup, RolledComputer,
    RolledServer, RolledStatus, ServerSummary, summary_of,
};

/// A downstream server as this node knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Downstream {
    /// The GUID it authorized with (accountGuid).
    pub id: String,
    /// The name it gave (accountName).
    pub name: String,
    /// Where it last called from.
    pub address: String,
    /// The protocol version it last asked a cookie for.
    pub protocol: Option<String>,
    /// Seconds since the epoch.
    pub first_seen: i64,
    pub last_seen: i64,
    /// When it last listed updates (GetRevisionIdList, updates pass).
    pub last_sync: Option<i64>,
    /// What its rollup said (RollupDownstreamServers): the server it syncs from, when, and
    /// its computers: all, needing updates, with errors, up to date (from `summary`).
    pub parent: Option<String>,
    pub last_rollup: Option<i64>,
    /// Whether it takes its approvals from its upstream (a replica) or makes its own (an
    /// autonomous server), as its rollup said (MS-WSUSSS IsReplica).
    pub is_replica: Option<bool>,
    pub computers: Option<i64>,
    pub needing_updates: Option<i64>,
    pub with_errors: Option<i64>,
    pub up_to_date: Option<i64>,
    /// Everything its rollup counted.
    pub summary: Option<ServerSummary>,
    /// Its computers by operating system, with every install they reported.
    pub clients: Vec<ClientGroupTotals>,
}

/// One change an administrator or a rule made, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    /// Its place in the log (increasing).
    pub id: i64,
    /// When (seconds since the epoch).
    pub at: i64,
    /// Who: the name a browser session signed in with and the fingerprint of its token, a
    /// bearer token's fingerprint, the CLI's user, or a rule's name.
    pub who: String,
    /// How: "api", "browser", "cli" or "rule".
    pub via: String,
    /// What, in a word: "approve", "decline", "group", "sync", "sign-in"…
    pub action: String,
    /// What exactly, in words.
    pub detail: String,
}

/// What a downstream server's call tells of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownstreamSeen {
    /// It authorized (DssAuth GetAuthorizationCookie).
    Authorized { name: String },
    /// It took a cookie for this protocol version.
    Cookie { protocol: String },
    /// It listed the updates changed since its anchor.
    Synced,
}

/// A computer as it registered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Computer {
    pub client_id: String,
    pub dns_name: String,
    /// "10.0.26200.0" (major.minor.build.service pack).
    pub os_version: String,
    pub os_locale: String,
    pub manufacturer: String,
    pub model: String,
    pub processor: String,
    /// The Windows Update Agent's version.
    pub client_version: String,
    pub groups: Vec<Guid>,
}

/// One ReportingEvent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub client_id: String,
    pub instance: Guid,
    pub event_id: i32,
    pub source_id: i32,
    /// (UpdateID, RevisionNumber); none when the event is about no update (zero GUID).
    pub update: Option<(Guid, u32)>,
    pub hresult: i32,
    /// Seconds since the epoch, the client's clock.
    pub time: i64,
    /// "tag=value" strings.
    pub misc: Vec<String>,
}

/// What an update is on a computer (MS-WSUSSS SummarizationState).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    NotApplicable = 0,
    /// Needed: applicable, not installed.
    NotInstalled = 2,
    Downloaded = 3,
    Installed = 4,
    Failed = 5,
    InstalledPendingReboot = 6,
}

impl UpdateState {
    pub const ALL: [UpdateState; 6] = [
        UpdateState::NotApplicable,
        UpdateState::NotInstalled,
        UpdateState::Downloaded,
        UpdateState::Installed,
        UpdateState::Failed,
        UpdateState::InstalledPendingReboot,
    ];

    /// The protocol's number.
    pub fn code(self) -> i32 {
        self as i32
    }

    pub fn from_code(code: i32) -> Option<UpdateState> {
        UpdateState::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The name the admin API uses.
    pub fn name(self) -> &'static str {
        match self {
            UpdateState::NotApplicable => "not_applicable",
            UpdateState::NotInstalled => "needed",
            UpdateState::Downloaded => "downloaded",
            UpdateState::Installed => "installed",
            UpdateState::Failed => "failed",
            UpdateState::InstalledPendingReboot => "installed_pending_reboot",
        }
    }

    pub fn from_name(name: &str) -> Option<UpdateState> {
        UpdateState::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Still to be done on the computer: needed, downloaded, failed or waiting for a restart.
    pub fn is_outstanding(self) -> bool {
        !matches!(self, UpdateState::NotApplicable | UpdateState::Installed)
    }

    /// Every state, what an administrator must act on first: needed, downloaded, failed,
    /// waiting for a restart, installed, not applicable.
    pub fn by_urgency() -> [UpdateState; 6] {
        [
            UpdateState::NotInstalled,
            UpdateState::Downloaded,
            UpdateState::Failed,
            UpdateState::InstalledPendingReboot,
            UpdateState::Installed,
            UpdateState::NotApplicable,
        ]
    }

    /// Count `n` computers in this state into `counts`.
    pub fn count_into(self, counts: &mut StateCounts, n: u64) {
        let field = match self {
            UpdateState::NotApplicable => &mut counts.not_applicable,
            UpdateState::NotInstalled => &mut counts.needed,
            UpdateState::Downloaded => &mut counts.downloaded,
            UpdateState::Installed => &mut counts.installed,
            UpdateState::Failed => &mut counts.failed,
            UpdateState::InstalledPendingReboot => &mut counts.installed_pending_reboot,
        };
        *field += n;
    }
}

/// Per update, how many computers have it in each state, from (update, state, computers)
/// rows.
pub fn counts_by_update(
    rows: impl IntoIterator<Item = (Guid, UpdateState, u64)>,
) -> std::collections::HashMap<Guid, StateCounts> {
    let mut out: std::collections::HashMap<Guid, StateCounts> = std::collections::HashMap::new();
    for (update, state, n) in rows {
        state.count_into(out.entry(update).or_default(), n);
    }
    out
}

/// A computer that reported one update, and the update's state on it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UpdateComputer {
    pub client_id: String,
    /// Empty when the computer's registration is not known here.
    pub dns_name: String,
    /// The downstream server it reports to; none: this one.
    pub parent_server: Option<String>,
    pub state: UpdateState,
    /// When the state last changed (seconds since the epoch, the client's clock).
    pub changed_at: i64,
}

/// Whose computers a list holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ServerChoice {
    /// Every computer of the hierarchy.
    #[default]
    Any,
    /// This node's own.
    Local,
    /// Those of a server below, by its id.
    Below(String),
}

/// Which computers a page of them holds, in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputerQuery {
    pub server: ServerChoice,
    /// One computer, by id (any case).
    pub client_id: Option<String>,
    pub filter: ComputerFilter,
    /// Text the name (or the id) contains, any case.
    pub name: Option<String>,
    pub offset: usize,
    pub limit: usize,
}

impl Default for ComputerQuery {
    fn default() -> ComputerQuery {
        ComputerQuery {
            server: ServerChoice::Any,
            client_id: None,
            filter: ComputerFilter::All,
            name: None,
            offset: 0,
            limit: 100,
        }
    }
}

/// The events of an install that succeeded (with or without a restart to come), and of one
/// that failed (MS-WUSP §2.2.2.3.1): what client activity summaries count.
pub const INSTALL_SUCCEEDED: [i32; 2] = [183, 184];
pub const INSTALL_FAILED: [i32; 5] = [182, 187, 200, 203, 204];

/// What an event says of the state of updates on its computer (MS-WUSP §2.2.2.3.1): a status
/// event (156) lists updates by state in its MiscData tags; download and install events name
/// one update. Other events say nothing of it.
pub fn states_of(event: &Event) -> Vec<(Guid, UpdateState)> {
    if event.event_id == 156 {
        let mut out = Vec::new();
        for item in &event.misc {
            let Some((tag, list)) = item.split_once('=') else {
                continue;
            };
            let state = match tag {
                "U" => UpdateState::NotInstalled,
                "V" => UpdateState::Installed,
                "W" => UpdateState::InstalledPendingReboot,
                "g" => UpdateState::Failed,
                "h" => UpdateState::Downloaded,
                _ => continue,
            };
            out.extend(
                list.split(';')
                    .filter_map(Guid::parse)
                    .map(|id| (id, state)),
            );
        }
        return out;
    }
    let state = match event.event_id {
        162 | 164 => UpdateState::Downloaded,
        183 => UpdateState::Installed,
        184 => UpdateState::InstalledPendingReboot,
        // A failed download, or a failed install.
        161 => UpdateState::Failed,
        id if INSTALL_FAILED.contains(&id) => UpdateState::Failed,
        _ => return Vec::new(),
    };
    event
        .update
        .map(|(id, _)| vec![(id, state)])
        .unwrap_or_default()
}

/// A computer with its last contacts and how many of its updates are in each state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ComputerStatus {
    pub client_id: String,
    pub dns_name: String,
    pub os_version: String,
    pub manufacturer: String,
    pub model: String,
    /// Seconds since the epoch.
    pub registered_at: i64,
    pub last_sync: Option<i64>,
    pub last_status: Option<i64>,
    /// The downstream server it reports to; none: this one.
    pub parent_server: Option<String>,
    /// Updates per state (by [`UpdateState::name`]).
    pub updates: std::collections::BTreeMap<&'static str, u64>,
}

impl ComputerStatus {
    /// No update still to be done.
    pub fn up_to_date(&self) -> bool {
        UpdateState::ALL
            .iter()
            .filter(|s| s.is_outstanding())
            .all(|s| self.updates.get(s.name()).copied().unwrap_or(0) == 0)
    }
}

/// Which computers a list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComputerFilter {
    All,
    /// With at least one update in this state.
    With(UpdateState),
    /// Nothing outstanding.
    UpToDate,
}

impl ComputerFilter {
    /// `state=` of the admin API: a state name, `up_to_date`, or nothing.
    pub fn parse(text: Option<&str>) -> Option<ComputerFilter> {
        match text {
            None | Some("") | Some("all") => Some(ComputerFilter::All),
            Some("up_to_date") => Some(ComputerFilter::UpToDate),
            Some(name) => UpdateState::from_name(name).map(ComputerFilter::With),
        }
    }
}
