//! What a running pod was supposed to be: its owning workload's pod template
//! (Pod → ReplicaSet → Deployment, StatefulSet, DaemonSet, Job → CronJob),
//! or the matching object in a directory of approved manifests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use serde_json::Value;

use super::K8sError;
use super::manifest::{self, Object, pod_spec_pointer};

/// Workload kinds whose pod template is an approved spec.
pub const WORKLOAD_KINDS: &[&str] = &[
    "ReplicaSet",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "CronJob",
    "ReplicationController",
];

/// Identifies an object: kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// A controller of pods, reduced to what verification needs.
#[derive(Debug, Clone)]
pub struct Workload {
    pub key: Key,
    /// The object's own controller (a Deployment for a ReplicaSet, a
    /// CronJob for a Job).
    pub owner: Option<Key>,
    pub template: Option<PodSpec>,
}

impl Workload {
    /// From an object as the API (or kubectl) returns it.
    pub fn from_value(kind: &str, namespace: &str, v: &Value) -> Result<Workload, String> {
        let name = v
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or("no metadata.name")?;
        let template = match pod_spec_pointer(kind).and_then(|p| v.pointer(p)) {
            Some(spec) => Some(
                serde_json::from_value::<PodSpec>(spec.clone())
                    .map_err(|e| format!("pod template: {e}"))?,
            ),
            None => None,
        };
        let owner = v
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| {
                refs.iter()
                    .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
            })
            .and_then(|r| {
                Some(Key {
                    kind: r.get("kind")?.as_str()?.to_string(),
                    namespace: namespace.to_string(),
                    name: r.get("name")?.as_str()?.to_string(),
                })
            });
        Ok(Workload {
            key: Key {
                kind: kind.to_string(),
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
            owner,
            template,
        })
    }
}

/// Pods and the workloads that own them, from the API or kubectl files.
#[derive(Debug, Default)]
pub struct Inventory {
    pub pods: Vec<Pod>,
    pub workloads: BTreeMap<Key, Workload>,
}

impl Inventory {
    pub fn add_workload(&mut self, w: Workload) {
        self.workloads.insert(w.key.clone(), w);
    }

