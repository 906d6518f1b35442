//! Docker, through its Engine API on `/var/run/docker.sock`.
//!
//! Paths carry no API version: the daemon then answers in its own, and the
//! few fields read here (`Name`, `Config.Image`, `Config.Labels`, `Image`,
//! `GraphDriver`, `RepoDigests`, the events' `Action`) are the same in
//! every version since 1.24. Containers Kubernetes made through cri-dockerd
//! carry the kubelet's labels, read by [`super::cri`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use driftwatch_sdk::Runtime;
use futures::StreamExt;
use futures::future::BoxFuture;
use http_body_util::BodyStream;
use serde::Deserialize;

use super::http::{self, HttpError};
use super::{
    Annotations, Change, ChangeStream, KnownContainer, Layers, RuntimeClient, RuntimeError,
};

pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// How long one API call may take.
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct DockerClient {
    socket: PathBuf,
}

impl DockerClient {
    pub fn new(socket: &Path) -> DockerClient {
        DockerClient {
            socket: socket.to_path_buf(),
        }
    }

    fn error(&self, what: &str, e: HttpError) -> RuntimeError {
        match e {
            HttpError::Connect { .. } => RuntimeError::Unavailable {
                runtime: Runtime::Docker,
                endpoint: self.socket.clone(),
                source: Box::new(e),
            },
            HttpError::Timeout { after, .. } => RuntimeError::Timeout {
                runtime: Runtime::Docker,
                endpoint: self.socket.clone(),
                after,
            },
            e => RuntimeError::Request {
                runtime: Runtime::Docker,
                endpoint: self.socket.clone(),
                what: what.to_string(),
                source: Box::new(e),
            },
        }
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        what: &str,
        path: &str,
    ) -> Result<Option<T>, RuntimeError> {
        let body = match http::get(&self.socket, path, TIMEOUT).await {
            Ok(b) => b,
            Err(e) if e.status() == Some(::http::StatusCode::NOT_FOUND) => return Ok(None),
            Err(e) => return Err(self.error(what, e)),
        };
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|source| RuntimeError::Request {
                runtime: Runtime::Docker,
                endpoint: self.socket.clone(),
                what: format!("{what}: not the JSON expected"),
                source: Box::new(source),
            })
    }

    /// The image's repository digests, `None` when Docker does not know it.
    async fn image(&self, id: &str) -> Result<Option<Image>, RuntimeError> {
        self.get_json(
            "inspecting an image",
            &format!("/images/{}/json", http::encode(id)),
        )
        .await
    }
}

/// `GET /containers/{id}/json`, the parts read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspect {
    id: String,
    #[serde(default)]
    name: String,
    /// The image id (`sha256:...`).
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    config: Option<Config>,
    #[serde(default)]
    graph_driver: Option<GraphDriver>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Config {
    /// The image as the container was created from it: a name, or an id.
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    labels: Option<Annotations>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GraphDriver {
    #[serde(default)]
    name: String,
    #[serde(default)]
    data: Option<HashMap<String, String>>,
}

/// `GET /containers/json?all=1`, one entry.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Summary {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(rename = "ImageID", default)]
    image_id: Option<String>,
    #[serde(default)]
    labels: Option<Annotations>,
}

/// `GET /images/{id}/json` (or an entry of `/images/json`), the parts read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Image {
    id: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    repo_digests: Option<Vec<String>>,
}

impl Image {
    fn digest(&self) -> Option<String> {
        self.repo_digests
            .iter()
            .flatten()
            .find_map(|d| d.split_once('@').map(|(_, d)| d.to_string()))
    }

    fn first_tag(&self) -> Option<String> {
        self.repo_tags
            .iter()
            .flatten()
            .find(|t| !t.contains("<none>"))
            .cloned()
    }
}

/// The name the container was created from, unless that was an image id:
/// then the image's first tag.
fn image_name(given: Option<&str>, image: Option<&Image>) -> Option<String> {
    match given {
        Some(g) if !g.is_empty() && !g.starts_with("sha256:") => Some(g.to_string()),
        _ => image.and_then(Image::first_tag),
    }
}

