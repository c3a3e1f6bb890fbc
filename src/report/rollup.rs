//! What downstream servers roll up (MS-WSUSSS §3.1.4.13–17): the servers below, their
//! summaries by operating system, the computers and update states they pass on. Kept by
//! `state` in the same tables as this node's own computers.

use super::{Computer, UpdateState};
use crate::catalog::Guid;

/// A server below this one, as RollupDownstreamServers describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledServer {
    pub id: Guid,
    pub name: String,
    /// The server it syncs from.
    pub parent: Guid,
    pub is_replica: bool,
    pub version: String,
    /// Seconds since the epoch.
    pub last_sync: Option<i64>,
    /// When it rolled this up (seconds since the epoch, this server's clock); none: never.
    pub last_rollup: Option<i64>,
    /// Its LastRollupTime as sent (the sender's clock): what its client summaries are applied
    /// once by.
    pub sent_at: i64,
    pub summary: ServerSummary,
    /// Its computers by operating system, with the installs since its last summary.
    pub clients: Vec<ClientSummary>,
}

/// The operating system a group of computers runs, as client summaries tell it apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct OsGroup {
    /// Major, minor, build, service pack major, service pack minor.
    pub version: [i64; 5],
    pub locale: String,
    pub processor: String,
}

impl OsGroup {
    /// Of a computer as it registered (`os_version` "10.0.26200.0": what is missing is 0).
    pub fn of(os_version: &str, locale: &str, processor: &str) -> OsGroup {
        let mut parts = os_version.split('.').map(|p| p.trim().parse().unwrap_or(0));
        OsGroup {
            version: std::array::from_fn(|_| parts.next().unwrap_or(0)),
            locale: locale.to_owned(),
            processor: processor.to_owned(),
        }
    }

    /// How state.db keys it: "10.0.26200.0.0|en-US|x64".
    pub fn key(&self) -> String {
        let v = self.version.map(|n| n.to_string()).join(".");
        format!("{v}|{}|{}", self.locale, self.processor)
    }

    pub fn from_key(key: &str) -> OsGroup {
        let mut parts = key.splitn(3, '|');
        let mut next = || parts.next().unwrap_or("");
        let (version, locale, processor) = (next(), next(), next());
        OsGroup::of(version, locale, processor)
    }
}

/// DownstreamServerRollupClientSummary: the computers of one operating system that report to
/// a server, and what they installed since the server's last summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSummary {
    pub os: OsGroup,
    pub count: i64,
    pub activity: Vec<Activity>,
}

impl ClientSummary {
    /// Count `more` installs in (with those of the same update revision, if any).
    pub fn add(&mut self, more: Activity) {
        match self
            .activity
            .iter_mut()
            .find(|a| a.update == more.update && a.revision == more.revision)
        {
            Some(a) => {
                a.succeeded += more.succeeded;
                a.failed += more.failed;
            }
            None => self.activity.push(more),
        }
    }
}

/// Installs of one update revision by a group of computers (each attempt counts, not each
/// computer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    pub update: Guid,
    pub revision: u32,
    pub succeeded: i64,
    pub failed: i64,
}

/// A server's computers of one operating system with all their installs, as the admin API
/// shows them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientGroupTotals {
    pub os: OsGroup,
    pub computers: i64,
    pub installs_succeeded: i64,
    pub installs_failed: i64,
}

