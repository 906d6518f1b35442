//! `/proc/<pid>/mountinfo`: where a container's root overlay keeps its
//! layers, and which paths the runtime mounted over inside the container.
//!
//! Format (proc(5)): `id parent major:minor root mountpoint options
//! [optional fields...] - fstype source superoptions`. Paths are escaped
//! with octal sequences (`\040` for a space, `\011` tab, `\012` newline,
//! `\134` backslash) and the overlay's own options escape `,` the same way,
//! so splitting the super options on a raw `,` is safe.
//!
//! Overlay layers appear either as one legacy `lowerdir=a:b::c` option
//! (top-most first; `\:` is a literal colon; after a `::` come data-only
//! layers that are not part of the merged namespace) or, for mounts made
//! through the new mount API, as repeated `lowerdir+=` and `datadir+=`
//! options.

use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MountinfoError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: malformed mountinfo entry")]
    Malformed { path: PathBuf, line: usize },
    #[error(
        "the root of pid {pid} is a {fstype} mount, not overlay: driftwatch diff needs a container whose root filesystem is overlayfs"
    )]
    NotOverlay { pid: u32, fstype: String },
    #[error("pid {pid} has no root mount in its mountinfo")]
    NoRoot { pid: u32 },
    #[error("the root overlay of pid {pid} has no {what}")]
    MissingLayer { pid: u32, what: &'static str },
    #[error(
        "the root overlay of pid {pid} names {which} with a relative path ({path}) and no absolute upperdir to resolve it against"
    )]
    Relative {
        pid: u32,
        which: &'static str,
        path: String,
    },
}

/// One line of mountinfo, the fields the diff needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub super_options: String,
}

/// The layers of a container's root overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// The writable layer.
    pub upper: PathBuf,
    /// The image layers that make up the merged view, top-most first.
    pub lowers: Vec<PathBuf>,
    /// Data-only layers (`::` / `datadir+=`): hold file data for metacopy
    /// redirects, never visible by path.
    pub data_only: Vec<PathBuf>,
    /// `metacopy=on`: copy-ups may copy metadata only.
    pub metacopy: bool,
}

/// Undoes the kernel's octal escaping (`\040` → space). Paths are bytes,
/// not necessarily UTF-8.
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn path_of(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

/// Parses a whole mountinfo text.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Mount>, MountinfoError> {
    let mut mounts = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let malformed = || MountinfoError::Malformed {
            path: path.to_path_buf(),
            line: n + 1,
        };
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields
            .iter()
            .position(|f| *f == "-")
            .ok_or_else(malformed)?;
        if sep < 6 || fields.len() < sep + 3 {
            return Err(malformed());
        }
        mounts.push(Mount {
            mount_point: path_of(unescape(fields[4])),
            fstype: fields[sep + 1].to_string(),
            super_options: fields[sep + 3..].join(" "),
        });
    }
    Ok(mounts)
}

/// Reads and parses `/proc/<pid>/mountinfo`.
pub fn read(pid: u32) -> Result<Vec<Mount>, MountinfoError> {
    let path = PathBuf::from(format!("/proc/{pid}/mountinfo"));
    let text = std::fs::read_to_string(&path).map_err(|source| MountinfoError::Read {
        path: path.clone(),
        source,
    })?;
    parse(&text, &path)
}

/// The mount that is `/` for the process: the last one listed with that
/// mount point (a later mount stacks over an earlier one).
pub fn root_mount(mounts: &[Mount]) -> Option<&Mount> {
    mounts
        .iter()
        .rev()
        .find(|m| m.mount_point == Path::new("/"))
}

/// Splits an unescaped legacy `lowerdir=` value into (merged layers,
/// data-only layers).
fn split_lowerdir(value: &[u8]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut lower = Vec::new();
    let mut data = Vec::new();
    let mut cur = Vec::new();
    let mut data_section = false;
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            // `\:` and `\\` are literal characters in overlay paths.
            b'\\' if i + 1 < value.len() => {
                cur.push(value[i + 1]);
                i += 2;
                continue;
            }
            b':' => {
                let done = std::mem::take(&mut cur);
                if data_section {
                    data.push(done)
                } else {
                    lower.push(done)
                }
                if value.get(i + 1) == Some(&b':') {
                    i += 1;
                    data_section = true;
                }
            }
            c => cur.push(c),
        }
        i += 1;
    }
    if data_section {
        data.push(cur)
    } else {
        lower.push(cur)
    }
    lower.retain(|s| !s.is_empty());
    data.retain(|s| !s.is_empty());
    (lower, data)
}

/// The layers of the overlay mounted at `/` in `mounts`.
pub fn root_overlay(pid: u32, mounts: &[Mount]) -> Result<Overlay, MountinfoError> {
    let root = root_mount(mounts).ok_or(MountinfoError::NoRoot { pid })?;
    if root.fstype != "overlay" {
        return Err(MountinfoError::NotOverlay {
            pid,
            fstype: root.fstype.clone(),
        });
    }
    overlay_from_options(pid, &root.super_options)
}

