//! The journal of what clients and downstream servers report: the computers that registered
//! (RegisterComputer) and the events they report (ReportEventBatch), kept before a client is told
//! they were received, the per-computer, per-update state those events imply (WSUS's
//! SummarizationState, with when it changed), and the downstream servers that sync from this
//! node. The status rollup's side of it is in `rollup`.
//!
//! Owns the `computers`, `events`, `update_status`, `downstreams`, `client_groups`,
//! `client_activity` and `rollup_meta` tables. Blocking: call it off the async workers.

use std::collections::HashSet;

use super::sql::{Connection, OptionalExtension, ToArg, params};

use super::{Database, Schema, db};
use crate::catalog::{CatalogError, Guid};
use crate::report::*;

pub(super) const SCHEMA: Schema = Schema {
    tables: TABLES,
    added: &ADDED_COLUMNS,
};

const TABLES: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
CREATE TABLE IF NOT EXISTS computers (
    client_id TEXT PRIMARY KEY,
    dns_name TEXT NOT NULL,
    os_version TEXT NOT NULL,
    os_locale TEXT NOT NULL,
    manufacturer TEXT NOT NULL,
    model TEXT NOT NULL,
    processor TEXT NOT NULL,
    client_version TEXT NOT NULL,
    groups TEXT NOT NULL,
    registered_at INTEGER NOT NULL,
    last_sync INTEGER,
    last_status INTEGER
);
CREATE TABLE IF NOT EXISTS update_status (
    client_id TEXT NOT NULL,
    update_id TEXT NOT NULL,
    state INTEGER NOT NULL,
    changed_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, update_id)
);
CREATE INDEX IF NOT EXISTS update_status_by_update ON update_status (update_id, state);
-- How many updates each computer has in each state, kept by triggers as update_status
-- changes: what the computer lists read, instead of grouping every state on each call.
CREATE TABLE IF NOT EXISTS update_state_counts (
    client_id TEXT NOT NULL,
    state INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (client_id, state)
);
CREATE TRIGGER IF NOT EXISTS update_status_counted_in AFTER INSERT ON update_status BEGIN
    INSERT INTO update_state_counts (client_id, state, count) VALUES (NEW.client_id, NEW.state, 1)
    ON CONFLICT (client_id, state) DO UPDATE SET count = count + 1;
END;
CREATE TRIGGER IF NOT EXISTS update_status_counted_out AFTER DELETE ON update_status BEGIN
    UPDATE update_state_counts SET count = count - 1
    WHERE client_id = OLD.client_id AND state = OLD.state;
END;
CREATE TRIGGER IF NOT EXISTS update_status_counted_moved AFTER UPDATE OF client_id, state
ON update_status WHEN OLD.client_id <> NEW.client_id OR OLD.state <> NEW.state BEGIN
    UPDATE update_state_counts SET count = count - 1
    WHERE client_id = OLD.client_id AND state = OLD.state;
    INSERT INTO update_state_counts (client_id, state, count) VALUES (NEW.client_id, NEW.state, 1)
    ON CONFLICT (client_id, state) DO UPDATE SET count = count + 1;