/// Defines [`ServerSummary`]: each field with the name the protocol gives it and the label the
/// status pages show, once.
macro_rules! server_summary {
    ($($(#[$doc:meta])* $field:ident = $name:literal / $label:literal,)*) => {
        /// DownstreamServerRollupServerSummary (MS-WSUSSS §3.1.4.14.3.3): what a server rolls
        /// up of its updates and computers. Counts, never negative.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct ServerSummary {
            $($(#[$doc])* pub $field: i64,)*
        }

        impl ServerSummary {
            /// (protocol name, count), in the protocol's order.
            pub fn counts(&self) -> Vec<(&'static str, i64)> {
                vec![$(($name, self.$field)),*]
            }

            /// (what a person reads, count), in the protocol's order.
            pub fn labelled(&self) -> Vec<(&'static str, i64)> {
                vec![$(($label, self.$field)),*]
            }

            /// Built from counts by protocol name (a missing count is 0).
            pub fn from_counts(mut count: impl FnMut(&str) -> Option<i64>) -> ServerSummary {
                ServerSummary {
                    $($field: count($name).unwrap_or(0).max(0),)*
                }
            }
        }
    };
}

server_summary! {
    updates = "UpdateCount" / "Updates",
    declined = "DeclinedUpdateCount" / "Declined updates",
    approved = "ApprovedUpdateCount" / "Approved updates",
    not_approved = "NotApprovedUpdateCount" / "Updates not approved",
    stale_approvals = "UpdatesWithStaleUpdateApprovalsCount" / "Updates approved in an older revision",
    expired = "ExpiredUpdateCount" / "Expired updates",
    critical_not_approved = "CriticalOrSecurityUpdatesNotApprovedForInstallCount" / "Critical or security updates not approved for install",
    infrastructure_not_approved = "WsusInfrastructureUpdatesNotApprovedForInstallCount" / "Mandatory updates not approved for install",
    updates_with_client_errors = "UpdatesWithClientErrorsCount" / "Updates that failed on a computer",
    updates_with_server_errors = "UpdatesWithServerErrorsCount" / "Updates whose files failed to download",
    updates_needing_files = "UpdatesNeedingFilesCount" / "Updates whose files are still to come",
    updates_needed = "UpdatesNeededByComputersCount" / "Updates needed by computers",
    updates_up_to_date = "UpdatesUpToDateCount" / "Updates installed wherever needed",
    custom_groups = "CustomComputerTargetGroupCount" / "Computer groups",
    computers = "ComputerTargetCount" / "Computers",
    /// Computers with an update still to be done.
    computers_needing = "ComputerTargetsNeedingUpdatesCount" / "Computers needing updates",
    computers_with_errors = "ComputerTargetsWithUpdateErrorsCount" / "Computers with errors",
    computers_up_to_date = "ComputersUpToDateCount" / "Computers up to date",
}

impl ServerSummary {
    /// As kept in state.db and shown by the admin API: an object by protocol name.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.counts()
                .into_iter()
                .map(|(name, n)| (name.to_owned(), n.into()))
                .collect(),
        )
    }

    pub fn from_json(value: &serde_json::Value) -> ServerSummary {
        ServerSummary::from_counts(|name| value.get(name).and_then(serde_json::Value::as_i64))
    }
}

impl serde::Serialize for ServerSummary {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

/// What this server's own computers say of their updates: the computer half of its
/// [`ServerSummary`] (MS-WSUSSS §3.2.4.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ComputerCounts {
    pub computers: i64,
    /// With an update still to be done ([`UpdateState::is_outstanding`]).
    pub needing: i64,
    /// With an update that failed.
    pub with_errors: i64,
    /// Updates that failed on a computer.
    pub updates_with_errors: i64,
    /// Updates still to be done on a computer.
    pub updates_needed: i64,
    /// Updates applicable to a computer and done on every computer they apply to.
    pub updates_up_to_date: i64,
}

/// A computer as RollupComputers describes it; `details` only when it is new to this server
/// or moved to another parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledComputer {
    pub id: String,
    pub parent: Guid,
    pub last_sync: Option<i64>,
    pub last_status: Option<i64>,
    pub details: Option<Computer>,
}

/// A computer's update states as RollupComputerStatus sends them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolledStatus {
    pub id: String,
    /// The downstream's counter of what it sent for this computer.
    pub rollup_number: i64,
    /// Every state of the computer (what is not listed is gone), not only changes.
    pub full: bool,
    pub detection: Option<i64>,
    pub updates: Vec<(Guid, UpdateState, i64)>,
}

/// A kept summary (none, or unreadable: all zeros, as before the first rollup).
pub fn summary_of(kept: Option<&str>) -> ServerSummary {
    kept.and_then(|text| serde_json::from_str(text).ok())
        .map(|v| ServerSummary::from_json(&v))
        .unwrap_or_default()
}
