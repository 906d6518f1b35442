//! The event schema: what a source observed, normalized.
//!
//! Every field has a default so that replay files and plugins written against
//! an older schema keep working; "unknown" is `None` or empty, never invented.
//!
//! Each struct is defined once, generic over its string type `S`: the owned
//! form ([`Event`] = `EventOf<String>`) is what the collector builds and
//! stores; the borrowed form ([`EventRef`] = `EventOf<&str>`) is what plugins
//! get, decoded straight out of the MessagePack batch without copying or
//! allocating a string. Both have the same fields, names and wire format
//! because they are the same definition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::kind::EventKind;

/// One observation, owning its strings: what sources produce and outputs get.
pub type Event = EventOf<String>;
/// One observation borrowing its strings from a decoded buffer: what
/// plugins see.
pub type EventRef<'a> = EventOf<&'a str>;
pub type Process = ProcessOf<String>;
pub type ProcessRef<'a> = ProcessOf<&'a str>;
pub type Container = ContainerOf<String>;
pub type ContainerRef<'a> = ContainerOf<&'a str>;
pub type K8s = K8sOf<String>;
pub type K8sRef<'a> = K8sOf<&'a str>;
pub type FileInfo = FileInfoOf<String>;
pub type FileInfoRef<'a> = FileInfoOf<&'a str>;
pub type ProgramFile = ProgramFileOf<String>;
pub type Writer = WriterOf<String>;
pub type ProgramFileRef<'a> = ProgramFileOf<&'a str>;

/// One observation: a process exec or a change to a file. `S` is the string
/// type; see [`Event`] and [`EventRef`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, bound(deserialize = "S: Deserialize<'de> + Default + Ord"))]
pub struct EventOf<S> {
    /// The schema the event was written with; input for a newer schema is
    /// refused (see [`crate::SCHEMA_VERSION`]).
    #[serde(deserialize_with = "supported_schema")]
    pub schema_version: u32,
    /// Wall-clock time of the observation, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    pub kind: EventKind,
    /// Host name of the machine the sensor runs on.
    pub hostname: S,
    /// The process that did it.
    pub process: ProcessOf<S>,
    /// `None` for a process outside any container.
    pub container: Option<ContainerOf<S>>,
    /// Kubernetes metadata, when the container belongs to a pod.
    pub k8s: Option<K8sOf<S>>,
    /// The file concerned, for every kind but `exec`.
    pub file: Option<FileInfoOf<S>>,
    /// Set when this event stands for repeats the kernel folded
    /// (`aggregate_window_ms`): the same operation on the same file by the
    /// same process as an event already reported, `count` times more. Left
    /// out of the wire when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat: Option<Repeat>,
}

/// Repeats folded into one event ([`EventOf::repeat`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Repeat {
    /// How many occurrences this event stands for, none of them reported
    /// by another event.
    pub count: u64,
    /// The span they fall in, nanoseconds since the epoch: from the
    /// occurrence reported before them to the last of them.
    pub first_ns: u64,
    pub last_ns: u64,
}

/// Refuses events written for another schema than this one reads: a newer
/// writer's fields may mean what this reader cannot know, and 0 was never
/// written by anything.
fn supported_schema<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if (1..=crate::SCHEMA_VERSION).contains(&v) {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format_args!(
            "schema_version {v} is not supported: this driftwatch reads schema versions 1 to {}",
            crate::SCHEMA_VERSION
        )))
    }
}

impl<S: Default> Default for EventOf<S> {
    fn default() -> Self {
        EventOf {
            schema_version: crate::SCHEMA_VERSION,
            time_ns: 0,
            kind: EventKind::Exec,
            hostname: S::default(),
            process: ProcessOf::default(),
            container: None,
            k8s: None,
            file: None,
            repeat: None,
        }
    }
}

