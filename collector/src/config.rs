//! pipeline.toml: parsed once into typed structs.
//!
//! Every section is declared once, denies unknown keys, and is checked
//! ([`Check`]) as it is deserialized, so every error, typo or bad value
//! alike, carries the file, line and column. Plugin entries are checked
//! right after, with their own spans.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::plugin::host::Limits;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: ParseError },
}

/// A syntax, type or value error, located in the file.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{0}")]
    Toml(Box<toml::de::Error>),
    /// A `[[plugins]]` entry that fails its checks: the message is the
    /// whole story, there is no underlying error.
    #[error("error at line {line}, column {column}: {message}")]
    Invalid {
        line: usize,
        column: usize,
        message: String,
    },
}

impl ParseError {
    fn at(text: &str, offset: usize, message: String) -> ParseError {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before
            .rfind('\n')
            .map_or(before.len(), |i| before.len() - i - 1)
            + 1;
        ParseError::Invalid {
            line,
            column,
            message,
        }
    }
}

/// A section whose values are checked beyond their types. Every range is
/// what the code using the value can honour: past it a value would wrap,
/// overflow a deadline or ask a library for more than it can give.
trait Check {
    fn check(&self) -> Result<(), String>;
}

/// Deserializes a section and checks it. The error is raised inside the
/// parent table's deserialization, so toml locates it at the section.
fn checked<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Check,
{
    let section = T::deserialize(d)?;
    section.check().map_err(serde::de::Error::custom)?;
    Ok(section)
}

/// `key` must lie in `range`; the message names both.
fn in_range<T>(key: &str, value: T, range: RangeInclusive<T>) -> Result<(), String>
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{key} must be between {} and {}, not {value}",
            range.start(),
            range.end()
        ))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, deserialize_with = "checked")]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub sources: SourcesConfig,
    #[serde(default, deserialize_with = "checked")]
    pub pipeline: PipelineConfig,
    /// `[[plugins]]` as written, disabled ones included; checked in
    /// [`Config::parse`], where a span can be turned into line and column
    /// (toml locates an error inside an array of tables at its first entry).
    #[serde(default)]
    plugins: Vec<toml::Spanned<PluginConfig>>,
    #[serde(default, deserialize_with = "checked")]
    pub outputs: OutputsConfig,
    /// The Prometheus `/metrics` and `/healthz` endpoint.
    #[serde(default)]
    pub metrics: MetricsEndpointConfig,
    /// Kubernetes pod enrichment.
    #[serde(default)]
    pub k8s: K8sConfig,
    /// Where the container runtimes are asked for metadata.
    #[serde(default, deserialize_with = "checked")]
    pub runtimes: RuntimesConfig,
    /// What the collector works out about events before the plugins.
    #[serde(default)]
    pub enrich: EnrichConfig,
    /// In-kernel enforcement of drift (docs/enforcement.md); hot-reloaded.
    #[serde(default, deserialize_with = "checked")]
    pub enforcement: EnforcementConfig,
    /// Directory of the file this was read from; relative paths resolve here.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Config {
    /// The sections of `self` that differ from `running` and that a hot
    /// reload cannot apply: only the plugin chain is rebuilt live, sources,
    /// outputs and the rest are set up once at start.
    pub fn restart_needed(&self, running: &Config) -> Vec<&'static str> {
        [
            ("daemon", self.daemon != running.daemon),
            ("sources", self.sources != running.sources),
            // allow_empty_chain is read by the reload itself.
            (
                "pipeline",
                PipelineConfig {
                    allow_empty_chain: running.pipeline.allow_empty_chain,
                    ..self.pipeline.clone()
                } != running.pipeline,
            ),
            ("outputs", self.outputs != running.outputs),
            ("metrics", self.metrics != running.metrics),
            ("k8s", self.k8s != running.k8s),
            ("runtimes", self.runtimes != running.runtimes),
            ("enrich", self.enrich != running.enrich),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Config::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        cfg.base_dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Ok(cfg)
    }

    pub fn parse(text: &str) -> Result<Config, ParseError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ParseError::Toml(Box::new(e)))?;
        let mut seen = BTreeSet::new();
        for p in &cfg.plugins {
            let at = |message| ParseError::at(text, p.span().start, message);
            let p = p.get_ref();
            if !seen.insert(p.name.as_str()) {
                return Err(at(format!("plugin name {:?} is used twice", p.name)));
            }
            p.check().map_err(at)?;
        }
        Ok(cfg)
    }

    /// The plugin chain, in order: the enabled `[[plugins]]`.
    pub fn plugins(&self) -> impl Iterator<Item = &PluginConfig> {
        self.plugins
            .iter()
            .map(toml::Spanned::get_ref)
            .filter(|p| p.enabled)
    }

    /// A path from the file, resolved against the file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// Overrides the host name put in events.
    pub hostname: Option<String>,
    /// Where compiled plugins are cached. Must be owned by the daemon's user
    /// and not writable by others, or the cache is not used.
    pub cache_dir: PathBuf,
    /// Seconds between counter log lines; 0 turns them off.
    pub stats_interval_secs: u64,
    /// Re-read pipeline.toml when it changes (plugin chain only).
    pub hot_reload: bool,
    /// Unix socket where `driftwatch stats` reads the live counters; `None`
    /// (`false` or `""` in the file) turns it off.
    #[serde(deserialize_with = "socket_path")]
    pub control_socket: Option<PathBuf>,
    /// After attaching, keep only the capabilities the running daemon needs
    /// (collector/src/privileges.rs) in every thread. `false` keeps all.
    pub drop_capabilities: bool,
    /// After SIGTERM or SIGINT: how long stopping the sources, draining the
    /// chain and flushing the outputs may take in all. What is spooled
    /// then stays on disk for the next start; what is still in memory is
    /// counted as lost (docs/service.md).
    pub shutdown_timeout_secs: u64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            hostname: None,
            cache_dir: PathBuf::from("/var/cache/driftwatch"),
            stats_interval_secs: 60,
            hot_reload: true,
            control_socket: Some(PathBuf::from("/run/driftwatch/control.sock")),
            drop_capabilities: true,
            shutdown_timeout_secs: 10,
        }
    }
}

