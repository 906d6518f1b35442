//! OTLP logs export that loses nothing.
//!
//! `send` maps each finding (and, when asked, each passing event) to a log
//! record with semantic-convention attributes ([`record`]) and appends it to
//! the on-disk [`Spool`]; an export loop on its own thread and runtime
//! ([`export`]) sends batches and removes them once acknowledged. Where the
//! receiver is and how to reach it: [`settings`]; building the
//! opentelemetry-otlp exporters: [`client`]; self-telemetry: [`metrics`].

pub mod client;
pub mod export;
pub mod metrics;
pub mod record;
pub mod said;
pub mod settings;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;

use super::feed::SpoolFeed;
use super::spool::Spool;
use super::{Sink, SinkError};
use crate::config::OtlpConfig;
use crate::pipeline::Batch;
use crate::stats::Stats;
use export::{Control, Worker};

/// Who is sending: the OTLP resource of every record and metric.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub host_name: String,
    pub node_name: Option<String>,
}

impl Origin {
    pub fn resource(&self) -> Resource {
        let mut attrs = vec![
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("host.name", self.host_name.clone()),
            KeyValue::new("os.type", "linux"),
        ];
        // The machine id is the stable host identity semconv asks for.
        if let Ok(id) = std::fs::read_to_string("/etc/machine-id") {
            let id = id.trim();
            if !id.is_empty() {
                attrs.push(KeyValue::new("host.id", id.to_string()));
            }
        }
        if let Some(n) = &self.node_name {
            attrs.push(KeyValue::new("k8s.node.name", n.clone()));
        }
        Resource::builder_empty()
            .with_service_name("driftwatch")
            .with_attributes(attrs)
            .build()
    }
}

/// How long the sink's start waits for the export thread's instruments.
const READY_WAIT: Duration = Duration::from_secs(5);

pub struct OtlpSink {
    spool: Arc<Spool>,
    events: bool,
    stats: Arc<Stats>,
    control: Arc<Control>,
    worker: Option<std::thread::JoinHandle<()>>,
    shutdown_timeout: Duration,
    feed: SpoolFeed,
}

impl OtlpSink {
    /// Opens the spool (records left by an earlier run are sent first) and
    /// starts the export loop. Only an unusable spool stops the start; a bad
    /// endpoint or TLS file is logged by the loop, which keeps spooling.
    pub fn start(
        cfg: &OtlpConfig,
        base_dir: &Path,
        origin: &Origin,
        stats: Arc<Stats>,
    ) -> Result<OtlpSink, SinkError> {
        // reqwest and tonic are built without a default crypto provider;
        // ring is the one kube already uses. Already installed is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        match settings::resolve(
            cfg,
            base_dir,
            settings::Signal::Logs,
            &settings::process_env,
        ) {
            Ok(s) => {
                if let Some(w) = s.plaintext_headers_warning() {
                    tracing::warn!("{w}");
                }
            }
            Err(e) => tracing::error!(
                "OTLP export is misconfigured, findings will wait in the spool: {e}"
            ),
        }
        let dir = if cfg.spool.dir.is_absolute() {
            cfg.spool.dir.clone()
        } else {
            base_dir.join(&cfg.spool.dir)
        };
        let (spool, recovered) =
            Spool::open(&dir, cfg.spool.max_bytes()).map_err(|source| SinkError::Spool {
                sink: "otlp",
                source,
            })?;
        if recovered.pending > 0 {
            tracing::info!(
                records = recovered.pending,
                maybe_already_delivered = recovered.maybe_delivered,
                spool = %dir.display(),
                "resuming export of spooled records"
            );
        }
        if recovered.cursor_lost {
            tracing::warn!(
                records = recovered.pending,
                spool = %dir.display(),
                "the spool's cursor does not read back (torn by a power loss?); sending every spooled record again, some may be duplicates"
            );
        }
        if recovered.skipped_bytes > 0 {
            tracing::error!(
                bytes = recovered.skipped_bytes,
                spool = %dir.display(),
                "the spool held corrupt bytes between records; skipped them, the records around them are kept"
            );
        }
        if recovered.truncated_bytes > 0 {
            tracing::warn!(
                bytes = recovered.truncated_bytes,
                "spool ended in a partly written record (the daemon was killed mid-write); cut it off"
            );
        }
        stats
            .export
            .redelivered
            .fetch_add(recovered.maybe_delivered, Ordering::Relaxed);
        stats.export.set_spool_depth(spool.depth());

