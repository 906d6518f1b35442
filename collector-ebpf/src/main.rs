//! driftwatch's kernel programs. Tracepoints only (these kernels refuse
//! fentry/LSM and may lack kprobes):
//!
//! - `sched_process_exec`: one `ExecRecord` per successful exec.
//! - `sys_enter_file` (attached to every `syscalls:sys_enter_*` of interest):
//!   filters, then stashes the arguments per thread.
//! - `sys_exit_file` (attached to the matching `sys_exit_*`): when the syscall
//!   succeeded, emits one `FileRecord`.
//!
//! Rust eBPF has no CO-RE relocations, so every kernel struct offset comes
//! from `OFFSETS`, filled by the loader from the running kernel's BTF.
#![no_std]
#![no_main]

use core::ffi::c_void;
use core::ptr::{addr_of, addr_of_mut, read_volatile};

use aya_ebpf::helpers::generated::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_str,
    bpf_probe_read_user, bpf_probe_read_user_str,
};
use aya_ebpf::macros::{map, tracepoint};
use aya_ebpf::maps::{HashMap, PerCpuArray, RingBuf};
use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use aya_ebpf::programs::TracePointContext;
use driftwatch_common::{
    ARGS_MAX, AT_FDCWD, CGROUP_NAME, COMM_LEN, EXE_OVERLAY, EXE_UPPER, ExecRecord, FileRecord,
    Filter, Header, NAME_BOUND, OVERLAYFS_SUPER_MAGIC, Offsets, RECORD_EXEC, RECORD_FILE,
    USER_PATH, WALK_DATA, WALK_DEPTH, Walk, info, op, walk,
};

#[unsafe(no_mangle)]
static OFFSETS: Offsets = unsafe { core::mem::zeroed() };

#[unsafe(no_mangle)]
static FILTER: Filter = unsafe { core::mem::zeroed() };

/// Sized by the loader from pipeline.toml (`ring_buffer_kib`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Records that did not fit in `EVENTS`, per CPU. The kernel tells only the
/// program about a failed reserve, so this is the only place losses show.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Syscall number → (operation, argument layout), filled by the loader with
/// this architecture's numbers.
#[map]
static SYSCALLS: HashMap<u32, u32> = HashMap::with_max_entries(64, 0);

/// Arguments stashed at syscall entry, by thread id, until the exit says
/// whether the call succeeded.
#[map]
static PENDING: HashMap<u32, Pending> = HashMap::with_max_entries(16384, 0);

/// Argument layouts (`SYSCALLS` values): the low byte is the `op`, the next
/// byte says where the arguments are.
const L_PATH: u32 = 1 << 8; // (path, ...)
const L_DFD_PATH: u32 = 2 << 8; // (dfd, path, ...)
const L_FD: u32 = 3 << 8; // (fd, ...)
const L_PATH_PATH: u32 = 4 << 8; // (old, new)
const L_DFD_PATH_DFD_PATH: u32 = 5 << 8; // (olddfd, old, newdfd, new)
/// Which open variant: flags/mode positions differ.
const V_OPEN: u32 = 1 << 16; // open(path, flags, mode)
const V_OPENAT: u32 = 2 << 16; // openat(dfd, path, flags, mode)
const V_OPENAT2: u32 = 3 << 16; // openat2(dfd, path, how, size)
const V_CREAT: u32 = 4 << 16; // creat(path, mode)
const V_CHMOD: u32 = 5 << 16; // chmod(path, mode) / fchmodat(dfd, path, mode) / fchmod(fd, mode)

const O_WRONLY: u64 = 0o1;
const O_RDWR: u64 = 0o2;
const O_CREAT: u64 = 0o100;
const O_TRUNC: u64 = 0o1000;

/// EventKind bits (driftwatch_sdk::EventKind::bit).
const K_EXEC: u32 = 1 << 0;
const K_OPEN_WRITE: u32 = 1 << 1;
const K_CHMOD: u32 = 1 << 2;
const K_UNLINK: u32 = 1 << 3;
const K_RENAME: u32 = 1 << 4;

#[repr(C)]
#[derive(Clone, Copy)]
struct Pending {
    nr: u32,
    code: u32,
    dfd1: i64,
    dfd2: i64,
    p1: u64,
    p2: u64,
    flags: u64,
    mode: u64,
}

