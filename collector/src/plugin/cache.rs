//! On-disk cache of compiled components.
//!
//! Compiling a component with Cranelift takes far longer than loading its
//! precompiled form, so the daemon starts (and reloads) faster with a cache.
//! Loading precompiled code is `unsafe` in wasmtime: the bytes are trusted
//! as machine code and run as root. So an entry is used only when
//! - the directory is a real directory (not a symlink) that belongs to us
//!   and that nobody else can write to, and its ancestors cannot be
//!   swapped by anyone else either (checked again at every load: the cache
//!   is read at each reload);
//! - the entry is a regular file (opened without following symlinks) that
//!   belongs to us and that nobody else can write to;
//! - its header holds the SHA-256 of the code that follows, and the code
//!   read matches it. The digest is checked on the bytes in memory that are
//!   then deserialized, so the file cannot change between check and use. A
//!   torn write (a crash between write and rename) or an altered or planted
//!   file fails the check and is rebuilt.
//!
//! Entries are keyed by the content hash of the component and the engine's
//! compatibility hash (which covers the wasmtime version and every
//! code-generation setting). Anything refused is logged, removed and
//! recompiled: a bad cache never stops a plugin from loading.

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

/// What an entry file starts with: the format, then the SHA-256 of the
/// serialized component that follows.
const MAGIC: &[u8; 8] = b"DWCWASM1";
const HEADER_LEN: usize = MAGIC.len() + 32;
/// Larger than any code [`super::host::MAX_CODE_BYTES`] lets through, with
/// room for metadata; a larger file is not one of ours.
const MAX_ENTRY_BYTES: u64 = 512 << 20;

pub struct ComponentCache {
    dir: Option<PathBuf>,
}

/// What [`ComponentCache::load_traced`] did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No cache: compiled.
    Disabled,
    /// Loaded from a verified entry.
    Hit,
    /// No entry: compiled and stored.
    Miss,
    /// An entry was there but refused (the reason): compiled and replaced.
    Refused(String),
}

impl ComponentCache {
    /// A cache in `dir`, created 0700 when missing. An unusable directory
    /// disables the cache with a warning; it never stops the daemon.
    pub fn new(dir: &Path) -> ComponentCache {
        let prepared = create(dir).and_then(|()| check_dir(dir));
        match prepared {
            Ok(()) => ComponentCache {
                dir: Some(dir.to_path_buf()),
            },
            Err(why) => {
                tracing::warn!(dir = %dir.display(), "plugin cache disabled: {why}");
                ComponentCache::disabled()
            }
        }
    }

    pub fn disabled() -> ComponentCache {
        ComponentCache { dir: None }
    }

    /// Compiles `bytes`, or loads the cached compilation of them.
    pub fn load(&self, engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        self.load_traced(engine, bytes).map(|(c, _)| c)
    }

    /// [`ComponentCache::load`], saying whether the cache was used.
    pub fn load_traced(
        &self,
        engine: &wasmtime::Engine,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, Outcome)> {
        let Some(dir) = &self.dir else {
            return Ok((compile_apart(engine, bytes)?.0, Outcome::Disabled));
        };
        if let Err(why) = check_dir(dir) {
            tracing::warn!(dir = %dir.display(), "plugin cache not used: {why}");
            return Ok((compile_apart(engine, bytes)?.0, Outcome::Disabled));
        }
        let path = dir.join(format!("{}.cwasm", key(engine, bytes)));
        let mut outcome = Outcome::Miss;
        match read_entry(&path) {
            Ok(None) => {}
            Ok(Some(code)) => {
                // SAFETY: `code` is exactly the bytes whose SHA-256 the
                // entry's header records, read through a file that only this
                // user can write, in a directory only this user can write
                // (both checked just now); it was written by `store` below
                // from `serialize`, and its name binds it to these exact
                // component bytes and engine.
                match unsafe { Component::deserialize(engine, &code) } {
                    Ok(c) => return Ok((c, Outcome::Hit)),
                    Err(e) => outcome = Outcome::Refused(format!("{e:#}")),
                }
            }
            Err(why) => outcome = Outcome::Refused(why.to_string()),
        }
        if let Outcome::Refused(why) = &outcome {
            tracing::warn!(path = %path.display(), "refusing plugin cache entry, rebuilding it: {why}");
            let _ = std::fs::remove_file(&path);
        }
        let (component, code) = compile_apart(engine, bytes)?;
        if let Err(e) = store(dir, &path, &code) {
            tracing::warn!(path = %path.display(), "cannot write plugin cache entry: {e}");
        }
        Ok((component, outcome))
    }
}

