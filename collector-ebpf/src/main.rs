//! driftwatch's kernel programs, on tracepoints only (these kernels refuse
//! fentry/LSM and may lack kprobes):
//!
//! - [`exec`]: `sched_process_exec`, one `ExecRecord` per successful exec.
//! - [`file`]: `sys_exit_file` on the BTF tracepoint `sys_exit` (every
//!   syscall's exit, the 32-bit gate's too) reads a file syscall's number,
//!   arguments and result from the task's saved registers and emits one
//!   `FileRecord` when it succeeded and changed something.
//! - [`io_uring`]: `io_uring_submit_req`, one `FileRecord` per file
//!   operation a ring submits, which no syscall tracepoint sees.
//!
//! [`enforce`] judges each exec against the policy userspace writes into
//! maps, and kills it in place when it is drift.
//!
//! Around them: [`task`] (the acting task's identity), [`walk`] (dentry
//! walks into paths), [`layer`] (overlayfs layers), [`read`] (probe reads
//! that fail loudly), [`maps`] and [`globals`] (what the loader fills in).
//! Layouts and codes shared with userspace are in `driftwatch_common`.
#![no_std]
#![feature(core_intrinsics)]
#![allow(internal_features)]
#![no_main]

mod enforce;
mod exec;
mod file;
mod globals;
mod io_uring;
mod layer;
mod maps;
mod read;
mod task;
mod walk;

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
