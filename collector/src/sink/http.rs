//! `[outputs.http]`: every finding POSTed to a URL as Falco's `http_output`
//! sends it, one JSON object per request, so falcosidekick's root endpoint
//! (and anything else that takes Falco's webhook) needs no glue.
//!
//! The body is exactly the stdout line of the finding, without its newline
//! ([`super::falco::finding_json`] serialized the same way). `send` appends
//! it to a spool of its own ([`Spool`]); a delivery loop on its own thread
//! and runtime POSTs the spool's head and removes each record only once it
//! is settled, so an outage or a restart loses nothing (at-least-once).
//!
//! Settled means: a 2xx (delivered), or a 400, 413 or 422, which say the
//! receiver will never take this body; such a record is moved to
//! `rejected.jsonl` beside the spool and counted, so one bad record cannot
//! block every finding behind it, as long as refusals do not come too many
//! in a row ([`super::refusal`]). Anything else (5xx, 429, 401, a refused
//! connection, a timeout) keeps the record at the head, retried with
//! exponential backoff and jitter for as long as it takes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use tokio::sync::Notify;

use super::backoff::Backoff;
use super::falco::finding_json;
use super::feed::SpoolFeed;
use super::refusal::RefusalStreak;
use super::spool::{Spool, SpoolError};
use super::{Sink, SinkError};
use crate::config::HttpConfig;
use crate::pipeline::Batch;
use crate::stats::Stats;

/// How often a persisting failure is logged again.
const REPEAT_LOG: Duration = Duration::from_secs(30);
/// How much of a refusing receiver's answer goes into the log line.
const SAID_CHARS: usize = 300;

/// Shared between the sink (outputs thread) and the delivery loop.
#[derive(Default)]
struct Control {
    wake: Notify,
    /// Shutdown: deliver what is spooled, then stop.
    draining: AtomicBool,
    /// Stop now; what is left stays in the spool.
    stop: AtomicBool,
}

pub struct HttpSink {
    spool: Arc<Spool>,
    stats: Arc<Stats>,
    control: Arc<Control>,
    worker: Option<std::thread::JoinHandle<()>>,
    feed: SpoolFeed,
}

#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("POST {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("POST {url}: the receiver answered {status}{}", said_suffix(.said))]
    Status {
        url: String,
        status: reqwest::StatusCode,
        said: String,
    },
    /// A refusal no longer believed ([`super::refusal`]).
    #[error(
        "the receiver refused {in_a_row} findings in a row, the last one: {source}; \
         that is almost always the output's configuration (URL, credentials, a \
         gateway), not the data: findings stay spooled until one is taken"
    )]
    RefusingEverything {
        in_a_row: u32,
        source: Box<DeliveryError>,
    },
}

fn said_suffix(said: &str) -> String {
    if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    }
}

/// What one POST came to.
enum Outcome {
    Delivered,
    /// The receiver refused this body for good.
    Rejected(DeliveryError),
    /// It may take it later.
    Failed(DeliveryError),
}

/// Statuses that say the body itself will never be taken: Falco's own
/// output and falcosidekick answer 400 to a body they cannot read, 413 is
/// the size, 422 the content. Retrying them could only block the spool.
fn is_refusal(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 413 | 422)
}