/// Parses overlay super options into layers.
pub fn overlay_from_options(pid: u32, options: &str) -> Result<Overlay, MountinfoError> {
    let mut upper = None;
    let mut lowers = Vec::new();
    let mut data_only = Vec::new();
    let mut metacopy = false;
    for opt in options.split(',') {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(unescape(v))),
            None => (opt, None),
        };
        match (key, value) {
            ("upperdir", Some(v)) => upper = Some(v),
            ("lowerdir", Some(v)) => {
                let (l, d) = split_lowerdir(&v);
                lowers.extend(l);
                data_only.extend(d);
            }
            // The new mount API's one-layer-per-option forms: the value is
            // a plain path, no `:` splitting.
            ("lowerdir+", Some(v)) => lowers.push(v),
            ("datadir+", Some(v)) => data_only.push(v),
            ("metacopy", Some(v)) => metacopy = v == b"on",
            _ => {}
        }
    }
    let upper = upper.ok_or(MountinfoError::MissingLayer {
        pid,
        what: "upperdir (a read-only overlay has no container layer to diff)",
    })?;
    if lowers.is_empty() {
        return Err(MountinfoError::MissingLayer {
            pid,
            what: "lowerdir",
        });
    }
    let upper = path_of(upper);
    // containers/storage mounts with relative layer paths (after a chdir to
    // its overlay directory) when the options would not fit in a page; that
    // directory is the one holding the upper layer's `<id>/diff`.
    let base = if upper.is_absolute() {
        upper.parent().and_then(Path::parent).map(Path::to_path_buf)
    } else {
        None
    };
    let absolute = |which: &'static str, p: Vec<u8>| -> Result<PathBuf, MountinfoError> {
        let pb = path_of(p);
        if pb.is_absolute() {
            return Ok(pb);
        }
        match &base {
            Some(b) => Ok(b.join(pb)),
            None => Err(MountinfoError::Relative {
                pid,
                which,
                path: pb.display().to_string(),
            }),
        }
    };
    if !upper.is_absolute() {
        return Err(MountinfoError::Relative {
            pid,
            which: "upperdir",
            path: upper.display().to_string(),
        });
    }
    Ok(Overlay {
        lowers: lowers
            .into_iter()
            .map(|p| absolute("lowerdir", p))
            .collect::<Result<_, _>>()?,
        data_only: data_only
            .into_iter()
            .map(|p| absolute("datadir", p))
            .collect::<Result<_, _>>()?,
        upper,
        metacopy,
    })
}

/// Mount points inside the container other than its root: the runtime's
/// bind mounts (`/etc/hosts`, volumes, ...) whose targets it had to create
/// in the upper layer.
pub fn inner_mount_points(mounts: &[Mount]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mounts
        .iter()
        .map(|m| m.mount_point.clone())
        .filter(|p| p != Path::new("/"))
        .collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODMAN: &str = "77 50 0:40 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/containers/storage/overlay/l/IMFEESNRGPMGVTFJNYXXOP36AH,upperdir=/var/lib/containers/storage/overlay/d52c/diff,workdir=/var/lib/containers/storage/overlay/d52c/work,uuid=on
78 77 0:43 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
84 77 254:0 /run/containers/storage/overlay-containers/c8/userdata/hosts /etc/hosts rw,relatime - ext4 /dev/vda rw,discard
86 77 254:0 /run/x/.containerenv /run/.containerenv rw,relatime shared:5 master:1 - ext4 /dev/vda rw
";

    #[test]
    fn podman_root_overlay() {
        let m = parse(PODMAN, Path::new("t")).unwrap();
        let o = root_overlay(1, &m).unwrap();
        assert_eq!(
            o.upper,
            Path::new("/var/lib/containers/storage/overlay/d52c/diff")
        );
        assert_eq!(
            o.lowers,
            vec![PathBuf::from(
                "/var/lib/containers/storage/overlay/l/IMFEESNRGPMGVTFJNYXXOP36AH"
            )]
        );
        assert!(o.data_only.is_empty());
        assert_eq!(
            inner_mount_points(&m),
            ["/etc/hosts", "/proc", "/run/.containerenv"]
                .map(PathBuf::from)
                .to_vec()
        );
    }

    #[test]
    fn escapes_legacy_lists_and_data_only_layers() {
        let o = overlay_from_options(
            1,
            "rw,lowerdir=/a\\040b:/c\\134:d::/data1::/data2,upperdir=/s/u\\054x/diff,workdir=/w,metacopy=on",
        )
        .unwrap();
        assert_eq!(o.upper, Path::new("/s/u,x/diff"));
        assert_eq!(o.lowers, vec![PathBuf::from("/a b"), PathBuf::from("/c:d")]);
        assert_eq!(
            o.data_only,
            vec![PathBuf::from("/data1"), PathBuf::from("/data2")]
        );
        assert!(o.metacopy);
        assert_eq!(unescape("/x\\011y\\012z"), b"/x\ty\nz");
    }

    #[test]
    fn new_api_options_and_relative_paths() {
        let o = overlay_from_options(
            1,
            "rw,lowerdir+=/l1,lowerdir+=l/ABC,datadir+=/d1,upperdir=/st/overlay/id/diff,workdir=/w",
        )
        .unwrap();
        assert_eq!(
            o.lowers,
            vec![PathBuf::from("/l1"), PathBuf::from("/st/overlay/l/ABC")]
        );
        assert_eq!(o.data_only, vec![PathBuf::from("/d1")]);
        assert!(matches!(
            overlay_from_options(1, "lowerdir=/a,upperdir=rel/diff"),
            Err(MountinfoError::Relative { .. })
        ));
        assert!(matches!(
            overlay_from_options(1, "lowerdir=/a"),
            Err(MountinfoError::MissingLayer { .. })
        ));
    }

    #[test]
    fn non_overlay_root_and_garbage() {
        let m = parse("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n", Path::new("t")).unwrap();
        assert!(matches!(
            root_overlay(7, &m),
            Err(MountinfoError::NotOverlay { pid: 7, .. })
        ));
        assert!(matches!(
            parse("1 0 8:1 / /\n", Path::new("t")),
            Err(MountinfoError::Malformed { line: 1, .. })
        ));
    }
}
