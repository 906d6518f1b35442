//! Podman's state, as containers/storage keeps it on disk: read directly,
//! so no runtime CLI or socket is needed.
//!
//! Under the storage root, `overlay-containers/containers.json` lists the
//! containers (`volatile-containers.json` those podman keeps out of the
//! durable file, e.g. made with `--rm`), `overlay-images/images.json` the
//! images. Each file is read whole and re-read only when its modification
//! time changes.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use driftwatch_sdk::{Container, Runtime};
use serde::Deserialize;

use super::image_ref::ImageRef;
use super::{KnownContainer, RuntimeStore, StoreError};

/// Where podman (as root) keeps containers/storage.
pub const DEFAULT_ROOT: &str = "/var/lib/containers/storage";

const CONTAINERS: &str = "overlay-containers/containers.json";
const VOLATILE_CONTAINERS: &str = "overlay-containers/volatile-containers.json";
const IMAGES: &str = "overlay-images/images.json";

/// One container as containers.json records it.
#[derive(Debug, Deserialize)]
struct Record {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    /// The image id.
    #[serde(default)]
    image: Option<String>,
    /// A JSON document in a string: `{"image-name": ..., "name": ...}`.
    #[serde(default)]
    metadata: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RecordMetadata {
    #[serde(rename = "image-name")]
    image_name: Option<String>,
}

impl Record {
    /// The image name the container was created from; a metadata document
    /// that does not parse says nothing.
    fn image_name(&self) -> Option<String> {
        self.metadata
            .as_deref()
            .and_then(|m| serde_json::from_str::<RecordMetadata>(m).ok())
            .unwrap_or_default()
            .image_name
    }
}

#[derive(Debug, Deserialize)]
struct Image {
    id: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    names: Vec<String>,
}

/// One state file's last parse, kept while the file's mtime stays the same.
struct Cached<T> {
    mtime: Option<SystemTime>,
    value: Option<T>,
}

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Cached {
            mtime: None,
            value: None,
        }
    }
}

impl<T: for<'de> Deserialize<'de>> Cached<T> {
    /// The file's content, re-read when it changed. A missing file is no
    /// value (that runtime is not here); a file that cannot be read or
    /// parsed is an error and leaves no value, so nothing is answered from
    /// stale data.
    fn refresh(&mut self, path: &Path) -> Result<Option<&T>, StoreError> {
        let read = |source| StoreError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mtime = match std::fs::metadata(path).and_then(|m| m.modified()) {
            Ok(t) => t,
            Err(e) => {
                *self = Cached::default();
                return match e.kind() {
                    std::io::ErrorKind::NotFound => Ok(None),
                    _ => Err(read(e)),
                };
            }
        };
        if Some(mtime) != self.mtime || self.value.is_none() {
            self.mtime = Some(mtime);
            self.value = None;
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                // Removed between the stat and the read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(read(e)),
            };
            let value = serde_json::from_slice(&bytes).map_err(|source| StoreError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
            self.value = Some(value);
        }
        Ok(self.value.as_ref())
    }
}

/// Podman's containers/storage under one root.
pub struct PodmanStore {
    root: PathBuf,
    containers: Cached<Vec<Record>>,
    volatile: Cached<Vec<Record>>,
    images: Cached<Vec<Image>>,
}

impl PodmanStore {
    pub fn new(root: impl Into<PathBuf>) -> PodmanStore {
        PodmanStore {
            root: root.into(),
            containers: Cached::default(),
            volatile: Cached::default(),
            images: Cached::default(),
        }
    }
}

/// A state file's content for enrichment: one that cannot be read is
/// logged and taken as absent, as enrichment must not fail an event over
/// the runtime's state.
fn or_absent<T>(r: Result<Option<&T>, StoreError>) -> Option<&T> {
    r.unwrap_or_else(|e| {
        tracing::debug!("runtime state: {e}");
        None
    })
}

impl RuntimeStore for PodmanStore {
    fn runtime(&self) -> Runtime {
        Runtime::Podman
    }

    fn containers(&mut self) -> Result<Vec<KnownContainer>, StoreError> {
        let mut out = Vec::new();
        let files = [
            (&mut self.containers, CONTAINERS),
            (&mut self.volatile, VOLATILE_CONTAINERS),
        ];
        for (cache, file) in files {
            let Some(records) = cache.refresh(&self.root.join(file))? else {
                continue;
            };
            out.extend(records.iter().map(|r| KnownContainer {
                id: r.id.clone(),
                names: r.names.clone(),
                image: r.image_name(),
                image_id: r.image.clone(),
            }));
        }
        Ok(out)
    }

