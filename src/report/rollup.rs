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

    /// What this server last heard from its own upstream as RollupResetGuid, and where its
    /// computers rollup got to (seconds since the epoch; acknowledged by the upstream).
    pub fn rollup_position(&mut self) -> Result<(Option<Guid>, i64), CatalogError> {
        self.rollup_reset_guid()?;
        let get = |key: &str| -> Result<Option<String>, CatalogError> {
            self.conn
                .query_row("SELECT value FROM rollup_meta WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(db)
        };
        Ok((
            get("upstream_reset_guid")?.as_deref().and_then(Guid::parse),
            get("computers_sent_until")?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        ))
    }

    /// Keep what the upstream acknowledged (see [`Journal::rollup_position`]).
    pub fn set_rollup_position(
        &mut self,
        reset: Guid,
        sent_until: i64,
    ) -> Result<(), CatalogError> {
        for (key, value) in [
            ("upstream_reset_guid", reset.to_string()),
            ("computers_sent_until", sent_until.to_string()),
        ] {
            self.conn
                .execute(
                    "INSERT OR REPLACE INTO rollup_meta (key, value) VALUES (?1, ?2)",
                    params![key, value],
                )
                .map_err(db)?;
        }
        Ok(())
    }

    /// The computers (this server's own, under `own_id`, and those rolled up from below)
    /// that synced, reported or arrived at or after `since` (seconds: a computer of the same
    /// second as the last rollup may have come after it, so it goes again), with details.
    pub fn computers_to_roll(
        &self,
        since: i64,
        own_id: Guid,
    ) -> Result<Vec<RolledComputer>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT client_id, dns_name, os_version, os_locale, manufacturer, model,
                 processor, client_version, groups, last_sync, last_status, parent_server
                 FROM computers WHERE registered_at >= ?1 OR COALESCE(last_sync, 0) >= ?1
                 OR COALESCE(last_status, 0) >= ?1 ORDER BY client_id",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([since], |r| {
                let groups: String = r.get(8)?;
                let parent: Option<String> = r.get(11)?;
                Ok(RolledComputer {
                    id: r.get(0)?,
                    parent: parent.as_deref().and_then(Guid::parse).unwrap_or(own_id),
                    last_sync: r.get(9)?,
                    last_status: r.get(10)?,
                    details: Some(Computer {
                        client_id: r.get(0)?,
                        dns_name: r.get(1)?,
                        os_version: r.get(2)?,
                        os_locale: r.get(3)?,
                        manufacturer: r.get(4)?,
                        model: r.get(5)?,
                        processor: r.get(6)?,
                        client_version: r.get(7)?,
                        groups: groups.split(';').filter_map(Guid::parse).collect(),
                    }),
                })
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    /// Every computer with a status to roll up, and its number.
    pub fn rollup_numbers(&self) -> Result<Vec<(String, i64)>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT client_id, rollup_number FROM computers WHERE rollup_number IS NOT NULL
                 ORDER BY client_id",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    /// The whole update status of `computers`, to send as full rollups.
    pub fn statuses(&self, computers: &[String]) -> Result<Vec<RolledStatus>, CatalogError> {
        let mut number = self
            .conn
            .prepare_cached("SELECT rollup_number, detection FROM computers WHERE client_id = ?1")
            .map_err(db)?;
        let mut out = Vec::with_capacity(computers.len());
        for id in computers {
            let Some((rollup_number, detection)) = number
                .query_row([id], |r| Ok((r.get::<_, Option<i64>>(0)?, r.get(1)?)))
                .optional()
                .map_err(db)?
            else {
                continue;
            };
            out.push(RolledStatus {
                id: id.clone(),
                rollup_number: rollup_number.unwrap_or(0),
                full: true,
                detection,
                updates: self.computer_updates(id)?,
            });
        }
        Ok(out)
    }

    /// The servers below that rolled up here (to pass on up with this server's own summary).
    pub fn servers_below(&self) -> Result<Vec<RolledServer>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, name, parent, is_replica, version, last_sync, computers, needing,
                 with_errors, up_to_date FROM downstreams WHERE last_rollup IS NOT NULL
                 ORDER BY id",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<bool>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    [
                        r.get::<_, Option<i64>>(6)?,
                        r.get::<_, Option<i64>>(7)?,
                        r.get::<_, Option<i64>>(8)?,
                        r.get::<_, Option<i64>>(9)?,
                    ],
                ))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, name, parent, replica, version, last_sync, counts) = row.map_err(db)?;
            let (Some(id), Some(parent)) =
                (Guid::parse(&id), parent.as_deref().and_then(Guid::parse))
            else {
                continue;
            };
            let [computers, needing, with_errors, up_to_date] = counts.map(|c| c.unwrap_or(0));
            out.push(RolledServer {
                id,
                name,
                parent,
                is_replica: replica.unwrap_or(false),
                version: version.unwrap_or_default(),
                last_sync,
                computers,
                needing,
                with_errors,
                up_to_date,
            });
        }
        Ok(out)
    }
}
