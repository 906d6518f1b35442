//! containerd, through its v1 gRPC API on `/run/containerd/containerd.sock`.
//!
//! The client is `containerd-client`, the containerd project's own Rust
//! bindings generated from containerd's API protos: maintained with the
//! API, on the same tonic and prost versions as the OTLP exporter (so one
//! gRPC stack in the binary), and with every service this needs
//! (namespaces, containers, images, snapshots, events). Hand-written
//! messages would have saved a build-time `protoc`, at the price of
//! re-declaring field numbers driftwatch would then own.
//!
//! Every namespace the daemon has is searched: `k8s.io` (the kubelet's,
//! through the CRI plugin), `moby`, `default` (`ctr`, nerdctl) and any
//! other. Docker runs each of its containers as a containerd container in
//! `moby` too, an empty shell (no image, one label pointing at Docker's
//! bundle): those are left to Docker's API, which describes them, so that
//! containerd's shell never overwrites Docker's answer. A container's pod
//! comes from the CRI plugin's annotations in its OCI spec ([`super::cri`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use containerd_client::services::v1::{
    GetContainerRequest, GetImageRequest, ListContainersRequest, ListNamespacesRequest,
    SubscribeRequest,
    containers_client::ContainersClient,
    events_client::EventsClient,
    images_client::ImagesClient,
    namespaces_client::NamespacesClient,
    snapshots::{MountsRequest, snapshots_client::SnapshotsClient},
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{self, Code, Status};
use driftwatch_sdk::Runtime;
use futures::StreamExt;
use futures::future::BoxFuture;
use prost::Message;

use super::{
    Annotations, Change, ChangeStream, KnownContainer, Layers, RuntimeClient, RuntimeError,
};

pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";

/// How long one API call may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How long the namespace list is reused.
const NAMESPACES_FOR: Duration = Duration::from_secs(30);

pub struct ContainerdClient {
    socket: PathBuf,
    /// The connection, made at the first call and dropped when the daemon
    /// stops answering.
    channel: tokio::sync::Mutex<Option<Channel>>,
    namespaces: Mutex<Option<(Instant, Vec<String>)>>,
    /// A node runs many containers of few images.
    digests: Mutex<Digests>,
}

/// (namespace, image name) → the digest it pointed at, and when that was
/// asked.
type Digests = HashMap<(String, String), (Instant, Option<String>)>;

impl ContainerdClient {
    pub fn new(socket: &Path) -> ContainerdClient {
        ContainerdClient {
            socket: socket.to_path_buf(),
            channel: tokio::sync::Mutex::new(None),
            namespaces: Mutex::new(None),
            digests: Mutex::new(HashMap::new()),
        }
    }

    fn unavailable(&self, source: Box<dyn std::error::Error + Send + Sync>) -> RuntimeError {
        RuntimeError::Unavailable {
            runtime: Runtime::Containerd,
            endpoint: self.socket.clone(),
            source,
        }
    }

