//! The exec hook: one `ExecRecord` per successful exec.

use aya_ebpf::macros::tracepoint;
use aya_ebpf::programs::TracePointContext;
use driftwatch_common::{ARGS_MAX, ExecRecord, Fault, Kind, RecordKind, exe};

use crate::globals::offset;
use crate::layer::layer_of;
use crate::maps::{EVENTS, count_faults, count_lost, submit_flags};
use crate::read::{Reads, fact, facts, field};
use crate::task::{current_task, file_path, fill_header, fs_pwd, fs_root, wanted};
use crate::walk::walk_path_struct;

/// `sched:sched_process_exec`, fired in the new program's context once the
/// exec has succeeded:
///
/// ```text
/// field:unsigned short common_type;         offset:0;  size:2; signed:0;
/// field:unsigned char common_flags;         offset:2;  size:1; signed:0;
/// field:unsigned char common_preempt_count; offset:3;  size:1; signed:0;
/// field:int common_pid;                     offset:4;  size:4; signed:1;
/// field:__data_loc char[] filename;         offset:8;  size:4; signed:0;
/// field:pid_t pid;                          offset:12; size:4; signed:1;
/// field:pid_t old_pid;                      offset:16; size:4; signed:1;
/// ```
///
/// None of it is read: `filename` is the path as given to execve, while
/// the record reports the resolved executable (`mm->exe_file`), and the
/// task is `current`.
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    on_exec();
    0
}

#[inline(always)]
fn on_exec() {
    if !wanted(Kind::Exec) {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
        count_lost();
        return;
    };
    // SAFETY: the reserved space is ours alone until submitted, sized and
    // aligned for an ExecRecord, and holds bytes the kernel handed out;
    // every bit pattern is a valid ExecRecord (integers only).
    let r = unsafe { &mut *entry.as_mut_ptr() };
    fill_exec(r, current_task());
    count_faults(r.hdr.faults);
    entry.submit(submit_flags());
}

/// Fills the record of the task that just exec'd.
#[inline(always)]
fn fill_exec(r: &mut ExecRecord, task: *const u8) {
    fill_header(&mut r.hdr, task, RecordKind::Exec);
    let mut faults = r.hdr.faults;
    // Every walk stops at the task's root: without it, a path would run up
    // to the host's root instead.
    let walks = Fault::Exe.bit() | Fault::Parent.bit() | Fault::Cwd.bit();
    let root = facts(&mut faults, walks, |rd| fs_root(rd, task));
    let of_mm = Fault::Exe.bit() | Fault::Layer.bit() | Fault::Args.bit();
    let mm = facts(&mut faults, of_mm, |rd| {
        rd.kernel_ptr(task, offset!(task_mm))
    });
    let exe = fact(&mut faults, Fault::Exe, |rd| {
        let exe = rd.kernel_ptr(mm, offset!(mm_exe_file));
        walk_path_struct(rd, &mut r.exe, file_path(exe), root);
        exe
    });
    r.exe_flags = fact(&mut faults, Fault::Layer, |rd| exe_flags(rd, exe));
    fact(&mut faults, Fault::Parent, |rd| {
        parent_of(rd, r, task, root)
    });
    fact(&mut faults, Fault::Cwd, |rd| {
        let cwd = fs_pwd(rd, task);
        walk_path_struct(rd, &mut r.cwd, cwd, root);
    });
    fact(&mut faults, Fault::Args, |rd| args_of(rd, r, mm));
    r.hdr.faults = faults;
}

/// The `exe` layer flags of the executable `exe` (a `struct file *`).
#[inline(always)]
fn exe_flags(r: &mut Reads, exe: *const u8) -> u32 {
    if exe.is_null() {
        return 0;
    }
    let dentry = r.kernel_ptr(file_path(exe), offset!(path_dentry));
    let layer = layer_of(r, dentry);
    let mut flags = 0;
    if layer.overlay {
        flags |= exe::OVERLAY;
    }
    if layer.upper {
        flags |= exe::UPPER;
    }
    flags
}

/// The parent's comm and executable.
#[inline(always)]
fn parent_of(r: &mut Reads, rec: &mut ExecRecord, task: *const u8, root: *const u8) {
    let parent = r.kernel_ptr(task, offset!(task_real_parent));
    r.kernel_str(&mut rec.pcomm, field(parent, offset!(task_comm)));
    let pmm = r.kernel_ptr(parent, offset!(task_mm));
    let pexe = r.kernel_ptr(pmm, offset!(mm_exe_file));
    walk_path_struct(r, &mut rec.pexe, file_path(pexe), root);
}

/// argv: the first `ARGS_MAX` bytes of `mm->arg_start..arg_end`.
#[inline(always)]
fn args_of(r: &mut Reads, rec: &mut ExecRecord, mm: *const u8) {
    rec.args_len = 0;
    rec.args_truncated = 0;
    let start: u64 = r.kernel(mm, offset!(mm_arg_start));
    let end: u64 = r.kernel(mm, offset!(mm_arg_end));
    let mut len = end.saturating_sub(start);
    if len > ARGS_MAX as u64 {
        len = ARGS_MAX as u64;
        rec.args_truncated = 1;
    }
    let len = len as u32;
    if r.user_bytes(&mut rec.args, len, start) {
        rec.args_len = len;
    }
}
