//! Container identity and metadata.
//!
//! The id comes from the task's cgroup ([`container_from_cgroup`], called by
//! the kernel source); the rest (name, image, runtime) from the runtime's own
//! on-disk state, read by a [`RuntimeStore`] per runtime. Podman's store
//! (`containers/storage` JSON files) is implemented; containerd, CRI-O and
//! docker plug in as further stores. What no store knows stays `None`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use driftwatch_sdk::{Container, Event};
use serde::Deserialize;

use super::Enricher;

/// Which runtime a cgroup name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Podman,
    Docker,
    Containerd,
    CriO,
    /// A bare 64-hex directory (cgroupfs-driver kubepods, plain docker):
    /// a container, runtime unknown.
    Unknown,
}

impl Runtime {
    pub fn name(self) -> Option<&'static str> {
        match self {
            Runtime::Podman => Some("podman"),
            Runtime::Docker => Some("docker"),
            Runtime::Containerd => Some("containerd"),
            Runtime::CriO => Some("cri-o"),
            Runtime::Unknown => None,
        }
    }

    /// The runtime, as events carry it.
    pub fn runtime(self) -> Option<driftwatch_sdk::Runtime> {
        match self {
            Runtime::Podman => Some(driftwatch_sdk::Runtime::Podman),
            Runtime::Docker => Some(driftwatch_sdk::Runtime::Docker),
            Runtime::Containerd => Some(driftwatch_sdk::Runtime::Containerd),
            Runtime::CriO => Some(driftwatch_sdk::Runtime::CriO),
            Runtime::Unknown => None,
        }
    }
}

fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The container a cgroup path (v1 or v2, any controller) belongs to, as
/// (64-hex id, runtime), or None for a host cgroup.
///
/// Recognized, as the last meaningful path component:
/// podman `libpod-<id>`, `libpod-<id>.scope` (and its `/container` child);
/// docker `docker-<id>.scope` and cgroupfs `/docker/<id>`; containerd
/// `cri-containerd-<id>.scope` and `...:cri-containerd:<id>`; CRI-O
/// `crio-<id>` / `crio-<id>.scope`; and a bare `<id>` (kubepods with the
/// cgroupfs driver, `/docker/<id>`). `libpod-conmon-<id>` is the monitor's
/// cgroup, not the container's.
pub fn container_from_cgroup(path: &str) -> Option<(String, Runtime)> {
    // systemd puts payloads of a scope one level below it with some runtimes
    // ("/libpod-<id>.scope/container"): look at the last two components.
    let mut parts = path.trim_end_matches('/').rsplit('/');
    let last = parts.next()?;
    let parent = parts.next();
    if let Some(found) = from_component(last, parent) {
        return Some(found);
    }
    if matches!(last, "container" | "init.scope") {
        return parent.and_then(|p| from_component(p, None));
    }
    None
}

fn from_component(c: &str, parent: Option<&str>) -> Option<(String, Runtime)> {
    let c = c.strip_suffix(".scope").unwrap_or(c);
    // `system.slice:cri-containerd:<id>` (systemd driver seen through cgroupfs names).
    if let Some((_, id)) = c.rsplit_once(":cri-containerd:") {
        return is_id(id).then(|| (id.to_string(), Runtime::Containerd));
    }
    let prefixed = [
        ("libpod-", Runtime::Podman),
        ("docker-", Runtime::Docker),
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
    ];
    for (prefix, rt) in prefixed {
        if let Some(id) = c.strip_prefix(prefix) {
            return is_id(id).then(|| (id.to_string(), rt));
        }
    }
    if is_id(c) {
        let rt = match parent {
            Some("docker") => Runtime::Docker,
            _ => Runtime::Unknown,
        };
        return Some((c.to_string(), rt));
    }
    None
}

/// What a runtime's state says about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub name: Option<String>,
    pub runtime: Option<driftwatch_sdk::Runtime>,
    pub image_repository: Option<String>,
    pub image_tag: Option<String>,
    pub image_digest: Option<String>,
    pub image_id: Option<String>,
}

/// One runtime's view of its containers.
pub trait RuntimeStore: Send {
    /// Metadata of the container, if this runtime has it.
    fn lookup(&mut self, id: &str) -> Option<Metadata>;
    /// Whether the container still exists (false drops it from the cache).
    /// Called rarely; may read the runtime's state.
    fn exists(&mut self, id: &str) -> bool;
}

