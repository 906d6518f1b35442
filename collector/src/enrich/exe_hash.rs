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
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use driftwatch_sdk::{Event, EventKind, ExeChange, ExeFile, ExeSource};

use super::Enricher;
use super::program_file::{
    descriptor_of, exe_file_of, fstat, mnt_ns_of, open_for_reading, pin_program,
    process_in_namespace,
};
use crate::fsdiff::mountinfo;
use crate::fsdiff::nofollow::{
    hash_fd, open_dir_beneath, open_file_at, open_root, overlay_xattr, reopen_regular, stat_at,
};

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
    upper: PathBuf,
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

    /// A live process of `ev`'s mount namespace: the exec's own, else one
    /// remembered or found by a scan.
    fn namespace_pid(&mut self, ev: &Event) -> std::io::Result<u32> {
        let proc_root = Path::new("/proc");
        let ns = ev.process.mnt_ns;
        let alive = |pid: &u32| mnt_ns_of(proc_root, *pid) == Some(ns);
        if alive(&ev.process.pid) {
            return Ok(ev.process.pid);
        }
        if let Some(pid) = self.ns_pids.get(&ns).copied().filter(alive) {
            return Ok(pid);
        }
        let pid = process_in_namespace(proc_root, ns)
            .ok_or_else(|| std::io::Error::other("no live process in the container"))?;
        if self.ns_pids.len() >= MAX_CACHE {
            self.ns_pids.clear();
        }
        self.ns_pids.insert(ns, pid);
        Ok(pid)
    }

    /// The file `target` of `ev` names, opened for reading.
    fn open(&mut self, ev: &Event, target: Target) -> Result<OwnedFd, String> {
        let p = &ev.process;
        match target {
            Target::Exe => match open_exe(p.pid) {
                Ok(f) => Ok(f),
                // Gone already: the same path through a live process of the
                // container, checked by the caller to be the same file.
                Err(e) => self
                    .namespace_pid(ev)
                    .and_then(|pid| open_for_reading(Path::new("/proc"), pid, &p.exe_path))
                    .map_err(|e2| {
                        format!(
                            "opening /proc/{}/exe: {e}; through the container's root: {e2}",
                            p.pid
                        )
                    }),
            },
            Target::Program => {
                let path = p.program_file.as_ref().map_or("", |f| f.path.as_str());
                // A descriptor path is the process's own descriptor; any
                // other path resolves the same in every process of the
                // container.
                let pid = if descriptor_of(path).is_some() {
                    p.pid
                } else {
                    self.namespace_pid(ev).map_err(|e| e.to_string())?
                };
                pin_program(Path::new("/proc"), pid, path)
                    .and_then(|pinned| reopen_regular(&pinned))
                    .map_err(|e| format!("opening {path}: {e}"))
            }
        }
    }

    fn remember(&mut self, key: Key, answer: Answer) {
        self.pending.remove(&key);
        if self.cache.len() >= MAX_CACHE {
            self.cache.clear();
        }
        self.cache.insert(key, answer);
    }

    /// Starts hashing the file `target` of `ev` names unless known; `Err`
    /// is why it will not be.
    fn request(&mut self, ev: &Event, target: Target, key: Key) -> Result<(), String> {
        if self.pending.contains(&key) {
            return Ok(());
        }
        let file = self.open(ev, target)?;
        let st = fstat(file.as_fd())
            .map(|st| exe_file_of(&st))
            .map_err(|e| format!("fstat: {e}"))?;
        if (st.dev, st.ino, st.mtime_ns) != key {
            return Err(match target {
                Target::Exe => "the process runs another file than at the exec".into(),
                Target::Program => "the file changed since the exec".into(),
            });
        }
        let compare = (target.source(ev) == Some(ExeSource::UpperLayer))
            .then(|| {
                let pid = self.namespace_pid(ev).ok()?;
                let mounts = mountinfo::read(pid).ok()?;
                let overlay = mountinfo::root_overlay(pid, &mounts).ok()?;
                Some(Compare {
                    upper: overlay.upper,
                    lowers: overlay.lowers,
                    path: target.path(ev).to_string(),
                    size: st.size,
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

/// Which file of an exec is hashed: the executable, or the program file it
/// runs (`process.program_file`: a script, the loader's file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Exe,
    Program,
}

impl Target {
    /// Where the file is.
    fn source(self, ev: &Event) -> Option<ExeSource> {
        match self {
            Target::Exe => ev.process.exe_origin(),
            Target::Program => ev.process.program_file.as_ref().and_then(|f| f.source),
        }
    }

    fn path(self, ev: &Event) -> &str {
        match self {
            Target::Exe => &ev.process.exe_path,
            Target::Program => ev
                .process
                .program_file
                .as_ref()
                .map_or("", |f| f.path.as_str()),
        }
    }

    /// Whether `ev` wants this file hashed (and has no hash yet), and the
    /// file's facts when known.
    fn wanted(self, ev: &Event) -> Option<Option<ExeFile>> {
        if ev.kind != EventKind::Exec || ev.container.is_none() {
            return None;
        }
        let p = &ev.process;
        let not_image =
            |s: Option<ExeSource>| s.is_some_and(|s| s.is_drift() || s == ExeSource::Memfd);
        match self {
            Target::Exe => (!p.exe_reexec && p.exe_sha256.is_none() && not_image(p.exe_origin()))
                .then_some(p.exe_file),
            Target::Program => {
                let f = p.program_file.as_ref()?;
                (f.sha256.is_none() && not_image(f.source)).then_some(f.file)
            }
        }
    }

    /// Writes what was found into `ev`.
    fn set(self, ev: &mut Event, found: Result<&Answer, String>) {
        let p = &mut ev.process;
        let (sha256, missing, change) = match self {
            Target::Exe => (
                &mut p.exe_sha256,
                &mut p.exe_sha256_missing,
                &mut p.exe_change,
            ),
            Target::Program => match p.program_file.as_mut() {
                Some(f) => (&mut f.sha256, &mut f.sha256_missing, &mut f.change),
                None => return,
            },
        };
        match found {
            Ok(a) => {
                match &a.sha256 {
                    Ok(sha) => *sha256 = Some(sha.clone()),
                    Err(why) => *missing = Some(why.clone()),
                }
                *change = a.change;
            }
            Err(why) => *missing = Some(why),
        }
    }
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
        let mut waiting: Vec<(usize, Target, Key)> = Vec::new();
        for (i, ev) in events.iter_mut().enumerate() {
            for target in [Target::Exe, Target::Program] {
                let Some(file) = target.wanted(ev) else {
                    continue;
                };
                let Some(f) = file else {
                    let why = match target {
                        Target::Exe => "the kernel did not read the file",
                        Target::Program => "the file was not read",
                    };
                    target.set(ev, Err(why.into()));
                    continue;
                };
                let key = (f.dev, f.ino, f.mtime_ns);
                if !self.cache.contains_key(&key) && f.size > self.max_size {
                    let why = format!("larger than {} bytes", self.max_size);
                    self.remember(key, Answer::missing(why));
                }
                if self.cache.contains_key(&key) {
                    waiting.push((i, target, key));
                    continue;
                }
                match self.request(ev, target, key) {
                    Ok(()) => waiting.push((i, target, key)),
                    Err(why) => target.set(ev, Err(why)),
                }
            }
        }
        while waiting.iter().any(|(_, _, k)| self.pending.contains(k)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.done.recv_timeout(left) {
                Ok((key, answer)) => self.remember(key, answer),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        for (i, target, key) in waiting {
            let found = self.cache.get(&key).ok_or_else(|| {
                format!(
                    "not hashed within the batch timeout ({} ms)",
                    self.wait.as_millis()
                )
            });
            target.set(&mut events[i], found);
        }
    }
}

/// How the upper-layer file with sha256 `sha` differs from the file at the
/// same path in the image, resolved as overlayfs resolves it: the top-most
/// layer that has the path, and none below a directory on the way that a
/// higher layer (the upper one too) made opaque or whited out. `None` when
/// that cannot be told (a layer unreadable).
fn compare(c: &Compare, sha: &str, buf: &mut [u8]) -> Option<ExeChange> {
    let rel = Path::new(c.path.trim_start_matches('/'));
    let parent = rel.parent().unwrap_or(Path::new(""));
    let name = CString::new(rel.file_name()?.as_bytes()).ok()?;
    // A directory removed and made again in the container is opaque in the
    // upper layer: nothing of the image shows below it.
    let upper = open_root(&c.upper).ok()?;
    if hides_lower_layers(upper.as_fd(), parent).ok()? {
        return Some(ExeChange::New);
    }
    for layer in &c.lowers {
        let root = open_root(layer).ok()?;
        if let Some(dir) = open_dir_beneath(root.as_fd(), parent).ok()?
            && let Some(meta) = stat_at(dir.as_fd(), &name).ok()?
        {
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
        if hides_lower_layers(root.as_fd(), parent).ok()? {
            return Some(ExeChange::New);
        }
    }
    Some(ExeChange::New)
}

/// Whether the layer at `root` hides what the layers below it have at
/// `dir`: a directory on the way (`dir` itself included) is opaque, or one
/// is whited out.
///
/// The opaque marker is a `trusted.overlay.opaque` xattr (`user.` on
/// unprivileged mounts): reading `trusted.*` takes CAP_SYS_ADMIN, which
/// the daemon keeps while the scan is on (the default). Without it the
/// marker reads as absent, and a file under a re-created directory whose
/// content equals the hidden image file's is `metadata_only`, not `new`.
fn hides_lower_layers(root: BorrowedFd<'_>, dir: &Path) -> std::io::Result<bool> {
    let mut at = PathBuf::new();
    let mut components = dir.components().peekable();
    loop {
        let Some(fd) = open_dir_beneath(root, &at)? else {
            // Missing here: hidden below only if whited out.
            let parent = at.parent().unwrap_or(Path::new(""));
            let Some(name) = at.file_name() else {
                return Ok(false);
            };
            let Some(pdir) = open_dir_beneath(root, parent)? else {
                return Ok(false);
            };
            let name = CString::new(name.as_bytes())
                .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            return Ok(stat_at(pdir.as_fd(), &name)?.is_some_and(|m| m.is_chardev_whiteout()));
        };
        if !at.as_os_str().is_empty()
            && overlay_xattr(fd.as_fd(), "opaque")?.as_deref() == Some(b"y")
        {
            return Ok(true);
        }
        match components.next() {
            Some(c) => at.push(c),
            None => return Ok(false),
        }
    }
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

    fn set_opaque(dir: &Path) {
        let path = CString::new(dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid NUL-terminated strings and a 1-byte value.
        let rc = unsafe {
            libc::setxattr(
                path.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
    }

    /// Overlay layers in a temporary directory: `upper`, then the lower
    /// layers top-most first, each a directory tree of files.
    fn layers(upper: &[(&str, &str)], lowers: &[&[(&str, &str)]]) -> (tempfile::TempDir, Compare) {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (i, files) in std::iter::once(upper)
            .chain(lowers.iter().copied())
            .enumerate()
        {
            let root = dir.path().join(format!("l{i}"));
            std::fs::create_dir_all(&root).unwrap();
            for (path, content) in files {
                let at = root.join(path);
                if let Some(d) = path.strip_suffix('/') {
                    std::fs::create_dir_all(root.join(d)).unwrap();
                    continue;
                }
                std::fs::create_dir_all(at.parent().unwrap()).unwrap();
                if *content == "WHITEOUT" {
                    let c = CString::new(at.as_os_str().as_bytes()).unwrap();
                    // SAFETY: a valid path; a 0/0 character device is a whiteout.
                    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, 0) };
                    assert_eq!(rc, 0, "mknod: {}", std::io::Error::last_os_error());
                } else {
                    std::fs::write(&at, content).unwrap();
                }
            }
            paths.push(root);
        }
        let upper = paths.remove(0);
        let compare = Compare {
            size: std::fs::metadata(upper.join("usr/bin/x")).unwrap().len(),
            upper,
            lowers: paths,
            path: "/usr/bin/x".into(),
        };
        (dir, compare)
    }

    fn sha(content: &str) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(content.as_bytes()))
    }

    /// The image's file is the one overlayfs would show had the container
    /// not touched it: a directory the container (or a higher image layer)
    /// removed and made again hides what lies below it.
    #[test]
    fn the_image_file_is_looked_up_as_overlayfs_does() {
        if unsafe { libc::geteuid() } != 0 {
            assert!(std::env::var_os("CI").is_none(), "needs root in CI");
            return;
        }
        let mut buf = vec![0u8; 4096];
        let same = [("usr/bin/x", "elf")];
        let (_d, c) = layers(&same, &[&same]);
        assert_eq!(
            compare(&c, &sha("elf"), &mut buf),
            Some(ExeChange::MetadataOnly)
        );
        let (_d, c) = layers(&same, &[&[("usr/bin/x", "elf2")]]);
        assert_eq!(
            compare(&c, &sha("elf"), &mut buf),
            Some(ExeChange::ContentModified)
        );
        // `rm -rf /usr/bin && mkdir /usr/bin`: opaque in the upper layer.
        let (_d, c) = layers(&same, &[&same]);
        set_opaque(&c.upper.join("usr/bin"));
        assert_eq!(compare(&c, &sha("elf"), &mut buf), Some(ExeChange::New));
        // An ancestor made opaque by a higher image layer hides the lower.
        let (_d, c) = layers(&same, &[&[("usr/", "")], &same]);
        set_opaque(&c.lowers[0].join("usr"));
        assert_eq!(compare(&c, &sha("elf"), &mut buf), Some(ExeChange::New));
        // Not opaque: the lower layer shows through.
        let (_d, c) = layers(&same, &[&[("usr/", "")], &same]);
        assert_eq!(
            compare(&c, &sha("elf"), &mut buf),
            Some(ExeChange::MetadataOnly)
        );
        // An ancestor whited out by a higher image layer.
        let (_d, c) = layers(&same, &[&[("usr", "WHITEOUT")], &same]);
        assert_eq!(compare(&c, &sha("elf"), &mut buf), Some(ExeChange::New));
        // The file itself whited out.
        let (_d, c) = layers(&same, &[&[("usr/bin/x", "WHITEOUT")], &same]);
        assert_eq!(compare(&c, &sha("elf"), &mut buf), Some(ExeChange::New));
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
