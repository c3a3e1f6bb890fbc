//! The content path: `/Content/<XX>/<SHA1>.<ext>` served with exact RFC 9110 range semantics from
//! a memory tier and a disk tier, filled from upstream one aligned slice at a time.
//!
//! An object is known by its SHA-1 only (never by URL), so any upstream with the WSUS layout can
//! fill it and the name verifies it. Objects are split into aligned slices of
//! `cache.slice_bytes`. A miss fetches only the slices a request needs; each slice crosses the
//! WAN once however many clients want it ([`fill::SliceFill`] is the single flight), and every
//! waiting client streams its bytes as they arrive. When all slices are present the object is
//! hashed against its name and committed, or discarded on mismatch.
//!
//! Owns: `path` (allow-list), `range` (RFC 9110 math), `disk` (layout, blocking I/O), `fill`
//! (single-flight fetch), the [`Store`] (index, tiers, eviction) and `response` (HTTP answers).
//! May call: `upstream`, `metrics`, `error`, `config`. Knows no protocol and no update.

pub mod disk;
pub mod fill;
pub mod path;
pub mod range;
pub mod response;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{Semaphore, watch};

use crate::config::Config;
use crate::error::{Error, Kind, Result};
use crate::lock::lock;
use crate::metrics::{FoundByLabels, Metrics, TierLabels};
use crate::upstream::Upstream;
use disk::{CommitOutcome, Dirs, PartialFile};
use fill::{FetchSpec, Learned, Sizing, SliceFill};
pub use path::{ContentPath, Digest};

/// What the store needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub slice_bytes: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub min_free_disk: u64,
    pub max_ranges: usize,
    pub read_ahead: u32,
    /// The largest object fetched from upstream (also bounded by `disk_bytes`).
    pub max_object_bytes: u64,
    /// Partial objects on disk at once (two descriptors each).
    pub max_partial_objects: usize,
    /// Bytes per second the scrub re-reads committed objects at; 0: no scrub.
    pub scrub_rate: u64,
    /// Every response's last byte waits for the object's verdict when all its slices are there
    /// or coming (not only the object's last byte).
    pub hold_ranges: bool,
    /// Slice fetches in flight for one object (also how far a response looks ahead).
    pub per_object: usize,
    pub retries: u32,
    /// The most one slice's fetch may take, resumptions included.
    pub fill_timeout: Duration,
    /// How long a name whose upstream bytes failed verification is answered 502 without a
    /// fetch.
    pub mismatch_backoff: Duration,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        let (per_object, retries, fill_timeout, mismatch_backoff) = match &config.upstream {
            Some(up) => (
                up.per_object,
                up.retries,
                up.fill_timeout,
                up.mismatch_backoff,
            ),
            None => (4, 4, Duration::from_secs(300), Duration::ZERO),
        };
        Settings {
            data_dir: config.node.data_dir.clone(),
            slice_bytes: config.cache.slice_bytes,
            memory_bytes: config.cache.memory_bytes,
            disk_bytes: config.cache.disk_bytes,
            min_free_disk: config.cache.min_free_disk,
            max_ranges: config.cache.max_ranges,
            read_ahead: config.cache.read_ahead,
            max_object_bytes: config.cache.max_object_bytes,
            max_partial_objects: config.cache.max_partial_objects,
            scrub_rate: config.cache.scrub_rate,
            hold_ranges: config.cache.hold_ranges,
            per_object,
            retries,
            fill_timeout,
            mismatch_backoff,
        }
    }
}

/// Where a piece of a response came from (the access log line's cache status says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Memory,
    Disk,
    Upstream,
}

/// A slice as a reader gets it.
pub enum SliceData {
    /// All of the slice, at hand.
    Ready(Bytes),
    /// In flight: read it as it arrives.
    Filling(Arc<SliceFill>),
}

/// Memory-tier key: the generation keeps bytes of a discarded fill from ever matching a
/// later fill of the same digest.
type SliceKey = (Digest, u64, u64);

/// The recency and reader count of an object, shared by its filling and committed forms so an
/// object never looks idle to eviction while a response still reads it.
#[derive(Default)]
struct Usage {
    readers: AtomicUsize,
    last_access_ms: AtomicU64,
    /// Accessed since the last time its atime was written to disk.
    dirty: AtomicBool,
}

struct Committed {
    digest: Digest,
    size: u64,
    last_modified: u64,
    generation: u64,
    usage: Arc<Usage>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Meta {
    size: u64,
    last_modified: u64,
}

#[derive(Clone, Debug)]
enum MetaState {
    Unknown,
    Known(Meta),
    Failed(Kind, String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Pending,
    Verified,
    Failed,
    /// Streamed through from memory without a disk copy: never checked as a whole, so a
    /// response that carries the whole object must hash what it sends itself.
    Unverifiable,
}

enum Storage {
    /// Size not known yet: the first fetch will tell.
    Unsized,
    Partial(Arc<PartialFile>),
    /// No room on disk: slices live in memory only and the object is never committed.
    MemoryOnly,
    Committed,
    /// Failed or discarded; readers still holding it get errors.
    Gone,
}

#[derive(Clone)]
enum Slot {
    Absent,
    Fetching(Arc<SliceFill>),
    Present,
}

struct ObjState {
    storage: Storage,
    slots: Vec<Slot>,
    present: usize,
    sizing_started: bool,
}

/// An object being filled (or just committed by a fill).
struct Object {
    digest: Digest,
    generation: u64,
    /// The URL path at the upstream (as the first client asked for it).
    upstream_path: String,
    /// The extension of that path, recorded with a partial object so a fill resumed after a
    /// restart asks upstream for the same name.
    ext: String,
    usage: Arc<Usage>,
    state: Mutex<ObjState>,
    meta: watch::Sender<MetaState>,
    verdict: watch::Sender<Verdict>,
    permits: Arc<Semaphore>,
}

impl Object {
    fn lock(&self) -> MutexGuard<'_, ObjState> {
        lock(&self.state)
    }