    async fn channel(&self) -> Result<Channel, RuntimeError> {
        let mut slot = self.channel.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        // A missing socket is told apart before tonic's generic transport error.
        if let Err(e) = std::fs::metadata(&self.socket) {
            return Err(self.unavailable(Box::new(e)));
        }
        let c = tokio::time::timeout(TIMEOUT, containerd_client::connect(&self.socket))
            .await
            .map_err(|_| self.timeout())?
            .map_err(|e| self.unavailable(Box::new(e)))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    fn timeout(&self) -> RuntimeError {
        RuntimeError::Timeout {
            runtime: Runtime::Containerd,
            endpoint: self.socket.clone(),
            after: TIMEOUT,
        }
    }

    /// Runs one call with the deadline, turning a dead connection into
    /// [`RuntimeError::Unavailable`] (and forgetting it) and `NotFound`
    /// into `None`.
    async fn call<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<Option<T>, RuntimeError> {
        let status = match tokio::time::timeout(TIMEOUT, fut).await {
            Err(_) => return Err(self.timeout()),
            Ok(Ok(r)) => return Ok(Some(r.into_inner())),
            Ok(Err(s)) => s,
        };
        match status.code() {
            Code::NotFound => Ok(None),
            Code::Unavailable | Code::Cancelled => {
                *self.channel.lock().await = None;
                Err(self.unavailable(Box::new(status)))
            }
            _ => Err(RuntimeError::Request {
                runtime: Runtime::Containerd,
                endpoint: self.socket.clone(),
                what: what.to_string(),
                source: Box::new(status),
            }),
        }
    }

    /// A request in namespace `ns`.
    fn in_ns<T>(ns: &str, msg: T) -> Option<tonic::Request<T>> {
        let mut req = tonic::Request::new(msg);
        let value = ns.parse().ok()?;
        req.metadata_mut().insert("containerd-namespace", value);
        Some(req)
    }

    /// The daemon's namespaces, listed at most every [`NAMESPACES_FOR`].
    async fn namespaces(&self) -> Result<Vec<String>, RuntimeError> {
        if let Ok(g) = self.namespaces.lock()
            && let Some((at, list)) = g.as_ref()
            && at.elapsed() < NAMESPACES_FOR
        {
            return Ok(list.clone());
        }
        let ch = self.channel().await?;
        let resp = self
            .call(
                "listing namespaces",
                NamespacesClient::new(ch).list(ListNamespacesRequest::default()),
            )
            .await?
            .unwrap_or_default();
        let list: Vec<String> = resp.namespaces.into_iter().map(|n| n.name).collect();
        if let Ok(mut g) = self.namespaces.lock() {
            *g = Some((Instant::now(), list.clone()));
        }
        Ok(list)
    }

    /// The digest the image `name` points at in `ns` (its manifest or
    /// index: what a registry serves it by), asked at most every
    /// [`NAMESPACES_FOR`] per image.
    async fn image_digest(&self, ch: &Channel, ns: &str, name: &str) -> Option<String> {
        let key = (ns.to_string(), name.to_string());
        if let Ok(g) = self.digests.lock()
            && let Some((at, d)) = g.get(&key)
            && at.elapsed() < NAMESPACES_FOR
        {
            return d.clone();
        }
        let d = self.ask_image_digest(ch, ns, name).await;
        if let Ok(mut g) = self.digests.lock() {
            if g.len() > 4096 {
                g.clear();
            }
            g.insert(key, (Instant::now(), d.clone()));
        }
        d
    }

    async fn ask_image_digest(&self, ch: &Channel, ns: &str, name: &str) -> Option<String> {
        let req = Self::in_ns(
            ns,
            GetImageRequest {
                name: name.to_string(),
            },
        )?;
        let resp = self
            .call("getting an image", ImagesClient::new(ch.clone()).get(req))
            .await
            .ok()??;
        resp.image?
            .target
            .map(|t| t.digest)
            .filter(|d| !d.is_empty())
    }

    /// The overlay layers of a container's snapshot.
    async fn layers(&self, ch: &Channel, ns: &str, snapshotter: &str, key: &str) -> Option<Layers> {
        if snapshotter.is_empty() || key.is_empty() {
            return None;
        }
        let req = Self::in_ns(
            ns,
            MountsRequest {
                snapshotter: snapshotter.to_string(),
                key: key.to_string(),
            },
        )?;
        let resp = self
            .call(
                "getting a snapshot's mounts",
                SnapshotsClient::new(ch.clone()).mounts(req),
            )
            .await
            .ok()??;
        let m = resp.mounts.into_iter().find(|m| m.r#type == "overlay")?;
        overlay_layers(&m.options)
    }

    /// What the API says of container `c` of namespace `ns`; its layers
    /// too when `detail` (a lookup by id, which `diff` uses).
    async fn known(
        &self,
        ch: &Channel,
        ns: &str,
        c: containerd_client::services::v1::Container,
        detail: bool,
    ) -> KnownContainer {
        let labels: Annotations = c.labels.into_iter().collect();
        let annotations = c
            .spec
            .as_ref()
            .map(|s| spec_annotations(&s.value))
            .unwrap_or_default();
        let maps = [&annotations, &labels];
        let pod = super::cri::pod_identity(&maps);
        // The container's image field may hold the image's id rather than
        // a name (CRI containers of older containerd): that is no name.
        let (image_id, own_name) = match c.image.strip_prefix("sha256:") {
            Some(_) => (Some(c.image.clone()), None),
            None => (None, Some(c.image).filter(|i| !i.is_empty())),
        };
        let image = super::cri::image_name(&maps).or(own_name);
        let image_digest = match &image {
            Some(i) => self.image_digest(ch, ns, i).await,
            None => None,
        };
        let layers = if detail {
            self.layers(ch, ns, &c.snapshotter, &c.snapshot_key).await
        } else {
            None
        };
        // The pod's container name, nerdctl's name, or the id a `ctr`
        // user chose.
        let names = pod
            .as_ref()
            .and_then(|p| p.container_name.clone())
            .or_else(|| labels.get("nerdctl/name").cloned())
            .into_iter()
            .chain(std::iter::once(c.id.clone()))
            .collect();
        KnownContainer {
            id: c.id,
            runtime: Some(Runtime::Containerd),
            names,
            image,
            image_id,
            image_digest,
            pod,
            layers,
        }
    }
}

/// The label Docker puts on the containerd container behind each of its own.
const DOCKER_BUNDLE: &str = "com.docker/engine.bundle.path";

/// Whether a containerd container is Docker's (see the module doc).
fn is_dockers(c: &containerd_client::services::v1::Container) -> bool {
    c.labels.contains_key(DOCKER_BUNDLE)
}

/// The OCI spec's annotations (the spec is JSON in an `Any`). A spec that
/// does not parse has none.
fn spec_annotations(json: &[u8]) -> Annotations {
    #[derive(serde::Deserialize, Default)]
    struct Spec {
        #[serde(default)]
        annotations: Option<Annotations>,
    }
    serde_json::from_slice::<Spec>(json)
        .ok()
        .and_then(|s| s.annotations)
        .unwrap_or_default()
}

/// `upperdir=` and `lowerdir=` of an overlay mount's options.
fn overlay_layers(options: &[String]) -> Option<Layers> {
    let mut upper = None;
    let mut lowers = Vec::new();
    for o in options {
        if let Some(u) = o.strip_prefix("upperdir=") {
            upper = Some(PathBuf::from(u));
        } else if let Some(l) = o.strip_prefix("lowerdir=") {
            lowers = l
                .split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect();
        }
    }
    Some(Layers {
        upper: upper?,
        lowers,
    })
}

impl RuntimeClient for ContainerdClient {
    fn runtime(&self) -> Runtime {
        Runtime::Containerd
    }

    fn endpoint(&self) -> &Path {
        &self.socket
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<KnownContainer>, RuntimeError>> {
        Box::pin(async move {
            let ch = self.channel().await?;
            let mut out = Vec::new();
            for ns in self.namespaces().await? {
                let Some(req) = Self::in_ns(&ns, ListContainersRequest::default()) else {
                    continue;
                };
                let list = self
                    .call(
                        "listing containers",
                        ContainersClient::new(ch.clone()).list(req),
                    )
                    .await?
                    .unwrap_or_default();
                for c in list.containers.into_iter().filter(|c| !is_dockers(c)) {
                    out.push(self.known(&ch, &ns, c, false).await);
                }
            }
            Ok(out)
        })
    }

    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<KnownContainer>, RuntimeError>> {
        Box::pin(async move {
            let ch = self.channel().await?;
            for ns in self.namespaces().await? {
                let Some(req) = Self::in_ns(&ns, GetContainerRequest { id: id.to_string() }) else {
                    continue;
                };
                let got = self
                    .call(
                        "getting a container",
                        ContainersClient::new(ch.clone()).get(req),
                    )
                    .await?;
                if let Some(c) = got.and_then(|r| r.container) {
                    if is_dockers(&c) {
                        return Ok(None);
                    }
                    return Ok(Some(self.known(&ch, &ns, c, true).await));
                }
            }
            Ok(None)
        })
    }

    fn watch(&self) -> Option<BoxFuture<'_, Result<ChangeStream, RuntimeError>>> {
        Some(Box::pin(async move {
            let ch = self.channel().await?;
            let req = SubscribeRequest {
                filters: vec![
                    r#"topic=="/containers/create""#.into(),
                    r#"topic=="/containers/delete""#.into(),
                ],
            };
            let stream = self
                .call(
                    "subscribing to events",
                    EventsClient::new(ch).subscribe(req),
                )
                .await?
                .ok_or_else(|| self.unavailable("no event stream".into()))?;
            let socket = self.socket.clone();
            let changes = stream.filter_map(move |env| {
                let socket = socket.clone();
                async move {
                    match env {
                        Ok(env) => {
                            change(&env.topic, env.event.as_ref().map(|e| &e.value[..])).map(Ok)
                        }
                        Err(status) => Some(Err(RuntimeError::Unavailable {
                            runtime: Runtime::Containerd,
                            endpoint: socket,
                            source: Box::new(status),
                        })),
                    }
                }
            });
            Ok(changes.boxed())
        }))
    }
}

/// An event envelope's topic and payload as a change.
fn change(topic: &str, payload: Option<&[u8]>) -> Option<Change> {
    use containerd_client::events::{ContainerCreate, ContainerDelete};
    let payload = payload?;
    match topic {
        "/containers/create" => ContainerCreate::decode(payload)
            .ok()
            .map(|e| Change::Created(e.id)),
        "/containers/delete" => ContainerDelete::decode(payload)
            .ok()
            .map(|e| Change::Removed(e.id)),
        _ => None,
    }
}

/// Fuzzing entry (fuzz/): an OCI spec's annotations and the protobuf
/// payloads of the create and delete events.
#[cfg(fuzzing)]
pub fn fuzz_documents(data: &[u8]) {
    let annotations = spec_annotations(data);
    let _ = super::cri::pod_identity(&[&annotations]);
    let _ = super::cri::image_name(&[&annotations]);
    for topic in ["/containers/create", "/containers/delete"] {
        let _ = change(topic, Some(data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_annotations_and_layers() {
        let spec = br#"{"ociVersion":"1.0.2","annotations":{"io.kubernetes.cri.sandbox-name":"web-0"},"process":{}}"#;
        assert_eq!(
            spec_annotations(spec)
                .get("io.kubernetes.cri.sandbox-name")
                .map(String::as_str),
            Some("web-0")
        );
        assert!(spec_annotations(b"not json").is_empty());
        let l = overlay_layers(&[
            "index=off".into(),
            "workdir=/s/4/work".into(),
            "upperdir=/s/4/fs".into(),
            "lowerdir=/s/3/fs:/s/2/fs".into(),
        ])
        .unwrap();
        assert_eq!(l.upper, Path::new("/s/4/fs"));
        assert_eq!(
            l.lowers,
            vec![PathBuf::from("/s/3/fs"), PathBuf::from("/s/2/fs")]
        );
        assert!(overlay_layers(&["lowerdir=/a".into()]).is_none());
    }

    #[test]
    fn events_become_changes() {
        use containerd_client::events::{ContainerCreate, ContainerDelete};
        let create = ContainerCreate {
            id: "abc".into(),
            ..ContainerCreate::default()
        }
        .encode_to_vec();
        let delete = ContainerDelete { id: "abc".into() }.encode_to_vec();
        assert_eq!(
            change("/containers/create", Some(&create)),
            Some(Change::Created("abc".into()))
        );
        assert_eq!(
            change("/containers/delete", Some(&delete)),
            Some(Change::Removed("abc".into()))
        );
        assert_eq!(change("/tasks/exit", Some(&delete)), None);
        assert_eq!(change("/containers/delete", None), None);
    }
}
