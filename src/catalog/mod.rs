//! The update catalog of a node: revisions (updates, categories, detectoids) with the fragments
//! clients are given, target groups and deployments (approvals). Sans-IO: `state` keeps it in
//! `data_dir/state.db`.
//!
//! Owns: the update model ([`update`]: one document read and its fragments derived), this
//! node's stable revision ids, the prerequisite and bundle graph, which revisions a computer's
//! groups may see and with which action ([`scope`]), what an administrator finds to approve
//! ([`listing`]), which updates automatic rules approve ([`rules`]). May call: `soap` (the XML
//! tree), `error`, `config`. Knows no socket and no HTTP. Its tests take their catalogs from
//! `testkit::generate`.

pub mod driver;
pub mod keys;
pub mod listing;
pub mod replica;
pub mod rules;
pub mod scope;
pub mod summary;
pub mod update;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

pub use crate::soap::xsd::{Guid, base64_decode, base64_encode};
pub use summary::{FileState, UpdateCounts};
pub use update::{Clause, Fragments, Parsed};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdateType {
    Software,
    Driver,
    Category,
    Detectoid,
}

impl UpdateType {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateType::Software => "Software",
            UpdateType::Driver => "Driver",
            UpdateType::Category => "Category",
            UpdateType::Detectoid => "Detectoid",
        }
    }

    pub fn parse(s: &str) -> Option<UpdateType> {
        Some(match s {
            "Software" => UpdateType::Software,
            "Driver" => UpdateType::Driver,
            "Category" => UpdateType::Category,
            "Detectoid" => UpdateType::Detectoid,
            _ => return None,
        })
    }
}

/// A payload file of an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub sha1: [u8; 20],
    pub sha256: Option<[u8; 32]>,
    pub name: String,
    pub size: u64,
    /// Encrypted (`File/@IsEncrypted`, feature updates): a client installs it only with the
    /// key GetExtendedUpdateInfo2 gives.
    pub encrypted: bool,
}

impl FileRef {
    /// The extension WSUS gives the content file (from FileName), lower case; "" when none.
    pub fn extension(&self) -> String {
        self.name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .filter(|e| {
                !e.is_empty() && e.len() <= 16 && e.chars().all(|c| c.is_ascii_alphanumeric())
            })
            .unwrap_or_default()
    }
}

/// What a deployment asks of a computer (MS-WUSP DeploymentAction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Install,
    OptionalInstall,
    Uninstall,
    Block,
    /// Delivered for evaluation only (a prerequisite, category or detectoid).
    Evaluate,
    /// Delivered because an offered update bundles it.
    Bundle,
    PreDeploymentCheck,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Install => "Install",
            Action::OptionalInstall => "OptionalInstall",
            Action::Uninstall => "Uninstall",
            Action::Block => "Block",
            Action::Evaluate => "Evaluate",
            Action::Bundle => "Bundle",
            Action::PreDeploymentCheck => "PreDeploymentCheck",
        }
    }

    /// The actions an administrator approves with.
    pub fn parse_approval(s: &str) -> Option<Action> {
        Some(match s.to_ascii_lowercase().as_str() {
            "install" => Action::Install,
            "optional" | "optionalinstall" => Action::OptionalInstall,
            "uninstall" => Action::Uninstall,
            "block" => Action::Block,
            _ => return None,
        })
    }

    /// The name [`Action::as_str`] gives, of any action (state.db keeps them so).
    pub fn parse_stored(s: &str) -> Option<Action> {
        [
            Action::Install,
            Action::OptionalInstall,
            Action::Uninstall,
            Action::Block,
            Action::Evaluate,
            Action::Bundle,
            Action::PreDeploymentCheck,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }

    /// Offered to the client for action (as opposed to evaluation only).
    pub fn is_offered(self) -> bool {
        matches!(
            self,
            Action::Install | Action::OptionalInstall | Action::Uninstall
        )
    }
}

/// What an administrator decides for updates and a group (the WSUS approval choices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve(Action),
    /// Take back an approval ("Not approved").
    NotApproved,
}

impl Decision {
    pub fn parse(s: &str) -> Option<Decision> {
        match s.to_ascii_lowercase().as_str() {
            "notapproved" | "not-approved" | "none" => Some(Decision::NotApproved),
            other => Action::parse_approval(other).map(Decision::Approve),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve(a) => a.as_str(),
            Decision::NotApproved => "NotApproved",
        }
    }

    /// The choices, for error messages.
    pub const CHOICES: &str = "install, optional, uninstall, block or notapproved";
}