    fn known_meta(&self) -> Option<Meta> {
        match &*self.meta.borrow() {
            MetaState::Known(m) => Some(*m),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Index {
    committed: HashMap<Digest, Arc<Committed>>,
    filling: HashMap<Digest, Arc<Object>>,
}

struct Shared {
    settings: Settings,
    dirs: Dirs,
    upstream: Option<Arc<Upstream>>,
    metrics: Arc<Metrics>,
    index: Mutex<Index>,
    memory: Option<moka::future::Cache<SliceKey, Bytes>>,
    /// Committed bytes plus the full size of every partial object on disk.
    disk_used: AtomicU64,
    next_generation: AtomicU64,
    /// Disk-full is logged once per episode, not once per slice.
    disk_full_logged: AtomicBool,
    /// Names whose upstream bytes failed verification, with when: not fetched again for
    /// `mismatch_backoff`, so that a client cannot piece a wrong file together from ranges
    /// served before and after the failure.
    failed: Mutex<HashMap<Digest, std::time::Instant>>,
}

/// At most this many names that failed verification are remembered (the oldest go first).
const FAILED_NAMES: usize = 4096;

/// The content store of a node. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

/// Counts for status pages.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub objects: usize,
    pub filling: usize,
    pub disk_bytes: u64,
    pub memory_bytes: u64,
}

/// One object as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ObjectInfo {
    /// `committed`, `filling`, `sizing`, `streaming-uncached` or `discarded`.
    pub state: &'static str,
    pub size: Option<u64>,
    /// Slices on disk (committed objects: all).
    pub slices_present: u64,
    pub slices_total: Option<u64>,
    /// Responses reading it now.
    pub readers: usize,
}

fn now_ms() -> u64 {
    disk::unix_ms(SystemTime::now())
}

impl Store {
    /// Open the store under `data_dir`: sweep temp files, index committed objects, recover
    /// partial ones (keeping only slices that still verify), and resume their commits.
    pub async fn open(
        settings: Settings,
        upstream: Option<Arc<Upstream>>,
        metrics: Arc<Metrics>,
    ) -> Result<Store> {
        let dirs = Dirs::new(&settings.data_dir);
        let slice_bytes = settings.slice_bytes;
        let (dirs, committed, partials) = blocking(move || {
            dirs.create()?;
            let swept = disk::sweep_tmp(&dirs)?;
            if swept > 0 {
                tracing::info!(files = swept, "removed temporary files left by a crash");
            }
            let committed = disk::scan_committed(&dirs)?;
            let partials = disk::recover_partials(&dirs, slice_bytes)?;
            Ok((dirs, committed, partials))
        })
        .await
        .map_err(|e| e.context("opening the content store"))?;

        let memory = (settings.memory_bytes > 0).then(|| {
            moka::future::Cache::builder()
                .max_capacity(settings.memory_bytes)
                .weigher(|_k: &SliceKey, v: &Bytes| v.len().try_into().unwrap_or(u32::MAX))
                .build()
        });
        let shared = Arc::new(Shared {
            settings,
            dirs,
            upstream,
            metrics,
            index: Mutex::new(Index::default()),
            memory,
            disk_used: AtomicU64::new(0),
            next_generation: AtomicU64::new(1),
            disk_full_logged: AtomicBool::new(false),
            failed: Mutex::new(HashMap::new()),
        });
        let store = Store { shared };
        let mut used = 0;
        {
            let mut index = lock(&store.shared.index);
            for info in committed {
                used += info.size;
                let usage = Arc::new(Usage::default());
                usage
                    .last_access_ms
                    .store(info.accessed_ms, Ordering::Relaxed);
                index.committed.insert(
                    info.digest,
                    Arc::new(Committed {
                        digest: info.digest,
                        size: info.size,
                        last_modified: info.last_modified,
                        generation: store.shared.generation(),
                        usage,
                    }),
                );
            }
        }
        let mut complete = Vec::new();
        // Partial objects beyond max_partial_objects: the least recently written go.
        let mut partials = partials;
        if partials.len() > store.shared.settings.max_partial_objects {
            let written = |rec: &disk::Recovered| {
                std::fs::metadata(store.shared.dirs.partial_data(&rec.digest))
                    .and_then(|m| m.modified())
                    .unwrap_or(UNIX_EPOCH)
            };
            partials.sort_by_cached_key(|rec| std::cmp::Reverse(written(rec)));
            for rec in partials.split_off(store.shared.settings.max_partial_objects) {
                tracing::info!(digest = %rec.digest, "over cache.max_partial_objects: partial object discarded");
                disk::discard_partial(&store.shared.dirs, &rec.digest);
            }
        }
        for rec in partials {
            if store.shared.upstream.is_none() {
                // A root cannot finish a fill; its partial files are debris.
                disk::discard_partial(&store.shared.dirs, &rec.digest);
                continue;
            }
            used += rec.file.size;
            let present = rec.present.iter().filter(|p| **p).count();
            let meta = Meta {
                size: rec.file.size,
                last_modified: rec.file.last_modified,
            };
            let slots = rec
                .present
                .iter()
                .map(|p| if *p { Slot::Present } else { Slot::Absent })
                .collect::<Vec<_>>();
            let all = present == slots.len();
            let object = store.shared.new_object(
                &ContentPath {
                    digest: rec.digest,
                    ext: rec.file.ext.clone(),
                },
                ObjState {
                    storage: Storage::Partial(Arc::new(rec.file)),
                    slots,
                    present,
                    sizing_started: true,
                },
                MetaState::Known(meta),
            );
            if all {
                complete.push(object.clone());
            }
            lock(&store.shared.index).filling.insert(rec.digest, object);
        }
        store.shared.disk_used.store(used, Ordering::Relaxed);
        for object in complete {
            store.shared.clone().spawn_commit(object);
        }
        store.shared.update_gauges();
        Ok(store)
    }

    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    pub fn has_upstream(&self) -> bool {
        self.shared.upstream.is_some()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    pub fn stats(&self) -> Stats {
        let index = lock(&self.shared.index);
        Stats {
            objects: index.committed.len(),
            filling: index.filling.len(),
            disk_bytes: self.shared.disk_used.load(Ordering::Relaxed),
            memory_bytes: self.shared.memory.as_ref().map_or(0, |m| m.weighted_size()),
        }
    }

    /// What the store holds of one object, for the admin API.
    pub fn describe(&self, digest: &Digest) -> Option<ObjectInfo> {
        let index = lock(&self.shared.index);
        if let Some(c) = index.committed.get(digest) {
            let slices = c.size.div_ceil(self.shared.settings.slice_bytes);
            return Some(ObjectInfo {
                state: "committed",
                size: Some(c.size),
                slices_present: slices,
                slices_total: Some(slices),
                readers: c.usage.readers.load(Ordering::Relaxed),
            });
        }
        let object = index.filling.get(digest)?;
        let state = object.lock();
        let (name, total) = match state.storage {
            Storage::Unsized => ("sizing", None),
            Storage::Partial(_) => ("filling", Some(state.slots.len() as u64)),
            Storage::MemoryOnly => ("streaming-uncached", Some(state.slots.len() as u64)),
            Storage::Committed => ("committed", Some(state.slots.len() as u64)),
            Storage::Gone => ("discarded", None),
        };
        Some(ObjectInfo {
            state: name,
            size: object.known_meta().map(|m| m.size),
            slices_present: state.present as u64,
            slices_total: total,
            readers: object.usage.readers.load(Ordering::Relaxed),
        })
    }

    /// Find (or start filling) the object a content path names. `first_wanted` is the first
    /// byte the request wants, if it can be known before the size: it picks the slice whose
    /// fetch will also tell the size; `None` (a HEAD, a suffix range) learns the size with a
    /// one-byte probe instead, fetching no slice. Resolves once the object's size is known.
    pub async fn lookup(&self, path: &ContentPath, first_wanted: Option<u64>) -> Result<Handle> {
        let shared = &self.shared;
        let digest = path.digest;
        let found = {
            let index = lock(&shared.index);
            if let Some(c) = index.committed.get(&digest) {
                c.usage.readers.fetch_add(1, Ordering::AcqRel);
                Some(HandleKind::Committed(c.clone()))
            } else if let Some(o) = index.filling.get(&digest) {
                o.usage.readers.fetch_add(1, Ordering::AcqRel);
                Some(HandleKind::Object(o.clone()))
            } else {
                None
            }
        };
        let kind = match found {
            Some(kind) => kind,
            None => self.discover(path).await?,
        };
        let handle = Handle {
            shared: shared.clone(),
            kind,
            fetched_meta: false,
        };
        handle.resolve(first_wanted).await
    }

    /// Not in the index: an import may have added it behind our back; otherwise a new fill.
    async fn discover(&self, path: &ContentPath) -> Result<HandleKind> {
        let shared = self.shared.clone();
        let digest = path.digest;
        // One stat under the index lock (rare: only for names the index does not know), so
        // that an eviction, which retires files under the same lock, cannot slip in between.
        let mut index = lock(&shared.index);
        let on_disk = disk::stat_committed(&shared.dirs, &digest);
        if let Some(info) = on_disk {
            let entry = index
                .committed
                .entry(digest)
                .or_insert_with(|| {
                    shared.disk_used.fetch_add(info.size, Ordering::Relaxed);
                    let usage = Arc::new(Usage::default());
                    usage
                        .last_access_ms
                        .store(info.accessed_ms, Ordering::Relaxed);
                    Arc::new(Committed {
                        digest,
                        size: info.size,
                        last_modified: info.last_modified,
                        generation: shared.generation(),
                        usage,
                    })
                })
                .clone();
            entry.usage.readers.fetch_add(1, Ordering::AcqRel);
            return Ok(HandleKind::Committed(entry));
        }
        if shared.upstream.is_none() {
            return Err(Error::client(Kind::NotFound, "no such content"));
        }
        if let Some(c) = index.committed.get(&digest) {
            c.usage.readers.fetch_add(1, Ordering::AcqRel);
            return Ok(HandleKind::Committed(c.clone()));
        }
        if !index.filling.contains_key(&digest)
            && let Some(ago) = shared.failed_recently(&digest)
        {
            return Err(Error::upstream(
                Kind::Digest,
                format!(
                    "the upstream's bytes for this name failed verification {}s ago; not \
                     fetched again for {}s (upstream.mismatch_backoff)",
                    ago.as_secs(),
                    shared.settings.mismatch_backoff.as_secs()
                ),
            ));
        }
        let object = index
            .filling
            .entry(digest)
            .or_insert_with(|| {
                shared.new_object(
                    path,
                    ObjState {
                        storage: Storage::Unsized,
                        slots: Vec::new(),
                        present: 0,
                        sizing_started: false,
                    },
                    MetaState::Unknown,
                )
            })
            .clone();
        object.usage.readers.fetch_add(1, Ordering::AcqRel);
        Ok(HandleKind::Object(object))
    }

    /// Start the periodic housekeeping: gauges, recency written to disk, and the free-space
    /// floor (other programs may fill the disk too).
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let shared = Arc::downgrade(&self.shared);
        let scrub = Shared::scrub(shared.clone());
        let housekeeping = async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                shared.update_gauges();
                n += 1;
                if n.is_multiple_of(30) {
                    shared.clone().persist_access_times().await;
                }
                if n.is_multiple_of(5) && shared.upstream.is_some() {
                    let free = shared.free_disk();
                    if free < shared.settings.min_free_disk {
                        shared.evict(shared.settings.min_free_disk - free).await;
                    }
                }
            }
        };
        // One task: aborting it (at shutdown) stops both.
        tokio::spawn(async move {
            tokio::join!(housekeeping, scrub);
        })
    }
}