END;
CREATE TABLE IF NOT EXISTS events (
    client_id TEXT NOT NULL,
    event_instance_id TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    source_id INTEGER NOT NULL,
    update_id TEXT,
    revision_number INTEGER,
    hresult INTEGER NOT NULL,
    time_at_target INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    misc TEXT NOT NULL,
    PRIMARY KEY (client_id, event_instance_id)
);
-- What the status rollup keeps between runs: this node's reset GUID, its position upstream.
CREATE TABLE IF NOT EXISTS rollup_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- What servers below roll up of their computers by operating system (MS-WSUSSS client
-- summaries): how many, when the sender summed them (its clock: a summary is applied once),
-- and per update revision the installs that succeeded and failed, in total and not yet passed
-- on to this node's own upstream.
CREATE TABLE IF NOT EXISTS client_groups (
    server_id TEXT NOT NULL,
    os TEXT NOT NULL,
    count INTEGER NOT NULL,
    sent_at INTEGER NOT NULL,
    PRIMARY KEY (server_id, os)
);
CREATE TABLE IF NOT EXISTS client_activity (
    server_id TEXT NOT NULL,
    os TEXT NOT NULL,
    update_id TEXT NOT NULL,
    revision_number INTEGER NOT NULL,
    succeeded INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    unsent_succeeded INTEGER NOT NULL,
    unsent_failed INTEGER NOT NULL,
    PRIMARY KEY (server_id, os, update_id, revision_number)
);
-- The device ids (hardware and compatible, lower case) clients listed in their driver passes:
-- what a downstream that syncs drivers on demand asks its upstream for; `synced` once asked.
CREATE TABLE IF NOT EXISTS device_ids (
    id TEXT PRIMARY KEY,
    first_seen INTEGER NOT NULL,
    synced INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS downstreams (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    protocol TEXT,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    last_sync INTEGER
);-- Every change an administrator (or a rule) made: who, what, when (state/audit.rs).
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    who TEXT NOT NULL,
    via TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
";

/// Columns added since the first state.db files: (table, column, declaration).
const ADDED_COLUMNS: [(&str, &str, &str); 13] = [
    ("computers", "last_status", "INTEGER"),
    // The server a rolled-up computer reports to (none: this one).
    ("computers", "parent_server", "TEXT"),
    ("computers", "rollup_number", "INTEGER"),
    ("computers", "detection", "INTEGER"),
    ("downstreams", "parent", "TEXT"),
    ("downstreams", "is_replica", "INTEGER"),
    ("downstreams", "version", "TEXT"),
    ("downstreams", "last_rollup", "INTEGER"),
    ("downstreams", "computers", "INTEGER"),
    ("downstreams", "needing", "INTEGER"),
    ("downstreams", "with_errors", "INTEGER"),
    ("downstreams", "up_to_date", "INTEGER"),
    // Its last DownstreamServerRollupServerSummary, as JSON (supersedes the four above).
    ("downstreams", "summary", "TEXT"),
];

pub struct Journal {
    pub(super) conn: Connection,
}

impl Journal {
    pub fn open(database: &Database) -> Result<Journal, CatalogError> {
        let conn = database.connect()?;
        SCHEMA.apply(&conn)?;
        // Counts start from what a file older than them holds; the triggers keep them after.
        conn.execute(
            "INSERT INTO update_state_counts (client_id, state, count)
             SELECT client_id, state, COUNT(*) FROM update_status
             WHERE NOT EXISTS (SELECT 1 FROM update_state_counts)
             GROUP BY client_id, state",
            [],
        )
        .map_err(db)?;
        Ok(Journal { conn })
    }

    /// Record (or refresh) a computer's registration.
    pub fn register(&mut self, c: &Computer, now: i64) -> Result<(), CatalogError> {
        let groups = c
            .groups
            .iter()
            .map(Guid::to_string)
            .collect::<Vec<_>>()
            .join(";");
        self.conn
            .execute(
                "INSERT INTO computers (client_id, dns_name, os_version, os_locale, manufacturer,
                 model, processor, client_version, groups, registered_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (client_id) DO UPDATE SET dns_name = excluded.dns_name,
                 os_version = excluded.os_version, os_locale = excluded.os_locale,
                 manufacturer = excluded.manufacturer, model = excluded.model,
                 processor = excluded.processor, client_version = excluded.client_version,
                 groups = excluded.groups",
                params![
                    c.client_id,
                    c.dns_name,
                    c.os_version,
                    c.os_locale,
                    c.manufacturer,
                    c.model,
                    c.processor,
                    c.client_version,
                    groups,
                    now
                ],
            )
            .map(|_| ())
            .map_err(db)
    }

    /// The client ids of every registered computer.
    /// Keep device ids clients listed (lower case); how many were new.
    pub fn add_device_ids(&mut self, ids: &[String], now: i64) -> Result<usize, CatalogError> {
        let tx = self.conn.transaction().map_err(db)?;
        let mut new = 0;
        for id in ids {
            new += tx
                .execute(
                    "INSERT INTO device_ids (id, first_seen) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    params![id, now],
                )
                .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(new)
    }

    /// Every device id clients listed, and whether it was asked of the upstream already.
    pub fn device_ids(&self) -> Result<Vec<(String, bool)>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, synced FROM device_ids ORDER BY id")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }

    /// The device ids a sync asked its upstream for.
    pub fn mark_device_ids_synced(&mut self, ids: &[String]) -> Result<(), CatalogError> {
        let tx = self.conn.transaction().map_err(db)?;
        for id in ids {
            tx.execute("UPDATE device_ids SET synced = 1 WHERE id = ?1", [id])
                .map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    pub fn registered(&self) -> Result<HashSet<String>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare("SELECT client_id FROM computers")
            .map_err(db)?;
        let ids = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(db)?
            .collect::<Result<HashSet<_>, _>>()
            .map_err(db)?;
        Ok(ids)
    }

    /// Record what a downstream server's call told of it, from `address` at `now`. A call
    /// before any authorization (a cookie of a forgotten downstream) records nothing.
    pub fn downstream_seen(
        &mut self,
        id: &str,
        address: &str,
        seen: &DownstreamSeen,
        now: i64,
    ) -> Result<(), CatalogError> {
        let changed = match seen {
            DownstreamSeen::Authorized { name } => self.conn.execute(
                "INSERT INTO downstreams (id, name, address, first_seen, last_seen)
                 VALUES (?1, ?3, ?2, ?4, ?4)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                 address = excluded.address, last_seen = excluded.last_seen",
                params![id, address, name, now],
            ),
            DownstreamSeen::Cookie { protocol } => self.conn.execute(
                "UPDATE downstreams SET address = ?2, protocol = ?3, last_seen = ?4 WHERE id = ?1",
                params![id, address, protocol, now],
            ),
            DownstreamSeen::Synced => self.conn.execute(
                "UPDATE downstreams SET address = ?2, last_seen = ?3, last_sync = ?3 WHERE id = ?1",
                params![id, address, now],
            ),
        };
        changed.map(|_| ()).map_err(db)
    }

    /// Every downstream server, most recently seen first.
    pub fn downstreams(&self) -> Result<Vec<Downstream>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, name, address, protocol, first_seen, last_seen, last_sync, parent,
                 last_rollup, summary, is_replica FROM downstreams ORDER BY last_seen DESC, id",
            )
            .map_err(db)?;
        let mut listed: Vec<Downstream> = stmt
            .query_map([], |r| {
                let summary = r
                    .get::<_, Option<String>>(9)?
                    .map(|kept| summary_of(Some(&kept)));
                Ok(Downstream {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    address: r.get(2)?,
                    protocol: r.get(3)?,
                    first_seen: r.get(4)?,
                    last_seen: r.get(5)?,
                    last_sync: r.get(6)?,
                    parent: r.get(7)?,
                    last_rollup: r.get(8)?,
                    is_replica: r.get::<_, Option<bool>>(10)?,
                    computers: summary.map(|m| m.computers),
                    needing_updates: summary.map(|m| m.computers_needing),
                    with_errors: summary.map(|m| m.computers_with_errors),
                    up_to_date: summary.map(|m| m.computers_up_to_date),
                    summary,
                    clients: Vec::new(),
                })
            })
            .map_err(db)?
            .collect::<Result<_, _>>()
            .map_err(db)?;
        for d in &mut listed {
            d.clients = self.client_groups(&d.id)?;
        }
        Ok(listed)
    }

    /// The name of each server below by its id in lower case (its id when it gave no name):
    /// how the views name a computer's branch.
    pub fn server_names(&self) -> Result<std::collections::HashMap<String, String>, CatalogError> {
        self.conn
            .prepare("SELECT id, name FROM downstreams")
            .and_then(|mut s| {
                s.query_map([], |r| {
                    let (id, name): (String, String) = (r.get(0)?, r.get(1)?);
                    let name = if name.is_empty() { id.clone() } else { name };
                    Ok((id.to_ascii_lowercase(), name))
                })?
                .collect()
            })
            .map_err(db)
    }

    /// When a computer last scanned.
    pub fn touch_sync(&mut self, client_id: &str, now: i64) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE computers SET last_sync = ?2 WHERE client_id = ?1",
                params![client_id, now],
            )
            .map(|_| ())
            .map_err(db)
    }

    /// Append events durably (one transaction, synced before it returns); an event seen before
    /// (same client, same EventInstanceID) is ignored. Returns how many were new.
    pub fn append(&mut self, events: &[Event], now: i64) -> Result<usize, CatalogError> {
        let tx = self.conn.transaction().map_err(db)?;
        let mut new = 0;
        {
            let mut stmt = tx
                .prepare(
                    "INSERT INTO events (client_id, event_instance_id, event_id,
                     source_id, update_id, revision_number, hresult, time_at_target,
                     received_at, misc) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT DO NOTHING",
                )
                .map_err(db)?;
            let mut state = tx
                .prepare(
                    "INSERT INTO update_status (client_id, update_id, state, changed_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (client_id, update_id) DO UPDATE SET state = excluded.state,
                     changed_at = excluded.changed_at
                     WHERE excluded.changed_at >= update_status.changed_at
                       AND excluded.state <> update_status.state",
                )
                .map_err(db)?;
            let mut next_number = tx
                .prepare(
                    "UPDATE computers SET rollup_number = COALESCE(rollup_number, 0) + 1
                     WHERE client_id = ?1",
                )
                .map_err(db)?;
            let mut status_report = tx
                .prepare(
                    "UPDATE computers SET last_status = ?2
                     WHERE client_id = ?1 AND COALESCE(last_status, 0) < ?2",
                )
                .map_err(db)?;
            for e in events {
                let inserted = stmt
                    .execute(params![
                        e.client_id,
                        e.instance.to_string(),
                        e.event_id,
                        e.source_id,
                        e.update.map(|(u, _)| u.to_string()),
                        e.update.map(|(_, r)| r),
                        e.hresult,
                        e.time,
                        now,
                        e.misc.join("\n"),
                    ])
                    .map_err(db)?;
                new += inserted;
                // A duplicate told its news already; an older event does not undo a newer one.
                if inserted == 0 {
                    continue;
                }
                let mut moved = 0;
                for (update, s) in states_of(e) {
                    moved += state
                        .execute(params![e.client_id, update.to_string(), s.code(), e.time])
                        .map_err(db)?;
                }
                // A new status to roll up: its number moves (GetOutOfSyncComputers).
                if moved > 0 {
                    next_number.execute([&e.client_id]).map_err(db)?;
                }
                if e.event_id == 156 {
                    status_report
                        .execute(params![e.client_id, e.time])
                        .map_err(db)?;
                }
            }
        }
        tx.commit().map_err(db)?;
        Ok(new)
    }

    /// Computers with their update counts per state, `filter`ed, by name.
    pub fn computers(&self, filter: ComputerFilter) -> Result<Vec<ComputerStatus>, CatalogError> {
        let all = self.computers_counted(
            "SELECT client_id, state, count FROM update_state_counts WHERE count > 0",
            "SELECT client_id, dns_name, os_version, manufacturer, model, registered_at,
             last_sync, last_status, parent_server FROM computers ORDER BY dns_name, client_id",
            &[],
        )?;
        Ok(all
            .into_iter()
            .filter(|c| match filter {
                ComputerFilter::All => true,
                ComputerFilter::UpToDate => c.up_to_date(),
                ComputerFilter::With(s) => c.updates.get(s.name()).is_some_and(|n| *n > 0),
            })
            .collect())
    }

    /// The computers `computers` selects (client id, DNS name, OS version, manufacturer,
    /// model, registered, last sync, last status, parent server), in its order, each with its
    /// updates by state as `counts` selects them (client id, state, count); both with `args`.
    fn computers_counted(
        &self,
        counts: &str,
        computers: &str,
        args: &[&dyn ToArg],
    ) -> Result<Vec<ComputerStatus>, CatalogError> {
        let mut by_client: std::collections::HashMap<String, Vec<(i32, u64)>> =
            std::collections::HashMap::new();
        {
            let mut stmt = self.conn.prepare(counts).map_err(db)?;
            let rows = stmt
                .query_map(args, |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i32>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(db)?;
            for row in rows {
                let (client, state, n) = row.map_err(db)?;
                by_client
                    .entry(client)
                    .or_default()
                    .push((state, n.max(0) as u64));
            }
        }
        let mut stmt = self.conn.prepare(computers).map_err(db)?;
        let rows = stmt
            .query_map(args, |r| {
                Ok(ComputerStatus {
                    client_id: r.get(0)?,
                    dns_name: r.get(1)?,
                    os_version: r.get(2)?,
                    manufacturer: r.get(3)?,
                    model: r.get(4)?,
                    registered_at: r.get(5)?,
                    last_sync: r.get(6)?,
                    last_status: r.get(7)?,
                    parent_server: r.get(8)?,
                    updates: Default::default(),
                })
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let mut c = row.map_err(db)?;
            for (code, n) in by_client.remove(&c.client_id).unwrap_or_default() {
                if let Some(state) = UpdateState::from_code(code) {
                    c.updates.insert(state.name(), n);
                }
            }
            out.push(c);
        }
        Ok(out)
    }

    /// Each update's state on one computer, with when it changed (seconds since the epoch).
    pub fn computer_updates(
        &self,
        client_id: &str,
    ) -> Result<Vec<(Guid, UpdateState, i64)>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT update_id, state, changed_at FROM update_status WHERE client_id = ?1
                 ORDER BY update_id",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([client_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i32>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let (update, state, at) = row.map_err(db)?;
            if let (Some(u), Some(s)) = (Guid::parse(&update), UpdateState::from_code(state)) {
                out.push((u, s, at));
            }
        }
        Ok(out)
    }

    /// How many computers have `update` in each state, per server they report to (None:
    /// this one).
    #[allow(clippy::type_complexity)]
    pub fn update_counts(
        &self,
        update: Guid,
    ) -> Result<Vec<(Option<String>, UpdateState, u64)>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT c.parent_server, s.state, COUNT(*) FROM update_status s
                 LEFT JOIN computers c ON c.client_id = s.client_id
                 WHERE s.update_id = ?1 GROUP BY c.parent_server, s.state",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([update.to_string()], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, i32>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let (server, state, n) = row.map_err(db)?;
            if let Some(s) = UpdateState::from_code(state) {
                out.push((server, s, n.max(0) as u64));
            }
        }
        Ok(out)
    }

    /// How many computers (this node's and every one rolled up from below) have each update
    /// in each state: one grouped read of the `(update_id, state)` index, whatever the number
    /// of updates.
    pub fn state_counts_by_update(&self) -> Result<Vec<(Guid, UpdateState, u64)>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT update_id, state, COUNT(*) FROM update_status GROUP BY update_id, state",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i32>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let (update, state, n) = row.map_err(db)?;
            if let (Some(u), Some(s)) = (Guid::parse(&update), UpdateState::from_code(state)) {
                out.push((u, s, n.max(0) as u64));
            }
        }
        Ok(out)
    }

    /// The computers that reported `update` (in `state`, or any), most pressing state first
    /// ([`UpdateState::by_urgency`]), then by name; `limit` of them from `offset` on.
    pub fn update_computers(
        &self,
        update: Guid,
        state: Option<UpdateState>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<UpdateComputer>, CatalogError> {
        let urgency: String = UpdateState::by_urgency()
            .iter()
            .enumerate()
            .map(|(i, s)| format!(" WHEN {} THEN {i}", s.code()))
            .collect();
        let update = update.to_string();
        let code = state.map(UpdateState::code);
        let (filter, args): (&str, Vec<&dyn ToArg>) = match &code {
            Some(code) => ("AND s.state = ?4", vec![&update, &limit, &offset, code]),
            None => ("", vec![&update, &limit, &offset]),
        };
        let sql = format!(
            "SELECT s.client_id, COALESCE(c.dns_name, ''), c.parent_server, s.state,
             s.changed_at FROM update_status s LEFT JOIN computers c ON c.client_id = s.client_id
             WHERE s.update_id = ?1 {filter}
             ORDER BY CASE s.state{urgency} ELSE {} END, COALESCE(c.dns_name, ''), s.client_id
             LIMIT ?2 OFFSET ?3",
            UpdateState::ALL.len()
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(db)?;
        let rows = stmt
            .query_map(&args[..], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i32>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let (client_id, dns_name, parent_server, state, changed_at) = row.map_err(db)?;
            if let Some(state) = UpdateState::from_code(state) {
                out.push(UpdateComputer {
                    client_id,
                    dns_name,
                    parent_server,
                    state,
                    changed_at,
                });
            }
        }
        Ok(out)
    }

    /// One computer by its id (any case), with its update counts per state.
    pub fn computer(&self, client_id: &str) -> Result<Option<ComputerStatus>, CatalogError> {
        let query = ComputerQuery {
            client_id: Some(client_id.to_owned()),
            limit: 1,
            ..ComputerQuery::default()
        };
        Ok(self.computer_page(&query)?.1.pop())
    }

    /// The target groups a computer said it is in when it registered (or as its server rolled
    /// it up); empty for a computer not known.
    pub fn computer_groups(&self, client_id: &str) -> Result<Vec<Guid>, CatalogError> {
        let groups: Option<String> = self
            .conn
            .query_row(
                "SELECT groups FROM computers WHERE client_id = ?1",
                [client_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(db)?;
        Ok(groups
            .unwrap_or_default()
            .split(';')
            .filter_map(Guid::parse)
            .collect())
    }

    /// A page of the computers `query` picks, by name, with their update counts per state;
    /// and how many it picks in all.
    pub fn computer_page(
        &self,
        query: &ComputerQuery,
    ) -> Result<(u64, Vec<ComputerStatus>), CatalogError> {
        // Conditions and their parameters, numbered from ?1; the page's limit and offset
        // follow them (PostgreSQL wants every number up to the highest named).
        let mut conditions: Vec<String> = Vec::new();
        let mut values: Vec<Box<dyn ToArg>> = Vec::new();
        let next = |value: Box<dyn ToArg>, values: &mut Vec<Box<dyn ToArg>>| {
            values.push(value);
            values.len()
        };
        match &query.server {
            ServerChoice::Any => {}
            ServerChoice::Local => conditions.push("c.parent_server IS NULL".into()),
            ServerChoice::Below(id) => {
                let n = next(Box::new(id.to_ascii_lowercase()), &mut values);
                conditions.push(format!("LOWER(c.parent_server) = ?{n}"));
            }
        }
        if let Some(id) = &query.client_id {
            let n = next(Box::new(id.to_ascii_lowercase()), &mut values);
            conditions.push(format!("LOWER(c.client_id) = ?{n}"));
        }
        if let Some(name) = query.name.as_deref().filter(|n| !n.is_empty()) {
            // LIKE's own characters taken literally; ASCII case folded as SQLite's LOWER does.
            let escaped = name
                .to_ascii_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            let n = next(Box::new(format!("%{escaped}%")), &mut values);
            conditions.push(format!(
                "(LOWER(c.dns_name) LIKE ?{n} ESCAPE '\\' OR LOWER(c.client_id) LIKE ?{n} ESCAPE '\\')"
            ));
        }
        match query.filter {
            ComputerFilter::All => {}
            ComputerFilter::With(state) => {
                let n = next(Box::new(state.code()), &mut values);
                conditions.push(format!(
                    "EXISTS (SELECT 1 FROM update_state_counts k WHERE k.client_id = c.client_id
                     AND k.state = ?{n} AND k.count > 0)"
                ));
            }
            ComputerFilter::UpToDate => {
                let outstanding: Vec<String> = UpdateState::ALL
                    .iter()
                    .filter(|s| s.is_outstanding())
                    .map(|s| s.code().to_string())
                    .collect();
                conditions.push(format!(
                    "NOT EXISTS (SELECT 1 FROM update_state_counts k
                     WHERE k.client_id = c.client_id AND k.state IN ({}) AND k.count > 0)",
                    outstanding.join(", ")
                ));
            }
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        };
        let mut args: Vec<&dyn ToArg> = values.iter().map(|v| &**v).collect();
        let total: i64 = self
            .conn
            .query_row(
                &format!("SELECT COUNT(*) FROM computers c {filter}"),
                &args[..],
                |r| r.get(0),
            )
            .map_err(db)?;
        let (limit, offset) = (query.limit, query.offset);
        let (l, o) = (args.len() + 1, args.len() + 2);
        args.push(&limit);
        args.push(&offset);
        let page = format!(
            "SELECT c.client_id FROM computers c {filter}
             ORDER BY c.dns_name, c.client_id LIMIT ?{l} OFFSET ?{o}"
        );
        let out = self.computers_counted(
            &format!(
                "SELECT k.client_id, k.state, k.count FROM update_state_counts k
                 WHERE k.count > 0 AND k.client_id IN ({page})"
            ),
            &format!(
                "SELECT c.client_id, c.dns_name, c.os_version, c.manufacturer, c.model,
                 c.registered_at, c.last_sync, c.last_status, c.parent_server FROM computers c
                 {filter} ORDER BY c.dns_name, c.client_id LIMIT ?{l} OFFSET ?{o}"
            ),
            &args,
        )?;
        Ok((total.max(0) as u64, out))
    }

    /// How many events are kept (all clients).
    pub fn event_count(&self) -> Result<u64, CatalogError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downstream_servers_are_recorded_from_their_authorization_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&crate::state::Database::sqlite(dir.path())).unwrap();
        // Not authorized here (a cookie from before a rebuilt state.db): nothing recorded.
        let cookie = DownstreamSeen::Cookie {
            protocol: "1.20".into(),
        };
        j.downstream_seen("a", "10.0.0.1", &cookie, 5).unwrap();
        assert!(j.downstreams().unwrap().is_empty());
        let authorized = |name: &str| DownstreamSeen::Authorized { name: name.into() };
        j.downstream_seen("a", "10.0.0.1", &authorized("branch-a"), 10)
            .unwrap();
        j.downstream_seen("b", "10.0.0.2", &authorized("branch-b"), 11)
            .unwrap();
        j.downstream_seen("a", "10.0.0.9", &cookie, 12).unwrap();
        j.downstream_seen("a", "10.0.0.9", &DownstreamSeen::Synced, 13)
            .unwrap();
        let listed = j.downstreams().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(
            listed[0],
            Downstream {
                id: "a".into(),
                name: "branch-a".into(),
                address: "10.0.0.9".into(),
                protocol: Some("1.20".into()),
                first_seen: 10,
                last_seen: 13,
                last_sync: Some(13),
                parent: None,
                last_rollup: None,
                is_replica: None,
                computers: None,
                needing_updates: None,
                with_errors: None,
                up_to_date: None,
                summary: None,
                clients: Vec::new(),
            }
        );
        assert_eq!(
            (listed[1].protocol.as_deref(), listed[1].last_sync),
            (None, None)
        );
        // Authorizing again keeps when it was first seen.
        j.downstream_seen("a", "10.0.0.9", &authorized("branch-a2"), 20)
            .unwrap();
        let a = j.downstreams().unwrap().remove(0);
        assert_eq!(
            (a.name.as_str(), a.first_seen, a.last_seen),
            ("branch-a2", 10, 20)
        );
    }

    /// A state.db from before the counts gets them from its states when it is opened; the
    /// triggers keep them as states come, change and go.
    #[test]
    fn state_counts_are_made_from_an_older_file_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let database = crate::state::Database::sqlite(dir.path());
        let j = Journal::open(&database).unwrap();
        let counts = |j: &Journal| -> Vec<(String, i64, i64)> {
            j.conn
                .prepare("SELECT client_id, state, count FROM update_state_counts ORDER BY 1, 2")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        j.conn
            .execute_batch(
                "INSERT INTO update_status VALUES ('a', 'u1', 4, 1), ('a', 'u2', 4, 1),
                 ('b', 'u1', 5, 1);",
            )
            .unwrap();
        assert_eq!(
            counts(&j),
            [("a".into(), 4, 2), ("b".into(), 5, 1)],
            "kept by the triggers"
        );
        // As a file from before the counts: no table, no triggers.
        j.conn
            .execute_batch(
                "DROP TRIGGER update_status_counted_in; DROP TRIGGER update_status_counted_out;
                 DROP TRIGGER update_status_counted_moved; DROP TABLE update_state_counts;
                 INSERT INTO update_status VALUES ('b', 'u2', 2, 1);",
            )
            .unwrap();
        drop(j);
        let j = Journal::open(&database).unwrap();
        assert_eq!(
            counts(&j),
            [("a".into(), 4, 2), ("b".into(), 2, 1), ("b".into(), 5, 1)]
        );
        j.conn
            .execute_batch(
                "UPDATE update_status SET state = 5 WHERE client_id = 'a' AND update_id = 'u1';
                 DELETE FROM update_status WHERE client_id = 'b' AND update_id = 'u1';",
            )
            .unwrap();
        assert_eq!(
            counts(&j),
            [
                ("a".into(), 4, 1),
                ("a".into(), 5, 1),
                ("b".into(), 2, 1),
                ("b".into(), 5, 0)
            ]
        );
    }

    #[test]
    fn events_are_kept_once_and_computers_register() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&crate::state::Database::sqlite(dir.path())).unwrap();
        let c = Computer {
            client_id: "c1".into(),
            dns_name: "pc1.branch.example".into(),
            groups: vec![crate::catalog::UNASSIGNED_COMPUTERS],
            ..Computer::default()
        };
        j.register(&c, 10).unwrap();
        j.register(&c, 20).unwrap();
        assert_eq!(j.registered().unwrap().len(), 1);
        let e = Event {
            client_id: "c1".into(),
            instance: Guid(5),
            event_id: 147,
            source_id: 101,
            update: None,
            hresult: 0,
            time: 100,
            misc: vec!["A=1".into()],
        };
        assert_eq!(j.append(&[e.clone(), e.clone()], 200).unwrap(), 1);
        assert_eq!(
            j.append(&[e], 300).unwrap(),
            0,
            "a redelivered event is ignored"
        );
        drop(j);
        let j = Journal::open(&crate::state::Database::sqlite(dir.path())).unwrap();
        assert_eq!(j.event_count().unwrap(), 1, "kept across a reopen");
        assert!(j.registered().unwrap().contains("c1"));
    }

    /// The admin views' reads: every update's counts in one grouped read, one update's
    /// computers most pressing state first, a page of computers by server, state and name.
    #[test]
    fn counts_and_pages_of_computers() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&crate::state::Database::sqlite(dir.path())).unwrap();
        let (a, b) = (Guid(0xa), Guid(0xb));
        for (n, id) in ["c1", "c2", "c3", "x_1"].into_iter().enumerate() {
            let c = Computer {
                client_id: id.into(),
                dns_name: format!("{id}.branch.example"),
                groups: vec![crate::catalog::UNASSIGNED_COMPUTERS],
                ..Computer::default()
            };
            j.register(&c, 10).unwrap();
            // c1 needs a, c2 installed it, c3 failed it, x_1 needs it; all need b.
            let tag = ["U", "V", "g", "U"][n];
            let event = Event {
                client_id: id.into(),
                instance: Guid(n as u128 + 1),
                event_id: 156,
                source_id: 101,
                update: None,
                hresult: 0,
                time: 100,
                misc: vec![format!("{tag}={a}"), format!("U={b}")],
            };
            j.append(&[event], 100).unwrap();
        }
        let mut counts = j.state_counts_by_update().unwrap();
        counts.sort();
        assert_eq!(
            counts,
            [
                (a, UpdateState::NotInstalled, 2),
                (a, UpdateState::Installed, 1),
                (a, UpdateState::Failed, 1),
                (b, UpdateState::NotInstalled, 4)
            ]
        );
        let order: Vec<(String, UpdateState)> = j
            .update_computers(a, None, 0, 10)
            .unwrap()
            .into_iter()
            .map(|c| (c.client_id, c.state))
            .collect();
        assert_eq!(
            order,
            [
                ("c1".into(), UpdateState::NotInstalled),
                ("x_1".into(), UpdateState::NotInstalled),
                ("c3".into(), UpdateState::Failed),
                ("c2".into(), UpdateState::Installed)
            ]
        );
        let failed = j
            .update_computers(a, Some(UpdateState::Failed), 0, 10)
            .unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(
            j.update_computers(a, None, 1, 2).unwrap()[0].client_id,
            "x_1"
        );

        let page = |query: ComputerQuery| {
            let (total, list) = j.computer_page(&query).unwrap();
            let ids: Vec<String> = list.into_iter().map(|c| c.client_id).collect();
            (total, ids)
        };
        let needing = ComputerQuery {
            filter: ComputerFilter::With(UpdateState::NotInstalled),
            ..ComputerQuery::default()
        };
        assert_eq!(page(needing.clone()).0, 4);
        let failing = ComputerQuery {
            filter: ComputerFilter::With(UpdateState::Failed),
            ..ComputerQuery::default()
        };
        assert_eq!(page(failing), (1, vec!["c3".to_owned()]));
        let named = |name: &str| ComputerQuery {
            name: Some(name.into()),
            ..ComputerQuery::default()
        };
        assert_eq!(page(named("X_1")).1, ["x_1"]);
        assert_eq!(page(named("c_")).0, 0, "LIKE's _ is taken literally");
        let second = ComputerQuery {
            offset: 1,
            limit: 2,
            ..ComputerQuery::default()
        };
        assert_eq!(page(second), (4, vec!["c2".to_owned(), "c3".to_owned()]));
        let below = ComputerQuery {
            server: ServerChoice::Below("elsewhere".into()),
            ..ComputerQuery::default()
        };
        assert_eq!(page(below).0, 0);
        let local = ComputerQuery {
            server: ServerChoice::Local,
            ..ComputerQuery::default()
        };
        assert_eq!(page(local).0, 4);
        let c3 = j.computer("C3").unwrap().unwrap();
        assert_eq!(c3.updates.get("failed"), Some(&1));
        assert_eq!(
            j.computer_groups(&c3.client_id).unwrap(),
            [crate::catalog::UNASSIGNED_COMPUTERS]
        );
        assert_eq!(j.computer("nobody").unwrap(), None);
    }

    /// Status events and install events set each update's state on the computer, with the
    /// time it changed; a redelivered or older event changes nothing; the lists and counts
    /// of the admin views follow.
    #[test]
    fn events_move_update_states() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&crate::state::Database::sqlite(dir.path())).unwrap();
        for id in ["c1", "c2"] {
            let c = Computer {
                client_id: id.into(),
                dns_name: format!("{id}.branch.example"),
                ..Computer::default()
            };
            j.register(&c, 10).unwrap();
        }
        let (a, b, c) = (Guid(0xa), Guid(0xb), Guid(0xc));
        let event =
            |client: &str, n: u128, id: i32, update: Option<Guid>, time: i64, misc: &[&str]| {
                Event {
                    client_id: client.into(),
                    instance: Guid(n),
                    event_id: id,
                    source_id: 101,
                    update: update.map(|u| (u, 100)),
                    hresult: 0,
                    time,
                    misc: misc.iter().map(|m| m.to_string()).collect(),
                }
            };
        let status = event(
            "c1",
            1,
            156,
            None,
            100,
            &[&format!("U={a};{b}"), &format!("V={c}"), "Q=1"],
        );
        assert_eq!(
            states_of(&status),
            vec![
                (a, UpdateState::NotInstalled),
                (b, UpdateState::NotInstalled),
                (c, UpdateState::Installed)
            ]
        );
        j.append(&[status], 1000).unwrap();
        j.append(
            &[
                event("c1", 2, 183, Some(a), 200, &[]),
                event("c1", 3, 182, Some(b), 200, &[]),
                // Older than what is known of c: ignored.
                event("c1", 4, 182, Some(c), 50, &[]),
                event("c2", 5, 184, Some(a), 300, &[]),
            ],
            1000,
        )
        .unwrap();
        let states = j.computer_updates("c1").unwrap();
        assert_eq!(
            states,
            vec![
                (a, UpdateState::Installed, 200),
                (b, UpdateState::Failed, 200),
                (c, UpdateState::Installed, 100)
            ]
        );
        let all = j.computers(ComputerFilter::All).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].last_status, Some(100));
        assert_eq!(all[0].updates.get("installed"), Some(&2));
        assert_eq!(all[0].updates.get("failed"), Some(&1));
        let failing = j
            .computers(ComputerFilter::parse(Some("failed")).unwrap())
            .unwrap();
        assert_eq!(
            failing
                .iter()
                .map(|c| c.client_id.as_str())
                .collect::<Vec<_>>(),
            ["c1"]
        );
        let done = j.computers(ComputerFilter::UpToDate).unwrap();
        assert_eq!(done.len(), 0, "c2 waits for a restart");
        let mut counts = j.update_counts(a).unwrap();
        counts.sort();
        assert_eq!(
            counts,
            vec![
                (None, UpdateState::Installed, 1),
                (None, UpdateState::InstalledPendingReboot, 1)
            ]
        );
        assert_eq!(ComputerFilter::parse(Some("bogus")), None);
    }
}
