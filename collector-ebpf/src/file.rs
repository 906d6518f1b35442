//! The file-syscall hook: one program on the BTF tracepoint `sys_exit`,
//! which every syscall's exit passes, the 32-bit gate's included:
//!
//! ```text
//! TRACE_EVENT_FN(sys_exit,
//!     TP_PROTO(struct pt_regs *regs, long ret), ...)
//! ```
//!
//! `regs` are the task's saved registers: `orig_ax` holds the syscall
//! number and the argument registers still hold the arguments the kernel
//! read (`SyscallOffsets` says where, for the native and the 32-bit ABI).
//! Because the program runs at every syscall exit on the host, the
//! registers are loaded directly rather than with a probe-read helper: a
//! BTF tracepoint's `regs` is a typed kernel pointer the verifier lets the
//! program load from, at offsets it knows as constants (they come from a
//! frozen read-only global). That halves what a syscall nobody wants costs.
//! So everything is decided at exit, from what the kernel used and what it
//! did, with no state kept between entry and exit:
//!
//! - which syscall, from `orig_ax` and the task's `TS_COMPAT` status
//!   (`SYSCALLS`: the native table, then the 32-bit gate's);
//! - whether an open changed anything, from the `f_mode` of the file it
//!   installed (`FMODE_WRITE`, `FMODE_CREATED`) and its flags register
//!   (`O_TRUNC`). An open whose flags register has no write intent is
//!   dropped first: it cannot have write access, create or truncate;
//! - the file, from the descriptor it installed or was given (its dentry
//!   walk, inode, link count and device), or from the path it was given.
//!
//! A record is built in `SCRATCH`, judged (the kernel prefilter, the
//! container's budget) and then copied into its lane's ring buffer, only as
//! long as it needs to be.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::helpers::generated::{bpf_get_current_task_btf, bpf_ktime_get_ns};
use aya_ebpf::macros::btf_tracepoint;
use aya_ebpf::maps::RingBuf;
use aya_ebpf::programs::BtfTracePointContext;
use driftwatch_common::{
    ABI_SPAN, AT_FDCWD, AggKey, AggWindow, ArgLayout, Budget, Fault, FileRecord, InodeKey,
    KERNEL_PREFIXES, KernelPrefix, LastWriter, Op, PREFIX_BYTES, RecordKind, SyscallSpec, WALK_BUF,
    Walk, drop_index, info, lane, map_fail, open_flags, spec, walk,
};

use crate::globals::{ffilter, filter, offset, soff};
use crate::layer::layer_of;
use crate::maps::{
    AGG, BUDGET, EVENTS, FILE_EVENTS, FOLDING, KERNEL_DROP, PREFIXES, SCRATCH, SYSCALLS, WRITERS,
    count_drop, count_faults, count_lost_in, count_map_fail, submit_flags_for,
};
use crate::read::{Reads, fact};
use crate::task::{
    comm, current_cgroup_id, current_pid_tgid, current_task, fd_file, file_path, fill_header,
    fs_root, task_wanted,
};
use crate::walk::{walk_base, walk_path_struct};

/// `FMODE_WRITE` (include/linux/fs.h, stable since the beginning).
const FMODE_WRITE: u32 = 0x2;
/// Budget tokens are records times this, so refills can add fractions.
const TOKEN: u64 = 1 << 10;

#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit_file(ctx: BtfTracePointContext) -> i32 {
    on_exit(&ctx);
    0
}

/// The syscall being left: its spec, whether it came through the 32-bit
/// gate, and its saved registers.
struct Call {
    spec: SyscallSpec,
    compat: bool,
    regs: *const u8,
}

