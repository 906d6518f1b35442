//! Pod metadata for events: a kube-runtime reflector watches the pods of
//! this node, and an index from container id to pod is rebuilt from the
//! reflector's store whenever a pod changes.
//!
//! The enricher runs on the plugin chain's thread, so it only ever reads the
//! index (a read lock and a hash lookup); all API traffic happens on the
//! watch task. Without a cluster, or before the first list arrives, events
//! go through untouched: unknown stays unknown.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use driftwatch_sdk::Event;
use driftwatch_sdk::event::{Container, K8s};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};

use super::image;
use super::workload::Inventory;
use crate::config::{K8sConfig, Switch};
use crate::container::image_ref::ImageRef;
use crate::enrich::Enricher;

/// What a container id maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodContainer {
    pub namespace: String,
    pub pod_name: String,
    pub pod_uid: Option<String>,
    pub container_name: String,
    pub labels: BTreeMap<String, String>,
    /// `status.containerStatuses[].image`.
    pub image: String,
    /// The repository digest of `imageID`, when the runtime reports one.
    pub image_digest: Option<String>,
    /// The owning workload (kind, name): the pod's controller, or a
    /// ReplicaSet's Deployment. `None` for a bare or static pod.
    pub workload: Option<(String, String)>,
}

/// Container id (64 hex, no runtime scheme) → pod container.
#[derive(Debug, Default)]
pub struct PodIndex {
    by_id: HashMap<String, Arc<PodContainer>>,
}

impl PodIndex {
    /// Indexes every container of `pods` that has an id: regular, init and
    /// ephemeral containers alike (a `kubectl debug` shell is exactly what
    /// should be attributed to its pod).
    pub fn build<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> PodIndex {
        let mut by_id = HashMap::new();
        // No workload objects are listed: a ReplicaSet's Deployment is
        // named from the pod-template-hash label alone.
        let owners = Inventory::default();
        for pod in pods {
            let Some(status) = &pod.status else { continue };
            let labels: BTreeMap<String, String> = pod.metadata.labels.clone().unwrap_or_default();
            let workload = owners
                .top_owner(pod)
                .ok()
                .filter(|k| k.kind != "Pod")
                .map(|k| (k.kind, k.name));
            let statuses = [
                &status.container_statuses,
                &status.init_container_statuses,
                &status.ephemeral_container_statuses,
            ];
            for st in statuses.into_iter().flatten().flatten() {
                let Some(raw) = st.container_id.as_deref() else {
                    continue;
                };
                let id = image::strip_runtime_scheme(raw);
                if id.is_empty() {
                    continue;
                }
                by_id.insert(
                    id.to_string(),
                    Arc::new(PodContainer {
                        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                        pod_name: pod.metadata.name.clone().unwrap_or_default(),
                        pod_uid: pod.metadata.uid.clone(),
                        container_name: st.name.clone(),
                        labels: labels.clone(),
                        image: st.image.clone(),
                        image_digest: image::running_digest(&st.image_id).map(str::to_string),
                        workload: workload.clone(),
                    }),
                );
            }
        }
        PodIndex { by_id }
    }

