//! What clients tell a node about themselves: the computers that registered (RegisterComputer)
//! and the events they report (ReportEventBatch), kept in `data_dir/state.db` before a client is
//! told they were received; and the downstream servers that sync from it (MS-WSUSSS). The
//! status rollup upstream builds on this journal later.
//!
//! Owns the `computers`, `events` and `downstreams` tables. Blocking: call it off the async workers. May call
//! `catalog` (ids), `error`.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{Connection, params};

use crate::catalog::{CatalogError, Guid};

const SCHEMA: &str = "
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
    last_sync INTEGER
);
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
CREATE TABLE IF NOT EXISTS downstreams (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    protocol TEXT,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    last_sync INTEGER
);
";

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

fn db(e: rusqlite::Error) -> CatalogError {
    CatalogError::Store(e.to_string())
}

pub struct Journal {
    conn: Connection,
}

impl Journal {
    pub fn open(data_dir: &Path) -> Result<Journal, CatalogError> {
        let conn = Connection::open(data_dir.join("state.db")).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
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
                "SELECT id, name, address, protocol, first_seen, last_seen, last_sync
                 FROM downstreams ORDER BY last_seen DESC, id",
            )
            .map_err(db)?;
        stmt.query_map([], |r| {
            Ok(Downstream {
                id: r.get(0)?,
                name: r.get(1)?,
                address: r.get(2)?,
                protocol: r.get(3)?,
                first_seen: r.get(4)?,
                last_seen: r.get(5)?,
                last_sync: r.get(6)?,
            })
        })
        .map_err(db)?
        .collect::<Result<Vec<_>, _>>()
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
                    "INSERT OR IGNORE INTO events (client_id, event_instance_id, event_id,
                     source_id, update_id, revision_number, hresult, time_at_target,
                     received_at, misc) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(db)?;
            for e in events {
                new += stmt
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
            }
        }
        tx.commit().map_err(db)?;
        Ok(new)
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
        let mut j = Journal::open(dir.path()).unwrap();
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

    #[test]
    fn events_are_kept_once_and_computers_register() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
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
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.event_count().unwrap(), 1, "kept across a reopen");
        assert!(j.registered().unwrap().contains("c1"));
    }
}