impl<S> EventOf<S> {
    /// The same event with every string mapped through `f`. Every field is
    /// listed (no `..`), so a field added to the schema cannot be missed.
    pub fn map_strings<'a, T: Ord>(&'a self, f: &impl Fn(&'a S) -> T) -> EventOf<T> {
        let EventOf {
            schema_version,
            time_ns,
            kind,
            hostname,
            process: p,
            container,
            k8s,
            file,
            repeat,
        } = self;
        let o = |s: &'a Option<S>| s.as_ref().map(f);
        EventOf {
            schema_version: *schema_version,
            time_ns: *time_ns,
            kind: *kind,
            hostname: f(hostname),
            process: {
                let ProcessOf {
                    pid,
                    tid,
                    ppid,
                    vpid,
                    uid,
                    gid,
                    euid,
                    user_name,
                    name,
                    exe_path,
                    args,
                    args_truncated,
                    cwd,
                    tty,
                    pname,
                    pexe_path,
                    exe_upper_layer,
                    exe_lower_layer,
                    exe_from_memfd,
                    exe_source,
                    exe_mount,
                    exe_file,
                    exe_reexec,
                    program_file,
                    ancestors,
                    exe_writer,
                    exe_sha256,
                    exe_sha256_missing,
                    exe_change,
                    prev_exe_foreign,
                    parent_foreign,
                    host_mount_ns,
                    enforcement,
                    cgroup_id,
                    pid_ns,
                    mnt_ns,
                } = p;
                ProcessOf {
                    pid: *pid,
                    tid: *tid,
                    ppid: *ppid,
                    vpid: *vpid,
                    uid: *uid,
                    gid: *gid,
                    euid: *euid,
                    user_name: o(user_name),
                    name: f(name),
                    exe_path: f(exe_path),
                    args: args.iter().map(f).collect(),
                    args_truncated: *args_truncated,
                    cwd: f(cwd),
                    tty: *tty,
                    pname: f(pname),
                    pexe_path: f(pexe_path),
                    exe_upper_layer: *exe_upper_layer,
                    exe_lower_layer: *exe_lower_layer,
                    exe_from_memfd: *exe_from_memfd,
                    exe_source: *exe_source,
                    exe_mount: o(exe_mount),
                    exe_file: *exe_file,
                    exe_reexec: *exe_reexec,
                    program_file: program_file.as_ref().map(|x| {
                        let ProgramFileOf {
                            via,
                            path,
                            source,
                            mount,
                            file,
                            sha256,
                            sha256_missing,
                            change,
                            writer,
                        } = x;
                        ProgramFileOf {
                            via: *via,
                            path: f(path),
                            source: *source,
                            mount: o(mount),
                            file: *file,
                            sha256: o(sha256),
                            sha256_missing: o(sha256_missing),
                            change: *change,
                            writer: writer.as_ref().map(|w| w.map_str(&f)),
                        }
                    }),
                    ancestors: ancestors.iter().map(f).collect(),
                    exe_writer: exe_writer.as_ref().map(|w| w.map_str(&f)),
                    exe_sha256: o(exe_sha256),
                    exe_sha256_missing: o(exe_sha256_missing),
                    exe_change: *exe_change,
                    prev_exe_foreign: *prev_exe_foreign,
                    parent_foreign: *parent_foreign,
                    host_mount_ns: *host_mount_ns,
                    enforcement: *enforcement,
                    cgroup_id: *cgroup_id,
                    pid_ns: *pid_ns,
                    mnt_ns: *mnt_ns,
                }
            },
            container: container.as_ref().map(|c| {
                let ContainerOf {
                    id,
                    name,
                    runtime,
                    image_repository,
                    image_tag,
                    image_digest,
                    image_id,
                } = c;
                ContainerOf {
                    id: f(id),
                    name: o(name),
                    runtime: runtime.clone(),
                    image_repository: o(image_repository),
                    image_tag: o(image_tag),
                    image_digest: o(image_digest),
                    image_id: o(image_id),
                }
            }),
            k8s: k8s.as_ref().map(|k| {
                let K8sOf {
                    namespace,
                    pod_name,
                    pod_uid,
                    container_name,
                    labels,
                    workload_kind,
                    workload_name,
                } = k;
                K8sOf {
                    namespace: o(namespace),
                    pod_name: o(pod_name),
                    pod_uid: o(pod_uid),
                    container_name: o(container_name),
                    labels: labels.iter().map(|(k, v)| (f(k), f(v))).collect(),
                    workload_kind: o(workload_kind),
                    workload_name: o(workload_name),
                }
            }),
            file: file.as_ref().map(|x| {
                let FileInfoOf {
                    path,
                    target_path,
                    flags,
                    mode,
                    file_type,
                    created,
                    upper_layer,
                    outside_root,
                    change,
                    sha256,
                    size,
                    uid,
                    gid,
                    executable,
                    elf,
                    dev,
                    ino,
                    nlink,
                    compat,
                    io_uring,
                    path_truncated,
                } = x;
                FileInfoOf {
                    path: f(path),
                    target_path: o(target_path),
                    flags: *flags,
                    mode: *mode,
                    file_type: *file_type,
                    created: *created,
                    upper_layer: *upper_layer,
                    outside_root: *outside_root,
                    change: *change,
                    sha256: o(sha256),
                    size: *size,
                    uid: *uid,
                    gid: *gid,
                    executable: *executable,
                    elf: *elf,
                    dev: *dev,
                    ino: *ino,
                    nlink: *nlink,
                    compat: *compat,
                    io_uring: *io_uring,
                    path_truncated: *path_truncated,
                }
            }),
            repeat: *repeat,
        }
    }
}

