//! The daemon's own counters, shared by every stage. Cheap to bump from hot
//! paths (atomics, or a short lock on rare events such as findings).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use driftwatch_sdk::{EnforceAction, Enforcement, EventKind, Priority};
use serde::{Deserialize, Serialize};

#[derive(Default)]
pub struct Stats {
    events_in: [AtomicU64; EventKind::ALL.len()],
    events_out: AtomicU64,
    /// Events the kernel could not queue (ring buffer full).
    pub kernel_lost: AtomicU64,
    /// Facts of kernel records the kernel could not read (one per fact per
    /// record), reported as unknown.
    pub kernel_read_faults: AtomicU64,
    /// File records the kernel dropped over their container's budget.
    pub kernel_dropped: AtomicU64,
    /// Events in memory between the batcher and the outputs: what a
    /// shutdown that runs out of time loses.
    pub queued_events: AtomicU64,
    /// Keys the kernel's fold map (`AGG`, an LRU) held at the last sweep:
    /// near its capacity, evictions lose repeat counts.
    pub kernel_fold_keys: AtomicU64,
    /// The OTLP exporter.
    pub export: ExportCounters,
    /// `[outputs.http]`.
    pub http: ExportCounters,
    /// Findings about the daemon itself (crate::health).
    pub health: crate::health::Health,
    rare: Mutex<Rare>,
    /// Set when OTLP metrics are on: plugin call latencies also go there.
    call_histogram: OnceLock<opentelemetry::metrics::Histogram<f64>>,
}

/// A spooled output (OTLP, HTTP) and its spool.
#[derive(Default)]
pub struct ExportCounters {
    /// Records the backend acknowledged.
    pub exported: AtomicU64,
    /// Export requests that failed (each is retried).
    pub failed_requests: AtomicU64,
    /// Records the backend refused as invalid (kept in the spool's
    /// `rejected` file, not retried).
    pub rejected: AtomicU64,
    /// Records that could not be kept because the spool was full.
    pub spool_refused: AtomicU64,
    /// Records re-sent after a restart that may already have been
    /// delivered (at-least-once duplicates).
    pub redelivered: AtomicU64,
    pub spool_records: AtomicU64,
    pub spool_bytes: AtomicU64,
}

