//! The export loop: takes batches from the head of the spool, sends them
//! as OTLP logs, and removes them only once the backend acknowledged them.
//!
//! Failure policy. The exporter itself retries what the OTLP spec calls
//! retryable, honouring Retry-After / RetryInfo. When it gives up, this loop
//! keeps the batch and tries again with exponential backoff and jitter, for
//! as long as it takes: a down backend, an unreachable host, a bad endpoint
//! or an unreadable TLS file (re-read on every attempt) all just keep
//! findings in the spool. Only a backend that refuses the data itself
//! (gRPC `InvalidArgument`, HTTP 400) gets its batch moved to
//! `rejected.jsonl` beside the spool, so one malformed batch cannot block
//! every finding behind it.
//!
//! A request refused for its size (gRPC `OutOfRange` as tonic receivers
//! say it, `ResourceExhausted` as grpc-go ones do, HTTP 413) is sent again
//! at once at half the size, down to one record, and requests stay that
//! size from then on. Only a single record refused as too large by an
//! unambiguous code is moved aside: retrying it could never succeed.
//!
//! Every failure is logged with what the backend said, when it said
//! something ([`said`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::InstrumentationScope;
use opentelemetry::logs::{Logger as _, LoggerProvider as _};
use opentelemetry_otlp::LogExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{LogBatch, LogExporter as _, SdkLogRecord, SdkLoggerProvider};
use tokio::sync::Notify;

use super::record;
use super::settings::{self, Settings, Signal};
use super::{client, metrics, said};
use crate::config::OtlpConfig;
use crate::sink::spool::{Batch as SpoolBatch, Spool};
use crate::stats::Stats;

/// Shared between the sink (outputs thread) and the export loop.
#[derive(Default)]
pub struct Control {
    pub wake: Notify,
    /// Shutdown: export what is there without waiting for batches to fill,
    /// then stop.
    pub draining: AtomicBool,
    /// Stop now; what is left stays in the spool.
    pub stop: AtomicBool,
}

pub struct Worker {
    pub cfg: OtlpConfig,
    pub base_dir: PathBuf,
    pub spool: Arc<Spool>,
    pub stats: Arc<Stats>,
    pub resource: Resource,
    pub control: Arc<Control>,
    /// Told once the self-telemetry instruments exist (or are off), so that
    /// the sink's start can wait for them: plugin calls made before the
    /// call-duration histogram is registered would never reach it.
    pub ready: Option<std::sync::mpsc::SyncSender<()>>,
}

enum Outcome {
    Delivered,
    /// The backend refused the data itself.
    Rejected(String),
    /// The backend refused a request of this many records (and spooled
    /// bytes) for its size.
    TooLarge {
        records: usize,
        bytes: u64,
        message: String,
    },
    Failed(String),
}

/// How often a persisting failure is logged again.
const REPEAT_LOG: Duration = Duration::from_secs(30);

impl Worker {
    fn settings(&self, signal: Signal) -> Result<Settings, String> {
        settings::resolve(&self.cfg, &self.base_dir, signal, &settings::process_env)
            .map_err(|e| e.to_string())
    }