/// Compiles `bytes` in a throwaway engine with `engine`'s configuration,
/// one function at a time on this thread, and loads the result into
/// `engine`; returns the component and its serialized code.
///
/// An engine keeps what compiling took for as long as it lives: Cranelift
/// and regalloc2 contexts (some 20 MB, seen live with heaptrack) and the
/// memory rayon's compile threads freed but still hold. A daemon that
/// compiled its plugins at start (a cold cache) then settled about 60 MiB
/// higher than one that loaded them from the cache. Dropped here, on the
/// thread that allocated it, that memory goes back.
fn compile_apart(
    engine: &wasmtime::Engine,
    bytes: &[u8],
) -> wasmtime::Result<(Component, Vec<u8>)> {
    let mut cfg = engine.config().clone();
    cfg.parallel_compilation(false);
    let compiler = wasmtime::Engine::new(&cfg)?;
    let code = compiler.precompile_component(bytes)?;
    drop(compiler);
    // SAFETY: `code` is what `precompile_component` made of `bytes` just
    // now, in this process, with `engine`'s own configuration; it never
    // left memory.
    let component = unsafe { Component::deserialize(engine, &code)? };
    Ok((component, code))
}

/// Why an entry is refused.
#[derive(Debug, thiserror::Error)]
enum BadEntry {
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a regular file (or a symlink)")]
    NotAFile,
    #[error("owned by uid {owner}, not by us (uid {us})")]
    Owner { owner: u32, us: u32 },
    #[error("writable by group or others (mode {mode:o})")]
    Writable { mode: u32 },
    #[error("{size} bytes, larger than any entry this version writes")]
    TooLarge { size: u64 },
    #[error("not a driftwatch cache entry (no header; written by an older version?)")]
    Header,
    #[error("its content does not match the digest in its header (altered or torn)")]
    Digest,
}

