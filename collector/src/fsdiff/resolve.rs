//! From what a user types (full id, short id, name, or a pid inside the
//! container) to a running container and a process in it.
//!
//! Running containers are found the runtime-independent way: a process's
//! cgroup path names its container's id ([`cgroup::container_of_pid`]).
//! Names, images and layers come from the runtimes ([`Runtimes`]: Docker's
//! and containerd's APIs, podman's containers/storage), asked afresh for
//! every resolution. A container a runtime lists but that has no process
//! is stopped.

use std::collections::BTreeMap;
use std::path::PathBuf;

use driftwatch_sdk::Runtime;
use serde::Serialize;

use crate::container::{ImageRef, KnownContainer, Layers, RuntimeError, Runtimes, cgroup};

/// Where podman (as root) keeps containers/storage; `--storage-root`'s
/// default.
pub use crate::container::podman::DEFAULT_ROOT as DEFAULT_STORAGE_ROOT;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "no container matches {query:?} (not a running container's id, short id, name or pid){}",
        not_asked(unreachable)
    )]
    NotFound {
        query: String,
        /// Runtimes that could not be asked, for the message.
        unreachable: Vec<String>,
    },
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
    Runtime(#[from] RuntimeError),
    #[error("listing /proc: {0}")]
    Join(#[source] tokio::task::JoinError),
}

fn not_asked(unreachable: &[String]) -> String {
    if unreachable.is_empty() {
        String::new()
    } else {
        format!("; not asked: {}", unreachable.join(", "))
    }
}

/// A running container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Container {
    /// The runtime's id (64 hex digits, or a containerd id of its own).
    pub id: String,
    pub name: Option<String>,
    /// A process inside the container (the lowest pid: usually its init).
    pub pid: u32,
    /// The runtime that knows it, else unknown.
    pub runtime: Option<Runtime>,
    /// e.g. `localhost/app:1`.
    pub image: Option<String>,
    pub image_id: Option<String>,
    /// Its overlay layers as the runtime's storage records them.
    #[serde(skip)]
    pub layers: Option<Layers>,
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

/// Resolves containers against `/proc` and the runtimes.
#[derive(Debug, Clone)]
pub struct Resolver {
    runtimes: Runtimes,
    proc_root: PathBuf,
}

/// What the runtimes listed, by id, and the runtimes that could not be
/// asked (for messages).
struct Known {
    by_id: BTreeMap<String, KnownContainer>,
    unreachable: Vec<String>,
}

impl Resolver {
    pub fn new(runtimes: Runtimes) -> Resolver {
        Resolver {
            runtimes,
            proc_root: PathBuf::from("/proc"),
        }
    }

    /// The runtimes it asks.
    pub fn runtimes(&self) -> &Runtimes {
        &self.runtimes
    }

    /// Every container the runtimes list. A runtime that is not there
    /// lists nothing (it is named in a not-found message); one that answers
    /// badly (unreadable state) is an error.
    async fn known(&self) -> Result<Known, ResolveError> {
        let (list, failed) = self.runtimes.list_all().await;
        let mut unreachable = Vec::new();
        for e in failed {
            if e.is_unavailable() {
                unreachable.push(e.to_string());
            } else {
                return Err(e.into());
            }
        }
        let mut by_id = BTreeMap::new();
        for k in list {
            // The first runtime to list an id describes it (Docker before
            // containerd's view of Docker's containers).
            by_id.entry(k.id.clone()).or_insert(k);
        }
        Ok(Known { by_id, unreachable })
    }

    /// Running containers by id, each with its lowest pid.
    async fn running_pids(&self) -> Result<BTreeMap<String, u32>, ResolveError> {
        let proc_root = self.proc_root.clone();
        tokio::task::spawn_blocking(move || running_pids(&proc_root))
            .await
            .map_err(ResolveError::Join)?
    }

    /// The container `id` runs as `pid`: what the runtimes say of it, with
    /// its layers (which only a lookup by id gives).
    async fn container(&self, id: String, pid: u32, known: &Known) -> Container {
        let listed = known.by_id.get(&id);
        let hint = listed.and_then(|k| k.runtime.clone()).or_else(|| {
            cgroup::container_of_pid(&self.proc_root, pid).and_then(|(_, rt)| rt.runtime())
        });
        let (inspected, _) = self.runtimes.inspect(&id, hint.as_ref()).await;
        let k = inspected.or_else(|| listed.cloned()).unwrap_or_default();
        Container {
            name: k.names.first().cloned(),
            runtime: k.runtime,
            image: k.image,
            image_id: k.image_id,
            layers: k.layers,
            id,
            pid,
        }
    }

    /// Every running container, by id.
    pub async fn running(&self) -> Result<Vec<Container>, ResolveError> {
        let known = self.known().await?;
        let mut out = Vec::new();
        for (id, pid) in self.running_pids().await? {
            out.push(self.container(id, pid, &known).await);
        }
        Ok(out)
    }

    /// Resolves `query`: a pid (digits naming a process inside a container)
    /// first, then a full id, a name, and a unique id prefix.
    pub async fn resolve(&self, query: &str) -> Result<Container, ResolveError> {
        let query = query.trim();
        let known = self.known().await?;
        let not_found = || ResolveError::NotFound {
            query: query.to_string(),
            unreachable: known.unreachable.clone(),
        };
        if query.is_empty() {
            return Err(not_found());
        }
        if let Ok(pid) = query.parse::<u32>()
            && self.proc_root.join(pid.to_string()).exists()
        {
            return match cgroup::container_of_pid(&self.proc_root, pid) {
                Some((id, _)) => Ok(self.container(id, pid, &known).await),
                None => Err(ResolveError::NotInContainer { pid }),
            };
        }
        let running = self.running_pids().await?;
        let mut ids: Vec<&String> = running.keys().chain(known.by_id.keys()).collect();
        ids.sort();
        ids.dedup();
        let id = if ids.iter().any(|i| *i == query) {
            query.to_string()
        } else if let Some((id, _)) = known
            .by_id
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
            Some(&pid) => Ok(self.container(id, pid, &known).await),
            None => Err(ResolveError::NotRunning {
                query: query.to_string(),
                id,
            }),
        }
    }
}

