//! The plugin chain: every event batch passes each plugin in pipeline.toml
//! order. A `drop` verdict ends an event's path; findings, tags and fields
//! accumulate; whatever nobody dropped continues to the outputs.
//!
//! Failure containment lives here. A failed call (trap, deadline, memory,
//! bad output) throws the instance away and re-creates it, then bisects the
//! batch so that one poisonous event cannot blind the plugin to the others
//! in its batch. Events still unresolved follow the plugin's `on_error`.
//! After `quarantine_after` consecutive failed batches the plugin sits out,
//! with exponential backoff, and its events follow `on_error` meanwhile.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftwatch_sdk::{
    Action, DeclaredRule, Event, Finding, Fired, KindSet, Manifest, Prefilter, Priority,
    Remediation, RuleTable, Verdict, codec,
};

use crate::config::{Config, OnError, PluginConfig, PluginSource};
use crate::plugin::{Engine, LoadedPlugin, PluginError, PluginInstance, builtin};
use crate::stats::Stats;

/// Failed calls allowed per batch while bisecting, beyond the first.
const BISECT_BUDGET: u32 = 8;
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("plugin {plugin}: cannot read {path}: {source}")]
    Read {
        plugin: String,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("plugin {plugin}: its config table cannot be encoded: {source}")]
    Config {
        plugin: String,
        source: codec::CodecError,
    },
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// A plugin loaded from a file: the error names the file, which is
    /// what an operator edits (the plugin's name is in `source`).
    #[error("{path}: {source}")]
    PluginFile {
        path: std::path::PathBuf,
        #[source]
        source: PluginError,
    },
}

/// One finding and the plugin that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct FindingRecord {
    pub plugin: Arc<str>,
    pub plugin_version: Arc<str>,
    pub finding: Found,
}

/// A finding as the chain keeps it until a sink writes it out.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// Spelled out in full: by a plugin, the sensor's health checks, the
    /// digest audit.
    Spelled(Finding),
    /// A rule the plugin declared fired. Its output and fields are rendered
    /// from the rule and the event when a sink writes the finding: one
    /// borrowed value per field instead of two strings and a map node each,
    /// for every finding, most of which a sink writes once.
    Declared {
        rule: Arc<DeclaredRule>,
        priority: Priority,
        /// What only the plugin knew; wins over the rule's own fields.
        fields: BTreeMap<String, String>,
    },
}

impl From<Finding> for Found {
    fn from(f: Finding) -> Found {
        Found::Spelled(f)
    }
}

impl Found {
    /// What one verdict's findings become: those spelled out, then the fired
    /// rules, as `rules` declares them. The plugin host refused any batch
    /// naming a rule it does not declare, so none is left out here.
    pub fn of_verdict<'r>(
        findings: Vec<Finding>,
        fired: Vec<Fired>,
        rules: &'r RuleTable,
    ) -> impl Iterator<Item = Found> + 'r {
        let declared = fired.into_iter().filter_map(|f| {
            Some(Found::Declared {
                rule: rules.get(&f).ok()?.clone(),
                priority: f.priority,
                fields: f.fields,
            })
        });
        findings.into_iter().map(Found::from).chain(declared)
    }
}

/// Sorts `entries` by name and keeps one entry per name, the last one given:
/// how a later field overrides an earlier one of the same name.
pub fn last_wins<V>(entries: &mut Vec<(&str, V)>) {
    // Stable: among equal names the later entry stays last. `dedup_by`
    // keeps the first of a run, so it runs over the reversed list.
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries.reverse();
    entries.dedup_by(|a, b| a.0 == b.0);
    entries.reverse();
}

impl FindingRecord {
    pub fn rule(&self) -> &str {
        match &self.finding {
            Found::Spelled(f) => &f.rule,
            Found::Declared { rule, .. } => rule.name(),
        }
    }

    pub fn priority(&self) -> Priority {
        match &self.finding {
            Found::Spelled(f) => f.priority,
            Found::Declared { priority, .. } => *priority,
        }
    }