macro_rules! off {
    ($f:ident) => {{
        // SAFETY: a plain read of a global the loader rewrote; volatile so
        // LLVM does not fold the compile-time zero.
        #[allow(unused_unsafe)]
        let v = unsafe { read_volatile(addr_of!(OFFSETS.$f)) as usize };
        v
    }};
}

macro_rules! filt {
    ($f:ident) => {{
        #[allow(unused_unsafe)]
        let v = unsafe { read_volatile(addr_of!(FILTER.$f)) };
        v
    }};
}

/// Commits a record, waking the reader only when enough has piled up: a
/// wake-up per record costs the workload a cross-CPU interrupt and the
/// daemon a context switch for each exec or write, and the reader polls on
/// a short timer anyway.
#[inline(always)]
fn submit_flags() -> u64 {
    let threshold = filt!(wakeup_bytes);
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
unsafe fn rd<T: Copy + Default>(base: *const u8, off: usize) -> T {
    if base.is_null() {
        return T::default();
    }
    let mut v = T::default();
    let rc = unsafe {
        bpf_probe_read_kernel(
            addr_of_mut!(v) as *mut c_void,
            core::mem::size_of::<T>() as u32,
            base.wrapping_add(off) as *const c_void,
        )
    };
    if rc != 0 { T::default() } else { v }
}

#[inline(always)]
unsafe fn rp(base: *const u8, off: usize) -> *const u8 {
    unsafe { rd::<usize>(base, off) as *const u8 }
}

#[inline(always)]
unsafe fn read_kstr(dst: *mut u8, size: usize, src: *const u8) {
    if src.is_null() {
        return;
    }
    unsafe {
        bpf_probe_read_kernel_str(dst as *mut c_void, size as u32, src as *const c_void);
    }
}

fn count_lost() {
    if let Some(p) = LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *p += 1 };
    }
}

/// Whether the current task is reported at all.
#[inline(always)]
unsafe fn wanted(kind: u32) -> bool {
    if filt!(kinds) & kind == 0 {
        return false;
    }
    let tgid = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
    if tgid == filt!(self_tgid) {
        return false;
    }
    if filt!(containers_only) != 0 {
        // Containers get a pid namespace of their own: level > 0.
        let task = unsafe { bpf_get_current_task() } as *const u8;
        let pid = unsafe { rp(task, off!(task_thread_pid)) };
        let level: u32 = unsafe { rd(pid, off!(pid_level)) };
        if level == 0 {
            return false;
        }
    }
    true
}

/// Fills the identity of the current task.
#[inline(always)]
unsafe fn fill_header(h: *mut Header, task: *const u8, kind: u32) {
    unsafe {
        let pid_tgid = bpf_get_current_pid_tgid();
        (*h).kind = kind;
        (*h).pid = (pid_tgid >> 32) as u32;
        (*h).tid = pid_tgid as u32;
        (*h).ktime_ns = bpf_ktime_get_ns();
        (*h).cgroup_id = bpf_get_current_cgroup_id();
        let parent = rp(task, off!(task_real_parent));
        (*h).ppid = rd::<u32>(parent, off!(task_tgid));

        let pid = rp(task, off!(task_thread_pid));
        let level: u32 = rd(pid, off!(pid_level));
        (*h).pid_ns_level = level;
        // numbers[level]: the task's pid as its own namespace sees it.
        let level = (level & 0x3f) as usize;
        let upid = pid.wrapping_add(off!(pid_numbers) + level * off!(upid_size));
        (*h).vpid = rd::<u32>(upid, off!(upid_nr));
        let pidns = rp(upid, off!(upid_ns));
        (*h).pid_ns = rd::<u32>(pidns, off!(pid_ns_inum)) as u64;
        let nsproxy = rp(task, off!(task_nsproxy));
        let mntns = rp(nsproxy, off!(nsproxy_mnt_ns));
        (*h).mnt_ns = rd::<u32>(mntns, off!(mnt_ns_inum)) as u64;

        let cred = rp(task, off!(task_cred));
        (*h).uid = rd(cred, off!(cred_uid));
        (*h).gid = rd(cred, off!(cred_gid));
        (*h).euid = rd(cred, off!(cred_euid));

        let signal = rp(task, off!(task_signal));
        let tty = rp(signal, off!(signal_tty));
        (*h).tty = 0;
        if !tty.is_null() {
            let index: u32 = rd(tty, off!(tty_index));
            let driver = rp(tty, off!(tty_driver));
            let major: u32 = rd(driver, off!(tty_driver_major));
            let minor = rd::<u32>(driver, off!(tty_driver_minor_start)).wrapping_add(index);
            // new_encode_dev(), as /proc/<pid>/stat shows it.
            (*h).tty = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        }

        bpf_get_current_comm(addr_of_mut!((*h).comm) as *mut c_void, COMM_LEN as u32);

        (*h).cgroup_leaf[0] = 0;
        (*h).cgroup_parent[0] = 0;
        let cset = rp(task, off!(task_cgroups));
        let mut cgrp = rp(cset, off!(css_set_dfl_cgrp));
        let mut kn = rp(cgrp, off!(cgroup_kn));
        let mut kparent = rp(kn, off!(kn_parent));
        if kparent.is_null() {
            // At the v2 root: on a v1-only host the memory hierarchy says more.
            let css = rp(
                cset,
                off!(css_set_subsys) + (off!(memory_cgrp_id) & 0x3f) * 8,
            );
            cgrp = rp(css, off!(css_cgroup));
            kn = rp(cgrp, off!(cgroup_kn));
            kparent = rp(kn, off!(kn_parent));
        }
        read_kstr(
            addr_of_mut!((*h).cgroup_leaf) as *mut u8,
            CGROUP_NAME,
            rp(kn, off!(kn_name)),
        );
        read_kstr(
            addr_of_mut!((*h).cgroup_parent) as *mut u8,
            CGROUP_NAME,
            rp(kparent, off!(kn_name)),
        );
    }
}