impl Event {
    /// A borrowed view of this event, as a plugin would see it.
    pub fn as_event_ref(&self) -> EventRef<'_> {
        self.map_strings(&|s: &String| s.as_str())
    }
}

impl EventRef<'_> {
    /// An owned copy of this event.
    pub fn to_event(&self) -> Event {
        self.map_strings(&|s: &&str| s.to_string())
    }
}

/// The acting process, after the exec for `exec` events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, bound(deserialize = "S: Deserialize<'de> + Default + Ord"))]
pub struct ProcessOf<S> {
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
    pub user_name: Option<S>,
    /// The kernel's `comm` (at most 15 bytes), Falco's `proc.name`.
    pub name: S,
    /// Absolute path of the executable, as seen inside the container.
    pub exe_path: S,
    /// Full argv, argv[0] included. See `args_truncated`.
    pub args: Vec<S>,
    /// The sensor hit its argv bound; `args` holds a prefix.
    pub args_truncated: bool,
    pub cwd: S,
    /// Controlling terminal (`tty_nr`), 0 when none.
    pub tty: u32,
    /// Parent's `comm`.
    pub pname: S,
    pub pexe_path: S,
    /// The executable's inode is an overlayfs inode with an upper dentry:
    /// added to, or copied up and modified in, the container's writable layer.
    pub exe_upper_layer: bool,
    /// The executable comes from an image (lower) layer, unmodified.
    pub exe_lower_layer: bool,
    /// The executable is an anonymous memfd (fileless execution).
    pub exe_from_memfd: bool,
    /// Where the executable is, as the kernel saw it at the exec: whether it
    /// is an unmodified file of the image. `None` when unknown.
    pub exe_source: Option<ExeSource>,
    /// The mount point, inside the container, of the filesystem the
    /// executable is on (a volume, tmpfs or bind mount), when that is not the
    /// container's root filesystem.
    pub exe_mount: Option<S>,
    /// The executable file's inode facts, as the kernel saw them at the exec.
    pub exe_file: Option<ExeFile>,
    /// This exec ran the very file the process ran before (an exec of
    /// `/proc/self/exe`): the same program again, not a new one.
    pub exe_reexec: bool,
    /// The program this exec replaced was not a file of the process's mount
    /// namespace: the container runtime that started it (or a memfd). False
    /// when unknown.
    pub prev_exe_foreign: bool,
    /// The parent is in another mount namespace than the process (outside
    /// its container). False when unknown.
    pub parent_foreign: bool,
    /// The process is in the host's mount namespace: a container runtime
    /// that has not entered the container yet, or a host process.
    pub host_mount_ns: bool,
    pub cgroup_id: u64,
    pub pid_ns: u64,
    pub mnt_ns: u64,
    // Facts only some execs have, last and left out of the wire when unset:
    // events without them encode as before, positionally too (a skipped
    // field before a present one would shift every later position).
    /// What the kernel's enforcement policy did with this exec
    /// (docs/enforcement.md); `None` when it did not judge it, and then
    /// left out of the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enforcement: Option<Enforcement>,
    /// The file the executable runs as its program when the executable only
    /// reads or loads it: the script of a `#!` exec, the FILE of
    /// `ld.so FILE`, or the script given to an interpreter (`sh x.sh`).
    /// Set by the collector from user space (docs/detections.md, "Loaders
    /// and scripts"); absent when the exec runs no such file. Left out of
    /// the wire when absent, so other events read and print as before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program_file: Option<ProgramFileOf<S>>,
    /// The comm of the grandparent, then of its parent: Falco's
    /// `proc.aname[2]` and `proc.aname[3]` (`pname` is `aname[1]`). Set by
    /// the collector for execs; shorter when an ancestor is unknown.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<S>,
    /// Who last wrote the executable file, when the sensor saw the write
    /// (by the file's device and inode). Set by the collector for execs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_writer: Option<WriterOf<S>>,
    /// sha256 of the executable file (hex), for execs of a file that is not
    /// an image file; computed by the collector off the chain's thread.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_sha256: Option<S>,
    /// Why `exe_sha256` is absent for an exec that should have it (too
    /// large, not hashed within the batch timeout, the process gone).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_sha256_missing: Option<S>,
    /// For an executable on the overlay upper layer: how it differs from
    /// the file at the same path in the image's layers. Absent when not
    /// judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_change: Option<ExeChange>,
}

