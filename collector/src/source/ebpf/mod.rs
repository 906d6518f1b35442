//! The kernel sensor: loads driftwatch's eBPF programs (tracepoints only),
//! attaches them, and turns their ring-buffer records into events.
//!
//! Start-up ([`EbpfSensor::start`]) is synchronous so `driftwatch run` fails
//! before anything else starts when the kernel cannot do it: not root, no
//! BTF, a missing tracepoint, a verifier rejection. Running
//! ([`Source::run`]) drains the ring buffer on the tokio runtime with a
//! bounded amount of work per wake-up.

pub mod aggregate;
pub mod btf;
pub mod enforcement;
pub mod prefilter;
pub mod record;
pub mod sys;
pub mod writers;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use driftwatch_common::{
    ABI_SPAN, ArgLayout, Budget, Fault, FileFilter, Filter, IoUringOffsets, Kind, Op, SyscallSpec,
    lane, map_fail, spec,
};
use driftwatch_sdk::{Event, EventKind, KindSet};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{BoxFuture, Source, SourceContext, SourceError};
use crate::config::{EbpfConfig, EnforcementConfig, Scope};
use crate::health::Check;
use crate::stats::Stats;
use aggregate::Folds;
use enforcement::{Enforcer, PolicyMaps};
use prefilter::{KernelPrefilter, LivePrefilter, SharedPrefilter};
use record::{Clock, Decoder};
use writers::KernelWriters;

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
        Kind::Link => EventKind::Link,
        Kind::Symlink => EventKind::Symlink,
        Kind::Truncate => EventKind::Truncate,
        Kind::Chown => EventKind::Chown,
        Kind::IoUringSetup => EventKind::IoUringSetup,
    }
}

/// The kernel kind of an sdk kind; None for kinds no program reports
/// (`file_drift` comes from the scan).
pub fn kernel_kind(kind: EventKind) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| event_kind(*k) == kind)
}

/// Which syscalls feed which kind, and how the program finds their
/// arguments: `index` is the syscall's slot in `SYSCALLS` (its number, plus
/// `ABI_SPAN` for the 32-bit gate).
struct Syscall {
    name: &'static str,
    index: u32,
    spec: SyscallSpec,
}

impl Syscall {
    fn kind(&self) -> Option<Kind> {
        self.spec.op().map(Op::kind)
    }
}