/// Writes the components of (mnt, dentry) into `w`, leaf first, climbing
/// dentries and crossing mounts until the task's root (root_mnt,
/// root_dentry), the top of the mount tree, or `WALK_DEPTH` levels.
#[inline(never)]
unsafe fn walk_path(
    w: *mut Walk,
    mut mnt: *const u8,
    mut dentry: *const u8,
    root_mnt: *const u8,
    root_dentry: *const u8,
) {
    unsafe {
        let buf = addr_of_mut!((*w).buf) as *mut u8;
        let mount_mnt = off!(mount_mnt);
        let name_off = off!(dentry_name) + off!(qstr_name);
        let mut len: usize = 0;
        let mut status = walk::TRUNCATED;
        let mut i = 0;
        while i < WALK_DEPTH {
            i += 1;
            if dentry.is_null() || mnt.is_null() {
                status = walk::NONE;
                break;
            }
            if dentry == root_dentry && mnt == root_mnt {
                status = walk::ROOT;
                break;
            }
            let mnt_root = rp(mnt, off!(vfsmount_root));
            if dentry == mnt_root {
                // Top of this mount: continue from where it is mounted.
                let mount = mnt.wrapping_sub(mount_mnt);
                let mparent = rp(mount, off!(mount_parent));
                if mparent == mount || mparent.is_null() {
                    status = walk::GLOBAL_ROOT;
                    break;
                }
                dentry = rp(mount, off!(mount_mountpoint));
                mnt = mparent.wrapping_add(mount_mnt);
                continue;
            }
            let parent = rp(dentry, off!(dentry_parent));
            if len >= WALK_DATA {
                status = walk::TRUNCATED;
                break;
            }
            let at = len & (WALK_DATA - 1);
            let n = bpf_probe_read_kernel_str(
                buf.wrapping_add(at) as *mut c_void,
                NAME_BOUND as u32,
                rp(dentry, name_off) as *const c_void,
            );
            if n <= 0 {
                status = walk::NONE;
                break;
            }
            len = at + (n as usize & (2 * NAME_BOUND - 1));
            if parent == dentry || parent.is_null() {
                status = walk::PSEUDO;
                break;
            }
            dentry = parent;
        }
        (*w).len = len as u16;
        (*w).status = status;
    }
}

#[inline(always)]
unsafe fn walk_path_struct(w: *mut Walk, path: *const u8, root: *const u8) {
    unsafe {
        if path.is_null() {
            (*w).len = 0;
            (*w).status = walk::NONE;
            return;
        }
        walk_path(
            w,
            rp(path, off!(path_mnt)),
            rp(path, off!(path_dentry)),
            rp(root, off!(path_mnt)),
            rp(root, off!(path_dentry)),
        );
    }
}