impl Call {
    /// Argument `i`, as the kernel read it: a 32-bit syscall's arguments
    /// are the low halves of its registers.
    #[inline(always)]
    fn arg(&self, i: usize) -> u64 {
        // Constant offsets per slot: the verifier bounds no variable index
        // into the globals.
        let off = if self.compat {
            match i {
                0 => soff!(compat_args[0]),
                1 => soff!(compat_args[1]),
                2 => soff!(compat_args[2]),
                3 => soff!(compat_args[3]),
                4 => soff!(compat_args[4]),
                _ => soff!(compat_args[5]),
            }
        } else {
            match i {
                0 => soff!(args[0]),
                1 => soff!(args[1]),
                2 => soff!(args[2]),
                3 => soff!(args[3]),
                4 => soff!(args[4]),
                _ => soff!(args[5]),
            }
        };
        let v = saved_reg(self.regs, off);
        if self.compat { v & 0xffff_ffff } else { v }
    }

    /// A descriptor argument: its low 32 bits, sign-extended.
    #[inline(always)]
    fn fd_arg(&self, i: usize) -> i64 {
        self.arg(i) as i32 as i64
    }

    /// The argument in `slot`, 0 without one.
    #[inline(always)]
    fn slot(&self, slot: Option<usize>) -> u64 {
        match slot {
            Some(i) => self.arg(i),
            None => 0,
        }
    }
}

/// The word at `off` in the saved registers `regs`, loaded directly.
///
/// `regs` must be the BTF tracepoint's own `struct pt_regs *` argument and
/// `off` one of `SYSCALL_OFFSETS`' fields: the verifier then checks the
/// load against the kernel's BTF layout and turns it into a load that
/// cannot fault the kernel (a bad address reads 0), with no helper call.
#[inline(always)]
fn saved_reg(regs: *const u8, off: usize) -> u64 {
    // SAFETY: see above; the verifier, not the Rust compiler, vouches for
    // the address, and an 8-byte register slot is 8-byte aligned.
    unsafe { core::ptr::read_volatile(regs.wrapping_add(off).cast::<u64>()) }
}

#[inline(always)]
fn on_exit(ctx: &BtfTracePointContext) {
    let ret: i64 = ctx.arg(1);
    if ret < 0 {
        return;
    }
    let regs: *const u8 = ctx.arg::<u64>(0) as *const u8;
    let nr = saved_reg(regs, soff!(nr));
    if nr >= ABI_SPAN as u64 {
        return;
    }
    let nr = nr as u32;
    let native = SYSCALLS.get(nr).copied().unwrap_or(SyscallSpec::NONE);
    let compat_spec = SYSCALLS
        .get(nr + ABI_SPAN)
        .copied()
        .unwrap_or(SyscallSpec::NONE);
    if native.raw_op() == 0 && compat_spec.raw_op() == 0 {
        return;
    }
    let compat = in_compat_syscall();
    let spec = if compat { compat_spec } else { native };
    let Some(op) = spec.op() else {
        return;
    };
    if filter!(kinds) & op.kind().bit() == 0 {
        return;
    }
    let call = Call { spec, compat, regs };
    let mut flags = 0u64;
    if op == Op::Open {
        flags = call.slot(spec.flags_slot());
        if spec.has(spec::CREAT) {
            flags = (open_flags::O_CREAT | open_flags::O_WRONLY | open_flags::O_TRUNC) as u64;
        }
        // Most opens are read-only: without these bits no open gets write
        // access, creates or truncates. openat2's flags are in user memory
        // and are not trusted for this.
        if !spec.has(spec::OPEN_HOW) && flags & open_flags::WRITE_INTENT as u64 == 0 {
            return;
        }
    }
    if !task_wanted() {
        return;
    }
    let task = current_task();
    let Some(rec) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch entry; the program does not nest on a CPU
    // (tracing programs run with migration disabled and a per-CPU
    // recursion guard), so nothing else writes it meanwhile.
    let rec = unsafe { &mut *rec };
    if !build(rec, task, &call, op, ret, flags) {
        return;
    }
    send(rec);
}

/// Whether the task is in a syscall of the 32-bit gate (`in_ia32_syscall`).
/// Asked at every open, read-only ones included, so loaded directly from
/// the BTF-typed current task rather than with a probe-read helper.
#[inline(always)]
fn in_compat_syscall() -> bool {
    let bit = soff!(ts_compat) as u32;
    if bit == 0 {
        return false;
    }
    // SAFETY: no preconditions; the result is a typed, trusted pointer the
    // verifier lets the program load from at constant offsets.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    // SAFETY: `thread_status` is `task_struct.thread_info.status`, a u32,
    // from the kernel's BTF; the verifier checks the load against it.
    let at = task.wrapping_add(soff!(thread_status));
    let status = unsafe { core::ptr::read_volatile(at.cast::<u32>()) };
    status & bit != 0
}

