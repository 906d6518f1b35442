//! The merged walk: every entry of the upper layer, looked up in the image
//! layers the way overlayfs resolves it.
//!
//! Work is a stack of directory jobs shared by a few threads (hashing small
//! files is syscall-bound, so two or more workers overlap the waits). A
//! directory with many entries is split into chunks so one huge directory
//! still uses every worker. Memory is bounded by the pending jobs and one
//! directory's names at a time per worker, plus the differences found; file
//! contents are streamed through a fixed buffer.
//!
//! Descriptors: one per layer root for the whole walk, and per job the
//! directory in the upper layer and in each image layer that contributes
//! to it, closed when the job ends (so deep trees with many layers stay far
//! below the descriptor limit).

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use driftwatch_sdk::FileType;

use super::mountinfo::Overlay;
use super::nofollow::{self, Meta};
use super::{Change, Entry, ImageFile, mode_text, path_text};

/// Entries per job when a directory is split.
const CHUNK: usize = 2048;
/// Read buffer per worker for hashing.
const BUF: usize = 64 * 1024;
/// Directory levels walked below a layer root. Paths longer than PATH_MAX
/// are walked (see [`nofollow::open_dir_beneath`]), but each level costs a
/// lookup of every level above it, so a container nesting a million
/// directories would keep a worker busy for hours. Images nest a few dozen
/// levels; what lies deeper is not examined, and the diff says so.
pub const MAX_DEPTH: usize = 1024;
/// Warnings kept per worker; the rest are counted, so a tree of a million
/// unreadable entries cannot fill memory with messages.
const MAX_WARNINGS: usize = 1000;
/// Differences listed per walk. A container can write millions of files
/// into its upper layer; each listed difference holds its path and hash
/// (a few hundred bytes), so the walk goes on counting past this many but
/// keeps no more, and the result says how many it left out.
pub const MAX_ENTRIES: usize = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("opening layer {path}: {source}")]
    Layer { path: PathBuf, source: io::Error },
    #[error("starting a worker thread: {0}")]
    Thread(io::Error),
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct WalkResult {
    pub entries: Vec<Entry>,
    pub warnings: Vec<String>,
    pub examined: u64,
    /// Warnings over [`MAX_WARNINGS`], counted only.
    suppressed: u64,
    /// Differences found beyond the listing limit, counted only.
    pub unlisted: u64,
}

/// How many differences the workers of one walk may still list.
struct Budget {
    max: usize,
    listed: AtomicUsize,
}

struct Job {
    /// Directory path relative to the layer roots ("" for the root).
    rel: PathBuf,
    /// Levels below the root (0 for the root).
    depth: usize,
    /// Indexes of the image layers that have this directory, top-most
    /// first, cut after the first non-directory or whiteout below a hit.
    image_layers: Vec<usize>,
    /// An opaque directory at or above this one hides the image's content.
    hidden_above: bool,
    /// A chunk of the directory's names; `None` means "read the directory
    /// (and handle its opacity)".
    names: Option<Vec<CString>>,
}

struct Layers {
    upper: OwnedFd,
    lowers: Vec<OwnedFd>,
}

struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

struct QueueState {
    jobs: Vec<Job>,
    active: usize,
}

/// Walks `overlay`'s upper layer against its image layers with `jobs`
/// threads.
pub fn walk(overlay: &Overlay, jobs: usize) -> Result<WalkResult, WalkError> {
    walk_listing(overlay, jobs, MAX_ENTRIES)
}

