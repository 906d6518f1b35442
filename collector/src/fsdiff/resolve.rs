//! From what a user types (full id, short id, name, or a pid inside the
//! container) to a running container and a process in it.
//!
//! Running containers are found the runtime-independent way: a process's
//! cgroup path names its container's 64-hex id
//! ([`container_in_cgroup_path`]). Names and image names come from the
//! runtimes' on-disk state ([`container::stores`]: podman's
//! containers/storage), read afresh for every resolution. A container the
//! state knows but that has no process is stopped.

use std::collections::BTreeMap;
use std::path::PathBuf;

use driftwatch_sdk::Runtime;
use serde::Serialize;

use crate::container::{self, ImageRef, KnownContainer, StoreError, container_in_cgroup_path};

/// Where podman (as root) keeps containers/storage; `--storage-root`'s
/// default.
pub use crate::container::podman::DEFAULT_ROOT as DEFAULT_STORAGE_ROOT;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no container matches {query:?} (not a running container's id, short id, name or pid)")]
    NotFound { query: String },
    #[error("{query:?} matches several containers: {}", candidates.join(", "))]
    Ambiguous {
        query: String,
        candidates: Vec<String>,
    },
    #[error("container {query:?} ({id}) is not running: only a running container can be diffed")]
    NotRunning { query: String, id: String },
    #[error("pid {pid} is not in a container (its cgroup names no container id)")]
    NotInContainer { pid: u32 },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A running container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    /// Full 64-hex id.
    pub id: String,
    pub name: Option<String>,
    /// A process inside the container (the lowest pid: usually its init).
    pub pid: u32,
    /// The runtime whose state knows it, else unknown.
    pub runtime: Option<Runtime>,
    /// e.g. `localhost/app:1`.
    pub image: Option<String>,
    pub image_id: Option<String>,
}

impl Container {
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }

    /// The schema's view of this container, for events.
    pub fn to_event_container(&self) -> driftwatch_sdk::Container {
        let image = self.image.as_deref().map(ImageRef::parse);
        driftwatch_sdk::Container {
            id: self.id.clone(),
            name: self.name.clone(),
            runtime: self.runtime.clone(),
            image_tag: image.as_ref().and_then(|i| i.tag.clone()),
            image_repository: image.map(|i| i.repository),
            image_digest: None,
            image_id: self.image_id.clone(),
        }
    }
}

/// Resolves containers against `/proc` and a containers/storage root.
#[derive(Debug, Clone)]
pub struct Resolver {
    storage_root: PathBuf,
    proc_root: PathBuf,
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::new(PathBuf::from(DEFAULT_STORAGE_ROOT))
    }
}

impl Resolver {
    pub fn new(storage_root: PathBuf) -> Resolver {
        Resolver {
            storage_root,
            proc_root: PathBuf::from("/proc"),
        }
    }

    /// Every container the runtimes' state knows, by id, with its
    /// runtime. Missing files mean no such runtime here, not an error.
    fn known(&self) -> Result<BTreeMap<String, (KnownContainer, Runtime)>, ResolveError> {
        let mut out = BTreeMap::new();
        for mut store in container::stores(&self.storage_root) {
            let runtime = store.runtime();
            for k in store.containers()? {
                out.insert(k.id.clone(), (k, runtime.clone()));
            }
        }
        Ok(out)
    }

    /// Running containers by id, each with its lowest pid.
    fn running_pids(&self) -> Result<BTreeMap<String, u32>, ResolveError> {
        let rd = std::fs::read_dir(&self.proc_root).map_err(|source| ResolveError::Read {
            path: self.proc_root.clone(),
            source,
        })?;
        let mut out: BTreeMap<String, u32> = BTreeMap::new();
        for ent in rd.flatten() {
            let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            // Processes come and go while we read: a vanished one is skipped.
            let Some(id) = self.container_of(pid) else {
                continue;
            };
            let slot = out.entry(id).or_insert(pid);
            *slot = (*slot).min(pid);
        }
        Ok(out)
    }