/// Run blocking file-system work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Error::io("disk", e)),
        Err(e) => Err(Error::internal(
            Kind::Io,
            format!("blocking task failed: {e}"),
        )),
    }
}

impl Shared {
    fn generation(&self) -> u64 {
        self.next_generation.fetch_add(1, Ordering::Relaxed)
    }

    /// Remember that the upstream's bytes for `digest` failed verification.
    fn remember_failure(&self, digest: Digest) {
        let mut failed = lock(&self.failed);
        let now = std::time::Instant::now();
        let backoff = self.settings.mismatch_backoff;
        failed.retain(|_, at| now.duration_since(*at) < backoff);
        if failed.len() >= FAILED_NAMES
            && let Some(oldest) = failed.iter().min_by_key(|(_, at)| **at).map(|(d, _)| *d)
        {
            failed.remove(&oldest);
        }
        failed.insert(digest, now);
    }

    /// How long ago `digest`'s upstream bytes failed verification, if within
    /// `mismatch_backoff`.
    fn failed_recently(&self, digest: &Digest) -> Option<Duration> {
        let failed = lock(&self.failed);
        let ago = failed.get(digest)?.elapsed();
        (ago < self.settings.mismatch_backoff).then_some(ago)
    }

    fn new_object(&self, path: &ContentPath, state: ObjState, meta: MetaState) -> Arc<Object> {
        let verdict = if matches!(state.storage, Storage::Committed) {
            Verdict::Verified
        } else {
            Verdict::Pending
        };
        Arc::new(Object {
            digest: path.digest,
            generation: self.generation(),
            upstream_path: path.url_path(),
            ext: path.ext.clone(),
            usage: Arc::new(Usage::default()),
            state: Mutex::new(state),
            meta: watch::channel(meta).0,
            verdict: watch::channel(verdict).0,
            permits: Arc::new(Semaphore::new(self.settings.per_object.max(1))),
        })
    }

    fn update_gauges(&self) {
        let gauge = |tier| self.metrics.cache_bytes.get_or_create(&TierLabels { tier });
        gauge("disk").set(self.disk_used.load(Ordering::Relaxed) as i64);
        let memory = self.memory.as_ref().map_or(0, |m| m.weighted_size());
        gauge("memory").set(memory as i64);
    }

    fn free_disk(&self) -> u64 {
        match rustix::fs::statvfs(&self.dirs.root) {
            Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
            Err(_) => u64::MAX,
        }
    }

    async fn persist_access_times(self: Arc<Self>) {
        let touched: Vec<(Digest, u64)> = {
            let index = lock(&self.index);
            index
                .committed
                .values()
                .filter(|c| c.usage.dirty.swap(false, Ordering::Relaxed))
                .map(|c| (c.digest, c.usage.last_access_ms.load(Ordering::Relaxed)))
                .collect()
        };
        if touched.is_empty() {
            return;
        }
        let shared = self.clone();
        let _ = blocking(move || {
            for (digest, ms) in touched {
                let when = UNIX_EPOCH + Duration::from_millis(ms);
                // The object may have been evicted meanwhile; nothing to record then.
                let _ = disk::touch_accessed(&shared.dirs, &digest, when);
            }
            Ok(())
        })
        .await;
    }

    /// Make room for one more partial object under `max_partial_objects` (each holds two
    /// descriptors and a reservation of its size): evict idle ones, least recently used first.
    /// False when every one is busy (a download reads it or a fetch is in flight).
    async fn room_for_partial(self: &Arc<Self>) -> bool {
        let bound = self.settings.max_partial_objects;
        let (victims, excess) = {
            let mut index = lock(&self.index);
            let mut open = 0;
            let mut idle = Vec::new();
            for o in index.filling.values() {
                let state = o.lock();
                if !matches!(state.storage, Storage::Partial(_)) {
                    continue;
                }
                open += 1;
                let busy = o.usage.readers.load(Ordering::Acquire) != 0
                    || state.slots.iter().any(|s| matches!(s, Slot::Fetching(_)));
                if !busy {
                    idle.push((o.usage.last_access_ms.load(Ordering::Relaxed), o.digest));
                }
            }
            if open < bound {
                return true;
            }
            let excess = open + 1 - bound;
            idle.sort_unstable();
            let victims: Vec<Arc<Object>> = idle
                .into_iter()
                .take(excess)
                .filter_map(|(_, digest)| index.filling.remove(&digest))
                .collect();
            (victims, excess)
        };
        let shed = victims.len();
        for object in victims {
            // Out of the index with no reader: only its files and its reservation are left.
            if self.discard(&object).await {
                self.metrics.evictions.inc();
                tracing::debug!(digest = %object.digest, "evicted an idle partial object");
            }
        }
        shed == excess
    }

