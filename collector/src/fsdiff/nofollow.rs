//! Filesystem access inside a layer directory that never follows a symlink.
//!
//! A container's layers are written by whoever runs in the container: a
//! symlink `etc -> /` in an upper layer must not lead the diff to the host's
//! `/etc`. So every path below a layer root is opened with `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV`) relative to the root's descriptor, and every leaf is
//! examined with `fstatat(AT_SYMLINK_NOFOLLOW)` / `openat(O_NOFOLLOW)`
//! relative to its parent's descriptor. Only the layer roots themselves
//! (paths the kernel gave in the overlay's mount options) are opened
//! normally.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The inode facts the diff compares. Times are nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Full `st_mode`: type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub rdev: u64,
}

impl Meta {
    pub fn file_type_bits(&self) -> u32 {
        self.mode & libc::S_IFMT
    }
    pub fn is_dir(&self) -> bool {
        self.file_type_bits() == libc::S_IFDIR
    }
    pub fn is_regular(&self) -> bool {
        self.file_type_bits() == libc::S_IFREG
    }
    pub fn is_symlink(&self) -> bool {
        self.file_type_bits() == libc::S_IFLNK
    }
    /// Permission bits including setuid/setgid/sticky.
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
    /// overlayfs's classic whiteout: a character device with number 0/0.
    pub fn is_chardev_whiteout(&self) -> bool {
        self.file_type_bits() == libc::S_IFCHR && self.rdev == 0
    }

    fn from_stat(st: &libc::stat) -> Meta {
        Meta {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size.max(0) as u64,
            mtime_ns: st
                .st_mtime
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec),
            rdev: st.st_rdev,
        }
    }
}

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens a layer root (a trusted host path from the mount options).
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    open_host(path, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)
}

