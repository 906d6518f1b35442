//! CRI-O, through the inspect endpoint it serves beside the CRI on its
//! socket: `GET /containers/{id}` answers the container's `ContainerInfo`
//! (CRI-O `pkg/types/types.go`: `name`, `pid`, `image`, `image_ref`,
//! `labels`, `annotations`, `crio_annotations`, `root`, `sandbox`, ...), and
//! 404 for an id it does not know (`server/inspect.go`).
//!
//! The endpoint has no listing and no event stream, so containers are
//! looked up one by one and cached entries are checked again periodically
//! (see [`super::metadata`]). CRI-O is not packaged for the machines the
//! tests run on: its client is tested against answers in the shape CRI-O's
//! source gives, served on a unix socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use driftwatch_sdk::Runtime;
use futures::future::BoxFuture;
use serde::Deserialize;

use super::http::{self, HttpError};
use super::{Annotations, KnownContainer, RuntimeClient, RuntimeError};

pub const DEFAULT_SOCKET: &str = "/var/run/crio/crio.sock";

const TIMEOUT: Duration = Duration::from_secs(5);

pub struct CrioClient {
    socket: PathBuf,
}

impl CrioClient {
    pub fn new(socket: &Path) -> CrioClient {
        CrioClient {
            socket: socket.to_path_buf(),
        }
    }
}

/// `ContainerInfo`, the parts read.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ContainerInfo {
    /// `k8s_<container>_<pod>_<namespace>_<uid>_<attempt>` for the kubelet's.
    name: String,
    pid: i64,
    /// The image's name.
    image: String,
    /// The image as resolved: `repo@sha256:...`, or its id.
    image_ref: String,
    labels: Option<Annotations>,
    annotations: Option<Annotations>,
    crio_annotations: Option<Annotations>,
}

impl ContainerInfo {
    fn into_known(self, id: &str) -> KnownContainer {
        let labels = self.labels.unwrap_or_default();
        let annotations = self.annotations.unwrap_or_default();
        let crio = self.crio_annotations.unwrap_or_default();
        let maps = [&labels, &crio, &annotations];
        let pod = super::cri::pod_identity(&maps);
        let (image_digest, image_id) = match self.image_ref.split_once('@') {
            Some((_, d)) => (Some(d.to_string()), None),
            None if !self.image_ref.is_empty() => (None, Some(self.image_ref.clone())),
            None => (None, None),
        };
        let image = Some(self.image)
            .filter(|i| !i.is_empty())
            .or_else(|| super::cri::image_name(&maps));
        // The pod's container name is what people call it; the runtime's
        // own `k8s_...` name is kept second.
        let names = pod
            .as_ref()
            .and_then(|p| p.container_name.clone())
            .into_iter()
            .chain(Some(self.name).filter(|n| !n.is_empty()))
            .collect();
        KnownContainer {
            id: id.to_string(),
            runtime: Some(Runtime::CriO),
            names,
            image,
            image_id,
            image_digest,
            pod,
            layers: None,
        }
    }
}

impl RuntimeClient for CrioClient {
    fn runtime(&self) -> Runtime {
        Runtime::CriO
    }

