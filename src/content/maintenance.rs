//! The store's background work: access times written back to disk, and the scrub that re-reads
//! committed objects at `cache.scrub_rate` and condemns those whose bytes no longer match.

// A part of the store, split out by concern: it sees the store's types as the store does.
use super::*;

impl Shared {
    pub(super) async fn persist_access_times(self: Arc<Self>) {
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

    /// A committed object's bytes on disk changed since they were verified (`found_by` a read
    /// or the scrub): out of the index at once, so nothing serves them again. A branch removes
    /// it (the next request fetches it again); a root, which cannot, moves it to `corrupt/` and
    /// says so loudly.
    pub(super) async fn corrupt(self: &Arc<Self>, digest: Digest, found_by: &'static str) {
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
    pub(super) async fn scrub(shared: std::sync::Weak<Shared>) {
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

    pub(super) async fn scrub_object(self: &Arc<Self>, digest: Digest, size: u64) {
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
}
