//! `process.program_file`: the file an exec runs as its program when the
//! executable only reads or loads it, and whether that file is an
//! unmodified file of the image.
//!
//! The kernel judges the executable (`exe_source`), but three kinds of exec
//! run a program the executable is not, and each is a way around a drift
//! rule that looks at the executable alone:
//!
//! - a script executed directly (`./x.sh` with a `#!` line): the kernel
//!   maps the interpreter and puts the script's path in argv. The exec's
//!   `comm` is the basename of the path given to `execve` (the kernel sets
//!   it before `sched_process_exec`, and nothing in the new program can
//!   have changed it yet), so a comm that names argv\[1\] or argv\[2\] and not
//!   the interpreter says the script was the file executed;
//! - the dynamic loader executed with a file argument (`ld.so FILE`);
//! - an interpreter of the configured list given a script file
//!   (`sh /tmp/x.sh`): a separate, lower-priority rule.
//!
//! Whether that file is from the image is judged here in user space, from
//! the container's own view of it: opened through `/proc/<pid>/root`
//! (symlinks resolved inside that root, `RESOLVE_IN_ROOT`), then
//! - another filesystem than the container's root: `tmpfs` (tmpfs, ramfs)
//!   or `volume`, with its mount point from `/proc/<pid>/mountinfo`;
//! - the root overlay: `upper_layer` when the path is present in the
//!   overlay's upperdir (from the root mount's options), else `image`;
//! - a root that is not an overlay: `image`, as the kernel side says.
//!
//! This costs about ten syscalls, only for execs of a loader, a script or an
//! interpreter with a file argument; the mount table is read once per mount
//! namespace per [`REFRESH`]. When the process has already exited, any other
//! live process of the same mount namespace serves (the container's init,
//! usually), found by its `/proc/<pid>/ns/mnt` inode.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use driftwatch_sdk::fields::file_name;
use driftwatch_sdk::program::{is_dynamic_loader, loaded_program, program};
use driftwatch_sdk::rules::is_under;
use driftwatch_sdk::{Event, EventKind, ExeFile, ExeSource, Process, ProgramFile, ProgramVia};

use super::Enricher;
use crate::fsdiff::mountinfo::{self, Mount};
use crate::fsdiff::nofollow;

/// The interpreters whose script argument is judged, by program name
/// (`proc.program`); a trailing `*` matches any suffix (`python3.12`).
pub const INTERPRETERS: &[&str] = &[
    "sh", "ash", "bash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "python*", "perl",
    "ruby", "node",
];

/// Shells: options differ from the other interpreters'.
const SHELLS: &[&str] = &[
    "sh", "ash", "bash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish",
];

/// How long a mount namespace's mount table is trusted.
pub const REFRESH: Duration = Duration::from_secs(10);
/// Mount namespaces remembered at most; past that the cache starts over.
const MAX_NAMESPACES: usize = 4096;
/// After a scan of /proc found no process of a namespace, how long before
/// scanning again for it.
const RESCAN: Duration = Duration::from_secs(1);

const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// Fills `process.program_file` of container execs that run a file other
/// than their executable.
pub struct ProgramFileEnricher {
    proc_root: PathBuf,
    interpreters: Vec<String>,
    namespaces: HashMap<u64, Namespace>,
}

/// What is known of one mount namespace.
struct Namespace {
    /// A process last seen in it.
    pid: Option<u32>,
    mounts: Vec<Mount>,
    /// The root overlay's upper directory (a host path).
    upper: Option<PathBuf>,
    root_overlay: bool,
    read_at: Option<Instant>,
    scanned_at: Option<Instant>,
}

/// Where a file is, as [`ProgramFile::source`] and `mount` say it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub source: ExeSource,
    pub mount: Option<String>,
    /// The file's inode facts.
    pub file: Option<ExeFile>,
}

impl ProgramFileEnricher {
    pub fn new(interpreters: Vec<String>) -> ProgramFileEnricher {
        ProgramFileEnricher {
            proc_root: PathBuf::from("/proc"),
            interpreters,
            namespaces: HashMap::new(),
        }
    }