/// The verified code of the entry at `path`, or `None` when there is none.
fn read_entry(path: &Path) -> Result<Option<Vec<u8>>, BadEntry> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // O_NOFOLLOW on a symlink.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(BadEntry::NotAFile),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(BadEntry::NotAFile);
    }
    let us = euid();
    if meta.uid() != us {
        return Err(BadEntry::Owner {
            owner: meta.uid(),
            us,
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(BadEntry::Writable {
            mode: meta.mode() & 0o7777,
        });
    }
    if meta.len() > MAX_ENTRY_BYTES {
        return Err(BadEntry::TooLarge { size: meta.len() });
    }
    let mut data = Vec::with_capacity(meta.len() as usize);
    (&mut file).take(MAX_ENTRY_BYTES).read_to_end(&mut data)?;
    if data.len() < HEADER_LEN || &data[..MAGIC.len()] != MAGIC {
        return Err(BadEntry::Header);
    }
    let code = data.split_off(HEADER_LEN);
    if Sha256::digest(&code).as_slice() != &data[MAGIC.len()..] {
        return Err(BadEntry::Digest);
    }
    Ok(Some(code))
}

/// Writes an entry whole: a private temporary file, synced, renamed into
/// place, and the directory synced, so a crash leaves the old entry, none,
/// or the new one, and a torn one at worst fails its digest.
fn store(dir: &Path, path: &Path, code: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&Sha256::digest(code))?;
        f.write_all(code)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn key(engine: &wasmtime::Engine, bytes: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    let mut sha = Sha256::new();
    sha.update(bytes);
    sha.update(h.finish().to_le_bytes());
    sha.update(env!("CARGO_PKG_VERSION").as_bytes());
    hex::encode(sha.finalize())
}

/// Why a cache directory is not used.
#[derive(Debug, thiserror::Error)]
enum Unusable {
    #[error("cannot create it: {0}")]
    Create(#[source] std::io::Error),
    #[error("{0}")]
    Stat(#[source] std::io::Error),
    #[error("not a directory (or a symlink)")]
    NotADirectory,
    #[error("owned by uid {owner}, not by us (uid {us})")]
    Owner { owner: u32, us: u32 },
    #[error("writable by group or others (mode {mode:o})")]
    Writable { mode: u32 },
    #[error("its ancestor {} (uid {owner}, mode {mode:o}) can be changed by others", .path.display())]
    Ancestor {
        path: PathBuf,
        owner: u32,
        mode: u32,
    },
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn create(dir: &Path) -> Result<(), Unusable> {
    use std::os::unix::fs::DirBuilderExt;
    if std::fs::symlink_metadata(dir).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(Unusable::Create)?;
    }
    Ok(())
}

/// The directory itself must be ours and private; each ancestor must be
/// ours or root's and not writable by others, unless sticky (like /tmp,
/// where others cannot rename what is ours).
fn check_dir(dir: &Path) -> Result<(), Unusable> {
    let meta = std::fs::symlink_metadata(dir).map_err(Unusable::Stat)?;
    if !meta.file_type().is_dir() {
        return Err(Unusable::NotADirectory);
    }
    let us = euid();
    if meta.uid() != us {
        return Err(Unusable::Owner {
            owner: meta.uid(),
            us,
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Unusable::Writable {
            mode: meta.mode() & 0o777,
        });
    }
    let absolute = std::path::absolute(dir).map_err(Unusable::Stat)?;
    for ancestor in absolute.ancestors().skip(1) {
        let meta = std::fs::metadata(ancestor).map_err(Unusable::Stat)?;
        let sticky = meta.mode() & 0o1000 != 0;
        if (meta.uid() != us && meta.uid() != 0) || (meta.mode() & 0o022 != 0 && !sticky) {
            return Err(Unusable::Ancestor {
                path: ancestor.to_path_buf(),
                owner: meta.uid(),
                mode: meta.mode() & 0o7777,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The smallest component: the preamble of the component binary format.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn a_component_compiled_apart_loads_runs_and_is_cached() {
        let mut cfg = wasmtime::Config::new();
        cfg.wasm_component_model(true).epoch_interruption(true);
        let engine = wasmtime::Engine::new(&cfg).unwrap();
        let d = tempfile::tempdir().unwrap();
        let cache = ComponentCache::new(&d.path().join("c"));
        let (first, outcome) = cache.load_traced(&engine, EMPTY_COMPONENT).unwrap();
        assert_eq!(outcome, Outcome::Miss);
        // Compiled elsewhere, it belongs to this engine: it instantiates.
        let mut store = wasmtime::Store::new(&engine, ());
        wasmtime::component::Linker::<()>::new(&engine)
            .instantiate(&mut store, &first)
            .unwrap();
        // What was stored is what a later start loads.
        assert_eq!(
            cache.load_traced(&engine, EMPTY_COMPONENT).unwrap().1,
            Outcome::Hit
        );
        let off = ComponentCache::disabled();
        assert_eq!(
            off.load_traced(&engine, EMPTY_COMPONENT).unwrap().1,
            Outcome::Disabled
        );
    }

    #[test]
    fn world_writable_dir_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(
            check_dir(d.path())
                .unwrap_err()
                .to_string()
                .contains("writable")
        );
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(check_dir(d.path()).is_ok());
    }
}
