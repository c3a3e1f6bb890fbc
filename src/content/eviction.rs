//! Eviction: which idle objects leave the disk when room is needed, and the bound on partial
//! objects. The policy that orders the candidates is a seam ([`EvictionPolicy`]); least recently
//! used ([`Lru`]) is the one in service. What "idle" means (no reader, no fetch in flight) and
//! how a victim leaves (out of the index under its lock, then its files) stay here, whatever
//! the policy.

// A part of the store, split out by concern: it sees the store's types as the store does.
use super::*;

/// An idle object eviction may choose: no response reads it and, for a partial object, no fetch
/// is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub digest: Digest,
    /// Bytes it holds on disk (a partial object: the reservation of its full size).
    pub size: u64,
    /// Its last access, milliseconds since the epoch.
    pub last_access_ms: u64,
    /// Still being filled, not committed.
    pub partial: bool,
}

/// The order in which idle objects leave. The store hands every candidate over and takes
/// victims from the front until it has freed enough; a policy only orders, so it cannot make
/// the store evict a busy object or free less than it needs.
pub trait EvictionPolicy: Send + Sync {
    fn order(&self, candidates: &mut [Candidate]);
}

/// Least recently used first (ties by digest, so that the order is total).
#[derive(Debug, Clone, Copy, Default)]
pub struct Lru;

impl EvictionPolicy for Lru {
    fn order(&self, candidates: &mut [Candidate]) {
        candidates.sort_unstable_by_key(|c| (c.last_access_ms, c.digest));
    }
}

impl Shared {
    /// Make room for one more partial object under `max_partial_objects` (each holds two
    /// descriptors and a reservation of its size): evict idle ones, in the policy's order.
    /// False when every one is busy (a download reads it or a fetch is in flight).
    pub(super) async fn room_for_partial(self: &Arc<Self>) -> bool {
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
                    idle.push(Candidate {
                        digest: o.digest,
                        size: 0,
                        last_access_ms: o.usage.last_access_ms.load(Ordering::Relaxed),
                        partial: true,
                    });
                }
            }
            if open < bound {
                return true;
            }
            let excess = open + 1 - bound;
            self.eviction.order(&mut idle);
            let victims: Vec<Arc<Object>> = idle
                .into_iter()
                .take(excess)
                .filter_map(|c| index.filling.remove(&c.digest))
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

    /// Make room for `size` more bytes on disk, evicting idle objects in the policy's order.
    /// False when even that cannot make room (the caller streams without caching).
    pub(super) async fn reserve(self: &Arc<Self>, size: u64) -> bool {
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

    /// Evict idle objects, in the policy's order, until `needed` bytes are freed plus a little
    /// headroom so that a full cache does not evict on every fill. Returns bytes freed.
    ///
    /// Idle: no response reads it and, for a partial object, no fetch is in flight. A partial
    /// object holds a reservation of its full size, so one that a single range or HEAD began
    /// and nobody finished must be evictable too. Victims leave the index and (committed ones)
    /// their place on disk under the index lock, the lock every lookup takes: no request can
    /// find an object between its choice and its removal.
    pub(super) async fn evict(self: &Arc<Self>, needed: u64) -> u64 {
        let target = needed + self.settings.disk_bytes / 100;
        let mut retired = Vec::new();
        let mut partials = Vec::new();
        let mut freed = 0;
        {
            let mut index = lock(&self.index);
            let mut idle: Vec<Candidate> = index
                .committed
                .values()
                .filter(|c| c.usage.readers.load(Ordering::Acquire) == 0)
                .map(|c| Candidate {
                    digest: c.digest,
                    size: c.size,
                    last_access_ms: c.usage.last_access_ms.load(Ordering::Relaxed),
                    partial: false,
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
                    idle.push(Candidate {
                        digest: o.digest,
                        size: pf.size,
                        last_access_ms: o.usage.last_access_ms.load(Ordering::Relaxed),
                        partial: true,
                    });
                }
            }
            self.eviction.order(&mut idle);
            for Candidate {
                digest,
                size,
                partial,
                ..
            } in idle
            {
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

    pub(super) async fn forget_memory(&self, digest: Digest, generation: u64, size: u64) {
        if let Some(memory) = &self.memory {
            for index in 0..self.slicing.count(size) {
                let key = SliceKey {
                    digest,
                    generation,
                    index,
                };
                memory.invalidate(&key).await;
            }
            // moka lets go of invalidated values at its next maintenance, which only a later
            // cache call runs: after the last fill of a quiet node that would keep a large
            // object's slices resident (the whole object) until some request came.
            memory.run_pending_tasks().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(n: u8, last_access_ms: u64) -> Candidate {
        Candidate {
            digest: Digest([n; 20]),
            size: 1,
            last_access_ms,
            partial: false,
        }
    }

    #[test]
    fn lru_orders_the_oldest_access_first_and_ties_by_digest() {
        let mut c = vec![
            candidate(3, 50),
            candidate(1, 90),
            candidate(2, 50),
            candidate(4, 10),
        ];
        Lru.order(&mut c);
        let order: Vec<u8> = c.iter().map(|c| c.digest.0[0]).collect();
        assert_eq!(order, [4, 2, 3, 1]);
    }
}
