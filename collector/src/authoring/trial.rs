//! `driftwatch plugin test`: recorded events through one component, with
//! the daemon's Falco JSON for what it finds.
//!
//! The component runs in the daemon's sandbox, under the limits a
//! `[[plugins]]` entry would give it, and gets only the events the daemon
//! would give it (its kinds and prefilter). Each event is its own call, so
//! every verdict is the plugin's answer to exactly that event.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use driftwatch_sdk::{Action, Event, codec};

use crate::pipeline::{FindingRecord, Found, Processed};
use crate::plugin::cache::ComponentCache;
use crate::plugin::host::{Limits, PluginError};
use crate::plugin::{Engine, LoadedPlugin, PluginInstance};
use crate::sink::falco::finding_json;

use super::{AuthoringError, io_error};

/// What a test run found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub events: usize,
    /// Events the plugin was not given (another kind, or its prefilter).
    pub not_given: usize,
    pub findings: usize,
    pub dropped: usize,
    /// Calls that failed (trap, deadline, error…): the daemon would apply
    /// the plugin's `on_error` to these events.
    pub failures: usize,
    /// The most linear memory an instance held (what `memory_limit_mib`
    /// counts), in bytes.
    pub peak_memory: usize,
}

impl Summary {
    /// `plugin test`'s exit status: 0 nothing fired, 1 a finding or a
    /// drop, 2 a failed call.
    pub fn exit_code(&self) -> u8 {
        if self.failures > 0 {
            2
        } else if self.findings > 0 || self.dropped > 0 {
            1
        } else {
            0
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrialError {
    #[error(transparent)]
    Authoring(#[from] AuthoringError),
    #[error("{file} is not a usable driftwatch plugin: {source}")]
    Plugin {
        file: std::path::PathBuf,
        #[source]
        source: PluginError,
    },
    #[error("{file}: {count} bad record(s), first: {first}")]
    Events {
        file: std::path::PathBuf,
        count: usize,
        first: String,
    },
    #[error("the plugin config is not a map the plugin can be given: {0}")]
    Config(#[source] codec::CodecError),
    #[error("encoding event {index} for the plugin: {source}")]
    Encode {
        index: usize,
        #[source]
        source: codec::CodecError,
    },
    #[error("writing the report: {0}")]
    Write(#[source] std::io::Error),
}

/// Where `plugin build` and `plugin test` cache compiled components:
/// `$XDG_CACHE_HOME/driftwatch/plugins`, else `~/.cache/driftwatch/plugins`.
/// A Python component takes a minute or more to compile; cached, it loads
/// in well under a second.
pub fn default_cache_dir() -> Option<std::path::PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("driftwatch").join("plugins"))
}

/// Loads `plugin` with `config` (a JSON object) and `limits`, compiling
/// through the cache in `cache_dir` when there is one.
pub fn load(
    plugin: &Path,
    config: &serde_json::Value,
    limits: Limits,
    cache_dir: Option<&Path>,
) -> Result<LoadedPlugin, TrialError> {
    let bytes = std::fs::read(plugin).map_err(io_error(plugin))?;
    let config = codec::encode(config).map_err(TrialError::Config)?;
    let name = plugin
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let cache = cache_dir.map_or_else(ComponentCache::disabled, ComponentCache::new);
    let engine = Engine::new(cache).map_err(|source| TrialError::Plugin {
        file: plugin.to_path_buf(),
        source,
    })?;
    engine
        .load(name, &bytes, limits, config)
        .map_err(|source| TrialError::Plugin {
            file: plugin.to_path_buf(),
            source,
        })
}

/// Reads the events of `file` (JSON lines or MessagePack, as `replay`).
/// Any bad record is an error: a test should not pass on what it skipped.
pub fn read_events(file: &Path) -> Result<Vec<Event>, TrialError> {
    let bytes = std::fs::read(file).map_err(io_error(file))?;
    let (events, errors) = crate::source::replay::parse(&bytes);
    if let Some(first) = errors.first() {
        return Err(TrialError::Events {
            file: file.to_path_buf(),
            count: errors.len(),
            first: first.clone(),
        });
    }
    Ok(events)
}

/// Runs each event through the plugin. Findings go to `out` as Falco JSON
/// lines (the daemon's stdout output); one line per event saying its
/// verdict goes to `report`.
pub fn run(
    plugin: &LoadedPlugin,
    events: Vec<Event>,
    hostname: &str,
    out: &mut dyn Write,
    report: &mut dyn Write,
) -> Result<Summary, TrialError> {
    let mut summary = Summary::default();
    let mut instance: Option<PluginInstance> = None;
    let name: Arc<str> = plugin.name().clone();
    for (n, mut ev) in events.into_iter().enumerate() {
        summary.events += 1;
        if ev.hostname.is_empty() {
            ev.hostname = hostname.to_string();
        }
        let label = format!("event {} ({} {})", n + 1, ev.kind.as_str(), ev.process.name);
        let inst = match instance.take() {
            Some(i) => i,
            None => match plugin.instantiate() {
                Ok(i) => i,
                Err(e) => {
                    // Init failing is the plugin's config or code, not the event.
                    return Err(TrialError::Plugin {
                        file: name.to_string().into(),
                        source: e,
                    });
                }
            },
        };
        let mut inst = inst;
        summary.peak_memory = summary.peak_memory.max(inst.memory_bytes());
        if !inst.manifest().kinds.contains(&ev.kind) || !inst.prefilter().matches(&ev) {
            summary.not_given += 1;
            writeln!(
                report,
                "{label}: not given to the plugin (kind or prefilter)"
            )
            .map_err(TrialError::Write)?;
            instance = Some(inst);
            continue;
        }
        let mut batch = Vec::new();
        codec::write_array_header(&mut batch, 1);
        codec::encode_into(&mut batch, &ev).map_err(|source| TrialError::Encode {
            index: n + 1,
            source,
        })?;
        match inst.process_batch(&batch, 1) {
            Ok(mut verdicts) => {
                // process_batch checked there is exactly one.
                let v = verdicts.pop().unwrap_or_default();
                let version: Arc<str> = Arc::from(inst.manifest().version.as_str());
                let records: Vec<FindingRecord> =
                    Found::of_verdict(v.findings, v.fired, inst.rules())
                        .map(|finding| FindingRecord {
                            plugin: name.clone(),
                            plugin_version: version.clone(),
                            finding,
                        })
                        .collect();
                let p = Processed {
                    event: &ev,
                    findings: &records,
                    tags: &v.tags,
                    fields: &v.fields,
                };
                for rec in &records {
                    serde_json::to_writer(&mut *out, &finding_json(&p, rec))
                        .map_err(|e| TrialError::Write(e.into()))?;
                    out.write_all(b"\n").map_err(TrialError::Write)?;
                }
                let drop = v.action == Action::Drop;
                summary.peak_memory = summary.peak_memory.max(inst.memory_bytes());
                summary.findings += records.len();
                summary.dropped += usize::from(drop);
                let rules: Vec<&str> = records.iter().map(|r| r.rule()).collect();
                writeln!(
                    report,
                    "{label}: {}, {} finding(s){}",
                    if drop { "drop" } else { "pass" },
                    records.len(),
                    if rules.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", rules.join("; "))
                    }
                )
                .map_err(TrialError::Write)?;
                instance = Some(inst);
            }
            Err(e) => {
                // As in the daemon, a failed instance is never entered again.
                summary.failures += 1;
                writeln!(report, "{label}: failed: {e}").map_err(TrialError::Write)?;
            }
        }
    }
    out.flush().map_err(TrialError::Write)?;
    writeln!(
        report,
        "{} event(s): {} finding(s), {} dropped, {} not given, {} failed; \
         instance memory {:.1} MiB",
        summary.events,
        summary.findings,
        summary.dropped,
        summary.not_given,
        summary.failures,
        summary.peak_memory as f64 / f64::from(1 << 20)
    )
    .map_err(TrialError::Write)?;
    Ok(summary)
}
