//! The reader's handle on an object: its size and validators, its slices from memory, disk or a
//! fill in flight, and the object's verdict. While a handle lives the object is not evicted.

// A part of the store, split out by concern: it sees the store's types as the store does.
use super::*;

pub(super) enum HandleKind {
    Committed(Arc<Committed>),
    Object(Arc<Object>),
}

/// An open object: its size and validators are known. While a handle lives the object is not
/// evicted.
pub struct Handle {
    pub(super) shared: Arc<Shared>,
    pub(super) kind: HandleKind,
    /// This request had to ask upstream just to learn the size.
    pub(super) fetched_meta: bool,
}

impl Handle {
    fn usage(&self) -> &Usage {
        match &self.kind {
            HandleKind::Committed(c) => &c.usage,
            HandleKind::Object(o) => &o.usage,
        }
    }

    pub(super) async fn resolve(mut self, first_wanted: Option<u64>) -> Result<Handle> {
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
                    let fill = Arc::new(SliceFill::new(shared.slicing.index_of(byte)));
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

    /// How the object is cut into slices.
    pub fn slicing(&self) -> Slicing {
        self.shared.slicing
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
        let key = SliceKey {
            digest: self.digest(),
            generation: self.generation(),
            index,
        };
        if let Some(memory) = &self.shared.memory {
            match memory.get(&key).await {
                Some(Resident::Bytes(bytes)) => return Ok((SliceData::Ready(bytes), Tier::Memory)),
                Some(Resident::Checked(_)) => return Ok((SliceData::Checked, Tier::Disk)),
                None => {}
            }
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
                return Ok((read?, Tier::Disk));
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
                Storage::Committed => Slot::Present {
                    read_back: ReadBack::Matched,
                },
                _ => state
                    .slots
                    .get(index as usize)
                    .cloned()
                    .ok_or_else(|| Error::internal(Kind::Io, "slice index out of range"))?,
            };
            (slot, source)
        };
        match (slot, source) {
            (Slot::Present { .. }, Some(source)) => {
                let partial = match &source {
                    FileSource::Partial(pf) => Some(pf.clone()),
                    FileSource::Committed => None,
                };
                match (self.shared.read_slice(key, size, source).await, partial) {
                    (Ok(data), _) => Ok((data, Tier::Disk)),
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

    /// For a connection that sends files: slice `index` of a large object still filling, from
    /// its partial file, so that readers right behind the fill do not each copy the memory
    /// tier's bytes. The first such reader reads the slice back and checks it against its
    /// digest (and gets what it read, or a fetch of the slice again if it went bad); after
    /// that, [`SliceData::Written`]. None: no such slice, or its check is under way: take
    /// [`Handle::slice`].
    pub async fn written_slice(&self, index: u64) -> Result<Option<(SliceData, Tier)>> {
        let HandleKind::Object(object) = &self.kind else {
            return Ok(None);
        };
        // Without a memory tier every read is checked (`cache.memory_bytes = 0`).
        if self.size() < PAGE_CACHE_FROM || self.shared.memory.is_none() {
            return Ok(None);
        }
        let pf = {
            let mut state = object.lock();
            let pf = match &state.storage {
                Storage::Partial(pf) => pf.clone(),
                _ => return Ok(None),
            };
            match state.slots.get_mut(index as usize) {
                Some(Slot::Present {
                    read_back: ReadBack::Matched,
                }) => return Ok(Some((SliceData::Written(pf.data.clone()), Tier::Disk))),
                Some(Slot::Present { read_back }) if *read_back == ReadBack::Not => {
                    *read_back = ReadBack::Running;
                    pf
                }
                _ => return Ok(None),
            }
        };
        // Whatever becomes of this read (a response dropped mid-way included), the slot does
        // not stay `Running`.
        let mut settle = Settle {
            object,
            index,
            outcome: ReadBack::Not,
        };
        let slicing = self.slicing();
        let (offset, len) = (slicing.start(index), slicing.len(self.size(), index));
        let file = pf.clone();
        let read = blocking(move || {
            let bytes = disk::read_at(&file.data, offset, len as usize)?;
            Ok(file.check_slice(index, &bytes)?.then_some(bytes))
        })
        .await;
        if matches!(read, Ok(Some(_))) {
            settle.outcome = ReadBack::Matched;
        }
        drop(settle);
        match read? {
            Some(bytes) => Ok(Some((SliceData::Ready(bytes), Tier::Disk))),
            None => {
                tracing::warn!(digest = %object.digest, slice = index,
                    "a slice on disk no longer matches its digest; fetching it again");
                let _ = blocking(move || pf.forget_slice(index)).await;
                self.refetch(object, index).map(Some)
            }
        }
    }

    /// The object's committed file, for [`SliceData::Checked`] slices.
    pub async fn committed_file(&self) -> Result<Arc<std::fs::File>> {
        self.shared.open_committed(self.digest()).await
    }

    /// Slice `index` of `object` is not to be had where it was: absent again, fetched anew.
    fn refetch(&self, object: &Arc<Object>, index: u64) -> Result<(SliceData, Tier)> {
        {
            let mut state = object.lock();
            if let Some(s) = state.slots.get_mut(index as usize)
                && matches!(s, Slot::Present { .. })
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

/// Ends a slice's read-back: its slot says `outcome` when this is dropped.
struct Settle<'a> {
    object: &'a Object,
    index: u64,
    outcome: ReadBack,
}

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        let mut state = self.object.lock();
        if let Some(Slot::Present { read_back }) = state.slots.get_mut(self.index as usize) {
            *read_back = self.outcome;
        }
    }
}
