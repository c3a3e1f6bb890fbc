//! The catalog in service: what both protocols answer from. One per node: the catalog loaded
//! from state.db and swapped whole when state.db changes, the store connection the node changes
//! it through, this server's identity and the key its cookies are sealed with ([`cookie`]).
//!
//! Owns: which catalog is in service, when it is reloaded, the scopes computed from it. May
//! call: `catalog`, `lock`. Below both protocols (`wusp`, `wsusss`), which share it; knows no
//! socket and no SOAP.

pub mod cookie;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::catalog::scope::Scope;
use crate::catalog::{Catalog, CatalogError, Guid};
use crate::lock::lock;
use crate::state::Database;
use crate::state::Store;
use cookie::Sealer;

/// The scope of a set of groups (sorted) at one [`Catalog::live_epoch`].
type Scopes = HashMap<(Vec<Guid>, usize), Arc<Scope>>;

/// The catalog of one moment and what was computed from it.
pub struct Snapshot {
    pub catalog: Arc<Catalog>,
    /// [`Store::catalog_version`] of `catalog`.
    catalog_version: i64,
    /// The [`Store::data_version`] last seen with that catalog version; moved on (without a
    /// reload) when other writers, such as the report journal, commit.
    data_version: AtomicI64,
    /// Scopes by the set of groups they were computed for and [`Catalog::live_epoch`].
    scopes: Mutex<Scopes>,
}

impl Snapshot {
    /// What a computer in `groups` may see at `now` (cached per group set, and per the go-live
    /// times passed).
    pub fn scope(&self, groups: &[Guid], now: i64) -> Arc<Scope> {
        let mut groups = groups.to_vec();
        groups.sort_unstable();
        let key = (groups, self.catalog.live_epoch(now));
        let mut scopes = lock(&self.scopes);
        if let Some(s) = scopes.get(&key) {
            return s.clone();
        }
        let s = Arc::new(crate::catalog::scope::scope(&self.catalog, &key.0, now));
        if scopes.len() > 1024 {
            scopes.clear();
        }
        scopes.insert(key, s.clone());
        s
    }

    fn of(store: &Store) -> Result<Snapshot, CatalogError> {
        Ok(Snapshot {
            data_version: AtomicI64::new(store.data_version()?),
            catalog_version: store.catalog_version()?,
            catalog: Arc::new(store.load()?),
            scopes: Mutex::new(HashMap::new()),
        })
    }
}

/// The catalog in service of one node.
pub struct Served {
    sealer: Sealer,
    server_id: Guid,
    snapshot: RwLock<Arc<Snapshot>>,
    store: Mutex<Store>,
}

impl Served {
    /// Open the catalog of `database` and its cookie key: in the database when nodes share
    /// it (PostgreSQL), else in data_dir (blocking).
    pub fn open(database: &Database) -> Result<Served, CatalogError> {
        let store = Store::open(database)?;
        let sealer = if database.is_postgres() {
            Sealer::from_key(&store.shared_cookie_key()?)
                .ok_or_else(|| CatalogError::Store("cookie key: not a 32-byte key".into()))?
        } else {
            Sealer::open(database.data_dir())
                .map_err(|e| CatalogError::Store(format!("cookie key: {e}")))?
        };
        Ok(Served {
            sealer,
            server_id: store.server_id()?,
            snapshot: RwLock::new(Arc::new(Snapshot::of(&store)?)),
            store: Mutex::new(store),
        })
    }

    /// Read from state.db what the catalog in memory does not keep (update documents,
    /// deployment history). Blocking.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        f(&lock(&self.store))
    }

    /// This server's identity (in every cookie it issues).
    pub fn server_id(&self) -> Guid {
        self.server_id
    }

    /// The key cookies are sealed with, shared by both protocols.
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The catalog in service now, with its scopes.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        crate::lock::read(&self.snapshot).clone()
    }

    /// The catalog requests are answered from now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.snapshot().catalog.clone()
    }

    /// Load the catalog again if another process (an import, an approval) changed state.db.
    /// Blocking. True when a new catalog is in service.
    pub fn reload_if_changed(&self) -> Result<bool, CatalogError> {
        let store = lock(&self.store);
        let snapshot = self.snapshot();
        let data_version = store.data_version()?;
        if data_version == snapshot.data_version.load(Ordering::Relaxed) {
            return Ok(false);
        }
        if store.catalog_version()? == snapshot.catalog_version {
            snapshot.data_version.store(data_version, Ordering::Relaxed);
            return Ok(false);
        }
        self.serve_from(&store)?;
        Ok(true)
    }

    /// Change state.db through this node's own connection (the admin API) and serve the result
    /// at once: a connection's own commits do not move its `data_version`, so the periodic
    /// reload would not see them. Blocking.
    pub fn change<T>(
        &self,
        f: impl FnOnce(&mut Store, &Catalog) -> Result<T, CatalogError>,
    ) -> Result<T, CatalogError> {
        let mut store = lock(&self.store);
        let out = f(&mut store, &self.catalog())?;
        self.serve_from(&store)?;
        Ok(out)
    }

    /// Load the catalog from `store` and put it into service (its scopes computed afresh).
    fn serve_from(&self, store: &Store) -> Result<(), CatalogError> {
        let fresh = Arc::new(Snapshot::of(store)?);
        *crate::lock::write(&self.snapshot) = fresh;
        Ok(())
    }
}