    /// Where `path` (absolute, inside the container of `p`) is. `Ok(None)`
    /// when no such file exists.
    fn judge(&mut self, p: &Process, path: &str) -> io::Result<Option<Judged>> {
        let fd_path = descriptor_of(path).is_some();
        // A descriptor is the process's own: no other process will do.
        let pid = if fd_path {
            self.own_pid(p)?
        } else {
            self.live_pid(p)?
        };
        let root = open_path(&self.proc_root.join(format!("{pid}/root")))?;
        let file = match pin_program(&self.proc_root, pid, path) {
            Ok(f) => f,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let st = fstat(file.as_fd())?;
        let root_st = fstat(root.as_fd())?;
        let facts = Some(exe_file_of(&st));
        // The path the file has in the container, symlinks resolved: the
        // descriptor's own name, relative to the container's root.
        let link = link_text(file.as_fd());
        if link.as_deref().is_some_and(|l| l.starts_with("/memfd:"))
            && matches!(fstatfs_type(file.as_fd())?, TMPFS_MAGIC | HUGETLBFS_MAGIC)
        {
            return Ok(Some(Judged {
                source: ExeSource::Memfd,
                mount: None,
                file: facts,
            }));
        }
        if st.st_nlink == 0 {
            return Ok(Some(Judged {
                source: ExeSource::Deleted,
                mount: None,
                file: facts,
            }));
        }
        let real = link
            .filter(|l| l.starts_with('/') && !l.ends_with(" (deleted)"))
            .unwrap_or_else(|| path.to_string());
        let ns = self.namespace(p.mnt_ns, pid);
        if st.st_dev != root_st.st_dev {
            let source = match fstatfs_type(file.as_fd())? {
                TMPFS_MAGIC | RAMFS_MAGIC => ExeSource::Tmpfs,
                _ => ExeSource::Volume,
            };
            let mount = ns
                .mounts
                .iter()
                .filter(|m| {
                    m.mount_point
                        .to_str()
                        .is_some_and(|mp| mp != "/" && is_under(&real, mp))
                })
                .max_by_key(|m| m.mount_point.as_os_str().len())
                .and_then(|m| m.mount_point.to_str().map(str::to_string));
            return Ok(Some(Judged {
                source,
                mount,
                file: facts,
            }));
        }
        if !ns.root_overlay {
            return Ok(Some(Judged {
                source: ExeSource::Image,
                mount: None,
                file: facts,
            }));
        }
        let Some(upper) = ns.upper.clone() else {
            return Err(io::Error::other("the root overlay has no upperdir"));
        };
        let in_upper = in_layer(&upper, &real)?;
        Ok(Some(Judged {
            source: if in_upper {
                ExeSource::UpperLayer
            } else {
                ExeSource::Image
            },
            mount: None,
            file: facts,
        }))
    }

    /// `p` itself, when it still runs in its mount namespace.
    fn own_pid(&self, p: &Process) -> io::Result<u32> {
        if p.mnt_ns == 0 || mnt_ns_of(&self.proc_root, p.pid) == Some(p.mnt_ns) {
            Ok(p.pid)
        } else {
            Err(io::Error::other(
                "the process exited before its descriptor was read",
            ))
        }
    }

    /// A live process of `p`'s mount namespace: `p` itself, or another one.
    fn live_pid(&mut self, p: &Process) -> io::Result<u32> {
        let proc_root = self.proc_root.clone();
        if p.mnt_ns == 0 || mnt_ns_of(&proc_root, p.pid) == Some(p.mnt_ns) {
            return Ok(p.pid);
        }
        if self.namespaces.len() >= MAX_NAMESPACES {
            self.namespaces.clear();
        }
        let ns = self
            .namespaces
            .entry(p.mnt_ns)
            .or_insert_with(Namespace::empty);
        if let Some(pid) = ns
            .pid
            .filter(|&pid| mnt_ns_of(&proc_root, pid) == Some(p.mnt_ns))
        {
            return Ok(pid);
        }
        ns.pid = None;
        if ns.scanned_at.is_some_and(|t| t.elapsed() < RESCAN) {
            return Err(io::Error::other("no live process in the mount namespace"));
        }
        ns.scanned_at = Some(Instant::now());
        ns.pid = process_in_namespace(&proc_root, p.mnt_ns);
        ns.pid
            .ok_or_else(|| io::Error::other("no live process in the mount namespace"))
    }

    /// The mount table of namespace `mnt_ns`, read through `pid` when
    /// older than [`REFRESH`].
    fn namespace(&mut self, mnt_ns: u64, pid: u32) -> &Namespace {
        if self.namespaces.len() >= MAX_NAMESPACES {
            self.namespaces.clear();
        }
        let ns = self
            .namespaces
            .entry(mnt_ns)
            .or_insert_with(Namespace::empty);
        ns.pid = Some(pid);
        if ns.read_at.is_none_or(|t| t.elapsed() >= REFRESH) {
            ns.read_at = Some(Instant::now());
            ns.mounts = mountinfo::read(pid).unwrap_or_default();
            let root = mountinfo::root_mount(&ns.mounts);
            ns.root_overlay = root.is_some_and(|m| m.fstype == "overlay");
            ns.upper = mountinfo::root_overlay(pid, &ns.mounts)
                .ok()
                .map(|o| o.upper);
        }
        ns
    }
}

impl Namespace {
    fn empty() -> Namespace {
        Namespace {
            pid: None,
            mounts: Vec::new(),
            upper: None,
            root_overlay: false,
            read_at: None,
            scanned_at: None,
        }
    }
}

impl Enricher for ProgramFileEnricher {
    fn enrich(&mut self, event: &mut Event) {
        if event.kind != EventKind::Exec
            || event.container.is_none()
            || event.process.program_file.is_some()
        {
            return;
        }
        let Some((via, arg)) = candidate(&event.process, &self.interpreters) else {
            return;
        };
        let Some(path) = absolute(&arg, &event.process.cwd) else {
            return;
        };
        let (source, mount, file) = match self.judge(&event.process, &path) {
            Ok(Some(j)) => (Some(j.source), j.mount, j.file),
            // No such file: the interpreter was given something else (an
            // option we do not know, a missing file); nothing ran from it.
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(pid = event.process.pid, path, error = %e, "program file not judged");
                (None, None, None)
            }
        };
        event.process.program_file = Some(ProgramFile {
            via,
            path,
            source,
            mount,
            file,
            sha256: None,
            sha256_missing: None,
            change: None,
            writer: None,
        });
    }
}

