//! Container metadata for events: the runtime stores
//! ([`crate::container::RuntimeStore`]) asked once per container id, the
//! answer cached. The id itself comes from the task's cgroup, parsed by the
//! kernel source with [`crate::container::cgroup`]. What no store knows
//! stays `None`.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use driftwatch_sdk::{Container, Event};

use super::Enricher;
use crate::container::{self, RuntimeStore, podman};

/// The kernel source's parser, where it has always imported it from.
pub use crate::container::cgroup::container_from_cgroup;

/// Fills `event.container` metadata from the runtime stores, cached by id.
///
/// Runs on the chain thread: a lookup costs a `stat` of the runtime's state
/// file (re-read only when it changed). Cached entries are re-validated
/// every `revalidate` so containers that went away leave the cache, and a
/// miss is retried at most every `retry_miss` (a container can be seen by
/// the kernel before its runtime writes its state).
pub struct ContainerEnricher {
    stores: Vec<Box<dyn RuntimeStore>>,
    cache: HashMap<String, Entry>,
    revalidate: Duration,
    retry_miss: Duration,
}

struct Entry {
    meta: Option<Container>,
    checked: Instant,
}

impl ContainerEnricher {
    pub fn new(stores: Vec<Box<dyn RuntimeStore>>) -> ContainerEnricher {
        ContainerEnricher {
            stores,
            cache: HashMap::new(),
            revalidate: Duration::from_secs(30),
            retry_miss: Duration::from_millis(200),
        }
    }

    /// The stores of the runtimes this host has (podman's default storage).
    pub fn with_default_stores() -> ContainerEnricher {
        ContainerEnricher::new(container::stores(Path::new(podman::DEFAULT_ROOT)))
    }

    fn lookup(&mut self, id: &str) -> Option<Container> {
        let now = Instant::now();
        if let Some(e) = self.cache.get(id) {
            let age = now.duration_since(e.checked);
            let fresh = match e.meta {
                Some(_) => age < self.revalidate,
                None => age < self.retry_miss,
            };
            if fresh {
                return e.meta.clone();
            }
            if e.meta.is_some()
                && self.stores.iter_mut().any(|s| s.exists(id))
                && let Some(e) = self.cache.get_mut(id)
            {
                e.checked = now;
                return e.meta.clone();
            }
            // Gone (or never known): forget it and ask again.
            self.cache.remove(id);
        }
        let meta = self.stores.iter_mut().find_map(|s| s.lookup(id));
        // Bound the cache: ids of dead containers that never come back.
        if self.cache.len() > 4096 {
            self.cache.clear();
        }
        self.cache.insert(
            id.to_string(),
            Entry {
                meta: meta.clone(),
                checked: now,
            },
        );
        meta
    }
}

impl Enricher for ContainerEnricher {
    fn enrich(&mut self, event: &mut Event) {
        let Some(id) = event.container.as_ref().map(|c| c.id.clone()) else {
            return;
        };
        let Some(meta) = self.lookup(&id) else {
            return;
        };
        let c: &mut Container = match event.container.as_mut() {
            Some(c) => c,
            None => return,
        };
        fill_missing(c, meta);
    }
}

/// What the event's container does not say yet, taken from the runtime's
/// answer; what the source already said wins. Every field is listed (no
/// `..`), so a field added to the schema cannot be missed.
fn fill_missing(c: &mut Container, from: Container) {
    let Container {
        id: _,
        name,
        runtime,
        image_repository,
        image_tag,
        image_digest,
        image_id,
    } = from;
    c.name = c.name.take().or(name);
    c.runtime = c.runtime.take().or(runtime);
    c.image_repository = c.image_repository.take().or(image_repository);
    c.image_tag = c.image_tag.take().or(image_tag);
    c.image_digest = c.image_digest.take().or(image_digest);
    c.image_id = c.image_id.take().or(image_id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    use crate::container::PodmanStore;

    use driftwatch_sdk::Runtime;

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

    #[test]
    fn podman_metadata_fills_the_container() {
        let dir = tempfile::tempdir().unwrap();
        write_store(dir.path(), &containers_json(&[ID]), IMAGES);
        let mut e =
            ContainerEnricher::new(vec![Box::new(PodmanStore::new(dir.path().to_path_buf()))]);
        let mut ev = event_in(ID);
        e.enrich(&mut ev);
        let c = ev.container.unwrap();
        assert_eq!(c.name.as_deref(), Some("web-3ab2"));
        assert_eq!(c.runtime, Some(Runtime::Podman));
        // The name the container was created from wins over the image's first name.
        assert_eq!(c.image_repository.as_deref(), Some("localhost/dw-test"));
        assert_eq!(c.image_tag.as_deref(), Some("3"));
        assert_eq!(c.image_digest.as_deref(), Some("sha256:d1"));
        assert_eq!(c.image_id.as_deref(), Some("img1"));

        // Unknown ids and host processes are left alone.
        let other = "f".repeat(64);
        let mut ev = event_in(&other);
        e.enrich(&mut ev);
        assert_eq!(ev.container.unwrap().name, None);
        let mut host = Event::default();
        e.enrich(&mut host);
        assert!(host.container.is_none());
    }

    #[test]
    fn a_container_that_goes_away_leaves_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        write_store(dir.path(), &containers_json(&[ID]), IMAGES);
        let mut e =
            ContainerEnricher::new(vec![Box::new(PodmanStore::new(dir.path().to_path_buf()))]);
        e.revalidate = Duration::ZERO;
        let mut ev = event_in(ID);
        e.enrich(&mut ev);
        assert!(ev.container.unwrap().name.is_some());
        // Removed: the mtime changes, the store re-reads, the entry goes.
        std::thread::sleep(Duration::from_millis(20));
        write_store(dir.path(), "[]", IMAGES);
        let f = std::fs::File::options()
            .write(true)
            .open(dir.path().join("overlay-containers/containers.json"))
            .unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        let mut ev = event_in(ID);
        e.enrich(&mut ev);
        assert_eq!(ev.container.unwrap().name, None);
        assert!(e.cache.get(ID).is_none_or(|x| x.meta.is_none()));
    }

    #[test]
    fn missing_state_is_unknown_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut e =
            ContainerEnricher::new(vec![Box::new(PodmanStore::new(dir.path().join("nope")))]);
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
}
