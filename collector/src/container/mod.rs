//! What driftwatch knows about containers, in one place: which container a
//! cgroup is ([`cgroup`]), what an image reference says ([`image_ref`]), and
//! what a runtime's own state records about its containers
//! ([`RuntimeStore`], one file per runtime: [`podman`]).
//!
//! The kernel source, the enrichers, `driftwatch diff`, the drift scan and
//! the Kubernetes commands all ask here, so a runtime is taught once: a new
//! one is a cgroup naming scheme in [`cgroup`] and a store in a file of
//! its own.

use std::path::{Path, PathBuf};

use driftwatch_sdk::{Container, Runtime};

pub mod cgroup;
pub mod image_ref;
pub mod podman;

pub use cgroup::{CgroupRuntime, container_from_cgroup, container_in_cgroup_path};
pub use image_ref::{ImageRef, Pin};
pub use podman::PodmanStore;

/// What a runtime's state lists about one container, for naming it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownContainer {
    /// Full 64-hex id.
    pub id: String,
    pub names: Vec<String>,
    /// The image name it was created from, e.g. `localhost/app:1`.
    pub image: Option<String>,
    pub image_id: Option<String>,
}

/// One runtime's view of its containers, read from its own state.
pub trait RuntimeStore: Send {
    /// The runtime whose state this is.
    fn runtime(&self) -> Runtime;

    /// Every container the state lists, running or not. No state at all
    /// (the runtime is not installed) is an empty list; state that cannot
    /// be read is an error.
    fn containers(&mut self) -> Result<Vec<KnownContainer>, StoreError>;

    /// What the runtime knows of one container, as the event schema has
    /// it; `None` when it does not know the id. Unreadable state is
    /// "unknown" here, not an error: enrichment goes on without it.
    fn lookup(&mut self, id: &str) -> Option<Container>;

    /// Whether the container still exists (false drops it from caches).
    /// Called rarely; may read the runtime's state.
    fn exists(&mut self, id: &str) -> bool;
}

/// The stores of every runtime driftwatch reads, podman's under
/// `podman_root`. A runtime that is not installed costs a failed `stat`.
pub fn stores(podman_root: &Path) -> Vec<Box<dyn RuntimeStore>> {
    vec![Box::new(PodmanStore::new(podman_root))]
}

/// A runtime's state file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid container metadata: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}
