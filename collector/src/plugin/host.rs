//! The wasmtime sandbox a plugin runs in.
//!
//! One engine per process; each plugin is compiled once (see [`super::cache`])
//! and pre-linked into an `InstancePre`, so re-creating an instance after a
//! failure costs microseconds. A plugin gets no WASI at all: its only import
//! is `host.log`. Each instance runs under a memory cap for the whole store
//! (a resource limiter that also bounds how many instances, memories and
//! tables a component may make) and a CPU deadline (epoch interruption,
//! ticked by one thread) that covers instantiation (core `start` functions),
//! `init` and every call.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use driftwatch_sdk::prefilter::PrefilterError;
use driftwatch_sdk::{
    ABI_VERSION, MIN_ABI_VERSION, Manifest, Prefilter, RuleTable, UndeclaredRule, Verdict, codec,
};
use wasmtime::component::{Component, Linker};
use wasmtime::{Store, Trap};

use super::cache::ComponentCache;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "plugin",
    });
}

use bindings::driftwatch::plugin::host::Level;

/// How often the deadline clock ticks. Deadlines are rounded up to ticks.
const TICK: Duration = Duration::from_millis(2);
/// Log lines a plugin may print per call; the rest are counted.
const LOG_LINES_PER_CALL: u32 = 20;
const LOG_LINE_MAX: usize = 1024;
/// Largest component accepted, and largest native code it may compile to.
/// The built-ins are 0.2-1 MiB of wasm; a plugin hundreds of times that is
/// a mistake or an attack on the compiler and the daemon's memory.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;
pub const MAX_CODE_BYTES: usize = 256 << 20;
/// Per store (one plugin instance). A component made by wit-component from
/// one Rust or C module needs a handful of core instances (the module, its
/// shims and fixups), one memory and two tables. One made by
/// componentize-py (plugins/network-tool) links CPython, its libc and the
/// stubbed WASI out of 38 instantiated core modules, still with one memory; 64 leaves
/// it room while bounding a hostile component. Each memory or table is
/// reserved address space and a mapping even before it is used, so the
/// counts are small and the memory cap covers all of them together.
const MAX_INSTANCES: usize = 64;
const MAX_MEMORIES: usize = 2;
const MAX_TABLES: usize = 8;
/// Table elements across all tables of a store (8 bytes each). The
/// built-ins' function tables hold a few hundred entries.
const MAX_TABLE_ELEMENTS: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("compiling {plugin}: {source:#}")]
    Compile {
        plugin: String,
        source: wasmtime::Error,
    },
    /// `hint` says what a link failure most likely means.
    #[error("linking {plugin}: {source:#}{hint}")]
    Link {
        plugin: String,
        hint: &'static str,
        source: wasmtime::Error,
    },
    /// Instantiation failed: a core `start` function trapped, looped past
    /// the deadline, or the component asked for more than its limits.
    #[error("plugin {plugin} failed to start: {source}")]
    Start {
        plugin: String,
        source: Box<PluginError>,
    },
    #[error("plugin {plugin} refused its configuration: {source}")]
    Init {
        plugin: String,
        source: Box<PluginError>,
    },
    #[error("plugin {plugin} returned a bad manifest: {source}")]
    Manifest {
        plugin: String,
        source: ManifestError,
    },
    #[error("exceeded its memory limit of {limit_mib} MiB")]
    Memory { limit_mib: u64 },
    #[error("component of {got} bytes{what} is over the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        got: usize,
        limit: usize,
    },
    #[error("exceeded its CPU deadline of {deadline_ms} ms")]
    Deadline { deadline_ms: u64 },
    /// The trap as text: it carries the guest's backtrace, cleaned like
    /// any guest text, so the error itself cannot be kept.
    #[error("trapped: {0}")]
    Trap(String),
    /// What the guest returned as its error: a message, not an error value.
    #[error("returned an error: {0}")]
    Guest(String),
    #[error("returned {got} bytes, over its output limit of {limit} bytes")]
    OutputTooLarge { got: usize, limit: usize },
    #[error("returned malformed verdicts: {0}")]
    Malformed(#[source] codec::CodecError),
    #[error("returned {got} verdicts for {expected} events")]
    WrongCount { expected: usize, got: usize },
    #[error("returned a finding of an undeclared rule: {0}")]
    Undeclared(#[source] UndeclaredRule),
}

/// Why a plugin's manifest is refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Decode(#[from] codec::CodecError),
    #[error(
        "built for plugin ABI {found}, this driftwatch speaks {MIN_ABI_VERSION} to {ABI_VERSION}"
    )]
    Abi { found: u32 },
    /// A declared rule whose template or fields name an unknown field.
    #[error("{0}")]
    Rules(String),
    /// A prefilter naming a field this host does not know would starve or
    /// flood the plugin.
    #[error(transparent)]
    Prefilter(#[from] PrefilterError),
}

