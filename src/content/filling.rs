//! The fill driver: the fetches of an object's slices from upstream (single flight per slice),
//! the probe that learns an object's size, each slice's way to disk, and the commit (or
//! discard) once every slice is there and the whole is hashed against its name.

// A part of the store, split out by concern: it sees the store's types as the store does.
use super::*;

/// What follows a slice's disk write.
enum AfterWrite {
    /// Other slices are still missing.
    Wait,
    /// Every slice is on disk: check the whole and commit.
    Commit,
    /// The write failed: the object became memory-only; its `reserved` disk bytes go back.
    StreamThrough { reserved: u64 },
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
        let slice_count = shared.slicing.count(size) as usize;
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

impl Shared {
    /// Begin fetching slice `index` of `object` unless it is present or in flight.
    pub(super) fn ensure_fetching(
        self: &Arc<Self>,
        object: &Arc<Object>,
        index: u64,
    ) -> Option<Arc<SliceFill>> {
        let mut state = object.lock();
        let slot = state.slots.get_mut(index as usize)?;
        match slot {
            Slot::Fetching(fill) => Some(fill.clone()),
            Slot::Present { .. } => None,
            Slot::Absent => {
                let fill = Arc::new(SliceFill::new(index));
                *slot = Slot::Fetching(fill.clone());
                drop(state);
                self.clone().spawn_fetch(object.clone(), fill.clone());
                Some(fill)
            }
        }
    }

    pub(super) fn spawn_fetch(self: Arc<Self>, object: Arc<Object>, fill: Arc<SliceFill>) {
        tokio::spawn(async move { self.run_fetch(object, fill).await });
    }

    pub(super) async fn run_fetch(self: Arc<Self>, object: Arc<Object>, fill: Arc<SliceFill>) {
        let Some(upstream) = self.upstream.clone() else {
            fill.fail(&Error::internal(Kind::Config, "no upstream"));
            return;
        };
        let _permit = object.permits.clone().acquire_owned().await;
        let spec = FetchSpec {
            upstream: &upstream,
            path: &object.upstream_path,
            slicing: self.slicing,
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
                if index >= self.slicing.count(meta.size) {
                    // Asked past the end while the size was unknown; the answer taught the size.
                    fill.finish();
                    return;
                }
                // Held while the object fills, large or not: readers that follow the fill a
                // little behind share these bytes instead of each reading and checking the
                // slice on disk again. A large object lets them go when it is committed.
                if let Some(memory) = &self.memory {
                    memory
                        .insert(
                            SliceKey {
                                digest: object.digest,
                                generation: object.generation,
                                index,
                            },
                            Resident::Bytes(bytes.clone()),
                        )
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
    pub(super) async fn run_probe(self: Arc<Self>, object: Arc<Object>) {
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
    pub(super) fn fill_failed(&self, object: &Object, slice: Option<u64>, e: &Error) {
        tracing::warn!(digest = %object.digest, slice, error = %e, "fill failed");
        self.metrics.fill_error(match e.kind() {
            Kind::NotFound => "not_found",
            Kind::Unavailable => "unavailable",
            _ => "upstream",
        });
    }

    /// If `object` never learned its size, it fails for everyone waiting on it and is
    /// forgotten, so the next request starts afresh.
    pub(super) fn sizing_failed(&self, object: &Arc<Object>, e: &Error) {
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
    pub(super) async fn persist_slice(
        self: &Arc<Self>,
        object: &Arc<Object>,
        index: u64,
        bytes: Bytes,
    ) {
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
            *slot = Slot::Present {
                read_back: ReadBack::Not,
            };
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

    pub(super) fn spawn_commit(self: Arc<Self>, object: Arc<Object>) {
        tokio::spawn(async move { self.commit(object).await });
    }

    pub(super) async fn commit(self: Arc<Self>, object: Arc<Object>) {
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
                // From now on the page cache holds a large object's bytes for every reader
                // (notes in the memory tier say which slices were checked).
                if size >= PAGE_CACHE_FROM {
                    self.forget_memory(digest, object.generation, size).await;
                    // Its slices were megabytes each: hand the pages back rather than keep
                    // them as free heap (glibc returns only the top of an arena by itself).
                    let _ = blocking(|| {
                        crate::allocator::release_freed_memory();
                        Ok(())
                    })
                    .await;
                }
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
    pub(super) async fn discard(self: &Arc<Self>, object: &Arc<Object>) -> bool {
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

    pub(super) fn forget_object(&self, object: &Arc<Object>) {
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