impl Check for DaemonConfig {
    fn check(&self) -> Result<(), String> {
        in_range("stats_interval_secs", self.stats_interval_secs, 0..=86_400)?;
        in_range("shutdown_timeout_secs", self.shutdown_timeout_secs, 1..=600)
    }
}

impl DaemonConfig {
    pub fn shutdown_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_timeout_secs)
    }
}

/// A path, or `false` for none. An empty string also means none: it is
/// what turned the socket off before `false` did.
fn socket_path<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Option<PathBuf>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a socket path, or false")
        }
        fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Self::Value, E> {
            if b {
                Err(E::invalid_value(serde::de::Unexpected::Bool(b), &self))
            } else {
                Ok(None)
            }
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok((!s.is_empty()).then(|| PathBuf::from(s)))
        }
    }
    d.deserialize_any(V)
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourcesConfig {
    #[serde(deserialize_with = "checked")]
    pub ebpf: EbpfConfig,
    #[serde(deserialize_with = "checked")]
    pub scan: ScanConfig,
}

/// The periodic drift scan (`[sources.scan]`): diffs running containers
/// against their images and emits `file_drift` events for new differences.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanConfig {
    pub enabled: bool,
    /// Seconds between the starts of two scans.
    pub interval_secs: u64,
    /// Containers to scan, by name, full id or id prefix; empty: every
    /// running container.
    pub containers: Vec<String>,
    /// Also report the files the runtime creates in every container
    /// (docs/diff.md).
    pub include_runtime_files: bool,
    /// Threads per container diff.
    pub jobs: usize,
    /// podman's containers/storage root for the scan; default
    /// `[runtimes] podman_root` (this key predates that section).
    pub storage_root: Option<PathBuf>,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            enabled: true,
            // Scans cost in proportion to what changed, not to image size;
            // five minutes bounds how stale a finding can be.
            interval_secs: 300,
            containers: Vec::new(),
            include_runtime_files: false,
            jobs: 2,
            storage_root: None,
        }
    }
}

impl Check for ScanConfig {
    fn check(&self) -> Result<(), String> {
        in_range("interval_secs", self.interval_secs, 1..=86_400)?;
        in_range("jobs", self.jobs, 1..=16)?;
        if let Some(bad) = self.containers.iter().find(|c| c.trim().is_empty()) {
            return Err(format!("containers: {bad:?} is not a container name or id"));
        }
        if let Some(root) = &self.storage_root {
            absolute("storage_root", root)?;
        }
        Ok(())
    }
}

/// Which processes the kernel sensor reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    Containers,
    All,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EbpfConfig {
    pub enabled: bool,
    pub scope: Scope,
    /// Kernel ring buffer size in KiB (rounded up to a power of two pages),
    /// each of the two lanes. The default, 2 MiB, is the smallest that lost
    /// nothing under bench/rings.sh's worst case (docs/configuration.md).
    pub ring_buffer_kib: u32,
    /// How often the daemon drains the ring buffer on its own while records
    /// come; the kernel wakes it early when a quarter of the buffer is
    /// full, and an idle daemon for the first record. 0: the
    /// kernel wakes the daemon for every record (lowest latency, highest
    /// cost to the workload).
    pub drain_interval_ms: u64,
    /// File records one container (cgroup) may send per second; the rest
    /// is dropped in the kernel and counted per container (a finding says
    /// so). 0: no budget.
    pub container_events_per_sec: u64,
    /// File records a container may send at once after a quiet spell.
    pub container_burst: u64,
    /// Drop in the kernel the file records no plugin would be given (the
    /// plugins' manifest prefilters, where the kernel can evaluate them):
    /// they then cost no ring-buffer space.
    pub kernel_prefilter: bool,
    /// Repeats of the same write (the same container, process, file and
    /// operation) within this many milliseconds of the one sent are folded
    /// in the kernel into a count, reported as one event with
    /// `evt.count`, `evt.first_time` and `evt.last_time`. 0: every write
    /// is its own event.
    pub aggregate_window_ms: u64,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        EbpfConfig {
            enabled: true,
            scope: Scope::Containers,
            ring_buffer_kib: 2048,
            drain_interval_ms: 10,
            container_events_per_sec: 10_000,
            container_burst: 20_000,
            kernel_prefilter: true,
            aggregate_window_ms: 1000,
        }
    }
}