    /// Make room for `size` more bytes on disk, evicting least recently used idle objects.
    /// False when even that cannot make room (the caller streams without caching).
    async fn reserve(self: &Arc<Self>, size: u64) -> bool {
        let limit = self.settings.disk_bytes;
        for _ in 0..8 {
            let used = self.disk_used.load(Ordering::Relaxed);
            let free = self.free_disk();
            let over_limit = (used + size).saturating_sub(limit);
            let under_floor = (size + self.settings.min_free_disk).saturating_sub(free);
            let needed = over_limit.max(under_floor);
            if needed == 0 {
                self.disk_used.fetch_add(size, Ordering::Relaxed);
                return true;
            }
            if size > limit || self.evict(needed).await == 0 {
                return false;
            }
        }
        false
    }

    /// Evict idle objects, oldest access first, until `needed` bytes are freed plus a little
    /// headroom so that a full cache does not evict on every fill. Returns bytes freed.
    ///
    /// Idle: no response reads it and, for a partial object, no fetch is in flight. A partial
    /// object holds a reservation of its full size, so one that a single range or HEAD began
    /// and nobody finished must be evictable too. Victims leave the index and (committed ones)
    /// their place on disk under the index lock, the lock every lookup takes: no request can
    /// find an object between its choice and its removal.
    async fn evict(self: &Arc<Self>, needed: u64) -> u64 {
        let target = needed + self.settings.disk_bytes / 100;
        let mut retired = Vec::new();
        let mut partials = Vec::new();
        let mut freed = 0;
        {
            let mut index = lock(&self.index);
            let mut idle: Vec<(u64, Digest, u64, bool)> = index
                .committed
                .values()
                .filter(|c| c.usage.readers.load(Ordering::Acquire) == 0)
                .map(|c| {
                    let at = c.usage.last_access_ms.load(Ordering::Relaxed);
                    (at, c.digest, c.size, false)
                })
                .collect();
            for o in index.filling.values() {
                if o.usage.readers.load(Ordering::Acquire) != 0 {
                    continue;
                }
                let state = o.lock();
                if let Storage::Partial(pf) = &state.storage
                    && !state.slots.iter().any(|s| matches!(s, Slot::Fetching(_)))
                {
                    let at = o.usage.last_access_ms.load(Ordering::Relaxed);
                    idle.push((at, o.digest, pf.size, true));
                }
            }
            idle.sort_unstable();
            for (_, digest, size, partial) in idle {
                if freed >= target {
                    break;
                }
                if partial {
                    if let Some(o) = index.filling.remove(&digest) {
                        partials.push(o);
                        freed += size;
                    }
                } else if let Some(c) = index.committed.remove(&digest) {
                    match disk::retire_committed(&self.dirs, &digest) {
                        Ok(path) => retired.push((c, path)),
                        Err(e) => {
                            tracing::warn!(%digest, error = %e, "evicting: could not remove file");
                            retired.push((c, None));
                        }
                    }
                    freed += size;
                }
            }
        }
        for (victim, path) in retired {
            if let Some(path) = path {
                let _ = blocking(move || disk::remove_retired(&path)).await;
            }
            self.disk_used.fetch_sub(victim.size, Ordering::Relaxed);
            self.forget_memory(victim.digest, victim.generation, victim.size)
                .await;
            self.metrics.evictions.inc();
            tracing::debug!(digest = %victim.digest, size = victim.size, "evicted");
        }
        for object in partials {
            // Out of the index with no reader: nobody can reach it; only its files and its
            // reservation are left.
            if self.discard(&object).await {
                self.metrics.evictions.inc();
                tracing::debug!(digest = %object.digest, "evicted a partial object");
            }
        }
        freed
    }

    async fn forget_memory(&self, digest: Digest, generation: u64, size: u64) {
        if let Some(memory) = &self.memory {
            for k in 0..size.div_ceil(self.settings.slice_bytes) {
                memory.invalidate(&(digest, generation, k)).await;
            }
        }
    }

    fn slice_len(&self, size: u64, index: u64) -> u64 {
        let start = index * self.settings.slice_bytes;
        self.settings.slice_bytes.min(size.saturating_sub(start))
    }

    /// Read one slice of a file into the memory tier (coalescing concurrent reads of it).
    async fn read_slice(
        self: &Arc<Self>,
        key: SliceKey,
        size: u64,
        source: FileSource,
    ) -> Result<Bytes> {
        let len = self.slice_len(size, key.2) as usize;
        let index = key.2;
        let offset = index * self.settings.slice_bytes;
        let shared = self.clone();
        // Checked before it is served or enters the memory tier: against the seal of a
        // committed object, the map slot of a partial one.
        let read = async move {
            let digest = key.0;
            let intact = blocking(move || {
                let bytes = match &source {
                    FileSource::Committed => {
                        let file = std::fs::File::open(shared.dirs.committed(&digest))?;
                        disk::read_at(&file, offset, len)?
                    }
                    FileSource::Partial(pf) => disk::read_at(&pf.data, offset, len)?,
                };
                let intact = match &source {
                    FileSource::Committed => {
                        disk::check_seal(&shared.dirs, &digest, size, offset, &bytes)?
                            != disk::Seal::Differs
                    }
                    FileSource::Partial(pf) => pf.check_slice(index, &bytes)?,
                };
                Ok(intact.then_some(bytes))
            })
            .await?;
            intact.ok_or_else(|| {
                Error::internal(
                    Kind::Digest,
                    format!("slice {index} of {digest} on disk no longer matches its digest"),
                )
            })
        };
        match &self.memory {
            Some(memory) => memory
                .try_get_with(key, read)
                .await
                .map_err(|e| Error::internal(e.kind(), e.message().to_owned())),
            None => read.await,
        }
    }

    /// A committed object's bytes on disk changed since they were verified (`found_by` a read
    /// or the scrub): out of the index at once, so nothing serves them again. A branch removes
    /// it (the next request fetches it again); a root, which cannot, moves it to `corrupt/` and
    /// says so loudly.
    async fn corrupt(self: &Arc<Self>, digest: Digest, found_by: &'static str) {
        let Some(entry) = lock(&self.index).committed.remove(&digest) else {
            return;
        };
        self.metrics
            .corrupt
            .get_or_create(&FoundByLabels { found_by })
            .inc();
        let root = self.upstream.is_none();
        let shared = self.clone();
        let removed = blocking(move || disk::remove_corrupt(&shared.dirs, &digest, root)).await;
        self.disk_used.fetch_sub(entry.size, Ordering::Relaxed);
        self.forget_memory(digest, entry.generation, entry.size)
            .await;
        if let Err(e) = removed {
            tracing::error!(%digest, error = %e, "removing a corrupt object failed");
        }
        if root {
            tracing::error!(%digest, size = entry.size, found_by,
                "a committed object's bytes on disk no longer match its digest (disk or \
                 filesystem damage): moved to corrupt/ and no longer served; import it again");
        } else {
            tracing::error!(%digest, size = entry.size, found_by,
                "a committed object's bytes on disk no longer match its digest (disk or \
                 filesystem damage): removed; the next request fetches it again");
        }
    }

