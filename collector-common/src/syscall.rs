//! The file syscalls: how the loader describes each one to the program
//! (`SYSCALLS` map values), where the program finds a syscall's number and
//! arguments at its exit (the task's saved registers), and the filters it
//! applies there.
//!
//! One program on the raw tracepoint `sys_exit` sees every syscall's exit,
//! the 32-bit (compat) gate's included, with the task's `struct pt_regs`:
//! the syscall number (`orig_ax`), the argument registers the kernel read
//! the arguments from, and the return value. Nothing is stashed between
//! entry and exit, so there is no per-thread state to fill up.

use crate::Kind;

/// The file operation a syscall performs (`FileRecord::op`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Open = 1,
    Chmod = 2,
    Unlink = 3,
    Rename = 4,
    Link = 5,
    Symlink = 6,
    Truncate = 7,
    Chown = 8,
    /// `io_uring_setup`: no file, the ring is the fact.
    IoUringSetup = 9,
}

impl Op {
    pub const ALL: [Op; 9] = [
        Op::Open,
        Op::Chmod,
        Op::Unlink,
        Op::Rename,
        Op::Link,
        Op::Symlink,
        Op::Truncate,
        Op::Chown,
        Op::IoUringSetup,
    ];

    pub const fn from_raw(v: u32) -> Option<Op> {
        match v {
            1 => Some(Op::Open),
            2 => Some(Op::Chmod),
            3 => Some(Op::Unlink),
            4 => Some(Op::Rename),
            5 => Some(Op::Link),
            6 => Some(Op::Symlink),
            7 => Some(Op::Truncate),
            8 => Some(Op::Chown),
            9 => Some(Op::IoUringSetup),
            _ => None,
        }
    }

    /// The event kind this operation reports as.
    pub const fn kind(self) -> Kind {
        match self {
            Op::Open => Kind::OpenWrite,
            Op::Chmod => Kind::Chmod,
            Op::Unlink => Kind::Unlink,
            Op::Rename => Kind::Rename,
            Op::Link => Kind::Link,
            Op::Symlink => Kind::Symlink,
            Op::Truncate => Kind::Truncate,
            Op::Chown => Kind::Chown,
            Op::IoUringSetup => Kind::IoUringSetup,
        }
    }
}

/// Where a syscall's file arguments are.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgLayout {
    /// `(path, ...)`
    Path = 1,
    /// `(dfd, path, ...)`
    DfdPath = 2,
    /// `(fd, ...)`
    Fd = 3,
    /// `(old, new)`
    PathPath = 4,
    /// `(olddfd, old, newdfd, new, ...)`
    DfdPathDfdPath = 5,
    /// `symlinkat(target, newdfd, linkpath)`
    PathDfdPath = 6,
    /// No file argument (`io_uring_setup`).
    NoFile = 7,
}

impl ArgLayout {
    pub const fn from_raw(v: u8) -> Option<ArgLayout> {
        match v {
            1 => Some(ArgLayout::Path),
            2 => Some(ArgLayout::DfdPath),
            3 => Some(ArgLayout::Fd),
            4 => Some(ArgLayout::PathPath),
            5 => Some(ArgLayout::DfdPathDfdPath),
            6 => Some(ArgLayout::PathDfdPath),
            7 => Some(ArgLayout::NoFile),
            _ => None,
        }
    }
}

/// A `SYSCALLS` map value: what one syscall number does and in which
/// argument slots (0-5) its facts are. A slot field holds `slot + 1`, 0 for
/// none. Raw bytes, since map memory is not guaranteed to hold a valid
/// enum; read back with the typed getters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallSpec {
    op: u8,
    args: u8,
    /// The open flags' slot.
    flags: u8,
    /// The mode's slot (open with `O_CREAT`, chmod).
    mode: u8,
    /// The new owner's slot (chown), or the length's (truncate).
    value1: u8,
    /// The new group's slot (chown), or the length's high half (32-bit
    /// `truncate64`).
    value2: u8,
    /// `spec` bits.
    bits: u8,
    _pad: u8,
}

/// `SyscallSpec` bits.
pub mod spec {
    /// `creat(path, mode)`: the flags are `O_CREAT | O_WRONLY | O_TRUNC`.
    pub const CREAT: u8 = 1;
    /// `openat2`: the flags and mode are in the `struct open_how` the
    /// third argument points to (user memory, read only to report them).
    pub const OPEN_HOW: u8 = 2;
    /// The 16-bit uid/gid variants of the 32-bit gate (`chown16`...).
    pub const ID16: u8 = 4;
    /// `open_by_handle_at`: the file is named by a handle, not a path.
    pub const BY_HANDLE: u8 = 8;
}

