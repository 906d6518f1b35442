//! The kernel sensor: loads driftwatch's eBPF programs (tracepoints only),
//! attaches them, and turns their ring-buffer records into events.
//!
//! Start-up ([`EbpfSensor::start`]) is synchronous so `driftwatch run` fails
//! before anything else starts when the kernel cannot do it: not root, no
//! BTF, a missing tracepoint, a verifier rejection. Running
//! ([`Source::run`]) drains the ring buffer on the tokio runtime with a
//! bounded amount of work per wake-up.

pub mod btf;
pub mod record;
pub mod sys;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};
use driftwatch_common::{ArgLayout, Fault, Filter, FlagsMode, Kind, Op, SyscallSpec};
use driftwatch_sdk::{Event, EventKind, KindSet};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{BoxFuture, Source, SourceContext, SourceError};
use crate::config::{EbpfConfig, Scope};
use crate::stats::Stats;
use record::{Clock, Decoder};

/// The compiled programs, built by collector/build.rs with aya-build.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/driftwatch-ebpf"));

/// Ring-buffer items handled per wake-up before yielding to the runtime.
const DRAIN_BUDGET: usize = 512;
/// How often the in-kernel loss counter is read.
const LOSS_POLL: Duration = Duration::from_secs(1);
/// At most one loss warning per this interval.
const LOSS_LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "the kernel sensor needs root (CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN to load \
         tracepoint programs and mount tracefs); run `driftwatch run` as root"
    )]
    NotRoot,
    #[error(
        "this kernel has no BTF type information ({0} is missing): driftwatch reads kernel \
         struct offsets from it; use a kernel built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf(PathBuf),
    #[error("kernel BTF")]
    Btf(#[from] btf::BtfError),
    #[error("mounting {what} at {path}")]
    Mount {
        what: &'static str,
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "tracepoint {0} does not exist on this kernel (is CONFIG_FTRACE_SYSCALLS enabled, \
         and tracefs mounted?)"
    )]
    MissingTracepoint(String),
    #[error("tracepoint {name}: unexpected record layout in {path}: {detail}")]
    Layout {
        name: String,
        path: String,
        detail: String,
    },
    #[error("loading the eBPF object")]
    Load(#[source] aya::EbpfError),
    #[error("program {name}")]
    Program {
        name: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("{what} {name} is missing from the eBPF object (a build of another version?)")]
    Missing { what: &'static str, name: String },
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("ring buffer polling")]
    Poll(#[source] std::io::Error),
}

/// The sdk kind of a kernel kind: the one place the two meet.
pub fn event_kind(kind: Kind) -> EventKind {
    match kind {
        Kind::Exec => EventKind::Exec,
        Kind::OpenWrite => EventKind::OpenWrite,
        Kind::Chmod => EventKind::Chmod,
        Kind::Unlink => EventKind::Unlink,
        Kind::Rename => EventKind::Rename,
    }
}

/// The kernel kind of an sdk kind; None for kinds no program reports
/// (`file_drift` comes from the scan).
pub fn kernel_kind(kind: EventKind) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| event_kind(*k) == kind)
}

/// Which syscalls feed which kind, and how the program finds their
/// arguments.
struct Syscall {
    name: &'static str,
    nr: libc::c_long,
    spec: SyscallSpec,
}

impl Syscall {
    fn kind(&self) -> Option<Kind> {
        self.spec.op().map(Op::kind)
    }
}

