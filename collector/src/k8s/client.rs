//! A kube client from the in-cluster service account or a kubeconfig.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::K8sError;

/// A client for the cluster: from `kubeconfig` when given, otherwise the
/// usual inference (`KUBECONFIG` or `~/.kube/config`, then the in-cluster
/// service account). Nothing is contacted yet.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Client, K8sError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| K8sError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| K8sError::Kubeconfig {
                    path: path.to_path_buf(),
                    source,
                })?
        }
        None => Config::infer().await.map_err(K8sError::NoCluster)?,
    };
    Client::try_from(config).map_err(|e| K8sError::Client(Box::new(e)))
}

/// A client for a plain `http://` API endpoint (a `kubectl proxy`, or the
/// loopback server the tests replay recorded API responses from).
pub fn for_url(url: &str) -> Result<Client, K8sError> {
    let uri = url.parse().map_err(|source| K8sError::Url {
        url: url.to_string(),
        source,
    })?;
    Client::try_from(Config::new(uri)).map_err(|e| K8sError::Client(Box::new(e)))
}
