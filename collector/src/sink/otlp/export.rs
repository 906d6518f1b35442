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
//! every finding behind it; and only while refusals do not come too many
//! in a row ([`crate::sink::refusal`]).
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
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::logs::{
    LogBatch, LogExporter as _, SdkLogRecord, SdkLogger, SdkLoggerProvider,
};
use tokio::sync::Notify;

use super::client::{self, ClientError};
use super::said::{self, Status};
use super::settings::{self, Settings, SettingsError, Signal};
use super::{metrics, record};
use crate::config::OtlpConfig;
use crate::sink::backoff::Jitter;
use crate::sink::refusal::RefusalStreak;
use crate::sink::spool::{Batch as SpoolBatch, Spool, SpoolError};
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

/// Why an export attempt delivered nothing.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The exporter's error, with what the backend said ([`said`]).
    #[error("{source}{}", backend_said(.said))]
    Backend {
        source: OTelSdkError,
        said: Option<String>,
    },
    /// A refusal no longer believed ([`crate::sink::refusal`]).
    #[error(
        "the backend refused {in_a_row} requests in a row, the last one: {source}; \
         that is almost always the output's configuration (endpoint, credentials, \
         a gateway), not the data: findings stay spooled until a request is taken"
    )]
    RefusingEverything {
        in_a_row: u32,
        source: Box<ExportError>,
    },
}

fn backend_said(said: &Option<String>) -> String {
    said.as_ref()
        .map(|reason| format!("; the backend said: {reason}"))
        .unwrap_or_default()
}

enum Outcome {
    Delivered,
    /// The backend refused the data itself, or a record too large for it
    /// (`oversized`).
    Rejected {
        error: ExportError,
        oversized: bool,
    },
    /// The backend refused a request of this many records (and spooled
    /// bytes) for its size.
    TooLarge {
        records: usize,
        bytes: u64,
        error: ExportError,
    },
    Failed(ExportError),
}

/// How often a persisting failure is logged again.
const REPEAT_LOG: Duration = Duration::from_secs(30);

/// What makes log records and sends them: the logger that creates records,
/// the scope they are sent under, and the exporter once it is built.
struct Sender {
    // Kept for as long as its logger makes records.
    _provider: SdkLoggerProvider,
    logger: SdkLogger,
    scope: InstrumentationScope,
    /// Built on first use, and again after a failed build (settings and
    /// TLS files are re-read); a built exporter is kept.
    exporter: Option<LogExporter>,
}

impl Sender {
    fn new() -> Sender {
        let provider = SdkLoggerProvider::builder().build();
        let logger = provider.logger("driftwatch");
        let scope = InstrumentationScope::builder("driftwatch")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Sender {
            _provider: provider,
            logger,
            scope,
            exporter: None,
        }
    }
}

/// Request sizing and the retry state between attempts.
struct Pacing {
    batch_size: usize,
    /// Spooled bytes per request: halved for good when the backend
    /// refuses a request for its size. A receiver's limit rarely moves;
    /// growing back would only find it again, one refusal at a time.
    budget: u64,
    batch_timeout: Duration,
    initial: Duration,
    max: Duration,
    backoff: Duration,
    failing_since: Option<Instant>,
    last_log: Option<Instant>,
    rng: Jitter,
    refusals: RefusalStreak,
}

impl Pacing {
    /// From range-checked configuration (`crate::config`).
    fn new(cfg: &OtlpConfig) -> Pacing {
        let initial = Duration::from_millis(cfg.retry_initial_ms);
        Pacing {
            batch_size: cfg.batch_size,
            budget: cfg.batch_max_kib.saturating_mul(1024),
            batch_timeout: Duration::from_millis(cfg.batch_timeout_ms),
            initial,
            max: Duration::from_millis(cfg.retry_max_ms).max(initial),
            backoff: initial,
            failing_since: None,
            last_log: None,
            rng: Jitter::new(),
            refusals: RefusalStreak::default(),
        }
    }

    /// The wait before the next attempt after a failure, with jitter.
    fn next_wait(&mut self) -> Duration {
        let wait = self.backoff + self.rng.up_to(self.backoff / 2);
        self.backoff = self.backoff.saturating_mul(2).min(self.max);
        wait
    }
}

impl Worker {
    fn settings(&self, signal: Signal) -> Result<Settings, SettingsError> {
        settings::resolve(&self.cfg, &self.base_dir, signal, &settings::process_env)
    }