impl PluginError {
    /// A short, stable label for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::Compile { .. } => "compile",
            PluginError::Link { .. } => "link",
            PluginError::Start { .. } => "start",
            PluginError::Init { .. } => "init",
            PluginError::Manifest { .. } => "manifest",
            PluginError::TooLarge { .. } => "too_large",
            PluginError::Memory { .. } => "memory",
            PluginError::Deadline { .. } => "deadline",
            PluginError::Trap(_) => "trap",
            PluginError::Guest(_) => "error",
            PluginError::OutputTooLarge { .. } => "output_too_large",
            PluginError::Malformed(_) => "malformed",
            PluginError::WrongCount { .. } => "wrong_count",
            PluginError::Undeclared(_) => "undeclared_rule",
        }
    }
}

/// The process-wide wasmtime engine, its linker and the epoch ticker.
#[derive(Clone)]
pub struct Engine {
    inner: wasmtime::Engine,
    linker: Arc<Linker<HostState>>,
    cache: Arc<ComponentCache>,
    ticker: Arc<Ticker>,
}

/// The epoch ticker that enforces call deadlines, in CPU time. It ticks only
/// while some plugin call is running and sleeps otherwise, so an idle sensor
/// does not wake up hundreds of times a second. Every instance holds it: a
/// deadline must keep ticking for as long as anything can call a plugin.
///
/// The epoch advances with the CPU time the calling threads spend, not with
/// the wall clock: on a busy node a chain thread that is descheduled in the
/// middle of a batch has not overrun anything, and counting wall time there
/// made CPU contention alone trap plugins until they were quarantined
/// (fail-open). A plugin that spins still burns CPU time and still traps.
/// There is one epoch per engine: with several calling threads it advances
/// as fast as the busiest one.
struct Ticker {
    shared: Arc<TickerState>,
    thread: std::thread::Thread,
}

#[derive(Default)]
struct TickerState {
    /// Plugin calls in progress.
    active: AtomicUsize,
    stop: AtomicBool,
    /// The threads inside a plugin call, and how far their CPU time has
    /// been turned into epoch ticks.
    callers: Mutex<Vec<Caller>>,
    next_id: AtomicU64,
    /// Epoch increments made, for tests and diagnostics.
    ticks: AtomicU64,
}

struct Caller {
    id: u64,
    clock: libc::clockid_t,
    /// The thread's CPU time when its call began.
    start_ns: u64,
    /// Epoch increments since then.
    given: u64,
}

/// CPU time of `clock` in nanoseconds, `None` if the thread is gone.
fn cpu_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    (unsafe { libc::clock_gettime(clock, &mut ts) } == 0)
        .then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

