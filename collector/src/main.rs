//! The `driftwatch` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use driftwatch::config::Config;
use driftwatch::container::Runtimes;
use driftwatch::enrich::Enricher;
use driftwatch::enrich::container::ContainerEnricher;
use driftwatch::enrich::exe_hash::ExeHashEnricher;
use driftwatch::enrich::lineage::LineageEnricher;
use driftwatch::enrich::program_file::ProgramFileEnricher;
use driftwatch::enrich::user::UserEnricher;
use driftwatch::pipeline::Chain;
use driftwatch::plugin::Engine;
use driftwatch::plugin::cache::ComponentCache;
use driftwatch::plugin::host::Limits;
use driftwatch::privileges::{self, Keep};
use driftwatch::runtime::{self, Setup};
use driftwatch::sink::Sink;
use driftwatch::source::Source;
use driftwatch::source::ebpf::prefilter::KernelPrefilter;
use driftwatch::source::ebpf::{EbpfSensor, EbpfSource};
use driftwatch::source::replay::Replay;
use driftwatch::source::scan::Scan;
use driftwatch::stats::Stats;
use driftwatch_sdk::KindSet;
use tokio::sync::watch;
use tracing_subscriber::prelude::*;

#[derive(Parser)]
#[command(
    name = "driftwatch",
    version,
    about = "Container drift sensor: catches binaries, shells, package managers and writes that were not in the image",
    long_about = "driftwatch watches containers for drift — anything that changes inside a running container \
                  that should be immutable — runs every event through a chain of sandboxed WASM detections \
                  configured in pipeline.toml, and prints findings as Falco-compatible JSON lines \
                  (or exports them over OTLP)."
)]
struct Cli {
    /// Log filter for driftwatch's own logs on stderr (e.g. `info`, `driftwatch=debug`).
    #[arg(long, env = "DRIFTWATCH_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sensor daemon with a pipeline configuration (needs root for the kernel sensor).
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run recorded events through the same pipeline and print the findings.
    ///
    /// FILE holds events as JSON lines (the schema's JSON form, see docs/events.md) or
    /// MessagePack (a stream of event maps, or one array). Bad records are reported with
    /// their line and skipped; the exit code is then 1.
    Replay {
        /// The recorded events.
        file: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
        /// Also print every event that passed the chain.
        #[arg(long)]
        events: bool,
        /// Print the counters as JSON on stderr at the end.
        #[arg(long)]
        stats: bool,
    },
    /// Work with plugin components.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Compare a running container's filesystem with its image.
    ///
    /// Lists what was added, modified (content, or metadata only) and removed, from the
    /// container's overlay layers. Files the runtime creates in every container are hidden
    /// (see docs/diff.md). Exit code: 0 no drift, 1 drift shown, 2 error.
    Diff {
        /// Container id (full or short), name, or the pid of a process inside it.
        container: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Show only these, comma-separated: executables, added, modified, metadata, removed.
        /// Kinds of change combine with "or"; `executables` narrows them further.
        #[arg(long, value_delimiter = ',')]
        only: Vec<driftwatch::fsdiff::report::Only>,
        /// Also show the files the runtime itself creates in a fresh container.
        #[arg(long)]
        include_runtime: bool,
        /// containers/storage root, for container names.
        #[arg(long, default_value = driftwatch::fsdiff::resolve::DEFAULT_STORAGE_ROOT)]
        storage_root: PathBuf,
        /// Worker threads (default: CPUs, at most 4).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Print a running daemon's counters: events per kind, kernel losses, plugin drops,
    /// failures and call latency, findings per rule and priority, export and spool state.
    Stats {
        /// The daemon's configuration names its `daemon.control_socket`.
        #[command(flatten)]
        config: ConfigArg,
        /// Connect to this socket instead of the configured one.
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Check a pipeline configuration: parse it, load and initialize every plugin.
    Check {
        #[arg(default_value = "pipeline.toml")]
        config: PathBuf,
    },
    /// Verify that running containers run the image digests their approved specs pin.
    ///
    /// The approved spec is the owning workload (Pod → ReplicaSet → Deployment, StatefulSet,
    /// DaemonSet, Job → CronJob) or, with --approved, the same workload in a directory of
    /// manifests. Exit codes: 0 all verified, 1 only mutable-tag warnings, 2 the check could
    /// not run, 3 malformed digest / unapproved container / unknown running digest, 4 a running
    /// image differs from the approved one (digest or image mismatch).
    VerifyDigests(VerifyDigestsArgs),
    /// Audit Kubernetes manifests (YAML/JSON files or directories) for immutability.
    ///
    /// Checks readOnlyRootFilesystem, allowPrivilegeEscalation, runAsNonRoot, digest-pinned
    /// images, emptyDir size limits, writable hostPaths and namespace Pod Security labels.
    /// Exit codes: 0 clean, 1 violations, 2 a file could not be read or parsed.
    AuditManifests {
        /// Files or directories (searched recursively for .yaml, .yml, .json).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long, conflicts_with = "sarif")]
        json: bool,
        /// Print SARIF 2.1.0 (for code-scanning UIs) instead of a table.
        #[arg(long)]
        sarif: bool,
    },
}

#[derive(clap::Args)]
struct VerifyDigestsArgs {
    /// Only this namespace (default: all namespaces).
    #[arg(short, long)]
    namespace: Option<String>,
    /// A directory of approved manifests (the GitOps source of truth).
    #[arg(long, value_name = "DIR")]
    approved: Option<PathBuf>,
    /// Offline: read `kubectl get pods,rs,deploy,sts,ds,jobs,cronjobs -o json` output
    /// instead of asking the API server. Repeatable.
    #[arg(long, value_name = "FILE", conflicts_with = "watch")]
    from_file: Vec<PathBuf>,
    /// The kubeconfig to use (default: KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Keep running and re-check whenever pods change; prints what changed.
    #[arg(long)]
    watch: bool,
    /// Also send each finding through the outputs of --config (stdout JSON lines, OTLP).
    /// When the stdout output is on, the report moves to stderr.
    #[arg(long)]
    export: bool,
    /// Its outputs are the ones --export uses.
    #[command(flatten)]
    config: ConfigArg,
}

/// `--config`, shared by every command that reads a pipeline.
#[derive(clap::Args)]
struct ConfigArg {
    /// The pipeline configuration.
    #[arg(
        short,
        long = "config",
        default_value = "pipeline.toml",
        env = "DRIFTWATCH_CONFIG"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Validate a plugin component and print its manifest as JSON.
    Inspect {
        /// The component (`.wasm`).
        file: PathBuf,
        /// The plugin's config table, as JSON (default: empty).
        #[arg(long, default_value = "{}")]
        config_json: String,
    },
    /// Create a Rust plugin crate with one example rule, a test and a README.
    ///
    /// It builds and passes its test as created: `cargo test`, then `driftwatch plugin build`.
    New {
        /// The plugin's name: lowercase letters, digits and dashes.
        name: String,
        /// Where to create it (default: ./NAME). Must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The driftwatch SDK to depend on (a checkout's sdk/; default: the one this
        /// driftwatch was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build a plugin folder into a component: a Rust crate (Cargo.toml) or a Python
    /// plugin (app.py, with componentize-py). The result is loaded once to check it.
    Build {
        /// The plugin's folder.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The component to write (default: DIR/NAME.wasm).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The driftwatch SDK (a checkout's sdk/), for Python plugins' WIT and helper module
        /// (default: the one this driftwatch was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
        #[command(flatten)]
        cache: PluginCacheArg,
    },
    /// Run recorded events through a plugin component and print its findings.
    ///
    /// EVENTS holds JSON lines or MessagePack, as for `replay`. Findings go to stdout as
    /// the daemon's Falco JSON lines; each event's verdict goes to stderr. Exit code:
    /// 0 nothing fired, 1 a finding or drop, 2 an error (including a failed call).
    Test {
        /// The component (`.wasm`).
        plugin: PathBuf,
        /// The recorded events.
        events: PathBuf,
        /// The plugin's config table, as JSON (default: empty).
        #[arg(long, default_value = "{}")]
        config_json: String,
        /// CPU deadline per call, as `deadline_ms` in pipeline.toml.
        #[arg(long, default_value_t = Limits::DEFAULT_DEADLINE_MS)]
        deadline_ms: u64,
        #[command(flatten)]
        cache: PluginCacheArg,
    },
}

/// Where `plugin build` and `plugin test` keep compiled components.
#[derive(clap::Args)]
struct PluginCacheArg {
    /// Compiled-component cache (default: $XDG_CACHE_HOME/driftwatch/plugins or
    /// ~/.cache/driftwatch/plugins). A Python component compiles for a minute or more.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Compile every time, caching nothing.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,
}

impl PluginCacheArg {
    fn dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        self.cache_dir
            .clone()
            .or_else(driftwatch::authoring::trial::default_cache_dir)
    }
}

fn main() -> ExitCode {
    let huge_pages = driftwatch::refuse_huge_pages();
    let cli = Cli::parse();
    // The OpenTelemetry crates' own logs stay out unless asked for by name:
    // the daemon reports export failures itself, and theirs would say
    // "data will be lost" of findings that wait in the spool.
    let filter = tracing_subscriber::EnvFilter::try_new(format!("opentelemetry=off,{}", cli.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("opentelemetry=off,info"));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .with(driftwatch::sink::otlp::said::layer())
        .init();
    if let Err(e) = huge_pages {
        tracing::warn!(error = %e, "could not turn transparent huge pages off: the heap may stay larger");
    }
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            // Errors quote container file names and tenants' objects.
            eprintln!(
                "driftwatch: error: {}",
                driftwatch::terminal::escape_lines(&report(&e))
            );
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, each said once: the library's errors already
/// end their text with their source's, which `{:#}` would repeat.
fn report(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn real_main(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run { config } => run(&config.config),
        Command::Replay {
            file,
            config,
            events,
            stats,
        } => replay(&file, &config.config, events, stats),
        Command::Plugin { command } => plugin_command(command),
        Command::Check { config } => check(&config),
        Command::Stats { config, socket } => {
            let path = match socket {
                Some(p) => p,
                None => Config::load(&config.config)?
                    .daemon
                    .control_socket
                    .context("the configuration turns the control socket off")?,
            };
            let snapshot = driftwatch::control::read(&path)
                .context("is the daemon running? `driftwatch run` serves its counters there")?;
            println!("{}", serde_json::to_string_pretty(&snapshot)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff {
            container,
            json,
            only,
            include_runtime,
            storage_root,
            jobs,
        } => {
            use driftwatch::container::{Endpoints, Runtimes};
            use driftwatch::fsdiff::{self, Options, Resolver, report::Filter};
            let mut opts = Options::default();
            opts.jobs = jobs.unwrap_or(opts.jobs);
            let filter = Filter::from_only(&only, include_runtime);
            let endpoints = Endpoints {
                podman_root: storage_root,
                ..Endpoints::default()
            };
            let resolver = Resolver::new(Runtimes::new(&endpoints));
            let target = tokio_runtime()?.block_on(resolver.resolve(&container))?;
            let mut out = std::io::stdout().lock();
            let drift = fsdiff::diff_command(&target, &opts, &filter, json, &mut out)?;
            Ok(if drift {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::VerifyDigests(args) => verify_digests(args),
        Command::AuditManifests { paths, json, sarif } => {
            use driftwatch::k8s::commands::{Format, audit_manifests};
            let format = match (json, sarif) {
                (true, _) => Format::Json,
                (_, true) => Format::Sarif,
                _ => Format::Table,
            };
            let code = audit_manifests(&paths, format, &mut std::io::stdout().lock())?;
            Ok(ExitCode::from(code))
        }
    }
}

fn verify_digests(a: VerifyDigestsArgs) -> Result<ExitCode> {
    use driftwatch::k8s::commands::{Format, VerifyContext, VerifyOptions, verify_digests};
    let (sinks, hostname, report_to_stderr) = if a.export {
        let cfg = Config::load(&a.config.config)?;
        let stats = Arc::new(Stats::default());
        (
            sinks(&cfg, false, &stats)?,
            driftwatch::host::hostname(cfg.daemon.hostname.as_deref()),
            driftwatch::sink::stdout_active(&cfg),
        )
    } else {
        (Vec::new(), driftwatch::host::hostname(None), false)
    };
    let opts = VerifyOptions {
        namespace: a.namespace,
        approved: a.approved,
        from_files: a.from_file,
        kubeconfig: a.kubeconfig,
        format: if a.json { Format::Json } else { Format::Table },
        watch: a.watch,
    };
    let rt = tokio_runtime()?;
    let shutdown = shutdown_on_signals(&rt);
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    let out: &mut dyn std::io::Write = if report_to_stderr {
        &mut stderr
    } else {
        &mut stdout
    };
    let ctx = VerifyContext {
        sinks,
        hostname,
        out,
        shutdown,
    };
    Ok(ExitCode::from(verify_digests(&opts, ctx, &rt)?))
}

fn load(config: &Path) -> Result<(Config, Engine, Chain, Arc<Stats>)> {
    let cfg = Config::load(config)?;
    let engine = runtime::engine(&cfg)?;
    let stats = Arc::new(Stats::default());
    let chain = Chain::build(&cfg, &engine, stats.clone())
        .with_context(|| format!("building the plugin chain of {}", config.display()))?;
    Ok((cfg, engine, chain, stats))
}

fn sinks(cfg: &Config, force_events: bool, stats: &Arc<Stats>) -> Result<Vec<Box<dyn Sink>>> {
    driftwatch::sink::build(cfg, force_events, stats).context("starting the outputs")
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Turns SIGINT/SIGTERM into the shutdown signal.
fn shutdown_on_signals(rt: &tokio::runtime::Runtime) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    rt.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down: flushing queued events");
        let _ = tx.send(true);
    });
    rx
}

fn run(config: &Path) -> Result<ExitCode> {
    let (cfg, engine, chain, stats) = load(config)?;
    let mut sources: Vec<Box<dyn Source>> = Vec::new();
    let mut enforcer = None;
    let mut live_prefilter = None;
    let mut kernel_writers = None;
    if cfg.sources.ebpf.enabled {
        // Load and attach before anything runs, so a kernel that cannot do
        // it stops the start with the reason. Printing raw events asks for
        // every kind the kernel can see, not only the ones plugins want.
        let mut kinds = chain.kinds();
        // The kernel prefilter drops what no plugin would be given; raw
        // events asked for on stdout want everything.
        let mut prefilter = KernelPrefilter::compile(chain.manifests().map(|(_, m)| m));
        let mut ebpf = cfg.sources.ebpf.clone();
        if driftwatch::sink::stdout_active(&cfg) && cfg.outputs.stdout.events {
            kinds = KindSet::ALL;
            prefilter = KernelPrefilter::off();
            ebpf.kernel_prefilter = false;
            // Raw events are every event, repeats too.
            ebpf.aggregate_window_ms = 0;
        }
        let mut sensor = EbpfSensor::start(&ebpf, kinds, &prefilter, &cfg.enforcement)
            .context("starting the kernel sensor")?;
        enforcer = Some(sensor.enforcer());
        live_prefilter = sensor.prefilter();
        kernel_writers = sensor.take_writers();
        sources.push(Box::new(EbpfSource::new(sensor)));
    }
    let runtimes = Runtimes::new(&cfg.runtimes.endpoints());
    if cfg.sources.scan.enabled {
        let mut endpoints = cfg.runtimes.endpoints();
        if let Some(root) = &cfg.sources.scan.storage_root {
            endpoints.podman_root = root.clone();
        }
        sources.push(Box::new(Scan::with_runtimes(
            cfg.sources.scan.clone(),
            Runtimes::new(&endpoints),
        )));
    }
    if sources.is_empty() {
        bail!(
            "{}: no live source is enabled ([sources.ebpf] and [sources.scan] are off); use `driftwatch replay` for recorded events",
            config.display()
        );
    }
    // Attached: from here on the daemon needs only its readers' capabilities.
    // Dropped before the async runtime starts, so its threads inherit the
    // reduced sets; the threads already running are reduced by broadcast.
    if cfg.daemon.drop_capabilities {
        let keep = Keep::for_daemon(cfg.sources.ebpf.enabled, cfg.sources.scan.enabled);
        match privileges::drop_all_threads(keep).context(
            "dropping capabilities after start (set [daemon] drop_capabilities = false to keep them)",
        )? {
            Some(d) => tracing::info!(
                kept = format_args!("{:#x}", d.kept),
                threads = d.threads,
                bounding = d.bounding,
                "dropped every capability the running daemon does not need"
            ),
            None => tracing::debug!("no capabilities held: nothing to drop"),
        }
    }
    // The start's garbage was freed on this thread, which only waits from
    // here on.
    driftwatch::give_back_freed_memory();
    let rt = tokio_runtime()?;
    let shutdown = shutdown_on_signals(&rt);
    let sinks = sinks(&cfg, false, &stats)?;
    // The runtimes' clients run on the runtime for as long as the daemon does.
    let (containers, _runtime_tasks) = {
        let _in_runtime = rt.enter();
        ContainerEnricher::start(&runtimes)
    };
    let mut enrichers: Vec<Box<dyn Enricher>> = vec![
        Box::new(containers),
        Box::new(UserEnricher::new()),
        Box::new(ProgramFileEnricher::new(cfg.enrich.interpreters.clone())),
    ];
    // After the program-file enricher (it learns the inode of a script or a
    // loaded file), before lineage (which completes what the kernel knows).
    if let Some(w) = kernel_writers {
        enrichers.push(Box::new(w));
    }
    enrichers.extend([
        Box::new(LineageEnricher::new()) as Box<dyn Enricher>,
        Box::new(
            ExeHashEnricher::start(std::time::Duration::from_millis(
                cfg.pipeline.batch_timeout_ms,
            ))
            .context("starting the executable hash worker")?,
        ),
    ]);
    // The pod watch runs on the runtime for as long as the daemon does.
    let _pod_watch = match rt.block_on(driftwatch::k8s::enrich::start(&cfg.k8s))? {
        Some((enricher, watch)) => {
            enrichers.push(Box::new(enricher));
            Some(watch)
        }
        None => None,
    };
    let report = rt.block_on(runtime::run(Setup {
        cfg,
        config_path: Some(config.to_path_buf()),
        engine,
        chain,
        sources,
        sinks,
        enrichers,
        enforcer,
        prefilter: live_prefilter,
        stats,
        shutdown,
    }))?;
    tracing::info!(
        stats = %serde_json::to_string(&report.stats).unwrap_or_default(),
        "stopped"
    );
    Ok(if report.source_errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn replay(file: &Path, config: &Path, events: bool, print_stats: bool) -> Result<ExitCode> {
    let (mut cfg, engine, chain, stats) = load(config)?;
    // A replay is a one-shot run: no reloads, no periodic counters, and no
    // control socket to take from a running daemon.
    cfg.daemon.hot_reload = false;
    cfg.daemon.stats_interval_secs = 0;
    cfg.daemon.control_socket = None;
    cfg.metrics.listen = None;
    let rt = tokio_runtime()?;
    let shutdown = shutdown_on_signals(&rt);
    let sources: Vec<Box<dyn Source>> = vec![Box::new(Replay::new(file.to_path_buf()))];
    let sinks = sinks(&cfg, events, &stats)?;
    let report = rt.block_on(runtime::run(Setup {
        cfg,
        config_path: None,
        engine,
        chain,
        sources,
        sinks,
        enrichers: Vec::new(),
        enforcer: None,
        prefilter: None,
        stats,
        shutdown,
    }))?;
    if print_stats {
        eprintln!("{}", serde_json::to_string_pretty(&report.stats)?);
    }
    Ok(if report.source_errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn plugin_command(command: PluginCommand) -> Result<ExitCode> {
    use driftwatch::authoring::commands;
    let code = match command {
        PluginCommand::Inspect { file, config_json } => return inspect(&file, &config_json),
        PluginCommand::New { name, dir, sdk } => commands::new(&name, dir, sdk)?,
        PluginCommand::Build {
            dir,
            out,
            sdk,
            cache,
        } => commands::build_command(&dir, out.as_deref(), sdk.as_deref(), cache.dir().as_deref())?,
        PluginCommand::Test {
            plugin,
            events,
            config_json,
            deadline_ms,
            cache,
        } => commands::test(
            &plugin,
            &events,
            &config_json,
            deadline_ms,
            cache.dir().as_deref(),
        )?,
    };
    Ok(ExitCode::from(code))
}

fn inspect(file: &Path, config_json: &str) -> Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let config: serde_json::Value =
        serde_json::from_str(config_json).context("--config-json is not valid JSON")?;
    let config = driftwatch_sdk::codec::encode(&config)?;
    let engine = Engine::new(ComponentCache::disabled())?;
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let plugin = engine
        .load(name, &bytes, Limits::default(), config)
        .with_context(|| format!("{} is not a usable driftwatch plugin", file.display()))?;
    let instance = plugin
        .instantiate()
        .with_context(|| format!("{} failed to initialize", file.display()))?;
    println!("{}", serde_json::to_string_pretty(instance.manifest())?);
    Ok(ExitCode::SUCCESS)
}

fn check(config: &Path) -> Result<ExitCode> {
    let (_cfg, _engine, chain, _stats) = load(config)?;
    for (name, m) in chain.manifests() {
        let kinds: Vec<&str> = m.kinds.iter().map(|k| k.as_str()).collect();
        println!("{name}: {} {} [{}]", m.name, m.version, kinds.join(", "));
    }
    println!("{}: ok", config.display());
    Ok(ExitCode::SUCCESS)
}