    fn lookup(&mut self, id: &str) -> Option<Container> {
        // The durable file only: what enrichment has always read.
        let c = or_absent(self.containers.refresh(&self.root.join(CONTAINERS)))?
            .iter()
            .find(|c| c.id == id)?;
        let image_id = c.image.clone().filter(|i| !i.is_empty());
        let image = image_id.as_ref().and_then(|iid| {
            or_absent(self.images.refresh(&self.root.join(IMAGES)))?
                .iter()
                .find(|i| i.id == *iid)
        });
        // The name the container was created from wins over the image's first name.
        let full_name = c
            .image_name()
            .or_else(|| image.and_then(|i| i.names.first().cloned()));
        let image_ref = full_name.as_deref().map(ImageRef::parse);
        Some(Container {
            id: c.id.clone(),
            name: c.names.first().cloned(),
            runtime: Some(Runtime::Podman),
            image_tag: image_ref.as_ref().and_then(|r| r.tag.clone()),
            image_repository: image_ref.map(|r| r.repository),
            image_digest: image.and_then(|i| i.digest.clone()),
            image_id,
        })
    }

    fn exists(&mut self, id: &str) -> bool {
        or_absent(self.containers.refresh(&self.root.join(CONTAINERS)))
            .is_some_and(|cs| cs.iter().any(|c| c.id == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "3ab290c732230f85615f8c1a30667d2ab7059f721bf2bd086b6e4f5baa4a46c9";
    const B: &str = "c811d759cd84d2b82f41bca4039440b6c48b9a7e33c361ed30c4b94006d3eaae";

    fn write(root: &Path, file: &str, text: &str) {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn listing_reads_the_durable_and_the_volatile_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = PodmanStore::new(dir.path());
        // No state at all: podman is not here.
        assert_eq!(store.containers().unwrap(), vec![]);
        write(
            dir.path(),
            CONTAINERS,
            &format!(
                r#"[{{"id":"{A}","names":["web"],"image":"img1","metadata":"{{\"image-name\":\"localhost/app:1\"}}"}}]"#
            ),
        );
        write(
            dir.path(),
            VOLATILE_CONTAINERS,
            &format!(r#"[{{"id":"{B}","names":["tmp"],"metadata":"not json"}}]"#),
        );
        assert_eq!(
            store.containers().unwrap(),
            vec![
                KnownContainer {
                    id: A.into(),
                    names: vec!["web".into()],
                    image: Some("localhost/app:1".into()),
                    image_id: Some("img1".into()),
                },
                KnownContainer {
                    id: B.into(),
                    names: vec!["tmp".into()],
                    image: None,
                    image_id: None,
                },
            ]
        );
        // Enrichment has only ever read the durable file.
        assert!(store.lookup(A).is_some());
        assert!(store.lookup(B).is_none());
        assert!(!store.exists(B));
    }

    #[test]
    fn unreadable_state_fails_a_listing_but_is_unknown_to_a_lookup() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), CONTAINERS, "[{\"id\": 5}]");
        let mut store = PodmanStore::new(dir.path());
        let err = store.containers().unwrap_err();
        assert!(matches!(err, StoreError::Parse { .. }), "{err}");
        assert!(
            err.to_string().contains("not valid container metadata"),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(store.lookup(A), None);
        assert!(!store.exists(A));
    }

    #[test]
    fn an_image_without_a_recorded_name_is_named_by_the_image() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            CONTAINERS,
            &format!(r#"[{{"id":"{A}","names":["web"],"image":"img1"}}]"#),
        );
        write(
            dir.path(),
            IMAGES,
            r#"[{"id":"img1","digest":"sha256:d1","names":["registry:5000/team/app:v2"]}]"#,
        );
        let c = PodmanStore::new(dir.path()).lookup(A).unwrap();
        assert_eq!(
            c.image_repository.as_deref(),
            Some("registry:5000/team/app")
        );
        assert_eq!(c.image_tag.as_deref(), Some("v2"));
        assert_eq!(c.image_digest.as_deref(), Some("sha256:d1"));
        assert_eq!(c.runtime, Some(Runtime::Podman));
    }
}
