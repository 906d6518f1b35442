//! The daemon's findings about itself. A sensor going blind is an alert, not
//! only a log line: a quarantined plugin, records the kernel could not
//! queue, a container's records dropped over its budget and a failed insert
//! into the kernel's state maps each become a finding (rule `Sensor ...`,
//! plugin `driftwatch`), carrying a count.
//!
//! Every stage reports here through [`crate::stats::Stats::health`]; the
//! runtime takes what is due once a second and sends it to the outputs
//! beside the plugins' findings (enriched like any event, never given to a
//! plugin). Each (check, subject) raises at most one finding per
//! [`RATE_LIMIT`]: what happens in between is counted and reported with
//! the next one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use driftwatch_sdk::{Container, Event, EventKind, Finding, Priority};

/// At most one finding per (check, subject) per this interval.
pub const RATE_LIMIT: Duration = Duration::from_secs(60);

/// What went wrong with the sensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// A plugin sits out after repeated failures; its events follow its
    /// `on_error` meanwhile.
    PluginQuarantined,
    /// A lane's ring buffer was full: records lost before anyone saw them.
    KernelLoss,
    /// A container's records were dropped in the kernel over its budget.
    ContainerDrops,
    /// An insert into a kernel state map failed (the record went out
    /// unthrottled).
    MapInsertFailed,
}

impl Check {
    pub fn rule(self) -> &'static str {
        match self {
            Check::PluginQuarantined => "Sensor Plugin Quarantined",
            Check::KernelLoss => "Sensor Kernel Events Lost",
            Check::ContainerDrops => "Sensor Events Dropped for Container",
            Check::MapInsertFailed => "Sensor Kernel Map Insert Failed",
        }
    }

    fn priority(self) -> Priority {
        match self {
            // A detection is off for every container.
            Check::PluginQuarantined => Priority::Error,
            _ => Priority::Warning,
        }
    }

    fn description(self) -> &'static str {
        match self {
            Check::PluginQuarantined => {
                "A detection plugin failed repeatedly and was quarantined: its rule is off until \
                 the quarantine ends"
            }
            Check::KernelLoss => {
                "The kernel sensor's ring buffer was full: events were lost before any rule saw \
                 them"
            }
            Check::ContainerDrops => {
                "A container sent more file events than its budget: the excess was dropped in the \
                 kernel so that other containers keep being watched"
            }
            Check::MapInsertFailed => {
                "The kernel sensor could not record state for a container: its events went out \
                 without a budget"
            }
        }
    }
}

/// One thing to report: `count` occurrences about `subject` (a plugin, a
/// lane, a container id, a map).
#[derive(Debug, Clone)]
struct Pending {
    count: u64,
    /// What the finding says, for the latest occurrence.
    detail: String,
    container: Option<Container>,
    /// Counted but not reported yet.
    due: bool,
    last_raised: Option<Instant>,
}

/// The self-findings waiting for the outputs, rate-limited per (check,
/// subject).
#[derive(Default)]
pub struct Health {
    pending: Mutex<BTreeMap<(Check, String), Pending>>,
    /// When the plugin chain last took a message, in milliseconds since
    /// [`epoch`] plus one (0: never).
    last_beat_ms: AtomicU64,
}

/// How long the chain may go without taking a message before the daemon
/// is reported not alive. The runtime sends the chain a health tick every
/// second, through the same bounded queue as the events, and the chain
/// only takes the next message once the outputs took its last batch: a
/// wedged chain, a wedged output or a dead runtime all stop the beat.
pub const LIVENESS_WINDOW: Duration = Duration::from_secs(10);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn since_epoch_ms(now: Instant) -> u64 {
    now.saturating_duration_since(epoch()).as_millis() as u64 + 1
}

impl Health {
    /// The plugin chain took a message at `now`.
    pub fn beat(&self, now: Instant) {
        self.last_beat_ms
            .store(since_epoch_ms(now), Ordering::Relaxed);
    }