impl HttpSink {
    /// Opens the spool (findings left by an earlier run are delivered
    /// first) and starts the delivery loop. Only an unusable spool or a
    /// client that cannot be built stops the start.
    pub fn start(
        cfg: &HttpConfig,
        base_dir: &Path,
        stats: Arc<Stats>,
    ) -> Result<HttpSink, SinkError> {
        let url = cfg.url.clone().ok_or_else(|| SinkError::Config {
            sink: "http",
            message: "url is not set".into(),
        })?;
        let client = client(cfg)?;
        let dir = if cfg.spool_dir.is_absolute() {
            cfg.spool_dir.clone()
        } else {
            base_dir.join(&cfg.spool_dir)
        };
        let max_bytes = cfg.spool_max_kib.saturating_mul(1024);
        let (spool, recovered) =
            Spool::open(&dir, max_bytes).map_err(|source| SinkError::Spool {
                sink: "http",
                source,
            })?;
        if recovered.pending > 0 {
            tracing::info!(
                records = recovered.pending,
                maybe_already_delivered = recovered.maybe_delivered,
                spool = %dir.display(),
                "resuming delivery of spooled findings to {url}"
            );
        }
        if recovered.truncated_bytes > 0 || recovered.skipped_bytes > 0 || recovered.cursor_lost {
            tracing::warn!(
                truncated_bytes = recovered.truncated_bytes,
                skipped_bytes = recovered.skipped_bytes,
                cursor_lost = recovered.cursor_lost,
                spool = %dir.display(),
                "the HTTP spool was damaged (a kill mid-write or a power loss); what reads back is kept"
            );
        }
        stats
            .http
            .redelivered
            .fetch_add(recovered.maybe_delivered, Ordering::Relaxed);
        stats.http.set_spool_depth(spool.depth());

        let spool = Arc::new(spool);
        let control = Arc::new(Control::default());
        let worker = Worker {
            url,
            client,
            spool: spool.clone(),
            stats: stats.clone(),
            control: control.clone(),
            backoff: Backoff::new(
                Duration::from_millis(cfg.retry_initial_ms),
                Duration::from_millis(cfg.retry_max_ms),
            ),
            failing_since: None,
            last_log: None,
            refusals: RefusalStreak::default(),
        };
        let handle = std::thread::Builder::new()
            .name("http-output".into())
            .spawn(move || {
                // Its own runtime, as for OTLP: a slow receiver stalls
                // neither the sources nor the other outputs.
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        rt.block_on(worker.run());
                        rt.shutdown_timeout(Duration::from_millis(100));
                    }
                    Err(e) => tracing::error!("the HTTP output cannot start its runtime: {e}"),
                }
            })
            .map_err(|source| SinkError::Thread {
                sink: "http",
                source,
            })?;
        Ok(HttpSink {
            feed: SpoolFeed::new("http", "HTTP output spool", "receiver", spool.clone()),
            spool,
            stats,
            control,
            worker: Some(handle),
        })
    }
}

/// The client: the configured headers on every request, Falco's content
/// type unless one is configured, and one timeout for the whole request.
fn client(cfg: &HttpConfig) -> Result<reqwest::Client, SinkError> {
    // reqwest is built without a default crypto provider; ring is the one
    // kube and OTLP use. Already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bad = |message: String| SinkError::Config {
        sink: "http",
        message,
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("driftwatch/", env!("CARGO_PKG_VERSION"))),
    );
    for (name, value) in &cfg.headers {
        // Checked with the configuration; this only keeps the types honest.
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| bad(format!("header {name:?}: {e}")))?;
        let mut value =
            HeaderValue::from_str(value).map_err(|e| bad(format!("header {name}: {e}")))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_millis(cfg.timeout_ms))
        .build()
        .map_err(|e| bad(format!("building the HTTP client: {e}")))
}

impl Sink for HttpSink {
    fn name(&self) -> &'static str {
        "http"
    }

    /// Findings only, always.
    fn writes_plain_events(&self) -> bool {
        false
    }

    fn send(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let bodies: Vec<Vec<u8>> = batch
            .iter()
            .flat_map(|p| {
                p.findings.iter().map(move |rec| {
                    // Serializing a JSON value to memory cannot fail.
                    serde_json::to_vec(&finding_json(&p, rec)).unwrap_or_default()
                })
            })
            .collect();
        if bodies.is_empty() {
            return Ok(());
        }
        self.feed.append(
            bodies.iter().map(Vec::as_slice),
            &self.stats.http,
            &self.control.wake,
        )
    }

    /// Delivers what is spooled until `deadline`; the rest waits in the
    /// spool for the next start.
    fn flush(&mut self, deadline: Instant) -> Result<(), SinkError> {
        self.control.draining.store(true, Ordering::Release);
        self.control.wake.notify_one();
        let Some(handle) = self.worker.take() else {
            return Ok(());
        };
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if handle.is_finished() {
            let _ = handle.join();
        } else {
            // A POST in flight may outlive us; its record is marked in
            // flight in the spool and counted as a possible duplicate on
            // the next start.
            self.control.stop.store(true, Ordering::Release);
            self.control.wake.notify_one();
        }
        let left = self.spool.depth().0;
        if left > 0 {
            tracing::warn!(
                records = left,
                spool = %self.spool.dir().display(),
                "shutdown deadline reached; findings stay in the HTTP output's spool for the next start"
            );
        }
        Ok(())
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::Release);
        self.control.wake.notify_one();
    }
}

struct Worker {
    url: String,
    client: reqwest::Client,
    spool: Arc<Spool>,
    stats: Arc<Stats>,
    control: Arc<Control>,
    backoff: Backoff,
    failing_since: Option<Instant>,
    last_log: Option<Instant>,
    refusals: RefusalStreak,
}

impl Worker {
    async fn run(mut self) {
        while self.next_ready().await {
            let outcome = self.deliver_head().await;
            self.settle(outcome).await;
        }
    }

