//! The status rollup's side of the journal (MS-WSUSSS §3.1.4.13–17): what downstream servers
//! roll up is kept in the same tables as this node's own computers. A rolled-up computer is a
//! `computers` row whose `parent_server` is the downstream server it reports to, its updates are
//! `update_status` rows, and each server below (children and their descendants) is a
//! `downstreams` row with its summary. So the views show every computer of the hierarchy, and a
//! regional node has everything to roll up further.

use std::collections::HashSet;

use super::sql::{OptionalExtension, params};

use super::{Journal, Meta, db};
use crate::catalog::{CatalogError, Guid};
use crate::report::*;

/// What the status rollup keeps between runs: this node's reset GUID, its position upstream.
const ROLLUP_META: Meta = Meta("rollup_meta");

impl Journal {
    /// The GUID that, when it changes, tells downstream servers this one lost what they sent
    /// (made once, kept in state.db).
    pub fn rollup_reset_guid(&mut self) -> Result<Guid, CatalogError> {
        if let Some(guid) = self.meta("reset_guid")?.as_deref().and_then(Guid::parse) {
            return Ok(guid);
        }
        let guid = Guid::random();
        self.set_meta("reset_guid", &guid.to_string())?;
        Ok(guid)
    }

    /// Forget every computer and update state rolled up from below, and this node's reset
    /// GUID, as a state.db restored from before they came would: on its next rollup every
    /// downstream server sees a new reset GUID and sends everything again. What an operator
    /// does to rebuild the hierarchy's view from the branches.
    pub fn reset_rollup(&mut self) -> Result<(), CatalogError> {
        self.conn
            .execute_batch(
                "BEGIN;
                 DELETE FROM update_status WHERE client_id IN
                    (SELECT client_id FROM computers WHERE parent_server IS NOT NULL);
                 DELETE FROM computers WHERE parent_server IS NOT NULL;
                 DELETE FROM rollup_meta WHERE key = 'reset_guid';
                 COMMIT;",
            )
            .map_err(db)
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

    /// Keep the summaries of the servers below (one transaction), unless what is kept of a
    /// server was rolled up later (a relayed old summary).
    pub fn roll_servers(&mut self, servers: &[RolledServer], now: i64) -> Result<(), CatalogError> {
        let tx = self.conn.transaction().map_err(db)?;
        for s in servers {
            tx.execute(
                "INSERT INTO downstreams (id, name, address, first_seen, last_seen, last_sync,
                 parent, is_replica, version, last_rollup, summary)
                 VALUES (?1, ?2, '', ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                 last_sync = COALESCE(excluded.last_sync, downstreams.last_sync),
                 parent = excluded.parent, is_replica = excluded.is_replica,
                 version = excluded.version, last_rollup = excluded.last_rollup,
                 summary = excluded.summary
                 WHERE downstreams.last_rollup IS NULL
                 OR excluded.last_rollup >= downstreams.last_rollup",
                params![
                    s.id.to_string(),
                    s.name,
                    now,
                    s.last_sync,
                    s.parent.to_string(),
                    s.is_replica,
                    s.version,
                    s.last_rollup.unwrap_or(now),
                    s.summary.to_json().to_string()
                ],
            )
            .map_err(db)?;
            let server = s.id.to_string();
            for c in &s.clients {
                let os = c.os.key();
                // Applied already (a request sent again after its answer was lost)?
                let applied: Option<i64> = tx
                    .query_row(
                        "SELECT sent_at FROM client_groups WHERE server_id = ?1 AND os = ?2",
                        params![server, os],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db)?;
                if applied.is_some_and(|at| at >= s.sent_at) {
                    continue;
                }
                tx.execute(
                    "INSERT INTO client_groups (server_id, os, count, sent_at)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (server_id, os)
                     DO UPDATE SET count = excluded.count, sent_at = excluded.sent_at",
                    params![server, os, c.count, s.sent_at],
                )
                .map_err(db)?;
                for a in &c.activity {
                    tx.execute(
                        "INSERT INTO client_activity (server_id, os, update_id, revision_number,
                         succeeded, failed, unsent_succeeded, unsent_failed)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5, ?6)
                         ON CONFLICT (server_id, os, update_id, revision_number) DO UPDATE SET
                         succeeded = client_activity.succeeded + excluded.succeeded,
                         failed = client_activity.failed + excluded.failed,
                         unsent_succeeded = client_activity.unsent_succeeded + excluded.succeeded,
                         unsent_failed = client_activity.unsent_failed + excluded.failed",
                        params![
                            server,
                            os,
                            a.update.to_string(),
                            a.revision,
                            a.succeeded,
                            a.failed
                        ],
                    )
                    .map_err(db)?;
                }
            }
        }
        tx.commit().map_err(db)
    }

    /// This server's own computers by operating system, with their installs reported in the
    /// events after row `after` up to row `upto` of the journal.
    pub fn own_clients(&self, after: i64, upto: i64) -> Result<Vec<ClientSummary>, CatalogError> {
        let mut groups: std::collections::BTreeMap<OsGroup, ClientSummary> = Default::default();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT os_version, os_locale, processor, COUNT(*) FROM computers
                 WHERE parent_server IS NULL GROUP BY 1, 2, 3",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(db)?;
        for row in rows {
            let (version, locale, processor, count) = row.map_err(db)?;
            let os = OsGroup::of(&version, &locale, &processor);
            let group = groups.entry(os.clone()).or_insert(ClientSummary {
                os,
                count: 0,
                activity: Vec::new(),
            });
            // Registrations that differ only in how they spell the version are one group.
            group.count += count;
        }
        let list = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
        let (succeeded, failed) = (list(&INSTALL_SUCCEEDED), list(&INSTALL_FAILED));
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT c.os_version, c.os_locale, c.processor, e.update_id, e.revision_number,
                 CAST(SUM(CASE WHEN e.event_id IN ({succeeded}) THEN 1 ELSE 0 END) AS BIGINT),
                 CAST(SUM(CASE WHEN e.event_id IN ({failed}) THEN 1 ELSE 0 END) AS BIGINT)
                 FROM events e JOIN computers c ON c.client_id = e.client_id
                 WHERE e.rowid > ?1 AND e.rowid <= ?2 AND c.parent_server IS NULL
                 AND e.update_id IS NOT NULL AND e.event_id IN ({succeeded}, {failed})
                 GROUP BY 1, 2, 3, 4, 5 ORDER BY 4, 5"
            ))
            .map_err(db)?;
        let rows = stmt
            .query_map([after, upto], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, u32>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .map_err(db)?;
        for row in rows {
            let (version, locale, processor, update, revision, succeeded, failed) =
                row.map_err(db)?;
            let (Some(update), Some(group)) = (
                Guid::parse(&update),
                groups.get_mut(&OsGroup::of(&version, &locale, &processor)),
            ) else {
                continue;
            };
            group.add(Activity {
                update,
                revision,
                succeeded,
                failed,
            });
        }
        Ok(groups.into_values().collect())
    }

    /// The last journal row whose installs the upstream acknowledged, and the rollup under
    /// way, if one was sent without an acknowledgement: (last row it covers, its
    /// LastRollupTime), to be sent again as it was.
    pub fn activity_position(&self) -> Result<(i64, Option<(i64, i64)>), CatalogError> {
        let sent: i64 = self
            .meta("activity_sent_until")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let pending = self.meta("activity_pending")?.and_then(|v| {
            let (upto, at) = v.split_once(' ')?;
            Some((upto.parse().ok()?, at.parse().ok()?))
        });
        Ok((sent, pending))
    }

    /// Client events kept here that the upstream has not acknowledged yet (the rows after the
    /// acknowledged installs), and the computers this node knows.
    pub fn backlog(&self) -> Result<(u64, u64), CatalogError> {
        let (sent, _) = self.activity_position()?;
        self.conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM events WHERE rowid > ?1),
                 (SELECT COUNT(*) FROM computers)",
                [sent],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
            )
            .map(|(pending, computers)| (pending.max(0) as u64, computers.max(0) as u64))
            .map_err(db)
    }

    /// Start a rollup of the installs up to the newest journal row, stamped `at` (seconds) or,
    /// when a rollup already went out stamped as late, one second after that one: the upstream
    /// applies a summary once per stamp, so two rollups within a second must not share one.
    /// Returns (the row, the stamp).
    pub fn begin_activity(&mut self, at: i64) -> Result<(i64, i64), CatalogError> {
        let upto: i64 = self
            .conn
            .query_row("SELECT COALESCE(MAX(rowid), 0) FROM events", [], |r| {
                r.get(0)
            })
            .map_err(db)?;
        let last: Option<i64> = self
            .meta("activity_last_stamp")?
            .and_then(|v| v.parse().ok());
        let stamp = last.map_or(at, |last| at.max(last + 1));
        self.set_meta("activity_last_stamp", &stamp.to_string())?;
        self.set_meta("activity_pending", &format!("{upto} {stamp}"))?;
        Ok((upto, stamp))
    }

    /// The upstream acknowledged the installs up to row `upto`.
    pub fn activity_acknowledged(&mut self, upto: i64) -> Result<(), CatalogError> {
        self.set_meta("activity_sent_until", &upto.to_string())?;
        self.conn
            .execute("DELETE FROM rollup_meta WHERE key = 'activity_pending'", [])
            .map_err(db)?;
        Ok(())
    }

    /// The upstream acknowledged the client summaries of servers below that this server
    /// passed on: they are no longer owed.
    pub fn forwarded(&mut self, servers: &[RolledServer]) -> Result<(), CatalogError> {
        let tx = self.conn.transaction().map_err(db)?;
        for s in servers {
            for c in &s.clients {
                for a in &c.activity {
                    tx.execute(
                        "UPDATE client_activity SET unsent_succeeded = unsent_succeeded - ?5,
                         unsent_failed = unsent_failed - ?6
                         WHERE server_id = ?1 AND os = ?2 AND update_id = ?3
                         AND revision_number = ?4",
                        params![
                            s.id.to_string(),
                            c.os.key(),
                            a.update.to_string(),
                            a.revision,
                            a.succeeded,
                            a.failed
                        ],
                    )
                    .map_err(db)?;
                }
            }
        }
        tx.commit().map_err(db)
    }

    /// Each operating system group of a server below, with all its installs.
    pub fn client_groups(&self, server: &str) -> Result<Vec<ClientGroupTotals>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT g.os, g.count, CAST(COALESCE(SUM(a.succeeded), 0) AS BIGINT),
                 CAST(COALESCE(SUM(a.failed), 0) AS BIGINT)
                 FROM client_groups g LEFT JOIN client_activity a
                 ON a.server_id = g.server_id AND a.os = g.os
                 WHERE g.server_id = ?1 GROUP BY g.os, g.count ORDER BY g.os",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([server], |r| {
                Ok(ClientGroupTotals {
                    os: OsGroup::from_key(&r.get::<_, String>(0)?),
                    computers: r.get(1)?,
                    installs_succeeded: r.get(2)?,
                    installs_failed: r.get(3)?,
                })
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    /// What a server below rolled up of its computers by operating system, with the installs
    /// not yet passed on (to pass on).
    fn unsent_clients(&self, server: &str) -> Result<Vec<ClientSummary>, CatalogError> {
        let mut groups: Vec<ClientSummary> = {
            let mut stmt = self
                .conn
                .prepare_cached(
                    "SELECT os, count FROM client_groups WHERE server_id = ?1 ORDER BY os",
                )
                .map_err(db)?;
            stmt.query_map([server], |r| {
                Ok(ClientSummary {
                    os: OsGroup::from_key(&r.get::<_, String>(0)?),
                    count: r.get(1)?,
                    activity: Vec::new(),
                })
            })
            .map_err(db)?
            .collect::<Result<_, _>>()
            .map_err(db)?
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT os, update_id, revision_number, unsent_succeeded, unsent_failed
                 FROM client_activity WHERE server_id = ?1
                 AND (unsent_succeeded != 0 OR unsent_failed != 0) ORDER BY os",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([server], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
            .map_err(db)?;
        for row in rows {
            let (os, update, revision, succeeded, failed) = row.map_err(db)?;
            let os = OsGroup::from_key(&os);
            if let (Some(update), Some(group)) =
                (Guid::parse(&update), groups.iter_mut().find(|g| g.os == os))
            {
                group.add(Activity {
                    update,
                    revision,
                    succeeded,
                    failed,
                });
            }
        }
        Ok(groups)
    }

    fn meta(&self, key: &str) -> Result<Option<String>, CatalogError> {
        ROLLUP_META.get(&self.conn, key)
    }

    fn set_meta(&self, key: &str, value: &str) -> Result<(), CatalogError> {
        ROLLUP_META.set(&self.conn, key, value)
    }

    /// The computer half of this server's own summary (its own computers, not those rolled
    /// up from below).
    pub fn computer_counts(&self) -> Result<ComputerCounts, CatalogError> {
        let outstanding = UpdateState::ALL
            .iter()
            .filter(|s| s.is_outstanding())
            .map(|s| s.code().to_string())
            .collect::<Vec<_>>()
            .join(",");
        let failed = UpdateState::Failed.code();
        let not_applicable = UpdateState::NotApplicable.code();
        let own = "FROM update_status s JOIN computers c ON c.client_id = s.client_id
                   WHERE c.parent_server IS NULL";
        self.conn
            .query_row(
                &format!(
                    "SELECT
                     (SELECT COUNT(*) FROM computers WHERE parent_server IS NULL),
                     (SELECT COUNT(DISTINCT s.client_id) {own} AND s.state IN ({outstanding})),
                     (SELECT COUNT(DISTINCT s.client_id) {own} AND s.state = {failed}),
                     (SELECT COUNT(DISTINCT s.update_id) {own} AND s.state = {failed}),
                     (SELECT COUNT(DISTINCT s.update_id) {own} AND s.state IN ({outstanding})),
                     (SELECT COUNT(*) FROM (SELECT s.update_id {own} GROUP BY s.update_id
                      HAVING SUM(CASE WHEN s.state IN ({outstanding}) THEN 1 ELSE 0 END) = 0
                      AND SUM(CASE WHEN s.state <> {not_applicable} THEN 1 ELSE 0 END) > 0)
                      AS up_to_date)"
                ),
                [],
                |r| {
                    Ok(ComputerCounts {
                        computers: r.get(0)?,
                        needing: r.get(1)?,
                        with_errors: r.get(2)?,
                        updates_with_errors: r.get(3)?,
                        updates_needed: r.get(4)?,
                        updates_up_to_date: r.get(5)?,
                    })
                },
            )
            .map_err(db)
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
        if self.conn.is_postgres() {
            return self.roll_status_in_batches(statuses);
        }
        let tx = self.conn.transaction().map_err(db)?;
        {
            // Prepared once: a rollup of 500 computers holds ~100,000 states.
            let mut touch = tx
                .prepare_cached(
                    "UPDATE computers SET rollup_number = ?2, detection = ?3 WHERE client_id = ?1",
                )
                .map_err(db)?;
            let mut clear = tx
                .prepare_cached("DELETE FROM update_status WHERE client_id = ?1")
                .map_err(db)?;
            let mut keep = tx
                .prepare_cached(
                    "INSERT INTO update_status (client_id, update_id, state, changed_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (client_id, update_id) DO UPDATE SET state = excluded.state,
                     changed_at = excluded.changed_at
                     WHERE excluded.changed_at >= update_status.changed_at",
                )
                .map_err(db)?;
            for s in statuses {
                let known = touch
                    .execute(params![s.id, s.rollup_number, s.detection])
                    .map_err(db)?;
                if known == 0 {
                    continue;
                }
                if s.full {
                    clear.execute([&s.id]).map_err(db)?;
                }
                for (update, state, changed) in &s.updates {
                    keep.execute(params![s.id, update.to_string(), state.code(), changed])
                        .map_err(db)?;
                }
            }
        }
        tx.commit().map_err(db)
    }

    /// [`Journal::roll_status`] as three statements, whatever the number of states: on
    /// PostgreSQL a statement is a round trip, and a call carries up to a few hundred thousand
    /// states. The same outcome as one statement per state in the message's order: of a
    /// computer listed twice, a full list replaces what came before it; of a state listed
    /// twice, the later change wins.
    fn roll_status_in_batches(&mut self, statuses: &[RolledStatus]) -> Result<(), CatalogError> {
        // Each computer's last full list, and what came after it.
        let mut from: std::collections::HashMap<&str, usize> = Default::default();
        for (i, s) in statuses.iter().enumerate() {
            if s.full || !from.contains_key(s.id.as_str()) {
                from.insert(&s.id, i);
            }
        }
        let tx = self.conn.transaction().map_err(db)?;
        let (mut ids, mut numbers, mut detections) = (Vec::new(), Vec::new(), Vec::new());
        for s in statuses {
            ids.push(s.id.clone());
            numbers.push(Some(s.rollup_number));
            detections.push(s.detection);
        }
        // The last of each computer's numbers is what one statement per entry leaves.
        let known: HashSet<String> = tx
            .prepare_cached(
                "UPDATE computers SET rollup_number = v.n, detection = v.d
                 FROM (SELECT DISTINCT ON (id) id, n, d
                       FROM unnest(?1::text[], ?2::bigint[], ?3::bigint[])
                       WITH ORDINALITY AS t(id, n, d, i) ORDER BY id, i DESC) AS v
                 WHERE computers.client_id = v.id RETURNING computers.client_id",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![ids, numbers, detections], |r| r.get(0))?
                    .collect()
            })
            .map_err(db)?;
        let full: Vec<String> = from
            .iter()
            .filter(|(id, i)| statuses[**i].full && known.contains(**id))
            .map(|(id, _)| (*id).to_owned())
            .collect();
        tx.execute(
            "DELETE FROM update_status WHERE client_id = ANY(?1::text[])",
            params![full],
        )
        .map_err(db)?;
        let mut latest: std::collections::HashMap<(&str, Guid), (i64, i64)> = Default::default();
        for (i, s) in statuses.iter().enumerate() {
            if !known.contains(&s.id) || from.get(s.id.as_str()).is_some_and(|f| i < *f) {
                continue;
            }
            for (update, state, changed) in &s.updates {
                let entry = latest
                    .entry((&s.id, *update))
                    .or_insert((i64::from(state.code()), *changed));
                if *changed >= entry.1 {
                    *entry = (i64::from(state.code()), *changed);
                }
            }
        }
        let (mut clients, mut updates, mut states, mut times) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((client, update), (state, changed)) in latest {
            clients.push(client.to_owned());
            updates.push(update.to_string());
            states.push(Some(state));
            times.push(Some(changed));
        }
        tx.execute(
            "INSERT INTO update_status (client_id, update_id, state, changed_at)
             SELECT * FROM unnest(?1::text[], ?2::text[], ?3::bigint[], ?4::bigint[])
             ON CONFLICT (client_id, update_id) DO UPDATE SET state = excluded.state,
             changed_at = excluded.changed_at
             WHERE excluded.changed_at >= update_status.changed_at",
            params![clients, updates, states, times],
        )
        .map_err(db)?;
        tx.commit().map_err(db)
    }

    /// What this server last heard from its own upstream as RollupResetGuid, and where its
    /// computers rollup got to (seconds since the epoch; acknowledged by the upstream).
    pub fn rollup_position(&mut self) -> Result<(Option<Guid>, i64), CatalogError> {
        Ok((
            self.meta("upstream_reset_guid")?
                .as_deref()
                .and_then(Guid::parse),
            self.meta("computers_sent_until")?
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
        self.set_meta("upstream_reset_guid", &reset.to_string())?;
        self.set_meta("computers_sent_until", &sent_until.to_string())
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
                "SELECT id, name, parent, is_replica, version, last_sync, last_rollup, summary
                 FROM downstreams WHERE last_rollup IS NOT NULL ORDER BY id",
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
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<String>>(7)?,
                ))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows.collect::<Result<Vec<_>, _>>().map_err(db)? {
            let (id, name, parent, replica, version, last_sync, last_rollup, summary) = row;
            let (Some(guid), Some(parent)) =
                (Guid::parse(&id), parent.as_deref().and_then(Guid::parse))
            else {
                continue;
            };
            out.push(RolledServer {
                id: guid,
                name,
                parent,
                is_replica: replica.unwrap_or(false),
                version: version.unwrap_or_default(),
                last_sync,
                last_rollup,
                // Passed on as received: a summary the upstream has is applied once.
                sent_at: last_rollup.unwrap_or(0),
                summary: summary_of(summary.as_deref()),
                clients: self.unsent_clients(&id)?,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: Guid, sent_at: i64, clients: Vec<ClientSummary>) -> RolledServer {
        RolledServer {
            id,
            name: "branch".into(),
            parent: Guid::NIL,
            is_replica: true,
            version: "1".into(),
            last_sync: None,
            last_rollup: Some(sent_at),
            sent_at,
            summary: ServerSummary::default(),
            clients,
        }
    }

    fn group(count: i64, update: Guid, succeeded: i64, failed: i64) -> ClientSummary {
        ClientSummary {
            os: OsGroup::of("10.0.26200.0", "en-US", "x64"),
            count,
            activity: vec![Activity {
                update,
                revision: 200,
                succeeded,
                failed,
            }],
        }
    }

    /// Client summaries are increments: one sent again (its answer lost) under the same
    /// LastRollupTime is applied once, the next one adds; what a regional node passes on is
    /// owed until its upstream acknowledged it.
    #[test]
    fn client_summaries_are_applied_once_and_owed_until_passed_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&crate::state::Database::sqlite(dir.path())).unwrap();
        let (branch, update) = (Guid::random(), Guid::random());
        let first = server(branch, 100, vec![group(3, update, 2, 1)]);
        j.roll_servers(std::slice::from_ref(&first), 100).unwrap();
        j.roll_servers(std::slice::from_ref(&first), 101).unwrap();
        let totals = |j: &Journal| {
            let t = j.client_groups(&branch.to_string()).unwrap();
            assert_eq!(t.len(), 1);
            (
                t[0].computers,
                t[0].installs_succeeded,
                t[0].installs_failed,
            )
        };
        assert_eq!(totals(&j), (3, 2, 1));
        j.roll_servers(&[server(branch, 200, vec![group(4, update, 5, 0)])], 200)
            .unwrap();
        assert_eq!(totals(&j), (4, 7, 1));
        // An older summary relayed late changes nothing.
        j.roll_servers(&[server(branch, 150, vec![group(9, update, 9, 9)])], 201)
            .unwrap();
        assert_eq!(totals(&j), (4, 7, 1));

        // Passing on: everything is owed, then what was acknowledged is not.
        let owed = |j: &Journal| {
            let below = j.servers_below().unwrap();
            let s = below.iter().find(|s| s.id == branch).unwrap();
            s.clients[0]
                .activity
                .iter()
                .map(|a| (a.succeeded, a.failed))
                .collect::<Vec<_>>()
        };
        assert_eq!(owed(&j), vec![(7, 1)]);
        let passed = j.servers_below().unwrap();
        assert_eq!(
            passed[0].sent_at, 200,
            "passed on under its own LastRollupTime"
        );
        j.roll_servers(&[server(branch, 300, vec![group(4, update, 1, 1)])], 300)
            .unwrap();
        j.forwarded(&passed).unwrap();
        assert_eq!(owed(&j), vec![(1, 1)], "what came meanwhile is still owed");
        assert_eq!(totals(&j), (4, 8, 2));
    }

    /// This server's own installs: counted from the journal between two rows, by operating
    /// system; a rollup begun and not acknowledged is found again as it was.
    #[test]
    fn own_installs_are_counted_between_acknowledgements() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(&crate::state::Database::sqlite(dir.path())).unwrap();
        let update = Guid::random();
        for (id, os) in [
            ("pc1", "10.0.26200.0"),
            ("pc2", "10.0.26200"),
            ("pc3", "6.3.9600.0"),
        ] {
            let computer = Computer {
                client_id: id.into(),
                os_version: os.into(),
                os_locale: "en-US".into(),
                processor: "x64".into(),
                ..Computer::default()
            };
            j.register(&computer, 1).unwrap();
        }
        let event = |client: &str, event_id: i32| Event {
            client_id: client.into(),
            instance: Guid::random(),
            event_id,
            source_id: 1,
            update: Some((update, 200)),
            hresult: 0,
            time: 5,
            misc: Vec::new(),
        };
        let events = [
            event("pc1", 183),
            event("pc2", 182),
            event("pc3", 184),
            event("pc1", 162),
        ];
        j.append(&events, 5).unwrap();
        assert_eq!(j.activity_position().unwrap(), (0, None));
        let (upto, stamp) = j.begin_activity(50).unwrap();
        assert_eq!(stamp, 50);
        assert_eq!(j.activity_position().unwrap(), (0, Some((upto, 50))));
        j.append(&[event("pc3", 183)], 6).unwrap();
        let clients = j.own_clients(0, upto).unwrap();
        let by_os = |version: [i64; 5]| {
            let c = clients.iter().find(|c| c.os.version == version).unwrap();
            let a = c
                .activity
                .iter()
                .map(|a| (a.succeeded, a.failed))
                .collect::<Vec<_>>();
            (c.count, a)
        };
        // pc1 and pc2 are one group however they spelled their version; the download (162)
        // and the event after `upto` are not counted.
        assert_eq!(clients.len(), 2);
        assert_eq!(by_os([10, 0, 26200, 0, 0]), (2, vec![(1, 1)]));
        assert_eq!(by_os([6, 3, 9600, 0, 0]), (1, vec![(1, 0)]));
        j.activity_acknowledged(upto).unwrap();
        assert_eq!(j.activity_position().unwrap(), (upto, None));
        // Within the same second as the one before, or with the clock set back: a later stamp
        // all the same, or the upstream would take it for the summary it already applied.
        let (until, stamp) = j.begin_activity(50).unwrap();
        assert_eq!(stamp, 51);
        let next = j.own_clients(upto, until).unwrap();
        assert_eq!(
            next.iter().map(|c| c.activity.len()).sum::<usize>(),
            1,
            "only the event after the acknowledged row"
        );
        j.activity_acknowledged(until).unwrap();
        assert_eq!(j.begin_activity(40).unwrap().1, 52);
        j.activity_acknowledged(until).unwrap();
        assert_eq!(j.begin_activity(90).unwrap().1, 90);
    }
}