/// Podman (containers/storage): `overlay-containers/containers.json` and
/// `overlay-images/images.json` under the storage root. The files are re-read
/// only when their modification time changes.
pub struct PodmanStore {
    root: PathBuf,
    containers: Snapshot<Vec<PodmanContainer>>,
    images: Snapshot<Vec<PodmanImage>>,
}

struct Snapshot<T> {
    mtime: Option<SystemTime>,
    value: Option<T>,
}

impl<T> Default for Snapshot<T> {
    fn default() -> Self {
        Snapshot {
            mtime: None,
            value: None,
        }
    }
}

impl<T: for<'de> Deserialize<'de>> Snapshot<T> {
    /// Re-reads `path` when it changed. A missing or unreadable file leaves
    /// no value (so nothing is invented from stale data).
    fn refresh(&mut self, path: &Path) -> Option<&T> {
        let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if mtime.is_none() {
            self.value = None;
            self.mtime = None;
            return None;
        }
        if mtime != self.mtime || self.value.is_none() {
            self.mtime = mtime;
            self.value = match std::fs::read(path) {
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        tracing::debug!(path = %path.display(), "unreadable runtime state: {e}");
                        None
                    }
                },
                Err(e) => {
                    tracing::debug!(path = %path.display(), "cannot read runtime state: {e}");
                    None
                }
            };
        }
        self.value.as_ref()
    }
}

#[derive(Debug, Deserialize)]
struct PodmanContainer {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    image: String,
    /// A JSON document in a string: `{"image-name": ..., "name": ...}`.
    #[serde(default)]
    metadata: String,
}

#[derive(Debug, Default, Deserialize)]
struct PodmanContainerMeta {
    #[serde(rename = "image-name")]
    image_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PodmanImage {
    id: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    names: Vec<String>,
}

impl PodmanStore {
    pub const DEFAULT_ROOT: &'static str = "/var/lib/containers/storage";

    pub fn new(root: impl Into<PathBuf>) -> PodmanStore {
        PodmanStore {
            root: root.into(),
            containers: Snapshot::default(),
            images: Snapshot::default(),
        }
    }
}

/// `registry/repo:tag` → (`registry/repo`, `tag`); a `:` before the last
/// `/` is a registry port, not a tag. `repo@sha256:...` has no tag.
pub fn split_image_name(name: &str) -> (String, Option<String>) {
    let name = name.split('@').next().unwrap_or(name);
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => (
            name[..slash + i].to_string(),
            Some(name[slash + i + 1..].to_string()),
        ),
        None => (name.to_string(), None),
    }
}

impl RuntimeStore for PodmanStore {
    fn lookup(&mut self, id: &str) -> Option<Metadata> {
        let cpath = self.root.join("overlay-containers/containers.json");
        let c = self
            .containers
            .refresh(&cpath)?
            .iter()
            .find(|c| c.id == id)?;
        let meta: PodmanContainerMeta = serde_json::from_str(&c.metadata).unwrap_or_default();
        let name = c.names.first().cloned();
        let image_id = (!c.image.is_empty()).then(|| c.image.clone());
        let image_name = meta.image_name;
        let ipath = self.root.join("overlay-images/images.json");
        let image = image_id.as_ref().and_then(|iid| {
            self.images
                .refresh(&ipath)
                .and_then(|imgs| imgs.iter().find(|i| i.id == *iid))
        });
        let full_name = image_name.or_else(|| image.and_then(|i| i.names.first().cloned()));
        let (repo, tag) = match full_name {
            Some(n) => {
                let (r, t) = split_image_name(&n);
                (Some(r), t)
            }
            None => (None, None),
        };
        Some(Metadata {
            name,
            runtime: Some(driftwatch_sdk::Runtime::Podman),
            image_repository: repo,
            image_tag: tag,
            image_digest: image.and_then(|i| i.digest.clone()),
            image_id,
        })
    }

