//! The globals the loader rewrites before loading (`override_global`).
//!
//! Rust eBPF has no CO-RE relocations, so every kernel struct offset comes
//! from `OFFSETS`, filled by the loader from the running kernel's BTF; the
//! filters come from pipeline.toml. Both are read through [`offset!`] and
//! [`filter!`], volatile so LLVM does not fold the compile-time zeroes.

use driftwatch_common::{FileFilter, Filter, IoUringOffsets, Offsets, SyscallOffsets};

// SAFETY: both are plain integers, for which all zeroes is a valid value.
#[unsafe(no_mangle)]
pub static OFFSETS: Offsets = unsafe { core::mem::zeroed() };

#[unsafe(no_mangle)]
pub static FILTER: Filter = unsafe { core::mem::zeroed() };

/// Where the file hook finds a syscall's number and arguments.
#[unsafe(no_mangle)]
pub static SYSCALL_OFFSETS: SyscallOffsets = unsafe { core::mem::zeroed() };

/// Where the io_uring hook finds a submitted request's arguments.
#[unsafe(no_mangle)]
pub static IO_URING_OFFSETS: IoUringOffsets = unsafe { core::mem::zeroed() };

/// The file lane's prefilter prefixes and budget.
#[unsafe(no_mangle)]
pub static FILE_FILTER: FileFilter = unsafe { core::mem::zeroed() };

/// `OFFSETS.$field` as a `usize`, as the loader wrote it.
macro_rules! offset {
    ($field:ident) => {{
        // SAFETY: a plain read of an immutable global; volatile only so the
        // compiler reads what the loader wrote instead of the zero.
        let v = unsafe { core::ptr::read_volatile(&raw const $crate::globals::OFFSETS.$field) };
        v as usize
    }};
}

/// `FILTER.$field`, as the loader wrote it.
macro_rules! filter {
    ($field:ident) => {{
        // SAFETY: as for `offset!`.
        unsafe { core::ptr::read_volatile(&raw const $crate::globals::FILTER.$field) }
    }};
}

/// `SYSCALL_OFFSETS.$field...` as a `usize`, as the loader wrote it.
macro_rules! soff {
    ($($field:tt)+) => {{
        // SAFETY: as for `offset!`.
        let v = unsafe {
            core::ptr::read_volatile(&raw const $crate::globals::SYSCALL_OFFSETS.$($field)+)
        };
        v as usize
    }};
}

/// `IO_URING_OFFSETS.$field` as a `usize`, as the loader wrote it.
macro_rules! uoff {
    ($field:ident) => {{
        // SAFETY: as for `offset!`.
        let v = unsafe {
            core::ptr::read_volatile(&raw const $crate::globals::IO_URING_OFFSETS.$field)
        };
        v as usize
    }};
}

/// `FILE_FILTER.$field...`, as the loader wrote it.
macro_rules! ffilter {
    ($($field:tt)+) => {{
        // SAFETY: as for `offset!`.
        unsafe { core::ptr::read_volatile(&raw const $crate::globals::FILE_FILTER.$($field)+) }
    }};
}

pub(crate) use {ffilter, filter, offset, soff, uoff};
