//! The exec hooks: `sched_prepare_exec` notes the program an exec replaces,
//! `sched_process_exec` emits one `ExecRecord` per successful exec.

use aya_ebpf::macros::tracepoint;
use aya_ebpf::programs::TracePointContext;
use driftwatch_common::{ARGS_MAX, ExecRecord, Fault, FileFacts, Kind, RecordKind, exe};

use crate::enforce::judge;
use crate::globals::offset;
use crate::layer::layer_of;
use crate::maps::{
    EVENTS, EXEC_SCRATCH, PRIOR, Prior, count_faults, count_lost, reserved, submit_flags,
};
use crate::read::{Reads, fact, facts, field};
use crate::task::{
    container_root, current_task, current_tid, exec_depth, file_path, fill_header, fs_pwd, fs_root,
    wanted,
};
use crate::walk::walk_path_struct;

/// `sched:sched_prepare_exec` (Linux 6.10+), fired at the exec's point of
/// no return while the task still runs its old program:
///
/// ```text
/// field:__data_loc char[] interp;   offset:8;  size:4; signed:0;
/// field:__data_loc char[] filename; offset:12; size:4; signed:0;
/// field:pid_t pid;                  offset:16; size:4; signed:1;
/// field:__data_loc char[] comm;     offset:20; size:4; signed:0;
/// ```
///
/// None of it is read: what matters is `current->mm->exe_file`, the file
/// being replaced, which is gone by `sched_process_exec`. Kept in `PRIOR`
/// by thread id (the exec may make the thread its group's leader, hence
/// `old_pid` on the other side).
#[tracepoint]
pub fn sched_prepare_exec(_ctx: TracePointContext) -> u32 {
    on_prepare();
    0
}

#[inline(always)]
fn on_prepare() {
    if !wanted(Kind::Exec) {
        return;
    }
    let task = current_task();
    let mut r = Reads::default();
    let mm = r.kernel_ptr(task, offset!(task_mm));
    let file = r.kernel_ptr(mm, offset!(mm_exe_file));
    let inode = r.kernel_ptr(file, offset!(file_inode));
    let mnt_ns = mount_ns_of(&mut r, file_path(file));
    if r.failed() || file.is_null() {
        // Nothing known: the exec's record says so (no `PRIOR_KNOWN`).
        return;
    }
    let prior = Prior {
        inode: inode as u64,
        mnt_ns,
        _pad: 0,
    };
    // A full map evicts its oldest entry; a failed insert leaves the exec
    // without prior facts, which only withholds exemptions.
    let _ = PRIOR.insert(current_tid(), prior, 0);
}

/// The inode number of the mount namespace the `struct path *` `path` is
/// mounted in; 0 for a kernel-internal mount (its `mnt_ns` is a small
/// sentinel, not a namespace) or no path.
#[inline(always)]
fn mount_ns_of(r: &mut Reads, path: *const u8) -> u32 {
    let mnt = r.kernel_ptr(path, offset!(path_mnt));
    if mnt.is_null() {
        return 0;
    }
    let mount = mnt.wrapping_sub(offset!(mount_mnt));
    let ns = r.kernel_ptr(mount, offset!(mount_mnt_ns));
    if (ns as usize) < 4096 {
        return 0;
    }
    r.kernel(ns, offset!(mnt_ns_inum))
}

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
/// `old_pid` finds what `sched_prepare_exec` kept. `filename` is not read:
/// it is the path as given to execve, while the record reports the
/// resolved executable (`mm->exe_file`).
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    // SAFETY: a probe read of the record at a field the format gives.
    let old_pid = unsafe { ctx.read_at::<u32>(16) }.unwrap_or(0);
    on_exec(old_pid);
    0
}

#[inline(always)]
fn on_exec(old_pid: u32) {
    // Taken even when not reported, so the map does not fill with entries
    // of unwanted kinds' tasks.
    // SAFETY: the value is copied out before the entry is removed.
    let prior = unsafe { PRIOR.get(old_pid) }.copied();
    if prior.is_some() {
        let _ = PRIOR.remove(old_pid);
    }
    if !wanted(Kind::Exec) {
        return;
    }
    // Flat, for a call that is not inlined.
    let (inode, mnt_ns) = prior.map_or((0, 0), |p| (p.inode, p.mnt_ns));
    let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
        count_lost();
        // The record is lost, the verdict must not be: judged in scratch.
        if let Some(p) = EXEC_SCRATCH.get_ptr_mut(0) {
            // SAFETY: this CPU's slot of a per-CPU map, used by nothing
            // else while this program runs; integers only.
            fill_and_judge(unsafe { &mut *p }, prior.is_some(), inode, mnt_ns);
        }
        return;
    };
    // SAFETY: the reserved space is ours alone until submitted, sized and
    // aligned for an ExecRecord, and holds bytes the kernel handed out;
    // every bit pattern is a valid ExecRecord (integers only).
    let r = unsafe { &mut *entry.as_mut_ptr() };
    fill_and_judge(r, prior.is_some(), inode, mnt_ns);
    count_faults(r.hdr.faults);
    entry.submit(submit_flags(reserved::<ExecRecord>()));
}

