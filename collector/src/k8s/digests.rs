//! `driftwatch verify-digests`: does every running container run the image
//! its approved spec pins?
//!
//! The approved spec is the owning workload's pod template in the cluster,
//! or — with `--approved DIR` — the same workload in the GitOps manifests,
//! which catches a workload edited in the cluster behind Git's back. The
//! comparison is between digests: the running container's `imageID` digest
//! (what the node actually pulled) and the digest the approved image pins.
//!
//! Exit codes (see [`exit_code`]): 0 all verified, 1 only mutable-tag
//! warnings, 3 an error finding (malformed digest, unapproved container,
//! no running digest), 4 a running image that is not the approved one
//! (digest or image mismatch). 2 is left to the CLI for failures to run.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use driftwatch_sdk::event::{Container as EvContainer, K8s};
use driftwatch_sdk::{Event, EventKind, Finding, Priority, Remediation};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodSpec};
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use serde::Serialize;

use super::K8sError;
use super::image;
use super::table;
use super::workload::{ApprovedSet, Inventory, Key, Workload};
use crate::container::image_ref::{ImageRef, Pin};
use crate::pipeline::{Batch, FindingRecord, Outcome};

/// What a check found, most severe last in this list's exit-code order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    /// The approved image is pinned by tag only: nothing to verify against.
    MutableTag,
    /// The approved image's digest is not `sha256:` + 64 lowercase hex.
    MalformedDigest,
    /// No approved spec for the container (bare or static pod, missing
    /// workload, container added since, ephemeral debug container).
    Unapproved,
    /// The runtime reported no repository digest for the running image.
    NoRunningDigest,
    /// The running image digest differs from the approved one.
    DigestMismatch,
    /// The pod runs a different image (repository or tag) than approved.
    ImageMismatch,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::MutableTag => "mutable-tag",
            Status::MalformedDigest => "malformed-digest",
            Status::Unapproved => "unapproved",
            Status::NoRunningDigest => "no-running-digest",
            Status::DigestMismatch => "digest-mismatch",
            Status::ImageMismatch => "image-mismatch",
        }
    }

    /// `ok`, `warning` or `error`.
    pub fn level(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::MutableTag => "warning",
            _ => "error",
        }
    }

    fn rule(self) -> &'static str {
        match self {
            Status::Ok => "Image Digest Verified",
            Status::MutableTag => "Approved Image Uses Mutable Tag",
            Status::MalformedDigest => "Approved Image Digest Malformed",
            Status::Unapproved => "Unapproved Container",
            Status::NoRunningDigest => "Running Image Digest Unknown",
            Status::DigestMismatch => "Image Digest Mismatch",
            Status::ImageMismatch => "Running Image Not Approved",
        }
    }

    fn priority(self) -> Priority {
        match self {
            Status::Ok => Priority::Informational,
            Status::MutableTag => Priority::Warning,
            Status::DigestMismatch | Status::ImageMismatch => Priority::Critical,
            _ => Priority::Error,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One running container, checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContainerCheck {
    pub status: Status,
    pub level: &'static str,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: Option<String>,
    pub node: Option<String>,
    pub container: String,
    /// `container`, `init` or `ephemeral`.
    pub container_type: &'static str,
    /// Without the runtime scheme, as the sensor reports it.
    pub container_id: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The approving workload, `Deployment/web`.
    pub workload: Option<String>,
    /// `cluster` or the manifest's `file:line`.
    pub approved_source: Option<String>,
    pub approved_image: Option<String>,
    pub approved_digest: Option<String>,
    /// The image the pod spec asks for.
    pub running_image: String,
    pub image_id: String,
    pub running_digest: Option<String>,
    pub detail: String,
}

impl ContainerCheck {
    /// Identifies the container across re-checks (`--watch`).
    fn key(&self) -> (String, String, String) {
        (
            self.namespace.clone(),
            self.pod.clone(),
            self.container.clone(),
        )
    }
}

/// Where approved specs come from.
pub enum Approvals<'a> {
    /// The owning workloads in the inventory.
    Cluster,
    /// A directory of approved manifests.
    Manifests(&'a ApprovedSet),
}

/// Checks every running container of every pod in `inv`.
pub fn verify(inv: &Inventory, approvals: &Approvals<'_>) -> Vec<ContainerCheck> {
    let mut pods: Vec<&Pod> = inv.pods.iter().collect();
    pods.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let mut out = Vec::new();
    for pod in pods {
        verify_pod(inv, approvals, pod, &mut out);
    }
    out
}

/// The approved spec of a pod, its workload, and where the spec came from.
fn approved_for<'a>(
    inv: &'a Inventory,
    approvals: &Approvals<'a>,
    pod: &Pod,
) -> Result<(Key, &'a PodSpec, String), (Option<Key>, String)> {
    let top = inv.top_owner(pod).map_err(|why| (None, why))?;
    match approvals {
        Approvals::Cluster => {
            if top.kind == "Pod" {
                return Err((
                    None,
                    "bare pod: no workload owns it, so nothing approves its spec".into(),
                ));
            }
            match inv.template(&top) {
                Some(spec) => Ok((top, spec, "cluster".into())),
                None => {
                    let why = format!("its owner {top} was not found");
                    Err((Some(top), why))
                }
            }
        }
        Approvals::Manifests(set) => match set.get(&top) {
            Some(a) => Ok((top, &a.spec, a.source.clone())),
            None => {
                let why = format!(
                    "no approved manifest for {}/{}/{}",
                    top.kind, top.namespace, top.name
                );
                Err((Some(top), why))
            }
        },
    }
}

fn verify_pod(
    inv: &Inventory,
    approvals: &Approvals<'_>,
    pod: &Pod,
    out: &mut Vec<ContainerCheck>,
) {
    let Some(status) = &pod.status else { return };
    let spec = pod.spec.as_ref();
    let approval = approved_for(inv, approvals, pod);
    let groups: [(&'static str, &Option<Vec<ContainerStatus>>); 3] = [
        ("container", &status.container_statuses),
        ("init", &status.init_container_statuses),
        ("ephemeral", &status.ephemeral_container_statuses),
    ];
    for (ctype, statuses) in groups {
        for st in statuses.iter().flatten() {
            // Only what runs now: waiting and terminated containers run nothing.
            if st.state.as_ref().is_none_or(|s| s.running.is_none()) {
                continue;
            }
            let spec_image = spec
                .and_then(|s| pod_image(s, ctype, &st.name))
                .unwrap_or_else(|| st.image.clone());
            let mut c = ContainerCheck {
                status: Status::Ok,
                level: "ok",
                namespace: pod
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                pod: pod.metadata.name.clone().unwrap_or_default(),
                pod_uid: pod.metadata.uid.clone(),
                node: spec.and_then(|s| s.node_name.clone()),
                container: st.name.clone(),
                container_type: ctype,
                container_id: st
                    .container_id
                    .as_deref()
                    .map(|id| image::strip_runtime_scheme(id).to_string()),
                labels: pod.metadata.labels.clone().unwrap_or_default(),
                workload: None,
                approved_source: None,
                approved_image: None,
                approved_digest: None,
                running_image: spec_image,
                image_id: st.image_id.clone(),
                running_digest: image::running_digest(&st.image_id).map(str::to_string),
                detail: String::new(),
            };
            let (status, detail) = judge(&mut c, &approval, ctype);
            c.status = status;
            c.level = status.level();
            c.detail = detail;
            out.push(c);
        }
    }
}

fn pod_image(spec: &PodSpec, ctype: &str, name: &str) -> Option<String> {
    match ctype {
        "container" => spec
            .containers
            .iter()
            .find(|c| c.name == name)?
            .image
            .clone(),
        "init" => spec
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.name == name)?
            .image
            .clone(),
        _ => spec
            .ephemeral_containers
            .iter()
            .flatten()
            .find(|c| c.name == name)?
            .image
            .clone(),
    }
}

fn judge(
    c: &mut ContainerCheck,
    approval: &Result<(Key, &PodSpec, String), (Option<Key>, String)>,
    ctype: &str,
) -> (Status, String) {
    let (key, spec, source) = match approval {
        Ok(a) => a,
        Err((key, why)) => {
            c.workload = key.as_ref().map(Key::to_string);
            return (Status::Unapproved, why.clone());
        }
    };
    c.workload = Some(key.to_string());
    c.approved_source = Some(source.clone());
    let approved = match ctype {
        "container" => spec.containers.iter().find(|x| x.name == c.container),
        "init" => spec
            .init_containers
            .iter()
            .flatten()
            .find(|x| x.name == c.container),
        // Ephemeral containers exist only in running pods (`kubectl debug`).
        _ => {
            return (
                Status::Unapproved,
                format!("ephemeral container {} is in no approved spec", c.container),
            );
        }
    };
    let Some(approved) = approved else {
        return (
            Status::Unapproved,
            format!("{key} approves no container named {}", c.container),
        );
    };
    let Some(approved_image) = approved.image.clone() else {
        return (
            Status::Unapproved,
            format!("{key} names no image for container {}", c.container),
        );
    };
    c.approved_image = Some(approved_image.clone());
    let want = ImageRef::parse(&approved_image);
    match want.pin() {
        Pin::Malformed(d) => (
            Status::MalformedDigest,
            format!(
                "approved image {approved_image} pins {d:?}, which is not sha256: followed by 64 lowercase hex digits"
            ),
        ),
        Pin::Tag => {
            let have = ImageRef::parse(&c.running_image);
            let tag = |r: &ImageRef| r.tag.clone().unwrap_or_else(|| "latest".into());
            if have.normalized_repository() != want.normalized_repository()
                || (have.digest.is_none() && tag(&have) != tag(&want))
            {
                return (
                    Status::ImageMismatch,
                    format!(
                        "runs {} but {key} approves {approved_image}",
                        c.running_image
                    ),
                );
            }
            let running = c.running_digest.as_deref().unwrap_or("an unknown digest");
            (
                Status::MutableTag,
                format!(
                    "approved image {approved_image} is not pinned by digest; it runs {running}, which cannot be verified"
                ),
            )
        }
        Pin::Digest(d) => {
            c.approved_digest = Some(d.clone());
            match c.running_digest.as_deref() {
                None => (
                    Status::NoRunningDigest,
                    format!(
                        "the runtime reports imageID {:?} without a repository digest, so it cannot be compared with {d}",
                        c.image_id
                    ),
                ),
                Some(r) if r == d => (Status::Ok, format!("runs {d}")),
                Some(r) => (
                    Status::DigestMismatch,
                    format!("running digest {r} differs from approved digest {d}"),
                ),
            }
        }
    }
}

/// The exit code for a set of checks (see the module documentation).
pub fn exit_code(checks: &[ContainerCheck]) -> u8 {
    let worst = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
    match worst {
        Status::Ok => 0,
        Status::MutableTag => 1,
        Status::DigestMismatch | Status::ImageMismatch => 4,
        _ => 3,
    }
}

/// Counts per status, for summaries.
pub fn summary(checks: &[ContainerCheck]) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for c in checks {
        *m.entry(c.status.as_str()).or_insert(0) += 1;
    }
    m
}