/// `struct file *` of fd in the current task, or null.
#[inline(always)]
unsafe fn fd_file(task: *const u8, fd: i64) -> *const u8 {
    unsafe {
        if fd < 0 {
            return core::ptr::null();
        }
        let files = rp(task, off!(task_files));
        let fdt = rp(files, off!(files_fdt));
        let max: u32 = rd(fdt, off!(fdt_max_fds));
        if fd as u64 >= max as u64 {
            return core::ptr::null();
        }
        let arr = rp(fdt, off!(fdt_fd));
        rp(arr, (fd as usize) * 8)
    }
}

/// (overlay, upper) for a dentry: see docs/sensor.md.
#[inline(always)]
unsafe fn layer_of(dentry: *const u8) -> (bool, bool) {
    unsafe {
        let sb = rp(dentry, off!(dentry_sb));
        let magic: u64 = rd(sb, off!(sb_magic));
        if magic != OVERLAYFS_SUPER_MAGIC {
            return (false, false);
        }
        let upper_off = off!(ovl_upper_from_inode);
        if upper_off == 0 {
            return (true, false);
        }
        let inode = rp(dentry, off!(dentry_inode));
        let upper = rp(inode, upper_off);
        if upper.is_null() {
            return (true, false);
        }
        let uinode = rp(upper, off!(dentry_inode));
        let ino: u64 = rd(uinode, off!(inode_ino));
        (true, ino != 0)
    }
}

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    unsafe { on_exec() };
    0
}

#[inline(always)]
unsafe fn on_exec() {
    unsafe {
        if !wanted(K_EXEC) {
            return;
        }
        let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
            count_lost();
            return;
        };
        let r = entry.as_mut_ptr();
        let task = bpf_get_current_task() as *const u8;
        fill_header(addr_of_mut!((*r).hdr), task, RECORD_EXEC);

        let parent = rp(task, off!(task_real_parent));
        (*r).pcomm[0] = 0;
        read_kstr(
            addr_of_mut!((*r).pcomm) as *mut u8,
            COMM_LEN,
            parent.wrapping_add(off!(task_comm)),
        );

        let fs = rp(task, off!(task_fs));
        let root = if fs.is_null() {
            core::ptr::null()
        } else {
            fs.wrapping_add(off!(fs_root))
        };
        let mm = rp(task, off!(task_mm));
        let exe = rp(mm, off!(mm_exe_file));
        let exe_path = if exe.is_null() {
            core::ptr::null()
        } else {
            exe.wrapping_add(off!(file_path))
        };
        walk_path_struct(addr_of_mut!((*r).exe), exe_path, root);
        let mut flags = 0;
        if !exe.is_null() {
            let (overlay, upper) = layer_of(rp(exe_path, off!(path_dentry)));
            if overlay {
                flags |= EXE_OVERLAY;
            }
            if upper {
                flags |= EXE_UPPER;
            }
        }
        (*r).exe_flags = flags;

        let pmm = rp(parent, off!(task_mm));
        let pexe = rp(pmm, off!(mm_exe_file));
        let pexe_path = if pexe.is_null() {
            core::ptr::null()
        } else {
            pexe.wrapping_add(off!(file_path))
        };
        walk_path_struct(addr_of_mut!((*r).pexe), pexe_path, root);
        let cwd = if fs.is_null() {
            core::ptr::null()
        } else {
            fs.wrapping_add(off!(fs_pwd))
        };
        walk_path_struct(addr_of_mut!((*r).cwd), cwd, root);

        let start: u64 = rd(mm, off!(mm_arg_start));
        let end: u64 = rd(mm, off!(mm_arg_end));
        let mut len = end.wrapping_sub(start);
        (*r).args_truncated = 0;
        if end < start {
            len = 0;
        }
        if len > ARGS_MAX as u64 {
            len = ARGS_MAX as u64;
            (*r).args_truncated = 1;
        }
        let len = len as u32;
        (*r).args_len = 0;
        if len > 0
            && len <= ARGS_MAX as u32
            && bpf_probe_read_user(
                addr_of_mut!((*r).args) as *mut c_void,
                len,
                start as *const c_void,
            ) == 0
        {
            (*r).args_len = len;
        }
        entry.submit(submit_flags());
    }
}