fn syscalls() -> Vec<Syscall> {
    use ArgLayout::*;
    let s = |name, nr, op, args, flags_mode| Syscall {
        name,
        nr,
        spec: SyscallSpec::new(op, args, flags_mode),
    };
    let mut v = vec![
        s(
            "openat",
            libc::SYS_openat,
            Op::Open,
            DfdPath,
            FlagsMode::Openat,
        ),
        s(
            "openat2",
            libc::SYS_openat2,
            Op::Open,
            DfdPath,
            FlagsMode::Openat2,
        ),
        s("fchmod", libc::SYS_fchmod, Op::Chmod, Fd, FlagsMode::Chmod),
        s(
            "fchmodat",
            libc::SYS_fchmodat,
            Op::Chmod,
            DfdPath,
            FlagsMode::Chmod,
        ),
        s(
            "unlinkat",
            libc::SYS_unlinkat,
            Op::Unlink,
            DfdPath,
            FlagsMode::None,
        ),
        s(
            "renameat",
            libc::SYS_renameat,
            Op::Rename,
            DfdPathDfdPath,
            FlagsMode::None,
        ),
        s(
            "renameat2",
            libc::SYS_renameat2,
            Op::Rename,
            DfdPathDfdPath,
            FlagsMode::None,
        ),
    ];
    // The legacy syscalls exist on x86-64 but not on newer architectures.
    #[cfg(target_arch = "x86_64")]
    v.extend([
        s("open", libc::SYS_open, Op::Open, Path, FlagsMode::Open),
        s("creat", libc::SYS_creat, Op::Open, Path, FlagsMode::Creat),
        s("chmod", libc::SYS_chmod, Op::Chmod, Path, FlagsMode::Chmod),
        s(
            "unlink",
            libc::SYS_unlink,
            Op::Unlink,
            Path,
            FlagsMode::None,
        ),
        s(
            "rename",
            libc::SYS_rename,
            Op::Rename,
            PathPath,
            FlagsMode::None,
        ),
    ]);
    v
}

/// The loaded and attached sensor. Dropping it detaches every program.
pub struct EbpfSensor {
    bpf: Ebpf,
    ring: RingBuf<MapData>,
    clock: Clock,
    /// `None`: the kernel wakes the reader for every record.
    drain_every: Option<Duration>,
}

impl EbpfSensor {
    /// Checks privileges, mounts tracefs/bpffs when missing, resolves
    /// offsets from BTF, loads the programs and attaches the ones that feed
    /// the `kinds` the chain asked for.
    pub fn start(cfg: &EbpfConfig, kinds: KindSet) -> Result<EbpfSensor, EbpfError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(EbpfError::NotRoot);
        }
        let kbtf = btf::KernelBtf::load()?;
        let offsets = kbtf.offsets()?;
        tracing::debug!(?offsets, "kernel offsets from BTF");
        sys::mount_tracefs()?;
        sys::mount_bpffs();
        // The kinds asked for that a program reports, as the kernel knows them.
        let kinds: u32 = kinds
            .iter()
            .filter_map(kernel_kind)
            .fold(0, |set, k| set | k.bit());
        let exec = kinds & Kind::Exec.bit() != 0;
        let all = syscalls();
        let wanted: Vec<&Syscall> = all
            .iter()
            .filter(|s| s.kind().is_some_and(|k| kinds & k.bit() != 0))
            .collect();
        // Check every tracepoint before loading anything, for one clear error.
        if exec {
            sys::check_tracepoint("sched", "sched_process_exec")?;
        }
        for s in &wanted {
            sys::check_syscall_layout(s.name)?;
        }

        let ring_bytes = ring_size(cfg.ring_buffer_kib);
        let filter = Filter {
            self_tgid: std::process::id(),
            containers_only: u32::from(cfg.scope == Scope::Containers),
            kinds,
            fmode_created: sys::FMODE_CREATED,
            wakeup_bytes: if cfg.drain_interval_ms == 0 {
                0
            } else {
                ring_bytes / 4
            },
        };
        let mut bpf = EbpfLoader::new()
            .override_global("OFFSETS", &offsets, true)
            .override_global("FILTER", &filter, true)
            .map_max_entries("EVENTS", ring_bytes)
            .load(PROGRAMS)
            .map_err(EbpfError::Load)?;

        {
            let map_err = |source| EbpfError::Map {
                name: "SYSCALLS",
                source,
            };
            let map = bpf
                .map_mut("SYSCALLS")
                .ok_or_else(|| missing_map("SYSCALLS"))?;
            let mut table: BpfHashMap<_, u32, SyscallSpec> =
                BpfHashMap::try_from(map).map_err(map_err)?;
            for s in &wanted {
                table.insert(s.nr as u32, s.spec, 0).map_err(map_err)?;
            }
        }

        if exec {
            attach(
                &mut bpf,
                "sched_process_exec",
                &[("sched", "sched_process_exec")],
            )?;
            // Linux 6.10+. Without it an exec's previous program is unknown,
            // which only withholds the exemptions that need it (the
            // container's entrypoint, the runtime's own re-exec): those
            // execs are then reported like any other.
            if sys::check_tracepoint("sched", "sched_prepare_exec").is_ok() {
                attach(
                    &mut bpf,
                    "sched_prepare_exec",
                    &[("sched", "sched_prepare_exec")],
                )?;
            } else {
                tracing::warn!(
                    "tracepoint sched:sched_prepare_exec is missing (Linux < 6.10): \
                     entrypoint and runtime re-exec exemptions are off, those execs are reported"
                );
            }
        }
        if !wanted.is_empty() {
            let enters: Vec<(&str, String)> = wanted
                .iter()
                .map(|s| ("syscalls", format!("sys_enter_{}", s.name)))
                .collect();
            let exits: Vec<(&str, String)> = wanted
                .iter()
                .map(|s| ("syscalls", format!("sys_exit_{}", s.name)))
                .collect();
            // Exits first: an enter without its exit would only leave a
            // stale map entry, an exit without its enter does nothing.
            attach_owned(&mut bpf, "sys_exit_file", &exits)?;
            attach_owned(&mut bpf, "sys_enter_file", &enters)?;
        }

        let events = bpf
            .take_map("EVENTS")
            .ok_or_else(|| missing_map("EVENTS"))?;
        let ring = RingBuf::try_from(events).map_err(|source| EbpfError::Map {
            name: "EVENTS",
            source,
        })?;
        tracing::info!(
            scope = ?cfg.scope,
            ring_buffer_bytes = ring_bytes,
            syscalls = wanted.len(),
            exec,
            "kernel sensor attached"
        );
        Ok(EbpfSensor {
            bpf,
            ring,
            clock: Clock::now(),
            drain_every: (cfg.drain_interval_ms > 0)
                .then(|| Duration::from_millis(cfg.drain_interval_ms)),
        })
    }
}

