//! The driftwatch collector: sources, the sandboxed plugin chain, sinks.
//!
//! Follow one event: [`source`] produces it, [`runtime`] batches it,
//! [`pipeline`] runs it through the plugins ([`plugin::host`]), and
//! [`sink`] delivers what comes out. [`config`] shapes all of it.

/// One allocator for the daemon and for everything measured against it
/// (tests, benches): see the note on the dependency in Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