impl Check for EbpfConfig {
    fn check(&self) -> Result<(), String> {
        // One page to the 1 GiB the sensor's loader caps the ring at.
        in_range("ring_buffer_kib", self.ring_buffer_kib, 4..=1 << 20)?;
        in_range("drain_interval_ms", self.drain_interval_ms, 0..=10_000)?;
        // The kernel's refill arithmetic stays in 64 bits up to a million.
        in_range(
            "container_events_per_sec",
            self.container_events_per_sec,
            0..=1_000_000,
        )?;
        in_range("container_burst", self.container_burst, 1..=10_000_000)?;
        in_range("aggregate_window_ms", self.aggregate_window_ms, 0..=60_000)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Events per plugin call, at most.
    pub batch_size: usize,
    /// A partial batch leaves after this long.
    pub batch_timeout_ms: u64,
    /// Events buffered between the sources and the plugin chain. When full,
    /// sources wait (the kernel ring buffer then absorbs, and counts, the rest).
    pub queue_capacity: usize,
    /// An empty `[[plugins]]` chain detects nothing, so a reload to one is
    /// refused (an editor's truncate-then-write, a bad template) unless this
    /// says it is meant.
    pub allow_empty_chain: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_size: 512,
            batch_timeout_ms: 20,
            queue_capacity: 8192,
            allow_empty_chain: false,
        }
    }
}

impl Check for PipelineConfig {
    fn check(&self) -> Result<(), String> {
        in_range("batch_size", self.batch_size, 1..=65_536)?;
        in_range("batch_timeout_ms", self.batch_timeout_ms, 0..=60_000)?;
        // tokio's channel panics past about 2^61; a million events is
        // already far more memory than a burst should take.
        in_range("queue_capacity", self.queue_capacity, 1..=1 << 20)?;
        if self.queue_capacity < self.batch_size {
            return Err(format!(
                "queue_capacity ({}) must be at least batch_size ({})",
                self.queue_capacity, self.batch_size
            ));
        }
        Ok(())
    }
}

/// What happens to a batch when a plugin fails on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Fail open: the events continue as if the plugin were absent.
    #[default]
    Pass,
    /// Fail closed: the events end here (counted).
    Drop,
}

/// Where a plugin's code comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginSource<'a> {
    /// One of the plugins compiled into the binary, by name.
    Builtin(&'a str),
    /// A component file, relative to pipeline.toml's directory.
    Path(&'a Path),
}

/// One `[[plugins]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    pub name: String,
    /// Exactly one of `builtin` and `path` is set ([`PluginConfig::source`]).
    builtin: Option<String>,
    path: Option<PathBuf>,
    /// A disabled entry stays in the file but out of the chain.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default = "default_memory")]
    pub memory_limit_mib: u64,
    #[serde(default = "default_deadline")]
    pub deadline_ms: u64,
    #[serde(default = "default_max_output")]
    pub max_output_mib: u64,
    /// Consecutive failed batches before the plugin is quarantined.
    #[serde(default = "default_quarantine")]
    pub quarantine_after: u32,
    /// The plugin's own settings, handed to its `init`.
    #[serde(default)]
    pub config: toml::Table,
}

fn yes() -> bool {
    true
}
fn default_memory() -> u64 {
    Limits::DEFAULT_MEMORY_MIB
}
fn default_deadline() -> u64 {
    Limits::DEFAULT_DEADLINE_MS
}
fn default_max_output() -> u64 {
    Limits::DEFAULT_MAX_OUTPUT_MIB
}
fn default_quarantine() -> u32 {
    5
}

impl PluginConfig {
    pub fn source(&self) -> PluginSource<'_> {
        match (&self.builtin, &self.path) {
            (Some(b), _) => PluginSource::Builtin(b),
            (None, Some(p)) => PluginSource::Path(p),
            // Refused by `check`; a builtin without a name has no code.
            (None, None) => PluginSource::Builtin(""),
        }
    }

    /// The sandbox limits, in the units the host counts in.
    pub fn limits(&self) -> Limits {
        Limits::new(self.memory_limit_mib, self.deadline_ms, self.max_output_mib)
    }
}

