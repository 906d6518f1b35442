//! The globals the loader writes into the object before loading it
//! (`EbpfLoader::override_global`).

/// Filters the programs apply before doing any work, set at load time.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Filter {
    /// The collector's own thread-group id: never reported.
    pub self_tgid: u32,
    /// 1: only tasks in a non-initial pid namespace (containers); 0: all.
    pub containers_only: u32,
    /// `Kind::bit` set.
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
    pub task_parent_exec_id: u32,
    pub task_self_exec_id: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_size: u32,
    pub upid_nr: u32,
    pub upid_ns: u32,
    pub pid_ns_inum: u32,
    pub pid_ns_child_reaper: u32,
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
    pub inode_nlink: u32,
    pub inode_sb: u32,
    pub inode_size: u32,
    pub inode_mtime_sec: u32,
    pub inode_mtime_nsec: u32,
    pub inode_ctime_sec: u32,
    pub inode_ctime_nsec: u32,
    pub sb_magic: u32,
    pub sb_dev: u32,
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    pub mount_mnt_ns: u32,
    pub vfsmount_root: u32,
    pub vfsmount_sb: u32,
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