/// Builds the record of `op`, which returned `ret`, into `rec`. False when
/// it changed nothing worth a record (an open without write access that
/// neither created nor truncated) or the kernel prefilter drops it.
#[inline(always)]
fn build(rec: &mut FileRecord, task: *const u8, call: &Call, op: Op, ret: i64, flags: u64) -> bool {
    let spec = call.spec;
    let mut faults = 0u32;
    let gate = if call.compat { info::COMPAT } else { 0 };
    reset(
        rec,
        op,
        gate,
        flags as u32,
        call.slot(spec.mode_slot()) as u32,
    );

    // The file's descriptor, when the syscall names or installs one.
    let (dfd1, p1, dfd2, p2) = match spec.args() {
        Some(ArgLayout::Path) => (AT_FDCWD, call.arg(0), AT_FDCWD, 0),
        Some(ArgLayout::DfdPath) => (call.fd_arg(0), call.arg(1), AT_FDCWD, 0),
        Some(ArgLayout::Fd) => (call.fd_arg(0), 0, AT_FDCWD, 0),
        Some(ArgLayout::PathPath) => (AT_FDCWD, call.arg(0), AT_FDCWD, call.arg(1)),
        Some(ArgLayout::DfdPathDfdPath) => {
            (call.fd_arg(0), call.arg(1), call.fd_arg(2), call.arg(3))
        }
        Some(ArgLayout::PathDfdPath) => (AT_FDCWD, call.arg(0), call.fd_arg(1), call.arg(2)),
        _ => (AT_FDCWD, 0, AT_FDCWD, 0),
    };
    match op {
        Op::Chown => {
            rec.uid = call.slot(spec.value1_slot()) as u32;
            rec.gid = call.slot(spec.value2_slot()) as u32;
            if spec.has(spec::ID16) {
                // The 16-bit calls' "unchanged" is 0xffff.
                rec.uid = widen16(rec.uid);
                rec.gid = widen16(rec.gid);
            }
            rec.info |= info::OWNER;
        }
        Op::Truncate => {
            let lo = call.slot(spec.value1_slot());
            rec.size = match spec.value2_slot() {
                // truncate64 on the 32-bit gate: the length in two halves.
                Some(_) => ((call.slot(spec.value2_slot()) << 32) | lo) as i64,
                None => lo as i64,
            };
            rec.info |= info::SIZE;
        }
        _ => {}
    }

    let root = fact(&mut faults, Fault::File, |rd| fs_root(rd, task));
    let file = match op {
        Op::Open => fact(&mut faults, Fault::File, |rd| fd_file(rd, task, ret)),
        _ if spec.args() == Some(ArgLayout::Fd) => {
            fact(&mut faults, Fault::File, |rd| fd_file(rd, task, dfd1))
        }
        _ => core::ptr::null(),
    };
    let mut prefix_exact = false;
    if !file.is_null() {
        if op == Op::Open && !open_changed(rec, call, file, p1, &mut faults) {
            return false;
        }
        inode_facts(rec, file, &mut faults);
        remember_writer(rec, op);
        // A repeat within its window costs no walk, no header, no record.
        if fold_or_note(rec, op, file) {
            return false;
        }
        file_facts(rec, file, root, &mut faults);
        prefix_exact = rec.info & info::FILE_WALK != 0 && rec.base1.status == walk::ROOT;
    } else if op == Op::Open {
        // The descriptor it just installed is gone (a racing close): the
        // open is reported with what it was given, flags unverified.
        faults |= Fault::File.bit();
    } else {
        // Named by path: the file is not at hand, but a task whose root is
        // the host's root filesystem reaches a container's files from
        // outside it (a runtime setting the container up).
        let mut rd = Reads::default();
        let root_dentry = rd.kernel_ptr(root, offset!(path_dentry));
        let sb = rd.kernel_ptr(root_dentry, offset!(dentry_sb));
        let dev: u32 = rd.kernel(sb, offset!(sb_dev));
        let host = ffilter!(host_root_dev);
        if !rd.failed() && !sb.is_null() && host != 0 && dev == host {
            rec.info |= info::OUTSIDE_ROOT;
        }
    }
    if prefix_exact && ffilter!(prefilter) != 0 && kernel_drops(rec, op) {
        // Its repeats by the same name would be dropped for the same facts:
        // they are, within the window, without the walk.
        open_window(rec, true);
        return false;
    }

    fill_header(&mut rec.hdr, task, RecordKind::File);
    faults |= rec.hdr.faults;
    if op != Op::IoUringSetup && rec.info & info::FILE_WALK == 0 {
        rec.path1_len = fact(&mut faults, Fault::Path, |rd| {
            rd.user_str(&mut rec.path1, p1)
        });
        if rec.path1_len as usize >= rec.path1.len() {
            rec.info |= info::PATH_TRUNCATED;
        }
        fact(&mut faults, Fault::File, |rd| {
            walk_base(rd, &mut rec.base1, task, dfd1, rec.path1[0], root)
        });
    }
    if p2 != 0 {
        rec.path2_len = fact(&mut faults, Fault::Target, |rd| {
            rd.user_str(&mut rec.path2, p2)
        });
        if rec.path2_len as usize >= rec.path2.len() {
            rec.info |= info::TARGET_TRUNCATED;
        }
        fact(&mut faults, Fault::File, |rd| {
            walk_base(rd, &mut rec.base2, task, dfd2, rec.path2[0], root)
        });
    }
    rec.hdr.faults = faults;
    true
}