fn missing_map(name: &str) -> EbpfError {
    EbpfError::Missing {
        what: "map",
        name: name.to_string(),
    }
}

/// The ring buffer size: a power of two number of pages, at least one page.
fn ring_size(kib: u32) -> u32 {
    let bytes = (kib as u64 * 1024).clamp(4096, 1 << 30);
    bytes.next_power_of_two() as u32
}

fn attach(bpf: &mut Ebpf, prog: &str, points: &[(&str, &str)]) -> Result<(), EbpfError> {
    let owned: Vec<(&str, String)> = points.iter().map(|(c, n)| (*c, n.to_string())).collect();
    attach_owned(bpf, prog, &owned)
}

fn attach_owned(bpf: &mut Ebpf, prog: &str, points: &[(&str, String)]) -> Result<(), EbpfError> {
    let perr = |source| EbpfError::Program {
        name: prog.to_string(),
        source,
    };
    let p: &mut TracePoint = bpf
        .program_mut(prog)
        .ok_or_else(|| EbpfError::Missing {
            what: "program",
            name: prog.to_string(),
        })?
        .try_into()
        .map_err(perr)?;
    p.load().map_err(perr)?;
    for (cat, name) in points {
        p.attach(cat, name).map_err(|source| EbpfError::Program {
            name: format!("{prog} on {cat}:{name}"),
            source,
        })?;
    }
    Ok(())
}

/// The kernel sensor as a pipeline source.
pub struct EbpfSource {
    sensor: EbpfSensor,
}

impl EbpfSource {
    pub fn new(sensor: EbpfSensor) -> EbpfSource {
        EbpfSource { sensor }
    }
}