/// The file `p` runs that is not its executable, and how, as given in argv.
pub fn candidate(p: &Process, interpreters: &[String]) -> Option<(ProgramVia, String)> {
    let exe = file_name(&p.exe_path);
    if exe.is_empty() {
        return None;
    }
    let args: Vec<&str> = p.args.iter().map(String::as_str).collect();
    if is_dynamic_loader(exe) {
        return loaded_program(&args).map(|f| (ProgramVia::Loader, f.to_string()));
    }
    if let Some(script) = executed_script(p, exe, &args) {
        return Some((ProgramVia::Script, script.to_string()));
    }
    let prog = program(p)?;
    if !interpreters.iter().any(|i| name_matches(i, prog)) {
        return None;
    }
    // A multi-call binary run by its own name has the applet in argv[1].
    let skip = if file_name(args.first()?) == exe && prog != exe {
        2
    } else {
        1
    };
    let shell = SHELLS.contains(&prog);
    script_argument(args.get(skip..)?, shell).map(|s| (ProgramVia::Interpreter, s.to_string()))
}

/// The script of a `#!` exec: argv is `[interpreter, (its one argument),
/// script, ...]` and comm, the executed file's basename, names the script.
fn executed_script<'a>(p: &Process, exe: &str, args: &[&'a str]) -> Option<&'a str> {
    // A script executed through its descriptor (`fexecve`): the kernel
    // names it `/dev/fd/N` in argv, and comm is then the basename of that
    // (older kernels) or of the interpreter's file (newer ones, which name
    // a descriptor exec after its dentry once the interpreter replaced
    // it), so comm cannot tell. Nothing but such an exec puts a
    // descriptor path there.
    if let Some(fd) = args
        .iter()
        .skip(1)
        .take(2)
        .find(|a| descriptor_of(a).is_some())
    {
        return Some(fd);
    }
    let comm = p.name.as_str();
    if comm.is_empty() || is_comm_of(comm, exe) || is_comm_of(comm, file_name(args.first()?)) {
        return None;
    }
    args.iter()
        .skip(1)
        .take(2)
        .find(|a| is_comm_of(comm, file_name(a)))
        .copied()
}