impl Ticker {
    fn start(engine: wasmtime::Engine) -> std::io::Result<Ticker> {
        let shared = Arc::new(TickerState::default());
        let state = shared.clone();
        let handle = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                let tick_ns = TICK.as_nanos() as u64;
                while !state.stop.load(Ordering::Acquire) {
                    if state.active.load(Ordering::Acquire) == 0 {
                        // `enter` unparks; a token left before this park
                        // makes it return at once, so no call is missed.
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(TICK);
                    let mut callers = state.callers.lock().unwrap_or_else(|p| p.into_inner());
                    let due = callers
                        .iter()
                        .filter_map(|c| {
                            let used = cpu_ns(c.clock)?.saturating_sub(c.start_ns);
                            Some((used / tick_ns).saturating_sub(c.given))
                        })
                        .max()
                        .unwrap_or(0);
                    for c in callers.iter_mut() {
                        c.given += due;
                    }
                    drop(callers);
                    for _ in 0..due {
                        engine.increment_epoch();
                    }
                    state.ticks.fetch_add(due, Ordering::Relaxed);
                }
            })?;
        Ok(Ticker {
            shared,
            thread: handle.thread().clone(),
        })
    }

    /// Marks a plugin call on this thread as running until the guard drops.
    fn enter(&self) -> CallGuard<'_> {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pthread_self is always valid; clock is an out-pointer.
        let have_clock =
            unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) } == 0;
        // Without a CPU clock (never seen on Linux) fall back to the
        // process's, which still only counts time spent running.
        let clock = if have_clock {
            clock
        } else {
            libc::CLOCK_PROCESS_CPUTIME_ID
        };
        let start_ns = cpu_ns(clock).unwrap_or(0);
        self.shared
            .callers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Caller {
                id,
                clock,
                start_ns,
                given: 0,
            });
        if self.shared.active.fetch_add(1, Ordering::AcqRel) == 0 {
            self.thread.unpark();
        }
        CallGuard {
            state: &self.shared,
            id,
        }
    }
}

struct CallGuard<'a> {
    state: &'a TickerState,
    id: u64,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.state
            .callers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|c| c.id != self.id);
        self.state.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

impl Engine {
    pub fn new(cache: ComponentCache) -> Result<Engine, PluginError> {
        let mut cfg = wasmtime::Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        // For profiling plugins with `perf`: names the JIT code in
        // /tmp/perf-PID.map.
        if std::env::var_os("DRIFTWATCH_WASM_PERFMAP").is_some() {
            cfg.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine_err = |source| PluginError::Link {
            plugin: "<engine>".into(),
            hint: "",
            source,
        };
        let inner = wasmtime::Engine::new(&cfg).map_err(engine_err)?;
        let mut linker = Linker::new(&inner);
        bindings::Plugin::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(engine_err)?;
        let ticker = Ticker::start(inner.clone()).map_err(|e| {
            engine_err(wasmtime::Error::new(e).context("starting the epoch thread"))
        })?;
        Ok(Engine {
            inner,
            linker: Arc::new(linker),
            cache: Arc::new(cache),
            ticker: Arc::new(ticker),
        })
    }

    /// Compiles (or loads from cache) and pre-links a plugin.
    pub fn load(
        &self,
        name: &str,
        bytes: &[u8],
        limits: Limits,
        config: Vec<u8>,
    ) -> Result<LoadedPlugin, PluginError> {
        let too_large = |what, got, limit| PluginError::Compile {
            plugin: name.to_string(),
            source: wasmtime::Error::new(PluginError::TooLarge { what, got, limit }),
        };
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(too_large("", bytes.len(), MAX_COMPONENT_BYTES));
        }
        let component: Component =
            self.cache
                .load(&self.inner, bytes)
                .map_err(|source| PluginError::Compile {
                    plugin: name.to_string(),
                    source,
                })?;
        let range = component.image_range();
        let code = (range.end as usize).saturating_sub(range.start as usize);
        if code > MAX_CODE_BYTES {
            return Err(too_large(" compiled to native code", code, MAX_CODE_BYTES));
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(bindings::PluginPre::new)
            .map_err(|source| PluginError::Link {
                plugin: name.to_string(),
                hint: " (is it a driftwatch:plugin component that imports nothing else?)",
                source,
            })?;
        Ok(LoadedPlugin {
            name: Arc::from(name),
            engine: self.inner.clone(),
            ticker: self.ticker.clone(),
            pre,
            limits,
            config,
        })
    }
}

/// Per-plugin sandbox limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub memory_bytes: usize,
    pub deadline: Duration,
    pub max_output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(
            Limits::DEFAULT_MEMORY_MIB,
            Limits::DEFAULT_DEADLINE_MS,
            Limits::DEFAULT_MAX_OUTPUT_MIB,
        )
    }
}