    /// Re-read the committed objects, `rate` bytes per second, checking each 64 KiB against its
    /// seal, sealing those from before seals; round after round while the store lives.
    async fn scrub(shared: std::sync::Weak<Shared>) {
        loop {
            let objects: Vec<(Digest, u64)> = {
                let Some(s) = shared.upgrade() else { return };
                if s.settings.scrub_rate == 0 {
                    return;
                }
                let index = lock(&s.index);
                let mut objects: Vec<(Digest, u64)> = index
                    .committed
                    .values()
                    .map(|c| (c.digest, c.size))
                    .collect();
                objects.sort_unstable_by_key(|(digest, _)| digest.0);
                objects
            };
            if objects.is_empty() {
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            for (digest, size) in objects {
                let Some(s) = shared.upgrade() else { return };
                s.scrub_object(digest, size).await;
            }
        }
    }

    async fn scrub_object(self: &Arc<Self>, digest: Digest, size: u64) {
        const CHUNK: u64 = 1 << 20;
        let rate = self.settings.scrub_rate.max(1) as f64;
        let pace = |bytes: u64| tokio::time::sleep(Duration::from_secs_f64(bytes as f64 / rate));
        let shared = self.clone();
        let sealed = blocking(move || Ok(disk::is_sealed(&shared.dirs, &digest, size))).await;
        if sealed.is_ok_and(|sealed| !sealed) {
            let shared = self.clone();
            match blocking(move || disk::seal_committed(&shared.dirs, &digest, size)).await {
                Ok(true) => {
                    self.metrics.sealed.inc();
                    self.metrics.scrubbed_bytes.inc_by(size);
                }
                Ok(false) => self.corrupt(digest, "scrub").await,
                // Evicted meanwhile, or unreadable: the next round (or a read) sees it again.
                Err(_) => {}
            }
            pace(size).await;
            return;
        }
        let mut offset = 0;
        while offset < size {
            if !lock(&self.index).committed.contains_key(&digest) {
                return;
            }
            let len = CHUNK.min(size - offset);
            let shared = self.clone();
            let checked = blocking(move || {
                let file = std::fs::File::open(shared.dirs.committed(&digest))?;
                let bytes = disk::read_at(&file, offset, len as usize)?;
                disk::check_seal(&shared.dirs, &digest, size, offset, &bytes)
            })
            .await;
            match checked {
                Ok(disk::Seal::Differs) => {
                    self.corrupt(digest, "scrub").await;
                    return;
                }
                Ok(_) => {
                    self.metrics.scrubbed_bytes.inc_by(len);
                }
                Err(_) => return,
            }
            offset += len;
            pace(len).await;
        }
    }

    /// Begin fetching slice `index` of `object` unless it is present or in flight.
    fn ensure_fetching(
        self: &Arc<Self>,
        object: &Arc<Object>,
        index: u64,
    ) -> Option<Arc<SliceFill>> {
        let mut state = object.lock();
        let slot = state.slots.get_mut(index as usize)?;
        match slot {
            Slot::Fetching(fill) => Some(fill.clone()),
            Slot::Present => None,
            Slot::Absent => {
                let fill = Arc::new(SliceFill::new(index));
                *slot = Slot::Fetching(fill.clone());
                drop(state);
                self.clone().spawn_fetch(object.clone(), fill.clone());
                Some(fill)
            }
        }
    }

    fn spawn_fetch(self: Arc<Self>, object: Arc<Object>, fill: Arc<SliceFill>) {
        tokio::spawn(async move { self.run_fetch(object, fill).await });
    }

    async fn run_fetch(self: Arc<Self>, object: Arc<Object>, fill: Arc<SliceFill>) {
        let Some(upstream) = self.upstream.clone() else {
            fill.fail(&Error::internal(Kind::Config, "no upstream"));
            return;
        };
        let _permit = object.permits.clone().acquire_owned().await;
        let spec = FetchSpec {
            upstream: &upstream,
            path: &object.upstream_path,
            slice_bytes: self.settings.slice_bytes,
            size: object.known_meta().map(|m| m.size),
            retries: self.settings.retries,
            deadline: self.settings.fill_timeout,
            now_secs: disk::unix_secs(SystemTime::now()),
        };
        let learner = Learner {
            shared: &self,
            object: &object,
            fill: Some(&fill),
        };
        let index = fill.index;
        match fill::fetch(spec, &fill, &learner).await {
            Ok(bytes) => {
                let Some(meta) = object.known_meta() else {
                    fill.finish();
                    return;
                };
                if index >= meta.size.div_ceil(self.settings.slice_bytes) {
                    // Asked past the end while the size was unknown; the answer taught the size.
                    fill.finish();
                    return;
                }
                if let Some(memory) = &self.memory {
                    memory
                        .insert((object.digest, object.generation, index), bytes.clone())
                        .await;
                }
                // Readers are released before the disk write: they have the bytes already.
                fill.finish();
                self.persist_slice(&object, index, bytes).await;
            }
            Err(e) => {
                self.fill_failed(&object, Some(index), &e);
                fill.fail(&e);
                let mut state = object.lock();
                if let Some(slot) = state.slots.get_mut(index as usize)
                    && matches!(slot, Slot::Fetching(f) if Arc::ptr_eq(f, &fill))
                {
                    *slot = Slot::Absent;
                }
                drop(state);
                self.sizing_failed(&object, &e);
            }
        }
    }

    /// Learn the size of `object` with a probe instead of a slice fetch.
    async fn run_probe(self: Arc<Self>, object: Arc<Object>) {
        let Some(upstream) = self.upstream.clone() else {
            return self.sizing_failed(&object, &Error::internal(Kind::Config, "no upstream"));
        };
        let learner = Learner {
            shared: &self,
            object: &object,
            fill: None,
        };
        let now = disk::unix_secs(SystemTime::now());
        let probed = fill::probe(
            &upstream,
            &object.upstream_path,
            self.settings.retries,
            now,
            &learner,
        )
        .await;
        if let Err(e) = probed {
            self.fill_failed(&object, None, &e);
            self.sizing_failed(&object, &e);
        }
    }

    /// Log and count a failed fetch (of a slice, or of the size alone).
    fn fill_failed(&self, object: &Object, slice: Option<u64>, e: &Error) {
        tracing::warn!(digest = %object.digest, slice, error = %e, "fill failed");
        self.metrics.fill_error(match e.kind() {
            Kind::NotFound => "not_found",
            Kind::Unavailable => "unavailable",
            _ => "upstream",
        });
    }

    /// If `object` never learned its size, it fails for everyone waiting on it and is
    /// forgotten, so the next request starts afresh.
    fn sizing_failed(&self, object: &Arc<Object>, e: &Error) {
        let never_sized = {
            let mut state = object.lock();
            let never = matches!(state.storage, Storage::Unsized);
            if never {
                state.storage = Storage::Gone;
            }
            never
        };
        if never_sized {
            object
                .meta
                .send_replace(MetaState::Failed(e.kind(), e.message().to_owned()));
            self.forget_object(object);
        }
    }

    /// Write a fetched slice to the partial file and mark it present; commit when complete.
    async fn persist_slice(self: &Arc<Self>, object: &Arc<Object>, index: u64, bytes: Bytes) {
        let partial = match &object.lock().storage {
            Storage::Partial(pf) => Some(pf.clone()),
            _ => None,
        };
        let written = match partial {
            Some(pf) => {
                let bytes = bytes.clone();
                Some(blocking(move || pf.write_slice(index, &bytes)).await)
            }
            None => None,
        };
        let disk_failed = match written {
            Some(Err(e)) => {
                let reason = if e.kind() == Kind::DiskFull {
                    "disk_full"
                } else {
                    "disk"
                };
                self.metrics.fill_error(reason);
                if !self.disk_full_logged.swap(true, Ordering::Relaxed) {
                    tracing::error!(digest = %object.digest, error = %e,
                        "cannot write to the cache; serving through without caching");
                }
                true
            }
            Some(Ok(())) | None => {
                self.disk_full_logged.store(false, Ordering::Relaxed);
                false
            }
        };
        let next = {
            let mut state = object.lock();
            let Some(slot) = state.slots.get_mut(index as usize) else {
                return;
            };
            // Memory-only objects (and one whose disk copy just failed, which becomes one)
            // keep the slot present while the memory tier holds the slice.
            *slot = Slot::Present;
            state.present += 1;
            // A partial object whose disk copy failed becomes memory-only, under the same
            // lock, so no other slice's completion can start a commit of the incomplete file.
            // Its bytes already went out and into the memory tier; a slice fetched again
            // could differ from them, so it can no longer be checked as a whole on behalf of
            // the responses reading it.
            if disk_failed && let Storage::Partial(pf) = &state.storage {
                let reserved = pf.size;
                state.storage = Storage::MemoryOnly;
                AfterWrite::StreamThrough { reserved }
            } else if state.present == state.slots.len()
                && matches!(state.storage, Storage::Partial(_))
            {
                AfterWrite::Commit
            } else {
                AfterWrite::Wait
            }
        };
        match next {
            AfterWrite::Commit => self.clone().spawn_commit(object.clone()),
            AfterWrite::Wait => {}
            AfterWrite::StreamThrough { reserved } => {
                object.verdict.send_replace(Verdict::Unverifiable);
                self.disk_used.fetch_sub(reserved, Ordering::Relaxed);
                let shared = self.clone();
                let digest = object.digest;
                let _ = blocking(move || {
                    disk::discard_partial(&shared.dirs, &digest);
                    Ok(())
                })
                .await;
            }
        }
    }

    fn spawn_commit(self: Arc<Self>, object: Arc<Object>) {
        tokio::spawn(async move { self.commit(object).await });
    }

    async fn commit(self: Arc<Self>, object: Arc<Object>) {
        let pf = match &object.lock().storage {
            Storage::Partial(pf) => pf.clone(),
            _ => return,
        };
        let (digest, size, last_modified) = (object.digest, pf.size, pf.last_modified);
        let shared = self.clone();
        let outcome = {
            let pf = pf.clone();
            blocking(move || disk::commit(&shared.dirs, &digest, &pf)).await
        };
        match outcome {
            Ok(CommitOutcome::Committed) => {
                // Condemned while we hashed: the file we just hashed is right all the same,
                // so keep it, but its reservation was released by the discard.
                let condemned = matches!(object.lock().storage, Storage::Gone);
                {
                    let mut index = lock(&self.index);
                    if index
                        .filling
                        .get(&digest)
                        .is_some_and(|o| Arc::ptr_eq(o, &object))
                    {
                        index.filling.remove(&digest);
                    }
                    let entry = Arc::new(Committed {
                        digest,
                        size,
                        last_modified,
                        generation: object.generation,
                        usage: object.usage.clone(),
                    });
                    if index.committed.insert(digest, entry).is_none() && condemned {
                        self.disk_used.fetch_add(size, Ordering::Relaxed);
                    }
                }
                {
                    let mut state = object.lock();
                    state.storage = Storage::Committed;
                    state.slots.clear();
                }
                object.verdict.send_replace(Verdict::Verified);
                tracing::info!(%digest, size, "committed");
            }
            Ok(CommitOutcome::Mismatch { actual }) => {
                self.remember_failure(digest);
                if self.discard(&object).await {
                    self.metrics.fill_error("digest");
                    tracing::error!(%digest, %actual, size,
                        "upstream sent bytes that do not match the name; discarded");
                }
            }
            Err(e) => {
                self.metrics.fill_error("disk");
                tracing::error!(%digest, error = %e, "commit failed; discarded");
                self.discard(&object).await;
            }
        }
    }

    /// Forget a failed object: its partial files and disk reservation, its memory slices, its
    /// index entry. Idempotent: only the first call for an object does anything (and returns
    /// true).
    async fn discard(self: &Arc<Self>, object: &Arc<Object>) -> bool {
        let reserved = {
            let mut state = object.lock();
            let reserved = match &state.storage {
                Storage::Gone | Storage::Committed => return false,
                Storage::Partial(pf) => Some(pf.size),
                Storage::Unsized | Storage::MemoryOnly => None,
            };
            state.storage = Storage::Gone;
            reserved
        };
        object.verdict.send_replace(Verdict::Failed);
        let digest = object.digest;
        // The files go before the index entry: a new fill of the same digest (possible once
        // the entry is gone) creates files under the same names.
        if let Some(size) = reserved {
            self.disk_used.fetch_sub(size, Ordering::Relaxed);
            let shared = self.clone();
            let _ = blocking(move || {
                disk::discard_partial(&shared.dirs, &digest);
                Ok(())
            })
            .await;
        }
        self.forget_object(object);
        let size = object.known_meta().map_or(0, |m| m.size);
        self.forget_memory(digest, object.generation, size).await;
        true
    }

    fn forget_object(&self, object: &Arc<Object>) {
        let mut index = lock(&self.index);
        if index
            .filling
            .get(&object.digest)
            .is_some_and(|o| Arc::ptr_eq(o, object))
        {
            index.filling.remove(&object.digest);
        }
    }
}

/// What follows a slice's disk write.
enum AfterWrite {
    /// Other slices are still missing.
    Wait,
    /// Every slice is on disk: check the whole and commit.
    Commit,
    /// The write failed: the object became memory-only; its `reserved` disk bytes go back.
    StreamThrough { reserved: u64 },
}

enum FileSource {
    Committed,
    Partial(Arc<PartialFile>),
}

/// Receives what the first upstream answer says of an object's size.
struct Learner<'a> {
    shared: &'a Arc<Shared>,
    object: &'a Arc<Object>,
    /// The slice fetch that asked, if it was one (not a probe): its slot is marked in flight.
    fill: Option<&'a Arc<SliceFill>>,
}

