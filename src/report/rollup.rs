//! What downstream servers roll up (MS-WSUSSS §3.1.4.13–17), kept in the same tables as this
//! node's own computers: a rolled-up computer is a `computers` row whose `parent_server` is
//! the downstream server it reports to, its updates are `update_status` rows, and each server
//! below (children and their descendants) is a `downstreams` row with its summary. So the
//! views show every computer of the hierarchy, and a regional node has everything to roll up
//! further.

use std::collections::HashSet;

use rusqlite::{OptionalExtension, params};

use super::{Computer, Journal, UpdateState, db};
use crate::catalog::{CatalogError, Guid};

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
    pub computers: i64,
    pub needing: i64,
    pub with_errors: i64,
    pub up_to_date: i64,
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

impl Journal {
    /// The GUID that, when it changes, tells downstream servers this one lost what they sent
    /// (made once, kept in state.db).
    pub fn rollup_reset_guid(&mut self) -> Result<Guid, CatalogError> {
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS rollup_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            )
            .map_err(db)?;
        let known: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM rollup_meta WHERE key = 'reset_guid'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        if let Some(guid) = known.as_deref().and_then(Guid::parse) {
            return Ok(guid);
        }
        let guid = Guid::random();
        self.conn
            .execute(
                "INSERT OR REPLACE INTO rollup_meta (key, value) VALUES ('reset_guid', ?1)",
                [guid.to_string()],
            )
            .map_err(db)?;
        Ok(guid)
    }

    /// Whether `id` is a server below this one (it authorized here, or was rolled up).
    pub fn knows_server(&self, id: Guid) -> Result<bool, CatalogError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM downstreams WHERE lower(id) = ?1",
                [id.to_string()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(db)
    }

    /// Keep the summaries of the servers below (one transaction).
    pub fn roll_servers(&mut self, servers: &[RolledServer], now: i64) -> Result<(), CatalogError> {
        let tx = self.conn.transaction().map_err(db)?;
        for s in servers {
            tx.execute(
                "INSERT INTO downstreams (id, name, address, first_seen, last_seen, last_sync,
                 parent, is_replica, version, last_rollup, computers, needing, with_errors,
                 up_to_date)
                 VALUES (?1, ?2, '', ?3, ?3, ?4, ?5, ?6, ?7, ?3, ?8, ?9, ?10, ?11)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                 last_sync = COALESCE(excluded.last_sync, downstreams.last_sync),
                 parent = excluded.parent, is_replica = excluded.is_replica,
                 version = excluded.version, last_rollup = excluded.last_rollup,
                 computers = excluded.computers, needing = excluded.needing,
                 with_errors = excluded.with_errors, up_to_date = excluded.up_to_date",
                params![
                    s.id.to_string(),
                    s.name,
                    now,
                    s.last_sync,
                    s.parent.to_string(),
                    s.is_replica,
                    s.version,
                    s.computers,
                    s.needing,
                    s.with_errors,
                    s.up_to_date
                ],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    /// Keep what downstream servers say of their computers (one transaction): a computer is
    /// replaced when this report is not older than what is kept. Returns the computers that
    /// are new here (or changed parent) without details: the sender must send them again with
    /// details (MS-WSUSSS NewParent).
    pub fn roll_computers(
        &mut self,
        computers: &[RolledComputer],
        now: i64,
    ) -> Result<Vec<String>, CatalogError> {
        let tx = self.conn.transaction().map_err(db)?;
        let mut need_details = Vec::new();
        for c in computers {
            let kept: Option<(Option<i64>, Option<String>)> = tx
                .query_row(
                    "SELECT last_sync, parent_server FROM computers WHERE client_id = ?1",
                    [&c.id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(db)?;
            let parent = c.parent.to_string();
            let moved = match &kept {
                None => true,
                Some((_, p)) => p.as_deref() != Some(parent.as_str()),
            };
            if kept
                .as_ref()
                .is_some_and(|(sync, _)| sync.unwrap_or(0) > c.last_sync.unwrap_or(0))
            {
                continue;
            }
            match (&c.details, kept.is_some()) {
                (Some(d), _) => {
                    tx.execute(
                        "INSERT INTO computers (client_id, dns_name, os_version, os_locale,
                         manufacturer, model, processor, client_version, groups, registered_at,
                         last_sync, last_status, parent_server)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                         ON CONFLICT (client_id) DO UPDATE SET dns_name = excluded.dns_name,
                         os_version = excluded.os_version, os_locale = excluded.os_locale,
                         manufacturer = excluded.manufacturer, model = excluded.model,
                         processor = excluded.processor,
                         client_version = excluded.client_version, groups = excluded.groups,
                         last_sync = excluded.last_sync, last_status = excluded.last_status,
                         parent_server = excluded.parent_server",
                        params![
                            c.id,
                            d.dns_name,
                            d.os_version,
                            d.os_locale,
                            d.manufacturer,
                            d.model,
                            d.processor,
                            d.client_version,
                            d.groups
                                .iter()
                                .map(Guid::to_string)
                                .collect::<Vec<_>>()
                                .join(";"),
                            now,
                            c.last_sync,
                            c.last_status,
                            parent
                        ],
                    )
                    .map_err(db)?;
                }
                (None, true) if !moved => {
                    tx.execute(
                        "UPDATE computers SET last_sync = ?2, last_status = ?3 WHERE client_id = ?1",
                        params![c.id, c.last_sync, c.last_status],
                    )
                    .map_err(db)?;
                }
                (None, _) => need_details.push(c.id.clone()),
            }
        }
        tx.commit().map_err(db)?;
        Ok(need_details)
    }

    /// Of `numbers` (computer, the sender's rollup number for it), the computers below
    /// `parent` whose last status received here has another number: what the sender must
    /// send again.
    pub fn out_of_sync(
        &self,
        parent: Guid,
        numbers: &[(String, i64)],
    ) -> Result<Vec<String>, CatalogError> {
        // `parent` and every server below it.
        let mut below: HashSet<String> = HashSet::from([parent.to_string()]);
        loop {
            let more: Vec<String> = self
                .conn
                .prepare("SELECT lower(id), parent FROM downstreams")
                .and_then(|mut s| {
                    s.query_map([], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db)?
                .into_iter()
                .filter(|(id, p)| {
                    !below.contains(id) && p.as_deref().is_some_and(|p| below.contains(p))
                })
                .map(|(id, _)| id)
                .collect();
            if more.is_empty() {
                break;
            }
            below.extend(more);
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT parent_server, rollup_number FROM computers WHERE client_id = ?1",
            )
            .map_err(db)?;
        let mut out = Vec::new();
        for (id, number) in numbers {
            let kept: Option<(Option<String>, Option<i64>)> = stmt
                .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(db)?;
            if let Some((Some(p), kept)) = kept
                && below.contains(&p.to_ascii_lowercase())
                && kept != Some(*number)
            {
                out.push(id.clone());
            }
        }
        Ok(out)
    }

    /// Keep computers' update states (one transaction): a full rollup replaces what is kept
    /// of the computer; a state is replaced unless what is kept changed later. Computers not
    /// rolled up before are ignored.
    pub fn roll_status(&mut self, statuses: &[RolledStatus]) -> Result<(), CatalogError> {
        let tx = self.conn.transaction().map_err(db)?;
        for s in statuses {
            let known = tx
                .execute(
                    "UPDATE computers SET rollup_number = ?2, detection = ?3 WHERE client_id = ?1",
                    params![s.id, s.rollup_number, s.detection],
                )
                .map_err(db)?;
            if known == 0 {
                continue;
            }
            if s.full {
                tx.execute("DELETE FROM update_status WHERE client_id = ?1", [&s.id])
                    .map_err(db)?;
            }
            for (update, state, changed) in &s.updates {
                tx.execute(
                    "INSERT INTO update_status (client_id, update_id, state, changed_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (client_id, update_id) DO UPDATE SET state = excluded.state,
                     changed_at = excluded.changed_at
                     WHERE excluded.changed_at >= update_status.changed_at",
                    params![s.id, update.to_string(), state.code(), changed],
                )
                .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }
}
