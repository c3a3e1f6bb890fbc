//! The catalog's subcommands: `import` (a folder, or `--generate N` synthetic updates),
//! `approve`, `decline`, `group add` (changes a root makes to its own catalog) and `sync` (a
//! downstream server's catalog from its upstream), with what each prints.
//! Calls `super` (`Exit`, `report`) and the crate's `catalog`, `content`, `testkit::generate`,
//! `upstream`, `wsusss::sync`, `progress`; no sibling. `demo` calls `generate_catalog` and
//! `print_sync`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::catalog::keys::{KEY_FILE, format_key_file, parse_key_file};
use crate::catalog::replica::{LocalChange, local_refusal};
use crate::catalog::{CatalogError, Decision, Guid};
use crate::config::Config;
use crate::config::units::{format_bytes, format_duration};
use crate::content;
use crate::error::{Error, Kind};
use crate::metrics::Metrics;
use crate::progress::{Progress, Unit};
use crate::state::Database;
use crate::state::Store;

use super::{Exit, report};

/// What an import did, whatever it imported.
#[derive(Default)]
struct Imported {
    content: Option<content::ImportReport>,
    documents: usize,
    new_revisions: usize,
    /// Decryption keys read from the key file, and how many of them were new or changed.
    keys: Option<(usize, usize)>,
}

/// Import `DIR/updates/*.xml` into the catalog, the keys of `DIR/decryption-keys.txt`, and
/// `DIR/content` (or all of DIR) into the content store. Blocking.
fn import_blocking(database: &Database, dir: &Path) -> Result<Imported, Error> {
    let data_dir = database.data_dir();
    let updates = dir.join("updates");
    let payloads = dir.join("content");
    let key_file = dir.join(KEY_FILE);
    let mut out = Imported::default();
    // Read before anything is imported: a bad line stops the import with nothing changed.
    let keys =
        if key_file.is_file() {
            let text = std::fs::read_to_string(&key_file)
                .map_err(|e| Error::io(format!("reading {}", key_file.display()), e))?;
            Some(parse_key_file(&text).map_err(|e| {
                Error::internal(Kind::Config, format!("{}: {e}", key_file.display()))
            })?)
        } else {
            None
        };
    if updates.is_dir() {
        let mut docs = Vec::new();
        let mut names: Vec<_> = std::fs::read_dir(&updates)
            .map_err(|e| Error::io(format!("reading {}", updates.display()), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("xml")))
            .collect();
        names.sort();
        for path in names {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            // Name the file that does not parse: the store's error would not.
            crate::catalog::update::parse(&text)
                .map_err(|e| Error::internal(Kind::Config, format!("{}: {e}", path.display())))?;
            docs.push(text);
        }
        let mut store = Store::open(database)?;
        // One transaction: its progress is its end.
        eprintln!(
            "importing {} update documents into {} …",
            docs.len(),
            database.name()
        );
        let (new, _) = store.import(&docs)?;
        out.documents = docs.len();
        out.new_revisions = new;
    }
    if let Some(keys) = keys {
        let changed = Store::open(database)?.set_keys(&keys)?;
        out.keys = Some((keys.len(), changed));
    }
    let content_dir = if payloads.is_dir() {
        Some(payloads)
    } else if updates.is_dir() || out.keys.is_some() {
        None
    } else {
        Some(dir.to_path_buf())
    };
    if let Some(content_dir) = content_dir {
        let progress = Progress::new("payloads", tree_bytes(&content_dir), Unit::Bytes);
        let imported =
            content::import_dir_with_progress(data_dir, &content_dir, &mut |n| progress.inc(n));
        progress.finish();
        out.content = Some(imported?);
    }
    Ok(out)
}

