//! The programs' maps: the ring buffers records go through (two lanes: execs
//! and drift-relevant file records in `EVENTS`, every other file record in
//! `FILE_EVENTS`, so a write flood cannot take the execs' room), the
//! counters userspace reads beside them, and the file hook's syscall table,
//! scratch record, prefilter bitmap and per-container budgets.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf};
use driftwatch_common::{
    ABI_SPAN, AggKey, AggWindow, Budget, ExecRecord, Fault, FileRecord, InodeKey, KERNEL_PREFIXES,
    KernelPrefix, LastWriter, PathKey, Policy, ScopeKey, SyscallSpec, drop_index, lane, map_fail,
};

use crate::globals::filter;

/// Sized by the loader from pipeline.toml (`ring_buffer_kib`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// The file lane, sized like `EVENTS` by the loader.
#[map]
pub static FILE_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Records that did not fit in their lane's ring buffer, per CPU, one slot
/// per `lane`. The kernel tells only the program about a failed reserve, so
/// this is the only place losses show.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lane::COUNT, 0);

/// Facts the kernel could not read, per CPU, one slot per `Fault` (indexed
/// by `Fault as u32`). Records carry their own `faults` bits; this sums
/// them.
#[map]
pub static FAULTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Fault::COUNT as u32, 0);

/// Syscall number → what it does and where its arguments are, filled by
/// the loader with this architecture's numbers: the native table, then the
/// 32-bit gate's from `ABI_SPAN`. An all-zero entry is a syscall nobody
/// follows.
#[map]
pub static SYSCALLS: Array<SyscallSpec> = Array::with_max_entries(2 * ABI_SPAN, 0);

/// Where a file record is built before it is judged and sent (larger than
/// the stack).
#[map]
pub static SCRATCH: PerCpuArray<FileRecord> = PerCpuArray::with_max_entries(1, 0);

/// The kernel prefilter: bit `drop_index::index(...)` set when no plugin
/// would be given a record with those facts. Written by the loader from
/// the plugins' manifests.
#[map]
pub static KERNEL_DROP: Array<u64> = Array::with_max_entries(drop_index::WORDS, 0);

/// The path prefixes the kernel prefilter knows, slot `i` for bit `i` of
/// a `drop_index` prefix set; written by the loader and on reload (after
/// clearing `KERNEL_DROP`, so no record is judged by old bits against new
/// prefixes).
#[map]
pub static PREFIXES: Array<KernelPrefix> = Array::with_max_entries(KERNEL_PREFIXES as u32, 0);

/// Each container's budget on the file lane, by cgroup id. LRU: a cgroup
/// gone quiet ages out (its counts were read by then, every second).
#[map]
pub static BUDGET: LruHashMap<u64, Budget> = LruHashMap::with_max_entries(8192, 0);

/// The last writer of each regular file opened for writing in a watched
/// task, whether or not its record went out (the prefilter and the budget
/// drop records, not this). LRU: 16 Ki files, the least recently written
/// forgotten first. Userspace reads it when an exec's file is not from the
/// image and it saw no write of it.
#[map]
pub static WRITERS: LruHashMap<InodeKey, LastWriter> = LruHashMap::with_max_entries(16384, 0);

/// Repeats of the same write folded in the kernel (`agg_window_ns`): the
/// first record of a window is sent, the repeats within it only counted
/// here, and userspace reports their number. Least recently used keys go
/// first when it is full; their unreported repeats are then lost.
#[map]
pub static AGG: LruHashMap<AggKey, AggWindow> = LruHashMap::with_max_entries(8192, 0);

/// The fold of the record being built on this CPU, from `file::fold_or_note`
/// to `file::open_window`. Kept in a map, not on the stack, so that the
/// verifier does not carry it through the path walk between them (which
/// doubled the states it explores past its limit).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Folding {
    pub key: AggKey,
    /// Which name the file was reached by (its mount, parent directory
    /// entry and name hash, mixed).
    pub name: u64,
    /// 1: the record may be folded and opens a window when sent.
    pub valid: u64,
}

#[map]
pub static FOLDING: PerCpuArray<Folding> = PerCpuArray::with_max_entries(1, 0);

