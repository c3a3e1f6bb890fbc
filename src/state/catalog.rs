//! The catalog in `state.db`. Revisions keep the
//! document as imported and what was derived from it (so loading reads, never re-parses),
//! under ids that never change for a given (UpdateID, RevisionNumber); target groups;
//! deployments. Blocking: call it off the async workers.
//!
//! Other processes (`wsus-edge approve`, `import`) write to the same file while a node runs;
//! the node notices through [`Store::data_version`] and loads a new [`Catalog`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::sql::{Connection, OptionalExtension, ToArg, params};
use serde::{Deserialize, Serialize};

use super::{Database, Meta, Schema, db};
use crate::catalog::driver::DriverMeta;
use crate::catalog::keys::{FileKey, KeysWanted, needing_keys};
use crate::catalog::replica::{Anchors, Applied, DeploymentSet, ServerDeployment};
use crate::catalog::{
    ALL_COMPUTERS, Action, Catalog, CatalogError, Clause, Decision, Deployment, FileRef, Fragments,
    Group, Guid, Parsed, Revision, UNASSIGNED_COMPUTERS, UpdateType, update,
};
use crate::clock::unix_now;
use crate::config::Replication;

const SCHEMA: Schema = Schema {
    tables: TABLES,
    added: &ADDED_COLUMNS,
};

