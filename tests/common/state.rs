//! Where a test node keeps its state: `data_dir/state.db`, or, when the environment's
//! `WSUS_TEST_POSTGRES` names a PostgreSQL database (`postgres://user@host:port/dbname`,
//! as `.ci/run` sets it), a schema of that database named after the data_dir. Every node of a
//! test and the test's own reads of a node's state meet in the same place by the same path.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sha1::{Digest, Sha1};
use wsus_edge::state::Database;

/// The PostgreSQL URL of `data_dir`'s schema (made if missing), when the tests run against
/// PostgreSQL.
pub fn postgres_url(data_dir: &Path) -> Option<String> {
    let base = postgres_server()?;
    let digest = Sha1::digest(data_dir.to_string_lossy().as_bytes());
    let schema = format!("t_{}", &hex::encode(digest)[..24]);
    let made = Command::new("psql")
        .arg(&base)
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .output()
        .expect("psql runs");
    assert!(
        made.status.success(),
        "creating schema {schema}: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!(
        "{base}{separator}options=-c%20search_path%3D{schema}"
    ))
}

/// `data_dir`'s state, as a node configured by [`super::node_config`] keeps it.
pub fn database(data_dir: &Path) -> Database {
    match postgres_url(data_dir) {
        Some(url) => Database::postgres(data_dir, &url, 4, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}")),
        None => Database::sqlite(data_dir),
    }
}

/// The `[state]` section of a node of `data_dir` (empty: state.db).
pub fn state_section(data_dir: &Path) -> String {
    match postgres_url(data_dir) {
        Some(url) => format!("\n[state]\ndatabase = {url:?}\n"),
        None => String::new(),
    }
}

/// The PostgreSQL database the tests run against (`WSUS_TEST_POSTGRES`), if any.
pub fn postgres_server() -> Option<String> {
    std::env::var("WSUS_TEST_POSTGRES")
        .ok()
        .filter(|url| !url.is_empty())
}

/// The server address (`host:port`) of a `postgres://user@host:port/…` URL.
pub fn postgres_addr(url: &str) -> std::net::SocketAddr {
    let after_user = url.split_once('@').map_or(url, |(_, rest)| rest);
    let host_port = after_user.split(['/', '?']).next().unwrap();
    host_port
        .parse()
        .unwrap_or_else(|e| panic!("{host_port}: {e}"))
}

/// `url` with its server address replaced by `addr` (a relay in front of the server).
pub fn through(url: &str, addr: std::net::SocketAddr) -> String {
    url.replacen(&postgres_addr(url).to_string(), &addr.to_string(), 1)
}
