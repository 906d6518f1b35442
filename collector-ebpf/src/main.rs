//! driftwatch's kernel programs. Tracepoints only (these kernels refuse
//! fentry/LSM and may lack kprobes):
//!
//! - [`exec`]: `sched_process_exec`, one `ExecRecord` per successful exec.
//! - [`file`]: `sys_enter_file` (attached to every `syscalls:sys_enter_*` of
//!   interest) filters and stashes the arguments per thread;
//!   `sys_exit_file` (the matching `sys_exit_*`) emits one `FileRecord`
//!   when the syscall succeeded.
//!
//! Around them: [`task`] (the acting task's identity), [`walk`] (dentry
//! walks into paths), [`layer`] (overlayfs layers), [`read`] (probe reads
//! that fail loudly), [`maps`] and [`globals`] (what the loader fills in).
//! Layouts and codes shared with userspace are in `driftwatch_common`.
#![no_std]
#![no_main]

mod exec;
mod file;
mod globals;
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