/// `open(2)` of a host path the daemon trusts (a layer root, the magic
/// `/proc/<pid>/root` link, which is followed on purpose).
pub fn open_host(path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: c is a valid NUL-terminated string; the returned fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2(2)` of `path` below `dir` with `flags` and `how.resolve`
/// flags: the one raw call every contained open goes through.
pub fn openat2(dir: BorrowedFd<'_>, path: &CStr, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain integers; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = resolve;
    // SAFETY: valid dirfd, NUL-terminated path, and a correctly sized open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// How many bytes of path one `openat2` is given. The kernel refuses paths
/// of PATH_MAX (4096) bytes or more, but a container can nest directories
/// far deeper than that; longer paths are opened a stretch at a time, each
/// beneath the directory the previous stretch reached.
const OPEN_STRETCH: usize = 2048;

/// Opens the directory `rel` below `root` for reading, refusing symlinks in
/// any component and any escape from `root`. `Ok(None)` when it does not
/// exist or is not a directory. `rel` may be longer than PATH_MAX.
pub fn open_dir_beneath(root: BorrowedFd<'_>, rel: &Path) -> io::Result<Option<OwnedFd>> {
    let bytes = rel.as_os_str().as_bytes();
    if bytes.len() < OPEN_STRETCH {
        return open_dir_stretch(root, rel);
    }
    let mut held: Option<OwnedFd> = None;
    let mut stretch = PathBuf::new();
    let mut stretch_len = 0;
    let components: Vec<&OsStr> = rel.iter().collect();
    for (i, c) in components.iter().enumerate() {
        stretch.push(c);
        stretch_len += c.len() + 1;
        let last = i + 1 == components.len();
        let next_len = components.get(i + 1).map_or(0, |n| n.len() + 1);
        if !last && stretch_len + next_len < OPEN_STRETCH {
            continue;
        }
        let base = held.as_ref().map_or(root, |fd| fd.as_fd());
        match open_dir_stretch(base, &stretch)? {
            Some(fd) => held = Some(fd),
            None => return Ok(None),
        }
        stretch.clear();
        stretch_len = 0;
    }
    Ok(held)
}

fn open_dir_stretch(root: BorrowedFd<'_>, rel: &Path) -> io::Result<Option<OwnedFd>> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let c = cstr(rel.as_os_str().as_bytes())?;
    match openat2(
        root,
        &c,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        libc::RESOLVE_BENEATH
            | libc::RESOLVE_NO_SYMLINKS
            | libc::RESOLVE_NO_MAGICLINKS
            | libc::RESOLVE_NO_XDEV,
    ) {
        Ok(fd) => Ok(Some(fd)),
        // ELOOP: a symlink where a directory was expected; the merged
        // view has no directory there either.
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// `lstat` of `name` in `dir`. `Ok(None)` when it does not exist.
pub fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Meta>> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid dirfd and name; st is written by the kernel on success.
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => Ok(None),
            _ => Err(e),
        };
    }
    // SAFETY: fstatat succeeded, so st is initialized.
    let st = unsafe { st.assume_init() };
    Ok(Some(Meta::from_stat(&st)))
}

/// The target of the symlink `name` in `dir`.
pub fn read_link_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: buf is valid for its length.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// The value of extended attribute `attr` on an open file, `None` when it
/// is not set (or the filesystem has no xattrs).
pub fn get_xattr(fd: BorrowedFd<'_>, attr: &CStr) -> io::Result<Option<Vec<u8>>> {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for its length.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            attr.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
            // Longer than any overlay marker: present, value irrelevant.
            Some(libc::ERANGE) => Ok(Some(Vec::new())),
            _ => Err(e),
        };
    }
    Ok(Some(buf[..n as usize].to_vec()))
}

/// Whether any of the overlay xattr `suffix` (`opaque`, `metacopy`, ...) is
/// set in the `trusted.` or `user.` namespace (the latter for unprivileged
/// `userxattr` mounts). Returns the value found.
pub fn overlay_xattr(fd: BorrowedFd<'_>, suffix: &str) -> io::Result<Option<Vec<u8>>> {
    for ns in ["trusted.overlay.", "user.overlay."] {
        let name = cstr(format!("{ns}{suffix}").as_bytes())?;
        if let Some(v) = get_xattr(fd, &name)? {
            return Ok(Some(v));
        }
    }
    Ok(None)
}

/// Opens regular file `name` in `dir` for reading, without following a
/// symlink and without ever opening anything else in its place.
///
/// A container can swap the entry between the caller's `lstat` and this
/// open: a FIFO would block the daemon, and a device node (with CAP_MKNOD)
/// would have the root daemon open a host device, whose open alone can act
/// (a tape rewinds, a modem hangs up). So the name is first pinned with
/// `O_PATH`, which opens no file and runs no driver code, the pinned inode
/// is checked to be a regular file, and only that inode is then opened for
/// reading, through `/proc/self/fd`. Whatever the name points to by then
/// does not matter.
pub fn open_file_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: valid dirfd and name.
    let pinned = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if pinned < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor we own.
    let pinned = unsafe { OwnedFd::from_raw_fd(pinned) };
    reopen_regular(&pinned)
}

/// Opens for reading the inode an `O_PATH` descriptor pins, only when it is
/// a regular file (see [`open_file_at`] for why never anything else).
pub fn reopen_regular(pinned: &OwnedFd) -> io::Result<OwnedFd> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid fd (fstat works on O_PATH descriptors); st is written on
    // success.
    if unsafe { libc::fstat(pinned.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded.
    let mode = unsafe { st.assume_init() }.st_mode;
    if mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (replaced since it was listed?)",
        ));
    }
    let proc_path = cstr(format!("/proc/self/fd/{}", pinned.as_raw_fd()).as_bytes())?;
    // O_NONBLOCK stays as a second line of defence; on a regular file it
    // changes nothing.
    let base = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
    // O_NOATIME keeps the evidence's access times as they were; it needs
    // ownership or CAP_FOWNER, so fall back without it.
    for flags in [base | libc::O_NOATIME, base] {
        // SAFETY: valid NUL-terminated path.
        let fd = unsafe { libc::open(proc_path.as_ptr(), flags) };
        if fd >= 0 {
            // SAFETY: fd is a fresh descriptor we own.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(e);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EPERM))
}

/// What hashing a regular file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub sha256: String,
    /// The first bytes are the ELF magic.
    pub elf: bool,
    /// Bytes read (the size at read time, which may differ from the lstat).
    pub len: u64,
}

/// Streams an open regular file through sha256 with a caller-owned buffer,
/// so memory stays constant whatever the file size.
pub fn hash_fd(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Content> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid fd; st is written on success.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded.
    let st = unsafe { st.assume_init() };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "replaced by a non-regular file while scanning",
        ));
    }
    let mut h = Sha256::new();
    let mut len = 0u64;
    let mut head = [0u8; 4];
    let mut head_len = 0usize;
    loop {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        let chunk = &buf[..n as usize];
        if head_len < 4 {
            let take = (4 - head_len).min(chunk.len());
            head[head_len..head_len + take].copy_from_slice(&chunk[..take]);
            head_len += take;
        }
        h.update(chunk);
        len += n as u64;
    }
    Ok(Content {
        sha256: hex::encode(h.finalize()),
        elf: head_len == 4 && head == *b"\x7fELF",
        len,
    })
}

/// One directory's entries, read through its descriptor. The stream owns a
/// duplicate of the descriptor, so the caller keeps its own for `*at` calls.
pub fn read_dir_names(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let dup = dir.try_clone_to_owned()?;
    // Rewind: the duplicate shares the file offset with `dir`.
    // SAFETY: valid fd.
    if unsafe { libc::lseek(dup.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let raw = std::os::fd::IntoRawFd::into_raw_fd(dup);
    // SAFETY: raw is an open directory descriptor; fdopendir takes ownership.
    let dirp = unsafe { libc::fdopendir(raw) };
    if dirp.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so we still own raw.
        unsafe { libc::close(raw) };
        return Err(e);
    }
    let mut names = Vec::new();
    let result = loop {
        // readdir reports errors only through errno.
        // SAFETY: __errno_location is always valid for the calling thread.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: dirp is a valid stream until closedir below.
        let ent = unsafe { libc::readdir64(dirp) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            break if e.raw_os_error().unwrap_or(0) == 0 {
                Ok(())
            } else {
                Err(e)
            };
        }
        // SAFETY: d_name is NUL-terminated within the entry.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        let b = name.to_bytes();
        if b == b"." || b == b".." {
            continue;
        }
        names.push(name.to_owned());
    };
    // SAFETY: dirp came from fdopendir and is closed once.
    unsafe { libc::closedir(dirp) };
    result.map(|()| names)
}

/// A path component as an `OsStr`.
pub fn os(name: &CStr) -> &OsStr {
    OsStr::from_bytes(name.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn name(s: &str) -> CString {
        CString::new(s).expect("no NUL")
    }

    #[test]
    fn only_regular_files_are_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("file"), b"content").expect("write");
        std::os::unix::fs::symlink("file", dir.path().join("link")).expect("symlink");
        let fifo = cstr(dir.path().join("fifo").as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let root = open_root(dir.path()).expect("open dir");

        let fd = open_file_at(root.as_fd(), &name("file")).expect("regular file");
        let mut buf = [0u8; 64];
        assert_eq!(hash_fd(&fd, &mut buf).expect("hash").len, 7);
        // A FIFO would block a plain open for reading; a symlink is not followed.
        for other in ["fifo", "link"] {
            let e = open_file_at(root.as_fd(), &name(other)).expect_err(other);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{other}: {e}");
        }
        assert!(open_file_at(root.as_fd(), &name("missing")).is_err());
    }

    #[test]
    fn a_device_node_is_refused_before_it_is_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = cstr(dir.path().join("tty").as_os_str().as_encoded_bytes()).expect("path");
        // /dev/tty's numbers (5, 0): opening it for real would be a side effect.
        // SAFETY: valid path.
        let rc = unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(5, 0)) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            assert!(
                std::env::var_os("CI").is_none(),
                "mknod needs root (CAP_MKNOD) and CI runs as root: {e}"
            );
            eprintln!("skipped outside CI: mknod: {e}");
            return;
        }
        let root = open_root(dir.path()).expect("open dir");
        let e = open_file_at(root.as_fd(), &name("tty")).expect_err("a device");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }
}
