//! What an event is about ([`EventKind`]) and sets of kinds ([`KindSet`]):
//! what a plugin asks for, what the chain as a whole wants, what the
//! sources capture.
//!
//! The kinds are listed once, in the `event_kinds!` invocation below; the
//! wire name, [`EventKind::ALL`] and [`EventKind::as_str`] all come from that
//! list, so adding a kind cannot leave one of them behind.

use serde::{Deserialize, Serialize};

macro_rules! event_kinds {
    ($($(#[$doc:meta])* $variant:ident = $wire:literal,)+) => {
        /// What happened. Serialized in snake case (`open_write`, ...).
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        pub enum EventKind {
            $($(#[$doc])* #[serde(rename = $wire)] $variant,)+
        }

        impl EventKind {
            /// Every kind, in declaration order.
            pub const ALL: [EventKind; [$($wire),+].len()] = [$(EventKind::$variant),+];

            /// The wire name, as in replay files and manifests.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $wire,)+
                }
            }
        }
    };
}

event_kinds! {
    /// A successful execve/execveat (`sched_process_exec`).
    Exec = "exec",
    /// A successful open with write intent: write access, create or truncate.
    OpenWrite = "open_write",
    /// A successful chmod/fchmod/fchmodat; `file.mode` is the new mode.
    Chmod = "chmod",
    /// A successful unlink/unlinkat.
    Unlink = "unlink",
    /// A successful rename; `file.path` is the source, `file.target_path` the destination.
    Rename = "rename",
    /// A successful link/linkat: `file.path` is the existing file, `file.target_path`
    /// the new name.
    Link = "link",
    /// A successful symlink/symlinkat: `file.path` is the link's content (its
    /// target, as given), `file.target_path` the new link.
    Symlink = "symlink",
    /// A successful truncate/ftruncate; `file.size` is the new length.
    Truncate = "truncate",
    /// A successful chown/fchown/lchown/fchownat; `file.uid`/`file.gid` are the
    /// new owner and group (absent when unchanged).
    Chown = "chown",
    /// A successful io_uring_setup: the process made an io_uring, whose file
    /// operations bypass the syscalls the other kinds watch.
    IoUringSetup = "io_uring_setup",
    /// A difference between a container's filesystem and its image, found by
    /// the periodic scan rather than seen happen.
    FileDrift = "file_drift",
    /// The sensor's own health (a lost event, a quarantined plugin): never
    /// from a source and never given to plugins, only beside the daemon's
    /// own findings.
    Sensor = "sensor",
}

impl EventKind {
    /// This kind's bit in a [`KindSet`].
    const fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of event kinds. Copy-cheap (one word), so the chain can test every
/// event against every stage's set.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct KindSet(u32);

impl KindSet {
    pub const EMPTY: KindSet = KindSet(0);
    pub const ALL: KindSet = {
        let mut bits = 0;
        let mut i = 0;
        while i < EventKind::ALL.len() {
            bits |= EventKind::ALL[i].bit();
            i += 1;
        }
        KindSet(bits)
    };

    pub const fn of(kind: EventKind) -> KindSet {
        KindSet(kind.bit())
    }

    pub const fn contains(self, kind: EventKind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn union(self, other: KindSet) -> KindSet {
        KindSet(self.0 | other.0)
    }

    /// The kinds in `self` that are not in `other`.
    pub const fn difference(self, other: KindSet) -> KindSet {
        KindSet(self.0 & !other.0)
    }

    /// The kinds in the set, in [`EventKind::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = EventKind> {
        EventKind::ALL
            .into_iter()
            .filter(move |k| self.contains(*k))
    }
}

impl FromIterator<EventKind> for KindSet {
    fn from_iter<I: IntoIterator<Item = EventKind>>(kinds: I) -> KindSet {
        kinds
            .into_iter()
            .fold(KindSet::EMPTY, |s, k| s.union(KindSet::of(k)))
    }
}

impl<'a> FromIterator<&'a EventKind> for KindSet {
    fn from_iter<I: IntoIterator<Item = &'a EventKind>>(kinds: I) -> KindSet {
        kinds.into_iter().copied().collect()
    }
}

impl std::ops::BitOr for KindSet {
    type Output = KindSet;
    fn bitor(self, other: KindSet) -> KindSet {
        self.union(other)
    }
}

impl std::ops::BitOrAssign for KindSet {
    fn bitor_assign(&mut self, other: KindSet) {
        *self = self.union(other);
    }
}

impl From<EventKind> for KindSet {
    fn from(kind: EventKind) -> KindSet {
        KindSet::of(kind)
    }
}

impl std::fmt::Debug for KindSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_are_the_serde_names() {
        for k in EventKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            let back: EventKind = serde_json::from_str(&json).unwrap();
            assert_eq!(back, k);
        }
    }

    #[test]
    fn sets() {
        let exec = KindSet::of(EventKind::Exec);
        let writes = exec | EventKind::OpenWrite.into();
        assert!(writes.contains(EventKind::OpenWrite) && !exec.contains(EventKind::OpenWrite));
        assert_eq!(
            writes.difference(exec).iter().collect::<Vec<_>>(),
            [EventKind::OpenWrite]
        );
        assert!(exec.difference(writes).is_empty());
        assert_eq!(KindSet::ALL.iter().collect::<Vec<_>>(), EventKind::ALL);
        assert_eq!(EventKind::ALL.iter().collect::<KindSet>(), KindSet::ALL);
        assert_eq!(format!("{writes:?}"), "{Exec, OpenWrite}");
    }
}
