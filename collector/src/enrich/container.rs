//! Container metadata for events: name, runtime, image, and the pod the
//! runtime's CRI annotations name, from the cache the runtimes' clients
//! fill in the background ([`crate::container::metadata`]). The id itself
//! comes from the task's cgroup, read by the kernel source with
//! [`crate::container::cgroup`].
//!
//! Runs on the chain thread and never waits: a container the cache does not
//! know is asked about in the background (at most every [`ASK_AGAIN`]), and
//! its event goes on with what the source knew. What no runtime knows stays
//! `None`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftwatch_sdk::{Container, Event, K8s};
use tokio::sync::mpsc;

use super::Enricher;
use crate::container::metadata::{self, MetadataCache, Request};
use crate::container::{Runtimes, UNKNOWN_ID};

/// How often the same unknown id is asked about.
pub const ASK_AGAIN: Duration = Duration::from_secs(2);
/// Ids remembered as asked at most; past that the memory starts over.
const MAX_ASKED: usize = 4096;

pub struct ContainerEnricher {
    cache: Arc<MetadataCache>,
    requests: mpsc::Sender<Request>,
    /// When each unknown id was last asked about.
    asked: HashMap<String, Instant>,
}

impl ContainerEnricher {
    pub fn new(cache: Arc<MetadataCache>, requests: mpsc::Sender<Request>) -> ContainerEnricher {
        ContainerEnricher {
            cache,
            requests,
            asked: HashMap::new(),
        }
    }

    /// Starts the runtimes' clients on the current tokio runtime; the
    /// enricher, and the tasks to keep (or abort) for as long as it is used.
    pub fn start(runtimes: &Runtimes) -> (ContainerEnricher, Vec<tokio::task::JoinHandle<()>>) {
        let s = metadata::start(runtimes);
        (ContainerEnricher::new(s.cache, s.requests), s.tasks)
    }

    fn ask(&mut self, c: &Container) {
        let now = Instant::now();
        if self
            .asked
            .get(&c.id)
            .is_some_and(|at| now.duration_since(*at) < ASK_AGAIN)
        {
            return;
        }
        if self.asked.len() >= MAX_ASKED {
            self.asked.clear();
        }
        let req = Request {
            id: c.id.clone(),
            hint: c.runtime.clone(),
        };
        // A full queue: the lookups are behind; this id is asked again at
        // its next event.
        if self.requests.try_send(req).is_ok() {
            self.asked.insert(c.id.clone(), now);
        }
    }
}

impl Enricher for ContainerEnricher {
    fn enrich(&mut self, event: &mut Event) {
        let Some(c) = event.container.as_mut() else {
            return;
        };
        if c.id.is_empty() || c.id == UNKNOWN_ID {
            return;
        }
        let Some(entry) = self.cache.get(&c.id) else {
            let c = c.clone();
            self.ask(&c);
            return;
        };
        fill_missing(c, &entry.container);
        if let Some(k) = &entry.k8s {
            fill_k8s(event.k8s.get_or_insert_with(K8s::default), k);
        }
    }
}

/// What the event's container does not say yet, taken from the runtime's
/// answer; what the source already said wins. Every field is listed (no
/// `..`), so a field added to the schema cannot be missed.
fn fill_missing(c: &mut Container, from: &Container) {
    let Container {
        id: _,
        name,
        runtime,
        image_repository,
        image_tag,
        image_digest,
        image_id,
    } = from;
    let or = |mine: &mut Option<String>, theirs: &Option<String>| {
        if mine.is_none() {
            mine.clone_from(theirs);
        }
    };
    or(&mut c.name, name);
    if c.runtime.is_none() {
        c.runtime.clone_from(runtime);
    }
    or(&mut c.image_repository, image_repository);
    or(&mut c.image_tag, image_tag);
    or(&mut c.image_digest, image_digest);
    or(&mut c.image_id, image_id);
}