/// [`walk`], listing at most `max_entries` differences.
pub fn walk_listing(
    overlay: &Overlay,
    jobs: usize,
    max_entries: usize,
) -> Result<WalkResult, WalkError> {
    let budget = Budget {
        max: max_entries,
        listed: AtomicUsize::new(0),
    };
    let open = |p: &Path| {
        nofollow::open_root(p).map_err(|source| WalkError::Layer {
            path: p.to_path_buf(),
            source,
        })
    };
    let layers = Layers {
        upper: open(&overlay.upper)?,
        lowers: overlay
            .lowers
            .iter()
            .map(|p| open(p))
            .collect::<Result<_, _>>()?,
    };
    let queue = Queue {
        state: Mutex::new(QueueState {
            jobs: vec![Job {
                rel: PathBuf::new(),
                depth: 0,
                image_layers: (0..layers.lowers.len()).collect(),
                hidden_above: false,
                names: None,
            }],
            active: 0,
        }),
        ready: Condvar::new(),
    };
    let workers = jobs.max(1);
    let results: Vec<WalkResult> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for i in 0..workers {
            let (layers, queue, budget) = (&layers, &queue, &budget);
            let h = std::thread::Builder::new()
                .name(format!("diff-{i}"))
                .spawn_scoped(s, move || Worker::new(layers, budget).run(queue))
                .map_err(WalkError::Thread)?;
            handles.push(h);
        }
        let mut out = Vec::new();
        for h in handles {
            match h.join() {
                Ok(r) => out.push(r),
                // A worker panic is a bug; keep its siblings' results.
                Err(_) => out.push(WalkResult {
                    warnings: vec!["a diff worker panicked; the result is incomplete".into()],
                    ..WalkResult::default()
                }),
            }
        }
        Ok::<_, WalkError>(out)
    })?;
    let mut all = WalkResult::default();
    let mut suppressed = 0;
    for r in results {
        all.entries.extend(r.entries);
        all.warnings.extend(r.warnings);
        all.examined += r.examined;
        all.unlisted += r.unlisted;
        suppressed += r.suppressed;
    }
    if all.unlisted > 0 {
        all.warnings.push(format!(
            "{} more differences were found but not listed: only the first {max_entries} are \
             kept, so a container that writes millions of files cannot exhaust memory",
            all.unlisted
        ));
    }
    if suppressed > 0 {
        all.warnings
            .push(format!("{suppressed} more warnings not shown"));
    }
    Ok(all)
}

/// An image layer's copy of the directory being processed.
struct ImageDir {
    layer: usize,
    fd: OwnedFd,
    /// The directory carries `overlay.whiteouts`: zero-size files with the
    /// `overlay.whiteout` xattr in it are whiteouts.
    xattr_whiteouts: bool,
}

/// Where the image has a name.
struct Hit<'a> {
    dir: BorrowedFd<'a>,
    meta: Meta,
    /// For a directory: the image layers below that merge into it.
    child_layers: Vec<usize>,
}

struct Worker<'a> {
    layers: &'a Layers,
    budget: &'a Budget,
    buf: Vec<u8>,
    out: WalkResult,
}

