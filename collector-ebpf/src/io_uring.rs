//! The io_uring hook: one program on the BTF tracepoint
//! `io_uring_submit_req`, which every request a ring submits passes:
//!
//! ```text
//! TRACE_EVENT(io_uring_submit_req, TP_PROTO(struct io_kiocb *req), ...)
//! ```
//!
//! A ring's file operations never pass the syscall tracepoints the file
//! hook is on, so this is how a container's io_uring opens for writing,
//! renames, links, symlinks and unlinks are seen. At submission the
//! request has been prepared: its paths are the kernel's copies (`struct
//! filename`), its flags are in the kernel, and what the process does to
//! its own memory afterwards changes neither. What is not known yet is the
//! outcome, so the record says it was submitted (`info::IO_URING`) and has
//! no inode facts. Operations on a descriptor (write, fallocate, ftruncate)
//! are not reported: the file was opened by a syscall or by a ring's open,
//! which is.

use aya_ebpf::macros::btf_tracepoint;
use aya_ebpf::programs::BtfTracePointContext;
use driftwatch_common::{AT_FDCWD, Fault, Op, RecordKind, info, io_uring_op, open_flags};

use crate::file::{reset, send};
use crate::globals::{filter, uoff};
use crate::maps::SCRATCH;
use crate::read::{Reads, fact};
use crate::task::{current_task, fill_header, fs_root, task_wanted};
use crate::walk::walk_base;

#[btf_tracepoint(function = "io_uring_submit_req")]
pub fn io_uring_submit_req(ctx: BtfTracePointContext) -> i32 {
    on_submit(&ctx);
    0
}

/// A request's file arguments: where each path starts from, the kernel's
/// `struct filename` of each, and an open's flags and mode.
struct Request {
    dfd1: i64,
    name1: *const u8,
    dfd2: i64,
    name2: *const u8,
    flags: u64,
    mode: u64,
}

#[inline(always)]
fn on_submit(ctx: &BtfTracePointContext) {
    let req: *const u8 = ctx.arg::<u64>(0) as *const u8;
    let mut r = Reads::default();
    let opcode: u8 = r.kernel(req, uoff!(opcode));
    let op = match opcode {
        io_uring_op::OPENAT | io_uring_op::OPENAT2 => Op::Open,
        io_uring_op::RENAMEAT => Op::Rename,
        io_uring_op::UNLINKAT => Op::Unlink,
        io_uring_op::SYMLINKAT => Op::Symlink,
        io_uring_op::LINKAT => Op::Link,
        _ => return,
    };
    // The scope first: host programs use rings too, and their requests
    // need not be read.
    if r.failed() || filter!(kinds) & op.kind().bit() == 0 || !task_wanted() {
        return;
    }
    let Some(q) = request(req, op) else {
        return;
    };
    let Some(rec) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch entry; tracing programs do not nest on a
    // CPU (a per-CPU recursion guard, preemption off in a tracepoint).
    let rec = unsafe { &mut *rec };
    reset(rec, op, info::IO_URING, q.flags as u32, q.mode as u32);
    let task = current_task();
    let mut faults = 0u32;
    let root = fact(&mut faults, Fault::File, |rd| fs_root(rd, task));
    fill_header(&mut rec.hdr, task, RecordKind::File);
    faults |= rec.hdr.faults;
    rec.path1_len = fact(&mut faults, Fault::Path, |rd| {
        name_into(rd, &mut rec.path1, q.name1)
    });
    if rec.path1_len as usize >= rec.path1.len() {
        rec.info |= info::PATH_TRUNCATED;
    }
    if op != Op::Symlink {
        // A symlink's first path is its content, not a file.
        fact(&mut faults, Fault::File, |rd| {
            walk_base(rd, &mut rec.base1, task, q.dfd1, rec.path1[0], root)
        });
    }
    if !q.name2.is_null() {
        rec.path2_len = fact(&mut faults, Fault::Target, |rd| {
            name_into(rd, &mut rec.path2, q.name2)
        });
        if rec.path2_len as usize >= rec.path2.len() {
            rec.info |= info::TARGET_TRUNCATED;
        }
        fact(&mut faults, Fault::File, |rd| {
            walk_base(rd, &mut rec.base2, task, q.dfd2, rec.path2[0], root)
        });
    }
    rec.hdr.faults = faults;
    send(rec);
}

/// The string of the kernel's `struct filename` at `filename`, into `dst`:
/// its length with the NUL.
#[inline(always)]
fn name_into<const N: usize>(rd: &mut Reads, dst: &mut [u8; N], filename: *const u8) -> u32 {
    let name = rd.kernel_ptr(filename, uoff!(filename_name));
    rd.kernel_str(dst, name)
}

/// The arguments `op`'s request `req` was prepared with; None for an open
/// without write intent (read-only opens are not reported by the syscall
/// hook either) or when they cannot be read.
#[inline(always)]
fn request(req: *const u8, op: Op) -> Option<Request> {
    let cmd = req.wrapping_add(uoff!(cmd));
    let mut r = Reads::default();
    let dfd = |r: &mut Reads, off: usize| r.kernel::<i32>(cmd, off) as i64;
    let q = match op {
        Op::Open => {
            let flags: u64 = r.kernel(cmd, uoff!(open_flags));
            if flags & open_flags::WRITE_INTENT as u64 == 0 {
                return None;
            }
            Request {
                dfd1: dfd(&mut r, uoff!(open_dfd)),
                name1: r.kernel_ptr(cmd, uoff!(open_filename)),
                dfd2: AT_FDCWD,
                name2: core::ptr::null(),
                flags,
                mode: r.kernel(cmd, uoff!(open_mode)),
            }
        }
        Op::Rename => Request {
            dfd1: dfd(&mut r, uoff!(rename_old_dfd)),
            name1: r.kernel_ptr(cmd, uoff!(rename_oldpath)),
            dfd2: dfd(&mut r, uoff!(rename_new_dfd)),
            name2: r.kernel_ptr(cmd, uoff!(rename_newpath)),
            flags: 0,
            mode: 0,
        },
        Op::Unlink => Request {
            dfd1: dfd(&mut r, uoff!(unlink_dfd)),
            name1: r.kernel_ptr(cmd, uoff!(unlink_filename)),
            dfd2: AT_FDCWD,
            name2: core::ptr::null(),
            flags: 0,
            mode: 0,
        },
        // symlinkat(content, new_dfd, newpath) keeps its content in
        // `oldpath`, as the syscall's first argument.
        Op::Symlink | Op::Link => Request {
            dfd1: dfd(&mut r, uoff!(link_old_dfd)),
            name1: r.kernel_ptr(cmd, uoff!(link_oldpath)),
            dfd2: dfd(&mut r, uoff!(link_new_dfd)),
            name2: r.kernel_ptr(cmd, uoff!(link_newpath)),
            flags: 0,
            mode: 0,
        },
        _ => return None,
    };
    if r.failed() || q.name1.is_null() {
        return None;
    }
    Some(q)
}