impl SyscallSpec {
    /// No operation: the syscall is not followed.
    pub const NONE: SyscallSpec = SyscallSpec {
        op: 0,
        args: 0,
        flags: 0,
        mode: 0,
        value1: 0,
        value2: 0,
        bits: 0,
        _pad: 0,
    };

    pub const fn new(op: Op, args: ArgLayout) -> SyscallSpec {
        SyscallSpec {
            op: op as u8,
            args: args as u8,
            ..SyscallSpec::NONE
        }
    }

    /// The open flags are argument `slot`.
    pub const fn flags_at(mut self, slot: u8) -> SyscallSpec {
        self.flags = slot + 1;
        self
    }

    /// The mode is argument `slot`.
    pub const fn mode_at(mut self, slot: u8) -> SyscallSpec {
        self.mode = slot + 1;
        self
    }

    /// The owner (or length) is argument `slot`, the group (or the
    /// length's high half) `slot2`.
    pub const fn values_at(mut self, slot: u8, slot2: Option<u8>) -> SyscallSpec {
        self.value1 = slot + 1;
        self.value2 = match slot2 {
            Some(s) => s + 1,
            None => 0,
        };
        self
    }

    pub const fn with(mut self, bits: u8) -> SyscallSpec {
        self.bits |= bits;
        self
    }

    pub const fn op(&self) -> Option<Op> {
        Op::from_raw(self.op as u32)
    }

    pub const fn raw_op(&self) -> u8 {
        self.op
    }

    pub const fn args(&self) -> Option<ArgLayout> {
        ArgLayout::from_raw(self.args)
    }

    /// The slot of the flags, the mode, value 1 and value 2 (`None` when
    /// absent).
    pub const fn flags_slot(&self) -> Option<usize> {
        slot(self.flags)
    }

    pub const fn mode_slot(&self) -> Option<usize> {
        slot(self.mode)
    }

    pub const fn value1_slot(&self) -> Option<usize> {
        slot(self.value1)
    }

    pub const fn value2_slot(&self) -> Option<usize> {
        slot(self.value2)
    }

    pub const fn has(&self, bit: u8) -> bool {
        self.bits & bit != 0
    }
}

const fn slot(v: u8) -> Option<usize> {
    if v == 0 || v > 6 {
        None
    } else {
        Some(v as usize - 1)
    }
}

/// `SYSCALLS` holds the native table at `[0, ABI_SPAN)` and the 32-bit
/// gate's at `[ABI_SPAN, 2 * ABI_SPAN)`, both indexed by syscall number.
pub const ABI_SPAN: u32 = 512;

/// The open(2) flags the programs decide on (`include/uapi/asm-generic/fcntl.h`;
/// the same on every architecture the sensor builds for, and for the
/// 32-bit gate of x86-64).
pub mod open_flags {
    pub const O_WRONLY: u32 = 0o1;
    pub const O_RDWR: u32 = 0o2;
    pub const O_CREAT: u32 = 0o100;
    pub const O_TRUNC: u32 = 0o1000;
    /// An open with none of these cannot get write access, create or
    /// truncate: it is dropped at once. Every other open is decided from
    /// the file it installed (`f_mode`).
    pub const WRITE_INTENT: u32 = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC;
}

/// Where the program finds a syscall's facts, read from the running
/// kernel's BTF by the loader: byte offsets into `struct pt_regs` and the
/// task's `thread_info`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct SyscallOffsets {
    /// `pt_regs.orig_ax` (x86-64): the syscall number.
    pub nr: u32,
    /// The native (64-bit) argument registers, in argument order
    /// (di, si, dx, r10, r8, r9).
    pub args: [u32; 6],
    /// The 32-bit gate's argument registers (bx, cx, dx, si, di, bp).
    pub compat_args: [u32; 6],
    /// `task_struct.thread_info.status`: `TS_COMPAT` while the task is in
    /// a 32-bit syscall.
    pub thread_status: u32,
    /// `TS_COMPAT`; 0 where there is no 32-bit gate.
    pub ts_compat: u32,
}

/// io_uring opcodes (`enum io_uring_op`, uapi: numbers never change) of the
/// file operations the io_uring hook reports. A ring's operations never
/// pass the syscall tracepoints, so these are what a container could do
/// unseen otherwise.
pub mod io_uring_op {
    pub const OPENAT: u8 = 18;
    pub const OPENAT2: u8 = 28;
    pub const RENAMEAT: u8 = 35;
    pub const UNLINKAT: u8 = 36;
    pub const SYMLINKAT: u8 = 38;
    pub const LINKAT: u8 = 39;
}