/// Records the current process as the last writer of the file `rec`
/// describes, when it is a regular file opened for writing or truncated.
/// Done before the prefilter and the budget, which drop records but must
/// not hide who wrote a file that is executed later.
#[inline(always)]
fn remember_writer(rec: &FileRecord, op: Op) {
    if !matches!(op, Op::Open | Op::Truncate) || rec.ino == 0 || rec.i_mode & 0o170000 != 0o100000 {
        return;
    }
    let key = InodeKey {
        dev: rec.dev,
        _pad: 0,
        ino: rec.ino,
    };
    let mut w = LastWriter {
        tgid: (current_pid_tgid() >> 32) as u32,
        _pad: 0,
        // SAFETY: no preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        comm: [0; 16],
    };
    comm(&mut w.comm);
    // The same process writing again (a write loop): updated in place, which
    // costs a lookup; an insert into the LRU map costs several times that.
    if let Some(last) = WRITERS.get_ptr_mut(key) {
        // SAFETY: a live value of WRITERS (LRU memory is not freed under a
        // running program); a racing writer on another CPU makes the entry
        // one of the two, as an insert would.
        let last = unsafe { &mut *last };
        if last.tgid == w.tgid {
            last.ktime_ns = w.ktime_ns;
            last.comm = w.comm;
            return;
        }
    }
    // A full LRU map evicts; a failed insert only loses this writer.
    let _ = WRITERS.insert(key, w, 0);
}

#[inline(always)]
fn widen16(v: u32) -> u32 {
    if v & 0xffff == 0xffff {
        u32::MAX
    } else {
        v & 0xffff
    }
}

/// Starts the scratch record `rec` afresh for `op`: every fact unknown
/// until read (the scratch entry holds the previous record).
#[inline(always)]
pub(crate) fn reset(rec: &mut FileRecord, op: Op, info: u32, flags: u32, mode: u32) {
    rec.op = op as u32;
    rec.info = info;
    rec.flags = flags;
    rec.mode = mode;
    rec.i_mode = 0;
    rec.nlink = 0;
    rec.ino = 0;
    rec.dev = 0;
    rec.uid = 0;
    rec.gid = 0;
    rec._pad = 0;
    rec.size = 0;
    rec.path1_len = 0;
    rec.path2_len = 0;
    rec.path1[0] = 0;
    rec.path2[0] = 0;
    clear(&mut rec.base1);
    clear(&mut rec.base2);
}

