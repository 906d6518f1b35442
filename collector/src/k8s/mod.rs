//! Kubernetes: who a container belongs to, whether it runs what was
//! approved, and whether its manifests make drift impossible to begin with.
//!
//! - [`enrich`]: the daemon's pod enricher (a reflector over this node's pods).
//! - [`digests`]: `driftwatch verify-digests`, running image digests against
//!   the owning workloads or a directory of approved manifests.
//! - [`audit`]: `driftwatch audit-manifests`, the immutability posture of
//!   manifests on disk, with [`sarif`] output.
//! - [`manifest`], [`image`], [`workload`], [`client`]: the pieces they share.

pub mod audit;
pub mod client;
pub mod commands;
pub mod digests;
pub mod enrich;
pub mod image;
pub mod manifest;
pub mod sarif;
pub mod table;
pub mod workload;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Manifest {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {what}: {message}")]
    Object {
        path: PathBuf,
        what: String,
        message: String,
    },
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes cluster configured: {0}")]
    NoCluster(#[source] kube::config::InferConfigError),
    #[error("Kubernetes client: {0}")]
    Client(#[source] Box<kube::Error>),
    #[error("Kubernetes client: {url}: {source}")]
    Url {
        url: String,
        source: http::uri::InvalidUri,
    },
    #[error("Kubernetes client: {0}")]
    Json(#[source] serde_json::Error),
    #[error("listing {what} from the API server: {source}")]
    List {
        what: String,
        source: Box<kube::Error>,
    },
    #[error("watching pods: {0}")]
    Watch(String),
    #[error("writing the report: {0}")]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
}
