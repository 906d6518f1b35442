//! Kernel records → schema events.
//!
//! The kernel sends paths as dentry walks (components leaf first) plus the
//! path strings the process passed; this module assembles absolute paths as
//! the process sees them, and the rest of the normalization.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use driftwatch_common::{
    ExecRecord, Fault, FileFacts, FileRecord, Header, Kind, Op, RecordKind, Walk, action, exe,
    info, open_flags, reason, walk,
};
use driftwatch_sdk::{
    Container, EnforceAction, EnforceReason, Enforcement, Event, ExeFile, ExeSource, FileInfo,
    FileType, Process,
};

use super::event_kind;
use crate::container::{UNKNOWN_ID, cgroup};

/// A uid, gid or tty the kernel could not read: all ones, `(uid_t)-1`, the
/// kernel's own "no such id", so it never passes for root (0) or for "no
/// terminal" (0).
pub const UNREAD_ID: u32 = u32::MAX;

/// The NUL-terminated prefix of `b`.
fn until_nul(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    &b[..end]
}

/// The NUL-terminated prefix of `b`, lossily as UTF-8.
pub fn cstr(b: &[u8]) -> String {
    String::from_utf8_lossy(until_nul(b)).into_owned()
}

/// What a dentry walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkPath {
    /// An absolute path (complete, as the task sees it, or from the top of
    /// the mount tree when the file is outside the task's root).
    Absolute(String),
    /// The walk gave up: only the last components are known (`…/a/b`).
    Truncated(String),
    /// An anonymous file: its name (`memfd:x`, `pipe:[1]`).
    Anonymous(String),
    None,
}

impl WalkPath {
    pub fn from_walk(w: &Walk) -> WalkPath {
        let len = (w.len as usize).min(w.buf.len());
        // Components leaf first, borrowed from the record; a mount root's
        // own name is "/", not a component.
        let comps: Vec<&[u8]> = w.buf[..len]
            .split(|c| *c == 0)
            .filter(|c| !c.is_empty() && *c != b"/")
            .collect();
        let joined = |prefix: &str| {
            let mut s = String::with_capacity(prefix.len() + len + 1);
            s.push_str(prefix);
            for c in comps.iter().rev() {
                s.push('/');
                s.push_str(&String::from_utf8_lossy(c));
            }
            if comps.is_empty() {
                s.push('/');
            }
            s
        };
        match w.status {
            walk::ROOT | walk::GLOBAL_ROOT => WalkPath::Absolute(joined("")),
            walk::TRUNCATED => WalkPath::Truncated(joined("…")),
            walk::PSEUDO if comps.len() == 1 => {
                WalkPath::Anonymous(String::from_utf8_lossy(comps[0]).into_owned())
            }
            // A detached subtree (e.g. a deleted directory's child): the
            // best we have.
            walk::PSEUDO => WalkPath::Truncated(joined("…")),
            _ => WalkPath::None,
        }
    }

    /// The mount point of the walked file's filesystem, as an absolute path
    /// below the walk's root: the components the walk wrote after it first
    /// crossed a mount. `/` when it crossed none; `None` when the walk did
    /// not reach a root (the point is then unknown).
    pub fn mount_point(w: &Walk) -> Option<String> {
        if w.status != walk::ROOT {
            return None;
        }
        if w.mount_at == Walk::NO_MOUNT {
            return Some("/".into());
        }
        let len = (w.len as usize).min(w.buf.len());
        let at = (w.mount_at as usize).min(len);
        let mut point = Walk {
            len: (len - at) as u16,
            status: walk::ROOT,
            _pad: 0,
            mount_at: Walk::NO_MOUNT,
            _pad2: [0; 2],
            buf: [0; driftwatch_common::WALK_BUF],
        };
        point.buf[..len - at].copy_from_slice(&w.buf[at..len]);
        Some(WalkPath::from_walk(&point).into_string())
    }

    pub fn into_string(self) -> String {
        match self {
            WalkPath::Absolute(s) | WalkPath::Truncated(s) | WalkPath::Anonymous(s) => s,
            WalkPath::None => String::new(),
        }
    }
}

/// Lexical normalization of an absolute path: `.` and empty components go,
/// `..` pops (never above `/`).
pub fn normalize(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    let mut s = String::with_capacity(path.len());
    for c in &out {
        s.push('/');
        s.push_str(c);
    }
    if s.is_empty() { "/".into() } else { s }
}

/// `path` as given to a syscall, made absolute against `base` (cwd or the
/// dirfd's directory) when it is relative.
pub fn resolve(base: &WalkPath, path: &str) -> String {
    if path.starts_with('/') {
        return normalize(path);
    }
    match base {
        WalkPath::Absolute(b) => normalize(&format!("{b}/{path}")),
        WalkPath::Truncated(b) => format!("{b}/{path}"),
        // Relative to an unknown directory: say so rather than guess.
        WalkPath::Anonymous(_) | WalkPath::None => path.to_string(),
    }
}

/// Converts kernel time (CLOCK_MONOTONIC) to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// realtime - monotonic, in ns, measured at start-up.
    offset: i128,
}

impl Clock {
    pub fn now() -> Clock {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Clock {
            offset: real as i128 - mono as i128,
        }
    }

    pub fn wall(&self, ktime_ns: u64) -> u64 {
        (ktime_ns as i128 + self.offset).max(0) as u64
    }

    /// The kernel's clock now (`bpf_ktime_get_ns`).
    pub fn ktime_now() -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC)
    }
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Superblock magics of memory filesystems (`statfs(2)`).
const TMPFS_MAGIC: u32 = 0x0102_1994;
const RAMFS_MAGIC: u32 = 0x8584_58f6;

