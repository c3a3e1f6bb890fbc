//! The node's persistent state, in one of two databases: by default the embedded SQLite file
//! `data_dir/state.db` (WAL), which a branch needs nothing else for; or a PostgreSQL database
//! (`[state] database`), which several central nodes can share. Shared by the catalog
//! ([`Store`]) and the journal of what clients and servers report ([`Journal`]), and by the
//! other processes (`wsus-edge approve`, `import`, `sync`) that write to it while a node runs.
//! Owns the connections ([`Database`]), the schema and how an older database is brought up to
//! it, the mapping of rows to the `catalog` and `report` models, and change notification (the
//! catalog version and SQLite's `data_version`, which a running node polls to reload).
//!
//! The store's code is written once, over [`sql`], in the SQL both databases accept.
//!
//! Its errors are [`CatalogError`]s (`Store` for what the database said), which convert into
//! the crate's [`crate::error::Error`]. Blocking: call it off the async workers. May call
//! `catalog` and `report` (the models it stores), `soap` (documents), `clock`.

pub mod audit;
mod catalog;
mod journal;
mod postgres;
mod rollup;
pub mod rules;
pub mod sql;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sql::{Connection, OptionalExtension, params};

use crate::catalog::CatalogError;
pub use catalog::Store;
pub use journal::Journal;

/// What the database said, as the catalog's error.
fn db(e: sql::Error) -> CatalogError {
    CatalogError::Store(e.to_string())
}

/// Where a node's state lives: `data_dir/state.db`, or a PostgreSQL database. Cheap to clone;
/// the clones of one share their connections.
#[derive(Clone, Debug)]
pub struct Database {
    data_dir: PathBuf,
    postgres: Option<Arc<sql::Pool>>,
}

impl Database {
    /// `data_dir/state.db` (made, with its folder, when first connected).
    pub fn sqlite(data_dir: &Path) -> Database {
        Database {
            data_dir: data_dir.to_path_buf(),
            postgres: None,
        }
    }

    /// The PostgreSQL database at `url` (`postgres://user:password@host:port/dbname`), with at
    /// most `pool_size` connections from this process, each waited for at most `wait`; its
    /// schema brought up to this build's. `data_dir` still holds the content and the rest of
    /// the node's files.
    pub fn postgres(
        data_dir: &Path,
        url: &str,
        pool_size: usize,
        wait: Duration,
    ) -> Result<Database, CatalogError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| CatalogError::Store(format!("{}: {e}", data_dir.display())))?;
        let in_key = |e: sql::Error| CatalogError::Store(format!("state.database: {e}"));
        let pool = sql::shared_pool(url, pool_size, wait).map_err(in_key)?;
        let database = Database {
            data_dir: data_dir.to_path_buf(),
            postgres: Some(pool),
        };
        let mut conn = database
            .connect()
            .map_err(|e| CatalogError::Store(format!("state.database: {e}")))?;
        postgres::migrate(&mut conn).map_err(|e| {
            CatalogError::Store(format!(
                "state.database {}: migrating the schema: {e}",
                database.name()
            ))
        })?;
        Ok(database)
    }

    /// Where `config` keeps the state (`[state] database`, else `node.data_dir`). Blocking
    /// (PostgreSQL: a connection, and the schema's migrations).
    pub fn from_config(config: &crate::config::Config) -> Result<Database, CatalogError> {
        match &config.state.database {
            None => Ok(Database::sqlite(&config.node.data_dir)),
            Some(url) => Database::postgres(
                &config.node.data_dir,
                url,
                config.state.pool_size,
                config.state.pool_wait,
            ),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// What messages name it by: the file, or `user@host:port/dbname` (never a password).
    pub fn name(&self) -> String {
        match &self.postgres {
            Some(pool) => format!("postgres://{}", pool.name),
            None => self.data_dir.join("state.db").display().to_string(),
        }
    }

    /// A connection: to the SQLite file (waiting up to 10 s for another writer), or one of
    /// the pool's.
    fn connect(&self) -> Result<Connection, CatalogError> {
        if let Some(pool) = &self.postgres {
            return pool.connect().map_err(db);
        }
        std::fs::create_dir_all(&self.data_dir)
            .map_err(|e| CatalogError::Store(format!("{}: {e}", self.data_dir.display())))?;
        let conn =
            rusqlite::Connection::open(self.data_dir.join("state.db")).map_err(|e| db(e.into()))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| db(e.into()))?;
        // Every statement of the store is cached: more than rusqlite's default 16.
        conn.set_prepared_statement_cache_capacity(128);
        Ok(Connection::sqlite(conn))
    }
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
    /// older file lacks columns that indexes are made on). PostgreSQL's schema is its
    /// migrations', applied when the [`Database`] is opened.
    fn apply(&self, conn: &Connection) -> Result<(), CatalogError> {
        let Some(conn) = conn.as_sqlite() else {
            return Ok(());
        };
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
        let db = |e: rusqlite::Error| db(e.into());
        conn.execute_batch(&tables.concat()).map_err(db)?;
        add_missing_columns(conn, self.added)?;
        conn.execute_batch(&indexes.concat()).map_err(db)
    }
}

/// Add the columns of `added` (table, column, declaration) that a state.db from an older
/// version lacks.
fn add_missing_columns(
    conn: &rusqlite::Connection,
    added: &[(&str, &str, &str)],
) -> Result<(), CatalogError> {
    let db = |e: rusqlite::Error| db(e.into());
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

/// A store in `dir` holding a catalog generated with `n` software updates, `seed` and payloads
/// of at most `budget` bytes in all (written under `dir/p`): the catalogs unit tests walk.
#[cfg(test)]
pub(crate) fn generated_store(
    dir: &Path,
    n: usize,
    seed: u64,
    budget: u64,
) -> (Store, crate::testkit::generate::Generated) {
    let payloads = dir.join("p");
    std::fs::create_dir_all(&payloads).unwrap();
    let generated = crate::testkit::generate::generate(n, seed, budget, &payloads).unwrap();
    let mut store = Store::open(&Database::sqlite(dir)).unwrap();
    store.import(&generated.documents).unwrap();
    (store, generated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_file_gets_its_missing_columns_before_the_indexes_on_them() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Database::sqlite(dir.path()).connect().unwrap();
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