/// The built-in target groups (MS-WSUSSS example 14).
pub const ALL_COMPUTERS: Guid = Guid(0xa0a08746_4dbe_4a37_9adf_9e7652c0b421);
pub const UNASSIGNED_COMPUTERS: Guid = Guid(0xb73ca6ed_5727_47f3_84de_015e03f6a88a);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: Guid,
    pub name: String,
    /// None for All Computers.
    pub parent: Option<Guid>,
    pub builtin: bool,
}

/// An approval of one revision for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: u32,
    /// Its identity between servers (MS-WSUSSS DeploymentGuid).
    pub guid: Guid,
    pub revision: u32,
    pub group: Guid,
    pub action: Action,
    /// Seconds since the epoch.
    pub deadline: Option<i64>,
    /// Seconds since the epoch.
    pub last_change: i64,
    /// 1 (low) ..= 3 (high); 2 normal.
    pub download_priority: u8,
    /// Seconds since the epoch: not offered to clients before (MS-WSUSSS GoLiveTime).
    pub go_live: i64,
}

/// A revision as the server serves it.
#[derive(Debug, Clone)]
pub struct Revision {
    /// This server's own revision id: stable for (update_id, revision_number).
    pub id: u32,
    pub update_id: Guid,
    pub revision_number: u32,
    pub update_type: UpdateType,
    pub category_type: Option<String>,
    pub explicitly_deployable: bool,
    pub prerequisites: Vec<Clause>,
    /// Local ids of the revisions it bundles (every AtLeastOne group, flattened).
    pub bundled: Vec<u32>,
    pub files: Vec<FileRef>,
    /// A driver update's metadata, one per hardware id; empty for other updates.
    pub drivers: Vec<driver::DriverMeta>,
    pub titles: Vec<(String, String)>,
    /// The Knowledge Base article (`Properties/KBArticleID`, digits as Microsoft writes them,
    /// without "KB"); none when the document names none.
    pub kb: Option<String>,
    /// The updates this revision replaces (`Relationships/SupersededUpdates`).
    pub superseded: Vec<Guid>,
    /// No other revision names this one's update id as a prerequisite.
    pub is_leaf: bool,
    pub fragments: Arc<Fragments<crate::soap::Escaped>>,
    /// The catalog version (`meta.catalog_version`) of the import that last changed this
    /// revision's document: what the server-server revision list is cut by.
    pub change_seq: i64,
}

impl Revision {
    /// The English title, else the first.
    pub fn title(&self) -> &str {
        self.titles
            .iter()
            .find(|(l, _)| l == "en")
            .or(self.titles.first())
            .map_or("", |(_, t)| t.as_str())
    }
}

/// Why a catalog operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogError {
    /// An update document that cannot be used.
    Document(String),
    /// A name or id that does not exist.
    Unknown(String),
    /// An administrator's request that cannot be carried out as given (a bad name).
    Invalid(String),
    /// A name that is taken.
    Exists(String),
    /// The database said no.
    Store(String),
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatalogError::Document(m) => write!(f, "update document: {m}"),
            CatalogError::Unknown(m) => write!(f, "unknown {m}"),
            CatalogError::Invalid(m) => f.write_str(m),
            CatalogError::Exists(m) => write!(f, "{m} exists already"),
            CatalogError::Store(m) => write!(f, "state.db: {m}"),
        }
    }
}

impl std::error::Error for CatalogError {}

/// The side that failed: an administrator's name or request (client), a document as an upstream
/// or an import gave it (upstream), or the database (this node; a retry may pass, as a busy
/// database frees up).
impl From<CatalogError> for crate::error::Error {
    fn from(e: CatalogError) -> crate::error::Error {
        use crate::error::{Error, Kind};
        let message = e.to_string();
        match e {
            CatalogError::Unknown(_) => Error::client(Kind::NotFound, message),
            CatalogError::Invalid(_) | CatalogError::Exists(_) => {
                Error::client(Kind::BadRequest, message)
            }
            CatalogError::Document(_) => Error::upstream(Kind::BadUpstream, message),
            CatalogError::Store(_) => Error::internal(Kind::Io, message),
        }
    }
}