const TABLES: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    update_id TEXT NOT NULL,
    revision_number INTEGER NOT NULL,
    update_type TEXT NOT NULL,
    category_type TEXT,
    explicitly_deployable INTEGER NOT NULL,
    relations TEXT NOT NULL,
    core TEXT NOT NULL,
    extended TEXT NOT NULL,
    xml TEXT NOT NULL,
    change_seq INTEGER NOT NULL DEFAULT 0,
    UNIQUE (update_id, revision_number)
);
CREATE TABLE IF NOT EXISTS fragments (
    revision_id INTEGER NOT NULL REFERENCES revisions(id),
    kind TEXT NOT NULL,
    lang TEXT NOT NULL,
    geo TEXT NOT NULL,
    fragment TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS fragments_by_revision ON fragments (revision_id);
CREATE TABLE IF NOT EXISTS groups (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    parent TEXT,
    builtin INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    revision_id INTEGER NOT NULL REFERENCES revisions(id),
    group_id TEXT NOT NULL REFERENCES groups(id),
    action TEXT NOT NULL,
    deadline INTEGER,
    last_change INTEGER NOT NULL,
    download_priority INTEGER NOT NULL,
    guid TEXT,
    admin_name TEXT NOT NULL DEFAULT '',
    go_live INTEGER NOT NULL DEFAULT 0,
    change_seq INTEGER NOT NULL DEFAULT 0,
    UNIQUE (revision_id, group_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS deployments_by_guid ON deployments (guid);
-- The latest approval and the latest end of one: what the next change is stamped after.
CREATE INDEX IF NOT EXISTS deployments_by_change ON deployments (last_change);
CREATE INDEX IF NOT EXISTS dead_deployments_by_time ON dead_deployments (buried_at);
CREATE TABLE IF NOT EXISTS dead_deployments (
    guid TEXT PRIMARY KEY,
    change_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hidden_updates (update_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS accepted_eulas (eula_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS decryption_keys (
    sha1 TEXT PRIMARY KEY,
    key BLOB NOT NULL
);
-- Automatic approval rules (state/rules.rs): classification and product category ids (JSON
-- lists, empty: any), the group, the action, the deadline in days; the catalog version up to
-- which each was applied, and how many approvals it made.
CREATE TABLE IF NOT EXISTS approval_rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    classifications TEXT NOT NULL,
    products TEXT NOT NULL,
    group_id TEXT NOT NULL,
    action TEXT NOT NULL,
    deadline_days INTEGER,
    enabled INTEGER NOT NULL,
    applied_seq INTEGER NOT NULL,
    approved INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sync_staged (
    update_id TEXT NOT NULL,
    revision_number INTEGER NOT NULL,
    xml TEXT NOT NULL,
    PRIMARY KEY (update_id, revision_number)
);
";

/// Columns added since the first state.db files: (table, column, declaration).
const ADDED_COLUMNS: [(&str, &str, &str); 8] = [
    ("revisions", "change_seq", "INTEGER NOT NULL DEFAULT 0"),
    // 1: the revision has encrypted files, or says their keys come by GetUpdateDecryptionData.
    ("revisions", "needs_keys", "INTEGER NOT NULL DEFAULT 0"),
    ("deployments", "guid", "TEXT"),
    ("deployments", "admin_name", "TEXT NOT NULL DEFAULT ''"),
    ("deployments", "go_live", "INTEGER NOT NULL DEFAULT 0"),
    ("deployments", "change_seq", "INTEGER NOT NULL DEFAULT 0"),
    // The revision a dead deployment was of, and when it ended (seconds since the epoch).
    ("dead_deployments", "revision_id", "INTEGER"),
    ("dead_deployments", "buried_at", "INTEGER"),
];

/// The catalog's key-value table: this server's id, the catalog version, sync anchors.
const META: Meta = Meta("meta");

/// Who approved, for approvals made on this server (passed down to downstream servers).
const LOCAL_ADMIN: &str = "wsus-edge";

/// Part of every transaction that changes what [`Store::load`] reads; the new version, which
/// the revisions that transaction writes keep as their `change_seq`.
fn bump_catalog_version(conn: &Connection) -> Result<i64, CatalogError> {
    conn.query_row(
        "INSERT INTO meta (key, value) VALUES ('catalog_version', '1')
         ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(meta.value AS BIGINT) + 1 AS TEXT)
         RETURNING CAST(meta.value AS BIGINT)",
        [],
        |r| r.get(0),
    )
    .map_err(db)
}

/// What a revision's row keeps of its relationships, files and titles.
#[derive(Serialize, Deserialize)]
struct Relations {
    prerequisites: Vec<StoredClause>,
    bundled: Vec<Vec<(String, u32)>>,
    superseded: Vec<String>,
    files: Vec<StoredFile>,
    /// A driver update's metadata; absent for others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    drivers: Vec<DriverMeta>,
    titles: Vec<(String, String)>,
}

#[derive(Serialize, Deserialize)]
struct StoredClause {
    ids: Vec<String>,
    category: bool,
}

#[derive(Serialize, Deserialize)]
struct StoredFile {
    sha1: String,
    sha256: Option<String>,
    name: String,
    size: u64,
    /// Absent in rows written before it was kept, and when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    encrypted: bool,
}

pub struct Store {
    pub(super) conn: Connection,
}

impl Store {
    /// Open the catalog of `database` (SQLite: creating its file), with the built-in groups
    /// and this server's id.
    pub fn open(database: &Database) -> Result<Store, CatalogError> {
        let conn = database.connect()?;
        SCHEMA.apply(&conn)?;
        // The rules it applies write to the journal's audit log.
        super::journal::SCHEMA.apply(&conn)?;
        // Deployments from before GUIDs: each gets one, as the protocol names them by it.
        let unnamed: Vec<i64> = conn
            .prepare("SELECT id FROM deployments WHERE guid IS NULL")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(db)?;
        for id in unnamed {
            conn.execute(
                "UPDATE deployments SET guid = ?2 WHERE id = ?1",
                params![id, Guid::random().to_string()],
            )
            .map_err(db)?;
        }
        let store = Store { conn };
        for (id, name, parent) in [
            (ALL_COMPUTERS, "All Computers", None),
            (
                UNASSIGNED_COMPUTERS,
                "Unassigned Computers",
                Some(ALL_COMPUTERS),
            ),
        ] {
            store
                .conn
                .execute(
                    "INSERT INTO groups (id, name, parent, builtin) VALUES (?1, ?2, ?3, 1)
                     ON CONFLICT DO NOTHING",
                    params![id.to_string(), name, parent.map(|p| p.to_string())],
                )
                .map_err(db)?;
        }
        if store.meta("server_id")?.is_none() {
            store.set_meta("server_id", &Guid::random().to_string())?;
        }
        if store.meta("config_last_change")?.is_none() {
            store.set_meta("config_last_change", &unix_now().to_string())?;
        }
        Ok(store)
    }

    pub(super) fn meta(&self, key: &str) -> Result<Option<String>, CatalogError> {
        META.get(&self.conn, key)
    }

    pub(super) fn set_meta(&self, key: &str, value: &str) -> Result<(), CatalogError> {
        META.set(&self.conn, key, value)
    }

    /// This server's identity (in every cookie it issues).
    pub fn server_id(&self) -> Result<Guid, CatalogError> {
        self.meta("server_id")?
            .as_deref()
            .and_then(Guid::parse)
            .ok_or_else(|| CatalogError::Store("meta.server_id is missing or invalid".into()))
    }

    /// The key cookies are sealed with, kept in the database when it is shared (PostgreSQL):
    /// the first node makes it, and every node of the database accepts the others' cookies,
    /// as clients and downstream servers behind a load balancer need.
    pub fn shared_cookie_key(&self) -> Result<Vec<u8>, CatalogError> {
        let mut key = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .map_err(|_| CatalogError::Store("no randomness for the cookie key".into()))?;
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('cookie_key', ?1) ON CONFLICT DO NOTHING",
                [hex::encode(key)],
            )
            .map_err(db)?;
        self.meta("cookie_key")?
            .and_then(|kept| hex::decode(kept).ok())
            .filter(|kept| kept.len() == 32)
            .ok_or_else(|| CatalogError::Store("meta.cookie_key is not a 32-byte key".into()))
    }

    /// Take on an identity this server had before (every cookie it issued names it): for a
    /// data_dir rebuilt in place, and the fuzz fixture, whose committed corpora hold cookies.
    pub fn set_server_id(&self, id: Guid) -> Result<(), CatalogError> {
        self.set_meta("server_id", &id.to_string())
    }

    /// Changes whenever another connection commits, to any table (the report journal shares
    /// the file): a cheap test before [`Store::catalog_version`].
    /// PostgreSQL has no such counter: there it is the catalog version itself.
    pub fn data_version(&self) -> Result<i64, CatalogError> {
        if self.conn.is_postgres() {
            return self.catalog_version();
        }
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(db)
    }

    /// Moves with every change of what [`Store::load`] reads (revisions, groups, deployments),
    /// in the same transaction; a change of it is what makes a running node reload.
    pub fn catalog_version(&self) -> Result<i64, CatalogError> {
        Ok(self
            .meta("catalog_version")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// The update documents of `revisions` as imported (unknown ids are left out).
    pub fn documents(&self, revisions: &[u32]) -> Result<Vec<(u32, String)>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT xml FROM revisions WHERE id = ?1")
            .map_err(db)?;
        let mut out = Vec::with_capacity(revisions.len());
        for &id in revisions {
            let xml: Option<String> = stmt.query_row([id], |r| r.get(0)).optional().map_err(db)?;
            if let Some(xml) = xml {
                out.push((id, xml));
            }
        }
        Ok(out)
    }

    /// Import update documents in one transaction. Returns (new, updated) counts. A document
    /// already present under the same (UpdateID, RevisionNumber) keeps its revision id.
    pub fn import(&mut self, docs: &[String]) -> Result<(usize, usize), CatalogError> {
        let parsed: Vec<(Parsed, &str)> = docs
            .iter()
            .map(|d| update::parse(d).map(|p| (p, d.as_str())))
            .collect::<Result<_, _>>()?;
        let tx = self.conn.transaction().map_err(db)?;
        let seq = bump_catalog_version(&tx)?;
        let counts = import_parsed(&tx, parsed, seq)?;
        tx.commit().map_err(db)?;
        self.apply_rules(unix_now())?;
        Ok(counts)
    }

    /// A new target group (under All Computers unless `parent` names another).
    pub fn add_group(&mut self, name: &str, parent: Option<&str>) -> Result<Guid, CatalogError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 256 {
            return Err(CatalogError::Invalid(
                "a group name has 1 to 256 characters".into(),
            ));
        }
        let parent = match parent {
            Some(p) => self.group_id(p)?,
            None => ALL_COMPUTERS,
        };
        if self.group_id(name).is_ok() {
            return Err(CatalogError::Exists(format!("a group named {name:?}")));
        }
        let id = Guid::random();
        self.conn
            .execute(
                "INSERT INTO groups (id, name, parent, builtin) VALUES (?1, ?2, ?3, 0)",
                params![id.to_string(), name, parent.to_string()],
            )
            .map_err(db)?;
        bump_catalog_version(&self.conn)?;
        self.touch_config()?;
        Ok(id)
    }

    /// The id of the group of this name (case-insensitive).
    pub fn group_id(&self, name: &str) -> Result<Guid, CatalogError> {
        self.conn
            .query_row(
                "SELECT id FROM groups WHERE lower(name) = lower(?1)",
                [name.trim()],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(db)?
            .as_deref()
            .and_then(Guid::parse)
            .ok_or_else(|| CatalogError::Unknown(format!("target group {name:?}")))
    }

    /// Approve `revisions` for a group (replacing an earlier deployment of the same pair),
    /// live at once. A changed approval is a new deployment under a new GUID, the old GUID
    /// dead: that is how downstream servers hear of the change.
    pub fn approve(
        &mut self,
        revisions: &[u32],
        group: Guid,
        action: Action,
        deadline: Option<i64>,
        now: i64,
    ) -> Result<usize, CatalogError> {
        self.approve_from(revisions, group, action, deadline, now, now)
    }

    /// [`Store::approve`], offered to clients from `go_live` on (seconds since the epoch; the
    /// protocol's GoLiveTime): passed down to downstream servers at once.
    pub fn approve_from(
        &mut self,
        revisions: &[u32],
        group: Guid,
        action: Action,
        deadline: Option<i64>,
        now: i64,
        go_live: i64,
    ) -> Result<usize, CatalogError> {
        let tx = self.conn.transaction().map_err(db)?;
        let seq = bump_catalog_version(&tx)?;
        let stamp = approval_stamp(&tx, now)?;
        let mut n = 0;
        for &rev in revisions {
            bury(
                &tx,
                "revision_id = ?1 AND group_id = ?2",
                params![rev, group.to_string()],
                seq,
            )?;
            n += tx
                .execute(
                    "INSERT INTO deployments (revision_id, group_id, action, deadline,
                     last_change, download_priority, guid, admin_name, go_live, change_seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, 2, ?6, ?7, ?8, ?9)",
                    params![
                        rev,
                        group.to_string(),
                        action.as_str(),
                        deadline,
                        stamp,
                        Guid::random().to_string(),
                        LOCAL_ADMIN,
                        go_live,
                        seq
                    ],
                )
                .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(n)
    }

    /// An administrator's decision for a group: approve the latest revision of each of
    /// `updates` (None: of every explicitly deployable software update) in `catalog`, this
    /// store's content, or take back the approvals of every revision of them. Returns how
    /// many revisions were approved or had an approval taken back.
    pub fn decide(
        &mut self,
        catalog: &Catalog,
        updates: Option<&[Guid]>,
        group: &str,
        decision: Decision,
        deadline: Option<i64>,
    ) -> Result<usize, CatalogError> {
        let group = self.group_id(group)?;
        match decision {
            Decision::Approve(action) => {
                let revisions = catalog.approvable(updates)?;
                self.approve(&revisions, group, action, deadline, unix_now())?;
                Ok(revisions.len())
            }
            Decision::NotApproved => {
                let revisions = catalog.revisions_of_updates(updates)?;
                let tx = self.conn.transaction().map_err(db)?;
                let seq = bump_catalog_version(&tx)?;
                let mut n = 0;
                for rev in revisions {
                    n += bury(
                        &tx,
                        "revision_id = ?1 AND group_id = ?2",
                        params![rev, group.to_string()],
                        seq,
                    )?;
                }
                tx.commit().map_err(db)?;
                Ok(n)
            }
        }
    }

    /// Decline updates (WSUS: never offered, every approval of them taken back), or
    /// (`declined` false) make them approvable again. Returns how many updates changed.
    pub fn decline(
        &mut self,
        catalog: &Catalog,
        updates: &[Guid],
        declined: bool,
    ) -> Result<usize, CatalogError> {
        let revisions = catalog.revisions_of_updates(Some(updates))?;
        let tx = self.conn.transaction().map_err(db)?;
        let seq = bump_catalog_version(&tx)?;
        let mut n = 0;
        for id in updates {
            n += if declined {
                tx.execute(
                    "INSERT INTO hidden_updates (update_id) VALUES (?1) ON CONFLICT DO NOTHING",
                    [id.to_string()],
                )
            } else {
                tx.execute(
                    "DELETE FROM hidden_updates WHERE update_id = ?1",
                    [id.to_string()],
                )
            }
            .map_err(db)?;
        }
        if declined {
            for rev in revisions {
                bury(&tx, "revision_id = ?1", params![rev], seq)?;
            }
        }
        tx.commit().map_err(db)?;
        Ok(n)
    }

    /// Revision ids by update id (every revision of it), for `approve --update`.
    pub fn revisions_of(&self, update_id: Guid) -> Result<Vec<u32>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM revisions WHERE update_id = ?1 ORDER BY revision_number")
            .map_err(db)?;
        let ids = stmt
            .query_map([update_id.to_string()], |r| r.get::<_, u32>(0))
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        Ok(ids)
    }

    /// The configuration clients see changed: a new LastChange, later than the one before even
    /// within the same second (clients compare it for equality).
    fn touch_config(&self) -> Result<(), CatalogError> {
        let before: i64 = self
            .meta("config_last_change")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.set_meta(
            "config_last_change",
            &unix_now().max(before + 1).to_string(),
        )
    }

    fn groups(&self) -> Result<Vec<Group>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, name, parent, builtin FROM groups")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, bool>(3)?,
                ))
            })
            .map_err(db)?;
        let mut groups = Vec::new();
        for row in rows {
            let (id, name, parent, builtin) = row.map_err(db)?;
            groups.push(Group {
                id: Guid::parse(&id)
                    .ok_or_else(|| CatalogError::Store(format!("group {name}: bad id")))?,
                name,
                parent: parent.as_deref().and_then(Guid::parse),
                builtin,
            });
        }
        Ok(groups)
    }

    /// What GetDeployments answers for the window (`since`, `until`] of catalog versions:
    /// deployments and dead deployments changed within it, or (`since` None) every live
    /// deployment up to `until`; groups, declined updates and accepted EULAs whole.
    pub fn deployment_set(
        &self,
        since: Option<i64>,
        until: i64,
    ) -> Result<DeploymentSet, CatalogError> {
        let _snapshot = self.conn.unchecked_transaction().map_err(db)?;
        let low = since.unwrap_or(i64::MIN);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT d.guid, r.update_id, r.revision_number, d.action, d.admin_name,
                 d.deadline, d.go_live, d.group_id, d.download_priority
                 FROM deployments d JOIN revisions r ON r.id = d.revision_id
                 WHERE d.change_seq > ?1 AND d.change_seq <= ?2 ORDER BY d.change_seq, d.id",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map(params![low, until], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, u8>(8)?,
                ))
            })
            .map_err(db)?;
        let mut deployments = Vec::new();
        for row in rows {
            let (guid, update, number, action, admin, deadline, go_live, group, priority) =
                row.map_err(db)?;
            let corrupt = || CatalogError::Store(format!("deployment of {update}/{number}"));
            deployments.push(ServerDeployment {
                guid: guid.as_deref().and_then(Guid::parse).ok_or_else(corrupt)?,
                update_id: Guid::parse(&update).ok_or_else(corrupt)?,
                revision_number: number,
                action: Action::parse_stored(&action).ok_or_else(corrupt)?,
                admin_name: admin,
                deadline,
                go_live,
                group: Guid::parse(&group).ok_or_else(corrupt)?,
                download_priority: priority,
            });
        }
        let dead = match since {
            None => Vec::new(),
            Some(since) => self.guids(
                "SELECT guid FROM dead_deployments WHERE change_seq > ?1 AND change_seq <= ?2
                 ORDER BY change_seq",
                params![since, until],
            )?,
        };
        Ok(DeploymentSet {
            groups: self.groups()?,
            deployments,
            dead,
            hidden: self.hidden()?,
            accepted_eulas: self
                .guids("SELECT eula_id FROM accepted_eulas ORDER BY eula_id", &[])?,
        })
    }

    /// When each revision last lost a deployment (seconds since the epoch), of those that did.
    fn unapproved_at(&self) -> Result<HashMap<u32, i64>, CatalogError> {
        self.conn
            .prepare(
                "SELECT revision_id, MAX(buried_at) FROM dead_deployments
                 WHERE revision_id IS NOT NULL AND buried_at IS NOT NULL GROUP BY revision_id",
            )
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(db)
    }

    /// The declined (hidden) updates.
    pub fn hidden(&self) -> Result<Vec<Guid>, CatalogError> {
        self.guids(
            "SELECT update_id FROM hidden_updates ORDER BY update_id",
            &[],
        )
    }

    /// The GUIDs a query's first column holds.
    fn guids(&self, sql: &str, args: &[&dyn ToArg]) -> Result<Vec<Guid>, CatalogError> {
        let texts: Vec<String> = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut s| s.query_map(args, |r| r.get(0))?.collect())
            .map_err(db)?;
        texts
            .iter()
            .map(|t| Guid::parse(t).ok_or_else(|| CatalogError::Store(format!("bad GUID {t}"))))
            .collect()
    }

    /// The anchors of the last sync applied from the upstream (none before the first).
    pub fn sync_anchors(&self) -> Result<Anchors, CatalogError> {
        Ok(Anchors {
            config: self.meta("sync.config_anchor")?,
            config_sync: self.meta("sync.config_sync_anchor")?,
            update_sync: self.meta("sync.update_sync_anchor")?,
            deployment: self.meta("sync.deployment_anchor")?,
            drivers: self.meta("sync.driver_anchor")?,
            driver_mode: self.meta("sync.driver_mode")?,
            replication: self.meta("sync.replication")?,
        })
    }

    /// The (UpdateID, RevisionNumber) of every revision held (`staged` false), or of every
    /// document fetched by a sync not yet applied (`staged` true).
    pub fn identities(&self, staged: bool) -> Result<HashSet<(Guid, u32)>, CatalogError> {
        let table = if staged { "sync_staged" } else { "revisions" };
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT update_id, revision_number FROM {table}"))
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))
            .map_err(db)?;
        let mut out = HashSet::new();
        for row in rows {
            let (id, number) = row.map_err(db)?;
            if let Some(id) = Guid::parse(&id) {
                out.insert((id, number));
            }
        }
        Ok(out)
    }

    /// The products and update classifications held or staged (categories by
    /// `CategoryInformation/@CategoryType`): what a sync that leaves drivers out lists
    /// software by.
    pub fn products_and_classifications(&self) -> Result<(Vec<Guid>, Vec<Guid>), CatalogError> {
        let mut products = HashSet::new();
        let mut classifications = HashSet::new();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT update_id, category_type FROM revisions
                 WHERE category_type IN ('Product', 'UpdateClassification')",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(db)?;
        let mut found = Vec::new();
        for row in rows {
            let (id, kind) = row.map_err(db)?;
            found.push((Guid::parse(&id), Some(kind)));
        }
        // Staged category documents: small, and few.
        let mut stmt = self
            .conn
            .prepare("SELECT xml FROM sync_staged WHERE xml LIKE '%CategoryInformation%'")
            .map_err(db)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(db)?;
        for xml in rows {
            let p = update::parse(&xml.map_err(db)?)?;
            found.push((Some(p.update_id), p.category_type));
        }
        for (id, kind) in found {
            match (id, kind.as_deref()) {
                (Some(id), Some("Product")) => products.insert(id),
                (Some(id), Some("UpdateClassification")) => classifications.insert(id),
                _ => false,
            };
        }
        let sorted = |set: HashSet<Guid>| {
            let mut v: Vec<Guid> = set.into_iter().collect();
            v.sort_unstable();
            v
        };
        Ok((sorted(products), sorted(classifications)))
    }

    /// Keep the decryption keys of files (by SHA-1), replacing any held for the same file, in
    /// one transaction; how many were new or changed. Keys may come before the documents
    /// that name their files.
    pub fn set_keys(&mut self, keys: &[FileKey]) -> Result<usize, CatalogError> {
        let tx = self.conn.transaction().map_err(db)?;
        let mut changed = 0;
        for (sha1, key) in keys {
            changed += tx
                .execute(
                    "INSERT INTO decryption_keys (sha1, key) VALUES (?1, ?2)
                     ON CONFLICT (sha1) DO UPDATE SET key = excluded.key
                     WHERE decryption_keys.key IS DISTINCT FROM excluded.key",
                    params![hex::encode(sha1), key],
                )
                .map_err(db)?;
        }
        if changed > 0 {
            bump_catalog_version(&tx)?;
        }
        tx.commit().map_err(db)?;
        Ok(changed)
    }

    /// Every key held.
    fn keys(&self) -> Result<crate::catalog::keys::Keys, CatalogError> {
        let mut stmt = self
            .conn
            .prepare("SELECT sha1, key FROM decryption_keys")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(db)?;
        let mut keys = crate::catalog::keys::Keys::new();
        for row in rows {
            let (sha1, key) = row.map_err(db)?;
            let sha1 = hex::decode(&sha1)
                .ok()
                .and_then(|d| <[u8; 20]>::try_from(d).ok())
                .ok_or_else(|| CatalogError::Store(format!("decryption key of {sha1:?}")))?;
            keys.insert(sha1, key.into());
        }
        Ok(keys)
    }

    /// The revisions whose keys a downstream server asks its upstream for, each with the files
    /// it lacks a key of: those marked encrypted, or every file of a revision that says its
    /// keys come by GetUpdateDecryptionData but marks none.
    pub fn lacking_keys(&self) -> Result<Vec<KeysWanted>, CatalogError> {
        let keys = self.keys()?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, update_id, revision_number, relations FROM revisions
                 WHERE needs_keys = 1",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, update, number, relations) = row.map_err(db)?;
            let corrupt = |what: &str| CatalogError::Store(format!("revision {id}: {what}"));
            let relations: Relations =
                serde_json::from_str(&relations).map_err(|e| corrupt(&e.to_string()))?;
            let update = Guid::parse(&update).ok_or_else(|| corrupt("bad GUID"))?;
            let files: Vec<([u8; 20], bool)> = relations
                .files
                .iter()
                .filter_map(|f| Some((hex::decode(&f.sha1).ok()?.try_into().ok()?, f.encrypted)))
                .collect();
            // needs_keys is set: the revision is secured or marks files.
            let lacking: Vec<[u8; 20]> = needing_keys(true, &files)
                .into_iter()
                .filter(|sha1| !keys.contains_key(sha1))
                .collect();
            if !lacking.is_empty() {
                out.push(((update, number), lacking));
            }
        }
        Ok(out)
    }

    /// Keep documents a sync fetched until the sync is applied: clients do not see them, and
    /// a sync cut off (WAN drop, kill -9) does not fetch them again. Each must parse as an
    /// update document; the first that does not is named in the error and nothing is kept.
    /// Returns the identities among them with files that need a key this node lacks, and
    /// those files.
    pub fn stage(&mut self, documents: &[String]) -> Result<Vec<KeysWanted>, CatalogError> {
        let keys = self.keys()?;
        let mut wanted = Vec::new();
        let tx = self.conn.transaction().map_err(db)?;
        for xml in documents {
            let p = update::parse(xml)?;
            let lacking: Vec<[u8; 20]> = p
                .needing_keys()
                .into_iter()
                .filter(|sha1| !keys.contains_key(sha1))
                .collect();
            if !lacking.is_empty() {
                wanted.push(((p.update_id, p.revision_number), lacking));
            }
            tx.execute(
                "INSERT INTO sync_staged (update_id, revision_number, xml) VALUES (?1, ?2, ?3)
                 ON CONFLICT (update_id, revision_number) DO UPDATE SET xml = excluded.xml",
                params![p.update_id.to_string(), p.revision_number, xml],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(wanted)
    }

    /// Apply a sync in one transaction: the staged documents, the upstream's groups and
    /// approvals (`complete`: `set` holds every live deployment, and others go), its declines
    /// and accepted EULAs, and the anchors to continue from. Clients see all of it or, if
    /// anything fails, none of it. What `replication` makes this node's own (an autonomous
    /// node's groups and approvals, and its declines unless it follows the upstream's) is
    /// left as it is.
    pub fn apply_sync(
        &mut self,
        set: &DeploymentSet,
        replication: Replication,
        complete: bool,
        anchors: &Anchors,
        now: i64,
    ) -> Result<Applied, CatalogError> {
        let staged: Vec<String> = self
            .conn
            .prepare("SELECT xml FROM sync_staged")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(db)?;
        let parsed: Vec<(Parsed, &str)> = staged
            .iter()
            .map(|d| update::parse(d).map(|p| (p, d.as_str())))
            .collect::<Result<_, _>>()?;
        let tx = self.conn.transaction().map_err(db)?;
        let seq = bump_catalog_version(&tx)?;
        let mut applied = Applied::default();
        (applied.new_revisions, applied.changed_revisions) = import_parsed(&tx, parsed, seq)?;
        if replication.is_replica() {
            adopt_approvals(&tx, set, complete, seq, now, &mut applied)?;
        }
        let lists = [
            (
                "hidden_updates",
                "update_id",
                &set.hidden,
                replication.upstream_declines(),
            ),
            (
                "accepted_eulas",
                "eula_id",
                &set.accepted_eulas,
                replication.is_replica(),
            ),
        ];
        for (table, column, ids, _) in lists.into_iter().filter(|l| l.3) {
            tx.execute(&format!("DELETE FROM {table}"), [])
                .map_err(db)?;
            for id in ids {
                tx.execute(
                    &format!("INSERT INTO {table} ({column}) VALUES (?1) ON CONFLICT DO NOTHING"),
                    [id.to_string()],
                )
                .map_err(db)?;
            }
        }
        applied.hidden = if replication.upstream_declines() {
            set.hidden.len()
        } else {
            0
        };
        for (key, value) in [
            ("sync.config_anchor", &anchors.config),
            ("sync.config_sync_anchor", &anchors.config_sync),
            ("sync.update_sync_anchor", &anchors.update_sync),
            ("sync.deployment_anchor", &anchors.deployment),
            ("sync.driver_anchor", &anchors.drivers),
            ("sync.driver_mode", &anchors.driver_mode),
            ("sync.replication", &anchors.replication),
        ] {
            match value {
                Some(v) => tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![key, v],
                ),
                None => tx.execute("DELETE FROM meta WHERE key = ?1", [key]),
            }
            .map_err(db)?;
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('sync.last_applied', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [now.to_string()],
        )
        .map_err(db)?;
        tx.execute("DELETE FROM sync_staged", []).map_err(db)?;
        tx.commit().map_err(db)?;
        // A node whose approvals are its own applies its rules to what the sync brought.
        if !replication.is_replica() {
            self.apply_rules(now)?;
        }
        Ok(applied)
    }

    /// Everything clients are served from, in memory.
    pub fn load(&self) -> Result<Catalog, CatalogError> {
        // One read snapshot: the version and everything it versions agree.
        let _snapshot = self.conn.unchecked_transaction().map_err(db)?;
        type PerRevision = (Vec<(String, String)>, Vec<(String, String, String)>);
        let mut fragments: HashMap<u32, PerRevision> = HashMap::new();
        {
            let mut stmt = self
                .conn
                .prepare("SELECT revision_id, kind, lang, geo, fragment FROM fragments")
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, u32>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                })
                .map_err(db)?;
            for row in rows {
                let (id, kind, lang, geo, fragment) = row.map_err(db)?;
                let entry = fragments.entry(id).or_default();
                if kind == "eula" {
                    entry.1.push((lang, geo, fragment));
                } else {
                    entry.0.push((lang, fragment));
                }
            }
        }
        struct Row {
            revision: Revision,
            bundled: Vec<Vec<(Guid, u32)>>,
        }
        let mut rows = Vec::new();
        {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT id, update_id, revision_number, update_type, category_type,
                     explicitly_deployable, relations, core, extended, change_seq FROM revisions",
                )
                .map_err(db)?;
            let mapped = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, u32>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u32>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, bool>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, String>(7)?,
                        r.get::<_, String>(8)?,
                        r.get::<_, i64>(9)?,
                    ))
                })
                .map_err(db)?;
            for row in mapped {
                let (id, uid, rev, kind, category, deployable, relations, core, extended, seq) =
                    row.map_err(db)?;
                let corrupt = |what: &str| CatalogError::Store(format!("revision {id}: {what}"));
                let relations: Relations =
                    serde_json::from_str(&relations).map_err(|e| corrupt(&e.to_string()))?;
                let guid = |s: &str| Guid::parse(s).ok_or_else(|| corrupt("bad GUID"));
                let (localized, eula) = fragments.remove(&id).unwrap_or_default();
                let files = relations
                    .files
                    .iter()
                    .map(|f| {
                        Ok(FileRef {
                            sha1: hex::decode(&f.sha1)
                                .ok()
                                .and_then(|d| d.try_into().ok())
                                .ok_or_else(|| corrupt("bad SHA-1"))?,
                            sha256: f
                                .sha256
                                .as_deref()
                                .and_then(|h| hex::decode(h).ok())
                                .and_then(|d| d.try_into().ok()),
                            name: f.name.clone(),
                            size: f.size,
                            encrypted: f.encrypted,
                        })
                    })
                    .collect::<Result<Vec<_>, CatalogError>>()?;
                rows.push(Row {
                    revision: Revision {
                        id,
                        update_id: guid(&uid)?,
                        revision_number: rev,
                        update_type: UpdateType::parse(&kind)
                            .ok_or_else(|| corrupt("bad update type"))?,
                        category_type: category,
                        explicitly_deployable: deployable,
                        prerequisites: relations
                            .prerequisites
                            .iter()
                            .map(|c| {
                                Ok(Clause {
                                    ids: c.ids.iter().map(|s| guid(s)).collect::<Result<_, _>>()?,
                                    is_category: c.category,
                                })
                            })
                            .collect::<Result<_, CatalogError>>()?,
                        bundled: Vec::new(),
                        files,
                        drivers: relations.drivers,
                        change_seq: seq,
                        titles: relations.titles,
                        kb: update::kb_of_extended(&extended),
                        superseded: relations
                            .superseded
                            .iter()
                            .map(|s| guid(s))
                            .collect::<Result<_, _>>()?,
                        is_leaf: true,
                        fragments: Arc::new(
                            Fragments {
                                core,
                                extended,
                                localized,
                                eula,
                            }
                            .escaped(),
                        ),
                    },
                    bundled: relations
                        .bundled
                        .iter()
                        .map(|g| {
                            g.iter()
                                .map(|(s, r)| Ok((guid(s)?, *r)))
                                .collect::<Result<Vec<_>, CatalogError>>()
                        })
                        .collect::<Result<_, _>>()?,
                });
            }
        }
        // Bundle members by identity, now that every revision is known.
        let ids: HashMap<(Guid, u32), u32> = rows
            .iter()
            .map(|r| {
                (
                    (r.revision.update_id, r.revision.revision_number),
                    r.revision.id,
                )
            })
            .collect();
        let revisions = rows
            .into_iter()
            .map(|mut r| {
                r.revision.bundled = r
                    .bundled
                    .iter()
                    .flatten()
                    .filter_map(|key| ids.get(key).copied())
                    .collect();
                r.revision
            })
            .collect();

        let groups = self.groups()?;
        let deployments = {
            let mut stmt = self
                .conn
                .prepare(
                    // Declined updates are never offered, whatever was approved of them.
                    "SELECT id, revision_id, group_id, action, deadline, last_change,
                     download_priority, guid, go_live FROM deployments
                     WHERE revision_id NOT IN (SELECT r.id FROM revisions r
                        JOIN hidden_updates h ON h.update_id = r.update_id)",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, u32>(0)?,
                        r.get::<_, u32>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, i64>(5)?,
                        r.get::<_, u8>(6)?,
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, i64>(8)?,
                    ))
                })
                .map_err(db)?;
            let mut deployments = Vec::new();
            for row in rows {
                let (id, revision, group, action, deadline, last_change, priority, guid, go_live) =
                    row.map_err(db)?;
                deployments.push(Deployment {
                    id,
                    guid: guid
                        .as_deref()
                        .and_then(Guid::parse)
                        .ok_or_else(|| CatalogError::Store(format!("deployment {id}: bad GUID")))?,
                    revision,
                    group: Guid::parse(&group).ok_or_else(|| {
                        CatalogError::Store(format!("deployment {id}: bad group"))
                    })?,
                    action: Action::parse_stored(&action).ok_or_else(|| {
                        CatalogError::Store(format!("deployment {id}: action {action}"))
                    })?,
                    deadline,
                    last_change,
                    download_priority: priority,
                    go_live,
                });
            }
            deployments
        };
        let last_change = self
            .meta("config_last_change")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let declined = self.hidden()?.into_iter().collect();
        let mut catalog = Catalog::new(revisions, groups, deployments, last_change)
            .with_keys(self.keys()?)
            .with_declines(declined, self.unapproved_at()?);
        catalog.version = self.catalog_version()?;
        Ok(catalog)
    }
}