/// Where the executable of `r` is, from the kernel's facts, most telling
/// first: a memfd, a deleted file, the upper layer, the image, a file
/// outside the container's root, a memory filesystem, any other mount.
/// `None` when the facts it needs were not read.
fn exe_source(r: &ExecRecord, exe: &WalkPath) -> Option<ExeSource> {
    let unread = |f: Fault| f.is_in(r.hdr.faults);
    if let WalkPath::Anonymous(name) = exe
        && name.starts_with("memfd:")
    {
        return Some(ExeSource::Memfd);
    }
    let layer = (!unread(Fault::Layer)).then_some(r.exe_flags);
    let file = (!unread(Fault::ExeFile)).then_some(&r.exe_file);
    if file.is_some_and(|f| f.nlink == 0) {
        return Some(ExeSource::Deleted);
    }
    if layer.is_some_and(|l| l & exe::UPPER != 0) {
        return Some(ExeSource::UpperLayer);
    }
    let file = file?;
    if r.exe_flags & exe::ROOT_FS != 0 {
        // The container's root filesystem, not on its upper layer (or not
        // an overlay at all): the image.
        return layer.map(|_| ExeSource::Image);
    }
    if unread(Fault::Exe) {
        return None;
    }
    if r.exe.status == walk::GLOBAL_ROOT {
        return Some(ExeSource::Host);
    }
    Some(match file.magic {
        TMPFS_MAGIC | RAMFS_MAGIC => ExeSource::Tmpfs,
        _ => ExeSource::Volume,
    })
}

/// The kernel's `s_dev` (major << 20 | minor) as `st_dev`.
pub fn user_dev(kdev: u32) -> u64 {
    libc::makedev(kdev >> 20, kdev & 0xf_ffff)
}

/// `st_dev` back to the kernel's `s_dev` (the key of the kernel's maps).
pub fn kernel_dev(dev: u64) -> u32 {
    (libc::major(dev) << 20) | (libc::minor(dev) & 0xf_ffff)
}

fn exe_file(f: &FileFacts) -> ExeFile {
    let ns = |sec: i64, nsec: u32| {
        sec.saturating_mul(1_000_000_000)
            .saturating_add(nsec.into())
    };
    ExeFile {
        dev: user_dev(f.dev),
        ino: f.ino,
        size: f.size.max(0) as u64,
        mtime_ns: ns(f.mtime_sec, f.mtime_nsec),
        ctime_ns: ns(f.ctime_sec, f.ctime_nsec),
        nlink: f.nlink,
    }
}

/// The identity in a record's header. Facts the kernel could not read are
/// presented as unknown (docs/sensor.md, "Unread facts"): ids as
/// [`UNREAD_ID`], pid and namespace numbers as 0 (no process or namespace
/// has that number).
fn process(h: &Header, host_mnt_ns: u64) -> Process {
    let unread = |f: Fault| f.is_in(h.faults);
    let id = |f: Fault, v: u32| if unread(f) { UNREAD_ID } else { v };
    let zero = |f: Fault, v: u64| if unread(f) { 0 } else { v };
    Process {
        pid: h.pid,
        tid: h.tid,
        ppid: zero(Fault::Parent, h.ppid.into()) as u32,
        vpid: zero(Fault::PidNs, h.vpid.into()) as u32,
        uid: id(Fault::Cred, h.uid),
        gid: id(Fault::Cred, h.gid),
        euid: id(Fault::Cred, h.euid),
        name: cstr(&h.comm),
        tty: id(Fault::Tty, h.tty),
        cgroup_id: h.cgroup_id,
        pid_ns: zero(Fault::PidNs, h.pid_ns),
        mnt_ns: zero(Fault::MntNs, h.mnt_ns),
        host_mount_ns: host_mnt_ns != 0 && !unread(Fault::MntNs) && h.mnt_ns == host_mnt_ns,
        ..Process::default()
    }
}

