//! Podman's state, as containers/storage keeps it on disk: read directly,
//! so no runtime CLI or socket is needed.
//!
//! Under the storage root, `overlay-containers/containers.json` lists the
//! containers (`volatile-containers.json` those podman keeps out of the
//! durable file, e.g. made with `--rm`), `overlay-images/images.json` the
//! images, `overlay-layers/layers.json` the layers (each with its parent).
//! Each file is read whole and re-read only when its modification time
//! changes. Changes are noticed with inotify on the containers' directory,
//! so the cache learns of a new container before its first process runs.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use driftwatch_sdk::Runtime;
use futures::future::BoxFuture;
use serde::Deserialize;

use super::{
    Change, ChangeStream, KnownContainer, Layers, RuntimeClient, RuntimeError, StoreError,
};

/// Where podman (as root) keeps containers/storage.
pub const DEFAULT_ROOT: &str = "/var/lib/containers/storage";

const CONTAINERS: &str = "overlay-containers/containers.json";
const VOLATILE_CONTAINERS: &str = "overlay-containers/volatile-containers.json";
const IMAGES: &str = "overlay-images/images.json";
const LAYERS: &str = "overlay-layers/layers.json";
/// Where containers/storage's overlay driver keeps each layer's `diff`.
const OVERLAY: &str = "overlay";

/// One container as containers.json records it.
#[derive(Debug, Clone, Deserialize)]
struct Record {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    /// The image id.
    #[serde(default)]
    image: Option<String>,
    /// The container's own (writable) layer.
    #[serde(default)]
    layer: Option<String>,
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
struct Layer {
    id: String,
    #[serde(default)]
    parent: Option<String>,
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
    layers: Cached<Vec<Layer>>,
}

impl PodmanStore {
    pub fn new(root: impl Into<PathBuf>) -> PodmanStore {
        PodmanStore {
            root: root.into(),
            containers: Cached::default(),
            volatile: Cached::default(),
            images: Cached::default(),
            layers: Cached::default(),
        }
    }
}

/// Layers deeper than this are not followed (a parent loop in a corrupt
/// layers.json).
const MAX_LAYERS: usize = 512;

impl PodmanStore {
    /// Every container the state lists, running or not, with its image's
    /// name and digest and its layers. No state at all (podman is not
    /// installed) is an empty list; state that cannot be read is an error.
    pub fn containers(&mut self) -> Result<Vec<KnownContainer>, StoreError> {
        let mut records: Vec<Record> = Vec::new();
        let files = [
            (&mut self.containers, CONTAINERS),
            (&mut self.volatile, VOLATILE_CONTAINERS),
        ];
        for (cache, file) in files {
            if let Some(r) = cache.refresh(&self.root.join(file))? {
                records.extend(r.iter().cloned());
            }
        }
        let images = self.images.refresh(&self.root.join(IMAGES))?;
        let layers = self.layers.refresh(&self.root.join(LAYERS))?;
        Ok(records
            .into_iter()
            .map(|r| {
                let image_id = r.image.clone().filter(|i| !i.is_empty());
                let image = image_id
                    .as_ref()
                    .and_then(|iid| images?.iter().find(|i| i.id == *iid));
                KnownContainer {
                    runtime: Some(Runtime::Podman),
                    // The name the container was created from wins over the
                    // image's first name.
                    image: r
                        .image_name()
                        .or_else(|| image.and_then(|i| i.names.first().cloned())),
                    image_digest: image.and_then(|i| i.digest.clone()),
                    image_id,
                    pod: None,
                    layers: r
                        .layer
                        .as_deref()
                        .and_then(|l| layer_chain(&self.root, layers.map(Vec::as_slice), l)),
                    names: r.names,
                    id: r.id,
                }
            })
            .collect())
    }

    /// What the state says of one container, `None` when it does not list it.
    pub fn lookup(&mut self, id: &str) -> Result<Option<KnownContainer>, StoreError> {
        Ok(self.containers()?.into_iter().find(|c| c.id == id))
    }
}

/// A container's layers: its own as the upper, its ancestors as the
/// lowers, each `overlay/<id>/diff` under the root.
fn layer_chain(root: &Path, layers: Option<&[Layer]>, own: &str) -> Option<Layers> {
    let diff = |id: &str| root.join(OVERLAY).join(id).join("diff");
    let layers = layers?;
    let parent_of = |id: &str| {
        layers
            .iter()
            .find(|l| l.id == id)
            .and_then(|l| l.parent.clone())
    };
    let mut lowers = Vec::new();
    let mut cur = parent_of(own);
    while let Some(p) = cur {
        if lowers.len() >= MAX_LAYERS {
            return None;
        }
        lowers.push(diff(&p));
        cur = parent_of(&p);
    }
    Some(Layers {
        upper: diff(own),
        lowers,
    })
}

/// Podman's state as a [`RuntimeClient`].
pub struct PodmanClient {
    root: PathBuf,
    store: Mutex<PodmanStore>,
}

impl PodmanClient {
    pub fn new(root: &Path) -> PodmanClient {
        PodmanClient {
            root: root.to_path_buf(),
            store: Mutex::new(PodmanStore::new(root)),
        }
    }