/// The upstream's groups and approvals taken in place of this node's (a replica's sync):
/// `complete`, `set` holds every live deployment and the others go.
fn adopt_approvals(
    tx: &Connection,
    set: &DeploymentSet,
    complete: bool,
    seq: i64,
    now: i64,
    applied: &mut Applied,
) -> Result<(), CatalogError> {
    // Groups: the upstream's list is whole; a group it no longer has goes with its
    // approvals.
    let listed: HashSet<String> = set.groups.iter().map(|g| g.id.to_string()).collect();
    let local: Vec<String> = tx
        .prepare("SELECT id FROM groups WHERE builtin = 0")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(db)?;
    for gone in local.iter().filter(|g| !listed.contains(*g)) {
        applied.removed_deployments += bury(tx, "group_id = ?1", params![gone], seq)?;
        tx.execute("DELETE FROM groups WHERE id = ?1", [gone])
            .map_err(db)?;
    }
    for g in &set.groups {
        tx.execute(
            "INSERT INTO groups (id, name, parent, builtin) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, parent = excluded.parent,
             builtin = excluded.builtin",
            params![
                g.id.to_string(),
                g.name,
                g.parent.map(|p| p.to_string()),
                g.builtin
            ],
        )
        .map_err(db)?;
    }
    for guid in &set.dead {
        applied.removed_deployments += bury(tx, "guid = ?1", params![guid.to_string()], seq)?;
    }
    if complete {
        let kept: HashSet<String> = set.deployments.iter().map(|d| d.guid.to_string()).collect();
        let held: Vec<String> = tx
            .prepare("SELECT guid FROM deployments WHERE guid IS NOT NULL")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(db)?;
        for guid in held.iter().filter(|g| !kept.contains(*g)) {
            applied.removed_deployments += bury(tx, "guid = ?1", params![guid], seq)?;
        }
    }
    let stamp = approval_stamp(tx, now)?;
    for d in &set.deployments {
        let revision: Option<i64> = tx
            .query_row(
                "SELECT id FROM revisions WHERE update_id = ?1 AND revision_number = ?2",
                params![d.update_id.to_string(), d.revision_number],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        let group_known = listed.contains(&d.group.to_string())
            || d.group == ALL_COMPUTERS
            || d.group == UNASSIGNED_COMPUTERS;
        let Some(revision) = revision.filter(|_| group_known) else {
            applied.skipped_deployments += 1;
            continue;
        };
        let guid = d.guid.to_string();
        // Another approval of the same revision for the same group is replaced by this one.
        applied.removed_deployments += bury(
            tx,
            "revision_id = ?1 AND group_id = ?2 AND guid <> ?3",
            params![revision, d.group.to_string(), guid],
            seq,
        )?;
        applied.deployments += tx
            .execute(
                "INSERT INTO deployments (revision_id, group_id, action, deadline,
                 last_change, download_priority, guid, admin_name, go_live, change_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (guid) DO NOTHING",
                params![
                    revision,
                    d.group.to_string(),
                    d.action.as_str(),
                    d.deadline,
                    stamp,
                    d.download_priority,
                    guid,
                    d.admin_name,
                    d.go_live,
                    seq
                ],
            )
            .map_err(db)?;
    }
    Ok(())
}

/// The time a change of approvals made at `now` (seconds since the epoch) is stamped with:
/// later than every approval and every end of one stamped before, however many changes share
/// a second. A client's anchor (in seconds) that saw those is then older than this change, so
/// its next scan hears of it.
fn approval_stamp(tx: &Connection, now: i64) -> Result<i64, CatalogError> {
    let latest: Option<i64> = tx
        .query_row(
            "SELECT MAX(t) FROM (SELECT MAX(last_change) AS t FROM deployments
             UNION ALL SELECT MAX(buried_at) FROM dead_deployments) AS stamps",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    Ok(latest.map_or(now, |t| now.max(t + 1)))
}

/// Remove the deployments `filter` selects (a WHERE clause over `deployments`), leaving each
/// GUID dead at `seq` for downstream servers; how many went.
fn bury(
    tx: &Connection,
    filter: &str,
    args: &[&dyn ToArg],
    seq: i64,
) -> Result<usize, CatalogError> {
    let dead: Vec<(String, i64)> = tx
        .prepare_cached(&format!(
            "SELECT guid, revision_id FROM deployments WHERE guid IS NOT NULL AND {filter}"
        ))
        .and_then(|mut s| s.query_map(args, |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(db)?;
    let now = match dead.is_empty() {
        true => 0,
        false => approval_stamp(tx, unix_now())?,
    };
    for (guid, revision) in dead {
        tx.execute(
            "INSERT INTO dead_deployments (guid, change_seq, revision_id, buried_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (guid) DO UPDATE SET change_seq = excluded.change_seq,
             revision_id = excluded.revision_id, buried_at = excluded.buried_at",
            params![guid, seq, revision, now],
        )
        .map_err(db)?;
    }
    tx.execute(&format!("DELETE FROM deployments WHERE {filter}"), args)
        .map_err(db)
}

/// Write parsed documents as revisions changed at `seq`; (new, updated). A document already
/// present under the same (UpdateID, RevisionNumber) keeps its revision id, and its change_seq
/// when the document is the same.
fn import_parsed(
    tx: &Connection,
    parsed: Vec<(Parsed, &str)>,
    seq: i64,
) -> Result<(usize, usize), CatalogError> {
    let (mut new, mut updated) = (0, 0);
    for (p, xml) in parsed {
        let relations = Relations {
            prerequisites: p
                .prerequisites
                .iter()
                .map(|c| StoredClause {
                    ids: c.ids.iter().map(Guid::to_string).collect(),
                    category: c.is_category,
                })
                .collect(),
            bundled: p
                .bundled
                .iter()
                .map(|g| g.iter().map(|(id, r)| (id.to_string(), *r)).collect())
                .collect(),
            superseded: p.superseded.iter().map(Guid::to_string).collect(),
            files: p
                .files
                .iter()
                .map(|f| StoredFile {
                    sha1: hex::encode(f.sha1),
                    sha256: f.sha256.map(hex::encode),
                    name: f.name.clone(),
                    size: f.size,
                    encrypted: f.encrypted,
                })
                .collect(),
            drivers: p.drivers.clone(),
            titles: p.titles.clone(),
        };
        let relations =
            serde_json::to_string(&relations).map_err(|e| CatalogError::Store(e.to_string()))?;
        let needs_keys = !p.needing_keys().is_empty();
        let existing: Option<i64> = tx
            .query_row(
                "SELECT id FROM revisions WHERE update_id = ?1 AND revision_number = ?2",
                params![p.update_id.to_string(), p.revision_number],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        let id = match existing {
            Some(id) => {
                tx.execute(
                    "UPDATE revisions SET update_type = ?2, category_type = ?3,
                     explicitly_deployable = ?4, relations = ?5, core = ?6, extended = ?7,
                     change_seq = CASE WHEN xml = ?8 THEN change_seq ELSE ?9 END,
                     xml = ?8, needs_keys = ?10 WHERE id = ?1",
                    params![
                        id,
                        p.update_type.as_str(),
                        p.category_type,
                        p.explicitly_deployable,
                        relations,
                        p.fragments.core,
                        p.fragments.extended,
                        xml,
                        seq,
                        needs_keys
                    ],
                )
                .map_err(db)?;
                tx.execute("DELETE FROM fragments WHERE revision_id = ?1", [id])
                    .map_err(db)?;
                updated += 1;
                id
            }
            None => {
                let id = tx
                    .query_row(
                        "INSERT INTO revisions (update_id, revision_number, update_type,
                     category_type, explicitly_deployable, relations, core, extended, xml,
                     change_seq, needs_keys)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) RETURNING id",
                        params![
                            p.update_id.to_string(),
                            p.revision_number,
                            p.update_type.as_str(),
                            p.category_type,
                            p.explicitly_deployable,
                            relations,
                            p.fragments.core,
                            p.fragments.extended,
                            xml,
                            seq,
                            needs_keys
                        ],
                        |r| r.get::<_, i64>(0),
                    )
                    .map_err(db)?;
                new += 1;
                id
            }
        };
        for (lang, fragment) in &p.fragments.localized {
            tx.execute(
                "INSERT INTO fragments (revision_id, kind, lang, geo, fragment)
                 VALUES (?1, 'lp', ?2, '', ?3)",
                params![id, lang, fragment],
            )
            .map_err(db)?;
        }
        for (lang, geo, fragment) in &p.fragments.eula {
            tx.execute(
                "INSERT INTO fragments (revision_id, kind, lang, geo, fragment)
                 VALUES (?1, 'eula', ?2, ?3, ?4)",
                params![id, lang, geo, fragment],
            )
            .map_err(db)?;
        }
    }
    Ok((new, updated))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the server-server revision list is cut by: a document's change_seq moves when the
    /// document changes, not when the same document is imported again; state.db files from
    /// before the column get it.
    #[test]
    fn change_seq_moves_with_a_changed_document_only() {
        let dir = tempfile::tempdir().unwrap();
        let payloads = dir.path().join("payloads");
        std::fs::create_dir_all(&payloads).unwrap();
        let generated = crate::testkit::generate::generate(5, 3, 1 << 20, &payloads).unwrap();
        let mut store = Store::open(&Database::sqlite(dir.path())).unwrap();
        store.import(&generated.documents).unwrap();
        let seqs = |store: &Store| -> Vec<(u32, i64)> {
            let c = store.load().unwrap();
            c.revisions().iter().map(|r| (r.id, r.change_seq)).collect()
        };
        let first = seqs(&store);
        assert!(first.iter().all(|(_, s)| *s > 0));
        store.import(&generated.documents).unwrap();
        assert_eq!(seqs(&store), first, "the same documents again");
        let changed =
            generated.documents[0].replacen("</upd:Update>", "<!-- v2 --></upd:Update>", 1);
        assert_ne!(changed, generated.documents[0]);
        store.import(&[changed]).unwrap();
        let catalog = store.load().unwrap();
        let id = store
            .documents(&first.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .unwrap()
            .into_iter()
            .find(|(_, xml)| xml.contains("<!-- v2 -->"))
            .unwrap()
            .0;
        for (rid, before) in &first {
            let now = catalog.revision(*rid).unwrap().change_seq;
            if *rid == id {
                assert!(now > *before);
                assert_eq!(now, catalog.version);
            } else {
                assert_eq!(now, *before);
            }
        }
        drop(store);
        let conn = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
        conn.execute_batch("ALTER TABLE revisions DROP COLUMN change_seq")
            .unwrap();
        drop(conn);
        let store = Store::open(&Database::sqlite(dir.path())).unwrap();
        assert!(seqs(&store).iter().all(|(_, s)| *s == 0));
    }

    /// Keys of encrypted files: kept by SHA-1, loaded with the catalog, and what is still
    /// lacking is what a sync asks its upstream for; setting the same key again changes nothing.
    #[test]
    fn decryption_keys_are_kept_and_what_lacks_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let payloads = dir.path().join("payloads");
        std::fs::create_dir_all(&payloads).unwrap();
        let g = crate::testkit::generate::generate(40, 1, 4 << 20, &payloads).unwrap();
        let mut store = Store::open(&Database::sqlite(dir.path())).unwrap();
        store.import(&g.documents).unwrap();
        let lacking = store.lacking_keys().unwrap();
        let revisions = |ids: &[KeysWanted]| ids.iter().map(|(id, _)| id.0).collect::<HashSet<_>>();
        assert_eq!(revisions(&lacking), g.encrypted.iter().copied().collect());
        assert!(lacking.iter().all(|(_, files)| files.len() == 1));
        let version = store.catalog_version().unwrap();
        assert_eq!(store.set_keys(&g.keys[..1]).unwrap(), 1);
        assert_eq!(
            store.set_keys(&g.keys[..1]).unwrap(),
            0,
            "the same key again"
        );
        assert_eq!(store.catalog_version().unwrap(), version + 1);
        let lacking = store.lacking_keys().unwrap();
        assert!(
            lacking
                .iter()
                .all(|(_, files)| !files.contains(&g.keys[0].0))
        );
        assert_eq!(revisions(&lacking).len(), g.encrypted.len() - 1);
        let catalog = store.load().unwrap();
        assert_eq!(catalog.key(&g.keys[0].0), Some(&g.keys[0].1[..]));
        assert_eq!(catalog.key(&g.keys[1].0), None);
        // Documents a sync stages say which of their files lack keys.
        let staged = store.stage(&g.documents).unwrap();
        assert_eq!(
            staged.iter().map(|(_, f)| f.len()).sum::<usize>(),
            lacking.iter().map(|(_, f)| f.len()).sum::<usize>()
        );
        store.set_keys(&g.keys).unwrap();
        assert!(store.lacking_keys().unwrap().is_empty());
    }

    #[test]
    fn imports_keep_their_ids_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let payloads = dir.path().join("payloads");
        std::fs::create_dir_all(&payloads).unwrap();
        let generated = crate::testkit::generate::generate(40, 1, 8 << 20, &payloads).unwrap();
        let mut store = Store::open(&Database::sqlite(dir.path())).unwrap();
        let (new, updated) = store.import(&generated.documents).unwrap();
        assert_eq!((new, updated), (generated.documents.len(), 0));
        let first = store.load().unwrap();
        // Importing again changes no id; the server id stays.
        let server = store.server_id().unwrap();
        let (new, updated) = store.import(&generated.documents).unwrap();
        assert_eq!((new, updated), (0, generated.documents.len()));
        drop(store);
        let store = Store::open(&Database::sqlite(dir.path())).unwrap();
        assert_eq!(store.server_id().unwrap(), server);
        let again = store.load().unwrap();
        assert_eq!(first.len(), again.len());
        for r in first.revisions() {
            let s = again
                .by_identity(r.update_id, r.revision_number)
                .expect("still there");
            assert_eq!(s.id, r.id);
            assert_eq!(s.fragments, r.fragments);
        }
        // Categories, classifications and detectoids are revisions too.
        let kinds = |t| {
            again
                .revisions()
                .iter()
                .filter(|r| r.update_type == t)
                .count()
        };
        assert_eq!(kinds(UpdateType::Category), generated.categories);
        assert_eq!(kinds(UpdateType::Detectoid), generated.detectoids);
        // The latest revision of a twice-revised update is the 101.
        let twice = again
            .revisions()
            .iter()
            .find(|r| r.revision_number == 101)
            .expect("a second revision");
        assert_eq!(again.latest(twice.update_id).map(|r| r.id), Some(twice.id));
        // Bundles resolve their members; members are leaves, categories are not.
        let bundle = again
            .revisions()
            .iter()
            .find(|r| !r.bundled.is_empty())
            .expect("a bundle");
        assert!(bundle.bundled.iter().all(|m| again.revision(*m).is_some()));
        assert!(
            again
                .revisions()
                .iter()
                .filter(|r| r.update_type == UpdateType::Category)
                .any(|r| !r.is_leaf)
        );
    }

    #[test]
    fn groups_and_approvals() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&Database::sqlite(dir.path())).unwrap();
        let id = store.add_group("Branch Servers", None).unwrap();
        assert!(
            store.add_group("branch servers", None).is_err(),
            "names are unique"
        );
        assert_eq!(store.group_id("BRANCH SERVERS").unwrap(), id);
        assert!(matches!(
            store.group_id("nope"),
            Err(CatalogError::Unknown(_))
        ));
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/updates/d-software.xml"
        ))
        .unwrap();
        store.import(&[doc]).unwrap();
        let rev = store
            .revisions_of(Guid::parse("11111111-aaaa-4bbb-8ccc-000000000004").unwrap())
            .unwrap();
        assert_eq!(rev.len(), 1);
        store.approve(&rev, id, Action::Install, None, 100).unwrap();
        store
            .approve(&rev, id, Action::Uninstall, Some(500), 200)
            .unwrap();
        let catalog = store.load().unwrap();
        assert_eq!(catalog.deployments.len(), 1, "one deployment per pair");
        let d = &catalog.deployments[0];
        assert_eq!(
            (d.action, d.deadline, d.last_change),
            (Action::Uninstall, Some(500), 200)
        );
        let group = catalog.group(id).unwrap();
        assert_eq!(group.parent, Some(ALL_COMPUTERS));
        assert!(
            catalog
                .group(UNASSIGNED_COMPUTERS)
                .is_some_and(|g| g.builtin)
        );
    }

    /// What downstream servers are told of approvals: changes within an anchor window, a
    /// changed approval as a new GUID with the old one dead, a taken-back approval dead, a
    /// declined update hidden with its approvals dead and out of the clients' catalog.
    #[test]
    fn deployment_history_for_downstream_servers() {
        let dir = tempfile::tempdir().unwrap();
        let payloads = dir.path().join("payloads");
        std::fs::create_dir_all(&payloads).unwrap();
        let generated = crate::testkit::generate::generate(6, 3, 1 << 20, &payloads).unwrap();
        let mut store = Store::open(&Database::sqlite(dir.path())).unwrap();
        store.import(&generated.documents).unwrap();
        let (a, b) = (generated.deployable[0], generated.deployable[1]);
        let catalog = store.load().unwrap();
        let approve = Decision::Approve(Action::Install);
        store
            .decide(&catalog, Some(&[a, b]), "All Computers", approve, None)
            .unwrap();
        let v1 = store.catalog_version().unwrap();
        let first = store.deployment_set(None, v1).unwrap();
        assert_eq!(first.deployments.len(), 2);
        assert!(first.dead.is_empty());
        assert!(first.groups.iter().any(|g| g.id == ALL_COMPUTERS));
        assert!(
            store
                .deployment_set(Some(v1), v1)
                .unwrap()
                .deployments
                .is_empty()
        );
        // Optional instead: a new GUID, the old one dead.
        let optional = Decision::Approve(Action::OptionalInstall);
        store
            .decide(&catalog, Some(&[a]), "All Computers", optional, None)
            .unwrap();
        let v2 = store.catalog_version().unwrap();
        let delta = store.deployment_set(Some(v1), v2).unwrap();
        assert_eq!(delta.deployments.len(), 1);
        assert_eq!(delta.deployments[0].action, Action::OptionalInstall);
        let old_a = first.deployments.iter().find(|d| d.update_id == a).unwrap();
        assert_eq!(delta.dead, vec![old_a.guid]);
        assert_ne!(delta.deployments[0].guid, old_a.guid);
        // Taken back, then declined.
        store
            .decide(
                &catalog,
                Some(&[a]),
                "All Computers",
                Decision::NotApproved,
                None,
            )
            .unwrap();
        store.decline(&catalog, &[b], true).unwrap();
        let v3 = store.catalog_version().unwrap();
        let delta = store.deployment_set(Some(v2), v3).unwrap();
        assert!(delta.deployments.is_empty());
        assert_eq!(delta.dead.len(), 2);
        assert_eq!(delta.hidden, vec![b]);
        assert!(store.load().unwrap().deployments.is_empty());
        // Undeclined and approved again: offered again.
        store.decline(&catalog, &[b], false).unwrap();
        store
            .decide(&catalog, Some(&[b]), "All Computers", approve, None)
            .unwrap();
        assert_eq!(store.load().unwrap().deployments.len(), 1);
        assert!(
            store
                .deployment_set(None, i64::MAX)
                .unwrap()
                .hidden
                .is_empty()
        );
    }
}