impl Source for EbpfSource {
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<Result<(), SourceError>> {
        Box::pin(async move {
            drain(self.sensor, ctx)
                .await
                .map_err(|e| SourceError::Failed {
                    source_name: "ebpf",
                    source: Box::new(e),
                })
        })
    }
}

struct LossReport {
    last_total: u64,
    logged_total: u64,
    last_log: Option<Instant>,
}

impl LossReport {
    fn update(&mut self, total: u64, stats: &Stats) {
        if total == self.last_total {
            return;
        }
        self.last_total = total;
        stats.kernel_lost.store(total, Ordering::Relaxed);
        if self.last_log.is_none_or(|t| t.elapsed() >= LOSS_LOG_EVERY) {
            tracing::warn!(
                lost = total - self.logged_total,
                total,
                "kernel ring buffer full: records lost (raise sources.ebpf.ring_buffer_kib)"
            );
            self.logged_total = total;
            self.last_log = Some(Instant::now());
        }
    }
}

/// The `FAULTS` counters: facts the kernel could not read, by `Fault`.
struct FaultReport {
    last: [u64; Fault::COUNT],
    logged: [u64; Fault::COUNT],
    last_log: Option<Instant>,
}

impl FaultReport {
    fn update(&mut self, counts: [u64; Fault::COUNT], stats: &Stats) {
        if counts == self.last {
            return;
        }
        self.last = counts;
        let total: u64 = counts.iter().sum();
        stats.kernel_read_faults.store(total, Ordering::Relaxed);
        if self.last_log.is_none_or(|t| t.elapsed() >= LOSS_LOG_EVERY) {
            let facts: Vec<String> = Fault::ALL
                .iter()
                .zip(counts.iter().zip(self.logged))
                .filter(|(_, (n, logged))| **n > *logged)
                .map(|(f, (n, logged))| format!("{} {}", f.name(), n - logged))
                .collect();
            tracing::warn!(
                facts = %facts.join(", "),
                total,
                "kernel reads failed: these facts are reported as unknown (docs/sensor.md, \
                 \"Unread facts\")"
            );
            self.logged = counts;
            self.last_log = Some(Instant::now());
        }
    }
}

/// The sum over CPUs of a per-CPU counter map's `N` slots; zeroes for a
/// map that cannot be read.
fn counters<const N: usize>(bpf: &Ebpf, name: &str) -> [u64; N] {
    let mut out = [0; N];
    let Some(map) = bpf
        .map(name)
        .and_then(|m| PerCpuArray::<_, u64>::try_from(m).ok())
    else {
        return out;
    };
    for (i, slot) in out.iter_mut().enumerate() {
        if let Ok(v) = map.get(&(i as u32), 0) {
            *slot = v.iter().sum();
        }
    }
    out
}

/// The host's mount namespace: that of pid 1 of the pid namespace the
/// daemon sees (the host's, as it runs on the host or with `hostPID`). 0
/// when unreadable, which leaves the runtime's set-up execs unexempted.
fn host_mount_ns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata("/proc/1/ns/mnt") {
        Ok(m) => m.ino(),
        Err(e) => {
            tracing::warn!(
                "reading /proc/1/ns/mnt: {e}: the container runtime's own execs \
                 cannot be told apart and are judged like the container's"
            );
            0
        }
    }
}