/// Every file syscall the sensor follows, native and through the 32-bit
/// gate (x86-64's `arch/x86/entry/syscalls/syscall_{64,32}.tbl`).
fn syscalls() -> Vec<Syscall> {
    use ArgLayout::*;
    let open = SyscallSpec::new(Op::Open, DfdPath).flags_at(2).mode_at(3);
    let open_legacy = SyscallSpec::new(Op::Open, Path).flags_at(1).mode_at(2);
    let creat = SyscallSpec::new(Op::Open, Path)
        .mode_at(1)
        .with(spec::CREAT);
    let openat2 = SyscallSpec::new(Op::Open, DfdPath).with(spec::OPEN_HOW);
    let by_handle = SyscallSpec::new(Op::Open, NoFile)
        .flags_at(2)
        .with(spec::BY_HANDLE);
    let chmod = SyscallSpec::new(Op::Chmod, Path).mode_at(1);
    let fchmod = SyscallSpec::new(Op::Chmod, Fd).mode_at(1);
    let fchmodat = SyscallSpec::new(Op::Chmod, DfdPath).mode_at(2);
    let chown = SyscallSpec::new(Op::Chown, Path).values_at(1, Some(2));
    let fchown = SyscallSpec::new(Op::Chown, Fd).values_at(1, Some(2));
    let fchownat = SyscallSpec::new(Op::Chown, DfdPath).values_at(2, Some(3));
    let unlink = SyscallSpec::new(Op::Unlink, Path);
    let unlinkat = SyscallSpec::new(Op::Unlink, DfdPath);
    let rename = SyscallSpec::new(Op::Rename, PathPath);
    let renameat = SyscallSpec::new(Op::Rename, DfdPathDfdPath);
    let link = SyscallSpec::new(Op::Link, PathPath);
    let linkat = SyscallSpec::new(Op::Link, DfdPathDfdPath);
    let symlink = SyscallSpec::new(Op::Symlink, PathPath);
    let symlinkat = SyscallSpec::new(Op::Symlink, PathDfdPath);
    let truncate = SyscallSpec::new(Op::Truncate, Path).values_at(1, None);
    let ftruncate = SyscallSpec::new(Op::Truncate, Fd).values_at(1, None);
    let io_uring = SyscallSpec::new(Op::IoUringSetup, NoFile);
    let native = |name, nr: libc::c_long, spec| Syscall {
        name,
        index: nr as u32,
        spec,
    };
    let mut v = vec![
        native("openat", libc::SYS_openat, open),
        native("openat2", libc::SYS_openat2, openat2),
        native("open_by_handle_at", libc::SYS_open_by_handle_at, by_handle),
        native("fchmod", libc::SYS_fchmod, fchmod),
        native("fchmodat", libc::SYS_fchmodat, fchmodat),
        native("fchmodat2", 452, fchmodat),
        native("fchown", libc::SYS_fchown, fchown),
        native("fchownat", libc::SYS_fchownat, fchownat),
        native("unlinkat", libc::SYS_unlinkat, unlinkat),
        native("renameat", libc::SYS_renameat, renameat),
        native("renameat2", libc::SYS_renameat2, renameat),
        native("linkat", libc::SYS_linkat, linkat),
        native("symlinkat", libc::SYS_symlinkat, symlinkat),
        native("ftruncate", libc::SYS_ftruncate, ftruncate),
        native("io_uring_setup", libc::SYS_io_uring_setup, io_uring),
    ];
    // The legacy syscalls exist on x86-64 but not on newer architectures;
    // so does the 32-bit gate.
    #[cfg(target_arch = "x86_64")]
    {
        v.extend([
            native("open", libc::SYS_open, open_legacy),
            native("creat", libc::SYS_creat, creat),
            native("chmod", libc::SYS_chmod, chmod),
            native("chown", libc::SYS_chown, chown),
            native("lchown", libc::SYS_lchown, chown),
            native("unlink", libc::SYS_unlink, unlink),
            native("rmdir", libc::SYS_rmdir, unlink),
            native("rename", libc::SYS_rename, rename),
            native("link", libc::SYS_link, link),
            native("symlink", libc::SYS_symlink, symlink),
            native("truncate", libc::SYS_truncate, truncate),
        ]);
        let compat = |name, nr: u32, spec| Syscall {
            name,
            index: ABI_SPAN + nr,
            spec,
        };
        let id16 = spec::ID16;
        v.extend([
            compat("open/32", 5, open_legacy),
            compat("creat/32", 8, creat),
            compat("link/32", 9, link),
            compat("unlink/32", 10, unlink),
            compat("chmod/32", 15, chmod),
            compat("lchown16/32", 16, chown.with(id16)),
            compat("rename/32", 38, rename),
            compat("rmdir/32", 40, unlink),
            compat("symlink/32", 83, symlink),
            compat("truncate/32", 92, truncate),
            compat("ftruncate/32", 93, ftruncate),
            compat("fchmod/32", 94, fchmod),
            compat("fchown16/32", 95, fchown.with(id16)),
            compat("chown16/32", 182, chown.with(id16)),
            compat(
                "truncate64/32",
                193,
                SyscallSpec::new(Op::Truncate, Path).values_at(1, Some(2)),
            ),
            compat(
                "ftruncate64/32",
                194,
                SyscallSpec::new(Op::Truncate, Fd).values_at(1, Some(2)),
            ),
            compat("lchown/32", 198, chown),
            compat("fchown/32", 207, fchown),
            compat("chown/32", 212, chown),
            compat("openat/32", 295, open),
            compat("fchownat/32", 298, fchownat),
            compat("unlinkat/32", 301, unlinkat),
            compat("renameat/32", 302, renameat),
            compat("linkat/32", 303, linkat),
            compat("symlinkat/32", 304, symlinkat),
            compat("fchmodat/32", 306, fchmodat),
            compat("open_by_handle_at/32", 342, by_handle),
            compat("renameat2/32", 353, renameat),
            compat("io_uring_setup/32", 425, io_uring),
            compat("openat2/32", 437, openat2),
            compat("fchmodat2/32", 452, fchmodat),
        ]);
    }
    v
}