    /// The output message; `ev` is the event the finding is about.
    pub fn output(&self, ev: &Event) -> Cow<'_, str> {
        match &self.finding {
            Found::Spelled(f) => Cow::Borrowed(&f.output),
            Found::Declared { rule, .. } => Cow::Owned(rule.render(ev)),
        }
    }

    pub fn description(&self) -> Option<&str> {
        match &self.finding {
            Found::Spelled(f) => f.description.as_deref(),
            Found::Declared { rule, .. } => rule.description(),
        }
    }

    pub fn tags(&self) -> &[String] {
        match &self.finding {
            Found::Spelled(f) => &f.tags,
            Found::Declared { rule, .. } => rule.tags(),
        }
    }

    pub fn remediation(&self) -> Option<&Remediation> {
        match &self.finding {
            Found::Spelled(f) => f.remediation.as_ref(),
            Found::Declared { rule, .. } => rule.remediation(),
        }
    }

    /// The rule's fields for `ev`, sorted by name, each name once (for a
    /// declared rule the last of its entries wins, as a plugin's own
    /// `fields` override the rule's).
    pub fn fields<'a>(&'a self, ev: &'a Event) -> Vec<(&'a str, Cow<'a, str>)> {
        let borrowed = |(k, v): (&'a String, &'a String)| (k.as_str(), Cow::Borrowed(v.as_str()));
        match &self.finding {
            Found::Spelled(f) => f.fields.iter().map(borrowed).collect(),
            Found::Declared { rule, fields, .. } => {
                let mut all: Vec<_> = rule.fields(ev).chain(fields.iter().map(borrowed)).collect();
                last_wins(&mut all);
                all
            }
        }
    }
}

/// What the plugins said about one event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub findings: Vec<FindingRecord>,
    pub tags: Vec<String>,
    pub fields: BTreeMap<String, String>,
}

/// A batch that went through the chain: the events nobody dropped, each
/// with its [`Outcome`].
///
/// Events and outcomes are kept side by side rather than paired in one
/// struct: an event is large (about 700 bytes), and pairing would move every
/// event of every batch once more: about a quarter of the chain's time in a
/// profile of the steady-mix bench, plus faults for the new allocation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    events: Vec<Event>,
    outcomes: Vec<Outcome>,
}

/// One event of a [`Batch`] and what the plugins said about it.
#[derive(Debug, Clone, Copy)]
pub struct Processed<'a> {
    pub event: &'a Event,
    pub findings: &'a [FindingRecord],
    pub tags: &'a [String],
    pub fields: &'a BTreeMap<String, String>,
}

impl Batch {
    /// Events no plugin has seen yet: no findings, tags or fields.
    pub fn new(events: Vec<Event>) -> Batch {
        let outcomes = vec![Outcome::default(); events.len()];
        Batch { events, outcomes }
    }

    pub fn push(&mut self, event: Event, outcome: Outcome) {
        self.events.push(event);
        self.outcomes.push(outcome);
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn iter(&self) -> Iter<'_> {
        Iter(self.events.iter().zip(&self.outcomes))
    }

    /// Keeps only the events that raised a finding.
    pub fn retain_findings(&mut self) {
        let keep: Vec<bool> = self
            .outcomes
            .iter()
            .map(|o| !o.findings.is_empty())
            .collect();
        self.retain(&keep);
    }

    /// Keeps the events whose flag in `keep` is true.
    fn retain(&mut self, keep: &[bool]) {
        let mut k = keep.iter();
        self.events.retain(|_| k.next().copied().unwrap_or(true));
        let mut k = keep.iter();
        self.outcomes.retain(|_| k.next().copied().unwrap_or(true));
    }
}

pub struct Iter<'a>(std::iter::Zip<std::slice::Iter<'a, Event>, std::slice::Iter<'a, Outcome>>);

impl<'a> Iterator for Iter<'a> {
    type Item = Processed<'a>;