/// Records dropped for want of budget, per CPU, all containers together:
/// userspace reads `BUDGET` only when this moved.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Failed inserts into the state maps, per CPU, one slot per `map_fail`.
#[map]
pub static MAP_FAILS: PerCpuArray<u64> = PerCpuArray::with_max_entries(map_fail::COUNT, 0);

/// What `sched_prepare_exec` saw of the program an exec replaces, by
/// thread id, until `sched_process_exec` (keyed by its `old_pid`) takes it.
/// LRU: an exec that dies between the two leaves an entry that ages out.
#[map]
pub static PRIOR: LruHashMap<u32, Prior> = LruHashMap::with_max_entries(4096, 0);

/// The enforcement slot in use (0 or 1): userspace writes a policy into
/// the other slot, then flips this one word.
#[map]
pub static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

/// The enforcement policy of each slot (mode, flags, the host's mount
/// namespace). All zero (`mode::OFF`) until userspace writes one.
#[map]
pub static POLICY: Array<Policy> = Array::with_max_entries(2, 0);

/// The path lists of each slot: allow_paths, allow_parents, deny_binaries
/// as `PathHash`es (value 1).
#[map]
pub static PATHS: HashMap<PathKey, u8> = HashMap::with_max_entries(4096, 0);

/// Containers userspace has classified against the scope lists, by cgroup
/// id and slot: 1 in scope, 0 out of it. Consulted only when a scope list
/// is set. LRU: a container gone ages out.
#[map]
pub static SCOPE: LruHashMap<ScopeKey, u32> = LruHashMap::with_max_entries(16384, 0);

/// Where an exec record is built when the ring buffer has no room for it:
/// the exec is still judged (and killed) though its record is lost.
#[map]
pub static EXEC_SCRATCH: PerCpuArray<ExecRecord> = PerCpuArray::with_max_entries(1, 0);

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

/// 1 while the daemon sleeps until a wake-up instead of draining on its
/// timer (its last drain found both rings empty); written by the daemon.
#[map]
pub static READER: Array<u32> = Array::with_max_entries(1, 0);

#[inline(always)]
fn reader_asleep() -> bool {
    READER.get(0).is_some_and(|v| *v != 0)
}

/// How to commit a record: waking the reader when enough has piled up, or
/// when it sleeps (its drains found nothing, [`READER`]) and this record is
/// the only one in the ring. A wake-up per record costs the workload a
/// cross-CPU interrupt and the daemon a context switch for each exec or
/// write; while records come, the daemon drains on its own short timer.
///
/// `own` is what this record already adds to the ring's unread bytes: its
/// reserved size for a record built in place, 0 for one copied in after.
#[inline(always)]
pub fn submit_flags(own: u64) -> u64 {
    submit_flags_for(&EVENTS, own)
}

/// [`submit_flags`] for the ring buffer `ring`.
#[inline(always)]
pub fn submit_flags_for(ring: &RingBuf, own: u64) -> u64 {
    let threshold = filter!(wakeup_bytes);
    if threshold == 0 {
        return 0;
    }
    let unread = ring.query(BPF_RB_AVAIL_DATA as u64);
    if unread >= threshold as u64 || (unread <= own && reader_asleep()) {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// The bytes a reservation of `T` takes in a ring: the record rounded up
/// to 8 and the kernel's 8-byte header.
pub const fn reserved<T>() -> u64 {
    (core::mem::size_of::<T>() as u64).div_ceil(8) * 8 + 8
}

#[inline(always)]
fn bump(counter: &PerCpuArray<u64>, index: u32) {
    if let Some(p) = counter.get_ptr_mut(index) {
        // SAFETY: this CPU's slot of a per-CPU map: no concurrent writer.
        unsafe { *p += 1 };
    }
}

/// Counts a record the exec lane's ring buffer had no room for.
pub fn count_lost() {
    bump(&LOST, lane::EXEC);
}

/// Counts a record lane `lane`'s ring buffer had no room for.
#[inline(always)]
pub fn count_lost_in(lane: u32) {
    bump(&LOST, lane);
}

/// Counts a failed insert into state map `which` (a `map_fail` slot).
#[inline(always)]
pub fn count_map_fail(which: u32) {
    bump(&MAP_FAILS, which);
}

/// Counts a record dropped for want of budget.
#[inline(always)]
pub fn count_drop() {
    bump(&DROPS, 0);
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
