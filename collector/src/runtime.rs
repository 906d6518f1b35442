//! Wires sources → batcher → plugin chain → sinks and runs them until the
//! sources run dry or shutdown is requested.
//!
//! Threads: sources and the batcher are tokio tasks; the plugin chain has a
//! thread of its own (a WASM call is CPU work with a deadline and must not
//! stall the runtime); sinks share an output thread. Stages are joined by
//! bounded channels, so a slow stage slows its producer instead of dropping.
//! A config reload builds a new chain beside the running one and swaps it in
//! between two batches.
//!
//! Shutdown (SIGTERM, SIGINT): the sources stop, the batcher and the chain
//! drain, and the outputs flush, all within `[daemon] shutdown_timeout_secs`
//! of the signal. Spooled outputs leave what they could not deliver on disk
//! for the next start; if the whole process is not done a grace second
//! after the deadline, what is still in memory is logged as lost and the
//! process exits (docs/service.md).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use driftwatch_sdk::{Event, EventKind, KindSet};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::enrich::Enricher;
use crate::pipeline::{Batch, Chain, ChainError};
use crate::plugin::Engine;
use crate::plugin::cache::ComponentCache;
use crate::sink::Sink;
use crate::source::ebpf::enforcement::Enforcer;
use crate::source::ebpf::prefilter::SharedPrefilter;
use crate::source::{Source, SourceContext, SourceError};
use crate::stats::{Snapshot, Stats};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("plugin engine: {0}")]
    Engine(#[from] crate::plugin::PluginError),
    #[error("{0} thread panicked")]
    Panicked(&'static str),
    #[error("starting the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
}

enum Msg {
    Batch(Vec<Event>),
    Swap(Box<Chain>),
    /// The daemon's findings about itself (crate::health): enriched, then
    /// straight to the outputs.
    Health(Vec<(Event, driftwatch_sdk::Finding)>),
}

/// What a finished run reports.
#[derive(Debug)]
pub struct Report {
    pub source_errors: Vec<SourceError>,
    pub stats: Snapshot,
}

/// Everything a run needs, assembled by the CLI (or a test).
pub struct Setup {
    pub cfg: Config,
    /// Watched for changes when `cfg.daemon.hot_reload` is on.
    pub config_path: Option<PathBuf>,
    pub engine: Engine,
    pub chain: Chain,
    pub sources: Vec<Box<dyn Source>>,
    pub sinks: Vec<Box<dyn Sink>>,
    /// Applied in order to every event before the chain.
    pub enrichers: Vec<Box<dyn Enricher>>,
    /// The kernel's enforcement policy maps (`None` without the kernel
    /// sensor): rewritten on reload, told of containers as they are enriched.
    pub enforcer: Option<Enforcer>,
    /// The kernel prefilter (`None` when off or without the kernel
    /// sensor): recompiled for the new chain on reload.
    pub prefilter: Option<SharedPrefilter>,
    pub stats: Arc<Stats>,
    pub shutdown: watch::Receiver<bool>,
}

/// The engine with the configured compile cache.
pub fn engine(cfg: &Config) -> Result<Engine, RuntimeError> {
    Ok(Engine::new(ComponentCache::new(&cfg.daemon.cache_dir))?)
}

/// Runs the pipeline until every source is done (or shutdown is
/// requested), then drains it: the last batch still reaches the sinks.
pub async fn run(setup: Setup) -> Result<Report, RuntimeError> {
    let Setup {
        cfg,
        config_path,
        engine,
        chain,
        sources,
        sinks,
        enrichers,
        enforcer,
        prefilter,
        stats,
        shutdown,
    } = setup;
    let (ev_tx, ev_rx) = mpsc::channel::<Event>(cfg.pipeline.queue_capacity);
    let (msg_tx, msg_rx) = mpsc::channel::<Msg>(4);
    let (out_tx, out_rx) = std::sync::mpsc::sync_channel::<Batch>(16);
    // Sources capture what the chain asked for at start; a reload that wants
    // new kinds takes a restart (the reloader says so).
    let kinds = chain.kinds();

    let hostname: Arc<str> = Arc::from(crate::host::hostname(cfg.daemon.hostname.as_deref()));
    // Set when the signal comes: the deadline of the whole shutdown runs
    // from there, the outputs' flush included.
    let signalled: Arc<OnceLock<Instant>> = Arc::default();
    // Starting counts as moving: /healthz is 200 from the first request,
    // before the first health tick has crossed the chain.
    stats.health.beat(Instant::now());
    // Dropped when this run ends, however it ends: the deadline then has
    // nothing left to end (and a test running pipelines in-process lives on).
    let (finished, finished_rx) = std::sync::mpsc::channel::<()>();
    let deadline_watch = tokio::spawn(watch_deadline(
        shutdown.clone(),
        signalled.clone(),
        cfg.daemon.shutdown_timeout(),
        stats.clone(),
        ev_tx.downgrade(),
        finished_rx,
    ));
    let to_outputs = ToOutputs {
        tx: out_tx,
        plain: sinks.iter().any(|s| s.writes_plain_events()),
    };
    let chain_thread = spawn_chain(
        chain,
        enrichers,
        enforcer.clone(),
        msg_rx,
        to_outputs,
        stats.clone(),
        hostname.clone(),
    )?;
    let outputs_thread = spawn_outputs(
        sinks,
        out_rx,
        stats.clone(),
        signalled,
        cfg.daemon.shutdown_timeout(),
    )?;

    let sources: Vec<_> = sources
        .into_iter()
        .map(|source| {
            tokio::spawn(source.run(SourceContext {
                events: ev_tx.clone(),
                shutdown: shutdown.clone(),
                stats: stats.clone(),
                kinds,
                hostname: hostname.clone(),
            }))
        })
        .collect();
    // The sources hold the only senders now: the queue closes when they end.
    drop(ev_tx);

    let batcher = tokio::spawn(batch_events(
        ev_rx,
        msg_tx.clone(),
        stats.clone(),
        cfg.pipeline.batch_size,
        Duration::from_millis(cfg.pipeline.batch_timeout_ms),
    ));
    // SIGHUP reloads whenever there is a file to reload from; the watcher
    // runs only with `hot_reload`.
    let reloader = match &config_path {
        Some(path) => Some(tokio::spawn(watch_config(
            path.clone(),
            cfg.daemon.hot_reload,
            Running {
                cfg: cfg.clone(),
                kinds,
            },
            engine.clone(),
            stats.clone(),
            msg_tx.clone(),
            enforcer,
            prefilter,
        ))),
        None => None,
    };
    let health = tokio::spawn(report_health(
        stats.clone(),
        hostname.clone(),
        msg_tx.clone(),
    ));
    drop(msg_tx);
    let ticker = spawn_stats_log(&cfg, &stats);
    let control = serve_control(&cfg, &stats);
    let metrics = serve_metrics(&cfg, &stats);

    let mut source_errors = Vec::new();
    for h in sources {
        match h.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!("source stopped: {}", e.with_causes());
                source_errors.push(e);
            }
            Err(_) => return Err(RuntimeError::Panicked("source")),
        }
    }
    // Sources are done: let the last batch through, then stop the helpers
    // that hold the chain's channel open.
    if let Some(r) = reloader {
        r.abort();
        let _ = r.await;
    }
    health.abort();
    let _ = health.await;
    batcher
        .await
        .map_err(|_| RuntimeError::Panicked("batcher"))?;
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some((path, task)) = control {
        task.abort();
        let _ = std::fs::remove_file(path);
    }
    if let Some(task) = metrics {
        task.abort();
    }
    tokio::task::spawn_blocking(move || {
        chain_thread
            .join()
            .map_err(|_| RuntimeError::Panicked("plugin-chain"))?;
        outputs_thread
            .join()
            .map_err(|_| RuntimeError::Panicked("outputs"))
    })
    .await
    .map_err(|_| RuntimeError::Panicked("join"))??;
    deadline_watch.abort();
    drop(finished);
    Ok(Report {
        source_errors,
        stats: stats.snapshot(),
    })
}