    /// Whether the pipeline beat within [`LIVENESS_WINDOW`] of `now`: what
    /// `/healthz` answers.
    pub fn alive(&self, now: Instant) -> bool {
        let last = self.last_beat_ms.load(Ordering::Relaxed);
        last != 0 && since_epoch_ms(now).saturating_sub(last) <= LIVENESS_WINDOW.as_millis() as u64
    }

    /// Counts `count` occurrences of `check` about `subject`. `detail`
    /// completes the message ("plugin shell quarantined for 2 s ...").
    pub fn raise(
        &self,
        check: Check,
        subject: &str,
        count: u64,
        detail: String,
        container: Option<Container>,
    ) {
        if count == 0 {
            return;
        }
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let entry = p
            .entry((check, subject.to_string()))
            .or_insert_with(|| Pending {
                count: 0,
                detail: String::new(),
                container: None,
                due: false,
                last_raised: None,
            });
        entry.count = entry.count.saturating_add(count);
        entry.detail = detail;
        if container.is_some() {
            entry.container = container;
        }
        entry.due = true;
    }

    /// The findings due at `now`, each with the event it is about (a
    /// `sensor` event naming the host, and the container when there is one).
    pub fn take(&self, now: Instant, time_ns: u64, hostname: &str) -> Vec<(Event, Finding)> {
        self.take_inner(now, time_ns, hostname, false)
    }

    /// Everything still counted, rate limit or not: at shutdown a count
    /// held back for the next interval would otherwise never be reported.
    pub fn drain(&self, now: Instant, time_ns: u64, hostname: &str) -> Vec<(Event, Finding)> {
        self.take_inner(now, time_ns, hostname, true)
    }

    fn take_inner(
        &self,
        now: Instant,
        time_ns: u64,
        hostname: &str,
        all: bool,
    ) -> Vec<(Event, Finding)> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for ((check, subject), e) in p.iter_mut() {
            if !e.due
                || (!all
                    && e.last_raised
                        .is_some_and(|t| now.duration_since(t) < RATE_LIMIT))
            {
                continue;
            }
            out.push(finding(*check, subject, e, time_ns, hostname));
            e.count = 0;
            e.due = false;
            e.last_raised = Some(now);
        }
        // Forget what has been quiet for a while (containers come and go).
        p.retain(|_, e| {
            e.due
                || e.last_raised
                    .is_some_and(|t| now.duration_since(t) < RATE_LIMIT * 10)
        });
        out
    }
}

fn finding(
    check: Check,
    subject: &str,
    e: &Pending,
    time_ns: u64,
    hostname: &str,
) -> (Event, Finding) {
    let event = Event {
        time_ns,
        kind: EventKind::Sensor,
        hostname: hostname.to_string(),
        container: e.container.clone(),
        ..Event::default()
    };
    let mut fields = BTreeMap::new();
    fields.insert("sensor.check".to_string(), subject_field(check).to_string());
    fields.insert("sensor.subject".to_string(), subject.to_string());
    fields.insert("sensor.count".to_string(), e.count.to_string());
    let finding = Finding {
        rule: check.rule().to_string(),
        priority: check.priority(),
        output: format!("{} (count={} {})", check.rule(), e.count, e.detail),
        description: Some(check.description().to_string()),
        tags: ["sensor", "health"].map(String::from).to_vec(),
        fields,
        remediation: None,
    };
    (event, finding)
}

fn subject_field(check: Check) -> &'static str {
    match check {
        Check::PluginQuarantined => "plugin_quarantined",
        Check::KernelLoss => "kernel_loss",
        Check::ContainerDrops => "container_drops",
        Check::MapInsertFailed => "map_insert_failed",
    }
}