    /// Waits until there is a record to deliver. False when the loop is to
    /// end: stopped, or drained empty.
    async fn next_ready(&self) -> bool {
        loop {
            if self.control.stop.load(Ordering::Acquire) {
                return false;
            }
            if self.spool.depth().0 > 0 {
                return true;
            }
            if self.control.draining.load(Ordering::Acquire) {
                return false;
            }
            let _ =
                tokio::time::timeout(Duration::from_secs(1), self.control.wake.notified()).await;
        }
    }

    /// POSTs the spool's oldest record, one per request as Falco does, and
    /// removes it once settled. One at a time keeps the receiver's order.
    async fn deliver_head(&mut self) -> Outcome {
        let head = match self.spool.peek(1, u64::MAX) {
            Ok(b) => b,
            Err(e) => return Outcome::Failed(e.into()),
        };
        let Some(body) = head.records.into_iter().next() else {
            return Outcome::Delivered;
        };
        if let Err(e) = self.spool.mark_inflight(head.end) {
            return Outcome::Failed(e.into());
        }
        let outcome = self.post(&body).await;
        match outcome {
            Outcome::Failed(_) => return outcome,
            Outcome::Delivered => {
                self.stats.http.exported.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Rejected(error) if !self.refusals.believe() => {
                return Outcome::Failed(DeliveryError::RefusingEverything {
                    in_a_row: self.refusals.in_a_row(),
                    source: Box::new(error),
                });
            }
            Outcome::Rejected(_) => {
                self.spool.keep_rejected(&body);
                self.stats.http.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Err(e) = self.spool.ack(head.end, 1) {
            return Outcome::Failed(e.into());
        }
        self.stats.http.set_spool_depth(self.spool.depth());
        outcome
    }

    async fn post(&self, body: &[u8]) -> Outcome {
        let request = self.client.post(&self.url).body(body.to_vec()).send();
        let response = match request.await {
            Ok(r) => r,
            Err(source) => {
                return Outcome::Failed(DeliveryError::Request {
                    url: self.url.clone(),
                    source,
                });
            }
        };
        let status = response.status();
        if status.is_success() {
            return Outcome::Delivered;
        }
        // What the receiver said helps whoever reads the log; a receiver
        // that does not finish saying it is not waited for past the
        // client's timeout.
        let said: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(SAID_CHARS)
            .collect();
        let error = DeliveryError::Status {
            url: self.url.clone(),
            status,
            said,
        };
        if is_refusal(status) {
            Outcome::Rejected(error)
        } else {
            Outcome::Failed(error)
        }
    }

    /// Logs an outcome and waits out the backoff after a failure.
    async fn settle(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Delivered => {
                if self.refusals.delivered() {
                    tracing::info!(
                        "the HTTP receiver takes findings again; refusals are believed again"
                    );
                }
                if let Some(since) = self.failing_since.take() {
                    tracing::info!(
                        "the HTTP output works again after {:.1}s; {} findings still spooled",
                        since.elapsed().as_secs_f64(),
                        self.spool.depth().0
                    );
                }
                self.backoff.reset();
                self.last_log = None;
            }
            Outcome::Rejected(error) => {
                tracing::error!(
                    "the HTTP receiver refused a finding for good (kept in {}): {error}",
                    self.spool.dir().join("rejected.jsonl").display()
                );
            }
            Outcome::Failed(error) => {
                self.stats
                    .http
                    .failed_requests
                    .fetch_add(1, Ordering::Relaxed);
                self.failing_since.get_or_insert_with(Instant::now);
                if self.last_log.is_none_or(|t| t.elapsed() >= REPEAT_LOG) {
                    tracing::error!(
                        spooled = self.spool.depth().0,
                        "the HTTP output failed, keeping findings in the spool and retrying: {}",
                        error_chain(&error)
                    );
                    self.last_log = Some(Instant::now());
                }
                let wait = self.backoff.next_wait();
                self.sleep_unless_stopped(wait).await;
            }
        }
    }

    /// Also while draining: the shutdown deadline (which sets `stop`)
    /// decides when to give up, not one failure.
    async fn sleep_unless_stopped(&self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while tokio::time::Instant::now() < deadline {
            if self.control.stop.load(Ordering::Acquire) {
                return;
            }
            let _ = tokio::time::timeout_at(deadline, self.control.wake.notified()).await;
        }
    }
}

/// reqwest's errors keep the cause (refused, timed out) in their sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let said = s.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_of_the_body_are_settled_without_delivery() {
        let s = |n: u16| reqwest::StatusCode::from_u16(n).unwrap();
        for n in [400, 413, 422] {
            assert!(is_refusal(s(n)), "{n}");
        }
        for n in [401, 403, 404, 408, 429, 500, 502, 503, 504] {
            assert!(!is_refusal(s(n)), "{n}");
        }
    }
}