impl ExportCounters {
    /// What the spool holds now: (records, bytes).
    pub fn set_spool_depth(&self, (records, bytes): (u64, u64)) {
        self.spool_records.store(records, Ordering::Relaxed);
        self.spool_bytes.store(bytes, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ExportSnapshot {
        ExportSnapshot {
            exported: self.exported.load(Ordering::Relaxed),
            failed_requests: self.failed_requests.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            spool_refused: self.spool_refused.load(Ordering::Relaxed),
            redelivered: self.redelivered.load(Ordering::Relaxed),
            spool_records: self.spool_records.load(Ordering::Relaxed),
            spool_bytes: self.spool_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Bucket bounds of plugin call latency, in microseconds.
pub const CALL_BUCKETS_US: [u64; 10] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000,
];

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CallLatency {
    pub calls: u64,
    /// Events the plugin was given: those of its kinds that passed its
    /// prefilter (calls retried while bisecting count their events again).
    #[serde(default)]
    pub events: u64,
    pub total_us: u64,
    /// Calls at or under each bound of [`CALL_BUCKETS_US`], then over the last.
    pub buckets: Vec<u64>,
}

#[derive(Default, Clone, Serialize)]
struct Rare {
    dropped_by_plugin: BTreeMap<String, u64>,
    plugin_failures: BTreeMap<String, BTreeMap<String, u64>>,
    plugin_quarantines: BTreeMap<String, u64>,
    findings: BTreeMap<String, u64>,
    findings_by_priority: BTreeMap<String, u64>,
    sink_errors: BTreeMap<String, u64>,
    plugin_calls: BTreeMap<String, CallLatency>,
    reloads: BTreeMap<String, u64>,
    enforcement: BTreeMap<String, u64>,
}

/// A point-in-time copy, for `driftwatch stats`, log lines and metrics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Snapshot {
    pub events_in: BTreeMap<String, u64>,
    pub events_out: u64,
    pub kernel_lost: u64,
    #[serde(default)]
    pub kernel_read_faults: u64,
    #[serde(default)]
    pub kernel_dropped: u64,
    pub dropped_by_plugin: BTreeMap<String, u64>,
    pub plugin_failures: BTreeMap<String, BTreeMap<String, u64>>,
    pub plugin_quarantines: BTreeMap<String, u64>,
    pub findings: BTreeMap<String, u64>,
    pub findings_by_priority: BTreeMap<String, u64>,
    pub sink_errors: BTreeMap<String, u64>,
    pub plugin_calls: BTreeMap<String, CallLatency>,
    /// Hot reloads of pipeline.toml by outcome: `applied`, `failed`.
    #[serde(default)]
    pub reloads: BTreeMap<String, u64>,
    /// Execs the kernel's enforcement judged, by action (`killed`,
    /// `would_kill`, `allowed`, `init`, ...), and `kill_failed`: kills
    /// whose signal was not delivered (each one also a finding).
    #[serde(default)]
    pub enforcement: BTreeMap<String, u64>,
    #[serde(default)]
    pub queued_events: u64,
    #[serde(default)]
    pub kernel_fold_keys: u64,
    pub export: ExportSnapshot,
    /// `[outputs.http]`, same counters as `export`.
    #[serde(default)]
    pub http: ExportSnapshot,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportSnapshot {
    pub exported: u64,
    pub failed_requests: u64,
    pub rejected: u64,
    pub spool_refused: u64,
    pub redelivered: u64,
    pub spool_records: u64,
    pub spool_bytes: u64,
}

impl Stats {
    /// Counts a batch's events by kind: one atomic add per kind present,
    /// not one per event.
    pub fn events_in(&self, kinds: impl Iterator<Item = EventKind>) {
        let mut n = [0u64; EventKind::ALL.len()];
        for k in kinds {
            n[k as usize] += 1;
        }
        for (counter, n) in self.events_in.iter().zip(n) {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Counts the kernel's enforcement verdicts carried by a batch's execs.
    pub fn enforcement<'a>(&self, verdicts: impl Iterator<Item = &'a Enforcement>) {
        let mut verdicts = verdicts.peekable();
        if verdicts.peek().is_none() {
            return;
        }
        self.with(|r| {
            for v in verdicts {
                *r.enforcement
                    .entry(v.action.as_str().to_string())
                    .or_default() += 1;
                if v.action == EnforceAction::Killed && !v.delivered {
                    *r.enforcement.entry("kill_failed".to_string()).or_default() += 1;
                }
            }
        });
    }

    pub fn events_out(&self, n: usize) {
        self.events_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn with<R>(&self, f: impl FnOnce(&mut Rare) -> R) -> R {
        // A panic elsewhere while holding the lock leaves counters usable.
        let mut g = self.rare.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    pub fn dropped_by_plugin(&self, plugin: &str, n: usize) {
        self.with(|r| *r.dropped_by_plugin.entry(plugin.to_string()).or_default() += n as u64);
    }

    pub fn plugin_failure(&self, plugin: &str, kind: &str) {
        self.with(|r| {
            *r.plugin_failures
                .entry(plugin.to_string())
                .or_default()
                .entry(kind.to_string())
                .or_default() += 1
        });
    }

    pub fn plugin_quarantined(&self, plugin: &str) {
        self.with(|r| *r.plugin_quarantines.entry(plugin.to_string()).or_default() += 1);
    }

    pub fn finding(&self, rule: &str, priority: Priority) {
        self.with(|r| {
            *r.findings.entry(rule.to_string()).or_default() += 1;
            *r.findings_by_priority
                .entry(priority.falco_name().to_string())
                .or_default() += 1;
        });
    }

    /// One plugin call (a batch) took `d`.
    pub fn plugin_call(&self, plugin: &str, events: usize, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.with(|r| {
            let c = r.plugin_calls.entry(plugin.to_string()).or_default();
            if c.buckets.is_empty() {
                c.buckets = vec![0; CALL_BUCKETS_US.len() + 1];
            }
            c.calls += 1;
            c.events += events as u64;
            c.total_us += us;
            let i = CALL_BUCKETS_US
                .iter()
                .position(|b| us <= *b)
                .unwrap_or(CALL_BUCKETS_US.len());
            c.buckets[i] += 1;
        });
        if let Some(h) = self.call_histogram.get() {
            h.record(
                d.as_secs_f64(),
                &[opentelemetry::KeyValue::new("plugin", plugin.to_string())],
            );
        }
    }

    /// Whether plugin call latencies go to an OTel histogram.
    pub fn has_call_histogram(&self) -> bool {
        self.call_histogram.get().is_some()
    }

    /// Plugin call latencies also go to this OTel histogram from now on.
    pub fn set_call_histogram(&self, h: opentelemetry::metrics::Histogram<f64>) {
        let _ = self.call_histogram.set(h);
    }

    pub fn reload(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "failed" };
        self.with(|r| *r.reloads.entry(outcome.to_string()).or_default() += 1);
    }

    pub fn sink_error(&self, sink: &str) {
        self.with(|r| *r.sink_errors.entry(sink.to_string()).or_default() += 1);
    }

    pub fn snapshot(&self) -> Snapshot {
        let rare = self.with(|r| r.clone());
        Snapshot {
            events_in: EventKind::ALL
                .iter()
                .map(|k| {
                    (
                        k.as_str().to_string(),
                        self.events_in[*k as usize].load(Ordering::Relaxed),
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
            events_out: self.events_out.load(Ordering::Relaxed),
            kernel_lost: self.kernel_lost.load(Ordering::Relaxed),
            kernel_read_faults: self.kernel_read_faults.load(Ordering::Relaxed),
            kernel_dropped: self.kernel_dropped.load(Ordering::Relaxed),
            dropped_by_plugin: rare.dropped_by_plugin,
            plugin_failures: rare.plugin_failures,
            plugin_quarantines: rare.plugin_quarantines,
            findings: rare.findings,
            findings_by_priority: rare.findings_by_priority,
            sink_errors: rare.sink_errors,
            plugin_calls: rare.plugin_calls,
            reloads: rare.reloads,
            enforcement: rare.enforcement,
            queued_events: self.queued_events.load(Ordering::Relaxed),
            kernel_fold_keys: self.kernel_fold_keys.load(Ordering::Relaxed),
            export: self.export.snapshot(),
            http: self.http.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftwatch_sdk::EnforceReason;

    #[test]
    fn enforcement_verdicts_are_counted_and_failed_kills_apart() {
        let stats = Stats::default();
        let v = |action, delivered| Enforcement {
            action,
            reason: EnforceReason::Drift,
            delivered,
            error: if delivered { 0 } else { 3 },
        };
        let batch = [
            v(EnforceAction::Killed, true),
            v(EnforceAction::Killed, false),
            v(EnforceAction::WouldKill, false),
            v(EnforceAction::Init, false),
        ];
        stats.enforcement(batch.iter());
        stats.enforcement(std::iter::empty());
        let got = stats.snapshot().enforcement;
        let want: BTreeMap<String, u64> = [
            ("init", 1),
            ("kill_failed", 1),
            ("killed", 2),
            ("would_kill", 1),
        ]
        .into_iter()
        .map(|(k, n)| (k.to_string(), n))
        .collect();
        assert_eq!(got, want);
    }
}