    /// By full id; a shorter id (the 12-character form) matches by prefix.
    pub fn get(&self, id: &str) -> Option<&Arc<PodContainer>> {
        if let Some(c) = self.by_id.get(id) {
            return Some(c);
        }
        if id.len() >= 12 && id.len() < 64 {
            return self
                .by_id
                .iter()
                .find(|(k, _)| k.starts_with(id))
                .map(|(_, v)| v);
        }
        None
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// The shared, swappable index.
#[derive(Debug, Clone, Default)]
pub struct SharedIndex(Arc<RwLock<Arc<PodIndex>>>);

impl SharedIndex {
    pub fn snapshot(&self) -> Arc<PodIndex> {
        // A poisoned lock only means a writer panicked mid-swap of an Arc;
        // the value inside is still a whole index.
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn replace(&self, index: PodIndex) {
        let new = Arc::new(index);
        match self.0.write() {
            Ok(mut g) => *g = new,
            Err(p) => *p.into_inner() = new,
        }
    }
}

/// Fills `event.k8s` (and the container's image fields the runtime left
/// unknown) from the index.
pub struct PodEnricher {
    index: SharedIndex,
}

impl PodEnricher {
    pub fn new(index: SharedIndex) -> PodEnricher {
        PodEnricher { index }
    }
}

/// Applies one pod container's metadata to an event.
pub fn apply(pc: &PodContainer, event: &mut Event) {
    let k = event.k8s.get_or_insert_with(K8s::default);
    k.namespace.get_or_insert_with(|| pc.namespace.clone());
    k.pod_name.get_or_insert_with(|| pc.pod_name.clone());
    if k.pod_uid.is_none() {
        k.pod_uid = pc.pod_uid.clone();
    }
    k.container_name
        .get_or_insert_with(|| pc.container_name.clone());
    if k.labels.is_empty() {
        k.labels = pc.labels.clone();
    }
    if k.workload_kind.is_none()
        && let Some((kind, name)) = &pc.workload
    {
        k.workload_kind = Some(kind.clone());
        k.workload_name = Some(name.clone());
    }
    let c = event.container.get_or_insert_with(Container::default);
    if c.image_repository.is_none() {
        let r = ImageRef::parse(&pc.image);
        c.image_repository = Some(r.repository);
        if c.image_tag.is_none() {
            c.image_tag = r.tag;
        }
    }
    if c.image_digest.is_none() {
        c.image_digest = pc.image_digest.clone();
    }
}

impl Enricher for PodEnricher {
    fn enrich(&mut self, event: &mut Event) {
        let Some(id) = event.container.as_ref().map(|c| c.id.as_str()) else {
            return;
        };
        if id.is_empty() {
            return;
        }
        let index = self.index.snapshot();
        if let Some(pc) = index.get(id) {
            let pc = pc.clone();
            apply(&pc, event);
        }
    }
}

/// Watches the pods of `node` (all pods when None) into `index` until the
/// task is dropped. API errors are retried with backoff; the last good
/// index keeps answering meanwhile.
pub async fn watch_pods(client: kube::Client, node: Option<String>, index: SharedIndex) {
    let api: Api<Pod> = Api::all(client);
    let mut cfg = watcher::Config::default();
    if let Some(n) = &node {
        cfg = cfg.fields(&format!("spec.nodeName={n}"));
    }
    let (reader, writer) = reflector::store();
    let mut stream = reflector(writer, watcher(api, cfg))
        .default_backoff()
        .boxed();
    while let Some(ev) = stream.next().await {
        match ev {
            // The reflector has already applied the event to its store; the
            // store swaps in a relist only at InitDone, so rebuilding there
            // and on every change keeps the index equal to the store.
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                let state = reader.state();
                let idx = PodIndex::build(state.iter().map(|p| p.as_ref()));
                tracing::debug!(
                    pods = state.len(),
                    containers = idx.len(),
                    "pod index rebuilt"
                );
                index.replace(idx);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("watching pods: {e} (retrying)"),
        }
    }
}

/// The node whose pods to watch: the config's, else `NODE_NAME` (set from
/// the downward API in the DaemonSet).
pub fn node_name(cfg: &K8sConfig) -> Option<String> {
    cfg.node_name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
}

/// Starts pod enrichment as configured, on the current tokio runtime.
/// `Ok(None)`: disabled, or `auto` without a cluster. An error only when
/// `enabled = true` and no client can be built.
pub async fn start(
    cfg: &K8sConfig,
) -> Result<Option<(PodEnricher, tokio::task::JoinHandle<()>)>, super::K8sError> {
    if cfg.enabled == Switch::Off {
        return Ok(None);
    }
    let client = match super::client::connect(cfg.kubeconfig.as_deref()).await {
        Ok(c) => c,
        Err(e) if cfg.enabled == Switch::Auto => {
            tracing::info!("Kubernetes enrichment off: {e}");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let node = node_name(cfg);
    if node.is_none() {
        tracing::warn!(
            "no node name (k8s.node_name or NODE_NAME): watching every pod of the cluster"
        );
    }
    let index = SharedIndex::default();
    let task = tokio::spawn(watch_pods(client, node, index.clone()));
    Ok(Some((PodEnricher::new(index), task)))
}