    /// Reads `kubectl get pods,rs,deploy,… -o json` (or YAML) output: `List`
    /// files or single objects. Objects outside `namespace` are skipped.
    pub fn from_files(paths: &[PathBuf], namespace: Option<&str>) -> Result<Inventory, K8sError> {
        let mut inv = Inventory::default();
        for file in manifest::collect_files(paths)? {
            for doc in manifest::load_file(&file)? {
                for obj in doc.objects() {
                    let ns = obj.namespace().unwrap_or("default");
                    if namespace.is_some_and(|want| want != ns) {
                        continue;
                    }
                    let err = |message: String| K8sError::Object {
                        path: file.clone(),
                        what: obj.display(),
                        message,
                    };
                    match obj.kind() {
                        "Pod" => inv.pods.push(
                            serde_json::from_value(obj.value.clone())
                                .map_err(|e| err(e.to_string()))?,
                        ),
                        k if WORKLOAD_KINDS.contains(&k) => {
                            inv.add_workload(Workload::from_value(k, ns, obj.value).map_err(err)?)
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(inv)
    }

    /// The workload at the top of a pod's controller chain, as far as the
    /// inventory knows it. `Err` says why there is none.
    pub fn top_owner(&self, pod: &Pod) -> Result<Key, String> {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let Some(first) = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
        else {
            return Ok(Key {
                kind: "Pod".into(),
                namespace: ns,
                name: pod_name,
            });
        };
        let mut key = Key {
            kind: first.kind.clone(),
            namespace: ns.clone(),
            name: first.name.clone(),
        };
        if key.kind == "Node" {
            return Err(format!(
                "static pod run by the kubelet of node {} (no workload object approves it)",
                key.name
            ));
        }
        // Bounded: controller chains are two deep in practice.
        for _ in 0..4 {
            match self.workloads.get(&key) {
                Some(w) => match &w.owner {
                    Some(o) if WORKLOAD_KINDS.contains(&o.kind.as_str()) => key = o.clone(),
                    _ => return Ok(key),
                },
                None => {
                    // A ReplicaSet's name is its Deployment's plus the
                    // pod-template-hash, which the pod carries as a label:
                    // the Deployment is known even when the ReplicaSet was
                    // not listed.
                    let hash = pod
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get("pod-template-hash"));
                    if key.kind == "ReplicaSet"
                        && let Some(h) = hash
                        && let Some(deploy) = key.name.strip_suffix(&format!("-{h}"))
                    {
                        key = Key {
                            kind: "Deployment".into(),
                            namespace: ns.clone(),
                            name: deploy.to_string(),
                        };
                        continue;
                    }
                    return Ok(key);
                }
            }
        }
        Ok(key)
    }

    /// The approved pod spec of the workload `key` in the cluster itself.
    pub fn template(&self, key: &Key) -> Option<&PodSpec> {
        self.workloads.get(key).and_then(|w| w.template.as_ref())
    }

    /// The kinds worth listing for these pods (online mode lists only those).
    pub fn owner_kinds(pods: &[Pod]) -> BTreeSet<&'static str> {
        let mut kinds = BTreeSet::new();
        for r in pods
            .iter()
            .flat_map(|p| p.metadata.owner_references.iter().flatten())
        {
            if let Some(k) = WORKLOAD_KINDS.iter().find(|k| **k == r.kind) {
                kinds.insert(*k);
                match *k {
                    "ReplicaSet" => {
                        kinds.insert("Deployment");
                    }
                    "Job" => {
                        kinds.insert("CronJob");
                    }
                    _ => {}
                }
            }
        }
        kinds
    }
}

/// An approved pod spec from a manifest file.
#[derive(Debug, Clone)]
pub struct ApprovedSpec {
    pub spec: PodSpec,
    /// `file:line` of the object.
    pub source: String,
}

/// The GitOps source of truth: every workload (and bare Pod) in a
/// directory of manifests, by kind, namespace and name. Objects without a
/// namespace match any namespace, because GitOps tools usually set it at
/// apply time.
#[derive(Debug, Default)]
pub struct ApprovedSet {
    by_key: BTreeMap<(String, Option<String>, String), ApprovedSpec>,
}

impl ApprovedSet {
    pub fn load(dir: &Path) -> Result<ApprovedSet, K8sError> {
        let mut set = ApprovedSet::default();
        for file in manifest::collect_files(&[dir.to_path_buf()])? {
            for doc in manifest::load_file(&file)? {
                for obj in doc.objects() {
                    set.add(&file, &obj)?;
                }
            }
        }
        Ok(set)
    }

    fn add(&mut self, file: &Path, obj: &Object<'_>) -> Result<(), K8sError> {
        let kind = obj.kind();
        let Some(ptr) = pod_spec_pointer(kind) else {
            return Ok(());
        };
        let Some(spec) = obj.value.pointer(ptr) else {
            return Ok(());
        };
        let spec: PodSpec = serde_json::from_value(spec.clone()).map_err(|e| K8sError::Object {
            path: file.to_path_buf(),
            what: obj.display(),
            message: format!("pod spec: {e}"),
        })?;
        let line = obj.line_of("").unwrap_or(1);
        self.by_key.insert(
            (
                kind.to_string(),
                obj.namespace().map(str::to_string),
                obj.name().to_string(),
            ),
            ApprovedSpec {
                spec,
                source: format!("{}:{line}", file.display()),
            },
        );
        Ok(())
    }

    pub fn get(&self, key: &Key) -> Option<&ApprovedSpec> {
        self.by_key
            .get(&(
                key.kind.clone(),
                Some(key.namespace.clone()),
                key.name.clone(),
            ))
            .or_else(|| self.by_key.get(&(key.kind.clone(), None, key.name.clone())))
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}