impl Check for PluginConfig {
    fn check(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "plugin name {name:?} must be non-empty [A-Za-z0-9_-]"
            ));
        }
        match (&self.builtin, &self.path) {
            (Some(b), None) if !crate::plugin::builtin::NAMES.contains(&b.as_str()) => {
                return Err(format!(
                    "plugin {name:?}: unknown builtin {b:?} (built-ins: {})",
                    crate::plugin::builtin::NAMES.join(", ")
                ));
            }
            (Some(_), None) | (None, Some(_)) => {}
            (Some(_), Some(_)) => {
                return Err(format!(
                    "plugin {name:?}: set `builtin` or `path`, not both"
                ));
            }
            (None, None) => return Err(format!("plugin {name:?}: set `builtin` or `path`")),
        }
        let knob = |key, value, range| {
            in_range(key, value, range).map_err(|m| format!("plugin {name:?}: {m}"))
        };
        knob("memory_limit_mib", self.memory_limit_mib, 1..=4096)?;
        knob("deadline_ms", self.deadline_ms, 1..=60_000)?;
        // The output cap is counted in bytes in a usize; past 1 GiB a
        // verdict payload is no longer a verdict.
        knob("max_output_mib", self.max_output_mib, 1..=1024)?;
        if self.quarantine_after == 0 {
            return Err(format!(
                "plugin {name:?}: quarantine_after must be at least 1"
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputsConfig {
    pub stdout: StdoutConfig,
    #[serde(deserialize_with = "checked")]
    pub otlp: OtlpConfig,
    #[serde(deserialize_with = "checked")]
    pub http: HttpConfig,
}

impl Check for OutputsConfig {
    fn check(&self) -> Result<(), String> {
        // Both paths resolve against the same directory, so comparing them
        // as written (component by component) finds the same spool; a
        // symlinked alias is caught at start by the spool's lock.
        let same = |a: &Path, b: &Path| a.components().eq(b.components());
        if self.http.enabled && same(&self.http.spool_dir, &self.otlp.spool.dir) {
            return Err(format!(
                "[outputs.http] spool_dir {} is [outputs.otlp.spool] dir: each output needs a spool of its own",
                self.http.spool_dir.display()
            ));
        }
        Ok(())
    }
}

/// `[outputs.http]`: every finding POSTed to `url` as Falco's
/// `http_output` sends it (falcosidekick's root endpoint takes it as is),
/// through a spool of its own.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub enabled: bool,
    /// `http://` or `https://` URL; required when enabled.
    pub url: Option<String>,
    /// Extra request headers, e.g. `Authorization`.
    pub headers: BTreeMap<String, String>,
    /// Per-request timeout, connection included.
    pub timeout_ms: u64,
    /// Retries of a failed POST: exponential backoff with jitter between
    /// these bounds, for as long as the receiver stays down.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// The spool in front of the receiver; never the OTLP one.
    pub spool_dir: PathBuf,
    /// When the spool holds this many KiB, new findings are refused (and counted).
    pub spool_max_kib: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: false,
            url: None,
            headers: BTreeMap::new(),
            timeout_ms: 5_000,
            retry_initial_ms: 500,
            retry_max_ms: 30_000,
            spool_dir: PathBuf::from("/var/lib/driftwatch/http-spool"),
            spool_max_kib: 64 * 1024,
        }
    }
}

/// Headers the client sets itself: overriding them would send a request
/// that does not describe its body.
const HTTP_OWN_HEADERS: [&str; 4] = ["content-length", "host", "transfer-encoding", "connection"];

impl Check for HttpConfig {
    fn check(&self) -> Result<(), String> {
        in_range("timeout_ms", self.timeout_ms, 1..=600_000)?;
        in_range("retry_initial_ms", self.retry_initial_ms, 10..=3_600_000)?;
        in_range(
            "retry_max_ms",
            self.retry_max_ms,
            self.retry_initial_ms..=3_600_000,
        )?;
        in_range("spool_max_kib", self.spool_max_kib, 1..=1 << 30)?;
        for (name, value) in &self.headers {
            let header = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("header name {name:?} is not a valid HTTP header name"))?;
            if HTTP_OWN_HEADERS.contains(&header.as_str()) {
                return Err(format!(
                    "header {name:?} is set by the client from the request itself"
                ));
            }
            http::HeaderValue::from_str(value).map_err(|_| {
                format!("header {name:?} has a value that cannot be sent (control characters or non-ASCII)")
            })?;
        }
        match &self.url {
            None if self.enabled => Err("url is required when [outputs.http] is enabled".into()),
            None => Ok(()),
            Some(url) => check_http_url(url),
        }
    }
}

fn check_http_url(url: &str) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| format!("url {url:?} is not a valid URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "url {url:?} must start with http:// or https://, not {}://",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("url {url:?} names no host"));
    }
    Ok(())
}

/// `[metrics]`: the Prometheus text endpoint (`/metrics`) and the liveness
/// probe (`/healthz`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsEndpointConfig {
    /// `host:port` to listen on; `false` turns the endpoint off. Loopback
    /// by default: the counters name rules and plugins.
    #[serde(deserialize_with = "listen_addr")]
    pub listen: Option<std::net::SocketAddr>,
}

impl Default for MetricsEndpointConfig {
    fn default() -> Self {
        MetricsEndpointConfig {
            listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9877))),
        }
    }
}

/// An `ip:port`, or `false` for none.
fn listen_addr<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    struct V;
    impl serde::de::Visitor<'_> for V {
        type Value = Option<std::net::SocketAddr>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an address such as \"127.0.0.1:9877\", or false")
        }
        fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Self::Value, E> {
            if b {
                Err(E::invalid_value(serde::de::Unexpected::Bool(b), &self))
            } else {
                Ok(None)
            }
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
            s.parse()
                .map(Some)
                .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(s), &self))
        }
    }
    d.deserialize_any(V)
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StdoutConfig {
    /// `"auto"` (default): on unless OTLP export is on.
    pub enabled: Switch,
    /// Also print every event that passed the chain (schema JSON lines).
    pub events: bool,
}

/// The OTLP transports driftwatch speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// As `OTEL_EXPORTER_OTLP_PROTOCOL` spells it.
impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Protocol, String> {
        match s {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => {
                Err("http/json is not supported; use \"grpc\" or \"http/protobuf\"".into())
            }
            other => Err(format!(
                "unknown protocol {other:?}; use \"grpc\" or \"http/protobuf\""
            )),
        }
    }
}

/// Request compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    Gzip,
    None,
}

/// As `OTEL_EXPORTER_OTLP_COMPRESSION` spells it.
impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Compression, String> {
        match s {
            "gzip" => Ok(Compression::Gzip),
            "none" => Ok(Compression::None),
            other => Err(format!(
                "unknown compression {other:?}; use \"gzip\" or \"none\""
            )),
        }
    }
}

