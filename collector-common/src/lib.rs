//! Record layouts shared by driftwatch's eBPF programs (`collector-ebpf`)
//! and the userspace loader (`collector/src/source/ebpf`).
//!
//! Everything here is `#[repr(C)]` plain data with explicit padding, so both
//! sides agree byte for byte. Records travel through a BPF ring buffer, which
//! only guarantees 8-byte alignment: no field needs more.
#![no_std]

/// Room for the path components a dentry walk writes (leaf first).
pub const WALK_DATA: usize = 1024;
/// A component is read with this bound (NAME_MAX + NUL), so the buffer needs
/// this much slack after the last cursor position the walk accepts.
pub const NAME_BOUND: usize = 256;
pub const WALK_BUF: usize = WALK_DATA + NAME_BOUND;
/// Mount and dentry levels a walk climbs at most.
pub const WALK_DEPTH: u32 = 32;
/// A path string passed to a syscall, as the process gave it.
pub const USER_PATH: usize = 512;
/// argv bytes copied per exec (NUL-separated, as in the process's memory).
pub const ARGS_MAX: usize = 1024;
pub const COMM_LEN: usize = 16;
/// A cgroup directory name (kernfs node name), e.g. `libpod-<64 hex>`.
pub const CGROUP_NAME: usize = 128;

/// Record kinds, the first `u32` of every record.
pub const RECORD_EXEC: u32 = 1;
pub const RECORD_FILE: u32 = 2;

/// How a dentry walk ended.
pub mod walk {
    /// Reached the task's root directory: the path is complete as the task sees it.
    pub const ROOT: u8 = 0;
    /// Reached the top of the mount tree without meeting the task's root
    /// (the file is outside the task's root, e.g. a host path).
    pub const GLOBAL_ROOT: u8 = 1;
    /// Gave up after `WALK_DEPTH` levels or a full buffer: a suffix of the path.
    pub const TRUNCATED: u8 = 2;
    /// The dentry is its own parent without being a mount root: an anonymous
    /// file (memfd, pipe, socket); the one component is its name.
    pub const PSEUDO: u8 = 3;
    /// Nothing to walk (no file, kernel thread) or a read failed.
    pub const NONE: u8 = 4;
}

/// The result of a dentry walk: `len` bytes of NUL-terminated components,
/// leaf first. Userspace reverses them and joins with `/`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Walk {
    pub len: u16,
    pub status: u8,
    pub _pad: [u8; 5],
    pub buf: [u8; WALK_BUF],
}

/// Identity of the acting task, common to all records.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    pub kind: u32,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    /// pid in the task's own pid namespace.
    pub vpid: u32,
    /// Depth of the task's pid namespace (0 = the host's).
    pub pid_ns_level: u32,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    /// `tty_nr` as in /proc/<pid>/stat, 0 without a controlling terminal.
    pub tty: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
    /// cgroup v2 id (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    pub pid_ns: u64,
    pub mnt_ns: u64,
    pub comm: [u8; COMM_LEN],
    /// Name of the task's cgroup directory and of its parent, in the default
    /// (v2) hierarchy, or in the v1 memory hierarchy when the task sits at
    /// the v2 root (v1-only hosts).
    pub cgroup_leaf: [u8; CGROUP_NAME],
    pub cgroup_parent: [u8; CGROUP_NAME],
}

/// Exe flags.
pub const EXE_OVERLAY: u32 = 1;
pub const EXE_UPPER: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRecord {
    pub hdr: Header,
    pub exe_flags: u32,
    /// Bytes of argv copied into `args`.
    pub args_len: u32,
    /// The process's argv area is larger than `ARGS_MAX`.
    pub args_truncated: u32,
    pub _pad: u32,
    pub pcomm: [u8; COMM_LEN],
    pub exe: Walk,
    pub pexe: Walk,
    pub cwd: Walk,
    pub args: [u8; ARGS_MAX],
}

/// File operations (`FileRecord::op`).
pub mod op {
    pub const OPEN: u32 = 1;
    pub const CHMOD: u32 = 2;
    pub const UNLINK: u32 = 3;
    pub const RENAME: u32 = 4;
}