/// argv as the kernel copied it: NUL-separated strings.
fn split_args(b: &[u8]) -> Vec<String> {
    let b = b.strip_suffix(&[0]).unwrap_or(b);
    if b.is_empty() {
        return Vec::new();
    }
    b.split(|c| *c == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The kernel's enforcement verdict carried in the record.
fn enforcement(r: &ExecRecord) -> Option<Enforcement> {
    let action = match r.enforce_action {
        action::NONE => return None,
        action::KILLED => EnforceAction::Killed,
        action::WOULD_KILL => EnforceAction::WouldKill,
        action::ALLOWED => EnforceAction::Allowed,
        action::INIT => EnforceAction::Init,
        action::UNCLASSIFIED => EnforceAction::Unclassified,
        action::OUT_OF_SCOPE => EnforceAction::OutOfScope,
        _ => EnforceAction::Unknown,
    };
    let reason = match r.enforce_reason {
        reason::DRIFT => EnforceReason::Drift,
        reason::MEMFD => EnforceReason::Memfd,
        reason::DENY => EnforceReason::Deny,
        _ => EnforceReason::Unknown,
    };
    let killed = action == EnforceAction::Killed;
    Some(Enforcement {
        action,
        reason,
        delivered: killed && r.kill_ret == 0,
        error: if killed {
            r.kill_ret.saturating_neg()
        } else {
            0
        },
    })
}

fn exec_event(r: &ExecRecord, env: &Env<'_>, container: Option<Container>) -> Event {
    let unread = |f: Fault| f.is_in(r.hdr.faults);
    let mut p = process(&r.hdr, env.host_mnt_ns);
    let exe = if unread(Fault::Exe) {
        WalkPath::None
    } else {
        WalkPath::from_walk(&r.exe)
    };
    p.exe_source = exe_source(r, &exe);
    p.exe_from_memfd = p.exe_source == Some(ExeSource::Memfd);
    if matches!(p.exe_source, Some(ExeSource::Volume | ExeSource::Tmpfs)) {
        p.exe_mount = WalkPath::mount_point(&r.exe);
    }
    p.exe_path = exe.into_string();
    // An unread layer is neither: not "upper", and not "lower" either.
    if !unread(Fault::Layer) {
        let overlay = r.exe_flags & exe::OVERLAY != 0;
        p.exe_upper_layer = r.exe_flags & exe::UPPER != 0;
        p.exe_lower_layer = overlay && !p.exe_upper_layer;
    }
    if !unread(Fault::ExeFile) {
        p.exe_file = Some(exe_file(&r.exe_file));
    }
    let mnt_ns = (!unread(Fault::MntNs)).then_some(r.hdr.mnt_ns);
    if r.exe_flags & exe::PRIOR_KNOWN != 0 {
        p.exe_reexec = r.exe_flags & exe::REEXEC != 0;
        p.prev_exe_foreign = mnt_ns.is_some_and(|ns| u64::from(r.prior_mnt_ns) != ns);
    }
    if !unread(Fault::Parent) {
        p.pname = cstr(&r.pcomm);
        p.pexe_path = WalkPath::from_walk(&r.pexe).into_string();
        p.parent_foreign =
            r.parent_mnt_ns != 0 && mnt_ns.is_some_and(|ns| u64::from(r.parent_mnt_ns) != ns);
    }
    if !unread(Fault::Cwd) {
        p.cwd = WalkPath::from_walk(&r.cwd).into_string();
    }
    p.enforcement = enforcement(r);
    let n = (r.args_len as usize).min(r.args.len());
    p.args = split_args(&r.args[..n]);
    // Unread argv is an empty prefix of it.
    p.args_truncated = r.args_truncated != 0 || unread(Fault::Args);
    Event {
        time_ns: env.clock.wall(r.hdr.ktime_ns),
        kind: event_kind(Kind::Exec),
        hostname: env.hostname.to_string(),
        container,
        process: p,
        ..Event::default()
    }
}

fn file_event(r: &FileRecord, env: &Env<'_>, container: Option<Container>) -> Option<Event> {
    let op = Op::from_raw(r.op)?;
    let unread = |f: Fault| f.is_in(r.hdr.faults);
    let p1 = cstr(&r.path1);
    let base1 = WalkPath::from_walk(&r.base1);
    let path = match base1 {
        _ if op == Op::IoUringSetup => String::new(),
        // A symlink's first argument is its content, not a file.
        _ if op == Op::Symlink => {
            if unread(Fault::Path) {
                String::new()
            } else {
                p1
            }
        }
        WalkPath::None if r.info & info::FILE_WALK != 0 => resolve(&WalkPath::None, &p1),
        w if r.info & info::FILE_WALK != 0 => w.into_string(),
        // Neither the file's own walk nor the string it was named by: the
        // base directory alone is not the file.
        _ if unread(Fault::Path) => String::new(),
        w => resolve(&w, &p1),
    };
    let target_path = matches!(op, Op::Rename | Op::Link | Op::Symlink).then(|| {
        if unread(Fault::Target) {
            String::new()
        } else {
            resolve(&WalkPath::from_walk(&r.base2), &cstr(&r.path2))
        }
    });
    let inode = r.info & info::HAS_INODE != 0;
    let file_type = if inode {
        FileType::from_mode(r.i_mode)
    } else {
        FileType::Unknown
    };
    let flags_known = r.info & info::FLAGS_UNREAD == 0;
    let mode = match op {
        Op::Chmod => r.mode & 0o7777,
        Op::Open
            if flags_known
                && (r.flags & open_flags::O_CREAT != 0
                    || r.flags & libc::O_TMPFILE as u32 != 0) =>
        {
            r.mode & 0o7777
        }
        _ => 0,
    };
    // chown's -1 leaves the owner or group as it was.
    let owner = |v: u32| (r.info & info::OWNER != 0 && v != u32::MAX).then_some(v);
    let file = FileInfo {
        path,
        target_path,
        flags: if op == Op::Open && flags_known {
            r.flags
        } else {
            0
        },
        mode,
        file_type,
        created: r.info & info::CREATED != 0,
        upper_layer: r.info & info::UPPER != 0,
        outside_root: r.info & info::OUTSIDE_ROOT != 0,
        size: (r.info & info::SIZE != 0).then_some(r.size.max(0) as u64),
        uid: owner(r.uid),
        gid: owner(r.gid),
        dev: inode.then(|| user_dev(r.dev)),
        ino: inode.then_some(r.ino),
        nlink: inode.then_some(r.nlink),
        compat: r.info & info::COMPAT != 0,
        io_uring: r.info & info::IO_URING != 0,
        path_truncated: r.info & (info::PATH_TRUNCATED | info::TARGET_TRUNCATED) != 0,
        ..FileInfo::default()
    };
    Some(Event {
        time_ns: env.clock.wall(r.hdr.ktime_ns),
        kind: event_kind(op.kind()),
        hostname: env.hostname.to_string(),
        container,
        process: process(&r.hdr, env.host_mnt_ns),
        file: (op != Op::IoUringSetup).then_some(file),
        ..Event::default()
    })
}

/// Runs `f` on the record at the start of `bytes`, or returns None when
/// `bytes` is too short for one.
///
/// Ring-buffer items are 8-byte aligned (the kernel rounds every record up
/// to 8 bytes after an 8-byte header), so the record is read in place. An
/// item that is not aligned is copied out first. Copying every 4-5 KiB
/// record into a fresh allocation was a visible share of the daemon's CPU.
fn with_record<T: aya::Pod, R>(bytes: &[u8], f: impl FnOnce(&T) -> R) -> Option<R> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    let p = bytes.as_ptr();
    if p.align_offset(std::mem::align_of::<T>()) == 0 {
        // SAFETY: `p` is aligned for T and valid for size_of::<T>() bytes
        // (checked above) for as long as `bytes` is borrowed; T is `Pod`, so
        // any bytes are a valid T; the ring item is not written
        // while the consumer holds it.
        Some(f(unsafe { &*p.cast::<T>() }))
    } else {
        // SAFETY: as above, without the alignment: read unaligned.
        let r: Box<T> = Box::new(unsafe { std::ptr::read_unaligned(p.cast::<T>()) });
        Some(f(&r))
    }
}

/// Turns ring-buffer items into events, remembering which container each
/// cgroup belongs to: a busy container sends thousands of records a second
/// from the same cgroup, and parsing its path for each one was about a
/// quarter of the drain task's CPU.
pub struct Decoder {
    clock: Clock,
    hostname: Arc<str>,
    host_mnt_ns: u64,
    /// By cgroup id and a hash of the names: on hybrid hosts tasks at the
    /// unified root share one id and differ only in their v1 names.
    cgroups: HashMap<(u64, u64), Cgroup>,
    /// Where a task's whole cgroup path is read.
    proc_root: PathBuf,
    /// A whole file record, for items the kernel sent short (it sends a
    /// record only up to its last used byte).
    file: Box<FileRecord>,
}

/// What every record's event is made with besides the record.
struct Env<'a> {
    clock: &'a Clock,
    hostname: &'a str,
    /// The host's mount namespace (inode number of /proc/1/ns/mnt), 0 when
    /// unknown.
    host_mnt_ns: u64,
}