/// The self-findings `found` as a batch for the outputs: each event
/// enriched like a source's (container name, image, pod), each finding
/// counted, from plugin `driftwatch`.
pub fn batch(
    found: Vec<(Event, Finding)>,
    enrichers: &mut [Box<dyn crate::enrich::Enricher>],
    stats: &crate::stats::Stats,
) -> crate::pipeline::Batch {
    use std::sync::Arc;
    let plugin: Arc<str> = Arc::from("driftwatch");
    let version: Arc<str> = Arc::from(env!("CARGO_PKG_VERSION"));
    found
        .into_iter()
        .map(|(mut event, finding)| {
            for e in enrichers.iter_mut() {
                e.enrich(&mut event);
            }
            stats.finding(&finding.rule, finding.priority);
            let outcome = crate::pipeline::Outcome {
                findings: vec![crate::pipeline::FindingRecord {
                    plugin: plugin.clone(),
                    plugin_version: version.clone(),
                    finding: finding.into(),
                }],
                ..crate::pipeline::Outcome::default()
            };
            (event, outcome)
        })
        .collect()
}

/// Reports a quarantine (the one hook in `pipeline.rs`).
pub fn plugin_quarantined(
    stats: &crate::stats::Stats,
    plugin: &str,
    backoff: Duration,
    on_error: crate::config::OnError,
) {
    let policy = match on_error {
        crate::config::OnError::Pass => "its events pass unchecked",
        crate::config::OnError::Drop => "its events are dropped",
    };
    stats.health.raise(
        Check::PluginQuarantined,
        plugin,
        1,
        format!(
            "plugin={plugin} quarantined for {} s after repeated failures; {policy} meanwhile",
            backoff.as_secs()
        ),
        None,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finding_per_subject_then_counts_until_the_interval_passes() {
        let h = Health::default();
        let t0 = Instant::now();
        h.raise(Check::KernelLoss, "file", 3, "lane file".into(), None);
        h.raise(Check::KernelLoss, "file", 2, "lane file".into(), None);
        h.raise(
            Check::PluginQuarantined,
            "shell",
            1,
            "plugin shell".into(),
            None,
        );
        let out = h.take(t0, 7, "node");
        assert_eq!(out.len(), 2);
        let loss = out
            .iter()
            .find(|(_, f)| f.rule == Check::KernelLoss.rule())
            .expect("loss finding");
        assert_eq!(loss.1.fields["sensor.count"], "5");
        assert_eq!(loss.0.kind, EventKind::Sensor);
        assert_eq!(loss.0.time_ns, 7);
        let quarantine = out
            .iter()
            .find(|(_, f)| f.rule == Check::PluginQuarantined.rule())
            .expect("quarantine finding");
        assert_eq!(quarantine.1.priority, Priority::Error);

        // Within the interval: counted, not raised.
        h.raise(Check::KernelLoss, "file", 4, "lane file".into(), None);
        assert!(h.take(t0 + Duration::from_secs(1), 8, "node").is_empty());
        // After it: one finding with everything counted since.
        h.raise(Check::KernelLoss, "file", 1, "lane file".into(), None);
        let out = h.take(t0 + RATE_LIMIT, 9, "node");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.fields["sensor.count"], "5");
        // Nothing new: nothing due.
        assert!(h.take(t0 + RATE_LIMIT * 3, 10, "node").is_empty());
    }

    #[test]
    fn drain_reports_what_the_rate_limit_held_back() {
        let h = Health::default();
        let t0 = Instant::now();
        h.raise(Check::KernelLoss, "file", 3, "lane file".into(), None);
        assert_eq!(h.take(t0, 1, "node").len(), 1);
        h.raise(Check::KernelLoss, "file", 2, "lane file".into(), None);
        assert!(h.take(t0, 2, "node").is_empty());
        let out = h.drain(t0, 3, "node");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.fields["sensor.count"], "2");
        assert!(h.drain(t0, 4, "node").is_empty());
    }

    #[test]
    fn liveness_follows_the_beat() {
        let h = Health::default();
        let _ = epoch();
        let t0 = Instant::now();
        assert!(!h.alive(t0), "alive before the first beat");
        h.beat(t0);
        assert!(h.alive(t0));
        assert!(h.alive(t0 + LIVENESS_WINDOW));
        assert!(!h.alive(t0 + LIVENESS_WINDOW + Duration::from_millis(5)));
        h.beat(t0 + LIVENESS_WINDOW * 2);
        assert!(h.alive(t0 + LIVENESS_WINDOW * 2));
    }
}
