//! `user.name`: the name the acting uid has in the container's own
//! `/etc/passwd` (read through `/proc/<pid>/root`), cached per container;
//! for a host process, in the host's (through its `/proc/<pid>/root` too,
//! which is the host's root even when driftwatch runs in a container of
//! its own), cached per mount namespace, as is a container no runtime
//! names.
//!
//! The kernel knows only the uid; what it is called depends on the image,
//! so the host's passwd would be wrong for a container. A uid the file does
//! not name (a host's directory users, say), or a process whose file cannot
//! be read, gets the number itself: a value that is true, never a guess.
//!
//! The file is container-controlled, so it is opened without following
//! symlinks out of the container's root, without blocking on a FIFO, only
//! when it is a regular file, and read up to [`MAX_PASSWD`] bytes. That
//! costs a few syscalls once per container per [`REFRESH`]; every other
//! event is a map lookup.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use driftwatch_sdk::Event;

use super::Enricher;
use crate::container::UNKNOWN_ID;
use crate::fsdiff::nofollow;

/// How long a container's passwd is trusted before it is read again
/// (`useradd` in a running container is rare, but it happens).
pub const REFRESH: Duration = Duration::from_secs(30);
/// After a failed read (the process was gone, no passwd), how long before
/// trying again, so a container without one costs one attempt per second.
const RETRY: Duration = Duration::from_secs(1);
/// A larger passwd is read up to this many bytes.
pub const MAX_PASSWD: u64 = 1 << 20;
/// Containers remembered at most; past that the cache starts over.
const MAX_CONTAINERS: usize = 4096;

struct Entry {
    /// uid → name; empty when the file could not be read.
    names: HashMap<u32, String>,
    read_at: Instant,
    ok: bool,
}

/// Fills `process.user_name` of events that lack one.
pub struct UserEnricher {
    proc_root: PathBuf,
    cache: HashMap<String, Entry>,
    /// The host's root directory (device, inode): `/proc/1/root`, or this
    /// process's own `/` where that cannot be read.
    host_root: Option<(u64, u64)>,
}

/// A directory's (device, inode), following symlinks (`/proc/<pid>/root`).
fn dir_id(p: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

impl UserEnricher {
    pub fn new() -> UserEnricher {
        UserEnricher::with_proc(PathBuf::from("/proc"))
    }

    /// With another procfs mount (tests).
    pub fn with_proc(proc_root: PathBuf) -> UserEnricher {
        let host_root =
            dir_id(&proc_root.join("1/root")).or_else(|| dir_id(std::path::Path::new("/")));
        UserEnricher {
            proc_root,
            cache: HashMap::new(),
            host_root,
        }
    }

    /// Whether `pid` of a container still has the host's root: the
    /// runtime's init process before its `pivot_root` (`runc:[2:INIT]`).
    /// Its passwd is the host's, not the container's, so it is not read.
    fn before_pivot_root(&self, pid: u32) -> bool {
        self.host_root.is_some()
            && dir_id(&self.proc_root.join(pid.to_string()).join("root")) == self.host_root
    }

    fn entry(&mut self, id: &str, pid: u32) -> &Entry {
        let now = Instant::now();
        let fresh = self.cache.get(id).is_some_and(|e| {
            let age = now.duration_since(e.read_at);
            age < if e.ok { REFRESH } else { RETRY }
        });
        if !fresh {
            let read = read_passwd(&self.proc_root.join(pid.to_string()).join("root"));
            if self.cache.len() >= MAX_CONTAINERS && !self.cache.contains_key(id) {
                self.cache.clear();
            }
            match (read, self.cache.get_mut(id)) {
                (Ok(names), _) => {
                    self.cache.insert(
                        id.to_string(),
                        Entry {
                            names,
                            read_at: now,
                            ok: true,
                        },
                    );
                }
                // The process may be gone before we looked: keep what an
                // earlier read found, and look again later.
                (Err(_), Some(old)) => old.read_at = now,
                (Err(e), None) => {
                    tracing::debug!(container = id, pid, "reading /etc/passwd: {e}");
                    self.cache.insert(
                        id.to_string(),
                        Entry {
                            names: HashMap::new(),
                            read_at: now,
                            ok: false,
                        },
                    );
                }
            }
        }
        // Inserted or refreshed above when missing.
        &self.cache[id]
    }
}

impl Default for UserEnricher {
    fn default() -> Self {
        UserEnricher::new()
    }
}

impl Enricher for UserEnricher {
    fn enrich(&mut self, event: &mut Event) {
        if event.process.user_name.is_some() || event.process.pid == 0 {
            return;
        }
        let key = match &event.container {
            Some(c) if !c.id.is_empty() && c.id != UNKNOWN_ID => {
                if !self.cache.contains_key(&c.id) && self.before_pivot_root(event.process.pid) {
                    // Not the container's passwd yet: the number, and the
                    // container's next process is asked.
                    event.process.user_name = Some(event.process.uid.to_string());
                    return;
                }
                c.id.clone()
            }
            // The host, or a container no runtime names: what passwd a
            // process sees is its mount namespace's.
            _ => format!("mnt:{}", event.process.mnt_ns),
        };
        let uid = event.process.uid;
        let name = self
            .entry(&key, event.process.pid)
            .names
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string());
        event.process.user_name = Some(name);
    }
}