/// Running containers by id, each with its lowest pid, from every process's
/// cgroup. Processes come and go while it reads: a vanished one is skipped.
fn running_pids(proc_root: &std::path::Path) -> Result<BTreeMap<String, u32>, ResolveError> {
    let rd = std::fs::read_dir(proc_root).map_err(|source| ResolveError::Read {
        path: proc_root.to_path_buf(),
        source,
    })?;
    let mut out: BTreeMap<String, u32> = BTreeMap::new();
    for ent in rd.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Some((id, _)) = cgroup::container_of_pid(proc_root, pid) else {
            continue;
        };
        let slot = out.entry(id).or_insert(pid);
        *slot = (*slot).min(pid);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Arc;

    use crate::container::StoreError;
    use crate::container::podman::PodmanClient;

    /// A resolver reading a fake `/proc`.
    fn with_proc(mut r: Resolver, proc_root: &Path) -> Resolver {
        r.proc_root = proc_root.to_path_buf();
        r
    }

    const ID: &str = "c811d759cd84d2b82f41bca4039440b6c48b9a7e33c361ed30c4b94006d3eaae";

    #[tokio::test]
    async fn resolution_order_and_errors_on_a_fake_host() {
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
        // Docker is not there: its containers cannot be named, and a name
        // nobody knows says so.
        let docker =
            crate::container::docker::DockerClient::new(&dir.path().join("no-docker.sock"));
        let runtimes = Runtimes::from_clients(vec![
            Arc::new(docker),
            Arc::new(PodmanClient::new(&storage)),
        ]);
        let r = with_proc(Resolver::new(runtimes), &proc_root);
        let c = r.resolve("web").await.unwrap();
        assert_eq!((c.id.as_str(), c.pid), (ID, 40));
        assert_eq!(c.image.as_deref(), Some("localhost/app:1"));
        assert_eq!(r.resolve(ID).await.unwrap().id, ID);
        assert_eq!(r.resolve("c811d759cd84").await.unwrap().id, ID);
        assert_eq!(r.resolve("41").await.unwrap().pid, 41);
        assert!(matches!(
            r.resolve("7").await,
            Err(ResolveError::NotInContainer { pid: 7 })
        ));
        assert!(matches!(
            r.resolve("old").await,
            Err(ResolveError::NotRunning { .. })
        ));
        let err = r.resolve("nope").await.unwrap_err();
        assert!(matches!(err, ResolveError::NotFound { .. }), "{err}");
        assert!(
            err.to_string().contains("; not asked: docker at ")
                && err.to_string().contains("no-docker.sock"),
            "{err}"
        );
        assert!(matches!(
            r.resolve("c8").await,
            Err(ResolveError::Ambiguous { .. })
        ));
        assert_eq!(r.running().await.unwrap().len(), 1);
        assert_eq!(c.runtime, Some(Runtime::Podman));
        let ev = c.to_event_container();
        assert_eq!(
            (ev.image_repository.as_deref(), ev.image_tag.as_deref()),
            (Some("localhost/app"), Some("1"))
        );

        // A container podman does not know: no runtime. Then state that
        // cannot be read: an error naming the file, its cause kept.
        std::fs::write(storage.join("overlay-containers/containers.json"), "[]").unwrap();
        assert_eq!(r.resolve("40").await.unwrap().runtime, None);
        std::fs::write(storage.join("overlay-containers/containers.json"), "[{").unwrap();
        let err = r.resolve("web").await.unwrap_err();
        assert!(
            matches!(
                err,
                ResolveError::Runtime(RuntimeError::Store(StoreError::Parse { .. }))
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("containers.json: not valid container metadata"),
            "{err}"
        );
    }
}