impl<'a> Worker<'a> {
    fn new(layers: &'a Layers, budget: &'a Budget) -> Worker<'a> {
        Worker {
            layers,
            budget,
            buf: vec![0; BUF],
            out: WalkResult::default(),
        }
    }

    /// Lists a difference, or only counts it once the walk's budget is spent.
    fn record(&mut self, e: Entry) {
        if self.budget.listed.fetch_add(1, Ordering::Relaxed) < self.budget.max {
            self.out.entries.push(e);
        } else {
            self.out.unlisted += 1;
        }
    }

    fn run(mut self, queue: &Queue) -> WalkResult {
        loop {
            let job = {
                let mut st = queue.state.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if let Some(j) = st.jobs.pop() {
                        st.active += 1;
                        break j;
                    }
                    if st.active == 0 {
                        queue.ready.notify_all();
                        return self.out;
                    }
                    st = queue.ready.wait(st).unwrap_or_else(|p| p.into_inner());
                }
            };
            let children = self.process(job);
            let mut st = queue.state.lock().unwrap_or_else(|p| p.into_inner());
            st.jobs.extend(children);
            st.active -= 1;
            queue.ready.notify_all();
        }
    }

    fn warn(&mut self, rel: &Path, what: &str, e: impl std::fmt::Display) {
        if self.out.warnings.len() >= MAX_WARNINGS {
            self.out.suppressed += 1;
            return;
        }
        self.out
            .warnings
            .push(format!("{}: {what}: {e}", container_path(rel)));
    }

    fn process(&mut self, job: Job) -> Vec<Job> {
        let mut children = Vec::new();
        let udir = match nofollow::open_dir_beneath(self.layers.upper.as_fd(), &job.rel) {
            Ok(Some(fd)) => fd,
            // Removed or replaced since its parent was read.
            Ok(None) => return children,
            Err(e) => {
                self.warn(&job.rel, "opening directory in the upper layer", e);
                return children;
            }
        };
        let marks = DirMarks::of(udir.as_fd());
        let hidden = job.hidden_above || marks.opaque;
        let upper_xattr_whiteouts = marks.xattr_whiteouts;
        let image = self.open_image_dirs(&job);

        let names = match job.names {
            Some(n) => n,
            None => {
                let mut names = match nofollow::read_dir_names(udir.as_fd()) {
                    Ok(n) => n,
                    Err(e) => {
                        self.warn(&job.rel, "reading directory", e);
                        return children;
                    }
                };
                if hidden && !image.is_empty() {
                    self.removed_below_opaque(&job.rel, &names, &image);
                }
                // Hand all but the first chunk to other workers.
                while names.len() > CHUNK {
                    let rest = names.split_off(names.len() - CHUNK);
                    children.push(Job {
                        rel: job.rel.clone(),
                        depth: job.depth,
                        image_layers: job.image_layers.clone(),
                        hidden_above: job.hidden_above,
                        names: Some(rest),
                    });
                }
                names
            }
        };

        for name in &names {
            self.out.examined += 1;
            let rel = job.rel.join(nofollow::os(name));
            match self.entry(udir.as_fd(), upper_xattr_whiteouts, &image, name, &rel) {
                Ok(Some(_)) if job.depth + 1 >= MAX_DEPTH => self.warn(
                    &rel,
                    "not examined",
                    format_args!("directories nested deeper than {MAX_DEPTH} levels"),
                ),
                Ok(Some(child_layers)) => children.push(Job {
                    rel,
                    depth: job.depth + 1,
                    image_layers: child_layers,
                    hidden_above: hidden,
                    names: None,
                }),
                Ok(None) => {}
                Err(e) => self.warn(&rel, "examining", e),
            }
        }
        children
    }

    /// The image layers' copies of the job's directory, top-most first, cut
    /// after an opaque one (layers below it do not show through).
    fn open_image_dirs(&mut self, job: &Job) -> Vec<ImageDir> {
        let mut dirs = Vec::new();
        for &layer in &job.image_layers {
            match nofollow::open_dir_beneath(self.layers.lowers[layer].as_fd(), &job.rel) {
                Ok(Some(fd)) => {
                    let marks = DirMarks::of(fd.as_fd());
                    dirs.push(ImageDir {
                        layer,
                        xattr_whiteouts: marks.xattr_whiteouts,
                        fd,
                    });
                    if marks.opaque {
                        break;
                    }
                }
                Ok(None) => {}
                Err(e) => self.warn(&job.rel, &format!("opening image layer {layer}"), e),
            }
        }
        dirs
    }

    /// Compares one upper-layer entry with the image. Returns the image
    /// layers to descend with when it is a directory to walk into.
    fn entry(
        &mut self,
        udir: BorrowedFd<'_>,
        upper_xattr_whiteouts: bool,
        image: &[ImageDir],
        name: &CStr,
        rel: &Path,
    ) -> io::Result<Option<Vec<usize>>> {
        let Some(um) = nofollow::stat_at(udir, name)? else {
            return Ok(None);
        };
        let hit = lookup(image, name)?;
        if is_whiteout(udir, name, &um, upper_xattr_whiteouts)? {
            if let Some(hit) = hit {
                let e = self.describe(hit.dir, name, &hit.meta, rel, Change::Removed, false)?;
                self.record(e);
            }
            return Ok(None);
        }
        let Some(hit) = hit else {
            let e = self.describe(udir, name, &um, rel, Change::Added, false)?;
            self.record(e);
            return Ok(um.is_dir().then(Vec::new));
        };
        if um.file_type_bits() != hit.meta.file_type_bits() {
            // A type change hides the image's entry completely.
            let mut e = self.describe(udir, name, &um, rel, Change::Modified, false)?;
            e.image = Some(self.image_side(hit.dir, name, &hit.meta)?);
            self.record(e);
            return Ok(um.is_dir().then(Vec::new));
        }
        if um.is_dir() {
            // A directory's mtime moves whenever anything inside changes;
            // those changes are reported themselves.
            if owner_or_mode_differ(&um, &hit.meta) {
                let mut e = self.describe(udir, name, &um, rel, Change::Metadata, false)?;
                e.image = Some(self.image_side(hit.dir, name, &hit.meta)?);
                self.record(e);
            }
            return Ok(Some(hit.child_layers));
        }
        let mut e = self.describe(udir, name, &um, rel, Change::Modified, true)?;
        let img = self.image_side(hit.dir, name, &hit.meta)?;
        if um.is_regular() && e.sha256.is_none() {
            // Metacopy: the data is the image's.
            e.sha256.clone_from(&img.sha256);
        }
        let content_changed = if um.is_regular() {
            e.sha256 != img.sha256
        } else if um.is_symlink() {
            e.link_target != img.link_target
        } else {
            um.rdev != hit.meta.rdev
        };
        let meta_changed = owner_or_mode_differ(&um, &hit.meta) || um.mtime_ns != hit.meta.mtime_ns;
        e.image = Some(img);
        if content_changed {
            self.record(e);
        } else if meta_changed {
            e.change = Change::Metadata;
            self.record(e);
        }
        // Same content and metadata: copied up without a change (opened
        // for writing, xattr change); not drift.
        Ok(None)
    }

    /// The image's entries under an opaque directory that the upper layer
    /// does not have: removed, one entry per top-level name.
    fn removed_below_opaque(&mut self, rel: &Path, upper: &[CString], image: &[ImageDir]) {
        let upper: HashSet<&[u8]> = upper.iter().map(|n| n.to_bytes()).collect();
        let mut seen: HashSet<CString> = HashSet::new();
        for dir in image {
            let names = match nofollow::read_dir_names(dir.fd.as_fd()) {
                Ok(n) => n,
                Err(e) => {
                    self.warn(rel, &format!("reading image layer {}", dir.layer), e);
                    continue;
                }
            };
            for name in names {
                if upper.contains(name.to_bytes()) || seen.contains(&name) {
                    continue;
                }
                let child = rel.join(nofollow::os(&name));
                let result = (|| -> io::Result<Option<Entry>> {
                    let Some(m) = nofollow::stat_at(dir.fd.as_fd(), &name)? else {
                        return Ok(None);
                    };
                    if is_whiteout(dir.fd.as_fd(), &name, &m, dir.xattr_whiteouts)? {
                        return Ok(None);
                    }
                    self.describe(dir.fd.as_fd(), &name, &m, &child, Change::Removed, false)
                        .map(Some)
                })();
                match result {
                    Ok(Some(e)) => self.record(e),
                    Ok(None) => {}
                    Err(e) => self.warn(&child, "examining image entry", e),
                }
                seen.insert(name);
            }
        }
    }

    /// An entry for `name` in `dir` with metadata `m`, hashing regular files.
    fn describe(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        m: &Meta,
        rel: &Path,
        change: Change,
        copied_up: bool,
    ) -> io::Result<Entry> {
        let file_type = FileType::from_mode(m.mode);
        let mut e = Entry {
            path: container_path(rel),
            change,
            file_type,
            size: m.size,
            mode: mode_text(m.perm()),
            uid: m.uid,
            gid: m.gid,
            sha256: None,
            executable: m.is_regular() && m.perm() & 0o111 != 0,
            elf: false,
            link_target: None,
            image: None,
            runtime_created: false,
        };
        if m.is_regular() {
            let fd = nofollow::open_file_at(dir, name)?;
            // A metacopy-only copy-up has no data in this layer: the data
            // is still the image's, so the content is unchanged. Only a
            // copy-up can be one, so new files skip the xattr reads.
            if !copied_up || nofollow::overlay_xattr(fd.as_fd(), "metacopy")?.is_none() {
                let c = nofollow::hash_fd(&fd, &mut self.buf)?;
                e.sha256 = Some(c.sha256);
                e.elf = c.elf;
            }
        } else if m.is_symlink() {
            e.link_target = Some(path_text(&nofollow::read_link_at(dir, name)?));
        }
        Ok(e)
    }

    fn image_side(&mut self, dir: BorrowedFd<'_>, name: &CStr, m: &Meta) -> io::Result<ImageFile> {
        let e = self.describe(dir, name, m, Path::new(""), Change::Removed, false)?;
        Ok(ImageFile {
            file_type: e.file_type,
            size: e.size,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            sha256: e.sha256,
            link_target: e.link_target,
        })
    }
}