fn print_import(config: &Config, imported: &Imported, started: Instant) {
    let database = match &config.state.database {
        Some(_) => "the PostgreSQL database of [state]".to_string(),
        None => config.node.data_dir.join("state.db").display().to_string(),
    };
    if imported.documents > 0 {
        println!(
            "imported {} update documents ({} new revisions) into {}",
            imported.documents, imported.new_revisions, database
        );
    }
    if let Some((keys, changed)) = imported.keys {
        println!("imported {keys} decryption keys ({changed} new or changed)");
    }
    if let Some(r) = &imported.content {
        println!(
            "imported {} files ({} new, {}) into {}",
            r.files,
            r.new,
            format_bytes(r.bytes),
            config.node.data_dir.display()
        );
    }
    println!("in {}", format_duration(started.elapsed()));
}

pub(super) async fn import(config: &Config, dir: &Path) -> Exit {
    let (state, dir) = (config.clone(), dir.to_path_buf());
    let started = Instant::now();
    let imported =
        tokio::task::spawn_blocking(move || import_blocking(&Database::from_config(&state)?, &dir));
    match imported.await {
        Ok(Ok(imported)) => {
            print_import(config, &imported, started);
            Exit::Ok
        }
        Ok(Err(e)) => report(Err(e)),
        Err(e) => report(Err(Error::internal(Kind::Io, format!("import task: {e}")))),
    }
}

/// Write a synthetic catalog of `n` software updates and `drivers` driver updates into the
/// node.
pub(super) async fn generate_catalog(
    config: &Config,
    n: usize,
    drivers: usize,
    budget: u64,
    seed: u64,
) -> Result<(), Error> {
    let state = config.clone();
    let started = Instant::now();
    let (imported, generated) = tokio::task::spawn_blocking(move || {
        let database = Database::from_config(&state)?;
        let work = database
            .data_dir()
            .join("tmp")
            .join(format!("generate-{}", std::process::id()));
        let content_dir = work.join("content");
        let updates = work.join("updates");
        std::fs::create_dir_all(&content_dir)
            .map_err(|e| Error::io("creating a work folder", e))?;
        std::fs::create_dir_all(&updates).map_err(|e| Error::io("creating a work folder", e))?;
        let progress = Progress::new("generating", n as u64, Unit::Items("updates"));
        let generated = crate::testkit::generate::generate_with_progress(
            n,
            seed,
            budget,
            &content_dir,
            &mut |_| progress.inc(1),
        )
        .map_err(|e| Error::io("writing payloads", e))?;
        progress.finish();
        for (i, doc) in generated.documents.iter().enumerate() {
            std::fs::write(updates.join(format!("{i:06}.xml")), doc)
                .map_err(|e| Error::io("writing update documents", e))?;
        }
        std::fs::write(work.join(KEY_FILE), format_key_file(&generated.keys))
            .map_err(|e| Error::io("writing decryption keys", e))?;
        let driver_catalog = crate::testkit::drivers::generate_drivers(drivers, seed);
        for (i, doc) in driver_catalog.documents.iter().enumerate() {
            std::fs::write(updates.join(format!("driver-{i:06}.xml")), doc)
                .map_err(|e| Error::io("writing driver documents", e))?;
        }
        let imported = import_blocking(&database, &work);
        let _ = std::fs::remove_dir_all(&work);
        Ok::<_, Error>((imported?, generated))
    })
    .await
    .map_err(|e| Error::internal(Kind::Io, format!("generate task: {e}")))??;
    println!(
        "generated {} software updates ({} deployable, {} with encrypted files), {} categories, \
         {} detectoids, {} of payloads",
        generated.software,
        generated.deployable.len(),
        generated.keys.len(),
        generated.categories,
        generated.detectoids,
        format_bytes(generated.payload_bytes)
    );
    if drivers > 0 {
        println!("generated {drivers} driver updates");
    }
    print_import(config, &imported, started);
    Ok(())
}