#[tracepoint]
pub fn sys_enter_file(ctx: TracePointContext) -> u32 {
    unsafe { on_enter(&ctx) };
    0
}

#[inline(always)]
unsafe fn arg(ctx: &TracePointContext, i: usize) -> u64 {
    // syscalls:sys_enter_* records: 8-byte common header, int __syscall_nr
    // (padded to 8), then the arguments as 8-byte slots. The loader checks
    // this layout in tracefs before attaching.
    unsafe { ctx.read_at::<u64>(16 + i * 8).unwrap_or(0) }
}

#[inline(always)]
unsafe fn on_enter(ctx: &TracePointContext) {
    unsafe {
        let Ok(nr) = ctx.read_at::<i32>(8) else {
            return;
        };
        let nr = nr as u32;
        let Some(code) = SYSCALLS.get(&nr) else {
            return;
        };
        let code = *code;
        let kind = match code & 0xff {
            op::OPEN => K_OPEN_WRITE,
            op::CHMOD => K_CHMOD,
            op::UNLINK => K_UNLINK,
            op::RENAME => K_RENAME,
            _ => return,
        };
        if !wanted(kind) {
            return;
        }
        let mut p = Pending {
            nr,
            code,
            dfd1: AT_FDCWD,
            dfd2: AT_FDCWD,
            p1: 0,
            p2: 0,
            flags: 0,
            mode: 0,
        };
        match code & 0xff00 {
            L_PATH => p.p1 = arg(ctx, 0),
            L_DFD_PATH => {
                p.dfd1 = arg(ctx, 0) as i32 as i64;
                p.p1 = arg(ctx, 1);
            }
            L_FD => p.dfd1 = arg(ctx, 0) as i32 as i64,
            L_PATH_PATH => {
                p.p1 = arg(ctx, 0);
                p.p2 = arg(ctx, 1);
            }
            L_DFD_PATH_DFD_PATH => {
                p.dfd1 = arg(ctx, 0) as i32 as i64;
                p.p1 = arg(ctx, 1);
                p.dfd2 = arg(ctx, 2) as i32 as i64;
                p.p2 = arg(ctx, 3);
            }
            _ => return,
        }
        match code & 0xff0000 {
            V_OPEN => {
                p.flags = arg(ctx, 1);
                p.mode = arg(ctx, 2);
            }
            V_OPENAT => {
                p.flags = arg(ctx, 2);
                p.mode = arg(ctx, 3);
            }
            V_OPENAT2 => {
                // struct open_how { u64 flags; u64 mode; u64 resolve; }
                let how = arg(ctx, 2);
                let mut v = [0u64; 2];
                if bpf_probe_read_user(addr_of_mut!(v) as *mut c_void, 16, how as *const c_void)
                    != 0
                {
                    return;
                }
                p.flags = v[0];
                p.mode = v[1];
            }
            V_CREAT => {
                p.flags = O_CREAT | O_WRONLY | O_TRUNC;
                p.mode = arg(ctx, 1);
            }
            V_CHMOD => {
                p.mode = match code & 0xff00 {
                    L_DFD_PATH => arg(ctx, 2),
                    _ => arg(ctx, 1),
                };
            }
            _ => {}
        }
        if code & 0xff == op::OPEN && p.flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC) == 0 {
            // Read-only opens are most opens: drop them here.
            return;
        }
        let tid = bpf_get_current_pid_tgid() as u32;
        let _ = PENDING.insert(&tid, &p, 0);
    }
}

#[tracepoint]
pub fn sys_exit_file(ctx: TracePointContext) -> u32 {
    unsafe { on_exit(&ctx) };
    0
}

#[inline(always)]
unsafe fn read_user_path(dst: *mut u8, src: u64) -> u32 {
    unsafe {
        *dst = 0;
        if src == 0 {
            return 0;
        }
        let n = bpf_probe_read_user_str(dst as *mut c_void, USER_PATH as u32, src as *const c_void);
        if n > 0 { n as u32 } else { 0 }
    }
}

