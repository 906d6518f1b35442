//! Plugins: loading components, the wasmtime sandbox, and the built-ins.

pub mod builtin;
pub mod cache;
pub mod host;

pub use host::{Engine, LoadedPlugin, PluginError, PluginInstance};