    fn with_store<T>(
        &self,
        f: impl FnOnce(&mut PodmanStore) -> Result<T, StoreError>,
    ) -> Result<T, RuntimeError> {
        // A poisoned lock means a read panicked half-way; the store only
        // caches files, so a fresh one is as good.
        let mut g = self.store.lock().unwrap_or_else(|p| {
            let mut g = p.into_inner();
            *g = PodmanStore::new(&self.root);
            g
        });
        f(&mut g).map_err(RuntimeError::from)
    }
}

impl RuntimeClient for PodmanClient {
    fn runtime(&self) -> Runtime {
        Runtime::Podman
    }

    fn endpoint(&self) -> &Path {
        &self.root
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<KnownContainer>, RuntimeError>> {
        Box::pin(async move { self.with_store(PodmanStore::containers) })
    }

    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<KnownContainer>, RuntimeError>> {
        Box::pin(async move { self.with_store(|s| s.lookup(id)) })
    }

    /// inotify on the containers' directory: any change there is a
    /// [`Change::Resync`] (the files say what changed once re-read).
    fn watch(&self) -> Option<BoxFuture<'_, Result<ChangeStream, RuntimeError>>> {
        Some(Box::pin(async move {
            use futures::StreamExt;
            use notify::{RecursiveMode, Watcher};
            let dir = self.root.join("overlay-containers");
            let unavailable =
                |source: Box<dyn std::error::Error + Send + Sync>| RuntimeError::Unavailable {
                    runtime: Runtime::Podman,
                    endpoint: dir.clone(),
                    source,
                };
            let (tx, rx) = tokio::sync::mpsc::channel::<()>(1);
            let mut watcher =
                notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                    if res.is_ok_and(|e| !e.kind.is_access()) {
                        // Full means a resync is already due.
                        let _ = tx.try_send(());
                    }
                })
                .map_err(|e| unavailable(Box::new(e)))?;
            watcher
                .watch(&dir, RecursiveMode::NonRecursive)
                .map_err(|e| unavailable(Box::new(e)))?;
            // The watcher lives as long as the stream.
            let stream = futures::stream::unfold((rx, watcher), |(mut rx, w)| async move {
                rx.recv().await?;
                Some((Ok(Change::Resync), (rx, w)))
            });
            Ok(stream.boxed())
        }))
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
                r#"[{{"id":"{A}","names":["web"],"image":"img1","layer":"c1","metadata":"{{\"image-name\":\"localhost/app:1\"}}"}}]"#
            ),
        );
        write(
            dir.path(),
            VOLATILE_CONTAINERS,
            &format!(r#"[{{"id":"{B}","names":["tmp"],"metadata":"not json"}}]"#),
        );
        write(
            dir.path(),
            LAYERS,
            r#"[{"id":"c1","parent":"i2"},{"id":"i2","parent":"i1"},{"id":"i1"}]"#,
        );
        let root = dir.path();
        let diff = |l: &str| root.join("overlay").join(l).join("diff");
        assert_eq!(
            store.containers().unwrap(),
            vec![
                KnownContainer {
                    id: A.into(),
                    runtime: Some(Runtime::Podman),
                    names: vec!["web".into()],
                    image: Some("localhost/app:1".into()),
                    image_id: Some("img1".into()),
                    layers: Some(Layers {
                        upper: diff("c1"),
                        lowers: vec![diff("i2"), diff("i1")],
                    }),
                    ..KnownContainer::default()
                },
                KnownContainer {
                    id: B.into(),
                    runtime: Some(Runtime::Podman),
                    names: vec!["tmp".into()],
                    ..KnownContainer::default()
                },
            ]
        );
        assert!(store.lookup(B).unwrap().is_some());
        assert!(store.lookup(&"f".repeat(64)).unwrap().is_none());
    }

    #[test]
    fn unreadable_state_is_an_error_with_its_cause() {
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
        assert!(store.lookup(A).is_err());
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
        let k = PodmanStore::new(dir.path()).lookup(A).unwrap().unwrap();
        let (c, k8s) = k.to_event();
        assert_eq!(
            c.image_repository.as_deref(),
            Some("registry:5000/team/app")
        );
        assert_eq!(c.image_tag.as_deref(), Some("v2"));
        assert_eq!(c.image_digest.as_deref(), Some("sha256:d1"));
        assert_eq!(c.runtime, Some(Runtime::Podman));
        assert_eq!(c.name.as_deref(), Some("web"));
        assert_eq!(k8s, None);
    }

    #[test]
    fn a_layer_loop_is_not_followed() {
        let layers = [
            Layer {
                id: "a".into(),
                parent: Some("b".into()),
            },
            Layer {
                id: "b".into(),
                parent: Some("a".into()),
            },
        ];
        assert_eq!(layer_chain(Path::new("/s"), Some(&layers), "a"), None);
    }

    #[tokio::test]
    async fn the_client_notices_changes_and_says_when_podman_is_absent() {
        use futures::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let absent = PodmanClient::new(&dir.path().join("nope"));
        let err = match absent.watch().unwrap().await {
            Err(e) => e,
            Ok(_) => panic!("watching a missing directory"),
        };
        assert!(err.is_unavailable(), "{err}");
        assert_eq!(absent.list().await.unwrap(), vec![]);

        write(dir.path(), CONTAINERS, "[]");
        let client = PodmanClient::new(dir.path());
        let mut changes = client.watch().unwrap().await.unwrap();
        write(dir.path(), CONTAINERS, &format!(r#"[{{"id":"{A}"}}]"#));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), changes.next())
            .await
            .unwrap();
        assert_eq!(got.unwrap().unwrap(), Change::Resync);
        assert_eq!(client.inspect(A).await.unwrap().unwrap().id, A);
    }
}
