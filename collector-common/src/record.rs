//! The records the programs send through the ring buffer.

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

/// Record kinds, the first `u32` of every record (`Header::kind`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    Exec = 1,
    File = 2,
}

impl RecordKind {
    pub const fn from_raw(v: u32) -> Option<RecordKind> {
        match v {
            1 => Some(RecordKind::Exec),
            2 => Some(RecordKind::File),
            _ => None,
        }
    }
}

/// How a dentry walk ended (`Walk::status`).
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
    /// Nothing to walk (no file, kernel thread).
    pub const NONE: u8 = 4;
    /// A read failed on the way: nothing usable (see `Fault`).
    pub const FAULT: u8 = 5;
}

/// The result of a dentry walk: `len` bytes of NUL-terminated components,
/// leaf first. Userspace reverses them and joins with `/`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Walk {
    pub len: u16,
    pub status: u8,
    pub _pad: u8,
    /// Bytes of `buf` written when the walk first crossed from a mount's
    /// root to where that mount is mounted: the components after this
    /// offset name the mount point of the file's filesystem.
    /// [`Walk::NO_MOUNT`] when it crossed none (the file is on the mount of
    /// the walk's root).
    pub mount_at: u16,
    pub _pad2: [u8; 2],
    pub buf: [u8; WALK_BUF],
}

impl Walk {
    pub const NO_MOUNT: u16 = u16::MAX;
}

/// Identity of the acting task, common to all records.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    /// A `RecordKind`.
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
    /// `Fault` bits: the facts of this record the kernel could not read.
    pub faults: u32,
    pub _pad: u32,
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

/// `ExecRecord::exe_flags` bits.
pub mod exe {
    /// The executable is on overlayfs.
    pub const OVERLAY: u32 = 1;
    /// The executable is on an overlayfs upper layer.
    pub const UPPER: u32 = 2;
    /// The executable is on the filesystem (superblock) of the container's
    /// root: the root directory of its pid namespace's init, which a
    /// `chroot` in the container does not move.
    pub const ROOT_FS: u32 = 4;
    /// `sched_prepare_exec` saw the program this exec replaces: the
    /// `PRIOR_*` bits and `prior_mnt_ns` are known.
    pub const PRIOR_KNOWN: u32 = 8;
    /// The new executable is the very file (inode) the task ran before: a
    /// re-exec of itself (`/proc/self/exe`), not a new program.
    pub const REEXEC: u32 = 16;
}

/// The inode and filesystem facts of a file (`Fault::ExeFile`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileFacts {
    pub ino: u64,
    pub size: i64,
    pub mtime_sec: i64,
    pub ctime_sec: i64,
    pub mtime_nsec: u32,
    pub ctime_nsec: u32,
    /// Hard links; 0 for a deleted file (or a memfd).
    pub nlink: u32,
    /// The superblock's `s_magic` (truncated: every filesystem magic fits).
    pub magic: u32,
    /// The superblock's `s_dev` (kernel encoding: major << 20 | minor).
    pub dev: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecRecord {
    pub hdr: Header,
    /// `exe` bits.
    pub exe_flags: u32,
    /// Bytes of argv copied into `args`.
    pub args_len: u32,
    /// The process's argv area is larger than `ARGS_MAX`.
    pub args_truncated: u32,
    /// Execs since the task was forked, this one included: 1 for the first
    /// program a fork runs. A process cannot lower it.
    pub exec_depth: u32,
    pub exe_file: FileFacts,
    /// With `exe::PRIOR_KNOWN`: the mount namespace (inode number) the
    /// previous program's file was mounted in; 0 for a kernel-internal
    /// mount (a memfd). Compared with `Header::mnt_ns`, it tells a program
    /// the runtime started (its file is not in the container's mounts)
    /// from one the container started.
    pub prior_mnt_ns: u32,
    /// The parent's mount namespace (inode number), 0 when unreadable.
    pub parent_mnt_ns: u32,
    /// What the enforcement policy did (`enforce::action`).
    pub enforce_action: u32,
    /// Why the exec was a candidate (`enforce::reason`).
    pub enforce_reason: u32,
    /// With `action::KILLED`: `bpf_send_signal`'s return, 0 when the
    /// SIGKILL was queued, else a negative errno.
    pub kill_ret: i32,
    pub _pad_enforce: u32,
    pub pcomm: [u8; COMM_LEN],
    pub exe: Walk,
    pub pexe: Walk,
    pub cwd: Walk,
    pub args: [u8; ARGS_MAX],
}