    pub async fn run(mut self) {
        let meters = self.start_metrics();
        if let Some(ready) = self.ready.take() {
            // The sink may have stopped waiting; nothing to do then.
            let _ = ready.send(());
        }
        let mut sender = Sender::new();
        let mut pacing = Pacing::new(&self.cfg);
        while self.batch_ready(&pacing).await {
            let outcome = self.attempt(&mut sender, &mut pacing).await;
            self.settle(outcome, &mut pacing).await;
        }
        if let Some(m) = meters {
            m.shutdown().await;
        }
    }

    /// Self-telemetry, when on; a failure to set it up is logged and
    /// leaves it off.
    fn start_metrics(&self) -> Option<metrics::Meters> {
        if !self.cfg.metrics.enabled {
            return None;
        }
        let started = self
            .settings(Signal::Metrics)
            .map_err(ExportError::from)
            .and_then(|s| {
                metrics::start(&s, &self.cfg.metrics, &self.resource, &self.stats)
                    .map_err(ExportError::from)
            });
        started
            .map_err(|e| tracing::error!("self-telemetry metrics are off: {e}"))
            .ok()
    }

    /// Waits until there is something to send: a full batch, or a partial
    /// one whose batch timeout ran out, or anything at all while draining.
    /// False when the loop is to end: stopped, or drained empty.
    async fn batch_ready(&self, pacing: &Pacing) -> bool {
        loop {
            if self.control.stop.load(Ordering::Acquire) {
                return false;
            }
            let draining = self.control.draining.load(Ordering::Acquire);
            let (pending, _) = self.spool.depth();
            if pending == 0 {
                if draining {
                    return false;
                }
                self.sleep_or_wake(Duration::from_secs(1)).await;
                continue;
            }
            if (pending as usize) < pacing.batch_size && !draining {
                // Let the batch fill, up to the batch timeout.
                let deadline = tokio::time::Instant::now() + pacing.batch_timeout;
                while (self.spool.depth().0 as usize) < pacing.batch_size
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
            return true;
        }
    }

    /// One export request, building the exporter first when there is none.
    async fn attempt(&self, sender: &mut Sender, pacing: &mut Pacing) -> Outcome {
        let mut exporter = match sender.exporter.take() {
            Some(e) => e,
            None => match self.build_exporter() {
                Ok(e) => e,
                Err(e) => return Outcome::Failed(e),
            },
        };
        let outcome = self
            .export_one(
                &mut exporter,
                &sender.logger,
                &sender.scope,
                pacing.batch_size,
                pacing.budget,
                &mut pacing.refusals,
            )
            .await;
        sender.exporter = Some(exporter);
        outcome
    }

    fn build_exporter(&self) -> Result<LogExporter, ExportError> {
        let mut e = client::log_exporter(&self.settings(Signal::Logs)?)?;
        opentelemetry_sdk::logs::LogExporter::set_resource(&mut e, &self.resource);
        Ok(e)
    }

    /// Counts and logs an attempt's outcome, and waits out the backoff
    /// after a failure.
    async fn settle(&self, outcome: Outcome, pacing: &mut Pacing) {
        match outcome {
            Outcome::Delivered => {
                if pacing.refusals.delivered() {
                    tracing::info!(
                        "the OTLP backend takes findings again; refusals are believed again"
                    );
                }
                if let Some(since) = pacing.failing_since.take() {
                    tracing::info!(
                        "OTLP export works again after {:.1}s; {} records still spooled",
                        since.elapsed().as_secs_f64(),
                        self.spool.depth().0
                    );
                }
                pacing.backoff = pacing.initial;
                pacing.last_log = None;
            }
            Outcome::TooLarge {
                records,
                bytes,
                error,
            } => {
                self.stats
                    .export
                    .failed_requests
                    .fetch_add(1, Ordering::Relaxed);
                pacing.budget = (bytes / 2).max(1);
                tracing::warn!(
                    "the OTLP backend refused a request of {records} records ({bytes} spooled bytes) for its size ({error}); sending at most {} bytes per request",
                    pacing.budget
                );
            }
            Outcome::Rejected { error, oversized } => {
                let why = if oversized {
                    " (one record larger than the backend accepts)"
                } else {
                    ""
                };
                tracing::error!(
                    "the OTLP backend rejected a batch (moved to rejected.jsonl): {error}{why}"
                );
                pacing.backoff = pacing.initial;
            }
            Outcome::Failed(error) => {
                self.stats
                    .export
                    .failed_requests
                    .fetch_add(1, Ordering::Relaxed);
                pacing.failing_since.get_or_insert_with(Instant::now);
                if pacing.last_log.is_none_or(|t| t.elapsed() >= REPEAT_LOG) {
                    let (records, bytes) = self.spool.depth();
                    tracing::error!(
                        spooled_records = records,
                        spooled_bytes = bytes,
                        "OTLP export failed, keeping findings in the spool and retrying: {error}"
                    );
                    pacing.last_log = Some(Instant::now());
                }
                let wait = pacing.next_wait();
                // Also while draining: the shutdown deadline (which sets
                // `stop`) decides when to give up, not one failure.
                self.sleep_unless_stopped(wait).await;
            }
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
        logger: &SdkLogger,
        scope: &InstrumentationScope,
        max_records: usize,
        max_bytes: u64,
        refusals: &mut RefusalStreak,
    ) -> Outcome {
        let batch = match self.spool.peek(max_records, max_bytes) {
            Ok(b) => b,
            Err(e) => return Outcome::Failed(e.into()),
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
            return Outcome::Failed(e.into());
        }
        let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            records.iter().map(|r| (r, scope)).collect();
        // Whatever an earlier request left there is not about this one.
        let _ = said::take();
        let result = exporter.export(LogBatch::new(&refs)).await;
        match result {
            Ok(()) => {
                if let Err(e) = self.spool.ack(batch.end, n) {
                    return Outcome::Failed(e.into());
                }
                self.stats
                    .export
                    .exported
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                self.stats.export.set_spool_depth(self.spool.depth());
                Outcome::Delivered
            }
            Err(source) => {
                let said = said::take();
                let error = ExportError::Backend {
                    source,
                    said: said.message,
                };
                let oversized = match said.status.and_then(refusal) {
                    Some(Refusal::Data) => false,
                    Some(Refusal::Size { .. }) if records.len() > 1 => {
                        return Outcome::TooLarge {
                            records: records.len(),
                            bytes: batch.spooled_bytes(),
                            error,
                        };
                    }
                    Some(Refusal::Size { certain: true }) => true,
                    Some(Refusal::Size { certain: false }) | None => {
                        return Outcome::Failed(error);
                    }
                };
                if refusals.believe() {
                    self.reject_batch(&batch, records.len(), error, oversized)
                } else {
                    Outcome::Failed(ExportError::RefusingEverything {
                        in_a_row: refusals.in_a_row(),
                        source: Box::new(error),
                    })
                }
            }
        }
    }

    /// Moves a refused batch to `rejected.jsonl` and out of the spool.
    fn reject_batch(
        &self,
        batch: &SpoolBatch,
        records: usize,
        error: ExportError,
        oversized: bool,
    ) -> Outcome {
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
            return Outcome::Failed(e.into());
        }
        self.stats.export.set_spool_depth(self.spool.depth());
        Outcome::Rejected { error, oversized }
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
        self.spool.keep_rejected(line);
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

/// The status of the backend's answer, as [`said`] caught it: the
/// exporters' errors are only text.
fn refusal(status: Status) -> Option<Refusal> {
    use http::StatusCode;
    use tonic::Code;
    match status {
        Status::Grpc(Code::InvalidArgument) | Status::Http(StatusCode::BAD_REQUEST) => {
            Some(Refusal::Data)
        }
        Status::Grpc(Code::OutOfRange) | Status::Http(StatusCode::PAYLOAD_TOO_LARGE) => {
            Some(Refusal::Size { certain: true })
        }
        Status::Grpc(Code::ResourceExhausted) => Some(Refusal::Size { certain: false }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_told_from_failures_that_can_heal() {
        let grpc = Status::Grpc;
        let http = |status: u16| Status::Http(http::StatusCode::from_u16(status).unwrap());
        assert_eq!(
            refusal(grpc(tonic::Code::InvalidArgument)),
            Some(Refusal::Data)
        );
        assert_eq!(refusal(http(400)), Some(Refusal::Data));
        assert_eq!(
            refusal(grpc(tonic::Code::OutOfRange)),
            Some(Refusal::Size { certain: true })
        );
        assert_eq!(refusal(http(413)), Some(Refusal::Size { certain: true }));
        assert_eq!(
            refusal(grpc(tonic::Code::ResourceExhausted)),
            Some(Refusal::Size { certain: false })
        );
        assert_eq!(refusal(grpc(tonic::Code::Unavailable)), None);
        assert_eq!(refusal(http(503)), None);
        assert_eq!(refusal(http(401)), None);
    }

    #[test]
    fn a_backend_error_carries_what_the_backend_said() {
        let error = ExportError::Backend {
            source: OTelSdkError::InternalFailure(
                "HTTP export failed with status code: 400".into(),
            ),
            said: Some("log record 3 lacks a field".into()),
        };
        assert_eq!(
            error.to_string(),
            "Operation failed: HTTP export failed with status code: 400; \
             the backend said: log record 3 lacks a field"
        );
        assert!(std::error::Error::source(&error).is_some());
    }
}