/// The plugin chain's own thread: enriches and processes each batch, and
/// swaps in a reloaded chain between two batches. Ends when the batcher
/// and the reloader are gone, or the outputs are.
fn spawn_chain(
    mut chain: Chain,
    mut enrichers: Vec<Box<dyn Enricher>>,
    enforcer: Option<Enforcer>,
    mut rx: mpsc::Receiver<Msg>,
    out: ToOutputs,
    stats: Arc<Stats>,
    hostname: Arc<str>,
) -> Result<std::thread::JoinHandle<()>, RuntimeError> {
    std::thread::Builder::new()
        .name("plugin-chain".into())
        .spawn(move || {
            while let Some(msg) = rx.blocking_recv() {
                stats.health.beat(std::time::Instant::now());
                match msg {
                    Msg::Batch(mut events) => {
                        for e in enrichers.iter_mut() {
                            e.enrich_batch(&mut events);
                        }
                        if let Some(enforcer) = &enforcer {
                            learn_containers(enforcer, &events);
                        }
                        let taken = events.len();
                        let mut batch = chain.process(events);
                        if !out.plain {
                            batch.retain_findings();
                        }
                        // The batcher counted them in; what the chain
                        // dropped leaves memory here.
                        stats
                            .queued_events
                            .fetch_sub((taken - batch.len()) as u64, Ordering::Relaxed);
                        if !batch.is_empty() && out.tx.send(batch).is_err() {
                            return;
                        }
                    }
                    Msg::Swap(new) => {
                        chain = *new;
                        tracing::info!("plugin chain reloaded");
                    }
                    Msg::Health(found) => {
                        let batch = crate::health::batch(found, &mut enrichers, &stats);
                        if !batch.is_empty() {
                            stats
                                .queued_events
                                .fetch_add(batch.len() as u64, Ordering::Relaxed);
                            if out.tx.send(batch).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            // Every sender is gone, so no batch can raise anything more:
            // what the periodic reporter has not sent yet leaves now.
            let found = stats
                .health
                .drain(std::time::Instant::now(), now_ns(), &hostname);
            let batch = crate::health::batch(found, &mut enrichers, &stats);
            if !batch.is_empty() {
                stats
                    .queued_events
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                let _ = out.tx.send(batch);
            }
        })
        .map_err(|e| RuntimeError::Thread("plugin-chain", e))
}

/// The chain's hand-off to the outputs' thread.
struct ToOutputs {
    tx: std::sync::mpsc::SyncSender<Batch>,
    /// Whether an output writes events that raised no finding; without
    /// one, only events with findings are handed over.
    plain: bool,
}

/// Tells the enforcement policy which containers the execs of `events`
/// ran in, so the kernel can judge them against the scope lists.
fn learn_containers(enforcer: &Enforcer, events: &[Event]) {
    let mut maps = None;
    for ev in events
        .iter()
        .filter(|ev| ev.kind == EventKind::Exec && ev.container.is_some())
    {
        let maps = maps.get_or_insert_with(|| enforcer.lock().unwrap_or_else(|p| p.into_inner()));
        maps.learn(ev);
    }
}

/// The outputs thread: every batch to every sink in order, a failure
/// counted and logged without stopping the others; a flush at the end,
/// bounded by the shutdown deadline (from the signal when there was one,
/// else from the end of the last batch).
fn spawn_outputs(
    mut sinks: Vec<Box<dyn Sink>>,
    rx: std::sync::mpsc::Receiver<Batch>,
    stats: Arc<Stats>,
    signalled: Arc<OnceLock<Instant>>,
    timeout: Duration,
) -> Result<std::thread::JoinHandle<()>, RuntimeError> {
    std::thread::Builder::new()
        .name("outputs".into())
        .spawn(move || {
            for batch in rx {
                for sink in sinks.iter_mut() {
                    if let Err(e) = sink.send(&batch) {
                        stats.sink_error(sink.name());
                        tracing::error!("output failed: {e}");
                    }
                }
                stats
                    .queued_events
                    .fetch_sub(batch.len() as u64, Ordering::Relaxed);
            }
            let deadline = signalled.get().copied().unwrap_or_else(Instant::now) + timeout;
            for sink in sinks.iter_mut() {
                if let Err(e) = sink.flush(deadline) {
                    tracing::error!("output flush failed: {e}");
                }
            }
        })
        .map_err(|e| RuntimeError::Thread("outputs", e))
}

/// Logs the counters every `stats_interval_secs` (0: never).
fn spawn_stats_log(cfg: &Config, stats: &Arc<Stats>) -> Option<tokio::task::JoinHandle<()>> {
    (cfg.daemon.stats_interval_secs > 0).then(|| {
        let stats = stats.clone();
        let every = Duration::from_secs(cfg.daemon.stats_interval_secs);
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.tick().await;
            loop {
                t.tick().await;
                let s = stats.snapshot();
                tracing::info!(stats = %serde_json::to_string(&s).unwrap_or_default(), "counters");
            }
        })
    })
}

/// Serves `driftwatch stats` on the control socket, when one is configured
/// and can be bound; a daemon without it still runs.
fn serve_control(
    cfg: &Config,
    stats: &Arc<Stats>,
) -> Option<(PathBuf, tokio::task::JoinHandle<()>)> {
    let path = cfg.daemon.control_socket.clone()?;
    match crate::control::bind(&path) {
        Ok(l) => Some((path, tokio::spawn(crate::control::serve(l, stats.clone())))),
        Err(e) => {
            tracing::warn!("`driftwatch stats` will not work: {e}");
            None
        }
    }
}

/// Serves `/metrics` and `/healthz`, when an address is configured and
/// can be bound; a daemon without them still runs.
fn serve_metrics(cfg: &Config, stats: &Arc<Stats>) -> Option<tokio::task::JoinHandle<()>> {
    let addr = cfg.metrics.listen?;
    match crate::prometheus::bind(addr) {
        Ok(l) => {
            tracing::info!(
                "serving /metrics and /healthz on http://{}",
                l.local_addr().unwrap_or(addr)
            );
            Some(tokio::spawn(crate::prometheus::serve(l, stats.clone())))
        }
        Err(e) => {
            tracing::warn!("/metrics and /healthz will not be served: {e}");
            None
        }
    }
}

/// Sends the chain thread a tick once a second, carrying the daemon's
/// findings about itself when any are due (crate::health rate-limits
/// them). The chain beats on every message, so the tick is also what
/// keeps an idle daemon alive for `/healthz`.
async fn report_health(stats: Arc<Stats>, hostname: Arc<str>, tx: mpsc::Sender<Msg>) {
    let mut t = tokio::time::interval(Duration::from_secs(1));
    loop {
        t.tick().await;
        let found = stats
            .health
            .take(std::time::Instant::now(), now_ns(), &hostname);
        if tx.send(Msg::Health(found)).await.is_err() {
            return;
        }
    }
}

/// A second past the deadline, outputs have returned from their flush: a
/// process still running then is stuck, and is ended.
const DEADLINE_GRACE: Duration = Duration::from_secs(1);

/// Once shutdown is asked for, notes when, and ends the process if the
/// orderly shutdown has not finished by the deadline plus a grace second,
/// counting what was still in memory as lost. Spools are on disk already:
/// their records are sent on the next start.
async fn watch_deadline(
    mut shutdown: watch::Receiver<bool>,
    signalled: Arc<OnceLock<Instant>>,
    timeout: Duration,
    stats: Arc<Stats>,
    source_queue: mpsc::WeakSender<Event>,
    finished: std::sync::mpsc::Receiver<()>,
) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        return;
    }
    let at = *signalled.get_or_init(Instant::now);
    // A thread, not a task: a wedged runtime must not hold it up.
    let spawned = std::thread::Builder::new()
        .name("shutdown-deadline".into())
        .spawn(move || {
            let left = (at + timeout + DEADLINE_GRACE).saturating_duration_since(Instant::now());
            if !matches!(
                finished.recv_timeout(left),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            ) {
                return;
            }
            let queued = stats.queued_events.load(Ordering::Relaxed);
            let waiting = source_queue
                .upgrade()
                .map_or(0, |q| q.max_capacity() - q.capacity());
            tracing::error!(
                lost_events = queued + waiting as u64,
                "shutdown did not finish within {}s: exiting; {queued} events between the batcher and the outputs and {waiting} waiting for the batcher are lost, spooled findings stay on disk for the next start",
                timeout.as_secs()
            );
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::error!("no shutdown deadline: cannot start its thread: {e}");
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}

/// Groups events into batches of at most `size`, sending a partial batch
/// `timeout` after its first event.
async fn batch_events(
    mut rx: mpsc::Receiver<Event>,
    tx: mpsc::Sender<Msg>,
    stats: Arc<Stats>,
    size: usize,
    timeout: Duration,
) {
    let mut buf: Vec<Event> = Vec::with_capacity(size);
    loop {
        if rx.recv_many(&mut buf, size).await == 0 {
            break;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while buf.len() < size {
            let want = size - buf.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut buf, want)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let batch = std::mem::replace(&mut buf, Vec::with_capacity(size));
        stats
            .queued_events
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if tx.send(Msg::Batch(batch)).await.is_err() {
            return;
        }
    }
}

/// Recompiles the kernel prefilter for a reloaded `chain`, so that the
/// kernel drops exactly what no plugin of the new chain wants: a plugin
/// that newly wants writes under `/tmp` gets them from this reload on.
fn apply_prefilter(live: &SharedPrefilter, chain: &Chain, path: &Path) {
    let mut live = live.lock().unwrap_or_else(|p| p.into_inner());
    let manifests: Vec<&driftwatch_sdk::Manifest> = chain.manifests().map(|(_, m)| m).collect();
    match live.apply(&manifests) {
        Ok(unheld) => {
            tracing::info!(
                dropped_combinations = live.dropped(),
                prefixes = ?live.paths(),
                "reload of {}: kernel prefilter rewritten for the new plugins",
                path.display()
            );
            if !unheld.is_empty() {
                tracing::warn!(
                    prefixes = ?unheld,
                    "reload of {}: the kernel holds at most {} path prefixes; \
                     records under these go to userspace",
                    path.display(),
                    driftwatch_common::KERNEL_PREFIXES
                );
            }
        }
        Err(e) => tracing::error!(
            "reload of {}: the kernel prefilter could not be rewritten ({e}); it may \
             still drop records the new plugins want until driftwatch restarts",
            path.display()
        ),
    }
}

/// What the daemon set up at start, which a reload does not change.
struct Running {
    cfg: Config,
    /// Event kinds the sources capture.
    kinds: KindSet,
}

/// What a reload to `new` (whose chain wants `new_kinds`) leaves for the
/// next restart, one sentence each; empty when the reload applies fully.
pub fn reload_leftovers(
    running: &Config,
    running_kinds: KindSet,
    new: &Config,
    new_kinds: KindSet,
) -> Vec<String> {
    let mut out = Vec::new();
    let sections = new.restart_needed(running);
    if !sections.is_empty() {
        out.push(format!(
            "changes to [{}] take effect after a restart; the plugin chain was reloaded",
            sections.join(", ")
        ));
    }
    let missing: Vec<&str> = new_kinds
        .difference(running_kinds)
        .iter()
        .map(EventKind::as_str)
        .collect();
    if !missing.is_empty() {
        out.push(format!(
            "the reloaded plugins want event kinds the running sources do not capture ({}); \
             restart driftwatch to capture them",
            missing.join(", ")
        ));
    }
    out
}

/// The files whose change reloads the pipeline: the configuration and
/// every plugin it loads from a file, as absolute paths (the watcher
/// reports them joined to the absolute directories it watches).
pub fn reload_triggers(config_path: &Path, cfg: &Config) -> HashSet<PathBuf> {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut files = HashSet::from([absolute(config_path)]);
    for p in cfg.plugins() {
        if let crate::config::PluginSource::Path(path) = p.source() {
            files.insert(absolute(&cfg.resolve(path)));
        }
    }
    files
}

/// Rebuilds the chain when pipeline.toml or a plugin file it names
/// changes (with `hot_reload`), and on SIGHUP. A broken file or plugin is
/// reported, naming the file and the cause, and the running chain stays;
/// what only a restart can apply is logged.
#[allow(clippy::too_many_arguments)]
async fn watch_config(
    path: PathBuf,
    hot_reload: bool,
    running: Running,
    engine: Engine,
    stats: Arc<Stats>,
    tx: mpsc::Sender<Msg>,
    enforcer: Option<Enforcer>,
    prefilter: Option<SharedPrefilter>,
) {
    use notify::{RecursiveMode, Watcher};
    use tokio::signal::unix::{SignalKind, signal};
    let (ntx, mut nrx) = mpsc::unbounded_channel();
    let triggers = Arc::new(std::sync::Mutex::new(reload_triggers(&path, &running.cfg)));
    let watched_files = triggers.clone();
    let mut watcher = if hot_reload {
        let hook = ntx.clone();
        match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Reading the file (our own reload does) is not a change: acting
            // on it made every reload trigger the next, and a reload that
            // lands between an in-place editor's truncate and write loads an
            // empty, valid pipeline with no plugins.
            let Ok(ev) = res else { return };
            if !is_change(&ev.kind) {
                return;
            }
            let files = watched_files.lock().unwrap_or_else(|p| p.into_inner());
            if ev.paths.iter().any(|p| files.contains(p)) {
                let _ = hook.send(());
            }
        }) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("hot reload disabled: {e}");
                None
            }
        }
    } else {
        None
    };
    // Editors and builds replace files by rename, so watch directories.
    let mut watched_dirs = HashSet::new();
    let mut watch_dirs = |watcher: &mut Option<notify::RecommendedWatcher>,
                          files: &HashSet<PathBuf>| {
        let Some(w) = watcher.as_mut() else { return };
        for dir in files.iter().filter_map(|f| f.parent()) {
            if watched_dirs.contains(dir) {
                continue;
            }
            match w.watch(dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched_dirs.insert(dir.to_path_buf());
                }
                Err(e) => tracing::warn!(dir = %dir.display(), "hot reload cannot watch: {e}"),
            }
        }
    };
    let initial = triggers.lock().unwrap_or_else(|p| p.into_inner()).clone();
    watch_dirs(&mut watcher, &initial);
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("SIGHUP will not reload: {e}");
            None
        }
    };
    loop {
        let why = tokio::select! {
            got = nrx.recv() => match got {
                Some(()) => "a watched file changed",
                None => return,
            },
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => "SIGHUP",
        };
        // Let a burst of writes settle.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while nrx.try_recv().is_ok() {}
        tracing::info!("reloading {} ({why})", path.display());
        let (p, engine, chain_stats) = (path.clone(), engine.clone(), stats.clone());
        let built = tokio::task::spawn_blocking(move || -> Result<(Config, Chain), String> {
            let cfg = Config::load(&p).map_err(|e| e.to_string())?;
            refuse_empty_chain(&cfg)?;
            let chain = Chain::build(&cfg, &engine, chain_stats).map_err(|e| e.to_string())?;
            Ok((cfg, chain))
        })
        .await;
        match built {
            Ok(Ok((cfg, chain))) => {
                stats.reload(true);
                let files = reload_triggers(&path, &cfg);
                watch_dirs(&mut watcher, &files);
                *triggers.lock().unwrap_or_else(|p| p.into_inner()) = files;
                for note in reload_leftovers(&running.cfg, running.kinds, &cfg, chain.kinds()) {
                    tracing::warn!("reload of {}: {note}", path.display());
                }
                if let Some(live) = &prefilter {
                    apply_prefilter(live, &chain, &path);
                }
                if let Some(enforcer) = &enforcer {
                    let mut maps = enforcer.lock().unwrap_or_else(|p| p.into_inner());
                    if let Err(e) = maps.apply(&cfg.enforcement) {
                        tracing::error!(
                            "reload of {}: the enforcement policy was not written, the \
                             previous one stays: {e}",
                            path.display()
                        );
                    }
                }
                if tx.send(Msg::Swap(Box::new(chain))).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                stats.reload(false);
                tracing::error!(
                    "reload of {} failed, keeping the running pipeline: {e}",
                    path.display()
                )
            }
            Err(_) => {
                stats.reload(false);
                tracing::error!(
                    "reload of {} panicked, keeping the running pipeline",
                    path.display()
                )
            }
        }
    }
}