/// `[outputs.otlp]`. Unset keys fall back to the standard
/// `OTEL_EXPORTER_OTLP_LOGS_*` then `OTEL_EXPORTER_OTLP_*` variables, then
/// to the OTLP defaults (see `sink::otlp::settings`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// `"auto"` (default): on when an endpoint is set here or in the environment.
    pub enabled: Switch,
    /// Base URL of the receiver (`http://host:4317` for gRPC,
    /// `http://host:4318` for HTTP, where `/v1/logs` is appended).
    pub endpoint: Option<String>,
    pub protocol: Option<Protocol>,
    pub compression: Option<Compression>,
    /// Per-request timeout.
    pub timeout_ms: Option<u64>,
    /// Extra request headers (gRPC metadata), e.g. for authentication.
    pub headers: BTreeMap<String, String>,
    pub tls: OtlpTlsConfig,
    /// Also export every event that passed the chain, not only findings.
    pub events: bool,
    /// Most records in one export request. Twice the OTel SDK's 512: what
    /// each request costs beyond its records (the cursor updates, HTTP/2
    /// framing, the receiver's acknowledgement) is paid half as often, and
    /// `batch_max_kib` still bounds the request.
    pub batch_size: usize,
    /// Most spooled bytes in one export request (at least one record goes
    /// in each). Receivers cap request size (4 MiB by default for gRPC):
    /// large records must not make a batch no receiver accepts.
    pub batch_max_kib: u64,
    /// How long a record may wait for its batch to fill.
    pub batch_timeout_ms: u64,
    /// Retries after a failed export: exponential backoff with jitter
    /// between these bounds, for as long as the backend stays down.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// At shutdown, how long to keep exporting before leaving the rest in
    /// the spool for the next start.
    pub shutdown_timeout_ms: u64,
    #[serde(deserialize_with = "checked")]
    pub spool: SpoolConfig,
    #[serde(deserialize_with = "checked")]
    pub metrics: MetricsConfig,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            enabled: Switch::Auto,
            endpoint: None,
            protocol: None,
            compression: None,
            timeout_ms: None,
            headers: Default::default(),
            tls: OtlpTlsConfig::default(),
            events: false,
            batch_size: 1024,
            batch_max_kib: 1024,
            batch_timeout_ms: 100,
            retry_initial_ms: 500,
            retry_max_ms: 30_000,
            shutdown_timeout_ms: 5_000,
            spool: SpoolConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// The longest per-request timeout, from here or `OTEL_EXPORTER_OTLP_*TIMEOUT`.
pub const OTLP_TIMEOUT_MS: RangeInclusive<u64> = 1..=600_000;

impl Check for OtlpConfig {
    fn check(&self) -> Result<(), String> {
        if let Some(ms) = self.timeout_ms {
            in_range("timeout_ms", ms, OTLP_TIMEOUT_MS)?;
        }
        in_range("batch_size", self.batch_size, 1..=65_536)?;
        // 64 MiB: the largest request body the OTLP/HTTP exporter sends.
        in_range("batch_max_kib", self.batch_max_kib, 1..=65_536)?;
        in_range("batch_timeout_ms", self.batch_timeout_ms, 0..=60_000)?;
        in_range("retry_initial_ms", self.retry_initial_ms, 10..=3_600_000)?;
        in_range(
            "retry_max_ms",
            self.retry_max_ms,
            self.retry_initial_ms..=3_600_000,
        )?;
        in_range("shutdown_timeout_ms", self.shutdown_timeout_ms, 0..=600_000)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpTlsConfig {
    /// PEM CA bundle to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// The on-disk queue in front of the exporter.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// When the spool holds this many KiB, new records are refused (and counted).
    pub max_kib: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: PathBuf::from("/var/lib/driftwatch/spool"),
            max_kib: 256 * 1024,
        }
    }
}

impl SpoolConfig {
    pub fn max_bytes(&self) -> u64 {
        self.max_kib.saturating_mul(1024)
    }
}

impl Check for SpoolConfig {
    fn check(&self) -> Result<(), String> {
        // Up to 1 TiB.
        in_range("max_kib", self.max_kib, 1..=1 << 30)
    }
}

/// The daemon's own counters as OTLP metrics, to the same receiver.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub interval_secs: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            interval_secs: 30,
        }
    }
}

impl Check for MetricsConfig {
    fn check(&self) -> Result<(), String> {
        in_range("interval_secs", self.interval_secs, 1..=86_400)
    }
}

/// `true`, `false` or `"auto"`: a feature that turns itself on when what
/// it needs is there (a cluster, an OTLP endpoint), so the same file works
/// on a laptop and in a DaemonSet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Switch {
    #[default]
    Auto,
    /// Required: starting fails when what it needs is missing.
    On,
    Off,
}