#[inline(always)]
fn clear(w: &mut Walk) {
    w.len = 0;
    w.status = walk::NONE;
    w.mount_at = Walk::NO_MOUNT;
}

/// Whether the open that installed `file` changed anything: write access
/// (`FMODE_WRITE`), a file it created (`FMODE_CREATED`), or a truncation
/// its flags register asked for. openat2's flags are read from the
/// `struct open_how` only to report them: when they cannot be read the
/// open is reported (and said to be) without them.
#[inline(always)]
fn open_changed(
    rec: &mut FileRecord,
    call: &Call,
    file: *const u8,
    _p1: u64,
    faults: &mut u32,
) -> bool {
    let mut r = Reads::default();
    let fmode: u32 = r.kernel(file, offset!(file_mode));
    if r.failed() {
        // Unknown: reported, with the fault.
        *faults |= Fault::Inode.bit();
        return true;
    }
    if fmode & FMODE_WRITE != 0 {
        rec.info |= info::WRITE;
    }
    if fmode & filter!(fmode_created) != 0 {
        rec.info |= info::CREATED;
    }
    if call.spec.has(spec::OPEN_HOW) {
        // struct open_how { u64 flags; u64 mode; u64 resolve; }
        let mut how = Reads::default();
        let ptr = call.arg(2);
        let [flags, mode] = how.user::<[u64; 2]>(ptr);
        if how.failed() {
            rec.info |= info::FLAGS_UNREAD;
            rec.flags = 0;
            rec.mode = 0;
            return true;
        }
        rec.flags = flags as u32;
        rec.mode = mode as u32;
    }
    rec.info & (info::WRITE | info::CREATED) != 0 || rec.flags & open_flags::O_TRUNC != 0
}

/// The facts of the open file `file`: its own path (the walk, into
/// `base1`), inode (type, links, number, device) and layer.
#[inline(always)]
fn file_facts(rec: &mut FileRecord, file: *const u8, root: *const u8, faults: &mut u32) {
    let fpath = file_path(file);
    fact(faults, Fault::File, |rd| {
        walk_path_struct(rd, &mut rec.base1, fpath, root)
    });
    rec.info |= info::FILE_WALK;
    let mut r = Reads::default();
    let dentry = r.kernel_ptr(fpath, offset!(path_dentry));
    *faults |= r.mask(Fault::Layer.bit());
    rec.info |= fact(faults, Fault::Layer, |rd| layer_bits(rd, dentry, root));
}

/// The inode facts of the open file `file`: type, links, number, device.
#[inline(always)]
fn inode_facts(rec: &mut FileRecord, file: *const u8, faults: &mut u32) {
    let fpath = file_path(file);
    let mut inode = Reads::default();
    let dentry = inode.kernel_ptr(fpath, offset!(path_dentry));
    let i_node = inode.kernel_ptr(dentry, offset!(dentry_inode));
    if !i_node.is_null() {
        rec.i_mode = inode.kernel::<u16>(i_node, offset!(inode_mode)) as u32;
        rec.nlink = inode.kernel(i_node, offset!(inode_nlink));
        rec.ino = inode.kernel(i_node, offset!(inode_ino));
        let sb = inode.kernel_ptr(i_node, offset!(inode_sb));
        rec.dev = inode.kernel(sb, offset!(sb_dev));
        rec.info |= info::HAS_INODE;
    }
    *faults |= inode.mask(Fault::Inode.bit());
}