impl Sizing for Learner<'_> {
    async fn learn(&self, learned: Learned) -> Result<u64> {
        if let Some(meta) = self.object.known_meta() {
            if meta.size != learned.size {
                return Err(Error::upstream(
                    Kind::BadUpstream,
                    format!(
                        "upstream says {} bytes, earlier {}",
                        learned.size, meta.size
                    ),
                )
                .retryable(false));
            }
            return Ok(meta.size);
        }
        let shared = self.shared;
        let size = learned.size;
        // What an upstream claims is bounded before anything is sized by it: the slice map and
        // the disk reservation are proportional to it.
        let limit = shared
            .settings
            .max_object_bytes
            .min(shared.settings.disk_bytes);
        if size > limit {
            shared.metrics.fill_error("too_large");
            tracing::warn!(digest = %self.object.digest, size, limit,
                "the upstream claims an object larger than cache.max_object_bytes or \
                 cache.disk_bytes allow; refused");
            return Err(Error::upstream(
                Kind::BadUpstream,
                format!("the upstream claims {size} bytes, over the limit of {limit}"),
            )
            .retryable(false));
        }
        let slice_count = size.div_ceil(shared.settings.slice_bytes) as usize;
        let storage = if !shared.room_for_partial().await {
            shared.metrics.fill_error("partial_limit");
            tracing::warn!(digest = %self.object.digest,
                limit = shared.settings.max_partial_objects,
                "every partial object is busy (cache.max_partial_objects); serving through \
                 without caching");
            Storage::MemoryOnly
        } else if shared.reserve(size).await {
            let digest = self.object.digest;
            let slice_bytes = shared.settings.slice_bytes;
            let ext = self.object.ext.clone();
            let owner = shared.clone();
            let created = blocking(move || {
                disk::create_partial(
                    &owner.dirs,
                    &digest,
                    &ext,
                    size,
                    slice_bytes,
                    learned.last_modified,
                )
            })
            .await;
            match created {
                Ok(pf) => Storage::Partial(Arc::new(pf)),
                Err(e) => {
                    shared.disk_used.fetch_sub(size, Ordering::Relaxed);
                    shared.metrics.fill_error("disk");
                    tracing::error!(digest = %self.object.digest, error = %e,
                        "cannot create the partial file; serving through without caching");
                    Storage::MemoryOnly
                }
            }
        } else {
            shared.metrics.fill_error("disk_full");
            if !shared.disk_full_logged.swap(true, Ordering::Relaxed) {
                tracing::error!(digest = %self.object.digest, size,
                    "no room in the disk cache; serving through without caching");
            }
            Storage::MemoryOnly
        };
        let empty = slice_count == 0;
        if matches!(storage, Storage::MemoryOnly) {
            self.object.verdict.send_replace(Verdict::Unverifiable);
        }
        {
            let mut state = self.object.lock();
            state.storage = storage;
            state.slots = vec![Slot::Absent; slice_count];
            if let Some(fill) = self.fill
                && let Some(slot) = state.slots.get_mut(fill.index as usize)
            {
                *slot = Slot::Fetching(fill.clone());
            }
        }
        self.object.meta.send_replace(MetaState::Known(Meta {
            size,
            last_modified: learned.last_modified,
        }));
        if empty {
            shared.clone().spawn_commit(self.object.clone());
        }
        Ok(size)
    }
}