/// The human table.
pub fn write_table(out: &mut dyn Write, checks: &[ContainerCheck]) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            vec![
                c.status.as_str().to_string(),
                c.namespace.clone(),
                c.pod.clone(),
                c.container.clone(),
                c.workload.clone().unwrap_or_else(|| "-".into()),
                c.detail.clone(),
            ]
        })
        .collect();
    table::write(
        out,
        &[
            "STATUS",
            "NAMESPACE",
            "POD",
            "CONTAINER",
            "WORKLOAD",
            "DETAIL",
        ],
        &rows,
    )?;
    let parts: Vec<String> = summary(checks)
        .into_iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    writeln!(
        out,
        "\n{} running container(s): {}; exit code {}",
        checks.len(),
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        },
        exit_code(checks)
    )
}

/// The JSON report.
pub fn to_json(checks: &[ContainerCheck]) -> serde_json::Value {
    serde_json::json!({
        "containers": checks,
        "summary": summary(checks),
        "exit_code": exit_code(checks),
    })
}

/// A finding per non-ok check, on a synthetic event carrying the container
/// and pod, shaped for the pipeline's sinks (stdout JSON lines, OTLP).
///
/// The schema has no event kind for "found by an API comparison"; like the
/// filesystem scan's findings these are differences found by looking rather
/// than seen happen, so they travel as `file_drift` events without a file.
pub fn to_processed(checks: &[ContainerCheck], hostname: &str, time_ns: u64) -> Batch {
    let plugin: Arc<str> = Arc::from("verify-digests");
    let version: Arc<str> = Arc::from(env!("CARGO_PKG_VERSION"));
    checks
        .iter()
        .filter(|c| c.status != Status::Ok)
        .map(|c| {
            let running = ImageRef::parse(&c.running_image);
            let event = Event {
                time_ns,
                kind: EventKind::FileDrift,
                hostname: hostname.to_string(),
                container: Some(EvContainer {
                    id: c.container_id.clone().unwrap_or_default(),
                    image_repository: Some(running.repository.clone()),
                    image_tag: running.tag.clone(),
                    image_digest: c.running_digest.clone(),
                    ..EvContainer::default()
                }),
                k8s: Some(K8s {
                    namespace: Some(c.namespace.clone()),
                    pod_name: Some(c.pod.clone()),
                    pod_uid: c.pod_uid.clone(),
                    container_name: Some(c.container.clone()),
                    labels: c.labels.clone(),
                    ..K8s::default()
                }),
                ..Event::default()
            };
            let mut fields = BTreeMap::new();
            let mut put = |k: &str, v: &Option<String>| {
                if let Some(v) = v {
                    fields.insert(k.to_string(), v.clone());
                }
            };
            put("k8s.workload", &c.workload);
            put("driftwatch.approved_image", &c.approved_image);
            put("driftwatch.approved_digest", &c.approved_digest);
            put("driftwatch.approved_source", &c.approved_source);
            put("container.image.digest", &c.running_digest);
            fields.insert("driftwatch.check".into(), c.status.as_str().into());
            let finding = Finding {
                rule: c.status.rule().to_string(),
                priority: c.status.priority(),
                output: format!(
                    "{} (namespace={} pod={} container={} image={})",
                    c.detail, c.namespace, c.pod, c.container, c.running_image
                ),
                description: Some(
                    "A running container's image digest does not verify against its approved manifest"
                        .into(),
                ),
                tags: vec![
                    "container".into(),
                    "drift".into(),
                    "k8s".into(),
                    "image-digest".into(),
                ],
                fields,
                remediation: Some(Remediation {
                    alert_type: "K8S.ImageDigestDrift".into(),
                    description: c.detail.clone(),
                    steps: vec![
                        "Pin the approved image by its sha256 digest in the manifest".into(),
                        "Find out who changed the running workload or pushed the tag".into(),
                        "Redeploy from the approved manifest".into(),
                    ],
                }),
            };
            let outcome = Outcome {
                findings: vec![FindingRecord {
                    plugin: plugin.clone(),
                    plugin_version: version.clone(),
                    finding: finding.into(),
                }],
                ..Outcome::default()
            };
            (event, outcome)
        })
        .collect()
}

