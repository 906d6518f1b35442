//! Kernel records → schema events.
//!
//! The kernel sends paths as dentry walks (components leaf first) plus the
//! path strings the process passed; this module assembles absolute paths as
//! the process sees them, and the rest of the normalization.

use driftwatch_common::{
    ExecRecord, FileRecord, Header, RECORD_EXEC, RECORD_FILE, Walk, info, op, walk,
};
use driftwatch_sdk::{Container, Event, EventKind, FileInfo, FileType, Process};

use crate::enrich::container::container_from_cgroup;

/// The NUL-terminated prefix of `b`, lossily as UTF-8.
fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
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
        let comps: Vec<String> = w.buf[..len]
            .split(|c| *c == 0)
            .filter(|c| !c.is_empty())
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        // A mount root's own name is "/": not a component.
        let comps: Vec<&str> = comps
            .iter()
            .map(|s| s.as_str())
            .filter(|s| *s != "/")
            .collect();
        let joined = || {
            let mut s = String::new();
            for c in comps.iter().rev() {
                s.push('/');
                s.push_str(c);
            }
            if s.is_empty() { "/".to_string() } else { s }
        };
        match w.status {
            walk::ROOT | walk::GLOBAL_ROOT => WalkPath::Absolute(joined()),
            walk::TRUNCATED => WalkPath::Truncated(format!("…{}", joined())),
            walk::PSEUDO if comps.len() == 1 => WalkPath::Anonymous(comps[0].to_string()),
            // A detached subtree (e.g. a deleted directory's child): the
            // best we have.
            walk::PSEUDO => WalkPath::Truncated(format!("…{}", joined())),
            _ => WalkPath::None,
        }
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

fn process(h: &Header) -> Process {
    Process {
        pid: h.pid,
        tid: h.tid,
        ppid: h.ppid,
        vpid: h.vpid,
        uid: h.uid,
        gid: h.gid,
        euid: h.euid,
        name: cstr(&h.comm),
        tty: h.tty,
        cgroup_id: h.cgroup_id,
        pid_ns: h.pid_ns,
        mnt_ns: h.mnt_ns,
        ..Process::default()
    }
}

fn container(h: &Header) -> Option<Container> {
    let leaf = cstr(&h.cgroup_leaf);
    let parent = cstr(&h.cgroup_parent);
    let (id, rt) = container_from_cgroup(&format!("/{parent}/{leaf}"))?;
    Some(Container {
        id,
        runtime: rt.name().map(String::from),
        ..Container::default()
    })
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

pub fn exec_event(r: &ExecRecord, clock: &Clock, hostname: &str) -> Event {
    let mut p = process(&r.hdr);
    let exe = WalkPath::from_walk(&r.exe);
    if let WalkPath::Anonymous(name) = &exe {
        p.exe_from_memfd = name.starts_with("memfd:");
    }
    p.exe_path = exe.into_string();
    let overlay = r.exe_flags & driftwatch_common::EXE_OVERLAY != 0;
    p.exe_upper_layer = r.exe_flags & driftwatch_common::EXE_UPPER != 0;
    p.exe_lower_layer = overlay && !p.exe_upper_layer;
    p.pname = cstr(&r.pcomm);
    p.pexe_path = WalkPath::from_walk(&r.pexe).into_string();
    p.cwd = WalkPath::from_walk(&r.cwd).into_string();
    let n = (r.args_len as usize).min(r.args.len());
    p.args = split_args(&r.args[..n]);
    p.args_truncated = r.args_truncated != 0;
    Event {
        time_ns: clock.wall(r.hdr.ktime_ns),
        kind: EventKind::Exec,
        hostname: hostname.to_string(),
        container: container(&r.hdr),
        process: p,
        ..Event::default()
    }
}

pub fn file_event(r: &FileRecord, clock: &Clock, hostname: &str) -> Option<Event> {
    let kind = match r.op {
        op::OPEN => EventKind::OpenWrite,
        op::CHMOD => EventKind::Chmod,
        op::UNLINK => EventKind::Unlink,
        op::RENAME => EventKind::Rename,
        _ => return None,
    };
    let p1 = cstr(&r.path1);
    let base1 = WalkPath::from_walk(&r.base1);
    let path = if r.info & info::FILE_WALK != 0 {
        match base1 {
            WalkPath::None => resolve(&WalkPath::None, &p1),
            w => w.into_string(),
        }
    } else {
        resolve(&base1, &p1)
    };
    let target_path =
        (r.op == op::RENAME).then(|| resolve(&WalkPath::from_walk(&r.base2), &cstr(&r.path2)));
    let file_type = if r.info & info::HAS_INODE != 0 {
        FileType::from_mode(r.i_mode)
    } else {
        FileType::Unknown
    };
    let mode = match r.op {
        op::CHMOD => r.mode & 0o7777,
        _ if r.flags & libc::O_CREAT as u32 != 0 || r.flags & libc::O_TMPFILE as u32 != 0 => {
            r.mode & 0o7777
        }
        _ => 0,
    };
    Some(Event {
        time_ns: clock.wall(r.hdr.ktime_ns),
        kind,
        hostname: hostname.to_string(),
        container: container(&r.hdr),
        process: process(&r.hdr),
        file: Some(FileInfo {
            path,
            target_path,
            flags: if r.op == op::OPEN { r.flags } else { 0 },
            mode,
            file_type,
            created: r.info & info::CREATED != 0,
            upper_layer: r.info & info::UPPER != 0,
            outside_root: r.info & info::OUTSIDE_ROOT != 0,
            ..FileInfo::default()
        }),
        ..Event::default()
    })
}

/// Decodes one ring-buffer item. Items are not aligned: read unaligned.
pub fn decode(bytes: &[u8], clock: &Clock, hostname: &str) -> Option<Event> {
    if bytes.len() < 4 {
        return None;
    }
    let kind = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    match kind {
        RECORD_EXEC if bytes.len() >= std::mem::size_of::<ExecRecord>() => {
            // SAFETY: the length is checked; ExecRecord is plain old data
            // for which every bit pattern is valid.
            let r: Box<ExecRecord> =
                Box::new(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) });
            Some(exec_event(&r, clock, hostname))
        }
        RECORD_FILE if bytes.len() >= std::mem::size_of::<FileRecord>() => {
            // SAFETY: as above.
            let r: Box<FileRecord> =
                Box::new(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) });
            file_event(&r, clock, hostname)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftwatch_common::WALK_BUF;

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
            _pad: [0; 5],
            buf,
        }
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