/// Where the io_uring hook finds a submitted request's facts, read from the
/// running kernel's BTF by the loader: byte offsets into `struct io_kiocb`,
/// into the operations' own prepared arguments (`struct io_open`,
/// `io_rename`, `io_unlink`, `io_link`, private to io_uring but in BTF),
/// which sit at `io_kiocb.cmd`, and into `struct filename`. The paths are
/// the kernel's copies, made when the request was prepared: a process
/// cannot change them after the fact.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct IoUringOffsets {
    pub opcode: u32,
    pub cmd: u32,
    pub open_dfd: u32,
    pub open_filename: u32,
    pub open_flags: u32,
    pub open_mode: u32,
    pub rename_old_dfd: u32,
    pub rename_oldpath: u32,
    pub rename_new_dfd: u32,
    pub rename_newpath: u32,
    pub unlink_dfd: u32,
    pub unlink_filename: u32,
    pub link_old_dfd: u32,
    pub link_oldpath: u32,
    pub link_new_dfd: u32,
    pub link_newpath: u32,
    pub filename_name: u32,
    pub _pad: u32,
}

/// How many path prefixes the kernel can test a file against.
pub const KERNEL_PREFIXES: usize = 8;
/// A prefix as the kernel compares it: its components leaf first, each
/// NUL-terminated (`/var/log` is `log\0var\0`), as a dentry walk writes
/// them.
pub const PREFIX_BYTES: usize = 64;

/// A path prefix the kernel matches walks against: slot `i` of the
/// `PREFIXES` map, bit `i` of a `drop_index` prefix set. A map, not a
/// load-time global, so that a reload can change them.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KernelPrefix {
    /// Bytes of `walked`; 0 for an unused slot.
    pub len: u32,
    pub _pad: u32,
    pub walked: [u8; PREFIX_BYTES],
}

impl KernelPrefix {
    pub const EMPTY: KernelPrefix = KernelPrefix {
        len: 0,
        _pad: 0,
        walked: [0; PREFIX_BYTES],
    };

    /// `path` as a walk writes it; `None` unless it is an absolute,
    /// normalized path other than `/` (one trailing `/` allowed, as
    /// `sdk::rules::is_under` trims it) that fits: anything else would not
    /// compare the way userspace compares it.
    pub fn from_path(path: &str) -> Option<KernelPrefix> {
        let trimmed = path.strip_suffix('/').unwrap_or(path);
        let rest = trimmed.strip_prefix('/')?;
        let mut all: [&str; 16] = [""; 16];
        let mut count = 0;
        for c in rest.split('/') {
            if c.is_empty() || c == "." || c == ".." || count == all.len() {
                return None;
            }
            all[count] = c;
            count += 1;
        }
        let mut p = KernelPrefix::EMPTY;
        let mut n = 0;
        let mut i = count;
        while i > 0 {
            i -= 1;
            let c = all[i].as_bytes();
            if n + c.len() + 1 > PREFIX_BYTES || c.contains(&0) {
                return None;
            }
            p.walked[n..n + c.len()].copy_from_slice(c);
            n += c.len() + 1;
        }
        p.len = n as u32;
        Some(p)
    }
}

/// The file lane's filters and budget, set at load time.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileFilter {
    /// Records a container (cgroup) may send per second on the file lane,
    /// and the burst it may save up; 0: no budget.
    pub budget_per_sec: u64,
    pub budget_burst: u64,
    /// Repeats of the same write (container, process, file, operation)
    /// within this many nanoseconds of the record that opened the window
    /// are counted in `AGG` instead of sent; 0: every record is sent.
    pub agg_window_ns: u64,
    /// 1: drop in the kernel what no plugin would be given (`KERNEL_DROP`).
    pub prefilter: u32,
    /// The host's root filesystem (`s_dev`, kernel encoding): a task whose
    /// root is on it reached a container's files from outside (a runtime
    /// before `pivot_root`), for the calls that name files by path.
    pub host_root_dev: u32,
}

impl FileFilter {
    pub const NONE: FileFilter = FileFilter {
        budget_per_sec: 0,
        budget_burst: 0,
        agg_window_ns: 0,
        prefilter: 0,
        host_root_dev: 0,
    };
}