    pub async fn run(mut self) {
        let provider = SdkLoggerProvider::builder().build();
        let logger = provider.logger("driftwatch");
        let scope = InstrumentationScope::builder("driftwatch")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let batch_size = self.cfg.batch_size.max(1);
        // Spooled bytes per request: halved for good when the backend
        // refuses a request for its size. A receiver's limit rarely moves;
        // growing back would only find it again, one refusal at a time.
        let mut budget = self.cfg.batch_max_kib.max(1) << 10;
        let batch_timeout = Duration::from_millis(self.cfg.batch_timeout_ms);
        let initial = Duration::from_millis(self.cfg.retry_initial_ms.max(10));
        let max = Duration::from_millis(self.cfg.retry_max_ms).max(initial);
        let mut backoff = initial;
        let mut exporter: Option<LogExporter> = None;
        let mut failing_since: Option<Instant> = None;
        let mut last_log: Option<Instant> = None;
        let mut rng = Jitter::new();
        let meters = if self.cfg.metrics.enabled {
            match self.settings(Signal::Metrics) {
                Ok(s) => metrics::start(&s, &self.cfg.metrics, &self.resource, &self.stats)
                    .map_err(|e| tracing::error!("self-telemetry metrics are off: {e}"))
                    .ok(),
                Err(e) => {
                    tracing::error!("self-telemetry metrics are off: {e}");
                    None
                }
            }
        } else {
            None
        };
        if let Some(ready) = self.ready.take() {
            // The sink may have stopped waiting; nothing to do then.
            let _ = ready.send(());
        }

        loop {
            if self.control.stop.load(Ordering::Acquire) {
                break;
            }
            let draining = self.control.draining.load(Ordering::Acquire);
            let (pending, _) = self.spool.depth();
            if pending == 0 {
                if draining {
                    break;
                }
                self.sleep_or_wake(Duration::from_secs(1)).await;
                continue;
            }
            if (pending as usize) < batch_size && !draining {
                // Let the batch fill, up to the batch timeout.
                let deadline = tokio::time::Instant::now() + batch_timeout;
                while (self.spool.depth().0 as usize) < batch_size
                    && !self.control.draining.load(Ordering::Acquire)
                {
                    if tokio::time::timeout_at(deadline, self.control.wake.notified())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }

            let outcome = match &mut exporter {
                Some(e) => {
                    self.export_one(e, &logger, &scope, batch_size, budget)
                        .await
                }
                None => match self.settings(Signal::Logs).and_then(|s| {
                    let mut e = client::log_exporter(&s).map_err(|e| e.to_string())?;
                    opentelemetry_sdk::logs::LogExporter::set_resource(&mut e, &self.resource);
                    Ok(e)
                }) {
                    Ok(mut e) => {
                        let r = self
                            .export_one(&mut e, &logger, &scope, batch_size, budget)
                            .await;
                        exporter = Some(e);
                        r
                    }
                    Err(e) => Outcome::Failed(e),
                },
            };
            match outcome {
                Outcome::Delivered => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            "OTLP export works again after {:.1}s; {} records still spooled",
                            since.elapsed().as_secs_f64(),
                            self.spool.depth().0
                        );
                    }
                    backoff = initial;
                    last_log = None;
                }
                Outcome::TooLarge {
                    records,
                    bytes,
                    message,
                } => {
                    self.stats
                        .export
                        .failed_requests
                        .fetch_add(1, Ordering::Relaxed);
                    budget = (bytes / 2).max(1);
                    tracing::warn!(
                        "the OTLP backend refused a request of {records} records ({bytes} spooled bytes) for its size ({message}); sending at most {budget} bytes per request"
                    );
                }
                Outcome::Rejected(message) => {
                    tracing::error!(
                        "the OTLP backend rejected a batch (moved to rejected.jsonl): {message}"
                    );
                    backoff = initial;
                }
                Outcome::Failed(message) => {
                    self.stats
                        .export
                        .failed_requests
                        .fetch_add(1, Ordering::Relaxed);
                    failing_since.get_or_insert_with(Instant::now);
                    if last_log.is_none_or(|t| t.elapsed() >= REPEAT_LOG) {
                        let (records, bytes) = self.spool.depth();
                        tracing::error!(
                            spooled_records = records,
                            spooled_bytes = bytes,
                            "OTLP export failed, keeping findings in the spool and retrying: {message}"
                        );
                        last_log = Some(Instant::now());
                    }
                    // A failed build is retried from scratch (settings and
                    // TLS files are re-read); a built exporter is kept.
                    let wait = backoff + rng.up_to(backoff / 2);
                    backoff = (backoff * 2).min(max);
                    // Also while draining: the shutdown deadline (which sets
                    // `stop`) decides when to give up, not one failure.
                    self.sleep_unless_stopped(wait).await;
                }
            }
        }
        if let Some(m) = meters {
            m.shutdown().await;
        }
    }

    async fn sleep_or_wake(&self, d: Duration) {
        let _ = tokio::time::timeout(d, self.control.wake.notified()).await;
    }

    async fn sleep_unless_stopped(&self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while tokio::time::Instant::now() < deadline {
            if self.control.stop.load(Ordering::Acquire) {
                return;
            }
            let _ = tokio::time::timeout_at(deadline, self.control.wake.notified()).await;
        }
    }

    async fn export_one(
        &self,
        exporter: &mut LogExporter,
        logger: &opentelemetry_sdk::logs::SdkLogger,
        scope: &InstrumentationScope,
        max_records: usize,
        max_bytes: u64,
    ) -> Outcome {
        let batch = match self.spool.peek(max_records, max_bytes) {
            Ok(b) => b,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        if batch.records.is_empty() {
            return Outcome::Delivered;
        }
        let n = batch.records.len();
        let mut records: Vec<SdkLogRecord> = Vec::with_capacity(n);
        for bytes in &batch.records {
            let mut r = logger.create_log_record();
            match record::fill(bytes, &mut r) {
                Ok(()) => records.push(r),
                // Passed its checksum but does not decode: written by an
                // incompatible version. Keep it aside with the rejects.
                Err(e) => {
                    tracing::error!("{e}; moved aside");
                    self.reject_raw(bytes);
                }
            }
        }
        if let Err(e) = self.spool.mark_inflight(batch.end) {
            return Outcome::Failed(e.to_string());
        }
        let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            records.iter().map(|r| (r, scope)).collect();
        // Whatever an earlier request left there is not about this one.
        let _ = said::take();
        let result = exporter.export(LogBatch::new(&refs)).await;
        match result {
            Ok(()) => {
                if let Err(e) = self.spool.ack(batch.end, n) {
                    return Outcome::Failed(e.to_string());
                }
                self.stats
                    .export
                    .exported
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                self.stats.export.set_spool_depth(self.spool.depth());
                Outcome::Delivered
            }
            Err(e) => {
                let mut message = e.to_string();
                let code = refusal(&message);
                if let Some(reason) = said::take() {
                    message = format!("{message}; the backend said: {reason}");
                }
                match code {
                    Some(Refusal::Data) => self.reject_batch(&batch, records.len(), message),
                    Some(Refusal::Size { .. }) if records.len() > 1 => Outcome::TooLarge {
                        records: records.len(),
                        bytes: batch.spooled_bytes(),
                        message,
                    },
                    Some(Refusal::Size { certain: true }) => self.reject_batch(
                        &batch,
                        records.len(),
                        format!("{message} (one record larger than the backend accepts)"),
                    ),
                    Some(Refusal::Size { certain: false }) | None => Outcome::Failed(message),
                }
            }
        }
    }

    /// Moves a refused batch to `rejected.jsonl` and out of the spool.
    fn reject_batch(&self, batch: &SpoolBatch, records: usize, message: String) -> Outcome {
        // Rare: decode again rather than keep a copy of every batch on the
        // common path.
        for bytes in &batch.records {
            self.reject(bytes);
        }
        self.stats
            .export
            .rejected
            .fetch_add(records as u64, Ordering::Relaxed);
        if let Err(e) = self.spool.ack(batch.end, batch.records.len()) {
            return Outcome::Failed(e.to_string());
        }
        self.stats.export.set_spool_depth(self.spool.depth());
        Outcome::Rejected(message)
    }

    /// Undecodable records were already moved aside when the batch was built.
    fn reject(&self, bytes: &[u8]) {
        if let Ok(json) = record::to_json(bytes) {
            self.append_rejected(json.to_string().as_bytes());
        }
    }

    fn reject_raw(&self, bytes: &[u8]) {
        let line = serde_json::json!({ "undecodable_msgpack_hex": hex::encode(bytes) });
        self.append_rejected(line.to_string().as_bytes());
    }

    fn append_rejected(&self, line: &[u8]) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.spool.dir().join("rejected.jsonl");
        let r = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| {
                let mut buf = line.to_vec();
                buf.push(b'\n');
                f.write_all(&buf)
            });
        if let Err(e) = r {
            tracing::error!(path = %path.display(), "cannot keep a rejected record: {e}");
        }
    }
}