impl Limits {
    /// The defaults of `[[plugins]]` (`memory_limit_mib`, `deadline_ms`,
    /// `max_output_mib`) and of `driftwatch plugin inspect`.
    pub const DEFAULT_MEMORY_MIB: u64 = 64;
    pub const DEFAULT_DEADLINE_MS: u64 = 50;
    pub const DEFAULT_MAX_OUTPUT_MIB: u64 = 16;

    /// Limits from configuration units. A size too large for this machine
    /// saturates rather than wrapping to a small one.
    pub fn new(memory_mib: u64, deadline_ms: u64, max_output_mib: u64) -> Limits {
        let bytes = |mib: u64| usize::try_from(mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        Limits {
            memory_bytes: bytes(memory_mib),
            deadline: Duration::from_millis(deadline_ms),
            max_output_bytes: bytes(max_output_mib),
        }
    }

    fn deadline_ticks(&self) -> u64 {
        (self.deadline.as_micros().div_ceil(TICK.as_micros()) as u64).max(1) + 1
    }
}

/// A compiled, pre-linked plugin from which instances are made.
pub struct LoadedPlugin {
    name: Arc<str>,
    engine: wasmtime::Engine,
    ticker: Arc<Ticker>,
    pre: bindings::PluginPre<HostState>,
    limits: Limits,
    config: Vec<u8>,
}

impl LoadedPlugin {
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// A fresh instance, initialized with the plugin's config.
    ///
    /// Instantiation runs guest code (core `start` functions) and allocates
    /// every memory and table, so it runs under the same deadline and limits
    /// as `init` and every call: the chain thread re-creates instances after
    /// a failure, and a plugin must not be able to hang or bloat it there.
    pub fn instantiate(&self) -> Result<PluginInstance, PluginError> {
        let mut store = Store::new(
            &self.engine,
            HostState {
                plugin: self.name.clone(),
                memory_limit: self.limits.memory_bytes,
                memory_used: 0,
                memory_pending: 0,
                memory_exceeded: false,
                table_elements: 0,
                log_budget: LOG_LINES_PER_CALL,
                log_suppressed: 0,
            },
        );
        store.limiter(|s| s);
        store.epoch_deadline_trap();
        let running = self.ticker.enter();
        store.set_epoch_deadline(self.limits.deadline_ticks());
        let instantiated = self.pre.instantiate(&mut store);
        drop(running);
        let bindings = instantiated.map_err(|e| PluginError::Start {
            plugin: self.name.to_string(),
            source: Box::new(failure(e, store.data(), &self.limits)),
        })?;
        let mut inst = PluginInstance {
            store,
            bindings,
            ticker: self.ticker.clone(),
            limits: self.limits,
            name: self.name.clone(),
            manifest: OnceLock::new(),
            prefilter: Prefilter::default(),
            rules: Arc::default(),
        };
        let raw = inst
            .guarded(|b, s| b.call_init(s, &self.config))
            .map_err(|e| PluginError::Init {
                plugin: self.name.to_string(),
                source: Box::new(e),
            })?;
        let bad_manifest = |source: ManifestError| PluginError::Manifest {
            plugin: self.name.to_string(),
            source,
        };
        let manifest: Manifest =
            codec::decode(&raw).map_err(|e| bad_manifest(ManifestError::Decode(e)))?;
        if !(MIN_ABI_VERSION..=ABI_VERSION).contains(&manifest.abi_version) {
            return Err(bad_manifest(ManifestError::Abi {
                found: manifest.abi_version,
            }));
        }
        inst.prefilter = Prefilter::compile(&manifest.prefilter)
            .map_err(|e| bad_manifest(ManifestError::Prefilter(e)))?;
        inst.rules = Arc::new(
            RuleTable::compile(&manifest.rules)
                .map_err(|e| bad_manifest(ManifestError::Rules(e)))?,
        );
        let _ = inst.manifest.set(manifest);
        Ok(inst)
    }
}

/// A live plugin instance. After any failure it must be dropped: a trapped
/// component instance cannot be entered again.
pub struct PluginInstance {
    store: Store<HostState>,
    bindings: bindings::Plugin,
    ticker: Arc<Ticker>,
    limits: Limits,
    name: Arc<str>,
    manifest: OnceLock<Manifest>,
    /// The manifest's prefilter, compiled.
    prefilter: Prefilter,
    /// The manifest's declared rules, compiled.
    rules: Arc<RuleTable>,
}

impl PluginInstance {
    pub fn manifest(&self) -> &Manifest {
        // Set in `instantiate` before the instance is handed out.
        self.manifest
            .get_or_init(|| Manifest::new(&self.name, "", &[]))
    }