/// `FileRecord::info` bits.
pub mod info {
    /// `file` holds the walk of the file itself (open, fchmod): the exact path.
    pub const FILE_WALK: u32 = 1;
    /// `i_mode`, `nlink`, `ino` and `dev` describe the file.
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
    /// The call came through the 32-bit syscall gate (`int 0x80`).
    pub const COMPAT: u32 = 64;
    /// The open installed a file with write access (`FMODE_WRITE`).
    pub const WRITE: u32 = 128;
    /// `flags` and `mode` are unknown: openat2's `struct open_how` could
    /// not be read (the decision came from the file itself).
    pub const FLAGS_UNREAD: u32 = 256;
    /// The path argument filled its buffer: `path1` is a prefix.
    pub const PATH_TRUNCATED: u32 = 512;
    /// As `PATH_TRUNCATED`, for `path2`.
    pub const TARGET_TRUNCATED: u32 = 1024;
    /// `uid`/`gid` hold a chown's new owner and group (-1: unchanged).
    pub const OWNER: u32 = 2048;
    /// `size` holds a truncate's new length.
    pub const SIZE: u32 = 4096;
    /// Submitted through an io_uring: reported when the request was
    /// submitted, from the kernel's copy of its arguments, before it ran
    /// (so whether it succeeded is unknown, and there are no inode facts).
    pub const IO_URING: u32 = 8192;
}

/// One file operation that succeeded. The walk of the file (`base1`) comes
/// right after the fixed part, so a record whose path strings are unused
/// (an open, an fchmod) is sent only up to the walk's last byte
/// ([`FileRecord::sent_len`]); userspace reads a short record as if the
/// rest were zero.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileRecord {
    pub hdr: Header,
    /// An `Op`.
    pub op: u32,
    /// `info` bits.
    pub info: u32,
    /// open(2) flags (truncated to 32 bits, as every defined flag fits).
    pub flags: u32,
    /// Requested mode (open with O_CREAT, chmod).
    pub mode: u32,
    /// The inode's mode, with `info::HAS_INODE`.
    pub i_mode: u32,
    /// The inode's hard links, with `info::HAS_INODE`.
    pub nlink: u32,
    /// The inode number, with `info::HAS_INODE`.
    pub ino: u64,
    /// The filesystem's `s_dev` (kernel encoding: major << 20 | minor).
    pub dev: u32,
    pub path1_len: u32,
    pub path2_len: u32,
    /// chown's new owner and group, with `info::OWNER`.
    pub uid: u32,
    pub gid: u32,
    pub _pad: u32,
    /// truncate's new length, with `info::SIZE`.
    pub size: i64,
    /// With `info::FILE_WALK`: the file's own path. Otherwise the directory
    /// `path1` is relative to (cwd or dirfd), when `path1` is relative.
    pub base1: Walk,
    /// The syscall's (first) path argument, as given: for symlink the link's
    /// target (its content).
    pub path1: [u8; USER_PATH],
    /// The second path: a rename's or link's destination, a symlink's own
    /// path.
    pub path2: [u8; USER_PATH],
    /// The directory `path2` is relative to, when it is relative.
    pub base2: Walk,
}

impl FileRecord {
    /// Bytes worth sending: up to the walk's last byte when the record
    /// carries nothing after it, else all of it.
    pub const fn sent_len(&self) -> usize {
        let full = core::mem::size_of::<FileRecord>();
        if self.path1_len == 0 && self.path2_len == 0 && self.base2.len == 0 {
            let used = core::mem::offset_of!(FileRecord, base1)
                + core::mem::offset_of!(Walk, buf)
                + self.base1.len as usize;
            let aligned = (used + 7) & !7;
            if aligned < full { aligned } else { full }
        } else {
            full
        }
    }
}

// The ring buffer aligns records to 8 bytes; every record is a whole number
// of 8-byte words with its u64s aligned, so no implicit padding exists.
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<Walk>().is_multiple_of(8) && align_of::<Walk>() <= 8);
    assert!(size_of::<Header>().is_multiple_of(8));
    assert!(size_of::<FileFacts>().is_multiple_of(8));
    assert!(offset_of!(Header, ktime_ns).is_multiple_of(8));
    assert!(size_of::<ExecRecord>().is_multiple_of(8) && align_of::<ExecRecord>() == 8);
    assert!(size_of::<FileRecord>().is_multiple_of(8) && align_of::<FileRecord>() == 8);
    assert!(offset_of!(FileRecord, ino).is_multiple_of(8));
    assert!(offset_of!(FileRecord, size).is_multiple_of(8));
};