/// `FileRecord::info` bits.
pub mod info {
    /// `file` holds the walk of the file itself (open, fchmod): the exact path.
    pub const FILE_WALK: u32 = 1;
    /// `i_mode` and `upper` describe the file.
    pub const HAS_INODE: u32 = 2;
    /// The open created the file (`FMODE_CREATED`).
    pub const CREATED: u32 = 4;
    /// The file is on an overlayfs upper layer.
    pub const UPPER: u32 = 8;
    /// The file is on overlayfs.
    pub const OVERLAY: u32 = 16;
    /// The writer's root directory is on another filesystem than the
    /// (overlayfs) file: it reached the container's root filesystem from
    /// outside it, as a runtime does while setting a container up.
    pub const OUTSIDE_ROOT: u32 = 32;
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileRecord {
    pub hdr: Header,
    pub op: u32,
    pub info: u32,
    /// open(2) flags (truncated to 32 bits, as every defined flag fits).
    pub flags: u32,
    /// Requested mode (open with O_CREAT, chmod).
    pub mode: u32,
    /// The inode's mode, with `info::HAS_INODE`.
    pub i_mode: u32,
    pub path1_len: u32,
    pub path2_len: u32,
    pub _pad: u32,
    /// The syscall's (first) path argument, as given.
    pub path1: [u8; USER_PATH],
    /// The rename destination, as given.
    pub path2: [u8; USER_PATH],
    /// With `info::FILE_WALK`: the file's own path. Otherwise the directory
    /// `path1` is relative to (cwd or dirfd), when `path1` is relative.
    pub base1: Walk,
    /// The directory `path2` is relative to, when it is relative.
    pub base2: Walk,
}

/// Filters the programs apply before doing any work, set at load time.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Filter {
    /// The collector's own thread-group id: never reported.
    pub self_tgid: u32,
    /// 1: only tasks in a non-initial pid namespace (containers); 0: all.
    pub containers_only: u32,
    /// `EventKind::bit` set.
    pub kinds: u32,
    /// `FMODE_CREATED` of this kernel (a `#define`, not in BTF).
    pub fmode_created: u32,
    /// Wake the reader only once this many bytes wait in the ring buffer;
    /// below that it drains on its own timer. 0: wake on every record.
    pub wakeup_bytes: u32,
}

/// Kernel struct offsets (bytes) and sizes, read from the running kernel's
/// BTF at start-up. Nothing here is compiled in.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Offsets {
    pub task_real_parent: u32,
    pub task_tgid: u32,
    pub task_pid: u32,
    pub task_comm: u32,
    pub task_mm: u32,
    pub task_fs: u32,
    pub task_files: u32,
    pub task_cred: u32,
    pub task_thread_pid: u32,
    pub task_nsproxy: u32,
    pub task_signal: u32,
    pub task_cgroups: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_size: u32,
    pub upid_nr: u32,
    pub upid_ns: u32,
    pub pid_ns_inum: u32,
    pub nsproxy_mnt_ns: u32,
    pub mnt_ns_inum: u32,
    pub cred_uid: u32,
    pub cred_gid: u32,
    pub cred_euid: u32,
    pub signal_tty: u32,
    pub tty_index: u32,
    pub tty_driver: u32,
    pub tty_driver_major: u32,
    pub tty_driver_minor_start: u32,
    pub mm_exe_file: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub fs_root: u32,
    pub fs_pwd: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_path: u32,
    pub file_inode: u32,
    pub file_mode: u32,
    pub dentry_parent: u32,
    pub dentry_name: u32,
    pub dentry_inode: u32,
    pub dentry_sb: u32,
    pub qstr_name: u32,
    pub inode_mode: u32,
    pub inode_ino: u32,
    pub sb_magic: u32,
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    pub vfsmount_root: u32,
    /// `offsetof(ovl_inode, __upperdentry) - offsetof(ovl_inode, vfs_inode)`:
    /// where the upper dentry pointer sits relative to an overlay inode.
    /// 0 when overlayfs's BTF is unavailable (upper-layer facts then off).
    pub ovl_upper_from_inode: u32,
    pub css_set_dfl_cgrp: u32,
    pub css_set_subsys: u32,
    /// Index of the memory controller in `css_set.subsys`.
    pub memory_cgrp_id: u32,
    pub css_cgroup: u32,
    pub cgroup_kn: u32,
    pub kn_name: u32,
    pub kn_parent: u32,
}

pub const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;
pub const AT_FDCWD: i64 = -100;
