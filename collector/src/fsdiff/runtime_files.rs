//! What the container runtime itself writes into a fresh container's upper
//! layer, so that a container nobody touched diffs clean.
//!
//! Seen with podman 4 + runc (docs/diff.md lists the exact upper layer of
//! a fresh container): the runtime bind-mounts files and filesystems into
//! the container (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`,
//! `/run/.containerenv`, `/proc`, `/dev`, `/sys`, volumes, secrets) and
//! must first create each mount target, an empty file or a directory, in
//! the upper layer, plus any missing parent directory (`/run`). It also
//! adds `/etc/mtab -> /proc/mounts` when the image has no `/etc/mtab`.
//!
//! Rather than a fixed path list, which would hide a real change at one of
//! those paths, an entry counts as runtime-created only in the shape the
//! runtime gives it: the target of a mount in the container's own
//! mountinfo (an empty regular file, or a directory entry), a directory
//! that was added as a parent of such a target, or exactly that `mtab`
//! symlink. What a process writes *inside* a mounted-over directory is not
//! in the upper layer (it goes to the mount), and a non-empty file at a
//! mount point is reported.

use std::path::{Path, PathBuf};

use driftwatch_sdk::FileType;

use super::{Change, Entry};

/// The runtime's own footprint in one container.
#[derive(Debug, Clone, Default)]
pub struct RuntimeFiles {
    /// Mount points inside the container (not `/`), sorted.
    mount_points: Vec<PathBuf>,
}

impl RuntimeFiles {
    pub fn new(mut mount_points: Vec<PathBuf>) -> RuntimeFiles {
        mount_points.sort();
        RuntimeFiles { mount_points }
    }

    /// Whether the runtime made this difference when it set the container up.
    pub fn created(&self, e: &Entry) -> bool {
        if !matches!(e.change, Change::Added | Change::Metadata) {
            return false;
        }
        let path = Path::new(&e.path);
        let is_target = self
            .mount_points
            .binary_search_by(|p| p.as_path().cmp(path))
            .is_ok();
        match e.file_type {
            FileType::Regular => is_target && e.size == 0,
            FileType::Directory => {
                is_target
                    || (e.change == Change::Added
                        && self
                            .mount_points
                            .iter()
                            .any(|m| m.starts_with(path) && m.as_path() != path))
            }
            FileType::Symlink => {
                e.change == Change::Added
                    && e.path == "/etc/mtab"
                    && e.link_target.as_deref() == Some("/proc/mounts")
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, change: Change, file_type: FileType, size: u64) -> Entry {
        Entry {
            path: path.into(),
            change,
            file_type,
            size,
            mode: "0644".into(),
            uid: 0,
            gid: 0,
            sha256: None,
            executable: false,
            elf: false,
            link_target: None,
            image: None,
            runtime_created: false,
        }
    }

    #[test]
    fn only_the_runtime_shapes_are_filtered() {
        let r = RuntimeFiles::new(
            ["/etc/hosts", "/proc", "/run/.containerenv", "/data/vol"]
                .map(PathBuf::from)
                .to_vec(),
        );
        assert!(r.created(&entry("/etc/hosts", Change::Added, FileType::Regular, 0)));
        // Content at a mount target did not come from the runtime.
        assert!(!r.created(&entry("/etc/hosts", Change::Added, FileType::Regular, 10)));
        assert!(!r.created(&entry("/etc/hosts", Change::Modified, FileType::Regular, 0)));
        assert!(r.created(&entry("/proc", Change::Added, FileType::Directory, 4096)));
        assert!(r.created(&entry("/run", Change::Added, FileType::Directory, 4096)));
        assert!(r.created(&entry("/data", Change::Added, FileType::Directory, 4096)));
        // A parent that was already in the image and changed mode is drift.
        assert!(!r.created(&entry("/data", Change::Metadata, FileType::Directory, 4096)));
        assert!(!r.created(&entry("/etc/passwd", Change::Added, FileType::Regular, 0)));
        assert!(!r.created(&entry("/ru", Change::Added, FileType::Directory, 4096)));
        let mut mtab = entry("/etc/mtab", Change::Added, FileType::Symlink, 12);
        mtab.link_target = Some("/proc/mounts".into());
        assert!(r.created(&mtab));
        mtab.link_target = Some("/tmp/evil".into());
        assert!(!r.created(&mtab));
    }
}