/// The record of the task that just exec'd, then the policy's verdict on
/// it. Not inlined: verified once per call site instead of twice inline.
#[inline(never)]
fn fill_and_judge(r: &mut ExecRecord, known: bool, inode: u64, mnt_ns: u32) {
    let prior = known.then_some(Prior {
        inode,
        mnt_ns,
        _pad: 0,
    });
    fill_exec(r, current_task(), prior);
    judge(r);
}

/// Fills the record of the task that just exec'd.
#[inline(always)]
fn fill_exec(r: &mut ExecRecord, task: *const u8, prior: Option<Prior>) {
    fill_header(&mut r.hdr, task, RecordKind::Exec);
    let mut faults = r.hdr.faults;
    // Every walk stops at a root: without it, a path would run up to the
    // host's root instead. The executables' walks stop at the container's
    // root, which a chroot inside it does not move; the cwd is as the task
    // sees it.
    let root = fact(&mut faults, Fault::Cwd, |rd| fs_root(rd, task));
    let walks = Fault::Exe.bit() | Fault::Parent.bit() | Fault::ExeFile.bit();
    let croot = facts(&mut faults, walks, |rd| container_root(rd, task));
    let of_mm = Fault::Exe.bit() | Fault::Layer.bit() | Fault::Args.bit() | Fault::ExeFile.bit();
    let mm = facts(&mut faults, of_mm, |rd| {
        rd.kernel_ptr(task, offset!(task_mm))
    });
    let exe = fact(&mut faults, Fault::Exe, |rd| {
        let exe = rd.kernel_ptr(mm, offset!(mm_exe_file));
        walk_path_struct(rd, &mut r.exe, file_path(exe), croot);
        exe
    });
    let mut flags = fact(&mut faults, Fault::Layer, |rd| layer_flags(rd, exe));
    let inode = fact(&mut faults, Fault::ExeFile, |rd| {
        let inode = rd.kernel_ptr(exe, offset!(file_inode));
        if on_root_fs(rd, exe, croot) {
            flags |= exe::ROOT_FS;
        }
        file_facts(rd, &mut r.exe_file, inode);
        inode
    });
    r.prior_mnt_ns = 0;
    if let Some(p) = prior {
        flags |= exe::PRIOR_KNOWN;
        r.prior_mnt_ns = p.mnt_ns;
        if !inode.is_null() && p.inode == inode as u64 {
            flags |= exe::REEXEC;
        }
    }
    r.exe_flags = flags;
    r.exec_depth = fact(&mut faults, Fault::ExecDepth, |rd| exec_depth(rd, task));
    fact(&mut faults, Fault::Parent, |rd| {
        parent_of(rd, r, task, croot)
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
fn layer_flags(r: &mut Reads, exe: *const u8) -> u32 {
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

/// Whether the file `exe` is on the filesystem of the root `root` (a
/// `struct path *`): the same superblock.
#[inline(always)]
fn on_root_fs(r: &mut Reads, exe: *const u8, root: *const u8) -> bool {
    let mnt = r.kernel_ptr(file_path(exe), offset!(path_mnt));
    let root_mnt = r.kernel_ptr(root, offset!(path_mnt));
    let sb = r.kernel_ptr(mnt, offset!(vfsmount_sb));
    let root_sb = r.kernel_ptr(root_mnt, offset!(vfsmount_sb));
    !sb.is_null() && sb == root_sb
}

/// The inode's number, size, times and link count and its superblock's
/// magic and device.
#[inline(always)]
fn file_facts(r: &mut Reads, f: &mut FileFacts, inode: *const u8) {
    f.ino = r.kernel(inode, offset!(inode_ino));
    f.size = r.kernel(inode, offset!(inode_size));
    f.mtime_sec = r.kernel(inode, offset!(inode_mtime_sec));
    f.mtime_nsec = r.kernel(inode, offset!(inode_mtime_nsec));
    f.ctime_sec = r.kernel(inode, offset!(inode_ctime_sec));
    f.ctime_nsec = r.kernel(inode, offset!(inode_ctime_nsec));
    f.nlink = r.kernel(inode, offset!(inode_nlink));
    let sb = r.kernel_ptr(inode, offset!(inode_sb));
    f.magic = r.kernel::<u64>(sb, offset!(sb_magic)) as u32;
    f.dev = r.kernel(sb, offset!(sb_dev));
    f._pad = 0;
}

/// The parent's comm, executable and mount namespace.
#[inline(always)]
fn parent_of(r: &mut Reads, rec: &mut ExecRecord, task: *const u8, root: *const u8) {
    let parent = r.kernel_ptr(task, offset!(task_real_parent));
    r.kernel_str(&mut rec.pcomm, field(parent, offset!(task_comm)));
    let pmm = r.kernel_ptr(parent, offset!(task_mm));
    let pexe = r.kernel_ptr(pmm, offset!(mm_exe_file));
    walk_path_struct(r, &mut rec.pexe, file_path(pexe), root);
    let nsproxy = r.kernel_ptr(parent, offset!(task_nsproxy));
    let mnt_ns = r.kernel_ptr(nsproxy, offset!(nsproxy_mnt_ns));
    rec.parent_mnt_ns = r.kernel(mnt_ns, offset!(mnt_ns_inum));
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