/// The loaded and attached sensor. Dropping it detaches every program.
pub struct EbpfSensor {
    bpf: Ebpf,
    /// The exec lane (execs and the file records drift rests on).
    ring: RingBuf<MapData>,
    /// The file lane.
    file_ring: RingBuf<MapData>,
    clock: Clock,
    /// `None`: the kernel wakes the reader for every record.
    drain_every: Option<Duration>,
    /// The `READER` flag: set while the daemon sleeps until a wake-up.
    reader: Array<MapData, u32>,
    enforcer: Enforcer,
    /// The kernel prefilter's bitmap, rewritten on reload.
    prefilter: Option<SharedPrefilter>,
    /// The host's mount namespace (inode number), 0 when unreadable.
    host_mnt_ns: u64,
    /// The kernel's last writer of each file, until the daemon takes it
    /// for its enrichers.
    writers: Option<KernelWriters>,
    /// Repeats folded in the kernel, reported; `None` when folding is off.
    folds: Option<Folds>,
}

impl EbpfSensor {
    /// Checks privileges, mounts tracefs/bpffs when missing, resolves
    /// offsets from BTF, loads the programs and attaches the ones that feed
    /// the `kinds` the chain asked for. `prefilter` says which file records
    /// no plugin would be given (dropped in the kernel when
    /// `kernel_prefilter` is on). `enforcement` is the first policy
    /// written into the kernel; [`EbpfSensor::enforcer`] writes later ones.
    pub fn start(
        cfg: &EbpfConfig,
        kinds: KindSet,
        prefilter: &KernelPrefilter,
        enforcement: &EnforcementConfig,
    ) -> Result<EbpfSensor, EbpfError> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(EbpfError::NotRoot);
        }
        let kbtf = btf::KernelBtf::load()?;
        let offsets = kbtf.offsets()?;
        let syscall_offsets = kbtf.syscall_offsets()?;
        let io_uring_offsets = kbtf.io_uring_offsets();
        // Parsed BTF is the start's largest allocation, and aya parses it
        // twice more below: not three at once.
        drop(kbtf);
        tracing::debug!(
            ?offsets,
            ?syscall_offsets,
            ?io_uring_offsets,
            "kernel offsets from BTF"
        );
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
        if !wanted.is_empty() {
            sys::check_tracepoint("raw_syscalls", "sys_exit")?;
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
        // On even when the chain at start drops nothing: a reload may add a
        // plugin whose prefilter does.
        let use_prefilter = cfg.kernel_prefilter;
        let file_filter = FileFilter {
            budget_per_sec: cfg.container_events_per_sec,
            budget_burst: cfg.container_burst,
            agg_window_ns: cfg.aggregate_window_ms.saturating_mul(1_000_000),
            prefilter: u32::from(use_prefilter),
            host_root_dev: sys::host_root_dev(),
        };
        let mut bpf = EbpfLoader::new()
            .override_global("OFFSETS", &offsets, true)
            .override_global("FILTER", &filter, true)
            .override_global("SYSCALL_OFFSETS", &syscall_offsets, true)
            .override_global("FILE_FILTER", &file_filter, true)
            .override_global(
                "IO_URING_OFFSETS",
                io_uring_offsets
                    .as_ref()
                    .unwrap_or(&IoUringOffsets::default()),
                true,
            )
            .map_max_entries("EVENTS", ring_bytes)
            .map_max_entries("FILE_EVENTS", ring_bytes)
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
            let mut table: Array<_, SyscallSpec> = Array::try_from(map).map_err(map_err)?;
            for s in &wanted {
                table.set(s.index, s.spec, 0).map_err(map_err)?;
            }
            tracing::debug!(
                syscalls = ?wanted.iter().map(|s| s.name).collect::<Vec<_>>(),
                "file syscalls followed"
            );
        }
        let mut live_prefilter = None;
        if use_prefilter {
            let map_err = |source| EbpfError::Map {
                name: "KERNEL_DROP",
                source,
            };
            let table: Array<_, u64> = take_map(&mut bpf, "KERNEL_DROP")?;
            let prefixes = take_map(&mut bpf, "PREFIXES")?;
            live_prefilter = Some(Arc::new(Mutex::new(
                LivePrefilter::new(table, prefixes, prefilter).map_err(map_err)?,
            )));
            tracing::info!(
                prefixes = ?prefilter.paths,
                "kernel prefilter on: file records no plugin would be given are dropped in the kernel"
            );
        }

        if !exec {
            tracing::warn!(
                "no plugin asks for exec events: [enforcement] judges nothing \
                 (enable drift-binary)"
            );
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
            // aya's own parse of the kernel's BTF, which it needs to find
            // a BTF tracepoint's type: done once for both programs.
            let btf = aya::Btf::from_sys_fs().map_err(|e| EbpfError::Program {
                name: "sys_exit_file: the kernel's BTF".to_string(),
                source: aya::programs::ProgramError::Btf(e),
            })?;
            attach_btf_tracepoint(&mut bpf, &btf, "sys_exit_file", "sys_exit")?;
            // A kernel without io_uring (or with its structs renamed) loses
            // only this: the rings' file operations are then unseen, and
            // io_uring_setup still raises its finding.
            let io_uring = io_uring_offsets.map_err(|e| e.to_string()).and_then(|_| {
                attach_btf_tracepoint(&mut bpf, &btf, "io_uring_submit_req", "io_uring_submit_req")
                    .map_err(|e| crate::error::with_causes(&e))
            });
            if let Err(why) = io_uring {
                tracing::warn!(
                    "io_uring file operations are not captured ({why}); \
                     only io_uring_setup is reported"
                );
            }
        }

        let ring: RingBuf<MapData> = take_map(&mut bpf, "EVENTS")?;
        let file_ring: RingBuf<MapData> = take_map(&mut bpf, "FILE_EVENTS")?;
        let reader = take_map(&mut bpf, "READER")?;
        tracing::info!(
            scope = ?cfg.scope,
            ring_buffer_bytes = ring_bytes,
            syscalls = wanted.len(),
            exec,
            container_events_per_sec = cfg.container_events_per_sec,
            "kernel sensor attached"
        );
        // Until this is written the policy reads as off: nothing is judged
        // in the moment between attaching and here.
        let host_mnt_ns = host_mount_ns();
        let enforcer = Arc::new(Mutex::new(PolicyMaps::take(
            &mut bpf,
            enforcement,
            host_mnt_ns,
        )?));
        let clock = Clock::now();
        let writers = Some(KernelWriters::take(&mut bpf, clock)?);
        let folds = Folds::take(&mut bpf, file_filter.agg_window_ns, clock)?;
        Ok(EbpfSensor {
            host_mnt_ns,
            writers,
            folds,
            bpf,
            ring,
            file_ring,
            clock,
            drain_every: (cfg.drain_interval_ms > 0)
                .then(|| Duration::from_millis(cfg.drain_interval_ms)),
            reader,
            enforcer,
            prefilter: live_prefilter,
        })
    }

    /// The kernel prefilter, for reloads; `None` when it is off (it cannot
    /// be turned on without a restart).
    pub fn prefilter(&self) -> Option<SharedPrefilter> {
        self.prefilter.clone()
    }

    /// The kernel's last-writer map as an enricher (`drift.writer.*`);
    /// `None` once taken.
    pub fn take_writers(&mut self) -> Option<KernelWriters> {
        self.writers.take()
    }

    /// The policy maps, for reloads and for classifying containers.
    pub fn enforcer(&self) -> Enforcer {
        self.enforcer.clone()
    }
}

