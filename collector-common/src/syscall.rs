//! The file syscalls: how the loader describes each one to the programs
//! (`SYSCALLS` map values) and how the syscall tracepoints lay out their
//! records.

use crate::Kind;

/// The file operation a syscall performs (`FileRecord::op`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Open = 1,
    Chmod = 2,
    Unlink = 3,
    Rename = 4,
}

impl Op {
    pub const fn from_raw(v: u32) -> Option<Op> {
        match v {
            1 => Some(Op::Open),
            2 => Some(Op::Chmod),
            3 => Some(Op::Unlink),
            4 => Some(Op::Rename),
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
}

impl ArgLayout {
    pub const fn from_raw(v: u8) -> Option<ArgLayout> {
        match v {
            1 => Some(ArgLayout::Path),
            2 => Some(ArgLayout::DfdPath),
            3 => Some(ArgLayout::Fd),
            4 => Some(ArgLayout::PathPath),
            5 => Some(ArgLayout::DfdPathDfdPath),
            _ => None,
        }
    }
}

/// Where a syscall's open flags and mode are: the open variants and chmod
/// differ.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagsMode {
    /// Neither (unlink, rename).
    None = 0,
    /// `open(path, flags, mode)`
    Open = 1,
    /// `openat(dfd, path, flags, mode)`
    Openat = 2,
    /// `openat2(dfd, path, how, size)`, `how` pointing to
    /// `struct open_how { u64 flags; u64 mode; u64 resolve; }`
    Openat2 = 3,
    /// `creat(path, mode)`: flags `O_CREAT | O_WRONLY | O_TRUNC`.
    Creat = 4,
    /// `chmod(path, mode)`, `fchmod(fd, mode)`, `fchmodat(dfd, path, mode)`:
    /// the mode follows the file arguments.
    Chmod = 5,
}

impl FlagsMode {
    pub const fn from_raw(v: u8) -> FlagsMode {
        match v {
            1 => FlagsMode::Open,
            2 => FlagsMode::Openat,
            3 => FlagsMode::Openat2,
            4 => FlagsMode::Creat,
            5 => FlagsMode::Chmod,
            _ => FlagsMode::None,
        }
    }
}

/// A `SYSCALLS` map value: what one syscall number does and where its
/// arguments are. Raw bytes, since map memory is not guaranteed to hold a
/// valid enum; read back with the typed getters.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyscallSpec {
    op: u8,
    args: u8,
    flags_mode: u8,
    _pad: u8,
}

impl SyscallSpec {
    pub const fn new(op: Op, args: ArgLayout, flags_mode: FlagsMode) -> SyscallSpec {
        SyscallSpec {
            op: op as u8,
            args: args as u8,
            flags_mode: flags_mode as u8,
            _pad: 0,
        }
    }

    pub const fn op(&self) -> Option<Op> {
        Op::from_raw(self.op as u32)
    }

    pub const fn args(&self) -> Option<ArgLayout> {
        ArgLayout::from_raw(self.args)
    }

    pub const fn flags_mode(&self) -> FlagsMode {
        FlagsMode::from_raw(self.flags_mode)
    }
}

/// The open(2) flags the programs decide on (`include/uapi/asm-generic/fcntl.h`;
/// the same on every architecture the sensor builds for).
pub mod open_flags {
    pub const O_WRONLY: u32 = 0o1;
    pub const O_RDWR: u32 = 0o2;
    pub const O_CREAT: u32 = 0o100;
    pub const O_TRUNC: u32 = 0o1000;
    /// Any of these makes an open a write: read-only opens are dropped.
    pub const WRITE_INTENT: u32 = O_WRONLY | O_RDWR | O_CREAT | O_TRUNC;
}

/// Byte offsets in the `syscalls:sys_enter_*` and `sys_exit_*` tracepoint
/// records, after the 8-byte common header. The loader checks them against
/// each tracepoint's `format` in tracefs before attaching.
pub mod syscall_record {
    /// `int __syscall_nr` (both records).
    pub const NR: usize = 8;
    /// sys_enter_*: argument `i` at `ARGS + i * ARG_SLOT`.
    pub const ARGS: usize = 16;
    pub const ARG_SLOT: usize = 8;
    /// sys_exit_*: `long ret`.
    pub const RET: usize = 16;
}
