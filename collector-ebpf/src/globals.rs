//! The globals the loader rewrites before loading (`override_global`).
//!
//! Rust eBPF has no CO-RE relocations, so every kernel struct offset comes
//! from `OFFSETS`, filled by the loader from the running kernel's BTF; the
//! filters come from pipeline.toml. Both are read through [`offset!`] and
//! [`filter!`], volatile so LLVM does not fold the compile-time zeroes.

use driftwatch_common::{Filter, Offsets};

// SAFETY: both are plain integers, for which all zeroes is a valid value.
#[unsafe(no_mangle)]
pub static OFFSETS: Offsets = unsafe { core::mem::zeroed() };

#[unsafe(no_mangle)]
pub static FILTER: Filter = unsafe { core::mem::zeroed() };

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

pub(crate) use {filter, offset};