    fn next(&mut self) -> Option<Processed<'a>> {
        self.0.next().map(|(event, o)| Processed {
            event,
            findings: &o.findings,
            tags: &o.tags,
            fields: &o.fields,
        })
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = Processed<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl FromIterator<(Event, Outcome)> for Batch {
    fn from_iter<I: IntoIterator<Item = (Event, Outcome)>>(iter: I) -> Batch {
        let mut b = Batch::default();
        for (e, o) in iter {
            b.push(e, o);
        }
        b
    }
}

pub struct Chain {
    stages: Vec<Stage>,
    stats: Arc<Stats>,
}

struct Stage {
    plugin: LoadedPlugin,
    instance: Option<PluginInstance>,
    manifest: Manifest,
    version: Arc<str>,
    kinds: KindSet,
    /// The manifest's prefilter: events that fail it never reach the plugin.
    prefilter: Prefilter,
    /// The declared rules its fired verdicts name, from the live instance.
    /// Kept apart from it: a failed call drops the instance while verdicts
    /// of its earlier calls in the batch still need their rules.
    rules: Arc<RuleTable>,
    on_error: OnError,
    quarantine_after: u32,
    consecutive_failures: u32,
    quarantined_until: Option<Instant>,
    /// Just out of quarantine: one more failed batch sends it back, for longer.
    probation: bool,
    backoff: Duration,
}

/// Reads a plugin's component bytes from its configured source.
pub fn plugin_bytes(cfg: &Config, p: &PluginConfig) -> Result<Vec<u8>, ChainError> {
    match p.source() {
        // The config parser only accepts known built-in names.
        PluginSource::Builtin(b) => Ok(builtin::bytes(b).unwrap_or_default().to_vec()),
        PluginSource::Path(path) => {
            let path = cfg.resolve(path);
            std::fs::read(&path).map_err(|source| ChainError::Read {
                plugin: p.name.clone(),
                path,
                source,
            })
        }
    }
}

impl Chain {
    /// Loads, compiles and initializes every plugin of `cfg`. Any failure is
    /// an error naming the plugin: a chain is built whole or not at all.
    pub fn build(cfg: &Config, engine: &Engine, stats: Arc<Stats>) -> Result<Chain, ChainError> {
        let mut stages = Vec::new();
        for p in cfg.plugins() {
            let bytes = plugin_bytes(cfg, p)?;
            let config = codec::encode(&p.config).map_err(|source| ChainError::Config {
                plugin: p.name.clone(),
                source,
            })?;
            let in_file = |source: PluginError| match p.source() {
                PluginSource::Path(path) => ChainError::PluginFile {
                    path: cfg.resolve(path),
                    source,
                },
                PluginSource::Builtin(_) => ChainError::Plugin(source),
            };
            let plugin = engine
                .load(&p.name, &bytes, p.limits(), config)
                .map_err(in_file)?;
            let instance = plugin.instantiate().map_err(in_file)?;
            let manifest = instance.manifest().clone();
            stages.push(Stage {
                kinds: manifest.kinds.iter().collect(),
                prefilter: instance.prefilter().clone(),
                rules: instance.rules().clone(),
                version: Arc::from(manifest.version.as_str()),
                manifest,
                plugin,
                instance: Some(instance),
                on_error: p.on_error,
                quarantine_after: p.quarantine_after,
                consecutive_failures: 0,
                quarantined_until: None,
                probation: false,
                backoff: BACKOFF_START,
            });
        }
        Ok(Chain { stages, stats })
    }

    /// The union of the event kinds the plugins asked for: the sources need
    /// capture nothing else.
    pub fn kinds(&self) -> KindSet {
        self.stages
            .iter()
            .map(|s| s.kinds)
            .fold(KindSet::EMPTY, KindSet::union)
    }

    pub fn manifests(&self) -> impl Iterator<Item = (&str, &Manifest)> {
        self.stages
            .iter()
            .map(|s| (&**s.plugin.name(), &s.manifest))
    }