/// The pod identity the runtime stored, where the event has none.
fn fill_k8s(k: &mut K8s, from: &K8s) {
    let or = |mine: &mut Option<String>, theirs: &Option<String>| {
        if mine.is_none() {
            mine.clone_from(theirs);
        }
    };
    or(&mut k.namespace, &from.namespace);
    or(&mut k.pod_name, &from.pod_name);
    or(&mut k.pod_uid, &from.pod_uid);
    or(&mut k.container_name, &from.container_name);
    if k.labels.is_empty() {
        k.labels.clone_from(&from.labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use driftwatch_sdk::Runtime;

    use crate::container::podman::PodmanClient;

    const ID: &str = "3ab290c732230f85615f8c1a30667d2ab7059f721bf2bd086b6e4f5baa4a46c9";

    fn write_store(dir: &Path, containers: &str, images: &str) {
        std::fs::create_dir_all(dir.join("overlay-containers")).unwrap();
        std::fs::create_dir_all(dir.join("overlay-images")).unwrap();
        std::fs::write(dir.join("overlay-containers/containers.json"), containers).unwrap();
        std::fs::write(dir.join("overlay-images/images.json"), images).unwrap();
    }

    fn containers_json(ids: &[&str]) -> String {
        let items: Vec<String> = ids
            .iter()
            .map(|id| {
                format!(
                    r#"{{"id":"{id}","names":["web-{}"],"image":"img1","layer":"l","metadata":"{{\"image-name\":\"localhost/dw-test:3\",\"name\":\"web\"}}"}}"#,
                    &id[..4]
                )
            })
            .collect();
        format!("[{}]", items.join(","))
    }

    const IMAGES: &str = r#"[{"id":"img1","digest":"sha256:d1","names":["localhost/other:9"]}]"#;

    fn event_in(id: &str) -> Event {
        Event {
            container: Some(Container {
                id: id.into(),
                ..Container::default()
            }),
            ..Event::default()
        }
    }

    /// Enriches `ev` until `done` says so, as the chain would event after
    /// event.
    async fn enrich_until(
        e: &mut ContainerEnricher,
        id: &str,
        done: impl Fn(&Event) -> bool,
    ) -> Event {
        for _ in 0..300 {
            let mut ev = event_in(id);
            e.enrich(&mut ev);
            if done(&ev) {
                return ev;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never enriched");
    }

    #[tokio::test]
    async fn podman_metadata_fills_the_container_and_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        write_store(dir.path(), "[]", IMAGES);
        let runtimes = Runtimes::from_clients(vec![Arc::new(PodmanClient::new(dir.path()))]);
        let (mut e, tasks) = ContainerEnricher::start(&runtimes);
        let mut ev = event_in(ID);
        e.enrich(&mut ev);
        assert_eq!(ev.container.unwrap().name, None, "not created yet");
        // Created after the daemon started: the inotify watch brings it in.
        write_store(dir.path(), &containers_json(&[ID]), IMAGES);
        let ev = enrich_until(&mut e, ID, |ev| {
            ev.container.as_ref().is_some_and(|c| c.name.is_some())
        })
        .await;
        let c = ev.container.unwrap();
        assert_eq!(c.name.as_deref(), Some("web-3ab2"));
        assert_eq!(c.runtime, Some(Runtime::Podman));
        // The name the container was created from wins over the image's first name.
        assert_eq!(c.image_repository.as_deref(), Some("localhost/dw-test"));
        assert_eq!(c.image_tag.as_deref(), Some("3"));
        assert_eq!(c.image_digest.as_deref(), Some("sha256:d1"));
        assert_eq!(c.image_id.as_deref(), Some("img1"));
        assert!(ev.k8s.is_none(), "no pod");

        // Unknown ids, the unknown container and host processes are left alone.
        for id in ["f".repeat(64), UNKNOWN_ID.to_string()] {
            let mut ev = event_in(&id);
            e.enrich(&mut ev);
            assert_eq!(ev.container.unwrap().name, None);
        }
        let mut host = Event::default();
        e.enrich(&mut host);
        assert!(host.container.is_none());

        // Removed: the watch notices, the entry goes.
        write_store(dir.path(), "[]", IMAGES);
        enrich_until(&mut e, ID, |ev| {
            ev.container.as_ref().is_some_and(|c| c.name.is_none())
        })
        .await;
        for t in tasks {
            t.abort();
        }
    }

    #[tokio::test]
    async fn a_miss_is_unknown_at_once_and_asked_about_once() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut e = ContainerEnricher::new(Arc::new(MetadataCache::default()), tx);
        for _ in 0..5 {
            let mut ev = event_in(ID);
            e.enrich(&mut ev);
            assert_eq!(
                ev.container.unwrap(),
                Container {
                    id: ID.into(),
                    ..Container::default()
                }
            );
        }
        let first = rx.try_recv().unwrap();
        assert_eq!(first.id, ID);
        assert!(rx.try_recv().is_err(), "asked once, not per event");
    }

    #[test]
    fn what_the_source_said_wins() {
        let mut c = Container {
            id: ID.into(),
            name: Some("given".into()),
            ..Container::default()
        };
        fill_missing(
            &mut c,
            &Container {
                id: ID.into(),
                name: Some("runtime".into()),
                image_tag: Some("1".into()),
                ..Container::default()
            },
        );
        assert_eq!(c.name.as_deref(), Some("given"));
        assert_eq!(c.image_tag.as_deref(), Some("1"));
        let mut k = K8s {
            namespace: Some("ns".into()),
            ..K8s::default()
        };
        fill_k8s(
            &mut k,
            &K8s {
                namespace: Some("other".into()),
                pod_name: Some("p".into()),
                ..K8s::default()
            },
        );
        assert_eq!(
            (k.namespace.as_deref(), k.pod_name.as_deref()),
            (Some("ns"), Some("p"))
        );
    }
}