/// Finds `name` in the image directories, top-most layer first.
fn lookup<'a>(image: &'a [ImageDir], name: &CStr) -> io::Result<Option<Hit<'a>>> {
    for (pos, dir) in image.iter().enumerate() {
        let Some(meta) = nofollow::stat_at(dir.fd.as_fd(), name)? else {
            continue;
        };
        if is_whiteout(dir.fd.as_fd(), name, &meta, dir.xattr_whiteouts)? {
            return Ok(None);
        }
        let mut child_layers = Vec::new();
        if meta.is_dir() {
            child_layers.push(dir.layer);
            // Lower copies of the directory merge in, until a layer has
            // something else (or a whiteout) there.
            for below in &image[pos + 1..] {
                match nofollow::stat_at(below.fd.as_fd(), name)? {
                    None => continue,
                    Some(m) if m.is_dir() => child_layers.push(below.layer),
                    Some(_) => break,
                }
            }
        }
        return Ok(Some(Hit {
            dir: dir.fd.as_fd(),
            meta,
            child_layers,
        }));
    }
    Ok(None)
}

fn owner_or_mode_differ(a: &Meta, b: &Meta) -> bool {
    a.perm() != b.perm() || a.uid != b.uid || a.gid != b.gid
}

/// The overlay markers of a directory.
struct DirMarks {
    /// `overlay.opaque = "y"`: the directory hides everything below it in
    /// the layers under it.
    opaque: bool,
    /// `overlay.opaque = "x"` or `overlay.whiteouts`: the directory may hold
    /// xattr whiteouts (kernel 6.7+, used by nested overlays).
    xattr_whiteouts: bool,
}

