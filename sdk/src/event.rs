//! The event schema: what a source observed, normalized.
//!
//! Every field has a default so that replay files and plugins written against
//! an older schema keep working; "unknown" is `None` or empty, never invented.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One observation: a process exec or a change to a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Event {
    pub schema_version: u32,
    /// Wall-clock time of the observation, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    pub kind: EventKind,
    /// Host name of the machine the sensor runs on.
    pub hostname: String,
    /// The process that did it.
    pub process: Process,
    /// `None` for a process outside any container.
    pub container: Option<Container>,
    /// Kubernetes metadata, when the container belongs to a pod.
    pub k8s: Option<K8s>,
    /// The file concerned, for every kind but `exec`.
    pub file: Option<FileInfo>,
}

impl Default for Event {
    fn default() -> Self {
        Event {
            schema_version: crate::SCHEMA_VERSION,
            time_ns: 0,
            kind: EventKind::Exec,
            hostname: String::new(),
            process: Process::default(),
            container: None,
            k8s: None,
            file: None,
        }
    }
}

/// What happened. Serialized in snake case (`open_write`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A successful execve/execveat (`sched_process_exec`).
    Exec,
    /// A successful open with write intent: write access, create or truncate.
    OpenWrite,
    /// A successful chmod/fchmod/fchmodat; `file.mode` is the new mode.
    Chmod,
    /// A successful unlink/unlinkat.
    Unlink,
    /// A successful rename; `file.path` is the source, `file.target_path` the destination.
    Rename,
    /// A difference between a container's filesystem and its image, found by
    /// the periodic scan rather than seen happen.
    FileDrift,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Exec,
        EventKind::OpenWrite,
        EventKind::Chmod,
        EventKind::Unlink,
        EventKind::Rename,
        EventKind::FileDrift,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Exec => "exec",
            EventKind::OpenWrite => "open_write",
            EventKind::Chmod => "chmod",
            EventKind::Unlink => "unlink",
            EventKind::Rename => "rename",
            EventKind::FileDrift => "file_drift",
        }
    }

    /// Bit for kind sets (manifests, kernel filters).
    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The acting process, after the exec for `exec` events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Process {
    /// Thread-group id as the host sees it.
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    /// The pid inside the process's own pid namespace (1 for a container's
    /// main process). 0 when unknown.
    pub vpid: u32,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub user_name: Option<String>,
    /// The kernel's `comm` (at most 15 bytes), Falco's `proc.name`.
    pub name: String,
    /// Absolute path of the executable, as seen inside the container.
    pub exe_path: String,
    /// Full argv, argv[0] included. See `args_truncated`.
    pub args: Vec<String>,
    /// The sensor hit its argv bound; `args` holds a prefix.
    pub args_truncated: bool,
    pub cwd: String,
    /// Controlling terminal (`tty_nr`), 0 when none.
    pub tty: u32,
    /// Parent's `comm`.
    pub pname: String,
    pub pexe_path: String,
    /// The executable's inode is an overlayfs inode with an upper dentry:
    /// added to, or copied up and modified in, the container's writable layer.
    pub exe_upper_layer: bool,
    /// The executable comes from an image (lower) layer, unmodified.
    pub exe_lower_layer: bool,
    /// The executable is an anonymous memfd (fileless execution).
    pub exe_from_memfd: bool,
    pub cgroup_id: u64,
    pub pid_ns: u64,
    pub mnt_ns: u64,
}

impl Process {
    /// Falco's `proc.cmdline`: the name followed by the arguments after argv[0].
    pub fn cmdline(&self) -> String {
        let mut s = self.name.clone();
        for a in self.args.iter().skip(1) {
            s.push(' ');
            s.push_str(a);
        }
        s
    }
}

/// The container the process runs in. Metadata the runtime did not give is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Container {
    /// Full 64-hex id.
    pub id: String,
    pub name: Option<String>,
    /// `podman`, `docker`, `containerd`, `cri-o`.
    pub runtime: Option<String>,
    pub image_repository: Option<String>,
    pub image_tag: Option<String>,
    /// `sha256:...` digest of the image as pulled (repo digest).
    pub image_digest: Option<String>,
    /// The runtime's local image id.
    pub image_id: Option<String>,
}

impl Container {
    /// The 12-character id people see in `podman ps`.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct K8s {
    pub namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub container_name: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// The file an event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FileInfo {
    /// Absolute path as seen inside the container (relative paths resolved).
    pub path: String,
    /// Destination of a rename.
    pub target_path: Option<String>,
    /// open(2) flags.
    pub flags: u32,
    /// Permission bits: requested mode for creations, new mode for chmod.
    pub mode: u32,
    pub file_type: FileType,
    /// The open created the file.
    pub created: bool,
    /// The file lives on the container's upper (writable) layer.
    pub upper_layer: bool,
    /// For `file_drift`: what kind of difference (`added`, `modified`,
    /// `metadata`, `removed`).
    pub change: Option<String>,
    /// For `file_drift` of regular files: sha256 of the content, hex.
    pub sha256: Option<String>,
    /// For `file_drift`: size in bytes (for `removed`, the image's file).
    pub size: Option<u64>,
    /// For `file_drift`: owning user id (for `removed`, the image's file).
    pub uid: Option<u32>,
    /// For `file_drift`: owning group id (for `removed`, the image's file).
    pub gid: Option<u32>,
    /// For `file_drift` of regular files: some execute bit is set.
    pub executable: bool,
    /// For `file_drift` of regular files: the content starts with the ELF
    /// magic, whatever its mode (a binary can be run after a later chmod).
    pub elf: bool,
}

/// Falco's `fd.typechar` classes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    #[default]
    Unknown,
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

impl FileType {
    /// From the `S_IFMT` bits of an inode mode.
    pub fn from_mode(mode: u32) -> FileType {
        match mode & 0o170000 {
            0o100000 => FileType::Regular,
            0o040000 => FileType::Directory,
            0o120000 => FileType::Symlink,
            0o020000 => FileType::CharDevice,
            0o060000 => FileType::BlockDevice,
            0o010000 => FileType::Fifo,
            0o140000 => FileType::Socket,
            _ => FileType::Unknown,
        }
    }

    /// Falco's `fd.typechar`.
    pub fn typechar(self) -> char {
        match self {
            FileType::Regular => 'f',
            FileType::Directory => 'd',
            FileType::Symlink => 'l',
            FileType::CharDevice => 'c',
            FileType::BlockDevice => 'b',
            FileType::Fifo => 'p',
            FileType::Socket => 'u',
            FileType::Unknown => '?',
        }
    }
}