    pub fn process(&mut self, events: Vec<Event>) -> Batch {
        let mut encoded = Encoded::new(events.len());
        self.stats.events_in(events.iter().map(|e| e.kind));
        self.stats
            .enforcement(events.iter().filter_map(|e| e.process.enforcement.as_ref()));
        // A drop only clears the event's flag; the batch is compacted once
        // at the end.
        let mut batch = Batch::new(events);
        let mut keep = vec![true; batch.len()];

        for stage in &mut self.stages {
            let selected: Vec<usize> = batch
                .events
                .iter()
                .enumerate()
                .filter(|&(i, e)| {
                    keep[i] && stage.kinds.contains(e.kind) && stage.prefilter.matches(e)
                })
                .map(|(i, _)| i)
                .collect();
            if selected.is_empty() {
                continue;
            }
            for &i in &selected {
                encoded.ensure(i, &batch.events[i]);
            }
            let mut verdicts: Vec<Option<Verdict>> = vec![None; selected.len()];
            let ok = stage.run(&selected, &encoded, &mut verdicts, &self.stats);
            let mut drops = 0;
            for (&slot, verdict) in selected.iter().zip(verdicts) {
                let verdict = match verdict {
                    Some(v) => v,
                    None if stage.on_error == OnError::Drop => Verdict::drop(),
                    None => Verdict::pass(),
                };
                if verdict.action == Action::Drop {
                    keep[slot] = false;
                    drops += 1;
                    continue;
                }
                let outcome = &mut batch.outcomes[slot];
                for finding in Found::of_verdict(verdict.findings, verdict.fired, &stage.rules) {
                    let rec = FindingRecord {
                        plugin: stage.plugin.name().clone(),
                        plugin_version: stage.version.clone(),
                        finding,
                    };
                    self.stats.finding(rec.rule(), rec.priority());
                    outcome.findings.push(rec);
                }
                outcome.tags.extend(verdict.tags);
                outcome.fields.extend(verdict.fields);
            }
            if drops > 0 {
                self.stats.dropped_by_plugin(stage.plugin.name(), drops);
            }
            stage.after_batch(ok, &self.stats);
        }
        if keep.contains(&false) {
            batch.retain(&keep);
        }
        self.stats.events_out(batch.len());
        batch
    }
}

/// The events of a batch that some plugin takes, each encoded once (on
/// first use), back to back; each plugin's batch is assembled from the
/// slices of the events it takes. Events no prefilter lets through are never
/// encoded at all.
struct Encoded {
    bytes: Vec<u8>,
    spans: Vec<Option<(usize, usize)>>,
}

impl Encoded {
    fn new(events: usize) -> Encoded {
        Encoded {
            bytes: Vec::new(),
            spans: vec![None; events],
        }
    }

    fn ensure(&mut self, i: usize, e: &Event) {
        if self.spans[i].is_some() {
            return;
        }
        let start = self.bytes.len();
        // Encoding our own schema types into a Vec cannot fail; if it ever
        // did, the plugin gets an empty item and fails the event (on_error).
        if codec::encode_into(&mut self.bytes, e).is_err() {
            self.bytes.truncate(start);
        }
        self.spans[i] = Some((start, self.bytes.len()));
    }

    fn get(&self, i: usize) -> &[u8] {
        match self.spans[i] {
            Some((start, end)) => &self.bytes[start..end],
            None => &[],
        }
    }
}

impl Stage {
    /// Fills `out[i]` with the verdict for event `idx[i]`, or leaves it None
    /// when the plugin could not decide. Returns whether every call worked.
    fn run(
        &mut self,
        idx: &[usize],
        encoded: &Encoded,
        out: &mut [Option<Verdict>],
        stats: &Stats,
    ) -> bool {
        if let Some(until) = self.quarantined_until {
            if Instant::now() < until {
                return false;
            }
            tracing::info!(plugin = %self.plugin.name(), "quarantine over, trying the plugin again");
            self.quarantined_until = None;
            self.probation = true;
        }
        let mut budget = BISECT_BUDGET;
        self.call_span(idx, encoded, out, &mut budget, stats)
    }

