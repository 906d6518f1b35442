//! What driftwatch knows about containers, in one place: which container a
//! cgroup is ([`cgroup`]), what an image reference says ([`image_ref`]),
//! who a container is in Kubernetes by what its runtime stored
//! ([`cri`]), and what each runtime says about its containers
//! ([`RuntimeClient`], one file per runtime: [`containerd`], [`crio`],
//! [`docker`], [`podman`]), kept in a cache that never makes an event wait
//! ([`metadata`]).
//!
//! The kernel source, the enrichers, `driftwatch diff`, the drift scan and
//! the Kubernetes commands all ask here, so a runtime is taught once: a new
//! one is a cgroup naming scheme in [`cgroup`] and a client in a file of
//! its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use driftwatch_sdk::{Container, K8s, Runtime};
use futures::future::BoxFuture;
use futures::stream::BoxStream;

pub mod cgroup;
pub mod containerd;
pub mod cri;
pub mod crio;
pub mod docker;
pub mod http;
pub mod image_ref;
pub mod metadata;
pub mod podman;

pub use cgroup::{CgroupRuntime, container_in_cgroup_path};
pub use image_ref::{ImageRef, Pin};
pub use podman::PodmanStore;

/// `container.id` of a process that is in a container (a pid namespace of
/// its own) whose cgroup no runtime's scheme describes: not the host, and
/// not a container anyone can name.
pub const UNKNOWN_ID: &str = "unknown";

/// One container as its runtime describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownContainer {
    /// The runtime's id: 64 hex digits, or for containerd whatever its
    /// client chose.
    pub id: String,
    pub runtime: Option<Runtime>,
    pub names: Vec<String>,
    /// The image name it was created from, e.g. `localhost/app:1`.
    pub image: Option<String>,
    /// The runtime's local image id.
    pub image_id: Option<String>,
    /// `sha256:...` digest of the image as pulled (repo digest).
    pub image_digest: Option<String>,
    /// The pod it belongs to, from what the runtime stored with it.
    pub pod: Option<cri::PodIdentity>,
    /// Its overlay layers, from the runtime's own storage records.
    pub layers: Option<Layers>,
}

/// A container's overlay layers as its runtime's storage records them:
/// the paths `driftwatch diff` trusts, rather than whatever the container's
/// own mount table says (review M2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layers {
    pub upper: PathBuf,
    /// Top-most first.
    pub lowers: Vec<PathBuf>,
}

impl KnownContainer {
    /// The schema's view: the container, and the pod it belongs to.
    pub fn to_event(&self) -> (Container, Option<K8s>) {
        let image = self.image.as_deref().map(ImageRef::parse);
        let c = Container {
            id: self.id.clone(),
            name: self.names.first().cloned(),
            runtime: self.runtime.clone(),
            image_tag: image.as_ref().and_then(|i| i.tag.clone()),
            image_digest: self
                .image_digest
                .clone()
                .or_else(|| image.as_ref().and_then(|i| i.digest.clone())),
            image_repository: image.map(|i| i.repository),
            image_id: self.image_id.clone(),
        };
        let k8s = self.pod.as_ref().map(|p| K8s {
            namespace: Some(p.namespace.clone()),
            pod_name: Some(p.pod_name.clone()),
            pod_uid: p.pod_uid.clone(),
            container_name: p.container_name.clone(),
            ..K8s::default()
        });
        (c, k8s)
    }
}

/// A change to a runtime's containers, from its event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created(String),
    Removed(String),
    /// Something changed, the stream does not say what: list again.
    Resync,
}

/// One runtime's API (or state on disk), asked about its containers.
pub trait RuntimeClient: Send + Sync {
    /// The runtime this is.
    fn runtime(&self) -> Runtime;

    /// Where it is reached (socket or state directory), for messages.
    fn endpoint(&self) -> &Path;

    /// Every container it knows, running or not. CRI-O has no listing
    /// ([`RuntimeClient::lists`] is false): an empty list.
    fn list(&self) -> BoxFuture<'_, Result<Vec<KnownContainer>, RuntimeError>>;

    /// Whether [`RuntimeClient::list`] lists anything.
    fn lists(&self) -> bool {
        true
    }

    /// One container by its full id; `None` when the runtime does not know it.
    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<KnownContainer>, RuntimeError>>;

    /// The runtime's container events, while it is reachable; `None` when
    /// it has no event stream (the cache then asks again periodically).
    fn watch(&self) -> Option<BoxFuture<'_, Result<ChangeStream, RuntimeError>>> {
        None
    }
}

