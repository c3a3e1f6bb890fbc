//! The schedule of a downstream server: a sync at start, every `upstream.sync_interval` and
//! when asked (`POST /api/v1/sync`), with back-off after failures; and the prefetch of
//! approved content whenever a new catalog comes into service (after this node's syncs and
//! after `wsus-edge sync` run beside it).
//!
//! Owns: when to sync and prefetch, and what the last ones did (for status views and
//! tests). Calls [`super::sync`] for both, `served` (to serve a synced catalog at once) and
//! `content`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::sync::{
    PrefetchProgress, PrefetchReport, Schedule, SyncReport, Syncer, approved_files, prefetch,
};
use crate::clock::unix_now;

/// What a replica's syncs and prefetches did so far.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplicaStatus {
    /// Syncs attempted and failed since start; failures in a row now.
    pub syncs: u64,
    pub failed_syncs: u64,
    pub failures_in_a_row: u32,
    /// Seconds since the epoch.
    pub last_attempt: Option<i64>,
    pub last_success: Option<i64>,
    pub last_sync: Option<SyncReport>,
    pub last_error: Option<String>,
    pub prefetches: u64,
    pub last_prefetch: Option<PrefetchReport>,
    /// The prefetch under way, if one is.
    pub prefetch_in_progress: Option<PrefetchProgress>,
}

/// How often a long prefetch logs how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

pub struct Replica {
    syncer: Syncer,
    /// Zero: only when asked.
    interval: Duration,
    prefetch: bool,
    sync_now: Notify,
    prefetch_now: Notify,
    status: watch::Sender<ReplicaStatus>,
}

impl Replica {
    pub fn new(syncer: Syncer, interval: Duration, prefetch: bool) -> Replica {
        Replica {
            syncer,
            interval,
            prefetch,
            sync_now: Notify::new(),
            prefetch_now: Notify::new(),
            status: watch::Sender::new(ReplicaStatus::default()),
        }
    }

    /// Sync as soon as the current one (if any) is done.
    pub fn sync_now(&self) {
        self.sync_now.notify_one();
    }

    /// A new catalog is in service: fetch what it approves that is not here yet.
    pub fn catalog_changed(&self) {
        if self.prefetch {
            self.prefetch_now.notify_one();
        }
    }

    /// Whether syncs run on a schedule (else only when asked: a content-only upstream).
    pub fn syncs_on_schedule(&self) -> bool {
        !self.interval.is_zero()
    }

    pub fn status(&self) -> watch::Receiver<ReplicaStatus> {
        self.status.subscribe()
    }

    /// Sync on schedule until `shutdown`.
    pub async fn run_syncs(
        self: Arc<Self>,
        served: Arc<crate::served::Served>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut schedule = Schedule::new(self.interval);
        while schedule.next(&self.sync_now, &mut shutdown).await {
            let now = unix_now();
            self.status.send_modify(|s| s.last_attempt = Some(now));
            let started = std::time::Instant::now();
            let outcome = self.syncer.run().await;
            let metrics = self.syncer.metrics();
            metrics
                .sync_duration
                .observe(started.elapsed().as_secs_f64());
            match outcome {
                Ok(report) => {
                    schedule.done(true);
                    metrics.sync_last_success.set(unix_now());
                    tracing::info!(
                        listed = report.config_listed + report.updates_listed,
                        fetched = report.fetched,
                        new_revisions = report.applied.new_revisions,
                        deployments = report.applied.deployments,
                        removed_deployments = report.applied.removed_deployments,
                        elapsed_ms = report.elapsed_ms,
                        "synced from upstream"
                    );
                    let service = served.clone();
                    match tokio::task::spawn_blocking(move || service.reload_if_changed()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "serving the synced catalog"),
                        Err(e) => tracing::warn!(error = %e, "serving the synced catalog"),
                    }
                    self.status.send_modify(|s| {
                        s.syncs += 1;
                        s.failures_in_a_row = 0;
                        s.last_success = Some(unix_now());
                        s.last_sync = Some(report);
                        s.last_error = None;
                    });
                    self.catalog_changed();
                }
                Err(e) => {
                    metrics.sync_failures.inc();
                    let (failures, retry_in) = schedule.done(false);
                    tracing::error!(error = %e, ?retry_in,
                        "sync from upstream failed; the previous catalog stays in service");
                    self.status.send_modify(|s| {
                        s.syncs += 1;
                        s.failed_syncs += 1;
                        s.failures_in_a_row = failures;
                        s.last_error = Some(e.to_string());
                    });
                }
            }
        }
    }

    /// Prefetch whenever told a new catalog is in service, until `shutdown`.
    pub async fn run_prefetches(
        self: Arc<Self>,
        served: Arc<crate::served::Served>,
        content: crate::content::Store,
        mut shutdown: watch::Receiver<bool>,
    ) {
        if !self.prefetch {
            return;
        }
        loop {
            tokio::select! {
                _ = self.prefetch_now.notified() => {}
                _ = shutdown.changed() => return,
            }
            let files = approved_files(&served.catalog());
            let metrics = content.metrics().clone();
            let mut last_line = std::time::Instant::now();
            let report = prefetch(&content, files, |p| {
                metrics
                    .prefetch_pending_files
                    .set((p.files - p.done) as i64);
                metrics
                    .prefetch_pending_bytes
                    .set(i64::try_from(p.pending_bytes).unwrap_or(i64::MAX));
                self.status
                    .send_modify(|s| s.prefetch_in_progress = Some(p.clone()));
                // A long prefetch (Patch Tuesday over a slow link) says how far it got.
                if p.done < p.files && last_line.elapsed() >= PROGRESS_EVERY {
                    last_line = std::time::Instant::now();
                    tracing::info!(
                        done = p.done,
                        files = p.files,
                        pending_bytes = p.pending_bytes,
                        "prefetching approved content"
                    );
                }
            })
            .await;
            metrics.prefetch_pending_files.set(0);
            metrics.prefetch_pending_bytes.set(0);
            if report.fetched > 0 || report.failed > 0 {
                tracing::info!(
                    files = report.files,
                    fetched = report.fetched,
                    failed = report.failed,
                    bytes = report.bytes,
                    elapsed_ms = report.elapsed_ms,
                    "prefetched approved content"
                );
            }
            self.status.send_modify(|s| {
                s.prefetches += 1;
                s.last_prefetch = Some(report);
                s.prefetch_in_progress = None;
            });
        }
    }
}
