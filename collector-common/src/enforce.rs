//! In-kernel enforcement (docs/enforcement.md): the policy the loader
//! writes into BPF maps, the verdict codes an `ExecRecord` carries back, and
//! the path hash both sides compute.
//!
//! The policy is double-buffered: every map entry is tagged with a slot (0
//! or 1); userspace writes a whole policy into the slot not in use, then
//! flips `ACTIVE` (one aligned `u32`), so an exec sees either the old
//! policy or the new one, never half of each.

/// `Policy::mode`.
pub mod mode {
    /// No enforcement section, or the sensor's first policy not yet written.
    pub const OFF: u32 = 0;
    /// Judge every exec, kill none: verdicts say what enforce would do.
    pub const DETECT: u32 = 1;
    /// Kill in the kernel.
    pub const ENFORCE: u32 = 2;
}

/// `Policy::flags`.
pub mod policy_flag {
    /// A scope list is non-empty: only cgroups userspace marked in scope
    /// (`SCOPE`) are judged; the others are unclassified or out of scope.
    pub const SCOPED: u32 = 1;
    /// The container's init may be killed too.
    pub const KILL_INIT: u32 = 2;
    /// `allow_paths` or `deny_binaries` has an entry: hash the exe's path.
    pub const EXE_PATHS: u32 = 4;
    /// `allow_parents` has an entry: hash the parent's path.
    pub const PARENT_PATHS: u32 = 8;
}

/// One slot of the policy (`POLICY[slot]`).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Policy {
    /// A `mode`.
    pub mode: u32,
    /// `policy_flag` bits.
    pub flags: u32,
    /// The host's mount namespace (inode number): a task in it is the
    /// runtime or the host, never a container.
    pub host_mnt_ns: u64,
}

/// Which list a `PathKey` belongs to.
pub mod list {
    pub const ALLOW_PATH: u32 = 1;
    /// A directory of `allow_paths` (an entry ending in `/`): files directly in it.
    pub const ALLOW_PATH_DIR: u32 = 2;
    pub const ALLOW_PARENT: u32 = 3;
    pub const ALLOW_PARENT_DIR: u32 = 4;
    pub const DENY: u32 = 5;
    pub const DENY_DIR: u32 = 6;
}

/// A path of a list, in a slot: the key of `PATHS` (value: 1).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, Hash)]
pub struct PathKey {
    /// [`PathHash`] of the path (or of the directory, for the `_DIR` lists).
    pub hash: u64,
    /// A `list`.
    pub list: u32,
    pub slot: u32,
}

/// A container's cgroup in a slot: the key of `SCOPE` (value: 1 in scope,
/// 0 out of it).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq, Hash)]
pub struct ScopeKey {
    pub cgroup_id: u64,
    pub slot: u32,
    pub _pad: u32,
}

/// `ExecRecord::enforce_action`: what the policy did with the exec.
pub mod action {
    /// Not judged: no policy, not in a container, or nothing to kill.
    pub const NONE: u32 = 0;
    /// SIGKILL sent; `kill_ret` says whether it was delivered.
    pub const KILLED: u32 = 1;
    /// Detect mode: enforce would have killed it.
    pub const WOULD_KILL: u32 = 2;
    /// `allow_paths` or `allow_parents` lifted the kill.
    pub const ALLOWED: u32 = 3;
    /// The container's init, spared (`kill_init = false`).
    pub const INIT: u32 = 4;
    /// Scope lists are set and userspace has not classified the
    /// container yet: not killed.
    pub const UNCLASSIFIED: u32 = 5;
    /// The container is outside the scope lists: not killed.
    pub const OUT_OF_SCOPE: u32 = 6;
}

/// `ExecRecord::enforce_reason`: why the exec was a candidate.
pub mod reason {
    pub const NONE: u32 = 0;
    /// Drift: upper layer, a volume or tmpfs, or a deleted file.
    pub const DRIFT: u32 = 1;
    /// A memfd that is not the runtime's own re-exec.
    pub const MEMFD: u32 = 2;
    /// On `deny_binaries`.
    pub const DENY: u32 = 3;
}

/// The longest walk (bytes) the kernel hashes: a path in the lists must
/// fit. Longer ones match no entry. Bounded so the verifier can walk the
/// loop at every call site.
pub const PATH_MAX_HASHED: usize = 256;

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One FNV-1a step: the hash `h` with byte `b` added.
#[inline(always)]
pub const fn fnv(h: u64, b: u8) -> u64 {
    (h ^ b as u64).wrapping_mul(FNV_PRIME)
}

/// The hashes a path is matched by: FNV-1a over its dentry walk's bytes as
/// the kernel writes them for a complete walk (components leaf first, each
/// NUL-terminated; a complete walk never holds a mount root's `/`), taken
/// from the last byte to the first. Backwards, the hash of the directory is
/// the running hash just before the leaf's NUL, so the kernel gets both in
/// one loop: `full` for the whole path, `dir` for its directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathHash {
    pub full: u64,
    pub dir: u64,
}

impl PathHash {
    /// The hashes of the walk bytes `walk`, as the kernel computes them.
    pub fn of_walk(walk: &[u8]) -> PathHash {
        let mut full = FNV_OFFSET;
        let mut dir = FNV_OFFSET;
        for b in walk.iter().rev() {
            if *b == 0 {
                dir = full;
            }
            full = fnv(full, *b);
        }
        PathHash { full, dir }
    }

    /// The hashes of an absolute path as written in the config. `..` and
    /// `.` are not interpreted (the config refuses them).
    pub fn of_path(path: &str) -> PathHash {
        let mut walk = alloc_free::Bytes::default();
        for c in path.rsplit('/').filter(|c| !c.is_empty()) {
            for b in c.bytes().chain([0]) {
                walk.push(b);
            }
        }
        PathHash::of_walk(walk.as_slice())
    }
}

/// A bounded byte buffer: this crate is `no_std` without `alloc`.
mod alloc_free {
    pub struct Bytes {
        buf: [u8; 4096],
        len: usize,
    }

    impl Default for Bytes {
        fn default() -> Self {
            Bytes {
                buf: [0; 4096],
                len: 0,
            }
        }
    }

    impl Bytes {
        /// Appends `b`; past the capacity the rest is dropped (config paths
        /// are checked to be far shorter).
        pub fn push(&mut self, b: u8) {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }

        pub fn as_slice(&self) -> &[u8] {
            &self.buf[..self.len]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_and_its_path_hash_alike() {
        let w = PathHash::of_walk(b"x\0tmp\0");
        assert_eq!(w, PathHash::of_path("/tmp/x"));
        assert_eq!(w.dir, PathHash::of_path("/tmp").full);
        assert_eq!(PathHash::of_walk(b"x\0").dir, PathHash::of_path("/").full);
        assert_eq!(
            PathHash::of_path("/tmp/x/").full,
            PathHash::of_path("/tmp/x").full
        );
        assert_ne!(
            PathHash::of_path("/tmp/x").full,
            PathHash::of_path("/x/tmp").full
        );
        assert_ne!(
            PathHash::of_path("/a/bc").full,
            PathHash::of_path("/ab/c").full
        );
    }
}