    fn call_span(
        &mut self,
        idx: &[usize],
        encoded: &Encoded,
        out: &mut [Option<Verdict>],
        budget: &mut u32,
        stats: &Stats,
    ) -> bool {
        let result = match self.instance() {
            Err(e) => Err(e),
            Ok(inst) => {
                let mut batch = Vec::with_capacity(
                    idx.iter().map(|&i| encoded.get(i).len()).sum::<usize>() + 5,
                );
                codec::write_array_header(&mut batch, idx.len());
                for &i in idx {
                    batch.extend_from_slice(encoded.get(i));
                }
                let started = Instant::now();
                let r = inst.process_batch(&batch, idx.len());
                stats.plugin_call(self.plugin.name(), idx.len(), started.elapsed());
                r
            }
        };
        match result {
            Ok(verdicts) => {
                for (slot, v) in out.iter_mut().zip(verdicts) {
                    *slot = Some(v);
                }
                true
            }
            Err(e) => {
                // A failed instance is never entered again.
                self.instance = None;
                stats.plugin_failure(self.plugin.name(), e.kind());
                tracing::warn!(
                    plugin = %self.plugin.name(),
                    events = idx.len(),
                    on_error = ?self.on_error,
                    "plugin failed on a batch: {e}"
                );
                if idx.len() > 1
                    && *budget >= 2
                    && !matches!(
                        e,
                        PluginError::Start { .. }
                            | PluginError::Init { .. }
                            | PluginError::Link { .. }
                    )
                {
                    *budget -= 2;
                    let mid = idx.len() / 2;
                    let (a, b) = out.split_at_mut(mid);
                    self.call_span(&idx[..mid], encoded, a, budget, stats);
                    self.call_span(&idx[mid..], encoded, b, budget, stats);
                }
                false
            }
        }
    }

    fn instance(&mut self) -> Result<&mut PluginInstance, PluginError> {
        if self.instance.is_none() {
            let inst = self.plugin.instantiate()?;
            self.rules = inst.rules().clone();
            self.instance = Some(inst);
        }
        // Just ensured.
        self.instance
            .as_mut()
            .ok_or_else(|| PluginError::Trap("no instance".into()))
    }