impl<S> ProcessOf<S> {
    /// Where the executable is: `exe_source`, or for events from a source
    /// that did not set it (older replay files) what the layer flags say.
    pub fn exe_origin(&self) -> Option<ExeSource> {
        self.exe_source.or(if self.exe_from_memfd {
            Some(ExeSource::Memfd)
        } else if self.exe_upper_layer {
            Some(ExeSource::UpperLayer)
        } else if self.exe_lower_layer {
            Some(ExeSource::Image)
        } else {
            None
        })
    }
}

impl<S: AsRef<str>> ProcessOf<S> {
    /// Falco's `proc.cmdline`: the name followed by the arguments after argv[0].
    pub fn cmdline(&self) -> String {
        let mut out = self.name.as_ref().to_string();
        for a in self.args.iter().skip(1) {
            out.push(' ');
            out.push_str(a.as_ref());
        }
        out
    }
}

/// Where an executable is, judged against the container's image (docs/
/// detections.md, "Drift"). Every value but `Image` and `Host` is drift.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExeSource {
    /// An unmodified file of the image: an overlay lower layer, or the
    /// container's root filesystem when that is not an overlay.
    Image,
    /// The overlay upper layer: added, or copied up, in the container.
    UpperLayer,
    /// Another filesystem mounted into the container: a volume, emptyDir,
    /// hostPath, PVC or bind mount.
    Volume,
    /// A tmpfs or ramfs mounted into the container (`--tmpfs`, `/dev/shm`).
    Tmpfs,
    /// A file already deleted (no links left).
    Deleted,
    /// An anonymous memfd (fileless execution).
    Memfd,
    /// A file outside the container's root altogether, which only a process
    /// handed it from outside can run: the runtime's own binaries.
    Host,
    /// A value from a newer sensor.
    #[serde(other)]
    Unknown,
}

impl ExeSource {
    /// The name on the wire and in `drift.source`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExeSource::Image => "image",
            ExeSource::UpperLayer => "upper_layer",
            ExeSource::Volume => "volume",
            ExeSource::Tmpfs => "tmpfs",
            ExeSource::Deleted => "deleted",
            ExeSource::Memfd => "memfd",
            ExeSource::Host => "host",
            ExeSource::Unknown => "unknown",
        }
    }

    /// Whether an executable from here is drift: not a file of the image.
    /// A memfd has a rule of its own; a host file is the runtime's.
    pub fn is_drift(self) -> bool {
        matches!(
            self,
            ExeSource::UpperLayer | ExeSource::Volume | ExeSource::Tmpfs | ExeSource::Deleted
        )
    }
}

