//! The daemon's own counters, shared by every stage. Cheap to bump from hot
//! paths (atomics, or a short lock on rare events such as findings).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use driftwatch_sdk::{EventKind, Priority};
use serde::Serialize;

#[derive(Default)]
pub struct Stats {
    events_in: [AtomicU64; EventKind::ALL.len()],
    events_out: AtomicU64,
    /// Events the kernel could not queue (ring buffer full).
    pub kernel_lost: AtomicU64,
    /// Events lost to a full stage; stays 0 unless a policy says otherwise.
    pub queue_dropped: AtomicU64,
    rare: Mutex<Rare>,
}

#[derive(Default, Clone, Serialize)]
struct Rare {
    dropped_by_plugin: BTreeMap<String, u64>,
    plugin_failures: BTreeMap<String, BTreeMap<String, u64>>,
    plugin_quarantines: BTreeMap<String, u64>,
    findings: BTreeMap<String, u64>,
    findings_by_priority: BTreeMap<String, u64>,
    sink_errors: BTreeMap<String, u64>,
}

/// A point-in-time copy, for `driftwatch stats`, log lines and metrics.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Snapshot {
    pub events_in: BTreeMap<String, u64>,
    pub events_out: u64,
    pub kernel_lost: u64,
    pub queue_dropped: u64,
    pub dropped_by_plugin: BTreeMap<String, u64>,
    pub plugin_failures: BTreeMap<String, BTreeMap<String, u64>>,
    pub plugin_quarantines: BTreeMap<String, u64>,
    pub findings: BTreeMap<String, u64>,
    pub findings_by_priority: BTreeMap<String, u64>,
    pub sink_errors: BTreeMap<String, u64>,
}

impl Stats {
    pub fn event_in(&self, kind: EventKind) {
        self.events_in[kind as usize].fetch_add(1, Ordering::Relaxed);
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
            queue_dropped: self.queue_dropped.load(Ordering::Relaxed),
            dropped_by_plugin: rare.dropped_by_plugin,
            plugin_failures: rare.plugin_failures,
            plugin_quarantines: rare.plugin_quarantines,
            findings: rare.findings,
            findings_by_priority: rare.findings_by_priority,
            sink_errors: rare.sink_errors,
        }
    }
}
