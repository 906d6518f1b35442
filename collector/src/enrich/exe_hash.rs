//! `process.exe_sha256`: the sha256 of an executable that is not an image
//! file (drift or memfd), hashed on a worker thread of its own.
//!
//! The chain's thread only opens `/proc/<pid>/exe` (the very file the
//! process runs, deleted or not) and checks it is the file the kernel
//! reported at the exec (device, inode, mtime); reading and hashing happen on
//! the worker. A batch waits for the hashes it asked for at most
//! `batch_timeout_ms` in all; what is not ready by then leaves without a
//! hash, with `exe_sha256_missing` saying why, and still fills the cache for
//! the next exec of the same file. Results are cached per (device, inode,
//! mtime); files larger than [`MAX_SIZE`] are not read.
//!
//! For an executable on the overlay upper layer the worker also sets
//! `exe_change` (`drift.change`): the file at the same path in the image's
//! layers (the root overlay's `lowerdir`s from `/proc/<pid>/mountinfo`,
//! top-most first, opened without following symlinks) is absent (`new`),
//! differs in size or sha256 (`content_modified`) or has the same content
//! (`metadata_only`: a chmod, chown or touch copied it up).

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use driftwatch_sdk::{Event, EventKind, ExeChange, ExeSource};

use super::Enricher;
use super::program_file::{mnt_ns_of, open_for_reading, process_in_namespace};
use crate::fsdiff::mountinfo;
use crate::fsdiff::nofollow::{hash_fd, open_dir_beneath, open_file_at, open_root, stat_at};

/// Files larger than this are not hashed.
pub const MAX_SIZE: u64 = 64 << 20;
/// Hashes remembered at most; past that the cache starts over.
const MAX_CACHE: usize = 4096;
/// Files waiting for the worker at most; past that an exec goes unhashed.
const QUEUE: usize = 256;

/// (device, inode, mtime): a file's content identity.
type Key = (u64, u64, i64);
/// What the worker found: the hash or why not, and for an upper-layer
/// file how it differs from the image (`None`: not judged).
#[derive(Debug, Clone)]
struct Answer {
    sha256: Result<String, String>,
    change: Option<ExeChange>,
}

impl Answer {
    fn missing(why: String) -> Answer {
        Answer {
            sha256: Err(why),
            change: None,
        }
    }
}

struct Job {
    key: Key,
    file: OwnedFd,
    compare: Option<Compare>,
}

/// The image layers to compare an upper-layer executable with.
struct Compare {
    lowers: Vec<PathBuf>,
    /// The executable's path inside the container.
    path: String,
    size: u64,
}

/// Fills `exe_sha256` (or `exe_sha256_missing`) of container execs whose
/// executable is not an image file.
pub struct ExeHashEnricher {
    wait: Duration,
    /// [`MAX_SIZE`], but for tests.
    max_size: u64,
    cache: HashMap<Key, Answer>,
    pending: HashSet<Key>,
    /// mount namespace → a live process in it.
    ns_pids: HashMap<u64, u32>,
    jobs: SyncSender<Job>,
    done: Receiver<(Key, Answer)>,
}

