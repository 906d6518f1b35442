//! pipeline.toml: parsed once into typed structs.
//!
//! Every section denies unknown keys, and semantic checks run inside
//! deserialization (`try_from`), so every error, typo or bad value alike,
//! carries the file, line and column.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default)]
    pub sources: SourcesConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// The plugin chain, in order (enabled plugins only).
    #[serde(skip)]
    pub plugins: Vec<PluginConfig>,
    /// `[[plugins]]` as written, checked in [`Config::parse`] where the
    /// spans can be turned into line and column.
    #[serde(default, rename = "plugins")]
    raw_plugins: Vec<toml::Spanned<RawPlugin>>,
    #[serde(default)]
    pub outputs: OutputsConfig,
    /// Kubernetes pod enrichment.
    #[serde(default)]
    pub k8s: K8sConfig,
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
            ("pipeline", self.pipeline != running.pipeline),
            ("outputs", self.outputs != running.outputs),
            ("k8s", self.k8s != running.k8s),
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
        let mut cfg: Config = toml::from_str(text).map_err(|e| ParseError::Toml(Box::new(e)))?;
        let mut seen = BTreeSet::new();
        for raw in std::mem::take(&mut cfg.raw_plugins) {
            let start = raw.span().start;
            let raw = raw.into_inner();
            if !seen.insert(raw.name.clone()) {
                return Err(ParseError::at(
                    text,
                    start,
                    format!("plugin name {:?} is used twice", raw.name),
                ));
            }
            if let Some(p) = plugin(raw).map_err(|m| ParseError::at(text, start, m))? {
                cfg.plugins.push(p);
            }
        }
        Ok(cfg)
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
    /// Unix socket where `driftwatch stats` reads the live counters; empty
    /// turns it off.
    pub control_socket: PathBuf,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            hostname: None,
            cache_dir: PathBuf::from("/var/cache/driftwatch"),
            stats_interval_secs: 60,
            hot_reload: true,
            control_socket: PathBuf::from("/run/driftwatch/control.sock"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourcesConfig {
    pub ebpf: EbpfConfig,
    pub scan: ScanConfig,
}

/// The periodic drift scan (`[sources.scan]`): diffs running containers
/// against their images and emits `file_drift` events for new differences.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, try_from = "RawScan")]
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
    /// containers/storage root, for container names and images.
    pub storage_root: PathBuf,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawScan {
    enabled: bool,
    interval_secs: u64,
    containers: Vec<String>,
    include_runtime_files: bool,
    jobs: usize,
    storage_root: PathBuf,
}

impl Default for RawScan {
    fn default() -> Self {
        let d = ScanConfig::default();
        RawScan {
            enabled: d.enabled,
            interval_secs: d.interval_secs,
            containers: d.containers,
            include_runtime_files: d.include_runtime_files,
            jobs: d.jobs,
            storage_root: d.storage_root,
        }
    }
}

impl TryFrom<RawScan> for ScanConfig {
    type Error = String;
    fn try_from(r: RawScan) -> Result<Self, String> {
        if !(1..=86_400).contains(&r.interval_secs) {
            return Err(format!(
                "interval_secs must be between 1 and 86400, not {}",
                r.interval_secs
            ));
        }
        if !(1..=16).contains(&r.jobs) {
            return Err(format!("jobs must be between 1 and 16, not {}", r.jobs));
        }
        if let Some(bad) = r.containers.iter().find(|c| c.trim().is_empty()) {
            return Err(format!("containers: {bad:?} is not a container name or id"));
        }
        if !r.storage_root.is_absolute() {
            return Err(format!(
                "storage_root {:?} must be an absolute path",
                r.storage_root
            ));
        }
        Ok(ScanConfig {
            enabled: r.enabled,
            interval_secs: r.interval_secs,
            containers: r.containers,
            include_runtime_files: r.include_runtime_files,
            jobs: r.jobs,
            storage_root: r.storage_root,
        })
    }
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
            storage_root: PathBuf::from(crate::fsdiff::resolve::DEFAULT_STORAGE_ROOT),
        }
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
    /// Kernel ring buffer size in KiB (rounded up to a power of two pages).
    pub ring_buffer_kib: u32,
    /// How often the daemon drains the ring buffer on its own; the kernel
    /// wakes it early only when a quarter of the buffer is full. 0: the
    /// kernel wakes the daemon for every record (lowest latency, highest
    /// cost to the workload).
    pub drain_interval_ms: u64,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        EbpfConfig {
            enabled: true,
            scope: Scope::Containers,
            ring_buffer_kib: 8192,
            drain_interval_ms: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, try_from = "RawPipeline")]
