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
//! Owns: `path` (allow-list), `range` (RFC 9110 math), [`slicing`] (slice geometry), `disk`
//! (layout, blocking I/O), `fill` (single-flight fetch of one slice), the [`Store`] (here: the
//! index, the memory and disk tiers), and the store's parts by concern: `filling` (the fill
//! driver: fetches, writes, commit), `eviction` (what leaves when room is needed, behind the
//! [`EvictionPolicy`] seam), `maintenance` (access times, scrub), `handle` (the reader's
//! [`Handle`]), `import` (files into the store) and `response` (HTTP answers). May call:
//! `upstream`, `http`, `metrics`, `error`, `config`, `allocator`. Knows no protocol and no
//! update.

pub mod disk;
mod eviction;
pub mod fill;
mod filling;
mod handle;
mod import;
mod maintenance;
pub mod path;
pub mod range;
pub mod response;
pub mod slicing;

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
pub use eviction::{Candidate, EvictionPolicy, Lru};
use fill::{FetchSpec, Learned, Sizing, SliceFill};
pub use handle::Handle;
use handle::HandleKind;
pub use import::{ImportReport, import_dir, import_dir_with_progress};
pub use path::{ContentPath, Digest};
pub use slicing::Slicing;

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
    /// A slice of a committed object that matched its seal when it was last read into the page
    /// cache: read it, or send it, from the object's file.
    Checked,
    /// A slice of a large object still filling that matched its digest when read back from
    /// this file (the object's, the same file once the commit renames it): send it from there.
    Written(Arc<std::fs::File>),
}

/// Objects of this many bytes or more are served from the page cache: the memory tier holds
/// only the note that a slice matched its seal (`Resident::Checked`), and a plain HTTP/1
/// connection sends the bytes with `sendfile`. Smaller objects are held as bytes, where one
/// `writev` sends head and body together and no file is opened per request.
pub const PAGE_CACHE_FROM: u64 = 1 << 20;

/// What the memory tier holds of one slice. Both weigh the slice's length: the tier's budget
/// bounds the bytes served without a fresh check against the seal, wherever they are held.
#[derive(Clone)]
enum Resident {
    /// The bytes: slices of objects under [`PAGE_CACHE_FROM`], and of any object until it is
    /// committed.
    Bytes(Bytes),
    /// A committed slice of this many bytes was read from disk and matched its seal; its bytes
    /// are left to the page cache, which holds them anyway.
    Checked(u32),
}

impl Resident {
    fn weight(&self) -> u32 {
        match self {
            Resident::Bytes(b) => b.len().try_into().unwrap_or(u32::MAX),
            Resident::Checked(len) => *len,
        }
    }
}

/// Where a slice is read from on disk.
enum FileSource {
    Committed,
    Partial(Arc<PartialFile>),
}

/// The memory tier's key of one slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SliceKey {
    digest: Digest,
    /// Of the fill or commit the bytes came from: bytes of a discarded fill never match a
    /// later fill of the same digest.
    generation: u64,
    index: u64,
}

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
    /// Present on disk or, for a memory-only object, in the memory tier.
    Present {
        read_back: ReadBack,
    },
}

/// Whether a present slice of a partial file was read back from it and matched its digest:
/// from then on a response may send it from the file unread, as a committed object's checked
/// slice is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadBack {
    Not,
    /// One reader is checking it; the others take the slice as they did before.
    Running,
    Matched,
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
    /// `settings.slice_bytes` as the geometry every slice computation asks.
    slicing: Slicing,
    /// Which idle objects leave first when room is needed.
    eviction: Box<dyn EvictionPolicy>,
    dirs: Dirs,
    upstream: Option<Arc<Upstream>>,
    metrics: Arc<Metrics>,
    index: Mutex<Index>,
    memory: Option<moka::future::Cache<SliceKey, Resident>>,
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
    /// Slices being fetched from upstream now.
    pub slices_fetching: u64,
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
                .weigher(|_k: &SliceKey, v: &Resident| v.weight())
                .build()
        });
        let shared = Arc::new(Shared {
            slicing: Slicing::new(settings.slice_bytes),
            eviction: Box::new(Lru),
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
                .map(|p| {
                    if *p {
                        Slot::Present {
                            read_back: ReadBack::Not,
                        }
                    } else {
                        Slot::Absent
                    }
                })
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
            let slices = self.shared.slicing.count(c.size);
            return Some(ObjectInfo {
                state: "committed",
                size: Some(c.size),
                slices_present: slices,
                slices_total: Some(slices),
                slices_fetching: 0,
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
            slices_fetching: state
                .slots
                .iter()
                .filter(|s| matches!(s, Slot::Fetching(_)))
                .count() as u64,
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

    /// Read one slice of a file into the memory tier (coalescing concurrent reads of it).
    /// Slice `key` of an object of `size` bytes from disk, checked before it is served or
    /// enters the memory tier: against the seal of a committed object, the map slot of a
    /// partial one. A committed slice of an object of [`PAGE_CACHE_FROM`] bytes or more enters
    /// the tier as a [`Resident::Checked`] note; the reader that read it gets its bytes.
    async fn read_slice(
        self: &Arc<Self>,
        key: SliceKey,
        size: u64,
        source: FileSource,
    ) -> Result<SliceData> {
        let index = key.index;
        let len = self.slicing.len(size, index) as usize;
        let offset = self.slicing.start(index);
        let page_cache = matches!(source, FileSource::Committed) && size >= PAGE_CACHE_FROM;
        let shared = self.clone();
        let read = async move {
            let digest = key.digest;
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
        let Some(memory) = &self.memory else {
            return read.await.map(SliceData::Ready);
        };
        // The bytes the read brought, for this reader alone when the tier keeps only a note.
        let mut loaded = None;
        let resident = memory
            .try_get_with(key, async {
                let bytes = read.await?;
                if page_cache {
                    let len = bytes.len().try_into().unwrap_or(u32::MAX);
                    loaded = Some(bytes);
                    Ok(Resident::Checked(len))
                } else {
                    Ok(Resident::Bytes(bytes))
                }
            })
            .await
            .map_err(|e: Arc<Error>| Error::internal(e.kind(), e.message().to_owned()))?;
        Ok(match (loaded, resident) {
            (Some(bytes), _) | (None, Resident::Bytes(bytes)) => SliceData::Ready(bytes),
            (None, Resident::Checked(_)) => SliceData::Checked,
        })
    }

    /// A committed object's file, opened for reading.
    async fn open_committed(self: &Arc<Self>, digest: Digest) -> Result<Arc<std::fs::File>> {
        let path = self.dirs.committed(&digest);
        blocking(move || std::fs::File::open(path).map(Arc::new)).await
    }
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
        pf.data = std::fs::File::open(shared.dirs.partial_data(&path.digest))
            .unwrap()
            .into();
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