pub(super) async fn approve(
    config: &Config,
    updates: &[String],
    all: bool,
    group: &str,
    action: &str,
    deadline: Option<&str>,
) -> Exit {
    let Some(decision) = Decision::parse(action) else {
        eprintln!(
            "wsus-edge approve: --action {action:?}: {}",
            Decision::CHOICES
        );
        return Exit::Usage;
    };
    let deadline = match deadline.map(crate::soap::xsd::parse_datetime) {
        Some(None) => {
            eprintln!("wsus-edge approve: --deadline: an xs:dateTime, e.g. 2026-12-24T18:00:00Z");
            return Exit::Usage;
        }
        Some(Some(t)) => Some(t),
        None => None,
    };
    let Some(ids) = update_ids("approve", updates) else {
        return Exit::Usage;
    };
    let group = group.to_owned();
    let detail = format!(
        "{} for {group:?}{}: {}",
        decision.as_str(),
        deadline
            .map(|d| format!(", deadline {}", crate::soap::xsd::format_datetime(d)))
            .unwrap_or_default(),
        if all {
            "every deployable update".to_owned()
        } else {
            listed(&ids)
        }
    );
    let audit = ("approve", detail);
    let outcome = catalog_change(
        config,
        LocalChange::Approvals,
        audit,
        move |store, catalog| {
            let updates = (!all).then_some(ids.as_slice());
            let n = store.decide(catalog, updates, &group, decision, deadline)?;
            Ok((n, group))
        },
    )
    .await;
    match outcome {
        Ok((n, group)) => {
            match decision {
                Decision::Approve(a) => {
                    println!("approved {n} updates for {group:?} ({})", a.as_str());
                }
                Decision::NotApproved => {
                    println!("took back {n} approvals for {group:?}");
                }
            }
            Exit::Ok
        }
        Err(e) => catalog_failure(e),
    }
}

pub(super) async fn sync(config: &Config) -> Exit {
    let Some(up) = &config.upstream else {
        eprintln!("wsus-edge sync: the configuration has no [upstream] to sync from");
        return Exit::Usage;
    };
    let link = crate::upstream::Settings::from_config(up, &config.wan)
        .and_then(|settings| crate::upstream::Upstream::new(settings, Arc::new(Metrics::new())));
    let link = match link {
        Ok(l) => Arc::new(l),
        Err(e) => return report(Err(e)),
    };
    let progress: Arc<std::sync::Mutex<Option<Progress>>> = Arc::default();
    let shown = progress.clone();
    let state = config.clone();
    let database = match tokio::task::spawn_blocking(move || Database::from_config(&state)).await {
        Ok(Ok(database)) => database,
        Ok(Err(e)) => return report(Err(e.into())),
        Err(e) => return report(Err(Error::internal(Kind::Io, format!("state task: {e}")))),
    };
    let syncer = crate::wsusss::sync::Syncer::new(link, database, &config.node.name)
        .with_drivers(up.drivers)
        .with_replication(up.replication)
        .with_progress(Arc::new(move |fetched, wanted| {
            let mut shown = crate::lock::lock(&shown);
            let bar = shown.get_or_insert_with(|| {
                Progress::new("documents", wanted as u64, Unit::Items("fetched"))
            });
            bar.set_total(wanted as u64);
            bar.inc(fetched as u64 - bar.done());
        }));
    let outcome = syncer.run().await;
    if let Some(bar) = crate::lock::lock(&progress).take() {
        bar.finish();
    }
    match outcome {
        Ok(done) => {
            println!("synced from {}", up.url);
            print_sync(&done);
            Exit::Ok
        }
        Err(e) => report(Err(e.context(format!("syncing from {}", up.url)))),
    }
}

/// What a sync did, one line per step.
pub(super) fn print_sync(r: &crate::wsusss::sync::SyncReport) {
    println!(
        "revision list       {} categories/classifications/detectoids, {} updates{}",
        r.config_listed,
        r.updates_listed,
        if r.server_changed {
            " (the upstream changed: full lists)"
        } else {
            ""
        }
    );
    println!(
        "update documents    {} fetched; {} new revisions, {} changed",
        r.fetched, r.applied.new_revisions, r.applied.changed_revisions
    );
    if r.device_ids_asked > 0 {
        println!(
            "drivers on demand   {} device ids asked for; {} driver revisions listed",
            r.device_ids_asked, r.drivers_listed
        );
    }
    if r.keys_asked > 0 {
        println!(
            "decryption keys     asked for {} encrypted updates; {} new keys",
            r.keys_asked, r.keys_received
        );
    }
    println!(
        "approvals           {} received, {} applied, {} removed, {} skipped; {} declined updates",
        r.deployments_received,
        r.applied.deployments,
        r.applied.removed_deployments,
        r.applied.skipped_deployments,
        r.applied.hidden
    );
    println!(
        "wire                {} SOAP calls, {} of answers, {}",
        r.calls,
        format_bytes(r.answer_bytes),
        format_duration(Duration::from_millis(r.elapsed_ms))
    );
}