enum HandleKind {
    Committed(Arc<Committed>),
    Object(Arc<Object>),
}

/// An open object: its size and validators are known. While a handle lives the object is not
/// evicted.
pub struct Handle {
    shared: Arc<Shared>,
    kind: HandleKind,
    /// This request had to ask upstream just to learn the size.
    fetched_meta: bool,
}

impl Handle {
    fn usage(&self) -> &Usage {
        match &self.kind {
            HandleKind::Committed(c) => &c.usage,
            HandleKind::Object(o) => &o.usage,
        }
    }

    async fn resolve(mut self, first_wanted: Option<u64>) -> Result<Handle> {
        let HandleKind::Object(object) = &self.kind else {
            return Ok(self);
        };
        let object = object.clone();
        let mut rx = object.meta.subscribe();
        let start = {
            let mut state = object.lock();
            let start = !state.sizing_started && matches!(state.storage, Storage::Unsized);
            state.sizing_started = true;
            start
        };
        if start {
            self.fetched_meta = true;
            let shared = self.shared.clone();
            match first_wanted {
                Some(byte) => {
                    let fill = Arc::new(SliceFill::new(byte / shared.settings.slice_bytes));
                    shared.spawn_fetch(object.clone(), fill);
                }
                None => {
                    let object = object.clone();
                    tokio::spawn(async move { shared.run_probe(object).await });
                }
            }
        }
        loop {
            match &*rx.borrow_and_update() {
                MetaState::Known(_) => return Ok(self),
                MetaState::Failed(kind, message) => {
                    return Err(Error::upstream(*kind, message.clone()));
                }
                MetaState::Unknown => self.fetched_meta = true,
            }
            if rx.changed().await.is_err() {
                return Err(Error::internal(Kind::Io, "object abandoned"));
            }
        }
    }

    pub fn digest(&self) -> Digest {
        match &self.kind {
            HandleKind::Committed(c) => c.digest,
            HandleKind::Object(o) => o.digest,
        }
    }

    fn meta(&self) -> Meta {
        match &self.kind {
            HandleKind::Committed(c) => Meta {
                size: c.size,
                last_modified: c.last_modified,
            },
            HandleKind::Object(o) => o.known_meta().unwrap_or(Meta {
                size: 0,
                last_modified: 0,
            }),
        }
    }

    pub fn size(&self) -> u64 {
        self.meta().size
    }

    /// Seconds since the epoch.
    pub fn last_modified(&self) -> u64 {
        self.meta().last_modified
    }

    pub fn slice_bytes(&self) -> u64 {
        self.shared.settings.slice_bytes
    }

    pub fn fetched_meta(&self) -> bool {
        self.fetched_meta
    }

    /// True when nothing will check the object as a whole (it is streamed through from
    /// memory): a response carrying all of it must hash what it sends.
    pub fn needs_own_hash(&self) -> bool {
        match &self.kind {
            HandleKind::Committed(_) => false,
            HandleKind::Object(o) => *o.verdict.borrow() == Verdict::Unverifiable,
        }
    }

    fn generation(&self) -> u64 {
        match &self.kind {
            HandleKind::Committed(c) => c.generation,
            HandleKind::Object(o) => o.generation,
        }
    }

    /// Slice `index`, from the fastest place that has it; starts its fetch if nobody has.
    pub async fn slice(&self, index: u64) -> Result<(SliceData, Tier)> {
        let key = (self.digest(), self.generation(), index);
        if let Some(memory) = &self.shared.memory
            && let Some(bytes) = memory.get(&key).await
        {
            return Ok((SliceData::Ready(bytes), Tier::Memory));
        }
        let size = self.size();
        let object = match &self.kind {
            HandleKind::Committed(_) => {
                let read = self
                    .shared
                    .read_slice(key, size, FileSource::Committed)
                    .await;
                if read.as_ref().is_err_and(|e| e.kind() == Kind::Digest) {
                    self.shared.corrupt(self.digest(), "read").await;
                }
                return Ok((SliceData::Ready(read?), Tier::Disk));
            }
            HandleKind::Object(o) => o,
        };
        let (slot, source) = {
            let state = object.lock();
            let source = match &state.storage {
                Storage::Partial(pf) => Some(FileSource::Partial(pf.clone())),
                Storage::Committed => Some(FileSource::Committed),
                Storage::MemoryOnly => None,
                Storage::Unsized | Storage::Gone => {
                    return Err(Error::upstream(Kind::BadUpstream, "object discarded"));
                }
            };
            let slot = match state.storage {
                Storage::Committed => Slot::Present,
                _ => state
                    .slots
                    .get(index as usize)
                    .cloned()
                    .ok_or_else(|| Error::internal(Kind::Io, "slice index out of range"))?,
            };
            (slot, source)
        };
        match (slot, source) {
            (Slot::Present, Some(source)) => {
                let partial = match &source {
                    FileSource::Partial(pf) => Some(pf.clone()),
                    FileSource::Committed => None,
                };
                match (self.shared.read_slice(key, size, source).await, partial) {
                    (Ok(bytes), _) => Ok((SliceData::Ready(bytes), Tier::Disk)),
                    // A slice of an object still being filled went bad on disk: forgotten
                    // and fetched again, the client none the wiser.
                    (Err(e), Some(pf)) if e.kind() == Kind::Digest => {
                        tracing::warn!(digest = %object.digest, slice = index, "{e}; fetching it again");
                        let _ = blocking(move || pf.forget_slice(index)).await;
                        self.refetch(object, index)
                    }
                    (Err(e), None) if e.kind() == Kind::Digest => {
                        self.shared.corrupt(object.digest, "read").await;
                        Err(e)
                    }
                    (Err(e), _) => Err(e),
                }
            }
            (Slot::Fetching(fill), _) => Ok((SliceData::Filling(fill), Tier::Upstream)),
            // Absent, or present only in a memory tier that let it go: fetch it (again).
            (_, _) => self.refetch(object, index),
        }
    }

    /// Slice `index` of `object` is not to be had where it was: absent again, fetched anew.
    fn refetch(&self, object: &Arc<Object>, index: u64) -> Result<(SliceData, Tier)> {
        {
            let mut state = object.lock();
            if let Some(s) = state.slots.get_mut(index as usize)
                && matches!(s, Slot::Present)
            {
                *s = Slot::Absent;
                state.present -= 1;
            }
        }
        match self.shared.ensure_fetching(object, index) {
            Some(fill) => Ok((SliceData::Filling(fill), Tier::Upstream)),
            None => Err(Error::internal(Kind::Io, "slice vanished")),
        }
    }

