//! The driftwatch collector: sources, the sandboxed plugin chain, sinks.
//!
//! Follow one event: [`source`] produces it, [`runtime`] batches it,
//! [`pipeline`] runs it through the plugins ([`plugin::host`]), and
//! [`sink`] delivers what comes out. [`config`] shapes all of it.

/// One allocator for the daemon and for everything measured against it
/// (tests, benches): see the note on the dependency in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process, before it has much
/// of a heap.
///
/// mimalloc asks for huge pages on its 1 GiB arena (`MADV_HUGEPAGE`), and
/// hosts in `madvise` or `always` THP mode grant them. The heap then stays
/// resident in 2 MiB units: after an exec and a write storm the daemon kept
/// about 50 MiB of anonymous memory with them and 27 MiB without, at no CPU
/// cost measured (bench/daemon_cpu.sh). The flag is per process and
/// inherited by children, never system-wide.
pub fn refuse_huge_pages() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Gives the memory this thread has freed back to the kernel now.
///
/// The start parses kernel BTF three times (ours, aya's loader, aya's
/// tracepoint attach) and loads the plugins: about 30 MB, freed on the
/// main thread, which then only waits. mimalloc returns freed pages when
/// the thread that owns them next allocates, so without this the idle
/// daemon kept them resident.
pub fn give_back_freed_memory() {
    // SAFETY: mi_collect has no preconditions; `force` also purges the
    // arenas' free pages at once instead of after the purge delay.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

pub mod authoring;
pub mod config;
pub mod container;
pub mod control;
pub mod enrich;
pub mod error;
pub mod fsdiff;
pub mod health;
pub mod host;
pub mod k8s;
pub mod pipeline;
pub mod plugin;
pub mod privileges;
pub mod prometheus;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod stats;
pub mod terminal;