/// The `info` layer bits of the file `dentry` names, written by a task
/// whose root is the `struct path *` `root`.
#[inline(always)]
fn layer_bits(r: &mut Reads, dentry: *const u8, root: *const u8) -> u32 {
    let layer = layer_of(r, dentry);
    let mut bits = 0;
    if layer.overlay {
        bits |= info::OVERLAY;
        // Inside the container the root is the overlay itself; a runtime
        // before pivot_root sees it as a directory of the host's filesystem.
        if !root.is_null() {
            let root_dentry = r.kernel_ptr(root, offset!(path_dentry));
            let root_sb = r.kernel_ptr(root_dentry, offset!(dentry_sb));
            let file_sb = r.kernel_ptr(dentry, offset!(dentry_sb));
            if root_sb != file_sb {
                bits |= info::OUTSIDE_ROOT;
            }
        }
    }
    if layer.upper {
        bits |= info::UPPER;
    }
    bits
}

/// Whether the kernel prefilter drops this record: no plugin would be
/// given a record with its facts (the loader computed which from the
/// plugins' manifests). Only called with an exact walk of the file.
#[inline(always)]
fn kernel_drops(rec: &FileRecord, op: Op) -> bool {
    let prefixes = prefix_set(&rec.base1);
    let index = drop_index::index(
        prefixes,
        drop_index::type_class(rec.i_mode),
        rec.nlink > 1,
        rec.info & info::CREATED != 0,
        op as u32,
    );
    match KERNEL_DROP.get(index / 64) {
        Some(word) => word & (1u64 << (index % 64)) != 0,
        None => false,
    }
}

/// The set of kernel prefixes the walked path `w` is under (bit `i` for
/// `PREFIXES[i]`). A walk holds the components leaf first, each
/// NUL-terminated, so a path is under a prefix when the walk ends with the
/// prefix's bytes and a component starts there.
#[inline(never)]
fn prefix_set(w: &Walk) -> u32 {
    // Bounded for the verifier, which cannot tie the indexes below to the
    // slice's length otherwise (a walk never writes more than its buffer).
    let len = core::cmp::min(w.len as usize, WALK_BUF);
    let mut set = 0u32;
    let mut i = 0;
    while i < KERNEL_PREFIXES {
        if let Some(p) = PREFIXES.get(i as u32) {
            let n = p.len as usize;
            if n > 0 && n <= PREFIX_BYTES && n <= len && ends_with(w, len, p, n) {
                set |= 1 << i;
            }
        }
        i += 1;
    }
    set
}

/// Whether `w`'s first `len` bytes end with prefix `p`'s `n` bytes, at a
/// component boundary.
///
/// Compared eight bytes at a time: `n` comes from a map, so the verifier
/// explores the loop for every length it might have, and a byte loop over
/// eight prefixes exceeds its budget (E2BIG).
#[inline(always)]
fn ends_with(w: &Walk, len: usize, p: &KernelPrefix, n: usize) -> bool {
    // `n <= len` holds, but the verifier cannot carry a comparison of two
    // variables over to `len - n`: the bound is checked again on a value
    // the compiler cannot see through (it would fold the check away).
    let diff = len.wrapping_sub(n);
    // SAFETY: a read of a local.
    let start = unsafe { core::ptr::read_volatile(&raw const diff) };
    if start > WALK_BUF {
        return false;
    }
    if start > 0 {
        match w.buf.get(start - 1) {
            Some(0) => {}
            _ => return false,
        }
    }
    let mut k = 0;
    while k < PREFIX_BYTES / 8 {
        let done = k * 8;
        if done >= n {
            return true;
        }
        let rest = n - done;
        let mask = if rest >= 8 {
            u64::MAX
        } else {
            (1u64 << (rest * 8)) - 1
        };
        // SAFETY: `start + done + 8` is at most WALK_BUF + PREFIX_BYTES
        // bytes into the walk, which the record it sits in covers (the
        // verifier checks the access against the map value); bytes past
        // `len` are masked off. `walked` holds PREFIX_BYTES bytes.
        let (have, want) = unsafe {
            (
                core::ptr::read_unaligned(w.buf.as_ptr().wrapping_add(start + done).cast::<u64>()),
                core::ptr::read_unaligned(p.walked.as_ptr().wrapping_add(done).cast::<u64>()),
            )
        };
        if (have ^ want) & mask != 0 {
            return false;
        }
        k += 1;
    }
    true
}

