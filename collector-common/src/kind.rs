//! The event kinds the programs can report.

/// An event kind as the programs know it: a bit of `Filter::kinds`. The
/// loader maps `driftwatch_sdk::EventKind` onto these in one place
/// (`source/ebpf/mod.rs`); the kernel side never sees the sdk.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Exec = 1 << 0,
    OpenWrite = 1 << 1,
    Chmod = 1 << 2,
    Unlink = 1 << 3,
    Rename = 1 << 4,
    Link = 1 << 5,
    Symlink = 1 << 6,
    Truncate = 1 << 7,
    Chown = 1 << 8,
    IoUringSetup = 1 << 9,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Exec,
        Kind::OpenWrite,
        Kind::Chmod,
        Kind::Unlink,
        Kind::Rename,
        Kind::Link,
        Kind::Symlink,
        Kind::Truncate,
        Kind::Chown,
        Kind::IoUringSetup,
    ];

    /// This kind's bit in a `Filter::kinds` set.
    pub const fn bit(self) -> u32 {
        self as u32
    }
}