/// An immutable view of the whole catalog: what every request of one moment sees. A change
/// (import, approval, sync) builds a new one and swaps it in whole.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Sorted by id.
    revisions: Vec<Revision>,
    /// The position of each revision id in `revisions` (`u32::MAX`: none) when ids are dense,
    /// as state.db assigns them; otherwise empty, and lookups search `revisions`.
    by_id: Vec<u32>,
    /// The highest revision of each update id.
    latest: HashMap<Guid, usize>,
    by_identity: HashMap<(Guid, u32), usize>,
    files: HashMap<[u8; 20], FileRef>,
    /// Keys of encrypted files, by file SHA-1.
    keys: keys::Keys,
    /// Declined updates: never sent to a client, not even for evaluation.
    declined: std::collections::HashSet<Guid>,
    /// When each revision last lost a deployment (seconds since the epoch): the change time
    /// of the PreDeploymentCheck it is sent with from then on, so that a client that held the
    /// approval hears of its end.
    unapproved_at: HashMap<u32, i64>,
    drivers: driver::DriverIndex,
    pub groups: Vec<Group>,
    pub deployments: Vec<Deployment>,
    /// Every deployment's go-live time, sorted, each once: where what clients are offered
    /// changes with the clock alone.
    go_lives: Vec<i64>,
    /// When the configuration clients see last changed (seconds since the epoch); GetConfig's
    /// LastChange.
    pub config_last_change: i64,
    /// `meta.catalog_version` this catalog was read at (0 when not read from a store).
    pub version: i64,
}