/// Sends the built record into its lane, if its container's budget allows.
#[inline(always)]
pub(crate) fn send(rec: &mut FileRecord) {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let budget = admit(rec.hdr.cgroup_id, now);
    if !budget.admitted {
        return;
    }
    let (ring, which): (&RingBuf, u32) = if drift_relevant(rec) {
        (&EVENTS, lane::EXEC)
    } else {
        (&FILE_EVENTS, lane::FILE)
    };
    count_faults(rec.hdr.faults);
    let full = core::mem::size_of::<FileRecord>();
    let len = rec.sent_len();
    if len == 0 || len > full {
        return;
    }
    // SAFETY: `len` bytes of the scratch record, which is `full` bytes.
    let bytes =
        unsafe { core::slice::from_raw_parts((rec as *const FileRecord).cast::<u8>(), len) };
    if ring
        .output::<[u8]>(bytes, submit_flags_for(ring, 0))
        .is_err()
    {
        count_lost_in(which);
        if let Some(b) = budget.entry {
            // SAFETY: a live value of BUDGET (LRU memory is not freed under
            // a running program), updated atomically.
            unsafe { atomic_add(&raw mut (*b).lost) };
        }
        return;
    }
    // Only a record userspace has opens a window: the repeats it folds are
    // reported as more of that record.
    open_window(rec, false);
}

