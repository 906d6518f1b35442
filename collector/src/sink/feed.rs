//! The outputs-thread half of a spooled output (OTLP, HTTP): a batch's
//! records go into the spool, the output's exporter is woken, and what a
//! full spool refused is counted and said loudly, but not once per batch
//! while the backend is away.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::SinkError;
use super::spool::Spool;
use crate::stats::ExportCounters;

/// How often a full spool is logged at most.
const FULL_LOG_EVERY: Duration = Duration::from_secs(10);

pub struct SpoolFeed {
    /// The output's name in errors (`otlp`, `http`).
    sink: &'static str,
    /// What the log says is full, and who must take the records.
    spool_name: &'static str,
    peer: &'static str,
    spool: Arc<Spool>,
    last_full_log: Option<Instant>,
}

impl SpoolFeed {
    pub fn new(
        sink: &'static str,
        spool_name: &'static str,
        peer: &'static str,
        spool: Arc<Spool>,
    ) -> SpoolFeed {
        SpoolFeed {
            sink,
            spool_name,
            peer,
            spool,
            last_full_log: None,
        }
    }

    /// Appends `records`, wakes the exporter through `wake` when any was
    /// kept, and counts in `counters` the spool's depth and what it refused.
    pub fn append<'a>(
        &mut self,
        records: impl ExactSizeIterator<Item = &'a [u8]>,
        counters: &ExportCounters,
        wake: &Notify,
    ) -> Result<(), SinkError> {
        let offered = records.len();
        let result = self.spool.append(records);
        let kept = *result.as_ref().unwrap_or(&0);
        let lost = (offered - kept) as u64;
        let (depth, bytes) = self.spool.depth();
        counters.set_spool_depth((depth, bytes));
        if kept > 0 {
            wake.notify_one();
        }
        if lost > 0 {
            let total = counters.spool_refused.fetch_add(lost, Ordering::Relaxed) + lost;
            if self
                .last_full_log
                .is_none_or(|t| t.elapsed() >= FULL_LOG_EVERY)
            {
                tracing::error!(
                    refused_now = lost,
                    refused_total = total,
                    spooled_bytes = bytes,
                    spool = %self.spool.dir().display(),
                    "{} is FULL: findings are being LOST until the {} takes them",
                    self.spool_name,
                    self.peer,
                );
                self.last_full_log = Some(Instant::now());
            }
        }
        result.map(|_| ()).map_err(|source| SinkError::NotKept {
            sink: self.sink,
            lost,
            source,
        })
    }
}
