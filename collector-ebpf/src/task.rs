//! The acting task: whether it is reported, and the identity every record
//! starts with (`Header`).

use core::ffi::c_void;

use aya_ebpf::helpers::generated::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_task, bpf_ktime_get_ns,
};
use driftwatch_common::{COMM_LEN, Fault, Header, Kind, RecordKind};

use crate::globals::{filter, offset};
use crate::read::{Reads, fact, field};

/// The current task's `struct task_struct *`, only ever probe-read.
#[inline(always)]
pub fn current_task() -> *const u8 {
    // SAFETY: no preconditions.
    unsafe { bpf_get_current_task() as *const u8 }
}

/// The current task's cgroup (v2) id, as the record header has it.
#[inline(always)]
pub fn current_cgroup_id() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_get_current_cgroup_id() }
}

/// `tgid << 32 | tid` of the current task.
#[inline(always)]
pub fn current_pid_tgid() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_get_current_pid_tgid() }
}

/// The current thread's id.
#[inline(always)]
pub fn current_tid() -> u32 {
    current_pid_tgid() as u32
}

/// Whether the current task is reported at all: its kind was asked for, it
/// is not the collector, and it is in a container when only those count.
/// A pid namespace that cannot be read does not hide the task; its record
/// says so (`Fault::PidNs`).
#[inline(always)]
pub fn wanted(kind: Kind) -> bool {
    filter!(kinds) & kind.bit() != 0 && task_wanted()
}

/// [`wanted`] without the kind: the task is not the collector, and is in a
/// container when only those count.
#[inline(always)]
pub fn task_wanted() -> bool {
    let tgid = (current_pid_tgid() >> 32) as u32;
    if tgid == filter!(self_tgid) {
        return false;
    }
    if filter!(containers_only) == 0 {
        return true;
    }
    // Containers get a pid namespace of their own: level > 0.
    let mut reads = Reads::default();
    let level = pid_level(&mut reads, current_task());
    level > 0 || reads.failed()
}

/// Fills the identity of the current task, `task`. Leaves `h.faults` with
/// the facts that could not be read; the caller adds its own.
#[inline(always)]
pub fn fill_header(h: &mut Header, task: *const u8, kind: RecordKind) {
    let pid_tgid = current_pid_tgid();
    h.kind = kind as u32;
    h.pid = (pid_tgid >> 32) as u32;
    h.tid = pid_tgid as u32;
    // SAFETY: no preconditions.
    h.ktime_ns = unsafe { bpf_ktime_get_ns() };
    // SAFETY: no preconditions.
    h.cgroup_id = unsafe { bpf_get_current_cgroup_id() };

    let mut faults = 0;
    h.ppid = fact(&mut faults, Fault::Parent, |r| parent_tgid(r, task));
    let ns = fact(&mut faults, Fault::PidNs, |r| pid_ns(r, task));
    h.pid_ns_level = ns.level;
    h.vpid = ns.vpid;
    h.pid_ns = ns.inum;
    h.mnt_ns = fact(&mut faults, Fault::MntNs, |r| mnt_ns(r, task));
    let cred = fact(&mut faults, Fault::Cred, |r| cred(r, task));
    h.uid = cred.uid;
    h.gid = cred.gid;
    h.euid = cred.euid;
    h.tty = fact(&mut faults, Fault::Tty, |r| tty_nr(r, task));
    comm(&mut h.comm);
    fact(&mut faults, Fault::Cgroup, |r| cgroup_names(r, h, task));
    h.faults = faults;
}

/// The current task's `comm`.
#[inline(always)]
pub fn comm(dst: &mut [u8; COMM_LEN]) {
    // SAFETY: the helper writes at most COMM_LEN bytes, into `dst`.
    unsafe { bpf_get_current_comm(dst.as_mut_ptr().cast::<c_void>(), COMM_LEN as u32) };
}

#[inline(always)]
fn parent_tgid(r: &mut Reads, task: *const u8) -> u32 {
    let parent = r.kernel_ptr(task, offset!(task_real_parent));
    r.kernel(parent, offset!(task_tgid))
}

/// The depth of the task's pid namespace.
#[inline(always)]
fn pid_level(r: &mut Reads, task: *const u8) -> u32 {
    let pid = r.kernel_ptr(task, offset!(task_thread_pid));
    r.kernel(pid, offset!(pid_level))
}

struct PidNs {
    level: u32,
    vpid: u32,
    inum: u64,
}

/// `numbers[level]` of the task's `struct pid`: its pid as its own
/// namespace sees it, and that namespace (a `struct upid *`).
#[inline(always)]
fn own_upid(r: &mut Reads, task: *const u8) -> (u32, *const u8) {
    let pid = r.kernel_ptr(task, offset!(task_thread_pid));
    let level: u32 = r.kernel(pid, offset!(pid_level));
    let index = (level & 0x3f) as usize;
    let upid = field(pid, offset!(pid_numbers) + index * offset!(upid_size));
    (level, upid)
}

#[inline(always)]
fn pid_ns(r: &mut Reads, task: *const u8) -> PidNs {
    let (level, upid) = own_upid(r, task);
    let vpid = r.kernel(upid, offset!(upid_nr));
    let ns = r.kernel_ptr(upid, offset!(upid_ns));
    let inum: u32 = r.kernel(ns, offset!(pid_ns_inum));
    PidNs {
        level,
        vpid,
        inum: inum as u64,
    }
}