/// Whether `rec` repeats a write sent within its window (`agg_window_ns`),
/// by the same name: then it is only counted in `AGG`, and true is
/// returned. Otherwise notes in `FOLDING` whether the record, once sent,
/// opens a window.
///
/// Only a write open that created nothing, or an `ftruncate`, of a file
/// with one name is folded: the operation then says all and, with the name
/// it was reached by, the inode names the one path. A rename, link, chmod
/// or creation is always sent, as is a file with other hard links (its
/// other names matter). Decided from the open file alone, before the walk.
#[inline(always)]
fn fold_or_note(rec: &FileRecord, op: Op, file: *const u8) -> bool {
    let Some(slot) = FOLDING.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's entry; the program does not nest on a CPU.
    let slot = unsafe { &mut *slot };
    slot.valid = 0;
    let window = ffilter!(agg_window_ns);
    let foldable_op = match op {
        Op::Open => rec.info & info::CREATED == 0,
        Op::Truncate => true,
        _ => false,
    };
    if window == 0 || !foldable_op || rec.info & info::HAS_INODE == 0 || rec.nlink > 1 {
        return false;
    }
    let mut r = Reads::default();
    let fpath = file_path(file);
    let mnt: u64 = r.kernel(fpath, offset!(path_mnt));
    let dentry = r.kernel_ptr(fpath, offset!(path_dentry));
    let parent: u64 = r.kernel(dentry, offset!(dentry_parent));
    // `qstr.hash_len`: the name's hash and length, its first word.
    let hash_len: u64 = r.kernel(dentry, offset!(dentry_name));
    if r.failed() {
        return false;
    }
    slot.key = AggKey {
        cgroup_id: current_cgroup_id(),
        ino: rec.ino,
        dev: rec.dev,
        tgid: (current_pid_tgid() >> 32) as u32,
        op: op as u32,
        _pad: 0,
    };
    slot.name = mnt ^ parent.rotate_left(21) ^ hash_len.rotate_left(42);
    slot.valid = 1;
    let Some(w) = AGG.get_ptr_mut(slot.key) else {
        return false;
    };
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a live value of AGG (LRU memory is not freed under a running
    // program). Two CPUs may both set last_ns: the times are approximate,
    // the count is exact.
    let w = unsafe { &mut *w };
    if w.name != slot.name || now.saturating_sub(w.first_ns) >= window {
        return false;
    }
    if w.dropped == 0 {
        // SAFETY: as above; the count is atomic.
        unsafe { atomic_add(&raw mut w.repeats) };
        w.last_ns = now;
    }
    true
}

/// Opens a window for the record just sent (or, `dropped`, just dropped
/// by the prefilter), when `fold_or_note` found it foldable: the same write
/// by the same name within it is folded (or dropped).
#[inline(always)]
fn open_window(rec: &FileRecord, dropped: bool) {
    let Some(slot) = FOLDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's entry, written by `fold_or_note` for this record.
    let slot = unsafe { &mut *slot };
    // A record that never reached `fold_or_note` (no open file) left the
    // previous record's note: only a note for this very inode counts.
    if slot.valid == 0 || slot.key.ino != rec.ino || slot.key.dev != rec.dev {
        return;
    }
    slot.valid = 0;
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let dropped = u64::from(dropped);
    match AGG.get_ptr_mut(slot.key) {
        Some(w) => {
            // SAFETY: as in `fold_or_note`. last_ns stays the last repeat's
            // until userspace reports it.
            let w = unsafe { &mut *w };
            w.first_ns = now;
            w.name = slot.name;
            w.dropped = dropped;
        }
        None => {
            let fresh = AggWindow {
                first_ns: now,
                last_ns: now,
                repeats: 0,
                name: slot.name,
                dropped,
            };
            if AGG.insert(slot.key, fresh, 0).is_err() {
                count_map_fail(map_fail::AGG);
            }
        }
    }
}

/// Records drift detection rests on, which a write flood must not crowd
/// out: an executable file created, a file made executable, an io_uring.
#[inline(always)]
fn drift_relevant(rec: &FileRecord) -> bool {
    match Op::from_raw(rec.op) {
        Some(Op::Open) => rec.info & info::CREATED != 0 && rec.i_mode & 0o111 != 0,
        Some(Op::Chmod) => rec.mode & 0o111 != 0,
        Some(Op::IoUringSetup) => true,
        _ => false,
    }
}

struct Admission {
    admitted: bool,
    entry: Option<*mut Budget>,
}

/// Takes a token from the container's budget: records refill at
/// `budget_per_sec`, up to `budget_burst`. A container without tokens has
/// its record dropped and counted (per container in `BUDGET`, and in
/// `DROPS`). Concurrent CPUs may refill the same bucket twice: the budget
/// is approximate, the counts are exact.
#[inline(always)]
fn admit(cgroup: u64, now: u64) -> Admission {
    let rate = ffilter!(budget_per_sec);
    if rate == 0 {
        return Admission {
            admitted: true,
            entry: None,
        };
    }
    let burst = ffilter!(budget_burst).saturating_mul(TOKEN);
    let Some(b) = BUDGET.get_ptr_mut(cgroup) else {
        let fresh = Budget {
            tokens: burst.saturating_sub(TOKEN),
            refilled_ns: now,
            dropped: 0,
            lost: 0,
        };
        if BUDGET.insert(cgroup, fresh, 0).is_err() {
            count_map_fail(map_fail::BUDGET);
        }
        return Admission {
            admitted: true,
            entry: BUDGET.get_ptr_mut(cgroup),
        };
    };
    // SAFETY: a value of BUDGET; concurrent updates only make the budget
    // approximate (see above).
    let bucket = unsafe { &mut *b };
    // Whole microseconds, at most 10 s: no overflow for any rate the
    // config allows.
    let elapsed_us = (now.saturating_sub(bucket.refilled_ns) / 1000).min(10_000_000);
    if elapsed_us > 0 {
        let add = elapsed_us * rate * TOKEN / 1_000_000;
        bucket.tokens = (bucket.tokens + add).min(burst);
        bucket.refilled_ns = now;
    }
    if bucket.tokens >= TOKEN {
        bucket.tokens -= TOKEN;
        return Admission {
            admitted: true,
            entry: Some(b),
        };
    }
    // SAFETY: as above; the count is atomic.
    unsafe { atomic_add(&raw mut bucket.dropped) };
    count_drop();
    Admission {
        admitted: false,
        entry: Some(b),
    }
}

/// Adds 1 to the counter at `p` atomically (a BPF atomic add): the
/// bpfel target has no `AtomicU64::fetch_add`.
///
/// # Safety
/// `p` must point to a live, aligned `u64`.
#[inline(always)]
unsafe fn atomic_add(p: *mut u64) {
    // SAFETY: the caller's.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, 1) };
}