/// A reloaded config whose chain is empty would silently switch every
/// detection off; it takes `[pipeline] allow_empty_chain = true` to mean it.
fn refuse_empty_chain(cfg: &Config) -> Result<(), String> {
    if cfg.plugins().next().is_none() && !cfg.pipeline.allow_empty_chain {
        return Err("the [[plugins]] chain is empty: it would detect nothing \
                    (set [pipeline] allow_empty_chain = true if that is meant)"
            .into());
    }
    Ok(())
}

/// Whether a watcher event can mean new content: writes, creations,
/// renames and removals, and a close after writing; not opens or reads.
fn is_change(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_to_an_empty_chain_is_refused_unless_meant() {
        let empty = Config::parse("[pipeline]\nbatch_size = 64\n").unwrap();
        let e = refuse_empty_chain(&empty).unwrap_err();
        assert!(e.contains("allow_empty_chain"), "{e}");
        let disabled =
            Config::parse("[[plugins]]\nname = \"shell\"\nbuiltin = \"shell\"\nenabled = false\n")
                .unwrap();
        assert!(refuse_empty_chain(&disabled).is_err());
        let meant = Config::parse("[pipeline]\nallow_empty_chain = true\n").unwrap();
        assert!(refuse_empty_chain(&meant).is_ok());
        let one = Config::parse("[[plugins]]\nname = \"shell\"\nbuiltin = \"shell\"\n").unwrap();
        assert!(refuse_empty_chain(&one).is_ok());
    }

    #[test]
    fn a_reload_says_what_waits_for_a_restart() {
        let running = Config::parse("[sources.ebpf]\nring_buffer_kib = 8192\n").unwrap();
        let exec = KindSet::of(EventKind::Exec);
        let same = Config::parse("[sources.ebpf]\nring_buffer_kib = 8192\n").unwrap();
        assert!(reload_leftovers(&running, exec, &same, exec).is_empty());

        let bigger = Config::parse(
            "[sources.ebpf]\nring_buffer_kib = 16384\n[outputs.stdout]\nevents = true\n",
        )
        .unwrap();
        let notes = reload_leftovers(&running, exec, &bigger, exec);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("[sources, outputs]"), "{notes:?}");

        let writes = exec | KindSet::of(EventKind::OpenWrite);
        let notes = reload_leftovers(&running, exec, &same, writes);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("(open_write)"), "{notes:?}");
        // Fewer kinds than captured is fine: the chain ignores the rest.
        assert!(reload_leftovers(&running, writes, &same, exec).is_empty());
    }
}