/// The root directory (`struct path *`) of the container the task is in:
/// that of its pid namespace's init (`child_reaper`). A process inside
/// the container can `chroot` itself but not its init, so files are
/// judged against the root the runtime gave the container. The task's own
/// root when the init has none (exiting) or for the host's namespace.
#[inline(always)]
pub fn container_root(r: &mut Reads, task: *const u8) -> *const u8 {
    let (_, upid) = own_upid(r, task);
    let ns = r.kernel_ptr(upid, offset!(upid_ns));
    let init = r.kernel_ptr(ns, offset!(pid_ns_child_reaper));
    let fs = r.kernel_ptr(init, offset!(task_fs));
    if fs.is_null() {
        return fs_root(r, task);
    }
    field(fs, offset!(fs_root))
}

/// Execs since the task was forked, this one included. `self_exec_id`
/// counts up at every exec and a fork records the parent's in
/// `parent_exec_id`, so the difference is what this task alone has run.
#[inline(always)]
pub fn exec_depth(r: &mut Reads, task: *const u8) -> u32 {
    let own: u64 = r.kernel(task, offset!(task_self_exec_id));
    let parent: u64 = r.kernel(task, offset!(task_parent_exec_id));
    own.wrapping_sub(parent) as u32
}

#[inline(always)]
fn mnt_ns(r: &mut Reads, task: *const u8) -> u64 {
    let nsproxy = r.kernel_ptr(task, offset!(task_nsproxy));
    let mnt_ns = r.kernel_ptr(nsproxy, offset!(nsproxy_mnt_ns));
    r.kernel::<u32>(mnt_ns, offset!(mnt_ns_inum)) as u64
}

struct Cred {
    uid: u32,
    gid: u32,
    euid: u32,
}

/// The task's host ids.
#[inline(always)]
fn cred(r: &mut Reads, task: *const u8) -> Cred {
    let cred = r.kernel_ptr(task, offset!(task_cred));
    Cred {
        uid: r.kernel(cred, offset!(cred_uid)),
        gid: r.kernel(cred, offset!(cred_gid)),
        euid: r.kernel(cred, offset!(cred_euid)),
    }
}

/// The controlling terminal as `/proc/<pid>/stat`'s `tty_nr`, 0 for none.
#[inline(always)]
fn tty_nr(r: &mut Reads, task: *const u8) -> u32 {
    let signal = r.kernel_ptr(task, offset!(task_signal));
    let tty = r.kernel_ptr(signal, offset!(signal_tty));
    if tty.is_null() {
        return 0;
    }
    let index: u32 = r.kernel(tty, offset!(tty_index));
    let driver = r.kernel_ptr(tty, offset!(tty_driver));
    let major: u32 = r.kernel(driver, offset!(tty_driver_major));
    let minor = r
        .kernel::<u32>(driver, offset!(tty_driver_minor_start))
        .wrapping_add(index);
    // new_encode_dev().
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// The names of the task's cgroup directory and its parent, in the default
/// hierarchy, or in the v1 memory hierarchy when the task sits at the v2
/// root (v1-only hosts).
#[inline(always)]
fn cgroup_names(r: &mut Reads, h: &mut Header, task: *const u8) {
    let cset = r.kernel_ptr(task, offset!(task_cgroups));
    let mut cgrp = r.kernel_ptr(cset, offset!(css_set_dfl_cgrp));
    let mut kn = r.kernel_ptr(cgrp, offset!(cgroup_kn));
    let mut kparent = r.kernel_ptr(kn, offset!(kn_parent));
    if kparent.is_null() {
        let memory = (offset!(memory_cgrp_id) & 0x3f) * 8;
        let css = r.kernel_ptr(cset, offset!(css_set_subsys) + memory);
        cgrp = r.kernel_ptr(css, offset!(css_cgroup));
        kn = r.kernel_ptr(cgrp, offset!(cgroup_kn));
        kparent = r.kernel_ptr(kn, offset!(kn_parent));
    }
    let leaf = r.kernel_ptr(kn, offset!(kn_name));
    r.kernel_str(&mut h.cgroup_leaf, leaf);
    let parent = r.kernel_ptr(kparent, offset!(kn_name));
    r.kernel_str(&mut h.cgroup_parent, parent);
}

/// The `struct path` of the task's root directory, or null (no `fs`).
#[inline(always)]
pub fn fs_root(r: &mut Reads, task: *const u8) -> *const u8 {
    field(r.kernel_ptr(task, offset!(task_fs)), offset!(fs_root))
}

/// The `struct path` of the task's working directory, or null.
#[inline(always)]
pub fn fs_pwd(r: &mut Reads, task: *const u8) -> *const u8 {
    field(r.kernel_ptr(task, offset!(task_fs)), offset!(fs_pwd))
}

/// The `struct file *` of descriptor `fd` in `task`, or null when there is
/// none.
#[inline(always)]
pub fn fd_file(r: &mut Reads, task: *const u8, fd: i64) -> *const u8 {
    if fd < 0 {
        return core::ptr::null();
    }
    let files = r.kernel_ptr(task, offset!(task_files));
    let fdt = r.kernel_ptr(files, offset!(files_fdt));
    let max: u32 = r.kernel(fdt, offset!(fdt_max_fds));
    if fd as u64 >= max as u64 {
        return core::ptr::null();
    }
    let fds = r.kernel_ptr(fdt, offset!(fdt_fd));
    r.kernel_ptr(fds, (fd as usize) * 8)
}

/// The `struct path` inside a `struct file *`, or null for no file.
#[inline(always)]
pub fn file_path(file: *const u8) -> *const u8 {
    field(file, offset!(file_path))
}
