//! What driftwatch's eBPF programs (`collector-ebpf`) and the userspace
//! loader (`collector/src/source/ebpf`) must agree on, defined once: record
//! layouts, the codes inside them, the globals and map values the loader
//! hands the programs, and the tracepoint layout they read.
//!
//! Everything is `#[repr(C)]` plain data with explicit padding, so both
//! sides agree byte for byte. Records travel through a BPF ring buffer,
//! which only guarantees 8-byte alignment: no field needs more. Codes are
//! typed enums; a raw value read from kernel or map memory is turned back
//! into one with `from_raw`, never transmuted. With the `user` feature the
//! shared types are `aya::Pod`.
#![no_std]

mod enforce;
mod fault;
mod globals;
mod kind;
mod record;
mod syscall;

pub use enforce::{
    FNV_OFFSET, PATH_MAX_HASHED, PathHash, PathKey, Policy, ScopeKey, action, fnv, list, mode,
    policy_flag, reason,
};
pub use fault::Fault;
pub use globals::{Filter, Offsets};
pub use kind::Kind;
pub use record::{
    ARGS_MAX, CGROUP_NAME, COMM_LEN, ExecRecord, FileFacts, FileRecord, Header, NAME_BOUND,
    RecordKind, USER_PATH, WALK_BUF, WALK_DATA, WALK_DEPTH, Walk, exe, info, walk,
};
pub use syscall::{
    ABI_SPAN, AggKey, AggWindow, ArgLayout, Budget, FileFilter, InodeKey, IoUringOffsets,
    KERNEL_PREFIXES, KernelPrefix, LastWriter, Op, PREFIX_BYTES, SyscallOffsets, SyscallSpec,
    drop_index, io_uring_op, lane, map_fail, open_flags, spec,
};

pub const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;
pub const AT_FDCWD: i64 = -100;

/// Marks the shared types plain old data for aya, the one mechanism both
/// the loader's globals and its record reads rely on.
#[cfg(feature = "user")]
mod pod {
    use super::*;

    // SAFETY (every impl): `#[repr(C)]` structs of integers and integer
    // arrays with explicit padding fields, so every bit pattern is a valid
    // value and there are no implicit padding bytes.
    unsafe impl aya::Pod for Offsets {}
    unsafe impl aya::Pod for Filter {}
    unsafe impl aya::Pod for SyscallSpec {}
    unsafe impl aya::Pod for Header {}
    unsafe impl aya::Pod for Walk {}
    unsafe impl aya::Pod for FileFacts {}
    unsafe impl aya::Pod for ExecRecord {}
    unsafe impl aya::Pod for FileRecord {}
    unsafe impl aya::Pod for SyscallOffsets {}
    unsafe impl aya::Pod for IoUringOffsets {}
    unsafe impl aya::Pod for KernelPrefix {}
    unsafe impl aya::Pod for FileFilter {}
    unsafe impl aya::Pod for Budget {}
    unsafe impl aya::Pod for InodeKey {}
    unsafe impl aya::Pod for LastWriter {}
    unsafe impl aya::Pod for AggKey {}
    unsafe impl aya::Pod for AggWindow {}
    unsafe impl aya::Pod for Policy {}
    unsafe impl aya::Pod for PathKey {}
    unsafe impl aya::Pod for ScopeKey {}
}