/// Every item of a list, page by page.
async fn list_all<K>(api: Api<K>, what: &str) -> Result<Vec<K>, K8sError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut lp = ListParams::default().limit(500);
    let mut out = Vec::new();
    loop {
        let page = api.list(&lp).await.map_err(|e| K8sError::List {
            what: what.to_string(),
            source: Box::new(e),
        })?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => return Ok(out),
        }
    }
}

fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn add_kind<K>(
    inv: &mut Inventory,
    client: &kube::Client,
    namespace: Option<&str>,
    kind: &str,
) -> Result<(), K8sError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let what = format!("{kind}s");
    for obj in list_all(api::<K>(client, namespace), &what).await? {
        let v = serde_json::to_value(&obj).map_err(K8sError::Json)?;
        let ns = v
            .pointer("/metadata/namespace")
            .and_then(|n| n.as_str())
            .unwrap_or("default")
            .to_string();
        let w = Workload::from_value(kind, &ns, &v).map_err(|message| K8sError::Object {
            path: PathBuf::from("<api>"),
            what: format!("{kind}/{ns}"),
            message,
        })?;
        inv.add_workload(w);
    }
    Ok(())
}

/// Lists the pods of `namespace` (or all) and the workloads that own them.
pub async fn fetch(client: &kube::Client, namespace: Option<&str>) -> Result<Inventory, K8sError> {
    use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
    use k8s_openapi::api::batch::v1::{CronJob, Job};
    use k8s_openapi::api::core::v1::ReplicationController;
    let pods = list_all(api::<Pod>(client, namespace), "pods").await?;
    let kinds = Inventory::owner_kinds(&pods);
    let mut inv = Inventory {
        pods,
        ..Inventory::default()
    };
    // Only the kinds that own these pods: fewer requests, and RBAC need not
    // grant what is not used.
    for kind in kinds {
        match kind {
            "ReplicaSet" => add_kind::<ReplicaSet>(&mut inv, client, namespace, kind).await?,
            "Deployment" => add_kind::<Deployment>(&mut inv, client, namespace, kind).await?,
            "StatefulSet" => add_kind::<StatefulSet>(&mut inv, client, namespace, kind).await?,
            "DaemonSet" => add_kind::<DaemonSet>(&mut inv, client, namespace, kind).await?,
            "Job" => add_kind::<Job>(&mut inv, client, namespace, kind).await?,
            "CronJob" => add_kind::<CronJob>(&mut inv, client, namespace, kind).await?,
            "ReplicationController" => {
                add_kind::<ReplicationController>(&mut inv, client, namespace, kind).await?
            }
            _ => {}
        }
    }
    Ok(inv)
}