    fn after_batch(&mut self, ok: bool, stats: &Stats) {
        if ok {
            if self.consecutive_failures > 0 {
                tracing::info!(plugin = %self.plugin.name(), "plugin recovered");
            }
            self.consecutive_failures = 0;
            self.probation = false;
            self.backoff = BACKOFF_START;
            return;
        }
        if self.quarantined_until.is_some() {
            return;
        }
        self.consecutive_failures += 1;
        if self.probation || self.consecutive_failures >= self.quarantine_after {
            stats.plugin_quarantined(self.plugin.name());
            crate::health::plugin_quarantined(
                stats,
                self.plugin.name(),
                self.backoff,
                self.on_error,
            );
            tracing::error!(
                plugin = %self.plugin.name(),
                failures = self.consecutive_failures,
                backoff_secs = self.backoff.as_secs_f64(),
                on_error = ?self.on_error,
                "plugin quarantined after repeated failures; its events follow on_error meanwhile"
            );
            self.quarantined_until = Some(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            self.consecutive_failures = 0;
            self.probation = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(pid: u32) -> Event {
        let mut e = Event::default();
        e.process.pid = pid;
        e
    }

    fn outcome(tag: &str) -> Outcome {
        Outcome {
            tags: vec![tag.to_string()],
            ..Outcome::default()
        }
    }

    #[test]
    fn compaction_keeps_each_event_with_its_own_outcome() {
        let mut b: Batch = (1..=5)
            .map(|i| (event(i), outcome(&format!("t{i}"))))
            .collect();
        b.retain(&[true, false, true, false, true]);
        let seen: Vec<(u32, &str)> = b
            .iter()
            .map(|p| (p.event.process.pid, p.tags[0].as_str()))
            .collect();
        assert_eq!(seen, [(1, "t1"), (3, "t3"), (5, "t5")]);
        assert_eq!(b.len(), 3);
    }

    #[test]
    fn a_new_batch_has_empty_outcomes() {
        let b = Batch::new(vec![event(1), event(2)]);
        assert!(b.iter().all(|p| p.findings.is_empty() && p.tags.is_empty()));
        assert_eq!((&b).into_iter().count(), 2);
    }
}

#[cfg(test)]
mod found_tests {
    //! A declared rule's finding, rendered when written, reads exactly as
    //! the same finding spelled out: in Falco JSON and in the OTLP record.
    use super::*;
    use driftwatch_sdk::{Container, FileInfo, Fired, Process, RuleSpec};

    fn event() -> Event {
        Event {
            kind: driftwatch_sdk::EventKind::OpenWrite,
            process: Process {
                pid: 7,
                name: "sh".into(),
                exe_path: "/bin/sh".into(),
                ..Process::default()
            },
            container: Some(Container {
                id: "3f1c9a7be2d0".into(),
                name: Some("web".into()),
                ..Container::default()
            }),
            file: Some(FileInfo {
                path: "/etc/x".into(),
                ..FileInfo::default()
            }),
            ..Event::default()
        }
    }

    #[test]
    fn declared_and_spelled_findings_are_written_alike() {
        let table = RuleTable::compile(&[RuleSpec::new(
            "R",
            "write by %proc.name to %fd.name in %container.name",
        )
        .with_description("why")
        .with_tags(&["b", "a"])
        // Overrides the output's own fd.name; an absent field is <NA>, an
        // absent optional one left out.
        .with_field_as("fd.name", "proc.exepath")
        .with_fields(&["k8s.pod.name"])
        .with_optional_field("action", "enforce.action")
        .with_remediation(Some(Remediation {
            alert_type: "T".into(),
            description: "d".into(),
            steps: vec!["s".into()],
        }))])
        .unwrap();
        let ev = event();
        let fired = Fired {
            rule: 0,
            priority: Priority::Warning,
            fields: [("extra".to_string(), "1".to_string())].into(),
        };
        let rule = table.get(&fired).unwrap().clone();
        let record = |finding: Found| FindingRecord {
            plugin: "p".into(),
            plugin_version: "1".into(),
            finding,
        };
        let spelled = record(Found::Spelled(table.finding(fired.clone(), &ev).unwrap()));
        let declared = record(Found::Declared {
            rule,
            priority: fired.priority,
            fields: fired.fields,
        });
        let tags = vec!["c".to_string()];
        let fields = BTreeMap::from([("extra".to_string(), "chain".to_string())]);
        let p = Processed {
            event: &ev,
            findings: &[],
            tags: &tags,
            fields: &fields,
        };
        let json = |r: &FindingRecord| {
            serde_json::to_value(crate::sink::falco::finding_json(&p, r)).unwrap()
        };
        assert_eq!(json(&declared), json(&spelled));
        let j = json(&declared);
        assert_eq!(j["output"], "write by sh to /etc/x in web");
        assert_eq!(j["output_fields"]["fd.name"], "/bin/sh");
        assert_eq!(j["output_fields"]["k8s.pod.name"], "<NA>");
        assert!(j["output_fields"].get("action").is_none());
        // The chain's field wins over the plugin's.
        assert_eq!(j["output_fields"]["extra"], "chain");
        let otlp = |r: &FindingRecord| {
            let mut out = Vec::new();
            crate::sink::otlp::record::write_finding(&mut out, &p, r);
            out
        };
        assert_eq!(otlp(&declared), otlp(&spelled));
        assert_eq!(declared.rule(), "R");
        assert_eq!(declared.description(), Some("why"));
    }
}