impl DirMarks {
    /// Unreadable xattrs count as absent: a filesystem without xattr
    /// support has no overlay markers.
    fn of(dir: BorrowedFd<'_>) -> DirMarks {
        let opaque = nofollow::overlay_xattr(dir, "opaque").ok().flatten();
        DirMarks {
            opaque: opaque.as_deref() == Some(b"y"),
            xattr_whiteouts: opaque.as_deref() == Some(b"x")
                || matches!(nofollow::overlay_xattr(dir, "whiteouts"), Ok(Some(_))),
        }
    }
}

/// A classic whiteout (char device 0/0), or, in a directory marked for
/// them, an empty regular file with the `overlay.whiteout` xattr.
fn is_whiteout(
    dir: BorrowedFd<'_>,
    name: &CStr,
    m: &Meta,
    xattr_whiteouts: bool,
) -> io::Result<bool> {
    if m.is_chardev_whiteout() {
        return Ok(true);
    }
    if xattr_whiteouts && m.is_regular() && m.size == 0 {
        let fd = nofollow::open_file_at(dir, name)?;
        return Ok(nofollow::overlay_xattr(fd.as_fd(), "whiteout")?.is_some());
    }
    Ok(false)
}

/// `/`-rooted text of a layer-relative path.
fn container_path(rel: &Path) -> String {
    let mut b = Vec::with_capacity(rel.as_os_str().len() + 1);
    b.push(b'/');
    b.extend_from_slice(rel.as_os_str().as_bytes());
    path_text(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd};

    fn walk_dirs(upper: &Path, lower: &Path) -> WalkResult {
        let overlay = Overlay {
            upper: upper.to_path_buf(),
            lowers: vec![lower.to_path_buf()],
            data_only: Vec::new(),
            metacopy: false,
        };
        walk(&overlay, 2).expect("walk")
    }

    #[test]
    fn a_binary_deeper_than_path_max_is_found() {
        let d = tempfile::tempdir().unwrap();
        let (upper, lower) = (d.path().join("upper"), d.path().join("lower"));
        std::fs::create_dir(&lower).unwrap();
        // 20 levels of 250-byte names: 5 KB, beyond PATH_MAX (4096), so
        // made one level at a time through descriptors.
        std::fs::create_dir(&upper).unwrap();
        let mut cur = nofollow::open_root(&upper).unwrap();
        for i in 0..20 {
            let name = CString::new(format!("{i:02}{}", "d".repeat(248))).unwrap();
            // SAFETY: valid fd and NUL-terminated name.
            let rc = unsafe { libc::mkdirat(cur.as_raw_fd(), name.as_ptr(), 0o755) };
            assert_eq!(rc, 0, "{}", io::Error::last_os_error());
            // SAFETY: valid fd and name; the new fd is owned below.
            let fd = unsafe {
                libc::openat(
                    cur.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            };
            assert!(fd >= 0, "{}", io::Error::last_os_error());
            // SAFETY: a fresh descriptor.
            cur = unsafe { OwnedFd::from_raw_fd(fd) };
        }
        let file = c"hidden-miner";
        // SAFETY: valid fd and name; the new fd is owned below.
        let fd = unsafe {
            libc::openat(
                cur.as_raw_fd(),
                file.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o755,
            )
        };
        assert!(fd >= 0, "{}", io::Error::last_os_error());
        // SAFETY: a fresh descriptor.
        let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        std::io::Write::write_all(&mut f, b"\x7fELF....").unwrap();
        drop(f);

        let r = walk_dirs(&upper, &lower);
        let miner = r
            .entries
            .iter()
            .find(|e| e.path.ends_with("/hidden-miner"))
            .unwrap_or_else(|| panic!("missed; warnings: {:?}", r.warnings));
        assert!(miner.path.len() > 4096);
        assert!(miner.elf && miner.is_executable());
        assert_eq!(miner.change, Change::Added);
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn symlink_loops_and_links_out_of_the_tree_are_reported_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let (upper, lower) = (d.path().join("upper"), d.path().join("lower"));
        std::fs::create_dir_all(upper.join("sub")).unwrap();
        std::fs::create_dir(&lower).unwrap();
        let link = |target: &str, name: &str| {
            std::os::unix::fs::symlink(target, upper.join(name)).unwrap();
        };
        link(".", "loop");
        link("..", "up");
        link("/etc", "etc-of-host");
        link("../../..", "sub/escape");
        link("sub/../loop", "chain");
        let r = walk_dirs(&upper, &lower);
        let mut paths: Vec<&str> = r.entries.iter().map(|e| e.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "/chain",
                "/etc-of-host",
                "/loop",
                "/sub",
                "/sub/escape",
                "/up"
            ],
            "nothing below a symlink is walked"
        );
        let target = |p: &str| {
            r.entries
                .iter()
                .find(|e| e.path == p)
                .and_then(|e| e.link_target.clone())
        };
        assert_eq!(target("/etc-of-host").as_deref(), Some("/etc"));
        assert_eq!(target("/loop").as_deref(), Some("."));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn nesting_beyond_the_depth_limit_is_said_not_silently_skipped() {
        let d = tempfile::tempdir().unwrap();
        let (upper, lower) = (d.path().join("upper"), d.path().join("lower"));
        std::fs::create_dir(&lower).unwrap();
        let mut deep = upper.clone();
        for _ in 0..MAX_DEPTH + 3 {
            deep.push("x");
        }
        std::fs::create_dir_all(&deep).unwrap();
        let r = walk_dirs(&upper, &lower);
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings.first());
        assert!(
            r.warnings[0].contains(&format!("nested deeper than {MAX_DEPTH} levels")),
            "{}",
            r.warnings[0]
        );
        assert_eq!(r.entries.len(), MAX_DEPTH);
    }

    #[test]
    fn differences_beyond_the_listing_limit_are_counted_not_kept() {
        let d = tempfile::tempdir().unwrap();
        let (upper, lower) = (d.path().join("upper"), d.path().join("lower"));
        std::fs::create_dir(&lower).unwrap();
        for dir in ["a", "b", "c"] {
            std::fs::create_dir_all(upper.join(dir)).unwrap();
            for i in 0..40 {
                std::fs::write(upper.join(dir).join(i.to_string()), b"x").unwrap();
            }
        }
        let overlay = Overlay {
            upper,
            lowers: vec![lower],
            data_only: Vec::new(),
            metacopy: false,
        };
        // 3 directories and 120 files differ; two workers share the budget.
        let r = walk_listing(&overlay, 2, 50).expect("walk");
        assert_eq!(r.entries.len(), 50);
        assert_eq!(r.unlisted, 73);
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("73 more differences") && w.contains("first 50")),
            "{:?}",
            r.warnings
        );
        let all = walk_listing(&overlay, 2, MAX_ENTRIES).expect("walk");
        assert_eq!((all.entries.len(), all.unlisted), (123, 0));
    }
}
