//! Image-based drift: what a running container's filesystem has that its
//! image did not, read straight from the container's overlay layers.
//!
//! The container root is an overlayfs mount. Its upper (writable) layer
//! holds exactly what changed since the container started: new files,
//! copied-up files, whiteouts for deletions, opaque directories for
//! directories removed and re-created. [`walk`] goes through the upper layer
//! only and looks each entry up in the image layers (the overlay's lower
//! layers, top-most first), the way overlayfs itself resolves a path. The
//! cost is therefore proportional to the change, not to the image.
//!
//! Pieces: [`resolve`] turns a name, id or pid into a running container,
//! [`mountinfo`] finds its layers, [`walk`] compares them through
//! [`nofollow`] (no symlink is ever followed), [`runtime_files`] marks what
//! the container runtime itself wrote, and [`report`] prints the result.
//! See docs/diff.md for the semantics.

pub mod mountinfo;
pub mod nofollow;
pub mod report;
pub mod resolve;
pub mod runtime_files;
pub mod walk;

use std::path::PathBuf;

use driftwatch_sdk::FileType;
use serde::{Deserialize, Serialize};

pub use resolve::{Container, Resolver};

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(transparent)]
    Resolve(#[from] resolve::ResolveError),
    #[error("container {id}: {source}")]
    Mountinfo {
        id: String,
        source: mountinfo::MountinfoError,
    },
    #[error("container {id}: opening layer {path}: {source}")]
    Layer {
        id: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("container {id}: starting a diff worker thread: {source}")]
    Thread { id: String, source: std::io::Error },
}

/// How a path differs from the image: the schema's own type, so the scan's
/// events and `diff`'s report cannot disagree on the names.
pub use driftwatch_sdk::FileChange as Change;

/// The image's version of a path (for `modified` and `metadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFile {
    pub file_type: FileType,
    pub size: u64,
    /// Permission bits as octal text, e.g. `"0755"`.
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

/// One difference. For `removed` the file facts are the image's (the file
/// no longer exists in the container); otherwise they are the container's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Absolute path inside the container. Bytes that are not UTF-8 are
    /// written `\xNN`.
    pub path: String,
    pub change: Change,
    pub file_type: FileType,
    pub size: u64,
    /// Permission bits (with setuid/setgid/sticky) as octal text, `"0755"`.
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    /// Regular files: sha256 of the content, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Regular files: some execute bit is set.
    pub executable: bool,
    /// Regular files: the content starts with the ELF magic.
    pub elf: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    /// What the image had at this path, for `modified` and `metadata`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageFile>,
    /// Written by the container runtime when it set the container up (see
    /// [`runtime_files`]); hidden unless asked for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub runtime_created: bool,
}

impl Entry {
    /// A regular file that can be run: an execute bit or an ELF header.
    pub fn is_executable(&self) -> bool {
        self.file_type == FileType::Regular && (self.executable || self.elf)
    }
}

/// Octal text of permission bits.
pub fn mode_text(perm: u32) -> String {
    format!("{:04o}", perm & 0o7777)
}

/// Path bytes as text, with invalid UTF-8 bytes written `\xNN`.
pub fn path_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Knobs of one diff.
#[derive(Debug, Clone)]
pub struct Options {
    /// Worker threads walking and hashing; at least 1.
    pub jobs: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jobs: std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(2),
        }
    }
}

/// A finished diff of one container.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub container: Container,
    /// The overlay's layer directories on the host.
    pub upper_dir: PathBuf,
    pub lower_dirs: Vec<PathBuf>,
    /// Every difference, runtime-created ones included, sorted by path.
    pub entries: Vec<Entry>,
    /// Paths that could not be examined (vanished mid-walk, unreadable),
    /// with the reason. The rest of the diff is still valid.
    pub warnings: Vec<String>,
    /// Upper-layer entries examined.
    pub examined: u64,
}

