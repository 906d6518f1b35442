//! The file-syscall hooks. One program is attached to the entry and one to
//! the exit of every syscall of interest; they dispatch on `__syscall_nr`
//! through `SYSCALLS`. The entry stashes the arguments per thread
//! (`PENDING`), the exit emits one `FileRecord` when the call succeeded.
//!
//! The tracepoint records, as in `/sys/kernel/tracing/events/syscalls/*/format`
//! (the loader checks these offsets before attaching, against
//! `driftwatch_common::syscall_record`):
//!
//! ```text
//! sys_enter_openat:
//! field:unsigned short common_type;         offset:0;  size:2; signed:0;
//! field:unsigned char common_flags;         offset:2;  size:1; signed:0;
//! field:unsigned char common_preempt_count; offset:3;  size:1; signed:0;
//! field:int common_pid;                     offset:4;  size:4; signed:1;
//! field:int __syscall_nr;                   offset:8;  size:4; signed:1;
//! field:int dfd;                            offset:16; size:8; signed:0;
//! field:const char * filename;              offset:24; size:8; signed:0;
//! field:int flags;                          offset:32; size:8; signed:0;
//! field:umode_t mode;                       offset:40; size:8; signed:0;
//!
//! sys_exit_openat (every sys_exit_*):
//! field:int __syscall_nr;                   offset:8;  size:4; signed:1;
//! field:long ret;                           offset:16; size:8; signed:1;
//! ```
//!
//! Every sys_enter_* record has its arguments in 8-byte slots from byte 16,
//! in the syscall's own order: `ArgLayout` and `FlagsMode` (per syscall, in
//! `SYSCALLS`) say which slot holds what. openat2's flags and mode are in
//! the `struct open_how` its third argument points to.

use aya_ebpf::macros::tracepoint;
use aya_ebpf::programs::TracePointContext;
use driftwatch_common::{
    AT_FDCWD, ArgLayout, Fault, FileRecord, FlagsMode, Op, RecordKind, info, open_flags,
    syscall_record, walk,
};

use crate::globals::{filter, offset};
use crate::layer::layer_of;
use crate::maps::{EVENTS, PENDING, Pending, SYSCALLS, count_faults, count_lost, submit_flags};
use crate::read::{Reads, fact};
use crate::task::{current_task, current_tid, fd_file, file_path, fill_header, fs_root, wanted};
use crate::walk::{walk_base, walk_path_struct};

/// Every `syscalls:sys_enter_*` of `SYSCALLS`: `__syscall_nr` and the
/// argument slots (see the module doc).
#[tracepoint]
pub fn sys_enter_file(ctx: TracePointContext) -> u32 {
    on_enter(&ctx);
    0
}

/// Every matching `syscalls:sys_exit_*`: `__syscall_nr` and `ret`.
#[tracepoint]
pub fn sys_exit_file(ctx: TracePointContext) -> u32 {
    on_exit(&ctx);
    0
}

/// Reads of a tracepoint record that remember failing, like [`Reads`]: a
/// failure reads as 0 and is a `Fault::Syscall`, since the call then goes
/// unseen.
struct SyscallRecord<'a> {
    ctx: &'a TracePointContext,
    failed: bool,
}

impl<'a> SyscallRecord<'a> {
    #[inline(always)]
    fn new(ctx: &'a TracePointContext) -> Self {
        SyscallRecord { ctx, failed: false }
    }

    #[inline(always)]
    fn at<T: Default>(&mut self, offset: usize) -> T {
        // SAFETY: `read_at` probe-reads the record; any T of plain integers
        // is valid for any bytes.
        match unsafe { self.ctx.read_at::<T>(offset) } {
            Ok(v) => v,
            Err(_) => {
                self.failed = true;
                T::default()
            }
        }
    }

    /// `__syscall_nr`.
    #[inline(always)]
    fn nr(&mut self) -> u32 {
        self.at::<i32>(syscall_record::NR) as u32
    }

    /// sys_enter_* argument `i`.
    #[inline(always)]
    fn arg(&mut self, i: usize) -> u64 {
        self.at(syscall_record::ARGS + i * syscall_record::ARG_SLOT)
    }