/// `--watch`: re-checks whenever pods change, and hands `report` the checks
/// whose status is new or different since the last round. Returns the last
/// round's exit code when `shutdown` fires.
pub async fn watch<F>(
    client: &kube::Client,
    namespace: Option<&str>,
    approved: Option<&ApprovedSet>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut report: F,
) -> Result<u8, K8sError>
where
    F: FnMut(&[ContainerCheck]) -> Result<(), K8sError>,
{
    let pods = api::<Pod>(client, namespace);
    let mut events = watcher::watcher(pods, watcher::Config::default()).boxed();
    let mut last: HashMap<(String, String, String), ContainerCheck> = HashMap::new();
    let mut code = 0;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(code),
            ev = events.next() => match ev {
                None => return Err(K8sError::Watch("the pod watch ended".into())),
                Some(Err(e)) => {
                    tracing::warn!("pod watch: {e}; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    continue;
                }
                // Wait for the initial list to complete before the first round.
                Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {
                    continue;
                }
                // An applied or deleted pod, or the end of a (re)list.
                Some(Ok(_)) => {}
            },
        }
        // Let a burst of pod updates (a rollout) settle into one round.
        let settle = tokio::time::sleep(std::time::Duration::from_millis(500));
        tokio::pin!(settle);
        loop {
            tokio::select! {
                _ = &mut settle => break,
                ev = events.next() => if ev.is_none() { break },
            }
        }
        let inv = fetch(client, namespace).await?;
        let approvals = match approved {
            Some(set) => Approvals::Manifests(set),
            None => Approvals::Cluster,
        };
        let checks = verify(&inv, &approvals);
        code = exit_code(&checks);
        let changed: Vec<ContainerCheck> = checks
            .iter()
            .filter(|c| last.get(&c.key()).is_none_or(|p| p.status != c.status))
            .cloned()
            .collect();
        last = checks.into_iter().map(|c| (c.key(), c)).collect();
        if !changed.is_empty() {
            report(&changed)?;
        }
    }
}
