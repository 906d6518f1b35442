//! The one definition of driftwatch's event schema and plugin ABI.
//!
//! The collector (host) and every plugin (guest) use these types, so a field
//! exists in exactly one place. On the wire everything is MessagePack maps
//! with named fields (see [`codec`]); the WIT world lives in `wit/plugin.wit`.
//!
//! Plugin authors enable the `guest` feature, implement [`Plugin`] and call
//! [`export_plugin!`]. See `docs/plugin-abi.md` and `examples/`.

pub mod codec;
pub mod event;
pub mod fields;
pub mod finding;
pub mod kind;
pub mod manifest;
pub mod msgpack;
pub mod plugin;
pub mod prefilter;
pub mod program;
pub mod rule_table;
pub mod rules;

#[cfg(feature = "guest")]
pub mod guest;

pub use event::{
    Container, ContainerOf, ContainerRef, EnforceAction, EnforceReason, Enforcement, Event,
    EventOf, EventRef, ExeChange, ExeFile, ExeSource, FileChange, FileInfo, FileInfoOf,
    FileInfoRef, FileType, K8s, K8sOf, K8sRef, Process, ProcessOf, ProcessRef, ProgramFile,
    ProgramFileOf, ProgramFileRef, ProgramVia, Repeat, Runtime, Writer, WriterOf,
};
pub use finding::{Action, Finding, Fired, Priority, Remediation, RuleField, RuleSpec, Verdict};
pub use kind::{EventKind, KindSet};
pub use manifest::Manifest;
pub use plugin::Plugin;
pub use prefilter::{Condition, Prefilter};
pub use rule_table::{DeclaredRule, RuleTable, UndeclaredRule};

/// Version of the event schema; bumped on incompatible changes only.
/// Adding a field is compatible: decoders ignore unknown fields and default
/// missing ones.
pub const SCHEMA_VERSION: u32 = 1;

/// Version of the plugin ABI (the WIT package version, as an integer for
/// manifests). The host refuses plugins built for another ABI.
pub const ABI_VERSION: u32 = 2;

/// The oldest ABI the host still runs. ABI 2 added declared rules
/// (`Manifest::rules`, `Verdict::fired`); an ABI 1 plugin never uses them,
/// and an ABI 1 host refuses an ABI 2 plugin rather than ignore its
/// findings.
pub const MIN_ABI_VERSION: u32 = 1;