    /// A descriptor argument: the low 32 bits of its slot, sign-extended.
    #[inline(always)]
    fn fd_arg(&mut self, i: usize) -> i64 {
        self.arg(i) as i32 as i64
    }

    /// sys_exit_* `ret`.
    #[inline(always)]
    fn ret(&mut self) -> i64 {
        self.at(syscall_record::RET)
    }

    /// Whether every read succeeded; counts the failure otherwise.
    #[inline(always)]
    fn ok(&self) -> bool {
        if self.failed {
            count_faults(Fault::Syscall.bit());
        }
        !self.failed
    }
}

#[inline(always)]
fn on_enter(ctx: &TracePointContext) {
    let mut rec = SyscallRecord::new(ctx);
    let nr = rec.nr();
    if !rec.ok() {
        return;
    }
    // SAFETY: a copy out of the map value; the loader writes the map only
    // before attaching.
    let Some(spec) = (unsafe { SYSCALLS.get(nr) }).copied() else {
        return;
    };
    let (Some(op), Some(args)) = (spec.op(), spec.args()) else {
        return;
    };
    if !wanted(op.kind()) {
        return;
    }
    let mut p = Pending {
        nr,
        spec,
        dfd1: AT_FDCWD,
        dfd2: AT_FDCWD,
        p1: 0,
        p2: 0,
        flags: 0,
        mode: 0,
    };
    read_args(&mut rec, &mut p, args);
    let how_read = read_flags_mode(&mut rec, &mut p, spec.flags_mode(), args);
    if !rec.ok() || !how_read {
        return;
    }
    if op == Op::Open && p.flags & open_flags::WRITE_INTENT as u64 == 0 {
        // Read-only opens are most opens: drop them here.
        return;
    }
    let _ = PENDING.insert(current_tid(), p, 0);
}

/// The file arguments of the syscall entering, into `p`.
#[inline(always)]
fn read_args(rec: &mut SyscallRecord, p: &mut Pending, args: ArgLayout) {
    match args {
        ArgLayout::Path => p.p1 = rec.arg(0),
        ArgLayout::DfdPath => {
            p.dfd1 = rec.fd_arg(0);
            p.p1 = rec.arg(1);
        }
        ArgLayout::Fd => p.dfd1 = rec.fd_arg(0),
        ArgLayout::PathPath => {
            p.p1 = rec.arg(0);
            p.p2 = rec.arg(1);
        }
        ArgLayout::DfdPathDfdPath => {
            p.dfd1 = rec.fd_arg(0);
            p.p1 = rec.arg(1);
            p.dfd2 = rec.fd_arg(2);
            p.p2 = rec.arg(3);
        }
    }
}

/// The open flags and mode of the syscall entering, into `p`; false when
/// openat2's `struct open_how` could not be read (counted, not followed).
#[inline(always)]
fn read_flags_mode(
    rec: &mut SyscallRecord,
    p: &mut Pending,
    fm: FlagsMode,
    args: ArgLayout,
) -> bool {
    match fm {
        FlagsMode::None => {}
        FlagsMode::Open => {
            p.flags = rec.arg(1);
            p.mode = rec.arg(2);
        }
        FlagsMode::Openat => {
            p.flags = rec.arg(2);
            p.mode = rec.arg(3);
        }
        FlagsMode::Openat2 => {
            // struct open_how { u64 flags; u64 mode; u64 resolve; }
            let mut r = Reads::default();
            let [flags, mode] = r.user::<[u64; 2]>(rec.arg(2));
            if r.failed() {
                count_faults(Fault::Syscall.bit());
                return false;
            }
            p.flags = flags;
            p.mode = mode;
        }
        FlagsMode::Creat => {
            p.flags = (open_flags::O_CREAT | open_flags::O_WRONLY | open_flags::O_TRUNC) as u64;
            p.mode = rec.arg(1);
        }
        FlagsMode::Chmod => {
            p.mode = match args {
                ArgLayout::DfdPath => rec.arg(2),
                _ => rec.arg(1),
            };
        }
    }
    true
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext) {
    let tid = current_tid();
    // SAFETY: a copy out of this thread's own entry, which only this
    // thread's enter and exit programs write.
    let Some(p) = (unsafe { PENDING.get(tid) }).copied() else {
        return;
    };
    let _ = PENDING.remove(tid);
    let mut rec = SyscallRecord::new(ctx);
    let nr = rec.nr();
    let ret = rec.ret();
    if !rec.ok() || ret < 0 || nr != p.nr {
        return;
    }
    let Some(op) = p.spec.op() else {
        return;
    };
    let Some(mut entry) = EVENTS.reserve::<FileRecord>(0) else {
        count_lost();
        return;
    };
    // SAFETY: the reserved space is ours alone until submitted, sized and
    // aligned for a FileRecord, and holds bytes the kernel handed out;
    // every bit pattern is a valid FileRecord (integers only).
    let r = unsafe { &mut *entry.as_mut_ptr() };
    fill_file(r, current_task(), &p, op, ret);
    count_faults(r.hdr.faults);
    entry.submit(submit_flags());
}