pub(super) async fn decline(config: &Config, updates: &[String], declined: bool) -> Exit {
    let Some(ids) = update_ids("decline", updates) else {
        return Exit::Usage;
    };
    let audit = (if declined { "decline" } else { "undecline" }, listed(&ids));
    match catalog_change(
        config,
        LocalChange::Declines,
        audit,
        move |store, catalog| store.decline(catalog, &ids, declined),
    )
    .await
    {
        Ok(n) => {
            let what = if declined {
                "declined"
            } else {
                "no longer declined"
            };
            println!("{n} updates {what}");
            Exit::Ok
        }
        Err(e) => catalog_failure(e),
    }
}

/// `wsus-edge group add`: a target group under `parent` (All Computers when None).
pub(super) async fn group_add(config: &Config, name: String, parent: Option<String>) -> Exit {
    let detail = format!(
        "target group {name:?} under {:?}",
        parent.as_deref().unwrap_or("All Computers")
    );
    let outcome = catalog_change(
        config,
        LocalChange::Approvals,
        ("group", detail),
        move |store, _| {
            store
                .add_group(&name, parent.as_deref())
                .map(|id| (name, id))
        },
    )
    .await;
    match outcome {
        Ok((name, id)) => {
            println!("target group {name:?} added ({id})");
            Exit::Ok
        }
        Err(e) => catalog_failure(e),
    }
}

/// `--update` values as GUIDs, or None after saying which is not one.
fn update_ids(command: &str, updates: &[String]) -> Option<Vec<Guid>> {
    updates
        .iter()
        .map(|u| {
            let id = Guid::parse(u);
            if id.is_none() {
                eprintln!("wsus-edge {command}: --update {u:?} is not a GUID");
            }
            id
        })
        .collect()
}

/// Update ids as the audit log lists them.
fn listed(ids: &[Guid]) -> String {
    ids.iter()
        .map(Guid::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Change the catalog of `config`'s data_dir with `change`, off the async workers, and write
/// `audit` (action, detail) to the audit log under this user's name.
async fn catalog_change<T: Send + 'static>(
    config: &Config,
    kind: LocalChange,
    audit: (&'static str, String),
    change: impl FnOnce(&mut Store, &crate::catalog::Catalog) -> Result<T, CatalogError>
    + Send
    + 'static,
) -> Result<T, CatalogError> {
    if let Some(refusal) = config
        .upstream
        .as_ref()
        .and_then(|up| local_refusal(up, kind))
    {
        return Err(refusal);
    }
    let state = config.clone();
    tokio::task::spawn_blocking(move || {
        let database = Database::from_config(&state)?;
        let mut store = Store::open(&database)?;
        let catalog = store.load()?;
        let done = change(&mut store, &catalog)?;
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        crate::state::Journal::open(&database)?.audit(&crate::report::AuditEntry {
            id: 0,
            at: crate::clock::unix_now(),
            who: format!("{user} (CLI)"),
            via: "cli".into(),
            action: audit.0.into(),
            detail: audit.1,
        })?;
        Ok(done)
    })
    .await
    .map_err(|e| CatalogError::Store(format!("catalog task: {e}")))?
}

/// A catalog error: a usage problem when it names something wrong, else a failure.
fn catalog_failure(e: CatalogError) -> Exit {
    eprintln!("wsus-edge: {e}");
    match e {
        CatalogError::Unknown(_)
        | CatalogError::Document(_)
        | CatalogError::Invalid(_)
        | CatalogError::Exists(_) => Exit::Usage,
        CatalogError::Store(_) => Exit::Failure,
    }
}

/// The bytes of every regular file under `dir` (for a progress bar's total).
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => pending.push(entry.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}