async fn drain(sensor: EbpfSensor, mut ctx: SourceContext) -> Result<(), EbpfError> {
    let EbpfSensor {
        bpf,
        ring,
        clock,
        drain_every,
    } = sensor;
    let sensor_maps = bpf;
    // SAFETY: the ring buffer owns its map fd and keeps it open, unchanged,
    // for as long as the AsyncFd owns the ring buffer.
    let mut afd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| EbpfError::Poll(std::io::Error::from(e)))?;
    let mut decoder = Decoder::new(clock, ctx.hostname.clone(), host_mount_ns());
    let mut losses = LossReport {
        last_total: 0,
        logged_total: 0,
        last_log: None,
    };
    let mut faults = FaultReport {
        last: [0; Fault::COUNT],
        logged: [0; Fault::COUNT],
        last_log: None,
    };
    let mut tick = tokio::time::interval(LOSS_POLL);
    // Records committed without a wake-up are picked up by this timer.
    let mut drain_tick = tokio::time::interval(drain_every.unwrap_or(LOSS_POLL));
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch: Vec<Event> = Vec::with_capacity(DRAIN_BUDGET);
    loop {
        // Whether the ring may hold more than one budget's worth.
        let more = tokio::select! {
            biased;
            _ = ctx.shutdown.changed() => break,
            _ = tick.tick() => {
                let [lost] = counters(&sensor_maps, "LOST");
                losses.update(lost, &ctx.stats);
                faults.update(counters(&sensor_maps, "FAULTS"), &ctx.stats);
                false
            }
            _ = drain_tick.tick(), if drain_every.is_some() => {
                take(afd.get_mut(), &mut decoder, &mut batch) == DRAIN_BUDGET
            }
            guard = afd.readable_mut() => {
                let mut guard = guard.map_err(EbpfError::Poll)?;
                let n = take(guard.get_inner_mut(), &mut decoder, &mut batch);
                if n < DRAIN_BUDGET {
                    // Empty: wait for the next wake-up. With budget left
                    // over we come back without clearing.
                    guard.clear_ready();
                }
                n == DRAIN_BUDGET
            }
        };
        for ev in batch.drain(..) {
            if ctx.events.send(ev).await.is_err() {
                return Ok(());
            }
        }
        if more {
            // A full budget: keep draining, but let the runtime breathe.
            tokio::task::yield_now().await;
            drain_tick.reset_immediately();
        }
        if *ctx.shutdown.borrow() {
            break;
        }
    }
    // Detach first so nothing new arrives, then flush what is queued.
    drop(sensor_maps);
    let ring = afd.get_mut();
    while let Some(item) = ring.next() {
        if let Some(ev) = decoder.decode(&item)
            && ctx.events.send(ev).await.is_err()
        {
            break;
        }
    }
    tracing::info!("kernel sensor detached");
    Ok(())
}

/// Moves up to one budget of records from the ring into `batch`; returns
/// how many records it consumed.
fn take(ring: &mut RingBuf<MapData>, decoder: &mut Decoder, batch: &mut Vec<Event>) -> usize {
    let mut n = 0;
    while n < DRAIN_BUDGET {
        let Some(item) = ring.next() else { break };
        n += 1;
        if let Some(ev) = decoder.decode(&item) {
            batch.push(ev);
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_are_powers_of_two_pages() {
        assert_eq!(ring_size(0), 4096);
        assert_eq!(ring_size(1), 4096);
        assert_eq!(ring_size(8192), 8 << 20);
        assert_eq!(ring_size(5000), 8 << 20);
    }

    #[test]
    fn every_syscall_has_a_kind_and_distinct_number() {
        let all = syscalls();
        let mut nrs: Vec<_> = all.iter().map(|s| s.nr).collect();
        nrs.sort();
        nrs.dedup();
        assert_eq!(nrs.len(), all.len());
        for s in &all {
            assert!(s.kind().is_some(), "{}", s.name);
            assert!(s.spec.args().is_some(), "{}", s.name);
        }
    }

    #[test]
    fn sdk_and_kernel_kinds_map_one_to_one() {
        for k in Kind::ALL {
            assert_eq!(kernel_kind(event_kind(k)), Some(k));
        }
        let reported = EventKind::ALL
            .into_iter()
            .filter(|k| kernel_kind(*k).is_some())
            .count();
        assert_eq!(reported, Kind::ALL.len());
        assert_eq!(kernel_kind(EventKind::FileDrift), None);
    }

    #[test]
    fn syscall_specs_round_trip() {
        for s in syscalls() {
            let spec = SyscallSpec::new(
                s.spec.op().expect("an op"),
                s.spec.args().expect("a layout"),
                s.spec.flags_mode(),
            );
            assert_eq!(spec, s.spec, "{}", s.name);
        }
    }
}