/// Whether `comm` is what the kernel makes of a file named `name`: its
/// first 15 bytes.
fn is_comm_of(comm: &str, name: &str) -> bool {
    const COMM_MAX: usize = 15;
    if name.len() <= COMM_MAX {
        comm == name
    } else {
        comm.len() == COMM_MAX && name.as_bytes().starts_with(comm.as_bytes())
    }
}

/// `pattern` with an optional trailing `*` against a program name.
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The script file among an interpreter's arguments (after argv\[0\]): the
/// first that is not an option. `None` when the program comes from a
/// string or stdin (`sh -c`, `python3 -c`/`-m`, `perl -e`, `node -e`, `-`).
fn script_argument<'a>(args: &[&'a str], shell: bool) -> Option<&'a str> {
    const CODE: &[&str] = &["--eval", "--print", "--command", "--version", "--help"];
    const WITH_VALUE: &[&str] = &[
        "--rcfile",
        "--init-file",
        "--require",
        "--import",
        "-o",
        "+o",
        "-O",
        "+O",
        "-W",
        "-X",
        "-r",
        "-I",
    ];
    let mut rest = args.iter();
    while let Some(a) = rest.next() {
        if *a == "--" {
            return rest.next().copied();
        }
        if *a == "-" {
            return None;
        }
        if WITH_VALUE.contains(a) {
            rest.next();
            continue;
        }
        if let Some(long) = a.strip_prefix("--") {
            if CODE
                .iter()
                .any(|c| c.trim_start_matches('-') == long.split('=').next().unwrap_or(long))
            {
                return None;
            }
            continue;
        }
        if let Some(cluster) = a.strip_prefix('-').or_else(|| a.strip_prefix('+')) {
            let code = if shell { "cs" } else { "cemp" };
            if cluster.chars().any(|c| code.contains(c)) {
                return None;
            }
            continue;
        }
        return Some(a);
    }
    None
}

/// `arg` as an absolute path, relative ones against `cwd`.
fn absolute(arg: &str, cwd: &str) -> Option<String> {
    if arg.starts_with('/') {
        return Some(arg.to_string());
    }
    if !cwd.starts_with('/') || arg.is_empty() {
        return None;
    }
    let rel = arg.strip_prefix("./").unwrap_or(arg);
    Some(format!("{}/{}", cwd.trim_end_matches('/'), rel))
}