/// The kernel's enforcement verdict on an exec (docs/enforcement.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enforcement {
    pub action: EnforceAction,
    pub reason: EnforceReason,
    /// With `Killed`: the SIGKILL was queued (`bpf_send_signal` returned 0).
    pub delivered: bool,
    /// With a kill not delivered: the helper's error, a positive errno.
    pub error: i32,
}

/// What the policy did with an exec (`enforce.action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnforceAction {
    /// Killed in the kernel at exec (see `Enforcement::delivered`).
    Killed,
    /// Detect mode: enforce would have killed it.
    WouldKill,
    /// `allow_paths` or `allow_parents` lifted the kill.
    Allowed,
    /// The container's init, spared (`kill_init = false`).
    Init,
    /// Scope lists are set and the container was not classified yet: not
    /// killed.
    Unclassified,
    /// The container is outside the scope lists: not killed.
    OutOfScope,
    /// A value from a newer sensor.
    #[serde(other)]
    Unknown,
}

impl EnforceAction {
    pub fn as_str(self) -> &'static str {
        match self {
            EnforceAction::Killed => "killed",
            EnforceAction::WouldKill => "would_kill",
            EnforceAction::Allowed => "allowed",
            EnforceAction::Init => "init",
            EnforceAction::Unclassified => "unclassified",
            EnforceAction::OutOfScope => "out_of_scope",
            EnforceAction::Unknown => "unknown",
        }
    }
}

/// Why an exec was a candidate for a kill (`enforce.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnforceReason {
    /// Not a file of the image: upper layer, volume, tmpfs, deleted.
    Drift,
    /// A memfd that is not the runtime's own re-exec.
    Memfd,
    /// On `deny_binaries`.
    Deny,
    #[serde(other)]
    Unknown,
}

impl EnforceReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EnforceReason::Drift => "drift",
            EnforceReason::Memfd => "memfd",
            EnforceReason::Deny => "deny",
            EnforceReason::Unknown => "unknown",
        }
    }
}

/// An executable's inode facts at exec time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExeFile {
    /// The filesystem's device number (`st_dev`, user-space encoding).
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// Nanoseconds since the epoch.
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub nlink: u32,
}

/// How an exec runs a file that is not its executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgramVia {
    /// The file was executed directly and has a `#!` line: the kernel ran
    /// its interpreter (the executable) with the file as an argument.
    Script,
    /// The dynamic loader was executed with the file as its argument
    /// (`ld-linux-x86-64.so.2 FILE`): the loader maps and runs it.
    Loader,
    /// An interpreter was executed with the file as its script argument
    /// (`sh /tmp/x.sh`, `python3 /tmp/x.py`).
    Interpreter,
    /// A value from a newer sensor.
    #[serde(other)]
    Unknown,
}

impl ProgramVia {
    /// The name on the wire and in `drift.via`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProgramVia::Script => "script",
            ProgramVia::Loader => "loader",
            ProgramVia::Interpreter => "interpreter",
            ProgramVia::Unknown => "unknown",
        }
    }
}