impl Catalog {
    /// Build from revisions (any order) with `is_leaf` computed here, groups and deployments.
    pub fn new(
        mut revisions: Vec<Revision>,
        groups: Vec<Group>,
        deployments: Vec<Deployment>,
        config_last_change: i64,
    ) -> Catalog {
        revisions.sort_by_key(|r| r.id);
        let named: std::collections::HashSet<Guid> = revisions
            .iter()
            .flat_map(|r| r.prerequisites.iter().flat_map(|c| c.ids.iter().copied()))
            .collect();
        for r in &mut revisions {
            r.is_leaf = !named.contains(&r.update_id);
        }
        let limit = revisions.last().map_or(0, |r| r.id as usize + 1);
        let mut by_id = if limit <= 4 * revisions.len() + 1024 {
            vec![u32::MAX; limit]
        } else {
            Vec::new()
        };
        let mut latest: HashMap<Guid, usize> = HashMap::with_capacity(revisions.len());
        let mut by_identity = HashMap::with_capacity(revisions.len());
        let mut files = HashMap::new();
        for (i, r) in revisions.iter().enumerate() {
            if let Some(slot) = by_id.get_mut(r.id as usize) {
                *slot = i as u32;
            }
            by_identity.insert((r.update_id, r.revision_number), i);
            latest
                .entry(r.update_id)
                .and_modify(|j| {
                    if revisions[*j].revision_number < r.revision_number {
                        *j = i;
                    }
                })
                .or_insert(i);
            for f in &r.files {
                files.entry(f.sha1).or_insert_with(|| f.clone());
            }
        }
        let mut go_lives: Vec<i64> = deployments.iter().map(|d| d.go_live).collect();
        go_lives.sort_unstable();
        go_lives.dedup();
        let drivers = driver::DriverIndex::new(
            revisions
                .iter()
                .filter(|r| !r.drivers.is_empty())
                .map(|r| (r.id, &r.drivers[..])),
        );
        Catalog {
            revisions,
            by_id,
            latest,
            by_identity,
            files,
            keys: keys::Keys::new(),
            declined: Default::default(),
            unapproved_at: HashMap::new(),
            drivers,
            groups,
            go_lives,
            deployments,
            config_last_change,
            version: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.revisions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.revisions.is_empty()
    }

    pub fn revisions(&self) -> &[Revision] {
        &self.revisions
    }

    pub fn revision(&self, id: u32) -> Option<&Revision> {
        if self.by_id.is_empty() {
            let i = self.revisions.binary_search_by_key(&id, |r| r.id).ok()?;
            return self.revisions.get(i);
        }
        match self.by_id.get(id as usize) {
            Some(&i) if i != u32::MAX => self.revisions.get(i as usize),
            _ => None,
        }
    }

    /// When revision ids are dense (as state.db assigns them): one more than the highest, so
    /// a set of ids fits a bitset of this many bits. `None` when they are too sparse for that.
    pub fn dense_id_limit(&self) -> Option<usize> {
        (!self.by_id.is_empty()).then_some(self.by_id.len())
    }

    /// The highest revision of an update.
    pub fn latest(&self, update_id: Guid) -> Option<&Revision> {
        self.latest.get(&update_id).map(|&i| &self.revisions[i])
    }

    /// A dense number for an update, shared by all its revisions and below [`Catalog::len`]:
    /// the position of its highest revision.
    pub fn update_ordinal(&self, update_id: Guid) -> Option<u32> {
        self.latest.get(&update_id).map(|&i| i as u32)
    }

    pub fn by_identity(&self, update_id: Guid, revision_number: u32) -> Option<&Revision> {
        self.by_identity
            .get(&(update_id, revision_number))
            .map(|&i| &self.revisions[i])
    }

    /// A payload file by its SHA-1, if some revision names it.
    pub fn file(&self, sha1: &[u8; 20]) -> Option<&FileRef> {
        self.files.get(sha1)
    }

    /// Driver metadata by hardware id.
    pub fn driver_index(&self) -> &driver::DriverIndex {
        &self.drivers
    }

    /// The same catalog, with the keys of encrypted files.
    pub fn with_keys(mut self, keys: keys::Keys) -> Catalog {
        self.keys = keys;
        self
    }

    /// The same catalog, knowing which updates are declined and when each revision last lost
    /// a deployment (seconds since the epoch).
    pub fn with_declines(
        mut self,
        declined: std::collections::HashSet<Guid>,
        unapproved_at: HashMap<u32, i64>,
    ) -> Catalog {
        self.declined = declined;
        self.unapproved_at = unapproved_at;
        self
    }

    /// Whether `update_id` is declined.
    pub fn is_declined(&self, update_id: Guid) -> bool {
        self.declined.contains(&update_id)
    }

    /// When `revision` last lost a deployment (seconds since the epoch); 0: never.
    pub fn unapproved_at(&self, revision: u32) -> i64 {
        self.unapproved_at.get(&revision).copied().unwrap_or(0)
    }

    /// The decryption key of a payload file, when this node holds one.
    pub fn key(&self, sha1: &[u8; 20]) -> Option<&[u8]> {
        self.keys.get(sha1).map(|k| &k[..])
    }

    /// The revisions an approval of `updates` takes: the latest revision of each named update,
    /// or (None) of every explicitly deployable software update.
    pub fn approvable(&self, updates: Option<&[Guid]>) -> Result<Vec<u32>, CatalogError> {
        match updates {
            None => Ok(self
                .revisions
                .iter()
                .filter(|r| r.update_type == UpdateType::Software && r.explicitly_deployable)
                .filter(|r| self.latest(r.update_id).is_some_and(|l| l.id == r.id))
                .map(|r| r.id)
                .collect()),
            Some(ids) => ids
                .iter()
                .map(|id| {
                    self.latest(*id)
                        .map(|r| r.id)
                        .ok_or_else(|| CatalogError::Unknown(format!("update {id}")))
                })
                .collect(),
        }
    }

    /// Every revision of each of `updates` (None: of every update).
    pub fn revisions_of_updates(&self, updates: Option<&[Guid]>) -> Result<Vec<u32>, CatalogError> {
        let Some(ids) = updates else {
            return Ok(self.revisions.iter().map(|r| r.id).collect());
        };
        if let Some(unknown) = ids.iter().find(|id| self.latest(**id).is_none()) {
            return Err(CatalogError::Unknown(format!("update {unknown}")));
        }
        Ok(self
            .revisions
            .iter()
            .filter(|r| ids.contains(&r.update_id))
            .map(|r| r.id)
            .collect())
    }

    /// How many go-live times have passed at `now`: what clients are offered is the same for
    /// every `now` of one epoch.
    pub fn live_epoch(&self, now: i64) -> usize {
        self.go_lives.partition_point(|t| *t <= now)
    }

    pub fn group_by_name(&self, name: &str) -> Option<&Group> {
        self.groups
            .iter()
            .find(|g| g.name.eq_ignore_ascii_case(name.trim()))
    }

    pub fn group(&self, id: Guid) -> Option<&Group> {
        self.groups.iter().find(|g| g.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_parse_and_print() {
        let g = Guid::parse("{A0A08746-4DBE-4A37-9ADF-9E7652C0B421}").unwrap();
        assert_eq!(g, ALL_COMPUTERS);
        assert_eq!(g.to_string(), "a0a08746-4dbe-4a37-9adf-9e7652c0b421");
        assert_eq!(Guid::parse("a0a08746-4dbe-4a37-9adf-9e7652c0b42"), None);
        assert_eq!(Guid::parse("a0a08746x4dbe-4a37-9adf-9e7652c0b421"), None);
        assert_eq!(Guid::parse("g0a08746-4dbe-4a37-9adf-9e7652c0b421"), None);
        let r = Guid::random();
        assert_eq!(Guid::parse(&r.to_string()), Some(r));
        assert_eq!(r.to_string().as_bytes()[14], b'4');
    }
}