/// The facts the kernel prefilter decides on, as an index into the
/// `KERNEL_DROP` bitmap: which of the [`KERNEL_PREFIXES`] the path is
/// under (the low bits), then the file type, whether it has other hard
/// links, whether the open created it, and the operation.
pub mod drop_index {
    /// Bits of the prefix match set.
    pub const PREFIX_BITS: u32 = super::KERNEL_PREFIXES as u32;
    /// `FileType` classes: unknown, regular, directory, symlink, char,
    /// block, fifo, socket.
    pub const TYPE_BITS: u32 = 3;
    pub const OP_BITS: u32 = 4;
    /// Bits in all: prefixes, type, nlink > 1, created, op.
    pub const BITS: u32 = PREFIX_BITS + TYPE_BITS + 2 + OP_BITS;
    /// Words of the bitmap.
    pub const WORDS: u32 = (1 << BITS) / 64;

    /// The file type class of an inode mode (`S_IFMT`).
    pub const fn type_class(i_mode: u32) -> u32 {
        match i_mode & 0o170000 {
            0o100000 => 1,
            0o040000 => 2,
            0o120000 => 3,
            0o020000 => 4,
            0o060000 => 5,
            0o010000 => 6,
            0o140000 => 7,
            _ => 0,
        }
    }

    pub const fn index(
        prefixes: u32,
        type_class: u32,
        multi_link: bool,
        created: bool,
        op: u32,
    ) -> u32 {
        let mut i = op & ((1 << OP_BITS) - 1);
        i = (i << 1) | created as u32;
        i = (i << 1) | multi_link as u32;
        i = (i << TYPE_BITS) | (type_class & ((1 << TYPE_BITS) - 1));
        (i << PREFIX_BITS) | (prefixes & ((1 << PREFIX_BITS) - 1))
    }
}

/// A container's budget on the file lane (`BUDGET` map value, by cgroup id).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct Budget {
    /// Tokens left, in records times 2^10 (fractions refill smoothly).
    pub tokens: u64,
    /// When the tokens were last refilled (`bpf_ktime_get_ns`).
    pub refilled_ns: u64,
    /// Records dropped for want of tokens, since the entry was made.
    pub dropped: u64,
    /// Records the file lane's ring buffer had no room for.
    pub lost: u64,
}

/// A regular file by its inode: the key of `WRITERS`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, Hash)]
pub struct InodeKey {
    /// The kernel's `s_dev` (major << 20 | minor), not `st_dev`.
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// The last process that opened a regular file for writing (or truncated
/// it), recorded in the kernel before any filter or budget decides whether
/// the record goes out: the `WRITERS` map value. An exec of a file nobody
/// was shown being written (the kernel prefilter drops writes under
/// `/tmp`, a flooding container's budget drops the rest) still names who
/// wrote it.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct LastWriter {
    /// Thread group id (the process id userspace knows).
    pub tgid: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns` of the write.
    pub ktime_ns: u64,
    pub comm: [u8; 16],
}

/// Slots of the `MAP_FAILS` counter: inserts into the programs' state maps
/// that failed (the record then goes out unthrottled, and is counted here).
pub mod map_fail {
    pub const BUDGET: u32 = 0;
    /// A window of repeats could not be opened: the record is sent as is.
    pub const AGG: u32 = 1;
    pub const COUNT: u32 = 2;
}

/// What the kernel folds repeats by (`AGG`): the same operation on the same
/// file by the same process of the same container.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AggKey {
    pub cgroup_id: u64,
    pub ino: u64,
    /// The kernel's `s_dev`.
    pub dev: u32,
    pub tgid: u32,
    /// `Op` as a number.
    pub op: u32,
    pub _pad: u32,
}

/// The repeats of one [`AggKey`]: the record that opened the current
/// window was sent; those after it within the window were not.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AggWindow {
    /// `bpf_ktime_get_ns` of the record that opened the current window.
    pub first_ns: u64,
    /// Of the latest repeat (approximate across CPUs).
    pub last_ns: u64,
    /// Repeats not sent since the key was first seen: only ever grows, so
    /// userspace reports the difference and nothing is counted twice.
    pub repeats: u64,
    /// Which name the sent record reached the file by (its mount, parent
    /// directory entry and name hash, mixed): a repeat by another name (the
    /// file renamed since) is not folded.
    pub name: u64,
    /// 1: the window was opened by a record the kernel prefilter dropped:
    /// repeats within it are dropped too, without a walk, and not counted
    /// (no plugin would be given them).
    pub dropped: u64,
}

/// Slots of the `LOST` counter: the lanes.
pub mod lane {
    /// Execs and the file records drift detection rests on (executable
    /// files created or made executable).
    pub const EXEC: u32 = 0;
    /// Every other file record.
    pub const FILE: u32 = 1;
    pub const COUNT: u32 = 2;
}