    fn endpoint(&self) -> &Path {
        &self.socket
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<KnownContainer>, RuntimeError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn lists(&self) -> bool {
        false
    }

    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<KnownContainer>, RuntimeError>> {
        Box::pin(async move {
            let path = format!("/containers/{}", http::encode(id));
            let body = match http::get(&self.socket, &path, TIMEOUT).await {
                Ok(b) => b,
                Err(e) if e.status() == Some(::http::StatusCode::NOT_FOUND) => return Ok(None),
                Err(e @ HttpError::Connect { .. }) => {
                    return Err(RuntimeError::Unavailable {
                        runtime: Runtime::CriO,
                        endpoint: self.socket.clone(),
                        source: Box::new(e),
                    });
                }
                Err(HttpError::Timeout { after, .. }) => {
                    return Err(RuntimeError::Timeout {
                        runtime: Runtime::CriO,
                        endpoint: self.socket.clone(),
                        after,
                    });
                }
                Err(e) => {
                    return Err(RuntimeError::Request {
                        runtime: Runtime::CriO,
                        endpoint: self.socket.clone(),
                        what: "inspecting a container".into(),
                        source: Box::new(e),
                    });
                }
            };
            let info: ContainerInfo =
                serde_json::from_slice(&body).map_err(|source| RuntimeError::Request {
                    runtime: Runtime::CriO,
                    endpoint: self.socket.clone(),
                    what: "inspecting a container: not the JSON expected".into(),
                    source: Box::new(source),
                })?;
            Ok(Some(info.into_known(id)))
        })
    }
}

/// Fuzzing entry (fuzz/): CRI-O's container inspect document.
#[cfg(fuzzing)]
pub fn fuzz_inspect(data: &[u8]) {
    if let Ok(info) = serde_json::from_slice::<ContainerInfo>(data) {
        let _ = info.into_known("0123456789ab");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// CRI-O is not packaged for the machines the tests run on. This is a
    /// `GET /containers/{id}` answer in the shape CRI-O's source gives it
    /// (`pkg/types/types.go` `ContainerInfo`, filled in `server/inspect.go`
    /// from the container's CRI labels and annotations and the OCI spec
    /// annotations CRI-O sets), for a kubelet-made container.
    const INFO: &str = r#"{
        "name": "k8s_server_api-5f7c9_prod_a1b2c3d4-0000-4000-8000-000000000001_0",
        "pid": 4242,
        "image": "registry.example/team/api:2.1",
        "image_ref": "registry.example/team/api@sha256:1111111111111111111111111111111111111111111111111111111111111111",
        "created_time": 1764800000000000000,
        "labels": {
            "io.kubernetes.container.name": "server",
            "io.kubernetes.pod.name": "api-5f7c9",
            "io.kubernetes.pod.namespace": "prod",
            "io.kubernetes.pod.uid": "a1b2c3d4-0000-4000-8000-000000000001"
        },
        "annotations": {"io.kubernetes.container.hash": "1a2b3c"},
        "crio_annotations": {
            "io.kubernetes.cri-o.ContainerType": "container",
            "io.kubernetes.cri-o.ImageName": "registry.example/team/api:2.1"
        },
        "log_path": "/var/log/pods/prod_api-5f7c9_a1b2/server/0.log",
        "root": "/var/lib/containers/storage/overlay/abc/merged",
        "sandbox": "9f9f",
        "ip_addresses": ["10.0.0.7"]
    }"#;

    const ID: &str = "3ab290c732230f85615f8c1a30667d2ab7059f721bf2bd086b6e4f5baa4a46c9";

    /// Serves CRI-O's answers on a unix socket: `INFO` for `ID`, 404 (with
    /// CRI-O's text) for anything else.
    async fn fake_crio(sock: PathBuf) -> tokio::task::JoinHandle<()> {
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let resp = if req.starts_with(&format!("GET /containers/{ID} ")) {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{INFO}",
                        INFO.len()
                    )
                } else {
                    let msg = "can't find the container with id x\n";
                    format!(
                        "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\r\n{msg}",
                        msg.len()
                    )
                };
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        })
    }

    #[tokio::test]
    async fn inspect_answers_in_cri_o_shape() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("crio.sock");
        let server = fake_crio(sock.clone()).await;
        let client = CrioClient::new(&sock);
        let k = client.inspect(ID).await.unwrap().unwrap();
        let (c, k8s) = k.to_event();
        assert_eq!(c.id, ID);
        assert_eq!(c.runtime, Some(Runtime::CriO));
        assert_eq!(c.name.as_deref(), Some("server"));
        assert_eq!(
            c.image_repository.as_deref(),
            Some("registry.example/team/api")
        );
        assert_eq!(c.image_tag.as_deref(), Some("2.1"));
        assert_eq!(
            c.image_digest.as_deref(),
            Some("sha256:1111111111111111111111111111111111111111111111111111111111111111")
        );
        let k8s = k8s.unwrap();
        assert_eq!(k8s.namespace.as_deref(), Some("prod"));
        assert_eq!(k8s.pod_name.as_deref(), Some("api-5f7c9"));
        assert_eq!(
            k8s.pod_uid.as_deref(),
            Some("a1b2c3d4-0000-4000-8000-000000000001")
        );
        assert_eq!(k8s.container_name.as_deref(), Some("server"));
        // An id CRI-O does not know.
        assert_eq!(client.inspect(&"f".repeat(64)).await.unwrap(), None);
        server.abort();
    }

    #[tokio::test]
    async fn an_absent_or_refusing_socket_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let absent = CrioClient::new(&dir.path().join("none.sock"));
        let err = absent.inspect(ID).await.unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        // A socket file nobody listens on any more: connection refused.
        let sock = dir.path().join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let err = CrioClient::new(&sock).inspect(ID).await.unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        assert!(err.to_string().contains("dead.sock"), "{err}");
    }
}
