//! On-disk cache of compiled components.
//!
//! Compiling a component with Cranelift takes far longer than loading its
//! precompiled form, so the daemon starts (and reloads) faster with a cache.
//! Loading precompiled code is `unsafe` in wasmtime: the bytes are trusted
//! as machine code. So the cache is used only when its directory belongs to
//! us and nobody else can write to it, and entries are keyed by the content
//! hash of the component and the engine's compatibility hash (which covers
//! the wasmtime version and every code-generation setting).

use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

pub struct ComponentCache {
    dir: Option<PathBuf>,
}

impl ComponentCache {
    /// A cache in `dir`, created 0700 when missing. An unusable directory
    /// disables the cache with a warning; it never stops the daemon.
    pub fn new(dir: &Path) -> ComponentCache {
        match prepare(dir) {
            Ok(()) => ComponentCache {
                dir: Some(dir.to_path_buf()),
            },
            Err(why) => {
                tracing::warn!(dir = %dir.display(), "plugin cache disabled: {why}");
                ComponentCache { dir: None }
            }
        }
    }

    pub fn disabled() -> ComponentCache {
        ComponentCache { dir: None }
    }

    /// Compiles `bytes`, or loads the cached compilation of them.
    pub fn load(&self, engine: &wasmtime::Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        let Some(dir) = &self.dir else {
            return Component::new(engine, bytes);
        };
        let path = dir.join(format!("{}.cwasm", key(engine, bytes)));
        if path.exists() {
            // SAFETY: the file was written by `serialize` below into a
            // directory only this user can write (checked in `prepare`), and
            // its name binds it to these exact component bytes and engine.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cache entry: {e}")
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        match component.serialize() {
            Ok(code) => {
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                if let Err(e) =
                    std::fs::write(&tmp, &code).and_then(|()| std::fs::rename(&tmp, &path))
                {
                    let _ = std::fs::remove_file(&tmp);
                    tracing::warn!(path = %path.display(), "cannot write plugin cache entry: {e}");
                }
            }
            Err(e) => tracing::warn!("cannot serialize compiled plugin: {e}"),
        }
        Ok(component)
    }
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
    #[error("not a directory")]
    NotADirectory,
    #[error("owned by uid {owner}, not by us (uid {us})")]
    Owner { owner: u32, us: u32 },
    #[error("writable by group or others (mode {mode:o})")]
    Writable { mode: u32 },
}

fn prepare(dir: &Path) -> Result<(), Unusable> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(Unusable::Create)?;
    }
    let meta = std::fs::metadata(dir).map_err(Unusable::Stat)?;
    if !meta.is_dir() {
        return Err(Unusable::NotADirectory);
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(Unusable::Owner {
            owner: meta.uid(),
            us: euid,
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Unusable::Writable {
            mode: meta.mode() & 0o777,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn world_writable_dir_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(
            prepare(d.path())
                .unwrap_err()
                .to_string()
                .contains("writable")
        );
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(prepare(d.path()).is_ok());
    }
}