/// Fills the record of a file syscall that returned `ret` >= 0.
#[inline(always)]
fn fill_file(r: &mut FileRecord, task: *const u8, p: &Pending, op: Op, ret: i64) {
    fill_header(&mut r.hdr, task, RecordKind::File);
    let mut faults = r.hdr.faults;
    r.op = op as u32;
    r.flags = p.flags as u32;
    r.mode = p.mode as u32;
    r.i_mode = 0;
    r.info = 0;
    r.path1_len = fact(&mut faults, Fault::Path, |rd| {
        rd.user_str(&mut r.path1, p.p1)
    });
    r.path2_len = fact(&mut faults, Fault::Target, |rd| {
        rd.user_str(&mut r.path2, p.p2)
    });
    r.base1.len = 0;
    r.base1.status = walk::NONE;
    r.base2.len = 0;
    r.base2.status = walk::NONE;

    let (root, file) = fact(&mut faults, Fault::File, |rd| {
        let root = fs_root(rd, task);
        // The file itself, when the syscall names it by descriptor.
        let file = if op == Op::Open {
            fd_file(rd, task, ret)
        } else if p.spec.args() == Some(ArgLayout::Fd) {
            fd_file(rd, task, p.dfd1)
        } else {
            core::ptr::null()
        };
        (root, file)
    });
    if !file.is_null() {
        file_facts(r, file, op, root, &mut faults);
    } else {
        fact(&mut faults, Fault::File, |rd| {
            walk_base(rd, &mut r.base1, task, p.dfd1, r.path1[0], root);
            if op == Op::Rename {
                walk_base(rd, &mut r.base2, task, p.dfd2, r.path2[0], root);
            }
        });
    }
    r.hdr.faults = faults;
}

/// The facts of the open file `file`: its own path (the walk, into
/// `base1`), inode, layer, and for an open whether it created the file.
#[inline(always)]
fn file_facts(r: &mut FileRecord, file: *const u8, op: Op, root: *const u8, faults: &mut u32) {
    let fpath = file_path(file);
    fact(faults, Fault::File, |rd| {
        walk_path_struct(rd, &mut r.base1, fpath, root)
    });
    let mut bits = info::FILE_WALK;
    let mut inode = Reads::default();
    let dentry = inode.kernel_ptr(fpath, offset!(path_dentry));
    *faults |= inode.mask(Fault::Layer.bit());
    let i_node = inode.kernel_ptr(dentry, offset!(dentry_inode));
    if !i_node.is_null() {
        r.i_mode = inode.kernel::<u16>(i_node, offset!(inode_mode)) as u32;
        bits |= info::HAS_INODE;
    }
    if op == Op::Open {
        let fmode: u32 = inode.kernel(file, offset!(file_mode));
        if fmode & filter!(fmode_created) != 0 {
            bits |= info::CREATED;
        }
    }
    *faults |= inode.mask(Fault::Inode.bit());
    bits |= fact(faults, Fault::Layer, |rd| layer_bits(rd, dentry, root));
    r.info = bits;
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
