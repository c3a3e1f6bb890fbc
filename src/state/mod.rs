//! The node's persistent state: one SQLite database, `data_dir/state.db` (WAL), shared by the
//! catalog ([`Store`]) and the journal of what clients and servers report ([`Journal`]), and by
//! the other processes (`wsus-edge approve`, `import`, `sync`) that write to it while a node
//! runs. Owns the connections, the schema and how an older file is brought up to it, the
//! mapping of rows to the `catalog` and `report` models, and change notification (the catalog
//! version and SQLite's `data_version`, which a running node polls to reload).
//!
//! Its errors are [`CatalogError`]s (`Store` for what the database said), which convert into
//! the crate's [`crate::error::Error`]. Blocking: call it off the async workers. May call
//! `catalog` and `report` (the models it stores), `soap` (documents), `clock`.
//!
//! A second backend (PostgreSQL for a central node) is a sibling of `catalog.rs`/`journal.rs`
//! behind the same methods: nothing above this module sees a connection or a row.

mod catalog;
mod journal;
mod rollup;

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::catalog::CatalogError;
pub use catalog::Store;
pub use journal::Journal;

/// What the database said, as the catalog's error.
fn db(e: rusqlite::Error) -> CatalogError {
    CatalogError::Store(e.to_string())
}

/// A connection to `data_dir/state.db` (made, with its folder, if missing), waiting up to 10 s
/// for another writer.
fn connect(data_dir: &Path) -> Result<Connection, CatalogError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| CatalogError::Store(format!("{}: {e}", data_dir.display())))?;
    let conn = Connection::open(data_dir.join("state.db")).map_err(db)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(db)?;
    Ok(conn)
}

/// The tables of one part of the state and the columns added to them since the first files.
struct Schema {
    /// `CREATE … IF NOT EXISTS` statements (and pragmas); indexes after the tables.
    tables: &'static str,
    /// (table, column, declaration) added since the first state.db files.
    added: &'static [(&'static str, &'static str, &'static str)],
}

impl Schema {
    /// Bring `conn`'s file up to this schema: tables and their columns first, indexes last (an
    /// older file lacks columns that indexes are made on).
    fn apply(&self, conn: &Connection) -> Result<(), CatalogError> {
        let (indexes, tables): (Vec<&str>, Vec<&str>) =
            self.tables.split_inclusive(';').partition(|statement| {
                let code: String = statement
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("--"))
                    .collect::<Vec<_>>()
                    .join(" ");
                let code = code.trim_start();
                code.starts_with("CREATE INDEX") || code.starts_with("CREATE UNIQUE INDEX")
            });
        conn.execute_batch(&tables.concat()).map_err(db)?;
        add_missing_columns(conn, self.added)?;
        conn.execute_batch(&indexes.concat()).map_err(db)
    }
}

/// Add the columns of `added` (table, column, declaration) that a state.db from an older
/// version lacks.
fn add_missing_columns(
    conn: &Connection,
    added: &[(&str, &str, &str)],
) -> Result<(), CatalogError> {
    for (table, column, declaration) in added {
        let present: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
                [table, column],
                |r| r.get(0),
            )
            .map_err(db)?;
        if present == 0 {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {declaration}"
            ))
            .map_err(db)?;
        }
    }
    Ok(())
}

/// A key-value table of one part of the state (`meta`, `rollup_meta`).
#[derive(Clone, Copy)]
struct Meta(&'static str);

impl Meta {
    fn get(self, conn: &Connection, key: &str) -> Result<Option<String>, CatalogError> {
        conn.query_row(
            &format!("SELECT value FROM {} WHERE key = ?1", self.0),
            [key],
            |r| r.get(0),
        )
        .optional()
        .map_err(db)
    }

    fn set(self, conn: &Connection, key: &str, value: &str) -> Result<(), CatalogError> {
        conn.execute(
            &format!(
                "INSERT INTO {} (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                self.0
            ),
            params![key, value],
        )
        .map(|_| ())
        .map_err(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_file_gets_its_missing_columns_before_the_indexes_on_them() {
        let dir = tempfile::tempdir().unwrap();
        let conn = connect(dir.path()).unwrap();
        // As an older version left it: no `guid` column yet.
        conn.execute_batch(
            "CREATE TABLE things (id INTEGER PRIMARY KEY); INSERT INTO things VALUES (1);",
        )
        .unwrap();
        let schema = Schema {
            tables: "CREATE TABLE IF NOT EXISTS things (id INTEGER PRIMARY KEY, guid TEXT);
                     CREATE UNIQUE INDEX IF NOT EXISTS things_by_guid ON things (guid);
                     -- a table after the index
                     CREATE TABLE IF NOT EXISTS more (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
            added: &[("things", "guid", "TEXT")],
        };
        schema.apply(&conn).unwrap();
        schema.apply(&conn).unwrap();
        let indexes: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'things_by_guid'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 1);
        let meta = Meta("more");
        assert_eq!(meta.get(&conn, "k").unwrap(), None);
        meta.set(&conn, "k", "1").unwrap();
        meta.set(&conn, "k", "2").unwrap();
        assert_eq!(meta.get(&conn, "k").unwrap().as_deref(), Some("2"));
        let kept: i64 = conn
            .query_row("SELECT COUNT(*) FROM things WHERE guid IS NULL", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(kept, 1, "the old row is kept");
    }
}