/// Diffs a running container against its image.
///
/// The layers are the ones the container's runtime records (Docker's
/// `GraphDriver`, containerd's snapshot mounts, podman's layer chain) when
/// it records them; the container's own mount table is trusted only for a
/// container no runtime describes. A container that can mount could stack
/// an overlay of its own on `/` naming other directories (review M2): when
/// the two disagree the runtime's layers are diffed and a warning says so.
pub fn diff_container(container: &Container, opts: &Options) -> Result<Diff, DiffError> {
    let mounts = mountinfo::read(container.pid).map_err(|source| DiffError::Mountinfo {
        id: container.id.clone(),
        source,
    })?;
    let from_mounts = mountinfo::root_overlay(container.pid, &mounts);
    let mut warnings = Vec::new();
    let overlay = match (&container.layers, from_mounts) {
        (Some(layers), mounted) => {
            let runtime = container
                .runtime
                .as_ref()
                .map_or("the runtime", |r| r.as_str());
            match &mounted {
                Ok(m) if same_layers(m, layers) => {}
                Ok(m) => warnings.push(format!(
                    "the container's root mount names other layers ({}) than {runtime} records ({}): diffed {runtime}'s",
                    m.upper.display(),
                    layers.upper.display()
                )),
                Err(e) => warnings.push(format!(
                    "the container's root mount is not the overlay {runtime} records ({e}): diffed {runtime}'s"
                )),
            }
            mountinfo::Overlay {
                upper: layers.upper.clone(),
                lowers: layers.lowers.clone(),
                data_only: mounted
                    .as_ref()
                    .map(|m| m.data_only.clone())
                    .unwrap_or_default(),
                metacopy: mounted.as_ref().is_ok_and(|m| m.metacopy),
            }
        }
        (None, mounted) => mounted.map_err(|source| DiffError::Mountinfo {
            id: container.id.clone(),
            source,
        })?,
    };
    let mut result = walk::walk(&overlay, opts.jobs).map_err(|e| match e {
        walk::WalkError::Layer { path, source } => DiffError::Layer {
            id: container.id.clone(),
            path,
            source,
        },
        walk::WalkError::Thread(source) => DiffError::Thread {
            id: container.id.clone(),
            source,
        },
    })?;
    let runtime = runtime_files::RuntimeFiles::new(mountinfo::inner_mount_points(&mounts));
    for e in &mut result.entries {
        e.runtime_created = runtime.created(e);
    }
    result.entries.sort_by(|a, b| a.path.cmp(&b.path));
    warnings.extend(result.warnings);
    Ok(Diff {
        container: container.clone(),
        upper_dir: overlay.upper,
        lower_dirs: overlay.lowers,
        entries: result.entries,
        warnings,
        examined: result.examined,
    })
}

/// Whether a mounted overlay is made of the directories `layers` names:
/// the same upper directory and the same lowers in the same order, by
/// device and inode (mounts may name a layer through a symlink, as
/// Docker's `l/` links and containers/storage's relative paths do).
fn same_layers(mounted: &mountinfo::Overlay, layers: &crate::container::Layers) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let same = |a: &std::path::Path, b: &std::path::Path| id(a).is_some() && id(a) == id(b);
    same(&mounted.upper, &layers.upper)
        && mounted.lowers.len() == layers.lowers.len()
        && mounted
            .lowers
            .iter()
            .zip(&layers.lowers)
            .all(|(a, b)| same(a, b))
}

/// `driftwatch diff`: diffs a resolved container and prints the entries
/// `filter` keeps, as JSON or a table. Returns whether any entry was shown
/// (drift).
pub fn diff_command(
    container: &Container,
    opts: &Options,
    filter: &report::Filter,
    json: bool,
    out: &mut impl std::io::Write,
) -> Result<bool, CommandError> {
    use std::io::IsTerminal;
    let diff = diff_container(container, opts)?;
    let view = report::View::new(&diff, filter);
    // Reports can run to 100,000 lines: write them in large blocks.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    if json {
        view.write_json(&mut out)?;
    } else {
        // Colour only for a person at a terminal, and never with NO_COLOR.
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        view.write_table(&mut out, colour)?;
    }
    std::io::Write::flush(&mut out)?;
    Ok(view.has_drift())
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Resolve(#[from] resolve::ResolveError),
    #[error(transparent)]
    Diff(#[from] DiffError),
    #[error("writing the report: {0}")]
    Output(#[from] std::io::Error),
}
