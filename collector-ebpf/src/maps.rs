//! The programs' maps: the ring buffer records go through, the counters
//! userspace reads beside it, and the syscall table and per-thread state of
//! the file hooks.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use aya_ebpf::macros::map;
use aya_ebpf::maps::{HashMap, LruHashMap, PerCpuArray, RingBuf};
use driftwatch_common::{Fault, SyscallSpec};

use crate::globals::filter;

/// Sized by the loader from pipeline.toml (`ring_buffer_kib`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Records that did not fit in `EVENTS`, per CPU. The kernel tells only the
/// program about a failed reserve, so this is the only place losses show.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Facts the kernel could not read, per CPU, one slot per `Fault` (indexed
/// by `Fault as u32`). Records carry their own `faults` bits; this also
/// counts what never became a record (`Fault::Syscall`).
#[map]
pub static FAULTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Fault::COUNT as u32, 0);

/// Syscall number → what it does and where its arguments are, filled by
/// the loader with this architecture's numbers.
#[map]
pub static SYSCALLS: HashMap<u32, SyscallSpec> = HashMap::with_max_entries(64, 0);

/// Arguments stashed at syscall entry, by thread id, until the exit says
/// whether the call succeeded.
#[map]
pub static PENDING: HashMap<u32, Pending> = HashMap::with_max_entries(16384, 0);

/// What `sched_prepare_exec` saw of the program an exec replaces, by
/// thread id, until `sched_process_exec` (keyed by its `old_pid`) takes it.
/// LRU: an exec that dies between the two leaves an entry that ages out.
#[map]
pub static PRIOR: LruHashMap<u32, Prior> = LruHashMap::with_max_entries(4096, 0);

/// The previous program of an exec in flight.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Prior {
    /// Its `struct inode *`, only compared.
    pub inode: u64,
    /// The mount namespace its file is mounted in (inode number), 0 for an
    /// internal mount.
    pub mnt_ns: u32,
    pub _pad: u32,
}

/// A file syscall's arguments between its entry and its exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    pub nr: u32,
    pub spec: SyscallSpec,
    pub dfd1: i64,
    pub dfd2: i64,
    pub p1: u64,
    pub p2: u64,
    pub flags: u64,
    pub mode: u64,
}

const _: () = assert!(core::mem::size_of::<Pending>() == 56);

/// How to commit a record: waking the reader only when enough has piled
/// up. A wake-up per record costs the workload a cross-CPU interrupt and
/// the daemon a context switch for each exec or write, and the reader polls
/// on a short timer anyway.
#[inline(always)]
pub fn submit_flags() -> u64 {
    let threshold = filter!(wakeup_bytes);
    if threshold == 0 {
        return 0;
    }
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= threshold as u64 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
fn bump(counter: &PerCpuArray<u64>, index: u32) {
    if let Some(p) = counter.get_ptr_mut(index) {
        // SAFETY: this CPU's slot of a per-CPU map: no concurrent writer.
        unsafe { *p += 1 };
    }
}

/// Counts a record the ring buffer had no room for.
pub fn count_lost() {
    bump(&LOST, 0);
}

/// Counts each fact in `faults` (a `Header::faults` set).
#[inline(always)]
pub fn count_faults(faults: u32) {
    if faults == 0 {
        return;
    }
    for i in 0..Fault::COUNT as u32 {
        if faults & (1 << i) != 0 {
            bump(&FAULTS, i);
        }
    }
}