impl ExeHashEnricher {
    /// Starts the worker; a batch waits at most `wait` for hashes.
    pub fn start(wait: Duration) -> std::io::Result<ExeHashEnricher> {
        let (jobs, inbox) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
        let (outbox, done) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("exe-hash".into())
            .spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                for job in inbox {
                    let sha256 = hash_fd(&job.file, &mut buf)
                        .map(|c| c.sha256)
                        .map_err(|e| format!("reading the file: {e}"));
                    let change = match (&job.compare, &sha256) {
                        (Some(c), Ok(sha)) => compare(c, sha, &mut buf),
                        _ => None,
                    };
                    let answer = Answer { sha256, change };
                    if outbox.send((job.key, answer)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(ExeHashEnricher {
            wait,
            max_size: MAX_SIZE,
            cache: HashMap::new(),
            pending: HashSet::new(),
            ns_pids: HashMap::new(),
            jobs,
            done,
        })
    }

    /// The executable's path opened through a live process of the same
    /// mount namespace (remembered per namespace).
    fn open_through_namespace(&mut self, ev: &Event) -> std::io::Result<OwnedFd> {
        let proc_root = Path::new("/proc");
        let ns = ev.process.mnt_ns;
        let alive = |pid: &u32| mnt_ns_of(proc_root, *pid) == Some(ns);
        let pid = match self.ns_pids.get(&ns).copied().filter(alive) {
            Some(pid) => pid,
            None => {
                let pid = process_in_namespace(proc_root, ns)
                    .ok_or_else(|| std::io::Error::other("no live process in the container"))?;
                if self.ns_pids.len() >= MAX_CACHE {
                    self.ns_pids.clear();
                }
                self.ns_pids.insert(ns, pid);
                pid
            }
        };
        open_for_reading(proc_root, pid, &ev.process.exe_path)
    }

    fn remember(&mut self, key: Key, answer: Answer) {
        self.pending.remove(&key);
        if self.cache.len() >= MAX_CACHE {
            self.cache.clear();
        }
        self.cache.insert(key, answer);
    }

    /// Starts hashing the executable of `ev` unless known; `Err` is why it
    /// will not be.
    fn request(&mut self, ev: &Event, key: Key) -> Result<(), String> {
        if self.pending.contains(&key) {
            return Ok(());
        }
        let file = match open_exe(ev.process.pid) {
            Ok(f) => f,
            // Gone already: the same path through a live process of the
            // container, checked below to be the same file.
            Err(e) => self.open_through_namespace(ev).map_err(|e2| {
                format!(
                    "opening /proc/{}/exe: {e}; through the container's root: {e2}",
                    ev.process.pid
                )
            })?,
        };
        let st = fstat(&file).map_err(|e| format!("fstat: {e}"))?;
        let now: Key = (
            st.st_dev,
            st.st_ino,
            st.st_mtime
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec),
        );
        if now != key {
            return Err("the process runs another file than at the exec".into());
        }
        let compare = (ev.process.exe_origin() == Some(ExeSource::UpperLayer))
            .then(|| {
                let pid = Some(ev.process.pid)
                    .filter(|p| mnt_ns_of(Path::new("/proc"), *p) == Some(ev.process.mnt_ns))
                    .or_else(|| self.ns_pids.get(&ev.process.mnt_ns).copied())?;
                let mounts = mountinfo::read(pid).ok()?;
                let overlay = mountinfo::root_overlay(pid, &mounts).ok()?;
                Some(Compare {
                    lowers: overlay.lowers,
                    path: ev.process.exe_path.clone(),
                    size: st.st_size.max(0) as u64,
                })
            })
            .flatten();
        match self.jobs.try_send(Job { key, file, compare }) {
            Ok(()) => {
                self.pending.insert(key);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err("the hash queue is full".into()),
            Err(TrySendError::Disconnected(_)) => Err("the hash worker is gone".into()),
        }
    }
}

/// Whether `ev` is an exec whose executable gets a hash.
fn wants_hash(ev: &Event) -> bool {
    ev.kind == EventKind::Exec
        && ev.container.is_some()
        && !ev.process.exe_reexec
        && ev
            .process
            .exe_origin()
            .is_some_and(|s| s.is_drift() || s == ExeSource::Memfd)
}

impl Enricher for ExeHashEnricher {
    fn enrich(&mut self, event: &mut Event) {
        self.enrich_batch(std::slice::from_mut(event));
    }

    fn enrich_batch(&mut self, events: &mut [Event]) {
        while let Ok((key, answer)) = self.done.try_recv() {
            self.remember(key, answer);
        }
        let deadline = Instant::now() + self.wait;
        let mut waiting: Vec<(usize, Key)> = Vec::new();
        for (i, ev) in events.iter_mut().enumerate() {
            if !wants_hash(ev) || ev.process.exe_sha256.is_some() {
                continue;
            }
            let Some(f) = ev.process.exe_file else {
                ev.process.exe_sha256_missing = Some("the kernel did not read the file".into());
                continue;
            };
            let key = (f.dev, f.ino, f.mtime_ns);
            if !self.cache.contains_key(&key) && f.size > self.max_size {
                let why = format!("larger than {} bytes", self.max_size);
                self.remember(key, Answer::missing(why));
            }
            if self.cache.contains_key(&key) {
                waiting.push((i, key));
                continue;
            }
            match self.request(ev, key) {
                Ok(()) => waiting.push((i, key)),
                Err(why) => ev.process.exe_sha256_missing = Some(why),
            }
        }
        while waiting.iter().any(|(_, k)| self.pending.contains(k)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.done.recv_timeout(left) {
                Ok((key, answer)) => self.remember(key, answer),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        for (i, key) in waiting {
            let p = &mut events[i].process;
            match self.cache.get(&key) {
                Some(a) => {
                    match &a.sha256 {
                        Ok(sha) => p.exe_sha256 = Some(sha.clone()),
                        Err(why) => p.exe_sha256_missing = Some(why.clone()),
                    }
                    p.exe_change = a.change;
                }
                None => {
                    p.exe_sha256_missing = Some(format!(
                        "not hashed within the batch timeout ({} ms)",
                        self.wait.as_millis()
                    ))
                }
            }
        }
    }
}

/// How the upper-layer file with sha256 `sha` differs from the file at the
/// same path in the top-most image layer that has it. `None` when that
/// cannot be told (a layer unreadable).
fn compare(c: &Compare, sha: &str, buf: &mut [u8]) -> Option<ExeChange> {
    let rel = Path::new(c.path.trim_start_matches('/'));
    let parent = rel.parent().unwrap_or(Path::new(""));
    let name = CString::new(rel.file_name()?.as_bytes()).ok()?;
    for layer in &c.lowers {
        let root = open_root(layer).ok()?;
        let Some(dir) = open_dir_beneath(root.as_fd(), parent).ok()? else {
            continue;
        };
        let Some(meta) = stat_at(dir.as_fd(), &name).ok()? else {
            continue;
        };
        // A whiteout in a layer hides the layers below it.
        if meta.is_chardev_whiteout() {
            return Some(ExeChange::New);
        }
        if !meta.is_regular() || meta.size != c.size {
            return Some(ExeChange::ContentModified);
        }
        let file = open_file_at(dir.as_fd(), &name).ok()?;
        let lower = hash_fd(&file, buf).ok()?;
        return Some(if lower.sha256 == sha {
            ExeChange::MetadataOnly
        } else {
            ExeChange::ContentModified
        });
    }
    Some(ExeChange::New)
}

/// `/proc/<pid>/exe` opened for reading (the magic link is the point: it is
/// the file the process runs, whatever its name now).
fn open_exe(pid: u32) -> std::io::Result<OwnedFd> {
    let path = std::ffi::CString::new(format!("/proc/{pid}/exe"))
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid NUL-terminated path; the fd is owned below.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: a valid fd; st is written on success.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded.
    Ok(unsafe { st.assume_init() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftwatch_sdk::{Container, ExeFile, Process};
    use std::os::unix::fs::MetadataExt;

    /// A running `sleep`: a small executable to hash. The test binary
    /// itself, with full debug info, is hundreds of megabytes, and
    /// unoptimized sha2 took longer than any sane batch timeout on it.
    struct Sleeper(std::process::Child);

    impl Sleeper {
        fn start() -> Sleeper {
            Sleeper(
                std::process::Command::new("sleep")
                    .arg("60")
                    .spawn()
                    .expect("starting sleep"),
            )
        }
        fn exe(&self) -> String {
            format!("/proc/{}/exe", self.0.id())
        }
        fn exec(&self) -> Event {
            exec_of(self.0.id(), &self.exe())
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn exec_of(pid: u32, exe: &str) -> Event {
        let me = std::fs::metadata(exe).unwrap();
        Event {
            kind: EventKind::Exec,
            container: Some(Container::default()),
            process: Process {
                pid,
                exe_source: Some(ExeSource::Tmpfs),
                exe_file: Some(ExeFile {
                    dev: me.dev(),
                    ino: me.ino(),
                    size: me.size(),
                    mtime_ns: me.mtime() * 1_000_000_000 + me.mtime_nsec(),
                    ..ExeFile::default()
                }),
                ..Process::default()
            },
            ..Event::default()
        }
    }

    #[test]
    fn hashes_the_running_file_or_says_why_not() {
        use sha2::Digest;
        let sleeper = Sleeper::start();
        let exec_of_self = || sleeper.exec();
        let bytes = std::fs::read(sleeper.exe()).unwrap();
        let want = hex::encode(sha2::Sha256::digest(&bytes));
        let mut e = ExeHashEnricher::start(Duration::from_secs(10)).unwrap();
        let mut evs = vec![exec_of_self(), exec_of_self()];
        e.enrich_batch(&mut evs);
        for ev in &evs {
            assert_eq!(
                ev.process.exe_sha256.as_deref(),
                Some(want.as_str()),
                "{:?}",
                ev.process.exe_sha256_missing
            );
        }
        // Another file's facts: refused, with the reason.
        let mut other = exec_of_self();
        if let Some(f) = other.process.exe_file.as_mut() {
            f.ino += 1;
        }
        e.enrich(&mut other);
        assert!(other.process.exe_sha256.is_none());
        assert!(
            other
                .process
                .exe_sha256_missing
                .as_deref()
                .is_some_and(|w| w.contains("another file")),
            "{other:?}"
        );
        // Past the size bound: not read, and said so.
        e.max_size = 1;
        let mut big = exec_of_self();
        if let Some(f) = big.process.exe_file.as_mut() {
            f.mtime_ns += 1;
        }
        e.enrich(&mut big);
        assert!(
            big.process
                .exe_sha256_missing
                .as_deref()
                .is_some_and(|w| w.contains("larger than 1 bytes")),
            "{big:?}"
        );
        // An image file is not hashed at all.
        let mut image = exec_of_self();
        image.process.exe_source = Some(ExeSource::Image);
        e.enrich(&mut image);
        assert!(image.process.exe_sha256.is_none() && image.process.exe_sha256_missing.is_none());
    }
}
