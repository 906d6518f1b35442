//! Probe reads of kernel and user memory that remember failing. A failed
//! read yields the zero value (the helpers zero their destination on
//! failure; null for a pointer, so later reads through it do nothing) and
//! marks the [`Reads`] it went through; the caller turns that into a
//! `Fault` bit of the record, so the zero never passes for a value.
//!
//! Two constraints of the verifier shape this:
//! - not `Result`: an `Err` leaves the `Ok` payload undefined, and LLVM
//!   may then spill a register that was never written, which the verifier
//!   rejects (`R2 !read_ok`); every value here is always defined;
//! - no branch per read: a failure is or-ed in from the sign bit of the
//!   helper's return value, so the verifier does not explore a path per
//!   read (with a branch, `sched_process_exec` exceeds its 1M instructions).
//!
//! The helpers check the source address themselves (a bad one is an error,
//! not a crash), so these are safe functions; what they need is a
//! destination of the size they are given, which the types provide.

use core::ffi::c_void;
use core::mem::size_of;

use aya_ebpf::helpers::generated::{
    bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_probe_read_user_str,
};
use driftwatch_common::Fault;

/// A run of probe reads for one fact, and whether any of them failed.
#[derive(Default)]
pub struct Reads {
    /// 1 once a read failed, else 0.
    failed: u32,
}

impl Reads {
    /// Notes a helper's return value: negative is a failure.
    #[inline(always)]
    fn check(&mut self, rc: i64) {
        self.failed |= (rc as u64 >> 63) as u32;
    }

    /// Marks a read failed that went through other means (a walk).
    #[inline(always)]
    pub fn fail(&mut self) {
        self.failed = 1;
    }

    /// Whether a read failed.
    #[inline(always)]
    pub fn failed(&self) -> bool {
        self.failed != 0
    }

    /// `bits` if a read failed, else 0, without a branch.
    #[inline(always)]
    pub fn mask(&self, bits: u32) -> u32 {
        bits * self.failed
    }

    /// The `T` at `base + off` in kernel memory. A null `base` is an absent
    /// object (no tty, no mm for a kernel thread) and reads as
    /// `T::default()` without failing.
    #[inline(always)]
    pub fn kernel<T: Copy + Default>(&mut self, base: *const u8, off: usize) -> T {
        let mut v = T::default();
        if base.is_null() {
            return v;
        }
        // SAFETY: the helper writes at most size_of::<T>() bytes, into `v`.
        let rc = unsafe {
            bpf_probe_read_kernel(
                (&raw mut v).cast::<c_void>(),
                size_of::<T>() as u32,
                base.wrapping_add(off).cast::<c_void>(),
            )
        };
        self.check(rc);
        v
    }

    /// The pointer at `base + off` in kernel memory (null through a null
    /// `base`, or when the read fails).
    #[inline(always)]
    pub fn kernel_ptr(&mut self, base: *const u8, off: usize) -> *const u8 {
        self.kernel::<usize>(base, off) as *const u8
    }

    /// The NUL-terminated kernel string at `src`, into `dst`: its length
    /// with the NUL, 0 (and empty) for a null `src` or a failed read.
    #[inline(always)]
    pub fn kernel_str<const N: usize>(&mut self, dst: &mut [u8; N], src: *const u8) -> u32 {
        dst[0] = 0;
        if src.is_null() {
            return 0;
        }
        // SAFETY: the helper writes at most N bytes, into `dst`.
        let n = unsafe {
            bpf_probe_read_kernel_str(dst.as_mut_ptr().cast::<c_void>(), N as u32, src.cast())
        };
        self.check(n);
        if n > 0 { n as u32 } else { 0 }
    }

    /// The `T` at `addr` in the current task's memory.
    #[inline(always)]
    pub fn user<T: Copy + Default>(&mut self, addr: u64) -> T {
        let mut v = T::default();
        // SAFETY: the helper writes at most size_of::<T>() bytes, into `v`.
        let rc = unsafe {
            bpf_probe_read_user(
                (&raw mut v).cast::<c_void>(),
                size_of::<T>() as u32,
                addr as *const c_void,
            )
        };
        self.check(rc);
        v
    }

    /// The first `len` bytes at `addr` in the current task's memory, into
    /// `dst`; whether they were read (nothing is for a `len` of 0 or more
    /// than `dst` holds).
    #[inline(always)]
    pub fn user_bytes<const N: usize>(&mut self, dst: &mut [u8; N], len: u32, addr: u64) -> bool {
        if len == 0 || len as usize > N {
            return false;
        }
        // SAFETY: the helper writes `len` <= N bytes, into `dst`.
        let rc = unsafe {
            bpf_probe_read_user(
                dst.as_mut_ptr().cast::<c_void>(),
                len,
                addr as *const c_void,
            )
        };
        self.check(rc);
        rc == 0
    }

    /// The NUL-terminated string at `addr` in the current task's memory,
    /// into `dst`: its length with the NUL, 0 for a null `addr` or a
    /// failed read.
    #[inline(always)]
    pub fn user_str<const N: usize>(&mut self, dst: &mut [u8; N], addr: u64) -> u32 {
        dst[0] = 0;
        if addr == 0 {
            return 0;
        }
        // SAFETY: the helper writes at most N bytes, into `dst`.
        let n = unsafe {
            bpf_probe_read_user_str(
                dst.as_mut_ptr().cast::<c_void>(),
                N as u32,
                addr as *const c_void,
            )
        };
        self.check(n);
        if n > 0 { n as u32 } else { 0 }
    }
}

/// Runs the reads of one fact, adding `fault` to `faults` when any failed;
/// the fact, with zeroes where reads failed.
#[inline(always)]
pub fn fact<T>(faults: &mut u32, fault: Fault, f: impl FnOnce(&mut Reads) -> T) -> T {
    facts(faults, fault.bit(), f)
}

/// As [`fact`], for reads several facts depend on: adds every `Fault` bit
/// of `bits` when a read failed.
#[inline(always)]
pub fn facts<T>(faults: &mut u32, bits: u32, f: impl FnOnce(&mut Reads) -> T) -> T {
    let mut reads = Reads::default();
    let v = f(&mut reads);
    *faults |= reads.mask(bits);
    v
}

/// The address of the field `off` bytes into the object at `base`, or
/// null for a null `base` (an absent object has no fields to read).
#[inline(always)]
pub fn field(base: *const u8, off: usize) -> *const u8 {
    if base.is_null() {
        base
    } else {
        base.wrapping_add(off)
    }
}