    /// A whole-object response hashed what it sent and it did not match the name: the object's
    /// bytes are wrong, so drop them now rather than at the commit's verdict.
    pub async fn condemn(&self) {
        if let HandleKind::Object(object) = &self.kind {
            self.shared.remember_failure(object.digest);
        }
        if let HandleKind::Object(object) = &self.kind
            && self.shared.discard(object).await
        {
            self.shared.metrics.fill_error("digest");
            tracing::error!(digest = %object.digest,
                "a client received bytes that do not match the name; discarded");
        }
    }

    /// Start fetching slice `index` now if it will be needed soon (look-ahead). True when its
    /// bytes are coming from upstream (now fetched, or already in flight).
    pub fn prefetch(&self, index: u64) -> bool {
        match &self.kind {
            HandleKind::Object(object) => self.shared.ensure_fetching(object, index).is_some(),
            HandleKind::Committed(_) => false,
        }
    }

    /// Before the last byte of an object goes out: `Ok` means send it, `Err` abort.
    ///
    /// A response that carried every byte waits for the whole-object check: it read every
    /// slice, each from the one fetch that also went to disk, so the check is on its way and
    /// judges exactly the bytes it sent. A range waits only when every slice is present or
    /// on its way; otherwise it would wait on fetches nobody may ever make.
    pub async fn await_verdict(&self, whole: bool) -> Result<()> {
        let HandleKind::Object(object) = &self.kind else {
            return Ok(());
        };
        let mut rx = object.verdict.subscribe();
        loop {
            match *rx.borrow_and_update() {
                Verdict::Verified => return Ok(()),
                Verdict::Failed => {
                    return Err(Error::upstream(
                        Kind::Digest,
                        "object failed verification against its name",
                    ));
                }
                Verdict::Unverifiable if whole => {
                    return Err(Error::internal(
                        Kind::Io,
                        "the disk copy failed mid-fill; the object cannot be verified",
                    ));
                }
                Verdict::Unverifiable => return Ok(()),
                Verdict::Pending => {
                    let all_coming = {
                        let state = object.lock();
                        state.slots.iter().all(|s| !matches!(s, Slot::Absent))
                    };
                    if !whole && !all_coming {
                        return Ok(());
                    }
                }
            }
            if rx.changed().await.is_err() {
                return Err(Error::internal(Kind::Io, "object abandoned"));
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let usage = self.usage();
        usage.last_access_ms.store(now_ms(), Ordering::Relaxed);
        usage.dirty.store(true, Ordering::Relaxed);
        let last = usage.readers.fetch_sub(1, Ordering::AcqRel) == 1;
        // A memory-only object is forgotten with its last reader, so that the next request
        // tries the disk again.
        if last && let HandleKind::Object(object) = &self.kind {
            let memory_only = matches!(object.lock().storage, Storage::MemoryOnly);
            if memory_only {
                self.shared.forget_object(object);
            }
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    pub files: u64,
    pub new: u64,
    pub bytes: u64,
    /// Every file imported: its digest and size (the catalog of what this node now serves).
    pub objects: Vec<(Digest, u64)>,
}

/// Put every regular file under `dir` (recursively) into the store of `data_dir` under its
/// SHA-1, so that a root node serves it. Blocking; safe while a node runs on the same
/// `data_dir` (each file appears by an atomic rename).
pub fn import_dir(data_dir: &std::path::Path, dir: &std::path::Path) -> Result<ImportReport> {
    import_dir_with_progress(data_dir, dir, &mut |_| {})
}

/// [`import_dir`], telling `progress` the size of each file once it is in the store.
pub fn import_dir_with_progress(
    data_dir: &std::path::Path,
    dir: &std::path::Path,
    progress: &mut dyn FnMut(u64),
) -> Result<ImportReport> {
    let dirs = Dirs::new(data_dir);
    dirs.create()
        .map_err(|e| Error::io(format!("creating {}", data_dir.display()), e))?;
    let mut report = ImportReport::default();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = std::fs::read_dir(&folder)
            .map_err(|e| Error::io(format!("reading {}", folder.display()), e))?;
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let meta = std::fs::metadata(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() {
                let (digest, size, new) = disk::import_file(&dirs, &path)
                    .map_err(|e| Error::io(format!("importing {}", path.display()), e))?;
                progress(size);
                report.files += 1;
                report.bytes += size;
                report.new += u64::from(new);
                report.objects.push((digest, size));
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(data_dir: &std::path::Path) -> Settings {
        Settings {
            data_dir: data_dir.to_owned(),
            slice_bytes: 64 * 1024,
            memory_bytes: 1 << 20,
            disk_bytes: 1 << 30,
            min_free_disk: 0,
            max_ranges: 16,
            read_ahead: 0,
            max_object_bytes: 1 << 40,
            max_partial_objects: 1024,
            scrub_rate: 0,
            hold_ranges: true,
            per_object: 4,
            retries: 0,
            fill_timeout: Duration::from_secs(300),
            mismatch_backoff: Duration::from_secs(120),
        }
    }

    /// A slice whose disk write fails (here: the data file is open read-only) turns the fill
    /// into a stream-through: no commit can judge the bytes already sent, so a response that
    /// carried the whole object must not be given its final piece, and new ones hash for
    /// themselves.
    #[tokio::test]
    async fn a_failed_disk_write_makes_the_object_memory_only_and_unverifiable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(settings(dir.path()), None, Arc::new(Metrics::new()))
            .await
            .unwrap();
        let shared = store.shared.clone();
        let slice = shared.settings.slice_bytes;
        let path = ContentPath {
            digest: Digest([7; 20]),
            ext: "cab".into(),
        };
        let mut pf =
            disk::create_partial(&shared.dirs, &path.digest, "cab", 2 * slice, slice, 0).unwrap();
        pf.data = std::fs::File::open(shared.dirs.partial_data(&path.digest)).unwrap();
        shared.disk_used.store(2 * slice, Ordering::Relaxed);
        let object = shared.new_object(
            &path,
            ObjState {
                storage: Storage::Partial(Arc::new(pf)),
                slots: vec![Slot::Absent; 2],
                present: 0,
                sizing_started: true,
            },
            MetaState::Known(Meta {
                size: 2 * slice,
                last_modified: 0,
            }),
        );
        lock(&shared.index)
            .filling
            .insert(path.digest, object.clone());
        let started_before = store.lookup(&path, None).await.unwrap();
        assert!(!started_before.needs_own_hash());

        shared
            .persist_slice(&object, 0, Bytes::from(vec![1u8; slice as usize]))
            .await;

        assert!(matches!(object.lock().storage, Storage::MemoryOnly));
        assert_eq!(
            shared.disk_used.load(Ordering::Relaxed),
            0,
            "reservation returned"
        );
        assert!(
            !shared.dirs.partial_data(&path.digest).exists(),
            "partial files removed"
        );
        assert!(
            started_before.await_verdict(true).await.is_err(),
            "a whole-object response that relied on the commit's check is cut short"
        );
        assert!(started_before.await_verdict(false).await.is_ok());
        // The second slice's completion must not start a commit of the incomplete file.
        shared
            .persist_slice(&object, 1, Bytes::from(vec![2u8; slice as usize]))
            .await;
        assert!(matches!(object.lock().storage, Storage::MemoryOnly));
        let started_after = store.lookup(&path, None).await.unwrap();
        assert!(started_after.needs_own_hash());
    }
}