        let spool = Arc::new(spool);
        let control = Arc::new(Control::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let worker = Worker {
            cfg: cfg.clone(),
            base_dir: base_dir.to_path_buf(),
            spool: spool.clone(),
            stats: stats.clone(),
            resource: origin.resource(),
            control: control.clone(),
            ready: Some(ready_tx),
        };
        let handle = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                // Its own runtime: exports never compete with the sources
                // for the daemon's runtime, and a slow backend stalls nothing.
                // One thread: the exporter's request and the connection task
                // that encodes and sends it meet on it, so its messages are
                // freed where they were built and no wake-up crosses threads
                // (a second worker cost gRPC about a tenth more CPU).
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("OTLP export cannot start its runtime: {e}");
                        return;
                    }
                };
                rt.block_on(worker.run());
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|source| SinkError::Thread {
                sink: "otlp",
                source,
            })?;
        // Metrics set-up builds an exporter but does no I/O; a bound only
        // guards against a wedged thread, which must not hold up detection.
        // A thread that could not start has logged why (Disconnected).
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = ready_rx.recv_timeout(READY_WAIT) {
            tracing::warn!(
                "OTLP export thread not ready after {READY_WAIT:?}; going on without waiting"
            );
        }
        Ok(OtlpSink {
            feed: SpoolFeed::new("otlp", "OTLP spool", "backend", spool.clone()),
            spool,
            events: cfg.events,
            stats,
            control,
            worker: Some(handle),
            shutdown_timeout: Duration::from_millis(cfg.shutdown_timeout_ms),
        })
    }

    /// The batch's log records, back to back, and where each one is.
    fn encode(&self, batch: &Batch) -> (Vec<u8>, Vec<std::ops::Range<usize>>) {
        let mut out = Vec::new();
        let mut ranges = Vec::new();
        for p in batch {
            for rec in p.findings {
                let start = out.len();
                record::write_finding(&mut out, &p, rec);
                ranges.push(start..out.len());
            }
            if self.events {
                let start = out.len();
                record::write_event(&mut out, &p);
                ranges.push(start..out.len());
            }
        }
        (out, ranges)
    }
}

impl Sink for OtlpSink {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn writes_plain_events(&self) -> bool {
        self.events
    }

    fn send(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let (bytes, records) = self.encode(batch);
        if records.is_empty() {
            return Ok(());
        }
        self.feed.append(
            records.iter().map(|r| &bytes[r.clone()]),
            &self.stats.export,
            &self.control.wake,
        )
    }

    /// Exports what is spooled until its own shutdown timeout or the
    /// daemon's deadline, whichever comes first; the rest waits in the
    /// spool for the next start.
    fn flush(&mut self, deadline: Instant) -> Result<(), SinkError> {
        self.control.draining.store(true, Ordering::Release);
        self.control.wake.notify_one();
        let Some(handle) = self.worker.take() else {
            return Ok(());
        };
        let deadline = deadline.min(Instant::now() + self.shutdown_timeout);
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = self.spool.depth().0;
        if handle.is_finished() {
            let _ = handle.join();
        } else {
            self.control.stop.store(true, Ordering::Release);
            self.control.wake.notify_one();
            // An export in flight may outlive us; it is marked in-flight in
            // the spool and counted as a possible duplicate on restart.
        }
        if left > 0 {
            tracing::warn!(
                records = left,
                spool = %self.spool.dir().display(),
                "shutdown deadline reached; records stay in the spool for the next start"
            );
        }
        Ok(())
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::Release);
        self.control.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Switch;

    #[test]
    fn metrics_instruments_exist_when_the_sink_has_started() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Nothing listens there; building the exporters does no I/O.
        let cfg = OtlpConfig {
            enabled: Switch::On,
            endpoint: Some("http://127.0.0.1:9".into()),
            ..OtlpConfig::default()
        };
        assert!(cfg.metrics.enabled);
        let stats = Arc::new(Stats::default());
        let origin = Origin {
            host_name: "node-1".into(),
            node_name: None,
        };
        let mut sink = OtlpSink::start(&cfg, dir.path(), &origin, stats.clone()).expect("starts");
        // The pipeline's first plugin call may come right after start:
        // its duration must already have somewhere to go.
        assert!(stats.has_call_histogram());
        sink.control.stop.store(true, Ordering::Release);
        let _ = sink.flush(Instant::now() + Duration::from_secs(5));
    }
}