/// The file an exec runs as its program when that is not the executable
/// ([`ProcessOf::program_file`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: Deserialize<'de> + Default + Ord"))]
pub struct ProgramFileOf<S> {
    pub via: ProgramVia,
    /// Absolute path inside the container, relative arguments resolved
    /// against the process's working directory; symlinks are not resolved.
    pub path: S,
    /// Where the file is, judged as for the executable; `None` when it
    /// could not be judged (the file or every process of the container was
    /// gone before the collector looked).
    #[serde(default)]
    pub source: Option<ExeSource>,
    /// The mount point of the volume or tmpfs the file is on.
    #[serde(default)]
    pub mount: Option<S>,
    // What the finding says of an executable, said of this file: it is
    // what ran. Always written (nil when unknown), never skipped, so a
    // positional encoding keeps its places.
    /// The file's inode facts, from `fstat` of the file the collector
    /// judged.
    #[serde(default)]
    pub file: Option<ExeFile>,
    /// sha256 of the file (hex), for a file that is not an image file.
    #[serde(default)]
    pub sha256: Option<S>,
    /// Why `sha256` is absent for a file that should have it.
    #[serde(default)]
    pub sha256_missing: Option<S>,
    /// For a file on the overlay upper layer: how it differs from the
    /// image's file at the same path.
    #[serde(default)]
    pub change: Option<ExeChange>,
    /// Who last wrote the file, when the sensor saw the write.
    #[serde(default)]
    pub writer: Option<WriterOf<S>>,
}

/// How an upper-layer executable differs from the image (`drift.change`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExeChange {
    /// No file at that path in any image layer.
    New,
    /// The image has the path with other content (size or sha256).
    ContentModified,
    /// Same content as the image's file: only mode, owner or times changed
    /// (`chmod`, `chown`, `touch` copied it up).
    MetadataOnly,
    /// A value from a newer sensor.
    #[serde(other)]
    Unknown,
}

impl ExeChange {
    pub fn as_str(self) -> &'static str {
        match self {
            ExeChange::New => "new",
            ExeChange::ContentModified => "content_modified",
            ExeChange::MetadataOnly => "metadata_only",
            ExeChange::Unknown => "unknown",
        }
    }
}

/// A process that wrote a file, as the sensor saw it at the write.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, bound(deserialize = "S: Deserialize<'de> + Default + Ord"))]
pub struct WriterOf<S> {
    pub pid: u32,
    /// Its executable's path, from its exec; empty when the sensor did not
    /// see it.
    pub exe: S,
    /// Falco's `proc.cmdline` of the writer; its comm alone when the sensor
    /// did not see its exec.
    pub cmdline: S,
    /// When the write (the open for writing or creation) happened,
    /// nanoseconds since the epoch.
    pub time_ns: u64,
}

impl<S> WriterOf<S> {
    /// The same writer with its strings mapped through `f` (every field
    /// listed, as in [`EventOf::map_strings`]).
    fn map_str<'a, T>(&'a self, f: &impl Fn(&'a S) -> T) -> WriterOf<T> {
        let WriterOf {
            pid,
            exe,
            cmdline,
            time_ns,
        } = self;
        WriterOf {
            pid: *pid,
            exe: f(exe),
            cmdline: f(cmdline),
            time_ns: *time_ns,
        }
    }
}

/// The container the process runs in. Metadata the runtime did not give is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, bound(deserialize = "S: Deserialize<'de> + Default + Ord"))]
pub struct ContainerOf<S> {
    /// Full 64-hex id.
    pub id: S,
    pub name: Option<S>,
    /// The runtime that runs it; on the wire its name (`podman`, ...).
    pub runtime: Option<Runtime>,
    pub image_repository: Option<S>,
    pub image_tag: Option<S>,
    /// `sha256:...` digest of the image as pulled (repo digest).
    pub image_digest: Option<S>,
    /// The runtime's local image id.
    pub image_id: Option<S>,
}

impl<S: AsRef<str>> ContainerOf<S> {
    /// The 12-character id people see in `podman ps`.
    pub fn short_id(&self) -> &str {
        let id = self.id.as_ref();
        id.get(..12).unwrap_or(id)
    }
}

/// A container runtime, as `container.runtime` names it.
///
/// Serialized as its name, the string the schema always carried, so the
/// wire format is that of a string field. A name this version does not
/// know decodes as [`Runtime::Other`] rather than failing the event: an
/// older plugin must read events from a newer sensor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Runtime {
    Podman,
    Docker,
    Containerd,
    CriO,
    /// A name not listed above, kept as written. The one string a borrowed
    /// [`EventRef`] copies; no driftwatch source writes one.
    Other(String),
}