    fn exists(&mut self, id: &str) -> bool {
        let cpath = self.root.join("overlay-containers/containers.json");
        self.containers
            .refresh(&cpath)
            .is_some_and(|cs| cs.iter().any(|c| c.id == id))
    }
}

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
    meta: Option<Metadata>,
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
        ContainerEnricher::new(vec![Box::new(PodmanStore::new(PodmanStore::DEFAULT_ROOT))])
    }

    fn lookup(&mut self, id: &str) -> Option<Metadata> {
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
    fn name(&self) -> &'static str {
        "container"
    }

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
        c.name = c.name.take().or(meta.name);
        c.runtime = c.runtime.take().or(meta.runtime);
        c.image_repository = c.image_repository.take().or(meta.image_repository);
        c.image_tag = c.image_tag.take().or(meta.image_tag);
        c.image_digest = c.image_digest.take().or(meta.image_digest);
        c.image_id = c.image_id.take().or(meta.image_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3ab290c732230f85615f8c1a30667d2ab7059f721bf2bd086b6e4f5baa4a46c9";

    fn parse(p: &str) -> Option<(String, Runtime)> {
        container_from_cgroup(p)
    }

    #[test]
    fn cgroup_paths_of_every_runtime() {
        let id = ID.to_string();
        assert_eq!(
            parse(&format!("/libpod_parent/libpod-{ID}")),
            Some((id.clone(), Runtime::Podman))
        );
        assert_eq!(
            parse(&format!("/machine.slice/libpod-{ID}.scope/container")),
            Some((id.clone(), Runtime::Podman))
        );
        assert_eq!(
            parse(&format!("/machine.slice/libpod-{ID}.scope")),
            Some((id.clone(), Runtime::Podman))
        );
        assert_eq!(
            parse(&format!("/system.slice/docker-{ID}.scope")),
            Some((id.clone(), Runtime::Docker))
        );
        assert_eq!(
            parse(&format!("/docker/{ID}")),
            Some((id.clone(), Runtime::Docker))
        );
        assert_eq!(
            parse(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{ID}.scope"
            )),
            Some((id.clone(), Runtime::Containerd))
        );
        assert_eq!(
            parse(&format!(
                "/kubepods-besteffort-pod12.slice:cri-containerd:{ID}"
            )),
            Some((id.clone(), Runtime::Containerd))
        );
        assert_eq!(
            parse(&format!(
                "/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope"
            )),
            Some((id.clone(), Runtime::CriO))
        );
        assert_eq!(
            parse(&format!("/kubepods/burstable/pod0d3e-11/crio-{ID}")),
            Some((id.clone(), Runtime::CriO))
        );
        // cgroup v1 kubepods, cgroupfs driver: the id alone.
        assert_eq!(
            parse(&format!("/kubepods/besteffort/podabc/{ID}")),
            Some((id.clone(), Runtime::Unknown))
        );
        // a trailing slash does not matter.
        assert_eq!(
            parse(&format!("/libpod_parent/libpod-{ID}/")),
            Some((id, Runtime::Podman))
        );
    }

    #[test]
    fn host_cgroups_are_not_containers() {
        for p in [
            "/",
            "",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/containerd.service",
            "/libpod_parent/conmon",
            &format!("/libpod_parent/libpod-conmon-{ID}"),
            // 63 and 65 hex digits, upper case.
            &format!("/docker/{}", &ID[1..]),
            &format!("/docker/{ID}0"),
            &format!("/docker/{}", ID.to_uppercase()),
            "/process_api/855ac3144b488bcbe145a2ca54eb3542",
            &format!("/libpod-{}.scope", &ID[..12]),
        ] {
            assert_eq!(parse(p), None, "{p}");
        }
    }

    #[test]
    fn image_names_split_at_the_tag_not_the_port() {
        assert_eq!(
            split_image_name("localhost/dw:1"),
            ("localhost/dw".into(), Some("1".into()))
        );
        assert_eq!(
            split_image_name("registry:5000/team/app"),
            ("registry:5000/team/app".into(), None)
        );
        assert_eq!(
            split_image_name("registry:5000/app:v2"),
            ("registry:5000/app".into(), Some("v2".into()))
        );
        assert_eq!(
            split_image_name("docker.io/library/alpine@sha256:abc"),
            ("docker.io/library/alpine".into(), None)
        );
    }

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
        assert_eq!(c.runtime, Some(driftwatch_sdk::Runtime::Podman));
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