/// A cgroup's names as the kernel sent them, and what they say.
struct Cgroup {
    leaf: Box<[u8]>,
    parent: Box<[u8]>,
    container: Option<Container>,
}

/// Cgroups remembered at most; the map starts over beyond that (dead
/// containers' cgroups are never seen again).
const CGROUPS_REMEMBERED: usize = 4096;

impl Decoder {
    pub fn new(clock: Clock, hostname: Arc<str>, host_mnt_ns: u64) -> Decoder {
        Decoder {
            clock,
            hostname,
            host_mnt_ns,
            cgroups: HashMap::new(),
            proc_root: PathBuf::from("/proc"),
            // SAFETY: FileRecord is plain integers; all zeroes is valid.
            file: Box::new(unsafe { std::mem::zeroed() }),
        }
    }

    /// The container of cgroup `id`, as last decoded from a record of it.
    /// On hybrid hosts several name sets share an id: any that names a
    /// container does (they are the same cgroup's).
    pub fn container_of(&self, id: u64) -> Option<Container> {
        self.cgroups
            .iter()
            .filter(|((cgroup, _), _)| *cgroup == id)
            .find_map(|(_, c)| c.container.clone())
    }

    /// Decodes one ring-buffer item.
    pub fn decode(&mut self, bytes: &[u8]) -> Option<Event> {
        if bytes.len() < 4 {
            return None;
        }
        let kind = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        match RecordKind::from_raw(kind)? {
            RecordKind::Exec => with_record(bytes, |r: &ExecRecord| {
                let container = self.container(&r.hdr);
                exec_event(r, &self.env(), container)
            }),
            RecordKind::File if bytes.len() < std::mem::size_of::<FileRecord>() => {
                let header = std::mem::size_of::<Header>();
                if bytes.len() < header {
                    return None;
                }
                // Read as if the unsent tail were zero.
                let size = std::mem::size_of::<FileRecord>();
                // SAFETY: the box holds one FileRecord of `size` bytes, all
                // plain integers: any bytes written are a valid value.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut((&raw mut *self.file).cast::<u8>(), size)
                };
                dst[..bytes.len()].copy_from_slice(bytes);
                dst[bytes.len()..].fill(0);
                let hdr = self.file.hdr;
                let container = self.container(&hdr);
                file_event(&self.file, &self.env(), container)
            }
            RecordKind::File => with_record(bytes, |r: &FileRecord| {
                let container = self.container(&r.hdr);
                file_event(r, &self.env(), container)
            })?,
        }
    }

    fn env(&self) -> Env<'_> {
        Env {
            clock: &self.clock,
            hostname: &self.hostname,
            host_mnt_ns: self.host_mnt_ns,
        }
    }

    /// The container the record's task is in, from its cgroup (see
    /// [`cgroup`]): the whole path is read from `/proc` once per cgroup,
    /// and the outermost container in it wins. The kernel's names are
    /// compared on every hit, so a reused id or a renamed cgroup is read
    /// afresh rather than trusted. An answer from the kernel's two names
    /// alone (the task was gone) is not remembered.
    ///
    /// A task in a pid namespace of its own whose cgroup names no container
    /// is in a container all the same, one no runtime scheme describes:
    /// it is reported as container [`UNKNOWN_ID`], never as the host.
    fn container(&mut self, h: &Header) -> Option<Container> {
        let own_pid_ns = !Fault::PidNs.is_in(h.faults) && h.pid_ns_level > 0;
        let found = if Fault::Cgroup.is_in(h.faults) {
            None
        } else {
            self.cgroup_container(h)
        };
        found.or_else(|| {
            own_pid_ns.then(|| Container {
                id: UNKNOWN_ID.to_string(),
                ..Container::default()
            })
        })
    }

    fn cgroup_container(&mut self, h: &Header) -> Option<Container> {
        let leaf = until_nul(&h.cgroup_leaf);
        let parent = until_nul(&h.cgroup_parent);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (leaf, parent).hash(&mut hasher);
        let key = (h.cgroup_id, hasher.finish());
        let known = self
            .cgroups
            .get(&key)
            .filter(|c| *c.leaf == *leaf && *c.parent == *parent);
        if let Some(c) = known {
            return c.container.clone();
        }
        let id = cgroup::identify(
            &self.proc_root,
            h.pid,
            &String::from_utf8_lossy(parent),
            &String::from_utf8_lossy(leaf),
        );
        let found = id.container.map(|(id, rt)| Container {
            id,
            runtime: rt.runtime(),
            ..Container::default()
        });
        if id.complete {
            if self.cgroups.len() >= CGROUPS_REMEMBERED {
                self.cgroups.clear();
            }
            self.cgroups.insert(
                key,
                Cgroup {
                    leaf: leaf.into(),
                    parent: parent.into(),
                    container: found.clone(),
                },
            );
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_convert_back_to_the_kernels_encoding() {
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(libc::makedev(0, 52)), 52);
        assert_eq!(kernel_dev(libc::makedev(259, 70000)), (259 << 20) | 70000);
        assert_eq!(
            user_dev(kernel_dev(libc::makedev(259, 70000))),
            libc::makedev(259, 70000)
        );
    }
    use driftwatch_common::WALK_BUF;
    use driftwatch_sdk::Runtime;

    fn w(status: u8, leaf_first: &[&str]) -> Walk {
        let mut buf = [0u8; WALK_BUF];
        let mut n = 0;
        for c in leaf_first {
            buf[n..n + c.len()].copy_from_slice(c.as_bytes());
            n += c.len() + 1;
        }
        Walk {
            len: n as u16,
            status,
            _pad: 0,
            mount_at: Walk::NO_MOUNT,
            _pad2: [0; 2],
            buf,
        }
    }

    /// As [`w`], crossing a mount after the first `inside` components.
    fn w_mount(leaf_first: &[&str], inside: usize) -> Walk {
        let mut walk = w(walk::ROOT, leaf_first);
        walk.mount_at = leaf_first[..inside]
            .iter()
            .map(|c| c.len() + 1)
            .sum::<usize>() as u16;
        walk
    }

    fn env(clock: &Clock) -> Env<'_> {
        Env {
            clock,
            hostname: "h",
            host_mnt_ns: 4026531841,
        }
    }

    fn exec_record() -> ExecRecord {
        // SAFETY: ExecRecord is plain old data: all zeroes is a valid value.
        let mut r: ExecRecord = unsafe { std::mem::zeroed() };
        r.hdr.kind = RecordKind::Exec as u32;
        r.hdr.vpid = 7;
        r.hdr.mnt_ns = 4026532000;
        r.exe_file.nlink = 1;
        r
    }

    #[test]
    fn mount_points_come_from_the_first_mount_crossing() {
        // /data/x on a volume mounted at /data.
        let v = w_mount(&["x", "data"], 1);
        assert_eq!(WalkPath::mount_point(&v).as_deref(), Some("/data"));
        // A file bind mount: the mount root is the file itself.
        let f = w_mount(&["podman-init", "run"], 0);
        assert_eq!(
            WalkPath::mount_point(&f).as_deref(),
            Some("/run/podman-init")
        );
        // Nested: /var/cache/a/b on a mount at /var/cache.
        let n = w_mount(&["b", "a", "cache", "var"], 2);
        assert_eq!(WalkPath::mount_point(&n).as_deref(), Some("/var/cache"));
        // No crossing: the root's own filesystem.
        assert_eq!(
            WalkPath::mount_point(&w(walk::ROOT, &["sh", "bin"])).as_deref(),
            Some("/")
        );
        // Not complete: unknown.
        assert_eq!(WalkPath::mount_point(&w(walk::TRUNCATED, &["x"])), None);
    }

    #[test]
    fn an_exe_is_judged_against_the_image() {
        let clock = Clock::now();
        let source = |r: &ExecRecord| exec_event(r, &env(&clock), None).process;
        let mut r = exec_record();
        r.exe = w(walk::ROOT, &["sh", "bin"]);
        r.exe_flags = exe::OVERLAY | exe::ROOT_FS;
        assert_eq!(source(&r).exe_source, Some(ExeSource::Image));
        r.exe_flags = exe::OVERLAY | exe::UPPER | exe::ROOT_FS;
        assert_eq!(source(&r).exe_source, Some(ExeSource::UpperLayer));
        // A non-overlay root (`--rootfs`): its files are the image.
        r.exe_flags = exe::ROOT_FS;
        assert_eq!(source(&r).exe_source, Some(ExeSource::Image));

        r.exe = w_mount(&["bb", "tmp"], 1);
        r.exe_flags = 0;
        r.exe_file.magic = TMPFS_MAGIC;
        let p = source(&r);
        assert_eq!(p.exe_source, Some(ExeSource::Tmpfs));
        assert_eq!(p.exe_mount.as_deref(), Some("/tmp"));
        r.exe_file.magic = 0xEF53; // ext4: a volume or bind mount
        assert_eq!(source(&r).exe_source, Some(ExeSource::Volume));
        // Another overlay mounted in (an image volume) is not the image.
        r.exe_flags = exe::OVERLAY;
        assert_eq!(source(&r).exe_source, Some(ExeSource::Volume));
        r.exe_file.nlink = 0;
        assert_eq!(source(&r).exe_source, Some(ExeSource::Deleted));
        r.exe_file.nlink = 1;
        r.exe = w(walk::GLOBAL_ROOT, &["runc", "sbin", "usr"]);
        assert_eq!(source(&r).exe_source, Some(ExeSource::Host));
        r.exe = w(walk::PSEUDO, &["memfd:x"]);
        let p = source(&r);
        assert_eq!(p.exe_source, Some(ExeSource::Memfd));
        assert!(p.exe_from_memfd);

        // Unread facts judge nothing.
        r.exe = w(walk::ROOT, &["x", "data"]);
        r.hdr.faults = Fault::ExeFile.bit();
        assert_eq!(source(&r).exe_source, None);
        r.hdr.faults = Fault::Layer.bit();
        r.exe_flags = exe::ROOT_FS;
        assert_eq!(source(&r).exe_source, None);
    }

    #[test]
    fn who_started_a_program_comes_from_namespaces() {
        let clock = Clock::now();
        let p = |r: &ExecRecord| exec_event(r, &env(&clock), None).process;
        let mut r = exec_record();
        // Unknown previous program: nothing claimed.
        r.prior_mnt_ns = 99;
        assert!(!p(&r).prev_exe_foreign && !p(&r).exe_reexec);
        r.exe_flags = exe::PRIOR_KNOWN;
        assert!(p(&r).prev_exe_foreign);
        r.prior_mnt_ns = r.hdr.mnt_ns as u32;
        assert!(!p(&r).prev_exe_foreign);
        // A memfd's mount is in no namespace: foreign.
        r.prior_mnt_ns = 0;
        assert!(p(&r).prev_exe_foreign);
        r.exe_flags |= exe::REEXEC;
        assert!(p(&r).exe_reexec);
        r.hdr.faults = Fault::MntNs.bit();
        assert!(!p(&r).prev_exe_foreign, "unread namespace");
        r.hdr.faults = 0;
        r.parent_mnt_ns = 4026531841;
        assert!(p(&r).parent_foreign);
        r.parent_mnt_ns = 0;
        assert!(!p(&r).parent_foreign, "unread parent namespace");
        r.parent_mnt_ns = r.hdr.mnt_ns as u32;
        assert!(!p(&r).parent_foreign);
        assert!(!p(&r).host_mount_ns);
        r.hdr.mnt_ns = 4026531841;
        assert!(p(&r).host_mount_ns);
    }

    #[test]
    fn walks_become_paths() {
        assert_eq!(
            WalkPath::from_walk(&w(walk::ROOT, &["x", "etc"])),
            WalkPath::Absolute("/etc/x".into())
        );
        assert_eq!(
            WalkPath::from_walk(&w(walk::ROOT, &[])),
            WalkPath::Absolute("/".into())
        );
        // A mount root's "/" name is skipped.
        assert_eq!(
            WalkPath::from_walk(&w(walk::GLOBAL_ROOT, &["sh", "bin", "/"])),
            WalkPath::Absolute("/bin/sh".into())
        );
        assert_eq!(
            WalkPath::from_walk(&w(walk::PSEUDO, &["memfd:payload"])),
            WalkPath::Anonymous("memfd:payload".into())
        );
        assert_eq!(
            WalkPath::from_walk(&w(walk::TRUNCATED, &["c", "b"])),
            WalkPath::Truncated("…/b/c".into())
        );
        assert_eq!(WalkPath::from_walk(&w(walk::NONE, &[])), WalkPath::None);
    }

    #[test]
    fn relative_paths_resolve_against_their_base() {
        let cwd = WalkPath::Absolute("/work/dir".into());
        assert_eq!(resolve(&cwd, "x"), "/work/dir/x");
        assert_eq!(resolve(&cwd, "./a/../b"), "/work/dir/b");
        assert_eq!(resolve(&cwd, "../../../../etc/x"), "/etc/x");
        assert_eq!(resolve(&cwd, "/etc//x/"), "/etc/x");
        assert_eq!(resolve(&WalkPath::Absolute("/".into()), "x"), "/x");
        assert_eq!(resolve(&WalkPath::None, "x"), "x");
        assert_eq!(normalize("/"), "/");
    }

    #[test]
    fn records_decode_in_place_and_when_misaligned() {
        // SAFETY: FileRecord is plain old data: all zeroes is a valid value.
        let mut r: FileRecord = unsafe { std::mem::zeroed() };
        r.hdr.kind = RecordKind::File as u32;
        r.hdr.pid = 42;
        r.op = Op::Open as u32;
        r.flags = libc::O_WRONLY as u32;
        r.path1[..6].copy_from_slice(b"/etc/x");
        let size = std::mem::size_of::<FileRecord>();
        // SAFETY: the bytes of a plain-old-data value, read while it lives.
        let raw =
            unsafe { std::slice::from_raw_parts((&r as *const FileRecord).cast::<u8>(), size) };
        // u64 storage: aligned at offset 0, misaligned at offset 1.
        let mut storage = vec![0u64; size / 8 + 2];
        // SAFETY: the u64 buffer is valid for all of its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(storage.as_mut_ptr().cast::<u8>(), storage.len() * 8)
        };
        let mut d = Decoder::new(Clock::now(), Arc::from("h"), 0);
        for offset in [0, 1] {
            bytes[offset..offset + size].copy_from_slice(raw);
            let ev = d.decode(&bytes[offset..offset + size]).expect("decodes");
            assert_eq!(
                ev.kind,
                driftwatch_sdk::EventKind::OpenWrite,
                "offset {offset}"
            );
            assert_eq!(ev.process.pid, 42);
            assert_eq!(ev.file.map(|f| f.path).as_deref(), Some("/etc/x"));
            // Shorter than a header: nothing, not a read past the end.
            let header = std::mem::size_of::<Header>();
            assert!(d.decode(&bytes[offset..offset + header - 1]).is_none());
        }
    }

    #[test]
    fn short_file_records_read_as_zero_padded() {
        // SAFETY: FileRecord is plain old data: all zeroes is a valid value.
        let mut r: FileRecord = unsafe { std::mem::zeroed() };
        r.hdr.kind = RecordKind::File as u32;
        r.op = Op::Open as u32;
        r.info = info::FILE_WALK | info::HAS_INODE | info::WRITE | info::COMPAT;
        r.i_mode = 0o100644;
        r.nlink = 2;
        r.ino = 77;
        r.dev = (8 << 20) | 1;
        r.base1 = w(walk::ROOT, &["x", "etc"]);
        let len = r.sent_len();
        assert!(len < 1500, "an open is sent short: {len}");
        // SAFETY: the bytes of a plain-old-data value, read while it lives.
        let raw = unsafe {
            std::slice::from_raw_parts(
                (&r as *const FileRecord).cast::<u8>(),
                std::mem::size_of::<FileRecord>(),
            )
        };
        let mut d = Decoder::new(Clock::now(), Arc::from("h"), 0);
        // Leftovers of a longer record must not leak into the next one.
        let mut long = r;
        long.path2[..4].copy_from_slice(b"junk");
        long.path2_len = 5;
        long.op = Op::Rename as u32;
        // SAFETY: as above.
        let long_raw = unsafe {
            std::slice::from_raw_parts(
                (&long as *const FileRecord).cast::<u8>(),
                std::mem::size_of::<FileRecord>(),
            )
        };
        assert!(d.decode(long_raw).is_some());
        let ev = d.decode(&raw[..len]).expect("decodes");
        let f = ev.file.expect("a file");
        assert_eq!(f.path, "/etc/x");
        assert_eq!((f.nlink, f.ino), (Some(2), Some(77)));
        assert_eq!(f.dev, Some(libc::makedev(8, 1)));
        assert!(f.compat);
        assert_eq!(f.target_path, None);
    }

    /// A header for task `pid` in cgroup `parent/leaf`, in the initial
    /// pid namespace.
    fn cgroup_header(pid: u32, parent: &str, leaf: &str) -> Header {
        // SAFETY: Header is plain old data: all zeroes is a valid value.
        let mut h: Header = unsafe { std::mem::zeroed() };
        h.pid = pid;
        h.cgroup_id = 7;
        h.cgroup_leaf[..leaf.len()].copy_from_slice(leaf.as_bytes());
        h.cgroup_parent[..parent.len()].copy_from_slice(parent.as_bytes());
        h
    }

    /// A decoder reading `/proc/<pid>/cgroup` from a directory of the test's.
    fn decoder_with_proc(cgroups: &[(u32, String)]) -> (Decoder, tempfile::TempDir) {
        let proc = tempfile::tempdir().unwrap();
        for (pid, text) in cgroups {
            let dir = proc.path().join(pid.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cgroup"), text).unwrap();
        }
        let mut d = Decoder::new(Clock::now(), Arc::from("h"), 0);
        d.proc_root = proc.path().to_path_buf();
        (d, proc)
    }

    const ID: &str = "3ab290c732230f85615f8c1a30667d2ab7059f721bf2bd086b6e4f5baa4a46c9";

    #[test]
    fn a_cgroup_is_read_once_and_again_when_its_names_change() {
        let leaf = format!("libpod-{ID}");
        let (mut d, proc) = decoder_with_proc(&[(40, format!("0::/libpod_parent/{leaf}\n"))]);
        let podman = cgroup_header(40, "libpod_parent", &leaf);
        for _ in 0..2 {
            let c = d.container(&podman).expect("a podman container");
            assert_eq!(c.id, ID);
            assert_eq!(c.runtime.as_ref().map(|r| r.as_str()), Some("podman"));
        }
        assert_eq!(d.cgroups.len(), 1);
        // Remembered: the process may be gone by the next record.
        std::fs::remove_dir_all(proc.path().join("40")).unwrap();
        assert_eq!(d.container(&podman).map(|c| c.id), Some(ID.into()));
        // The same id with other names (a reused id): not the cached answer.
        assert!(
            d.container(&cgroup_header(41, "libpod_parent", "user.slice"))
                .is_none()
        );
        let c = d.container(&cgroup_header(41, "x", &format!("crio-{ID}.scope")));
        assert_eq!(
            c.and_then(|c| c.runtime).as_ref().map(|r| r.as_str()),
            Some("cri-o")
        );
    }

    /// Review M1: a child cgroup below a container, named like another
    /// container or like nothing, is still in the container.
    #[test]
    fn a_container_is_found_above_its_own_child_cgroups() {
        let other = "c811d759cd84d2b82f41bca4039440b6c48b9a7e33c361ed30c4b94006d3eaae";
        let spoof = format!("libpod-{other}");
        let (mut d, _proc) =
            decoder_with_proc(&[(50, format!("0::/libpod_parent/libpod-{ID}/a/{spoof}\n"))]);
        let c = d.container(&cgroup_header(50, "a", &spoof)).unwrap();
        assert_eq!(c.id, ID);
        // A plain containerd namespace, with an id of containerd's own.
        let (mut d, _proc) = decoder_with_proc(&[(51, "0::/default/dw-plain\n".into())]);
        let c = d
            .container(&cgroup_header(51, "default", "dw-plain"))
            .unwrap();
        assert_eq!(
            (c.id.as_str(), c.runtime),
            ("dw-plain", Some(Runtime::Containerd))
        );
    }

    #[test]
    fn a_task_in_its_own_pid_namespace_is_never_the_host() {
        let (mut d, _proc) = decoder_with_proc(&[(60, "0::/ci/runner-7\n".into())]);
        let mut h = cgroup_header(60, "ci", "runner-7");
        assert!(d.container(&h).is_none(), "the host's pid namespace");
        h.pid_ns_level = 1;
        assert_eq!(d.container(&h).map(|c| c.id), Some(UNKNOWN_ID.into()));
        // Names the kernel could not read: the pid namespace still says.
        h.faults = Fault::Cgroup.bit();
        assert_eq!(d.container(&h).map(|c| c.id), Some(UNKNOWN_ID.into()));
        // Neither fact: nothing is claimed.
        h.faults |= Fault::PidNs.bit();
        assert!(d.container(&h).is_none());
    }

    #[test]
    fn unread_facts_are_unknown_not_values() {
        let mut r = exec_record();
        r.hdr.pid_ns = 4026531836;
        r.exe = w(walk::ROOT, &["sh", "bin"]);
        r.exe_flags = exe::OVERLAY | exe::ROOT_FS;
        let clock = Clock::now();
        let env = env(&clock);
        let ev = exec_event(&r, &env, None);
        // Read: uid 0 is root, a lower-layer exe, argv complete.
        assert_eq!((ev.process.uid, ev.process.euid), (0, 0));
        assert!(ev.process.exe_lower_layer && !ev.process.exe_upper_layer);
        assert_eq!(ev.process.exe_path, "/bin/sh");
        assert!(!ev.process.args_truncated);

        r.hdr.faults = Fault::Cred.bit()
            | Fault::Layer.bit()
            | Fault::Exe.bit()
            | Fault::Args.bit()
            | Fault::PidNs.bit()
            | Fault::Tty.bit();
        let ev = exec_event(&r, &env, None);
        let p = &ev.process;
        assert_eq!(
            (p.uid, p.gid, p.euid, p.tty),
            (UNREAD_ID, UNREAD_ID, UNREAD_ID, UNREAD_ID)
        );
        assert!(!p.exe_lower_layer && !p.exe_upper_layer, "neither layer");
        assert_eq!(p.exe_path, "");
        assert!(p.args.is_empty() && p.args_truncated);
        assert_eq!((p.vpid, p.pid_ns), (0, 0));

        // A file named only by a string that could not be read is not its
        // base directory.
        // SAFETY: as above.
        let mut f: FileRecord = unsafe { std::mem::zeroed() };
        f.hdr.kind = RecordKind::File as u32;
        f.op = Op::Unlink as u32;
        f.base1 = w(walk::ROOT, &["tmp"]);
        let path = |f: &FileRecord| {
            file_event(f, &env, None)
                .and_then(|e| e.file)
                .map(|f| f.path)
        };
        f.path1[..1].copy_from_slice(b"x");
        assert_eq!(path(&f).as_deref(), Some("/tmp/x"));
        f.path1[0] = 0;
        f.hdr.faults = Fault::Path.bit();
        assert_eq!(path(&f).as_deref(), Some(""));
    }

    #[test]
    fn unread_cgroup_names_are_not_remembered() {
        // SAFETY: Header is plain old data: all zeroes is a valid value.
        let mut h: Header = unsafe { std::mem::zeroed() };
        h.cgroup_id = 9;
        h.faults = Fault::Cgroup.bit();
        let mut d = Decoder::new(Clock::now(), Arc::from("h"), 0);
        assert!(d.container(&h).is_none());
        assert!(d.cgroups.is_empty());
        // Names from a task already gone: answered, not remembered.
        let mut h = cgroup_header(u32::MAX, "docker", ID);
        h.cgroup_id = 10;
        assert_eq!(d.container(&h).map(|c| c.id), Some(ID.into()));
        assert!(d.cgroups.is_empty());
    }

    #[test]
    fn open_flags_match_the_host() {
        assert_eq!(open_flags::O_WRONLY, libc::O_WRONLY as u32);
        assert_eq!(open_flags::O_RDWR, libc::O_RDWR as u32);
        assert_eq!(open_flags::O_CREAT, libc::O_CREAT as u32);
        assert_eq!(open_flags::O_TRUNC, libc::O_TRUNC as u32);
    }

    #[test]
    fn argv_splits_on_nul() {
        assert_eq!(split_args(b"sh\0-c\0echo hi\0"), ["sh", "-c", "echo hi"]);
        assert_eq!(split_args(b"sh\0-c"), ["sh", "-c"]);
        assert!(split_args(b"").is_empty());
        assert_eq!(split_args(b"\0"), Vec::<String>::new());
    }

    #[test]
    fn clock_offsets_are_sane() {
        let c = Clock::now();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let k = clock_ns(libc::CLOCK_MONOTONIC);
        let diff = c.wall(k).abs_diff(now);
        assert!(diff < 1_000_000_000, "{diff}");
    }
}