pub struct PipelineConfig {
    /// Events per plugin call, at most.
    pub batch_size: usize,
    /// A partial batch leaves after this long.
    pub batch_timeout_ms: u64,
    /// Events buffered between the sources and the plugin chain. When full,
    /// sources wait (the kernel ring buffer then absorbs, and counts, the rest).
    pub queue_capacity: usize,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawPipeline {
    batch_size: usize,
    batch_timeout_ms: u64,
    queue_capacity: usize,
}

impl Default for RawPipeline {
    fn default() -> Self {
        let d = PipelineConfig::default();
        RawPipeline {
            batch_size: d.batch_size,
            batch_timeout_ms: d.batch_timeout_ms,
            queue_capacity: d.queue_capacity,
        }
    }
}

impl TryFrom<RawPipeline> for PipelineConfig {
    type Error = String;
    fn try_from(r: RawPipeline) -> Result<Self, String> {
        if r.batch_size == 0 || r.batch_size > 65536 {
            return Err(format!(
                "batch_size must be between 1 and 65536, not {}",
                r.batch_size
            ));
        }
        if r.queue_capacity < r.batch_size {
            return Err(format!(
                "queue_capacity ({}) must be at least batch_size ({})",
                r.queue_capacity, r.batch_size
            ));
        }
        Ok(PipelineConfig {
            batch_size: r.batch_size,
            batch_timeout_ms: r.batch_timeout_ms,
            queue_capacity: r.queue_capacity,
        })
    }
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_size: 512,
            batch_timeout_ms: 20,
            queue_capacity: 65536,
        }
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// One of the plugins compiled into the binary, by name.
    Builtin(String),
    /// A component file, relative to pipeline.toml's directory.
    Path(PathBuf),
}

#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub name: String,
    pub source: PluginSource,
    pub on_error: OnError,
    pub memory_limit_mib: u64,
    pub deadline_ms: u64,
    pub max_output_mib: u64,
    /// Consecutive failed batches before the plugin is quarantined.
    pub quarantine_after: u32,
    /// The plugin's own settings, handed to its `init`.
    pub config: toml::Table,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugin {
    name: String,
    builtin: Option<String>,
    path: Option<PathBuf>,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    on_error: OnError,
    #[serde(default = "default_memory")]
    memory_limit_mib: u64,
    #[serde(default = "default_deadline")]
    deadline_ms: u64,
    #[serde(default = "default_max_output")]
    max_output_mib: u64,
    #[serde(default = "default_quarantine")]
    quarantine_after: u32,
    #[serde(default)]
    config: toml::Table,
}

fn yes() -> bool {
    true
}
fn default_memory() -> u64 {
    64
}
fn default_deadline() -> u64 {
    50
}
fn default_max_output() -> u64 {
    16
}
fn default_quarantine() -> u32 {
    5
}

/// Parses one `[[plugins]]` entry; `None` when it is disabled.
fn plugin(r: RawPlugin) -> Result<Option<PluginConfig>, String> {
    if r.name.is_empty()
        || !r
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "plugin name {:?} must be non-empty [A-Za-z0-9_-]",
            r.name
        ));
    }
    let source = match (r.builtin, r.path) {
        (Some(b), None) => {
            if !crate::plugin::builtin::NAMES.contains(&b.as_str()) {
                return Err(format!(
                    "plugin {:?}: unknown builtin {b:?} (built-ins: {})",
                    r.name,
                    crate::plugin::builtin::NAMES.join(", ")
                ));
            }
            PluginSource::Builtin(b)
        }
        (None, Some(p)) => PluginSource::Path(p),
        (Some(_), Some(_)) => {
            return Err(format!(
                "plugin {:?}: set `builtin` or `path`, not both",
                r.name
            ));
        }
        (None, None) => return Err(format!("plugin {:?}: set `builtin` or `path`", r.name)),
    };
    if !(1..=4096).contains(&r.memory_limit_mib) {
        return Err(format!(
            "plugin {:?}: memory_limit_mib must be 1..=4096",
            r.name
        ));
    }
    if !(1..=60_000).contains(&r.deadline_ms) {
        return Err(format!(
            "plugin {:?}: deadline_ms must be 1..=60000",
            r.name
        ));
    }
    if r.max_output_mib == 0 || r.quarantine_after == 0 {
        return Err(format!(
            "plugin {:?}: max_output_mib and quarantine_after must be > 0",
            r.name
        ));
    }
    Ok(r.enabled.then_some(PluginConfig {
        name: r.name,
        source,
        on_error: r.on_error,
        memory_limit_mib: r.memory_limit_mib,
        deadline_ms: r.deadline_ms,
        max_output_mib: r.max_output_mib,
        quarantine_after: r.quarantine_after,
        config: r.config,
    }))
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputsConfig {
    pub stdout: StdoutConfig,
    pub otlp: OtlpConfig,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StdoutConfig {
    /// `"auto"` (default): on unless OTLP export is on.
    pub enabled: Switch,
    /// Also print every event that passed the chain (schema JSON lines).
    pub events: bool,
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
    /// `"grpc"` or `"http/protobuf"`.
    pub protocol: Option<String>,
    /// `"gzip"` or `"none"`.
    pub compression: Option<String>,
    /// Per-request timeout.
    pub timeout_ms: Option<u64>,
    /// Extra request headers (gRPC metadata), e.g. for authentication.
    pub headers: std::collections::BTreeMap<String, String>,
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
    pub spool: SpoolConfig,
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
        assert_eq!(cfg.plugins.len(), 5);
        assert!(cfg.sources.scan.enabled);
        assert!(
            cfg.plugins
                .iter()
                .all(|p| matches!(p.source, PluginSource::Builtin(_)))
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
        assert!(c.plugins.is_empty());
        let e = err("[pipeline\n");
        assert!(e.contains("line 1"), "{e}");
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