fn cstring(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// A live process in mount namespace `mnt_ns`, found by scanning
/// `<proc>` (a few hundred `stat`s: callers remember the answer).
pub fn process_in_namespace(proc_root: &Path, mnt_ns: u64) -> Option<u32> {
    std::fs::read_dir(proc_root)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .find(|&pid| mnt_ns_of(proc_root, pid) == Some(mnt_ns))
}

/// `path` (inside the container whose root is `<proc>/<pid>/root`) opened
/// for reading, resolved as the container would, never blocking on a FIFO.
pub fn open_for_reading(proc_root: &Path, pid: u32, path: &str) -> io::Result<OwnedFd> {
    let root = open_path(&proc_root.join(format!("{pid}/root")))?;
    let rel = path.trim_start_matches('/');
    let c = cstring(if rel.is_empty() { "." } else { rel }.as_bytes())?;
    // SAFETY: open_how is plain integers; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid dirfd, NUL-terminated path, a correctly sized open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The descriptor number of a path that names one of the process's own
/// descriptors: `/dev/fd/N`, `/proc/self/fd/N`, `/proc/thread-self/fd/N`,
/// as `fexecve` (execveat with `AT_EMPTY_PATH`) hands a script to its
/// interpreter.
pub fn descriptor_of(path: &str) -> Option<u32> {
    ["/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/"]
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
}

/// An `O_PATH` descriptor of the program file `path` of process `pid`: a
/// descriptor path through `<proc>/<pid>/fd/N` (the file the process holds,
/// a memfd or a deleted file too), any other path resolved in the
/// container's root as the process would. Opens nothing for reading and
/// never blocks; [`nofollow::reopen_regular`] reads it.
pub fn pin_program(proc_root: &Path, pid: u32, path: &str) -> io::Result<OwnedFd> {
    if let Some(n) = descriptor_of(path) {
        // The magic link is the point: it is the very file, wherever it is.
        return nofollow::open_host(
            &proc_root.join(format!("{pid}/fd/{n}")),
            libc::O_PATH | libc::O_CLOEXEC,
        );
    }
    let root = open_path(&proc_root.join(format!("{pid}/root")))?;
    open_in_root(root.as_fd(), path)
}

/// The inode facts of `st`, as the kernel reports an executable's.
pub fn exe_file_of(st: &libc::stat) -> ExeFile {
    let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
    ExeFile {
        dev: st.st_dev,
        ino: st.st_ino,
        size: st.st_size.max(0) as u64,
        mtime_ns: ns(st.st_mtime, st.st_mtime_nsec),
        ctime_ns: ns(st.st_ctime, st.st_ctime_nsec),
        nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
    }
}

/// The inode of `<proc>/<pid>/ns/mnt`, the mount namespace's number.
pub fn mnt_ns_of(proc_root: &Path, pid: u32) -> Option<u64> {
    std::fs::metadata(proc_root.join(format!("{pid}/ns/mnt")))
        .ok()
        .map(|m| m.ino())
}

/// An `O_PATH` descriptor of a directory (the magic `/proc/<pid>/root` link
/// is followed: it is the point).
fn open_path(p: &Path) -> io::Result<OwnedFd> {
    nofollow::open_host(p, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
}

/// `openat2` with `O_PATH` (never blocks on a FIFO, reads nothing) and
/// `how.resolve` flags.
fn openat2_path(dir: BorrowedFd<'_>, rel: &str, resolve: u64) -> io::Result<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    let c = cstring(rel.as_bytes())?;
    nofollow::openat2(dir, &c, libc::O_PATH | libc::O_CLOEXEC, resolve)
}

/// `path` opened inside the container's root `root`, as the process would
/// resolve it: symlinks (absolute ones too) stay inside that root.
fn open_in_root(root: BorrowedFd<'_>, path: &str) -> io::Result<OwnedFd> {
    openat2_path(
        root,
        path.trim_start_matches('/'),
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// Whether `path` (inside the container) has an entry in the layer
/// directory `layer` that is not a whiteout. No symlink is followed below
/// the layer, whose contents the container controls.
fn in_layer(layer: &Path, path: &str) -> io::Result<bool> {
    let dir = open_path(layer)?;
    match openat2_path(
        dir.as_fd(),
        path.trim_start_matches('/'),
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    ) {
        Ok(f) => {
            let st = fstat(f.as_fd())?;
            // A character device 0/0 is a whiteout: deleted in the container.
            let whiteout = st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0;
            Ok(!whiteout)
        }
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: a valid fd; st is written on success.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded.
    Ok(unsafe { st.assume_init() })
}

fn fstatfs_type(fd: BorrowedFd<'_>) -> io::Result<i64> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: a valid fd; st is written on success.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // `f_type` is a C long on x86-64 but another width elsewhere.
    #[allow(clippy::unnecessary_cast)]
    // SAFETY: fstatfs succeeded.
    let f_type = unsafe { st.assume_init() }.f_type as i64;
    Ok(f_type)
}

/// The name of an open file as the kernel gives it (`/proc/self/fd/N`):
/// for a file in another mount namespace, relative to that namespace's
/// root; `/memfd:NAME (deleted)` for a memfd.
fn link_text(fd: BorrowedFd<'_>) -> Option<String> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    link.to_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(comm: &str, exe: &str, args: &[&str]) -> Process {
        Process {
            name: comm.into(),
            exe_path: exe.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            cwd: "/work".into(),
            ..Process::default()
        }
    }

    fn cand(p: &Process) -> Option<(ProgramVia, String)> {
        let list: Vec<String> = INTERPRETERS.iter().map(|s| s.to_string()).collect();
        candidate(p, &list)
    }

    #[test]
    fn a_script_executed_directly_is_named_by_comm() {
        // `./x.sh a` with `#!/bin/sh`: the kernel's argv.
        let p = proc("x.sh", "/bin/busybox", &["/bin/sh", "./x.sh", "a"]);
        assert_eq!(cand(&p), Some((ProgramVia::Script, "./x.sh".into())));
        // `#!/usr/bin/env -S python3`: one interpreter argument first.
        let p = proc(
            "run",
            "/usr/bin/env",
            &["/usr/bin/env", "-S python3", "/tmp/run"],
        );
        assert_eq!(cand(&p), Some((ProgramVia::Script, "/tmp/run".into())));
        // Run through its descriptor (`fexecve`): comm is the
        // interpreter's (Linux 6.18) or the descriptor's number (older).
        for comm in ["busybox", "3"] {
            let p = proc(comm, "/bin/busybox", &["/bin/sh", "/dev/fd/3", "a"]);
            assert_eq!(cand(&p), Some((ProgramVia::Script, "/dev/fd/3".into())));
        }
        // A long script name is cut to 15 bytes in comm.
        let p = proc(
            "a-very-long-scr",
            "/bin/busybox",
            &["/bin/sh", "/tmp/a-very-long-script.sh"],
        );
        assert_eq!(
            cand(&p),
            Some((ProgramVia::Script, "/tmp/a-very-long-script.sh".into()))
        );
    }

    #[test]
    fn an_interpreter_given_a_script_is_another_case() {
        let p = proc("sh", "/bin/busybox", &["sh", "/tmp/x.sh"]);
        assert_eq!(
            cand(&p),
            Some((ProgramVia::Interpreter, "/tmp/x.sh".into()))
        );
        let p = proc("sh", "/bin/busybox", &["sh", "-e", "x.sh"]);
        assert_eq!(cand(&p), Some((ProgramVia::Interpreter, "x.sh".into())));
        let p = proc("busybox", "/bin/busybox", &["busybox", "sh", "/tmp/x.sh"]);
        assert_eq!(
            cand(&p),
            Some((ProgramVia::Interpreter, "/tmp/x.sh".into()))
        );
        let p = proc(
            "python3",
            "/usr/bin/python3.12",
            &["python3", "-u", "/app/x.py"],
        );
        assert_eq!(
            cand(&p),
            Some((ProgramVia::Interpreter, "/app/x.py".into()))
        );
        // Code from a string or stdin: no file.
        for args in [
            &["sh", "-c", "echo /tmp/x"][..],
            &["sh", "-ec", "echo"],
            &["sh", "-s", "/tmp/x"],
            &["sh"],
            &["sh", "-"],
        ] {
            assert_eq!(cand(&proc("sh", "/bin/busybox", args)), None, "{args:?}");
        }
        for args in [
            &["python3", "-c", "x"][..],
            &["python3", "-m", "http.server"],
        ] {
            assert_eq!(cand(&proc("python3", "/usr/bin/python3", args)), None);
        }
        // Not an interpreter of the list.
        assert_eq!(cand(&proc("cat", "/bin/cat", &["cat", "/tmp/x"])), None);
    }

    #[test]
    fn the_loader_names_its_file() {
        let p = proc(
            "ld-linux-x86-64",
            "/lib64/ld-linux-x86-64.so.2",
            &[
                "/lib64/ld-linux-x86-64.so.2",
                "--library-path",
                "/x",
                "/tmp/x",
                "-v",
            ],
        );
        assert_eq!(cand(&p), Some((ProgramVia::Loader, "/tmp/x".into())));
        // `ld.so --list` alone runs nothing.
        let p = proc("ld.so", "/lib/ld.so", &["ld.so", "--version"]);
        assert_eq!(cand(&p), None);
    }

    #[test]
    fn ordinary_execs_run_their_executable() {
        assert_eq!(cand(&proc("id", "/usr/bin/id", &["id", "-u"])), None);
        // A shell named for what it is, with a script name that happens to
        // equal the shell's: ambiguous, so not a script.
        assert_eq!(
            cand(&proc("sh", "/bin/busybox", &["/bin/sh", "-c", "x"])),
            None
        );
        // A symlinked shell: comm names the link, argv[0] too.
        assert_eq!(cand(&proc("x", "/bin/bash", &["/tmp/x", "-i"])), None);
    }

    #[test]
    fn descriptor_paths_name_the_process_s_own_descriptor() {
        assert_eq!(descriptor_of("/dev/fd/3"), Some(3));
        assert_eq!(descriptor_of("/proc/self/fd/12"), Some(12));
        assert_eq!(descriptor_of("/proc/thread-self/fd/0"), Some(0));
        for not in [
            "/dev/fd/",
            "/dev/fd/3/x",
            "/dev/fd/a",
            "/tmp/dev/fd/3",
            "/proc/1/fd/3",
        ] {
            assert_eq!(descriptor_of(not), None, "{not}");
        }
    }

    /// A script handed over as `/dev/fd/N` is judged by the descriptor the
    /// process holds: a memfd is fileless, a deleted file is deleted, and
    /// either way the file's inode facts come along.
    #[test]
    fn a_descriptor_is_judged_by_the_file_it_holds() {
        use std::io::Write;
        let me = Process {
            pid: std::process::id(),
            ..Process::default()
        };
        let mut e = ProgramFileEnricher::new(Vec::new());
        // SAFETY: a valid NUL-terminated name; the fd is owned below.
        let memfd = unsafe { libc::memfd_create(c"payload".as_ptr(), 0) };
        assert!(memfd >= 0, "memfd_create: {}", io::Error::last_os_error());
        // SAFETY: a fresh descriptor we own.
        let memfd = unsafe { OwnedFd::from_raw_fd(memfd) };
        let j = e
            .judge(&me, &format!("/dev/fd/{}", memfd.as_raw_fd()))
            .expect("judged")
            .expect("present");
        assert_eq!(j.source, ExeSource::Memfd);
        assert!(j.file.is_some_and(|f| f.ino > 0 && f.nlink == 0), "{j:?}");

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gone.sh");
        let mut file = std::fs::File::create(&path).expect("create");
        file.write_all(b"#!/bin/sh\n").expect("write");
        std::fs::remove_file(&path).expect("rm");
        let j = e
            .judge(&me, &format!("/proc/self/fd/{}", file.as_raw_fd()))
            .expect("judged")
            .expect("present");
        assert_eq!(j.source, ExeSource::Deleted);
        assert_eq!(j.file.map(|f| f.size), Some(10));
        // A descriptor the process does not hold: no such file.
        assert!(e.judge(&me, "/dev/fd/99999").expect("judged").is_none());
    }

    #[test]
    fn relative_paths_resolve_against_the_cwd() {
        assert_eq!(absolute("./x.sh", "/tmp").as_deref(), Some("/tmp/x.sh"));
        assert_eq!(absolute("x.sh", "/").as_deref(), Some("/x.sh"));
        assert_eq!(absolute("/a", "").as_deref(), Some("/a"));
        assert_eq!(absolute("a", ""), None);
    }
}