/// The map `name`, taken out of `bpf` as a `T`.
pub(super) fn take_map<T>(bpf: &mut Ebpf, name: &'static str) -> Result<T, EbpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = bpf.take_map(name).ok_or_else(|| missing_map(name))?;
    T::try_from(map).map_err(|source| EbpfError::Map { name, source })
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

/// Loads and attaches the BTF tracepoint program `prog` to `tracepoint`:
/// typed arguments, which the program loads from directly instead of with
/// a probe-read helper (see collector-ebpf/src/file.rs).
fn attach_btf_tracepoint(
    bpf: &mut Ebpf,
    btf: &aya::Btf,
    prog: &str,
    tracepoint: &str,
) -> Result<(), EbpfError> {
    let perr = |source| EbpfError::Program {
        name: prog.to_string(),
        source,
    };
    let p: &mut BtfTracePoint = bpf
        .program_mut(prog)
        .ok_or_else(|| EbpfError::Missing {
            what: "program",
            name: prog.to_string(),
        })?
        .try_into()
        .map_err(perr)?;
    p.load(tracepoint, btf).map_err(perr)?;
    p.attach().map_err(|source| EbpfError::Program {
        name: format!("{prog} on BTF tracepoint {tracepoint}"),
        source,
    })?;
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

/// The `LOST` counters (records a lane's ring buffer had no room for):
/// into the stats, a rate-limited warning and a health finding per lane.
struct LossReport {
    last: [u64; lane::COUNT as usize],
    logged_total: u64,
    last_log: Option<Instant>,
}

fn lane_name(i: usize) -> &'static str {
    if i as u32 == lane::EXEC {
        "exec"
    } else {
        "file"
    }
}

impl LossReport {
    fn update(&mut self, lost: [u64; lane::COUNT as usize], stats: &Stats) {
        if lost == self.last {
            return;
        }
        for (i, (now, before)) in lost.iter().zip(self.last).enumerate() {
            if *now > before {
                stats.health.raise(
                    Check::KernelLoss,
                    lane_name(i),
                    now - before,
                    format!(
                        "lane={} ring buffer full: records lost before any rule saw them \
                         (raise sources.ebpf.ring_buffer_kib)",
                        lane_name(i)
                    ),
                    None,
                );
            }
        }
        self.last = lost;
        let total: u64 = lost.iter().sum();
        stats.kernel_lost.store(total, Ordering::Relaxed);
        if self.last_log.is_none_or(|t| t.elapsed() >= LOSS_LOG_EVERY) {
            tracing::warn!(
                lost = total - self.logged_total,
                total,
                exec_lane = lost[lane::EXEC as usize],
                file_lane = lost[lane::FILE as usize],
                "kernel ring buffer full: records lost (raise sources.ebpf.ring_buffer_kib)"
            );
            self.logged_total = total;
            self.last_log = Some(Instant::now());
        }
    }
}

/// Records dropped in the kernel over a container's budget, and failed
/// inserts into the budget map: per container, as health findings.
struct BudgetReport {
    drops: u64,
    /// What each cgroup's `BUDGET` entry said last time: dropped, lost.
    seen: std::collections::HashMap<u64, (u64, u64)>,
    map_fails: [u64; map_fail::COUNT as usize],
}

impl BudgetReport {
    fn update(&mut self, bpf: &Ebpf, decoder: &Decoder, stats: &Stats) {
        let fails: [u64; map_fail::COUNT as usize] = counters(bpf, "MAP_FAILS");
        for (slot, map, what) in [
            (
                map_fail::BUDGET,
                "BUDGET",
                "records went out without a container budget",
            ),
            (
                map_fail::AGG,
                "AGG",
                "writes went out unfolded, one record each",
            ),
        ] {
            let (now, before) = (fails[slot as usize], self.map_fails[slot as usize]);
            if now > before {
                stats.health.raise(
                    Check::MapInsertFailed,
                    map,
                    now - before,
                    format!("map={map}: {what}"),
                    None,
                );
            }
        }
        self.map_fails = fails;
        let [drops] = counters(bpf, "DROPS");
        if drops == self.drops {
            return;
        }
        stats
            .kernel_dropped
            .fetch_add(drops.saturating_sub(self.drops), Ordering::Relaxed);
        self.drops = drops;
        let Some(map) = bpf
            .map("BUDGET")
            .and_then(|m| BpfHashMap::<_, u64, Budget>::try_from(m).ok())
        else {
            return;
        };
        for (cgroup, b) in map.iter().flatten() {
            let (dropped, _) = self.seen.get(&cgroup).copied().unwrap_or_default();
            // A smaller count is a new entry for the same cgroup (the old one
            // aged out): all of it is new.
            let new = if b.dropped >= dropped {
                b.dropped - dropped
            } else {
                b.dropped
            };
            self.seen.insert(cgroup, (b.dropped, b.lost));
            if new == 0 {
                continue;
            }
            let container = decoder.container_of(cgroup);
            let (subject, name) = match &container {
                Some(c) => (c.id.clone(), c.short_id().to_string()),
                None => (format!("cgroup:{cgroup}"), format!("cgroup {cgroup}")),
            };
            stats.health.raise(
                Check::ContainerDrops,
                &subject,
                new,
                format!(
                    "container={name} sent more file events than its budget \
                     (sources.ebpf.container_events_per_sec): the excess was dropped in the kernel"
                ),
                container,
            );
        }
        if self.seen.len() > 65_536 {
            self.seen.clear();
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
    let ino = |path: &str| std::fs::metadata(path).map(|m| m.ino());
    let e = match ino("/proc/1/ns/mnt") {
        Ok(ns) => return ns,
        Err(e) => e,
    };
    // Init may hold capabilities the daemon lacks (some sandboxes' init
    // does), which denies reading its namespaces. A daemon in the initial
    // pid namespace runs on the host or in a hostPID pod: its own mount
    // namespace is the host's, or one of its own (a service's private one,
    // the pod's), which then holds the daemon's processes and no
    // container's, so taking it for the host's spares nothing else.
    match (ino("/proc/self/ns/pid"), ino("/proc/self/ns/mnt")) {
        (Ok(INIT_PID_NS), Ok(own)) => {
            tracing::info!(
                mnt_ns = own,
                "reading /proc/1/ns/mnt: {e}; the daemon runs in the host's pid \
                 namespace, so its own mount namespace is taken for the host's"
            );
            own
        }
        _ => {
            tracing::warn!(
                "reading /proc/1/ns/mnt: {e}: the container runtime's own execs \
                 cannot be told apart and are judged like the container's"
            );
            0
        }
    }
}

/// The inode of the initial pid namespace (`PROC_PID_INIT_INO`, fixed
/// since Linux 3.8).
const INIT_PID_NS: u64 = 0xEFFF_FFFC;

async fn drain(sensor: EbpfSensor, mut ctx: SourceContext) -> Result<(), EbpfError> {
    let EbpfSensor {
        bpf,
        ring,
        file_ring,
        clock,
        drain_every,
        reader,
        enforcer: _,
        prefilter: _,
        host_mnt_ns,
        writers: _,
        mut folds,
    } = sensor;
    let sensor_maps = bpf;
    let register = |ring| {
        // SAFETY: the ring buffer owns its map fd and keeps it open,
        // unchanged, for as long as the AsyncFd owns the ring buffer.
        unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| EbpfError::Poll(std::io::Error::from(e)))
    };
    let mut afd = register(ring)?;
    let mut file_afd = register(file_ring)?;
    let mut decoder = Decoder::new(clock, ctx.hostname.clone(), host_mnt_ns);
    let mut losses = LossReport {
        last: [0; lane::COUNT as usize],
        logged_total: 0,
        last_log: None,
    };
    let mut budgets = BudgetReport {
        drops: 0,
        seen: std::collections::HashMap::new(),
        map_fails: [0; map_fail::COUNT as usize],
    };
    let mut faults = FaultReport {
        last: [0; Fault::COUNT],
        logged: [0; Fault::COUNT],
        last_log: None,
    };
    let mut tick = tokio::time::interval(LOSS_POLL);
    let mut timer = DrainTimer::new(drain_every, reader);
    let mut batch: Vec<Event> = Vec::with_capacity(2 * DRAIN_BUDGET);
    loop {
        // Whether a ring may hold more than one budget's worth.
        let more = tokio::select! {
            biased;
            _ = ctx.shutdown.changed() => break,
            _ = tick.tick() => {
                losses.update(counters(&sensor_maps, "LOST"), &ctx.stats);
                budgets.update(&sensor_maps, &decoder, &ctx.stats);
                faults.update(counters(&sensor_maps, "FAULTS"), &ctx.stats);
                if let Some(f) = folds.as_mut() {
                    let held = f.sweep(Clock::ktime_now(), &mut batch);
                    ctx.stats.kernel_fold_keys.store(held as u64, Ordering::Relaxed);
                }
                timer.safety_net();
                false
            }
            _ = timer.at.as_mut(), if timer.armed => {
                // The exec lane first: it is the one that must not wait.
                let a = take(afd.get_mut(), &mut decoder, &mut batch);
                let b = take(file_afd.get_mut(), &mut decoder, &mut batch);
                if timer.drained(a + b) {
                    // A record committed after that drain and before the
                    // kernel read the flag raised no wake-up.
                    let late = take(afd.get_mut(), &mut decoder, &mut batch)
                        + take(file_afd.get_mut(), &mut decoder, &mut batch);
                    if late > 0 {
                        timer.drained(late);
                    }
                }
                a == DRAIN_BUDGET || b == DRAIN_BUDGET
            }
            guard = afd.readable_mut() => {
                let mut guard = guard.map_err(EbpfError::Poll)?;
                woken(&mut guard, &mut timer, &mut decoder, &mut batch)
            }
            guard = file_afd.readable_mut() => {
                let mut guard = guard.map_err(EbpfError::Poll)?;
                woken(&mut guard, &mut timer, &mut decoder, &mut batch)
            }
        };
        if let Some(f) = folds.as_mut() {
            batch.iter().for_each(|ev| f.note(ev));
        }
        for ev in batch.drain(..) {
            if ctx.events.send(ev).await.is_err() {
                return Ok(());
            }
        }
        if more {
            // A full budget: keep draining, but let the runtime breathe.
            tokio::task::yield_now().await;
            timer.soon();
        }
        if *ctx.shutdown.borrow() {
            break;
        }
    }
    // The last counts, then detach so nothing new arrives, then flush what
    // is queued.
    losses.update(counters(&sensor_maps, "LOST"), &ctx.stats);
    budgets.update(&sensor_maps, &decoder, &ctx.stats);
    drop(sensor_maps);
    let mut last: Vec<Event> = Vec::new();
    for ring in [afd.get_mut(), file_afd.get_mut()] {
        while let Some(item) = ring.next() {
            last.extend(decoder.decode(&item));
        }
    }
    // Repeats still inside their window are reported now: the window is
    // closed by the exit.
    if let Some(f) = folds.as_mut() {
        last.iter().for_each(|ev| f.note(ev));
        f.sweep(u64::MAX, &mut last);
    }
    for ev in last {
        if ctx.events.send(ev).await.is_err() {
            break;
        }
    }
    tracing::info!("kernel sensor detached");
    Ok(())
}

/// The batched drain's timer (`drain_interval_ms`). While records come the
/// daemon drains on this timer and the kernel wakes it only for a ring a
/// quarter full. A drain that finds nothing stops the timer and tells the
/// kernel (the `READER` flag), which then wakes the daemon for the first
/// record; that arms the timer again, so a batch gathers behind it. An
/// idle node costs no wake-ups but the once-a-second tick's.
struct DrainTimer {
    every: Option<Duration>,
    at: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: bool,
    reader: Array<MapData, u32>,
    /// What the kernel was last told: asleep or not.
    asleep: bool,
}

impl DrainTimer {
    fn new(every: Option<Duration>, reader: Array<MapData, u32>) -> DrainTimer {
        DrainTimer {
            every,
            at: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed: every.is_some(),
            reader,
            asleep: false,
        }
    }

    /// Drain as soon as the runtime lets us (batched mode only).
    fn soon(&mut self) {
        if self.every.is_some() {
            self.arm_in(Duration::ZERO);
        }
    }

    fn arm_in(&mut self, after: Duration) {
        self.at.as_mut().reset(tokio::time::Instant::now() + after);
        self.armed = true;
    }

    /// Two records reserved at once and committed after a drain that found
    /// the first still being written raise no wake-up (neither was alone
    /// in the ring): the once-a-second tick drains them at the latest.
    fn safety_net(&mut self) {
        if !self.armed {
            self.soon();
        }
    }

    /// A wake-up from the kernel: whether to drain now (per-record mode,
    /// or a ring a quarter full while the timer runs). The first record
    /// after the daemon fell asleep arms the timer instead.
    fn wake(&mut self) -> bool {
        match self.every {
            Some(every) if !self.armed => {
                self.tell(false);
                self.arm_in(every);
                false
            }
            _ => true,
        }
    }

    /// After a timed drain that took `n` records. True when the daemon fell
    /// asleep: the caller looks once more, for a record that came between
    /// the drain and the flag.
    fn drained(&mut self, n: usize) -> bool {
        let Some(every) = self.every else {
            return false;
        };
        // A daemon that cannot tell the kernel it sleeps keeps polling.
        if n > 0 || !self.tell(true) {
            self.tell(false);
            self.arm_in(every);
            return false;
        }
        self.armed = false;
        true
    }

    /// Tells the kernel whether the daemon sleeps; whether that was told.
    fn tell(&mut self, asleep: bool) -> bool {
        if self.asleep == asleep {
            return true;
        }
        match self.reader.set(0, u32::from(asleep), 0) {
            Ok(()) => {
                self.asleep = asleep;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, asleep, "writing the READER flag failed; the daemon keeps draining on its timer");
                false
            }
        }
    }
}

/// Handles a wake-up on the ring behind `guard`: drains it or arms the
/// timer. Whether it may hold more than the budget taken.
fn woken(
    guard: &mut tokio::io::unix::AsyncFdReadyMutGuard<'_, RingBuf<MapData>>,
    timer: &mut DrainTimer,
    decoder: &mut Decoder,
    batch: &mut Vec<Event>,
) -> bool {
    if !timer.wake() {
        guard.clear_ready();
        return false;
    }
    let n = take(guard.get_inner_mut(), decoder, batch);
    if n < DRAIN_BUDGET {
        // Empty: wait for the next wake-up. With budget left over we come
        // back without clearing.
        guard.clear_ready();
    }
    n == DRAIN_BUDGET
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
    fn every_syscall_has_a_kind_and_distinct_slot() {
        let all = syscalls();
        let mut slots: Vec<_> = all.iter().map(|s| s.index).collect();
        slots.sort();
        slots.dedup();
        assert_eq!(slots.len(), all.len());
        for s in &all {
            assert!(s.kind().is_some(), "{}", s.name);
            assert!(s.spec.args().is_some(), "{}", s.name);
            assert!(s.index < 2 * ABI_SPAN, "{}", s.name);
            assert_eq!(s.name.ends_with("/32"), s.index >= ABI_SPAN, "{}", s.name);
        }
        // Every kind but exec is fed by a native syscall and by the 32-bit gate.
        for k in Kind::ALL.into_iter().filter(|k| *k != Kind::Exec) {
            for compat in [false, true] {
                assert!(
                    all.iter()
                        .any(|s| s.kind() == Some(k) && (s.index >= ABI_SPAN) == compat),
                    "{k:?} compat={compat}"
                );
            }
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
    fn opens_say_where_their_flags_are() {
        for s in syscalls().iter().filter(|s| s.spec.op() == Some(Op::Open)) {
            // Without a flags register the open must be decided from the
            // file alone (openat2, creat).
            assert!(
                s.spec.flags_slot().is_some()
                    || s.spec.has(spec::OPEN_HOW)
                    || s.spec.has(spec::CREAT),
                "{}",
                s.name
            );
        }
    }
}