impl Runtime {
    /// The name on the wire and in Falco's `container.type`.
    pub fn as_str(&self) -> &str {
        match self {
            Runtime::Podman => "podman",
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Other(name) => name,
        }
    }
}

impl From<&str> for Runtime {
    fn from(name: &str) -> Runtime {
        match name {
            "podman" => Runtime::Podman,
            "docker" => Runtime::Docker,
            "containerd" => Runtime::Containerd,
            "cri-o" => Runtime::CriO,
            other => Runtime::Other(other.to_string()),
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Runtime {
    fn serialize<Se: serde::Serializer>(&self, serializer: Se) -> Result<Se::Ok, Se::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Runtime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Runtime, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = Runtime;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a container runtime name")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Runtime, E> {
                Ok(Runtime::from(name))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, bound(deserialize = "S: Deserialize<'de> + Default + Ord"))]
pub struct K8sOf<S> {
    pub namespace: Option<S>,
    pub pod_name: Option<S>,
    pub pod_uid: Option<S>,
    pub container_name: Option<S>,
    pub labels: BTreeMap<S, S>,
    /// The workload that owns the pod (`Deployment`, `StatefulSet`,
    /// `DaemonSet`, `Job`, `CronJob`, `ReplicaSet`, ...): known only from
    /// the API server.
    pub workload_kind: Option<S>,
    pub workload_name: Option<S>,
}

/// The file an event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, bound(deserialize = "S: Deserialize<'de> + Default + Ord"))]
pub struct FileInfoOf<S> {
    /// Absolute path as seen inside the container (relative paths resolved).
    pub path: S,
    /// Destination of a rename.
    pub target_path: Option<S>,
    /// open(2) flags.
    pub flags: u32,
    /// Permission bits: requested mode for creations, new mode for chmod.
    pub mode: u32,
    pub file_type: FileType,
    /// The open created the file.
    pub created: bool,
    /// The file lives on the container's upper (writable) layer.
    pub upper_layer: bool,
    /// The writer reached the container's root filesystem from outside it:
    /// its own root directory is on another filesystem, as for a runtime
    /// setting the container up before `pivot_root`.
    pub outside_root: bool,
    /// For `file_drift`: what kind of difference.
    pub change: Option<FileChange>,
    /// For `file_drift` of regular files: sha256 of the content, hex.
    pub sha256: Option<S>,
    /// For `file_drift`: size in bytes (for `removed`, the image's file).
    /// For `truncate`: the new length.
    pub size: Option<u64>,
    /// For `file_drift`: owning user id (for `removed`, the image's file).
    /// For `chown`: the new owner (absent when unchanged).
    pub uid: Option<u32>,
    /// For `file_drift`: owning group id (for `removed`, the image's file).
    /// For `chown`: the new group (absent when unchanged).
    pub gid: Option<u32>,
    /// For `file_drift` of regular files: some execute bit is set.
    pub executable: bool,
    /// For `file_drift` of regular files: the content starts with the ELF
    /// magic, whatever its mode (a binary can be run after a later chmod).
    pub elf: bool,
    /// The file's filesystem device (`st_dev`, user-space encoding), when the
    /// sensor saw the file itself (opens and calls on a descriptor).
    /// With `ino`, the file's identity whatever name it is reached by.
    /// (This and the fields below are left out of the wire when unset, so
    /// events without them read and print as before.)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<u64>,
    /// The file's inode number (`st_ino`), with `dev`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    /// The file's hard link count at the time: more than 1 means the same
    /// file has other names, which path-based rules cannot see.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nlink: Option<u32>,
    /// The call came through the 32-bit syscall gate (`int 0x80`), which a
    /// 64-bit program in a container has no ordinary reason to use.
    #[serde(skip_serializing_if = "is_false")]
    pub compat: bool,
    /// Submitted through an io_uring, which no syscall tracepoint sees:
    /// reported from the kernel's copy of the request when it was
    /// submitted, before it ran. Whether it succeeded is unknown, and there
    /// are no inode facts (`file_type` is unknown).
    #[serde(skip_serializing_if = "is_false")]
    pub io_uring: bool,
    /// A path the process passed filled the sensor's buffer (512 bytes):
    /// `path` or `target_path` is only its beginning.
    #[serde(skip_serializing_if = "is_false")]
    pub path_truncated: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// How a path in a container differs from its image (`file_drift` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileChange {
    /// In the upper layer, absent from every image layer.
    Added,
    /// In both, with different content: the sha256, the symlink target or
    /// the device number differs, or the file type changed.
    Modified,
    /// In both with the same content; mode, owner or (for non-directories)
    /// modification time differ.
    Metadata,
    /// In the image, hidden by a whiteout or an opaque directory.
    Removed,
}

impl FileChange {
    pub const ALL: [FileChange; 4] = [
        FileChange::Added,
        FileChange::Modified,
        FileChange::Metadata,
        FileChange::Removed,
    ];

    /// The wire name (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            FileChange::Added => "added",
            FileChange::Modified => "modified",
            FileChange::Metadata => "metadata",
            FileChange::Removed => "removed",
        }
    }
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
        self.typechar_str().chars().next().unwrap_or('?')
    }

    /// [`Self::typechar`] as a string, as field values are.
    pub fn typechar_str(self) -> &'static str {
        match self {
            FileType::Regular => "f",
            FileType::Directory => "d",
            FileType::Symlink => "l",
            FileType::CharDevice => "c",
            FileType::BlockDevice => "b",
            FileType::Fifo => "p",
            FileType::Socket => "u",
            FileType::Unknown => "?",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ContainerOf` as it was when `runtime` was a string field.
    #[derive(Serialize)]
    struct StringRuntime<'a> {
        id: &'a str,
        name: Option<&'a str>,
        runtime: Option<&'a str>,
        image_repository: Option<&'a str>,
        image_tag: Option<&'a str>,
        image_digest: Option<&'a str>,
        image_id: Option<&'a str>,
    }

    fn both(runtime: Option<&str>) -> (Container, StringRuntime<'_>) {
        let c = Container {
            id: "abc".into(),
            name: Some("web".into()),
            runtime: runtime.map(Runtime::from),
            ..Container::default()
        };
        let s = StringRuntime {
            id: "abc",
            name: Some("web"),
            runtime,
            image_repository: None,
            image_tag: None,
            image_digest: None,
            image_id: None,
        };
        (c, s)
    }

    #[test]
    fn runtime_is_a_string_on_the_wire() {
        for name in [None, Some("podman"), Some("docker"), Some("containerd")]
            .into_iter()
            .chain([Some("cri-o"), Some("lxc"), Some("")])
        {
            let (c, s) = both(name);
            let packed = crate::codec::encode(&c).unwrap();
            assert_eq!(packed, crate::codec::encode(&s).unwrap(), "{name:?}");
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, serde_json::to_string(&s).unwrap(), "{name:?}");
            // Unknown names survive a round trip, owned and borrowed.
            assert_eq!(crate::codec::decode::<Container>(&packed).unwrap(), c);
            assert_eq!(serde_json::from_str::<Container>(&json).unwrap(), c);
            let mut de = crate::msgpack::Deserializer::new(&packed);
            let borrowed = ContainerRef::deserialize(&mut de).unwrap();
            assert_eq!(borrowed.runtime, c.runtime);
        }
    }

    #[test]
    fn runtime_names() {
        assert_eq!(Runtime::from("podman"), Runtime::Podman);
        assert_eq!(Runtime::from("cri-o"), Runtime::CriO);
        assert_eq!(Runtime::from("lxc"), Runtime::Other("lxc".into()));
        for r in [
            Runtime::Podman,
            Runtime::Docker,
            Runtime::Containerd,
            Runtime::CriO,
        ] {
            assert_eq!(Runtime::from(r.as_str()), r);
        }
        // A runtime that is not a string is still refused.
        assert!(serde_json::from_str::<Container>(r#"{"runtime":5}"#).is_err());
    }
}