/// The uid → name map of `root/etc/passwd`, opened safely (see the module
/// doc).
fn read_passwd(root: &std::path::Path) -> std::io::Result<HashMap<u32, String>> {
    let root = nofollow::open_root(root)?;
    let etc = nofollow::open_dir_beneath(root.as_fd(), std::path::Path::new("etc"))?
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOENT))?;
    let fd = nofollow::open_file_at(etc.as_fd(), c"passwd")?;
    let file = std::fs::File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut text = Vec::new();
    file.take(MAX_PASSWD).read_to_end(&mut text)?;
    Ok(parse_passwd(&String::from_utf8_lossy(&text)))
}

/// `name:password:uid:gid:gecos:home:shell` lines; the first name of a uid
/// wins, as getpwuid's does. Malformed lines are skipped.
fn parse_passwd(text: &str) -> HashMap<u32, String> {
    let mut names = HashMap::new();
    for line in text.lines() {
        let mut f = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        if let Ok(uid) = uid.parse::<u32>() {
            names.entry(uid).or_insert_with(|| name.to_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftwatch_sdk::{Container, Process};

    fn event(pid: u32, uid: u32) -> Event {
        Event {
            process: Process {
                pid,
                uid,
                ..Process::default()
            },
            container: Some(Container {
                id: "c".repeat(64),
                ..Container::default()
            }),
            ..Event::default()
        }
    }

    #[test]
    fn passwd_lines() {
        let names = parse_passwd(
            "root:x:0:0::/root:/bin/sh\nbad\n#c:x:9:9\napp:x:1000:1000::/:/bin/false\ntoor:x:0:0\n",
        );
        assert_eq!(names.get(&0).map(String::as_str), Some("root"));
        assert_eq!(names.get(&1000).map(String::as_str), Some("app"));
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn names_come_from_the_containers_root_with_a_numeric_fallback() {
        let proc = tempfile::tempdir().unwrap();
        let etc = proc.path().join("42/root/etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0::/:/bin/sh\nweb:x:33:33::/:/bin/false\n",
        )
        .unwrap();
        let mut u = UserEnricher::with_proc(proc.path().to_path_buf());
        let mut ev = event(42, 33);
        u.enrich(&mut ev);
        assert_eq!(ev.process.user_name.as_deref(), Some("web"));
        let mut ev = event(42, 7);
        u.enrich(&mut ev);
        assert_eq!(ev.process.user_name.as_deref(), Some("7"));
        // Cached: the process may be gone by the next event.
        let mut ev = event(43, 0);
        u.enrich(&mut ev);
        assert_eq!(ev.process.user_name.as_deref(), Some("root"));
        // What a source already knew stays.
        let mut ev = event(42, 33);
        ev.process.user_name = Some("given".into());
        u.enrich(&mut ev);
        assert_eq!(ev.process.user_name.as_deref(), Some("given"));
        // Host processes: the host's passwd, through their own root,
        // cached apart from the container's.
        let etc = proc.path().join("50/root/etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("passwd"),
            "root:x:0:0::/:/bin/sh\nhostuser:x:33:33::/:/bin/sh\n",
        )
        .unwrap();
        let mut ev = event(50, 33);
        ev.container = None;
        ev.process.mnt_ns = 4026531840;
        u.enrich(&mut ev);
        assert_eq!(ev.process.user_name.as_deref(), Some("hostuser"));
        // A container no runtime names is not "container unknown" for all.
        let mut ev = event(42, 33);
        ev.container.as_mut().unwrap().id = UNKNOWN_ID.into();
        ev.process.mnt_ns = 4026532000;
        u.enrich(&mut ev);
        assert_eq!(ev.process.user_name.as_deref(), Some("web"));
    }

    /// The runtime's init process of a container, before its `pivot_root`,
    /// sees the host's files: its passwd must not stand for the container's.
    #[test]
    fn the_host_passwd_is_not_taken_for_a_containers() {
        let proc = tempfile::tempdir().unwrap();
        let host = proc.path().join("1/root/etc");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("passwd"), "hostuser:x:1000:1000::/:/bin/sh\n").unwrap();
        // pid 60 (runc init) still has the host's root; pid 61 is inside.
        std::fs::create_dir_all(proc.path().join("60")).unwrap();
        std::os::unix::fs::symlink(proc.path().join("1/root"), proc.path().join("60/root"))
            .unwrap();
        let inside = proc.path().join("61/root/etc");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("passwd"), "app:x:1000:1000::/:/bin/sh\n").unwrap();
        let mut u = UserEnricher::with_proc(proc.path().to_path_buf());
        let mut ev = event(60, 1000);
        u.enrich(&mut ev);
        assert_eq!(ev.process.user_name.as_deref(), Some("1000"));
        let mut ev = event(61, 1000);
        u.enrich(&mut ev);
        assert_eq!(ev.process.user_name.as_deref(), Some("app"));
    }

    #[test]
    fn a_hostile_passwd_is_not_followed_and_does_not_block() {
        let proc = tempfile::tempdir().unwrap();
        let etc = proc.path().join("5/root/etc");
        std::fs::create_dir_all(&etc).unwrap();
        // A symlink out of the container's root, then a FIFO.
        std::os::unix::fs::symlink("/etc/passwd", etc.join("passwd")).unwrap();
        assert!(read_passwd(&proc.path().join("5/root")).is_err());
        std::fs::remove_file(etc.join("passwd")).unwrap();
        let fifo = std::ffi::CString::new(etc.join("passwd").to_str().unwrap()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(read_passwd(&proc.path().join("5/root")).is_err());
        let mut u = UserEnricher::with_proc(proc.path().to_path_buf());
        let mut ev = event(5, 0);
        u.enrich(&mut ev);
        assert_eq!(ev.process.user_name.as_deref(), Some("0"));
    }
}