impl<'de> Deserialize<'de> for Switch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Switch;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or \"auto\"")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Switch, E> {
                Ok(if b { Switch::On } else { Switch::Off })
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Switch, E> {
                match s {
                    "auto" => Ok(Switch::Auto),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct K8sConfig {
    /// `true`, `false` or `"auto"` (the default).
    pub enabled: Switch,
    /// Whose pods to watch; default: the `NODE_NAME` environment variable.
    pub node_name: Option<String>,
    /// A kubeconfig to use instead of the in-cluster service account /
    /// `KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
}

/// `[enrich]`: facts the collector adds to events from user space.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnrichConfig {
    /// Programs (`proc.program` names; a trailing `*` matches any suffix)
    /// whose script argument is judged against the image, for
    /// `process.program_file` with `via = "interpreter"`.
    pub interpreters: Vec<String>,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            interpreters: crate::enrich::program_file::INTERPRETERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// `[runtimes]`: where each container runtime is asked about its
/// containers. A runtime that is not there costs nothing (docs/runtimes.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimesConfig {
    /// containerd's gRPC API socket.
    pub containerd_socket: PathBuf,
    /// Docker's Engine API socket.
    pub docker_socket: PathBuf,
    /// CRI-O's socket (its inspect endpoint).
    pub crio_socket: PathBuf,
    /// podman's containers/storage root (its state on disk).
    pub podman_root: PathBuf,
}

impl Default for RuntimesConfig {
    fn default() -> Self {
        let e = crate::container::Endpoints::default();
        RuntimesConfig {
            containerd_socket: e.containerd,
            docker_socket: e.docker,
            crio_socket: e.crio,
            podman_root: e.podman_root,
        }
    }
}

impl RuntimesConfig {
    /// The endpoints, for [`crate::container::Runtimes::new`].
    pub fn endpoints(&self) -> crate::container::Endpoints {
        crate::container::Endpoints {
            containerd: self.containerd_socket.clone(),
            crio: self.crio_socket.clone(),
            docker: self.docker_socket.clone(),
            podman_root: self.podman_root.clone(),
        }
    }
}

impl Check for RuntimesConfig {
    fn check(&self) -> Result<(), String> {
        absolute("containerd_socket", &self.containerd_socket)?;
        absolute("docker_socket", &self.docker_socket)?;
        absolute("crio_socket", &self.crio_socket)?;
        absolute("podman_root", &self.podman_root)
    }
}

/// What `[enforcement]` does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnforcementMode {
    /// Judge every exec, kill none: findings say `action=would_kill`.
    #[default]
    Detect,
    /// Kill drift in the kernel at exec.
    Enforce,
}

/// `[enforcement]`: which execs the kernel kills (docs/enforcement.md).
/// Applied on every reload by rewriting the policy maps, no restart.
///
/// Scope lists: empty means no restriction on that dimension; every
/// non-empty one must match. Names and images match exactly (an image by
/// its repository, without tag). Path lists hold absolute paths matched
/// exactly; an entry ending in `/` matches the files directly in that
/// directory (not below it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EnforcementConfig {
    pub mode: EnforcementMode,
    /// Container names in scope.
    pub containers: Vec<String>,
    /// Image repositories in scope.
    pub images: Vec<String>,
    /// Kubernetes namespaces in scope.
    pub namespaces: Vec<String>,
    /// Pod labels that must all match.
    pub labels: BTreeMap<String, String>,
    /// Drifted executables allowed to run anyway (still reported).
    pub allow_paths: Vec<String>,
    /// Parent executables whose drifted children may run (still reported).
    pub allow_parents: Vec<String>,
    /// Executables killed even when they come from the image.
    pub deny_binaries: Vec<String>,
    /// Also kill the container's init (its first process) when it is
    /// drift. Off: killing it stops the container.
    pub kill_init: bool,
}

impl EnforcementConfig {
    /// Whether any scope list is set: then only containers userspace has
    /// classified as in scope are judged.
    pub fn scoped(&self) -> bool {
        !(self.containers.is_empty()
            && self.images.is_empty()
            && self.namespaces.is_empty()
            && self.labels.is_empty())
    }
}