    /// The container id in a process's cgroup path, if any.
    fn container_of(&self, pid: u32) -> Option<String> {
        let text =
            std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("cgroup")).ok()?;
        text.lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .find_map(|path| container_in_cgroup_path(path).map(|(id, _)| id))
    }

    fn container(
        &self,
        id: String,
        pid: u32,
        known: &BTreeMap<String, (KnownContainer, Runtime)>,
    ) -> Container {
        let (k, runtime) = match known.get(&id) {
            Some((k, rt)) => (k.clone(), Some(rt.clone())),
            None => (KnownContainer::default(), None),
        };
        Container {
            name: k.names.first().cloned(),
            runtime,
            image: k.image,
            image_id: k.image_id,
            id,
            pid,
        }
    }

    /// Every running container, by id.
    pub fn running(&self) -> Result<Vec<Container>, ResolveError> {
        let known = self.known()?;
        Ok(self
            .running_pids()?
            .into_iter()
            .map(|(id, pid)| self.container(id, pid, &known))
            .collect())
    }

    /// Resolves `query`: a pid (digits naming a process inside a container)
    /// first, then a full id, a name, and a unique id prefix.
    pub fn resolve(&self, query: &str) -> Result<Container, ResolveError> {
        let query = query.trim();
        let not_found = || ResolveError::NotFound {
            query: query.to_string(),
        };
        if query.is_empty() {
            return Err(not_found());
        }
        let known = self.known()?;
        if let Ok(pid) = query.parse::<u32>()
            && self.proc_root.join(pid.to_string()).exists()
        {
            return match self.container_of(pid) {
                Some(id) => Ok(self.container(id, pid, &known)),
                None => Err(ResolveError::NotInContainer { pid }),
            };
        }
        let running = self.running_pids()?;
        let mut ids: Vec<&String> = running.keys().chain(known.keys()).collect();
        ids.sort();
        ids.dedup();
        let id = if ids.iter().any(|i| *i == query) {
            query.to_string()
        } else if let Some((id, _)) = known
            .iter()
            .find(|(_, (k, _))| k.names.iter().any(|n| n == query))
        {
            id.clone()
        } else {
            let lower = query.to_ascii_lowercase();
            let matches: Vec<&&String> = if lower.chars().all(|c| c.is_ascii_hexdigit()) {
                ids.iter().filter(|i| i.starts_with(&lower)).collect()
            } else {
                Vec::new()
            };
            match matches.as_slice() {
                [] => return Err(not_found()),
                [one] => (**one).clone(),
                many => {
                    return Err(ResolveError::Ambiguous {
                        query: query.to_string(),
                        candidates: many
                            .iter()
                            .map(|i| i[..12.min(i.len())].to_string())
                            .collect(),
                    });
                }
            }
        };
        match running.get(&id) {
            Some(&pid) => Ok(self.container(id, pid, &known)),
            None => Err(ResolveError::NotRunning {
                query: query.to_string(),
                id,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A resolver reading a fake `/proc`.
    fn with_proc(mut r: Resolver, proc_root: &Path) -> Resolver {
        r.proc_root = proc_root.to_path_buf();
        r
    }

    const ID: &str = "c811d759cd84d2b82f41bca4039440b6c48b9a7e33c361ed30c4b94006d3eaae";

    #[test]
    fn resolution_order_and_errors_on_a_fake_host() {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(storage.join("overlay-containers")).unwrap();
        let stopped = "ab".repeat(32);
        let twin = format!("c8{}", "0".repeat(62));
        let records = serde_json::json!([
            {"id": ID, "names": ["web"], "image": "img1", "metadata": "{\"image-name\":\"localhost/app:1\"}"},
            {"id": stopped, "names": ["old"]},
            {"id": twin, "names": ["twin"]},
        ]);
        std::fs::write(
            storage.join("overlay-containers/containers.json"),
            records.to_string(),
        )
        .unwrap();
        let proc_root = dir.path().join("proc");
        for (pid, cg) in [
            (40u32, format!("0::/libpod_parent/libpod-{ID}")),
            (41, format!("0::/libpod_parent/libpod-{ID}")),
            (7, "0::/user.slice".to_string()),
        ] {
            std::fs::create_dir_all(proc_root.join(pid.to_string())).unwrap();
            std::fs::write(proc_root.join(pid.to_string()).join("cgroup"), cg).unwrap();
        }
        let r = with_proc(Resolver::new(storage.clone()), &proc_root);
        let c = r.resolve("web").unwrap();
        assert_eq!((c.id.as_str(), c.pid), (ID, 40));
        assert_eq!(c.image.as_deref(), Some("localhost/app:1"));
        assert_eq!(r.resolve(ID).unwrap().id, ID);
        assert_eq!(r.resolve("c811d759cd84").unwrap().id, ID);
        assert_eq!(r.resolve("41").unwrap().pid, 41);
        assert!(matches!(
            r.resolve("7"),
            Err(ResolveError::NotInContainer { pid: 7 })
        ));
        assert!(matches!(
            r.resolve("old"),
            Err(ResolveError::NotRunning { .. })
        ));
        assert!(matches!(
            r.resolve("nope"),
            Err(ResolveError::NotFound { .. })
        ));
        assert!(matches!(
            r.resolve("c8"),
            Err(ResolveError::Ambiguous { .. })
        ));
        assert_eq!(r.running().unwrap().len(), 1);
        assert_eq!(c.runtime, Some(Runtime::Podman));
        let ev = c.to_event_container();
        assert_eq!(
            (ev.image_repository.as_deref(), ev.image_tag.as_deref()),
            (Some("localhost/app"), Some("1"))
        );

        // A container podman does not know: no runtime. Then state that
        // cannot be read: an error naming the file, its cause kept.
        std::fs::write(storage.join("overlay-containers/containers.json"), "[]").unwrap();
        assert_eq!(r.resolve("40").unwrap().runtime, None);
        std::fs::write(storage.join("overlay-containers/containers.json"), "[{").unwrap();
        let err = r.resolve("web").unwrap_err();
        assert!(
            matches!(err, ResolveError::Store(StoreError::Parse { .. })),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("containers.json: not valid container metadata"),
            "{err}"
        );
    }
}