    pub fn prefilter(&self) -> &Prefilter {
        &self.prefilter
    }

    /// What the plugin's fired rules are completed with.
    pub fn rules(&self) -> &Arc<RuleTable> {
        &self.rules
    }

    /// Linear memory the instance holds now, all memories together: what
    /// counts against `memory_limit_mib`.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().memory_used
    }

    /// Runs one batch: `batch` is a MessagePack array of `expected` events.
    pub fn process_batch(
        &mut self,
        batch: &[u8],
        expected: usize,
    ) -> Result<Vec<Verdict>, PluginError> {
        let raw = self.guarded(|b, s| b.call_process_batch(s, batch))?;
        if raw.len() > self.limits.max_output_bytes {
            return Err(PluginError::OutputTooLarge {
                got: raw.len(),
                limit: self.limits.max_output_bytes,
            });
        }
        // The count comes first, so a plugin cannot make the host decode
        // millions of verdicts nobody asked for (16 MiB of empty maps would
        // be over a gigabyte of `Verdict`s).
        let mut items = codec::ArrayDecoder::new(&raw).map_err(PluginError::Malformed)?;
        if items.len() != expected {
            return Err(PluginError::WrongCount {
                expected,
                got: items.len(),
            });
        }
        let mut verdicts = Vec::with_capacity(expected);
        for _ in 0..expected {
            let v: Verdict = items.item().map_err(PluginError::Malformed)?;
            self.rules.check(&v).map_err(PluginError::Undeclared)?;
            verdicts.push(v);
        }
        items.finish().map_err(PluginError::Malformed)?;
        Ok(verdicts)
    }

    /// Calls into the guest with a fresh deadline and log budget, and turns
    /// every way a call can fail into a [`PluginError`].
    fn guarded<F>(&mut self, call: F) -> Result<Vec<u8>, PluginError>
    where
        F: FnOnce(
            &bindings::Plugin,
            &mut Store<HostState>,
        ) -> wasmtime::Result<Result<Vec<u8>, String>>,
    {
        let running = self.ticker.enter();
        self.store.set_epoch_deadline(self.limits.deadline_ticks());
        self.store.data_mut().log_budget = LOG_LINES_PER_CALL;
        let result = call(&self.bindings, &mut self.store);
        drop(running);
        let state = self.store.data_mut();
        if state.log_suppressed > 0 {
            tracing::warn!(plugin = %state.plugin, "suppressed {} log lines from one call", state.log_suppressed);
            state.log_suppressed = 0;
        }
        match result {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(msg)) => Err(PluginError::Guest(clean(&msg))),
            Err(e) => Err(failure(e, state, &self.limits)),
        }
    }
}