impl Check for EnforcementConfig {
    fn check(&self) -> Result<(), String> {
        for (key, list) in [
            ("allow_paths", &self.allow_paths),
            ("allow_parents", &self.allow_parents),
            ("deny_binaries", &self.deny_binaries),
        ] {
            for p in list {
                if !p.starts_with('/') {
                    return Err(format!("{key}: {p:?} must be an absolute path"));
                }
                if p.split('/').any(|c| c == "." || c == "..") {
                    return Err(format!(
                        "{key}: {p:?}: `.` and `..` are not resolved; write the path as the kernel sees it"
                    ));
                }
                // Its walk is one byte per `/` shorter, plus the last NUL.
                if p.trim_end_matches('/').len() > driftwatch_common::PATH_MAX_HASHED {
                    return Err(format!(
                        "{key}: {p:?} is longer than the {} bytes the kernel compares",
                        driftwatch_common::PATH_MAX_HASHED
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `key`'s path must be absolute: the daemon's working directory is no
/// place to look for a runtime.
fn absolute(key: &str, p: &Path) -> Result<(), String> {
    if p.is_absolute() {
        Ok(())
    } else {
        Err(format!("{key} {p:?} must be an absolute path"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_shipped_pipeline_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipeline.toml");
        let cfg = Config::load(&path).unwrap();
        let listed = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter(|l| l.trim() == "[[plugins]]")
            .count();
        assert_eq!(cfg.plugins().count(), listed);
        assert_eq!(
            listed,
            crate::plugin::builtin::NAMES.len(),
            "every built-in is shipped on"
        );
        assert!(cfg.sources.scan.enabled);
        assert!(
            cfg.plugins()
                .all(|p| matches!(p.source(), PluginSource::Builtin(_)))
        );
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let e = err("[pipeline]\nbatch_size = 10\nbatchsize = 3\n");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("column 1"), "{e}");
        assert!(e.contains("unknown field `batchsize`"), "{e}");
    }

    #[test]
    fn wrong_type_names_line() {
        let e = err("[pipeline]\nbatch_size = \"many\"\n");
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("invalid type"), "{e}");
    }

    #[test]
    fn semantic_errors_point_at_their_table() {
        let e = err(
            "[[plugins]]\nname = \"a\"\nbuiltin = \"shell\"\n\n[[plugins]]\nname = \"b\"\nbuiltin = \"nope\"\n",
        );
        assert!(e.contains("unknown builtin \"nope\""), "{e}");
        assert!(e.contains("line 5"), "{e}");
        let e = err("[[plugins]]\nname = \"a\"\n");
        assert!(e.contains("set `builtin` or `path`"), "{e}");
        let e = err("[[plugins]]\nname = \"a\"\nbuiltin = \"shell\"\ndeadline_ms = 0\n");
        assert!(e.contains("deadline_ms"), "{e}");
        let e = err(
            "[[plugins]]\nname = \"a\"\nbuiltin = \"shell\"\n[[plugins]]\nname = \"a\"\nbuiltin = \"shell\"\n",
        );
        assert!(e.contains("used twice"), "{e}");
        let e = err("[pipeline]\nbatch_size = 0\n");
        assert!(e.contains("batch_size must be"), "{e}");
        let e = err("[outputs.stdout]\nenabled = true\nformat = \"xml\"\n");
        assert!(e.contains("unknown field `format`"), "{e}");
    }

    #[test]
    fn scan_table_is_validated_with_locations() {
        let c =
            Config::parse("[sources.scan]\ninterval_secs = 5\ncontainers = [\"web\"]\n").unwrap();
        assert_eq!(c.sources.scan.interval_secs, 5);
        assert_eq!(c.sources.scan.containers, vec!["web".to_string()]);
        assert!(c.sources.scan.enabled);
        let e = err("[sources.scan]\nenabled = true\ninterval = 5\n");
        assert!(e.contains("unknown field `interval`"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        let e = err("[sources.ebpf]\nenabled = true\n\n[sources.scan]\ninterval_secs = 0\n");
        assert!(
            e.contains("interval_secs must be between 1 and 86400"),
            "{e}"
        );
        assert!(e.contains("line 4"), "{e}");
        let e = err("[sources.scan]\njobs = 0\n");
        assert!(e.contains("jobs must be"), "{e}");
        let e = err("[sources.scan]\nstorage_root = \"rel\"\n");
        assert!(e.contains("absolute"), "{e}");
    }

    #[test]
    fn runtimes_table() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.runtimes.docker_socket, Path::new("/var/run/docker.sock"));
        let c = Config::parse(
            "[runtimes]\ncontainerd_socket = \"/run/k3s/containerd/containerd.sock\"\n",
        )
        .unwrap();
        assert_eq!(
            c.runtimes.endpoints().containerd,
            Path::new("/run/k3s/containerd/containerd.sock")
        );
        let e = err("[runtimes]\ndocker_socket = \"docker.sock\"\n");
        assert!(e.contains("docker_socket") && e.contains("absolute"), "{e}");
        assert!(e.contains("line 1"), "{e}");
        let e = err("[runtimes]\nkubelet = \"/x\"\n");
        assert!(e.contains("unknown field `kubelet`"), "{e}");
    }

    #[test]
    fn k8s_table() {
        let c = Config::parse("[k8s]\nenabled = \"auto\"\nnode_name = \"n1\"\n").unwrap();
        assert_eq!(c.k8s.enabled, Switch::Auto);
        assert_eq!(c.k8s.node_name.as_deref(), Some("n1"));
        assert_eq!(
            Config::parse("[k8s]\nenabled = false\n")
                .unwrap()
                .k8s
                .enabled,
            Switch::Off
        );
        assert_eq!(Config::parse("").unwrap().k8s.enabled, Switch::Auto);
        let e = err("[k8s]\nenabled = \"yes\"\n");
        assert!(e.contains("line 2") && e.contains("\"auto\""), "{e}");
        let e = err("[k8s]\nnodename = \"x\"\n");
        assert!(
            e.contains("line 2") && e.contains("unknown field `nodename`"),
            "{e}"
        );
    }

    #[test]
    fn disabled_plugins_are_left_out_and_syntax_errors_are_located() {
        let c = Config::parse("[[plugins]]\nname = \"a\"\nbuiltin = \"shell\"\nenabled = false\n")
            .unwrap();
        assert!(c.plugins().next().is_none());
        let e = err("[pipeline\n");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn every_default_passes_its_own_checks() {
        let d = Config::default();
        d.daemon.check().unwrap();
        d.sources.ebpf.check().unwrap();
        d.sources.scan.check().unwrap();
        d.pipeline.check().unwrap();
        d.outputs.otlp.check().unwrap();
        d.outputs.otlp.spool.check().unwrap();
        d.outputs.otlp.metrics.check().unwrap();
        d.outputs.http.check().unwrap();
        d.outputs.check().unwrap();
        let p = Config::parse("[[plugins]]\nname = \"a\"\nbuiltin = \"shell\"\n").unwrap();
        let p = p.plugins().next().unwrap();
        assert_eq!(p.limits().memory_bytes, 64 << 20);
        assert_eq!(p.limits().max_output_bytes, 16 << 20);
        assert_eq!(p.limits().deadline, std::time::Duration::from_millis(50));
    }

    /// Each knob past what the code can honour: a clean error naming the
    /// key and its range, at the line of its table.
    #[test]
    fn numeric_knobs_are_range_checked_with_locations() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "[pipeline]",
                "queue_capacity = 4611686018427387904",
                "queue_capacity must be between 1 and 1048576",
            ),
            (
                "[pipeline]",
                "batch_timeout_ms = 9223372036854775807",
                "batch_timeout_ms must be between 0 and 60000",
            ),
            (
                "[daemon]",
                "stats_interval_secs = 9223372036854775807",
                "stats_interval_secs must be between 0 and 86400",
            ),
            (
                "[sources.ebpf]",
                "ring_buffer_kib = 4294967295",
                "ring_buffer_kib must be between 4 and 1048576",
            ),
            (
                "[sources.ebpf]",
                "drain_interval_ms = 100000",
                "drain_interval_ms must be between 0 and 10000",
            ),
            (
                "[outputs.otlp]",
                "batch_size = 0",
                "batch_size must be between 1 and 65536",
            ),
            (
                "[outputs.otlp]",
                "batch_max_kib = 18014398509481984",
                "batch_max_kib must be between 1 and 65536",
            ),
            (
                "[outputs.otlp]",
                "timeout_ms = 0",
                "timeout_ms must be between 1 and 600000",
            ),
            (
                "[outputs.otlp]",
                "retry_initial_ms = 1",
                "retry_initial_ms must be between 10 and 3600000",
            ),
            (
                "[outputs.otlp]",
                "retry_max_ms = 100",
                "retry_max_ms must be between 500 and 3600000",
            ),
            (
                "[outputs.otlp]",
                "shutdown_timeout_ms = 9223372036854775807",
                "shutdown_timeout_ms must be between 0 and 600000",
            ),
            (
                "[outputs.otlp.spool]",
                "max_kib = 18014398509481984",
                "max_kib must be between 1 and 1073741824",
            ),
            (
                "[outputs.otlp.metrics]",
                "interval_secs = 0",
                "interval_secs must be between 1 and 86400",
            ),
        ];
        for (table, line, want) in cases {
            let e = err(&format!("[k8s]\nenabled = false\n\n{table}\n{line}\n"));
            assert!(e.contains(want), "{line}: {e}");
            assert!(e.contains("line 4, column 1"), "{line}: {e}");
        }
    }

    #[test]
    fn plugin_limits_are_range_checked_at_their_entry() {
        let entry = |knob: &str| {
            err(&format!(
                "[[plugins]]\nname = \"a\"\nbuiltin = \"shell\"\n\n\
                 [[plugins]]\nname = \"b\"\nbuiltin = \"shell\"\n{knob}\n"
            ))
        };
        // `<< 20` of this wrapped to 0 and switched the output cap off.
        let e = entry("max_output_mib = 17592186044416");
        assert!(
            e.contains("plugin \"b\": max_output_mib must be between 1 and 1024"),
            "{e}"
        );
        assert!(e.contains("line 5, column 1"), "{e}");
        let e = entry("memory_limit_mib = 4097");
        assert!(
            e.contains("memory_limit_mib must be between 1 and 4096"),
            "{e}"
        );
        let e = entry("deadline_ms = 60001");
        assert!(e.contains("deadline_ms must be between 1 and 60000"), "{e}");
        let e = entry("quarantine_after = 0");
        assert!(e.contains("quarantine_after must be at least 1"), "{e}");
    }

    #[test]
    fn closed_sets_are_enums() {
        let c =
            Config::parse("[outputs.otlp]\nprotocol = \"grpc\"\ncompression = \"none\"\n").unwrap();
        assert_eq!(c.outputs.otlp.protocol, Some(Protocol::Grpc));
        assert_eq!(c.outputs.otlp.compression, Some(Compression::None));
        let e = err("[outputs.otlp]\nprotocol = \"http/json\"\n");
        assert!(
            e.contains("line 2") && e.contains("unknown variant `http/json`"),
            "{e}"
        );
        let e = err("[outputs.otlp]\ncompression = \"zstd\"\n");
        assert!(
            e.contains("line 2") && e.contains("unknown variant `zstd`"),
            "{e}"
        );
        let e = err("[sources.ebpf]\nscope = \"host\"\n");
        assert!(
            e.contains("line 2") && e.contains("unknown variant `host`"),
            "{e}"
        );
    }

    #[test]
    fn the_control_socket_is_a_path_or_off() {
        let socket = |text: &str| Config::parse(text).unwrap().daemon.control_socket;
        assert_eq!(
            socket(""),
            Some(PathBuf::from("/run/driftwatch/control.sock"))
        );
        assert_eq!(
            socket("[daemon]\ncontrol_socket = \"/tmp/c.sock\"\n"),
            Some(PathBuf::from("/tmp/c.sock"))
        );
        assert_eq!(socket("[daemon]\ncontrol_socket = false\n"), None);
        assert_eq!(socket("[daemon]\ncontrol_socket = \"\"\n"), None);
        let e = err("[daemon]\ncontrol_socket = true\n");
        assert!(
            e.contains("line 2") && e.contains("a socket path, or false"),
            "{e}"
        );
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pipeline.toml");
        std::fs::write(&p, "[daemon]\nhostnam = \"x\"\n").unwrap();
        let e = Config::load(&p).unwrap_err().to_string();
        assert!(e.starts_with(&p.display().to_string()), "{e}");
        let e = Config::load(&dir.path().join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
    }
}
