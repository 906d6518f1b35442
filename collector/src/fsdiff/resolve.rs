//! From what a user types (full id, short id, name, or a pid inside the
//! container) to a running container and a process in it.
//!
//! Running containers are found the runtime-independent way: a process's
//! cgroup path names its container's 64-hex id (`libpod-<id>`,
//! `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>`, ...).
//! Names and image names come from the runtime's on-disk metadata, here
//! containers/storage's `containers.json` (podman, buildah, CRI-O), read
//! directly so no runtime CLI is needed. A container the metadata knows
//! but that has no process is stopped.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where podman (as root) keeps containers/storage.
pub const DEFAULT_STORAGE_ROOT: &str = "/var/lib/containers/storage";

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
    #[error("{path}: not valid container metadata: {source}")]
    Metadata {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// A running container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    /// Full 64-hex id.
    pub id: String,
    pub name: Option<String>,
    /// A process inside the container (the lowest pid: usually its init).
    pub pid: u32,
    /// Podman when containers/storage knows it, else unknown.
    pub runtime: Option<driftwatch_sdk::Runtime>,
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
        let (repo, tag) = match &self.image {
            Some(img) => split_image(img),
            None => (None, None),
        };
        driftwatch_sdk::Container {
            id: self.id.clone(),
            name: self.name.clone(),
            runtime: self.runtime.clone(),
            image_repository: repo,
            image_tag: tag,
            image_digest: None,
            image_id: self.image_id.clone(),
        }
    }
}

/// `registry/repo:tag` → (`registry/repo`, `tag`); a `:` before the last
/// `/` is a registry port, not a tag.
fn split_image(img: &str) -> (Option<String>, Option<String>) {
    let img = img.split('@').next().unwrap_or(img);
    match img.rfind(':') {
        Some(i) if !img[i..].contains('/') => {
            (Some(img[..i].to_string()), Some(img[i + 1..].to_string()))
        }
        _ => (Some(img.to_string()), None),
    }
}

/// What containers/storage records about a container.
#[derive(Debug, Clone, Default)]
struct Known {
    names: Vec<String>,
    image: Option<String>,
    image_id: Option<String>,
}

#[derive(Deserialize)]
struct StorageRecord {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    image: Option<String>,
    /// A JSON document in a string: `{"image-name": ..., "name": ...}`.
    #[serde(default)]
    metadata: Option<String>,
}

#[derive(Deserialize, Default)]
struct StorageMetadata {
    #[serde(rename = "image-name")]
    image_name: Option<String>,
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

    /// Every container containers/storage knows, by id. Missing files mean
    /// no such runtime here, not an error.
    fn known(&self) -> Result<BTreeMap<String, Known>, ResolveError> {
        let mut out = BTreeMap::new();
        // Containers made with `--rm` may live in the volatile file.
        for file in ["containers.json", "volatile-containers.json"] {
            let path = self.storage_root.join("overlay-containers").join(file);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ResolveError::Read { path, source }),
            };
            let records: Vec<StorageRecord> = serde_json::from_slice(&bytes)
                .map_err(|source| ResolveError::Metadata { path, source })?;
            for r in records {
                let meta: StorageMetadata = r
                    .metadata
                    .as_deref()
                    .and_then(|m| serde_json::from_str(m).ok())
                    .unwrap_or_default();
                out.insert(
                    r.id,
                    Known {
                        names: r.names,
                        image: meta.image_name,
                        image_id: r.image,
                    },
                );
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
            .find_map(id_in_cgroup_path)
    }

    fn container(&self, id: String, pid: u32, known: &BTreeMap<String, Known>) -> Container {
        let k = known.get(&id).cloned().unwrap_or_default();
        Container {
            name: k.names.first().cloned(),
            runtime: known
                .contains_key(&id)
                .then_some(driftwatch_sdk::Runtime::Podman),
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
            .find(|(_, k)| k.names.iter().any(|n| n == query))
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

/// The 64-hex container id in one cgroup path, looking from the leaf up.
/// Conmon's own scope (`libpod-conmon-<id>.scope`) is not the container.
pub fn id_in_cgroup_path(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|comp| {
        if comp.contains("conmon") {
            return None;
        }
        let comp = comp.strip_suffix(".scope").unwrap_or(comp);
        let tail = comp.rsplit(['-', ':']).next().unwrap_or(comp);
        (tail.len() == 64
            && tail
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| tail.to_string())
    })
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
    fn cgroup_paths_of_common_runtimes() {
        for p in [
            format!("/libpod_parent/libpod-{ID}"),
            format!("/machine.slice/libpod-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{ID}.scope"
            ),
            format!("/kubepods/besteffort/pod1/crio-{ID}"),
        ] {
            assert_eq!(id_in_cgroup_path(&p).as_deref(), Some(ID), "{p}");
        }
        assert_eq!(
            id_in_cgroup_path(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            None
        );
        assert_eq!(id_in_cgroup_path("/libpod_parent/conmon"), None);
        assert_eq!(
            id_in_cgroup_path("/user.slice/user-0.slice/session-1.scope"),
            None
        );
    }

    #[test]
    fn image_names_split_at_the_tag_not_the_port() {
        assert_eq!(
            split_image("localhost:5000/app:1.2"),
            (Some("localhost:5000/app".into()), Some("1.2".into()))
        );
        assert_eq!(
            split_image("localhost:5000/app"),
            (Some("localhost:5000/app".into()), None)
        );
    }

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
        let r = with_proc(Resolver::new(storage), &proc_root);
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
    }
}