/// How a backend refused an export, when the error says it did, as opposed
/// to being unreachable, overloaded or misconfigured (all of which can heal,
/// so those records wait in the spool).
#[derive(Debug, PartialEq)]
enum Refusal {
    /// The data itself.
    Data,
    /// The request's size. `certain` is false for gRPC `ResourceExhausted`,
    /// which also means "overloaded, try later".
    Size { certain: bool },
}

/// The exporters' errors carry the gRPC code or HTTP status, not the
/// backend's detail (that is logged at debug level only).
fn refusal(message: &str) -> Option<Refusal> {
    if message.contains("gRPC code: InvalidArgument") || message.contains("status code: 400") {
        Some(Refusal::Data)
    } else if message.contains("gRPC code: OutOfRange") || message.contains("status code: 413") {
        Some(Refusal::Size { certain: true })
    } else if message.contains("gRPC code: ResourceExhausted") {
        Some(Refusal::Size { certain: false })
    } else {
        None
    }
}

/// Cheap jitter; the point is to de-synchronize a fleet of nodes, not
/// cryptography.
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            ^ u64::from(std::process::id());
        Jitter(seed | 1)
    }

    fn up_to(&mut self, d: Duration) -> Duration {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let ms = d.as_millis() as u64;
        Duration::from_millis(if ms == 0 { 0 } else { self.0 % ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_from_failures_that_can_heal() {
        let grpc = |code: &str| format!("TonicLogsClient export failed with gRPC code: {code}");
        let http = |status: u16| format!("HTTP export failed with status code: {status}");
        assert_eq!(refusal(&grpc("InvalidArgument")), Some(Refusal::Data));
        assert_eq!(refusal(&http(400)), Some(Refusal::Data));
        assert_eq!(
            refusal(&grpc("OutOfRange")),
            Some(Refusal::Size { certain: true })
        );
        assert_eq!(refusal(&http(413)), Some(Refusal::Size { certain: true }));
        assert_eq!(
            refusal(&grpc("ResourceExhausted")),
            Some(Refusal::Size { certain: false })
        );
        assert_eq!(refusal(&grpc("Unavailable: tcp connect error")), None);
        assert_eq!(refusal(&http(503)), None);
        assert_eq!(refusal(&http(401)), None);
    }

    #[test]
    fn jitter_stays_in_range() {
        let mut j = Jitter::new();
        for _ in 0..1000 {
            assert!(j.up_to(Duration::from_millis(250)) < Duration::from_millis(250));
        }
        assert_eq!(j.up_to(Duration::ZERO), Duration::ZERO);
    }
}