/// overlay2's `UpperDir` and `LowerDir` (colon-separated, top-most first).
fn layers(gd: Option<&GraphDriver>) -> Option<Layers> {
    let gd = gd?;
    if gd.name != "overlay2" && gd.name != "overlay" {
        return None;
    }
    let data = gd.data.as_ref()?;
    let upper = data.get("UpperDir")?;
    let lowers = data
        .get("LowerDir")
        .map(|l| {
            l.split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    Some(Layers {
        upper: PathBuf::from(upper),
        lowers,
    })
}

fn name_of(n: &str) -> String {
    n.strip_prefix('/').unwrap_or(n).to_string()
}

impl RuntimeClient for DockerClient {
    fn runtime(&self) -> Runtime {
        Runtime::Docker
    }

    fn endpoint(&self) -> &Path {
        &self.socket
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<KnownContainer>, RuntimeError>> {
        Box::pin(async move {
            let list: Vec<Summary> = self
                .get_json("listing containers", "/containers/json?all=1")
                .await?
                .unwrap_or_default();
            let images: Vec<Image> = self
                .get_json("listing images", "/images/json")
                .await?
                .unwrap_or_default();
            let images: HashMap<&str, &Image> = images.iter().map(|i| (i.id.as_str(), i)).collect();
            Ok(list
                .into_iter()
                .map(|s| {
                    let image = s.image_id.as_deref().and_then(|i| images.get(i).copied());
                    let labels = s.labels.unwrap_or_default();
                    KnownContainer {
                        runtime: Some(Runtime::Docker),
                        names: s.names.iter().map(|n| name_of(n)).collect(),
                        image: image_name(s.image.as_deref(), image),
                        image_digest: image.and_then(Image::digest),
                        image_id: s.image_id,
                        pod: super::cri::pod_identity(&[&labels]),
                        layers: None,
                        id: s.id,
                    }
                })
                .collect())
        })
    }

    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<KnownContainer>, RuntimeError>> {
        Box::pin(async move {
            let path = format!("/containers/{}/json", http::encode(id));
            let Some(c) = self
                .get_json::<Inspect>("inspecting a container", &path)
                .await?
            else {
                return Ok(None);
            };
            let image = match c.image.as_deref() {
                Some(i) if !i.is_empty() => self.image(i).await?,
                _ => None,
            };
            let config = c.config.unwrap_or_default();
            let labels = config.labels.unwrap_or_default();
            Ok(Some(KnownContainer {
                runtime: Some(Runtime::Docker),
                names: vec![name_of(&c.name)],
                image: image_name(config.image.as_deref(), image.as_ref()),
                image_digest: image.as_ref().and_then(Image::digest),
                image_id: c.image,
                pod: super::cri::pod_identity(&[&labels]),
                layers: layers(c.graph_driver.as_ref()),
                id: c.id,
            }))
        })
    }

    fn watch(&self) -> Option<BoxFuture<'_, Result<ChangeStream, RuntimeError>>> {
        Some(Box::pin(async move {
            let filters = http::encode(r#"{"type":["container"]}"#);
            let path = format!("/events?filters={filters}");
            let resp = http::get_head(&self.socket, &path)
                .await
                .map_err(|e| self.error("watching events", e))?;
            if !resp.status().is_success() {
                return Err(RuntimeError::Request {
                    runtime: Runtime::Docker,
                    endpoint: self.socket.clone(),
                    what: "watching events".into(),
                    source: format!("answered {}", resp.status()).into(),
                });
            }
            let socket = self.socket.clone();
            let frames = BodyStream::new(resp.into_body());
            Ok(events(frames, socket))
        }))
    }
}

/// One event of `/events`, the parts read.
#[derive(Debug, Deserialize)]
struct Event {
    #[serde(rename = "Type", default)]
    kind: String,
    #[serde(rename = "Action", default)]
    action: String,
    /// `Actor.ID`: the container (the top-level `id` is gone from newer APIs).
    #[serde(rename = "Actor", default)]
    actor: Actor,
}

#[derive(Debug, Default, Deserialize)]
struct Actor {
    #[serde(rename = "ID", default)]
    id: String,
}

/// Docker's events, one JSON document per line (a line may span frames),
/// as changes: `create` and `destroy`; the rest say nothing the cache keeps.
fn events(frames: BodyStream<hyper::body::Incoming>, socket: PathBuf) -> ChangeStream {
    let state = (frames, Vec::<u8>::new(), socket);
    futures::stream::unfold(state, |(mut frames, mut buf, socket)| async move {
        loop {
            if let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                match serde_json::from_slice::<Event>(&line) {
                    Ok(e) if e.kind == "container" && e.action == "create" => {
                        return Some((Ok(Change::Created(e.actor.id)), (frames, buf, socket)));
                    }
                    Ok(e) if e.kind == "container" && e.action == "destroy" => {
                        return Some((Ok(Change::Removed(e.actor.id)), (frames, buf, socket)));
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::debug!("docker event not understood: {e}");
                        continue;
                    }
                }
            }
            if buf.len() > http::MAX_BODY {
                buf.clear();
            }
            match frames.next().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
                Some(Err(source)) => {
                    let err = RuntimeError::Unavailable {
                        runtime: Runtime::Docker,
                        endpoint: socket.clone(),
                        source: Box::new(source),
                    };
                    return Some((Err(err), (frames, buf, socket)));
                }
                None => return None,
            }
        }
    })
    .boxed()
}

/// Fuzzing entry (fuzz/): Docker's inspect, list, image and event
/// documents, and what is derived from them.
#[cfg(fuzzing)]
pub fn fuzz_documents(data: &[u8]) {
    if let Ok(i) = serde_json::from_slice::<Inspect>(data) {
        let _ = layers(i.graph_driver.as_ref());
        let given = i.config.as_ref().and_then(|c| c.image.as_deref());
        let _ = image_name(given, None);
    }
    if let Ok(img) = serde_json::from_slice::<Image>(data) {
        let _ = (img.digest(), img.first_tag(), image_name(None, Some(&img)));
    }
    let _ = serde_json::from_slice::<Vec<Summary>>(data);
    let _ = serde_json::from_slice::<Event>(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /containers/{id}/json` as Docker 20.10 answered it here
    /// (trimmed to the fields read, plus a few others).
    const INSPECT: &str = r#"{
        "Id": "f6971e768819cc8586d58c08ba250d1f857756ca5959a82a8a719bfcfb81876e",
        "Name": "/dw-rt-probe",
        "Image": "sha256:1811e35c3f285d711d7f21ad0ce51c3da319bde74a0990a31a1c5675a6579566",
        "State": {"Status": "running", "Running": true, "Pid": 28643},
        "Driver": "overlay2",
        "GraphDriver": {"Name": "overlay2", "Data": {
            "LowerDir": "/var/lib/docker/overlay2/11b5-init/diff:/var/lib/docker/overlay2/9f80/diff",
            "MergedDir": "/var/lib/docker/overlay2/11b5/merged",
            "UpperDir": "/var/lib/docker/overlay2/11b5/diff",
            "WorkDir": "/var/lib/docker/overlay2/11b5/work"}},
        "Config": {"Image": "localhost/dw-runtimes-probe:1", "Labels": {
            "io.kubernetes.pod.name": "web-0",
            "io.kubernetes.pod.namespace": "shop",
            "io.kubernetes.container.name": "app",
            "io.kubernetes.docker.type": "container"}}
    }"#;

    #[test]
    fn inspect_fields() {
        let c: Inspect = serde_json::from_str(INSPECT).unwrap();
        let l = layers(c.graph_driver.as_ref()).unwrap();
        assert_eq!(l.upper, Path::new("/var/lib/docker/overlay2/11b5/diff"));
        assert_eq!(
            l.lowers,
            vec![
                PathBuf::from("/var/lib/docker/overlay2/11b5-init/diff"),
                PathBuf::from("/var/lib/docker/overlay2/9f80/diff")
            ]
        );
        let config = c.config.unwrap();
        let pod = super::super::cri::pod_identity(&[&config.labels.unwrap()]).unwrap();
        assert_eq!(pod.container_name.as_deref(), Some("app"));
        assert_eq!(name_of(&c.name), "dw-rt-probe");
    }

    #[test]
    fn an_image_id_is_named_by_the_image() {
        let img = Image {
            id: "sha256:1".into(),
            repo_tags: Some(vec!["<none>:<none>".into(), "app:2".into()]),
            repo_digests: Some(vec!["docker.io/x/app@sha256:dd".into()]),
        };
        assert_eq!(
            image_name(Some("web:1"), Some(&img)).as_deref(),
            Some("web:1")
        );
        assert_eq!(
            image_name(Some("sha256:1"), Some(&img)).as_deref(),
            Some("app:2")
        );
        assert_eq!(image_name(None, None), None);
        assert_eq!(img.digest().as_deref(), Some("sha256:dd"));
    }
}