pub type ChangeStream = BoxStream<'static, Result<Change, RuntimeError>>;

/// A runtime that could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Not there or not answering: no socket, nothing listening, the
    /// connection dropped. The cache stops asking for a while.
    #[error("{runtime} at {}: not reachable", endpoint.display())]
    Unavailable {
        runtime: Runtime,
        endpoint: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{runtime} at {}: no answer within {} ms", endpoint.display(), after.as_millis())]
    Timeout {
        runtime: Runtime,
        endpoint: PathBuf,
        after: Duration,
    },
    /// It answered, but not with what was asked for.
    #[error("{runtime} at {}: {what}", endpoint.display())]
    Request {
        runtime: Runtime,
        endpoint: PathBuf,
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RuntimeError {
    /// The runtime is not there (or not answering), as opposed to having
    /// answered badly.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            RuntimeError::Unavailable { .. } | RuntimeError::Timeout { .. }
        )
    }
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

/// Where each runtime is asked; the defaults are each runtime's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub containerd: PathBuf,
    pub crio: PathBuf,
    pub docker: PathBuf,
    pub podman_root: PathBuf,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            containerd: PathBuf::from(containerd::DEFAULT_SOCKET),
            crio: PathBuf::from(crio::DEFAULT_SOCKET),
            docker: PathBuf::from(docker::DEFAULT_SOCKET),
            podman_root: PathBuf::from(podman::DEFAULT_ROOT),
        }
    }
}

/// Every runtime driftwatch asks, in the order a container of unknown
/// runtime is looked for.
#[derive(Clone)]
pub struct Runtimes {
    clients: Vec<Arc<dyn RuntimeClient>>,
}

impl std::fmt::Debug for Runtimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.clients
                    .iter()
                    .map(|c| format!("{} at {}", c.runtime(), c.endpoint().display())),
            )
            .finish()
    }
}

impl Runtimes {
    /// Clients for the runtimes at `endpoints`. Nothing is contacted yet;
    /// a runtime that is not installed costs a failed connect when asked.
    pub fn new(endpoints: &Endpoints) -> Runtimes {
        Runtimes::from_clients(vec![
            Arc::new(docker::DockerClient::new(&endpoints.docker)),
            Arc::new(containerd::ContainerdClient::new(&endpoints.containerd)),
            Arc::new(crio::CrioClient::new(&endpoints.crio)),
            Arc::new(podman::PodmanClient::new(&endpoints.podman_root)),
        ])
    }

    pub fn from_clients(clients: Vec<Arc<dyn RuntimeClient>>) -> Runtimes {
        Runtimes { clients }
    }

    pub fn clients(&self) -> &[Arc<dyn RuntimeClient>] {
        &self.clients
    }

    /// Every container every runtime lists, each with its runtime, and the
    /// runtimes that could not answer (why, for messages). A runtime that
    /// is not there lists nothing.
    pub async fn list_all(&self) -> (Vec<KnownContainer>, Vec<RuntimeError>) {
        let lists =
            futures::future::join_all(self.clients.iter().map(|c| async move { c.list().await }))
                .await;
        let mut all = Vec::new();
        let mut failed = Vec::new();
        for l in lists {
            match l {
                Ok(l) => all.extend(l),
                Err(e) => failed.push(e),
            }
        }
        (all, failed)
    }

    /// One container by id: the runtime `hint` names first, then the rest.
    /// The first that knows it answers; runtimes that failed are returned
    /// beside the answer.
    pub async fn inspect(
        &self,
        id: &str,
        hint: Option<&Runtime>,
    ) -> (Option<KnownContainer>, Vec<RuntimeError>) {
        let mut failed = Vec::new();
        for c in self.in_order(hint) {
            match c.inspect(id).await {
                Ok(Some(k)) => return (Some(k), failed),
                Ok(None) => {}
                Err(e) => failed.push(e),
            }
        }
        (None, failed)
    }

    /// The clients, `hint`'s first.
    pub fn in_order(&self, hint: Option<&Runtime>) -> Vec<&Arc<dyn RuntimeClient>> {
        let mut v: Vec<&Arc<dyn RuntimeClient>> = self.clients.iter().collect();
        if let Some(h) = hint {
            v.sort_by_key(|c| c.runtime() != *h);
        }
        v
    }
}

/// Labels or annotations as a runtime's API gives them (a missing map is
/// an empty one).
pub type Annotations = BTreeMap<String, String>;