/// Turns a wasmtime failure (a trap, an interrupt, a refused allocation)
/// into the [`PluginError`] that names its cause.
fn failure(e: wasmtime::Error, state: &HostState, limits: &Limits) -> PluginError {
    if state.memory_exceeded {
        return PluginError::Memory {
            limit_mib: (limits.memory_bytes >> 20) as u64,
        };
    }
    if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return PluginError::Deadline {
            deadline_ms: limits.deadline.as_millis() as u64,
        };
    }
    // Keep the wasm backtrace (it names the guest function) on one line.
    PluginError::Trap(clean(&format!("{e:#}").replace('\n', " | ")))
}

/// What the host keeps per store: limits and the log budget.
pub struct HostState {
    plugin: Arc<str>,
    /// The cap on all linear memories of the store together: a component
    /// may hold several core instances and each may have several memories,
    /// so a per-memory cap would multiply.
    memory_limit: usize,
    memory_used: usize,
    /// The growth last allowed, returned if the growth then fails.
    memory_pending: usize,
    memory_exceeded: bool,
    table_elements: usize,
    log_budget: u32,
    log_suppressed: u64,
}

impl wasmtime::ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current);
        let total = self.memory_used.saturating_add(grow);
        if total > self.memory_limit {
            self.memory_exceeded = true;
            // An error (not `Ok(false)`) traps at once: a guest allocator
            // would otherwise retry or abort in ways that hide the cause.
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} bytes exceeded",
                self.memory_limit
            )));
        }
        self.memory_used = total;
        self.memory_pending = grow;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_used = self.memory_used.saturating_sub(self.memory_pending);
        self.memory_pending = 0;
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .table_elements
            .saturating_add(desired.saturating_sub(current));
        if total > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.table_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

impl bindings::driftwatch::plugin::host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        if self.log_budget == 0 {
            self.log_suppressed += 1;
            return;
        }
        self.log_budget -= 1;
        let msg = clean(&message);
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(plugin, "{msg}"),
            Level::Debug => tracing::debug!(plugin, "{msg}"),
            Level::Info => tracing::info!(plugin, "{msg}"),
            Level::Warn => tracing::warn!(plugin, "{msg}"),
            Level::Error => tracing::error!(plugin, "{msg}"),
        }
    }
}

/// Guest text is untrusted: bound it and keep control characters out of logs.
fn clean(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(LOG_LINE_MAX)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() > LOG_LINE_MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn ticker() -> Ticker {
        let mut cfg = wasmtime::Config::new();
        cfg.epoch_interruption(true);
        let engine = wasmtime::Engine::new(&cfg).expect("engine");
        Ticker::start(engine).expect("ticker thread")
    }

    #[test]
    fn deadlines_count_cpu_time_not_wall_time() {
        let t = ticker();
        // A caller that is not running (descheduled, here asleep) spends no
        // CPU time: the epoch must not move for it.
        {
            let _call = t.enter();
            std::thread::sleep(Duration::from_millis(100));
        }
        let idle = t.shared.ticks.load(Ordering::Relaxed);
        assert!(idle <= 2, "a sleeping call advanced the epoch {idle} times");

        // A caller that spins 60 ms of CPU time earns about 30 ticks.
        {
            let _call = t.enter();
            let start = cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID).expect("own CPU clock");
            while cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID).unwrap_or(u64::MAX) - start < 60_000_000 {
                std::hint::spin_loop();
            }
            // The ticker may itself be descheduled; wait for it, bounded.
            let wait = Instant::now();
            while t.shared.ticks.load(Ordering::Relaxed) - idle < 25
                && wait.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let busy = t.shared.ticks.load(Ordering::Relaxed) - idle;
        assert!((25..=40).contains(&busy), "60 ms of CPU made {busy} ticks");
        assert!(t.shared.callers.lock().expect("lock").is_empty());
    }
}