/// Walks the directory a relative `path` argument starts from: dirfd, or
/// the cwd for AT_FDCWD. Absolute paths need no base.
#[inline(always)]
unsafe fn walk_base(w: *mut Walk, task: *const u8, dfd: i64, first: u8, root: *const u8) {
    unsafe {
        (*w).len = 0;
        (*w).status = walk::NONE;
        if first == b'/' {
            return;
        }
        let dir = if dfd == AT_FDCWD {
            let fs = rp(task, off!(task_fs));
            if fs.is_null() {
                return;
            }
            fs.wrapping_add(off!(fs_pwd))
        } else {
            let f = fd_file(task, dfd);
            if f.is_null() {
                return;
            }
            f.wrapping_add(off!(file_path))
        };
        walk_path_struct(w, dir, root);
    }
}

#[inline(always)]
unsafe fn on_exit(ctx: &TracePointContext) {
    unsafe {
        let tid = bpf_get_current_pid_tgid() as u32;
        let Some(p) = PENDING.get(&tid) else {
            return;
        };
        let p = *p;
        let _ = PENDING.remove(&tid);
        let Ok(nr) = ctx.read_at::<i32>(8) else {
            return;
        };
        // sys_exit_*: long ret at byte 16.
        let Ok(ret) = ctx.read_at::<i64>(16) else {
            return;
        };
        if ret < 0 || nr as u32 != p.nr {
            return;
        }
        let Some(mut entry) = EVENTS.reserve::<FileRecord>(0) else {
            count_lost();
            return;
        };
        let r = entry.as_mut_ptr();
        let task = bpf_get_current_task() as *const u8;
        fill_header(addr_of_mut!((*r).hdr), task, RECORD_FILE);
        let opcode = p.code & 0xff;
        (*r).op = opcode;
        (*r).flags = p.flags as u32;
        (*r).mode = p.mode as u32;
        (*r).i_mode = 0;
        (*r).path1_len = read_user_path(addr_of_mut!((*r).path1) as *mut u8, p.p1);
        (*r).path2_len = read_user_path(addr_of_mut!((*r).path2) as *mut u8, p.p2);
        (*r).base2.len = 0;
        (*r).base2.status = walk::NONE;

        let fs = rp(task, off!(task_fs));
        let root = if fs.is_null() {
            core::ptr::null()
        } else {
            fs.wrapping_add(off!(fs_root))
        };
        // The file itself, when the syscall names it by descriptor.
        let file = if opcode == op::OPEN {
            fd_file(task, ret)
        } else if p.code & 0xff00 == L_FD {
            fd_file(task, p.dfd1)
        } else {
            core::ptr::null()
        };
        let mut infobits = 0;
        if !file.is_null() {
            let fpath = file.wrapping_add(off!(file_path));
            walk_path_struct(addr_of_mut!((*r).base1), fpath, root);
            infobits |= info::FILE_WALK;
            let dentry = rp(fpath, off!(path_dentry));
            let inode = rp(dentry, off!(dentry_inode));
            if !inode.is_null() {
                (*r).i_mode = rd::<u16>(inode, off!(inode_mode)) as u32;
                infobits |= info::HAS_INODE;
            }
            let (overlay, upper) = layer_of(dentry);
            if overlay {
                infobits |= info::OVERLAY;
                // Inside the container the root is the overlay itself; a
                // runtime before pivot_root sees it as a directory of the
                // host's filesystem.
                if !root.is_null() {
                    let root_sb = rp(rp(root, off!(path_dentry)), off!(dentry_sb));
                    if root_sb != rp(dentry, off!(dentry_sb)) {
                        infobits |= info::OUTSIDE_ROOT;
                    }
                }
            }
            if upper {
                infobits |= info::UPPER;
            }
            if opcode == op::OPEN {
                let fmode: u32 = rd(file, off!(file_mode));
                if fmode & filt!(fmode_created) != 0 {
                    infobits |= info::CREATED;
                }
            }
        } else {
            walk_base(addr_of_mut!((*r).base1), task, p.dfd1, (*r).path1[0], root);
            if opcode == op::RENAME {
                walk_base(addr_of_mut!((*r).base2), task, p.dfd2, (*r).path2[0], root);
            }
        }
        (*r).info = infobits;
        entry.submit(submit_flags());
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The kernel grants the helpers used here (probe reads of kernel memory)
/// only to GPL-compatible programs.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

const _: () = assert!(core::mem::size_of::<Pending>() == 56);
