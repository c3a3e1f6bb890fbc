//! The audit log's side of the journal: every change an administrator made (through the API,
//! a browser or the CLI) and every change a rule made, appended as it is made and read back
//! newest first. Entries are never changed; they are kept with the journal.

use super::sql::params;

use super::{Journal, db};
use crate::catalog::CatalogError;
use crate::report::AuditEntry;

/// The most entries one read returns.
pub const MAX_READ: usize = 1000;

impl Journal {
    /// Append `entry` (its id is given here).
    pub fn audit(&mut self, entry: &AuditEntry) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT INTO audit_log (at, who, via, action, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![entry.at, entry.who, entry.via, entry.action, entry.detail],
            )
            .map_err(db)?;
        Ok(())
    }

    /// How many entries there are, and those from `offset` (newest first) up to `limit` of
    /// them (at most [`MAX_READ`]).
    pub fn audit_log(
        &self,
        offset: usize,
        limit: usize,
    ) -> Result<(u64, Vec<AuditEntry>), CatalogError> {
        let total: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM audit_log", [], |r| r.get(0))
            .map_err(db)?;
        let limit = limit.min(MAX_READ) as i64;
        let entries = self
            .conn
            .prepare(
                "SELECT id, at, who, via, action, detail FROM audit_log
                 ORDER BY id DESC LIMIT ?1 OFFSET ?2",
            )
            .and_then(|mut s| {
                s.query_map(params![limit, offset as i64], |r| {
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        at: r.get(1)?,
                        who: r.get(2)?,
                        via: r.get(3)?,
                        action: r.get(4)?,
                        detail: r.get(5)?,
                    })
                })?
                .collect()
            })
            .map_err(db)?;
        Ok((total.max(0) as u64, entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Database;

    #[test]
    fn entries_are_kept_in_order_and_read_newest_first_by_page() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&Database::sqlite(dir.path())).unwrap();
        for n in 0..5 {
            journal
                .audit(&AuditEntry {
                    id: 0,
                    at: 100 + n,
                    who: format!("admin {n}"),
                    via: "api".into(),
                    action: "approve".into(),
                    detail: format!("update {n}"),
                })
                .unwrap();
        }
        let (total, first) = journal.audit_log(0, 2).unwrap();
        assert_eq!(total, 5);
        let who: Vec<&str> = first.iter().map(|e| e.who.as_str()).collect();
        assert_eq!(who, ["admin 4", "admin 3"]);
        let (_, rest) = journal.audit_log(4, 10).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!((rest[0].at, rest[0].detail.as_str()), (100, "update 0"));
        assert!(first[0].id > first[1].id);
    }
}
