//! `driftwatch audit-manifests`: the immutability posture of manifests
//! before they run. A container that cannot write its root filesystem,
//! cannot gain privileges, does not run as root and runs an image pinned by
//! digest leaves drift nowhere to happen; a `restricted` Pod Security
//! namespace makes the API server refuse pods that give that up.
//!
//! Exit codes: 0 clean, 1 violations, 2 a file could not be read or parsed
//! (the audit is then incomplete, whatever else it found).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use super::manifest::{self, Object, pod_spec_pointer};
use super::table;
use crate::container::image_ref::{ImageRef, Pin};

/// A rule of the audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub fix: &'static str,
}

pub const READ_ONLY_ROOT: Rule = Rule {
    id: "DW001",
    name: "read-only-root-filesystem",
    description: "A container's root filesystem must be read-only (securityContext.readOnlyRootFilesystem: true), so nothing can be added to or changed in the image at run time.",
    fix: "Set securityContext.readOnlyRootFilesystem: true on the container, and mount an emptyDir (with a sizeLimit) at each path it must write.",
};
pub const NO_PRIVILEGE_ESCALATION: Rule = Rule {
    id: "DW002",
    name: "no-privilege-escalation",
    description: "A container must not gain privileges beyond its parent's (securityContext.allowPrivilegeEscalation: false): setuid binaries and file capabilities stay inert.",
    fix: "Set securityContext.allowPrivilegeEscalation: false on the container.",
};
pub const RUN_AS_NON_ROOT: Rule = Rule {
    id: "DW003",
    name: "run-as-non-root",
    description: "A container must run as a non-root user (runAsNonRoot: true in the container's or the pod's securityContext).",
    fix: "Set securityContext.runAsNonRoot: true on the pod (or the container), with a non-zero runAsUser if the image's USER is not numeric.",
};
pub const IMAGE_DIGEST: Rule = Rule {
    id: "DW004",
    name: "image-pinned-by-digest",
    description: "An image must be pinned by digest (image: repo:tag@sha256:…): a tag can be re-pushed, a digest names exactly one image.",
    fix: "Append the image's manifest digest: image: repo:tag@sha256:<64 hex digits> (for example from `crane digest repo:tag` or the registry).",
};
pub const DIGEST_VALID: Rule = Rule {
    id: "DW005",
    name: "image-digest-valid",
    description: "A pinned digest must be sha256: followed by exactly 64 lowercase hex digits; anything else is refused by the runtime or pins nothing.",
    fix: "Replace the digest with the image's full manifest digest, sha256:<64 lowercase hex digits>.",
};
pub const EMPTYDIR_SIZE: Rule = Rule {
    id: "DW006",
    name: "emptydir-size-limit",
    description: "Writable paths come only from volumes, and an emptyDir must have a sizeLimit so writes to it cannot fill the node's disk.",
    fix: "Set emptyDir.sizeLimit (for example 100Mi) on the volume.",
};
pub const NOT_PRIVILEGED: Rule = Rule {
    id: "DW007",
    name: "not-privileged",
    description: "A privileged container can remount its root filesystem writable and reach the host: no immutability setting holds.",
    fix: "Remove securityContext.privileged; add only the capabilities the container needs.",
};
pub const HOSTPATH_READ_ONLY: Rule = Rule {
    id: "DW008",
    name: "hostpath-read-only",
    description: "A hostPath volume mounted writable is a writable path outside the container's image and outside any size limit.",
    fix: "Mount the hostPath volume with readOnly: true, or use an emptyDir with a sizeLimit.",
};
pub const NAMESPACE_RESTRICTED: Rule = Rule {
    id: "DW009",
    name: "namespace-pod-security-restricted",
    description: "A namespace must be labelled pod-security.kubernetes.io/enforce, audit and warn: restricted, so the API server refuses (and reports) pods that give up the restricted profile.",
    fix: "Label the namespace pod-security.kubernetes.io/enforce=restricted, pod-security.kubernetes.io/audit=restricted and pod-security.kubernetes.io/warn=restricted.",
};

pub const RULES: &[Rule] = &[
    READ_ONLY_ROOT,
    NO_PRIVILEGE_ESCALATION,
    RUN_AS_NON_ROOT,
    IMAGE_DIGEST,
    DIGEST_VALID,
    EMPTYDIR_SIZE,
    NOT_PRIVILEGED,
    HOSTPATH_READ_ONLY,
    NAMESPACE_RESTRICTED,
];

/// One violation of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub file: PathBuf,
    /// 1-based line of the offending field (or of the object lacking it).
    pub line: Option<usize>,
    /// `Kind/namespace/name` or `Kind/name`.
    pub object: String,
    pub container: Option<String>,
    pub rule: &'static str,
    pub rule_name: &'static str,
    pub message: String,
    pub fix: &'static str,
}

/// What an audit found.
#[derive(Debug, Default, Serialize)]
pub struct AuditReport {
    pub files: usize,
    pub objects: usize,
    pub violations: Vec<Violation>,
    /// Files that could not be read or parsed, with the reason.
    pub errors: Vec<String>,
}

impl AuditReport {
    pub fn exit_code(&self) -> u8 {
        if !self.errors.is_empty() {
            2
        } else if !self.violations.is_empty() {
            1
        } else {
            0
        }
    }
}

/// Audits every manifest under `paths`. Unreadable paths and files that do
/// not parse are reported in `errors`; the rest is still audited.
pub fn audit_paths(paths: &[PathBuf]) -> AuditReport {
    let mut report = AuditReport::default();
    let mut files = Vec::new();
    for p in paths {
        match manifest::collect_files(std::slice::from_ref(p)) {
            Ok(f) => files.extend(f),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    for file in files {
        report.files += 1;
        match manifest::load_file(&file) {
            Ok(docs) => {
                for doc in &docs {
                    for obj in doc.objects() {
                        report.objects += 1;
                        audit_object(&obj, &mut report.violations);
                    }
                }
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    report
}

/// Checks one object.
pub fn audit_object(obj: &Object<'_>, out: &mut Vec<Violation>) {
    let mut found = Found { obj, out };
    if obj.kind() == "Namespace" {
        audit_namespace(&mut found);
        return;
    }
    let Some(ptr) = pod_spec_pointer(obj.kind()) else {
        return;
    };
    let Some(spec) = obj.value.pointer(ptr) else {
        return;
    };
    let pod = PodSpec {
        ptr,
        non_root: spec
            .pointer("/securityContext/runAsNonRoot")
            .and_then(Value::as_bool),
        volumes: spec
            .get("volumes")
            .and_then(Value::as_array)
            .map(|v| v.iter().collect())
            .unwrap_or_default(),
    };
    for group in ["containers", "initContainers", "ephemeralContainers"] {
        let Some(list) = spec.get(group).and_then(Value::as_array) else {
            continue;
        };
        for (i, c) in list.iter().enumerate() {
            audit_container(&mut found, &pod, c, &format!("{ptr}/{group}/{i}"));
        }
    }
    audit_volumes(&mut found, &pod);
}

/// The violations of one object, as they are found.
struct Found<'o, 'a> {
    obj: &'o Object<'a>,
    out: &'o mut Vec<Violation>,
}

impl Found<'_, '_> {
    /// `rule` is broken at JSON pointer `rel` of the object.
    fn add(&mut self, rule: &Rule, container: Option<&str>, rel: &str, message: String) {
        self.out.push(Violation {
            file: self.obj.doc.file.clone(),
            line: self.obj.line_of(rel),
            object: self.obj.display(),
            container: container.map(str::to_string),
            rule: rule.id,
            rule_name: rule.name,
            message,
            fix: rule.fix,
        });
    }
}

/// What the containers' checks need of their pod spec.
struct PodSpec<'v> {
    /// The spec's JSON pointer in the object.
    ptr: &'static str,
    /// The pod-level runAsNonRoot, which a container's own setting overrides.
    non_root: Option<bool>,
    volumes: Vec<&'v Value>,
}

fn audit_namespace(found: &mut Found<'_, '_>) {
    let labels = found.obj.value.pointer("/metadata/labels");
    for mode in ["enforce", "audit", "warn"] {
        let key = format!("pod-security.kubernetes.io/{mode}");
        let got = labels.and_then(|l| l.get(&key)).and_then(Value::as_str);
        if got != Some("restricted") {
            let message = match got {
                Some(v) => format!("namespace label {key} is {v:?}, not \"restricted\""),
                None => format!("namespace has no {key}: restricted label"),
            };
            let rel = format!("/metadata/labels/{}", key.replace('/', "~1"));
            found.add(&NAMESPACE_RESTRICTED, None, &rel, message);
        }
    }
}

/// One container's security context, image and mounts; `base` is its JSON
/// pointer.
fn audit_container(found: &mut Found<'_, '_>, pod: &PodSpec<'_>, c: &Value, base: &str) {
    let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
    let sc = c.get("securityContext");
    let flag = |k: &str| sc.and_then(|s| s.get(k)).and_then(Value::as_bool);
    let at = |k: &str| format!("{base}/securityContext/{k}");

    if flag("readOnlyRootFilesystem") != Some(true) {
        found.add(
            &READ_ONLY_ROOT,
            Some(name),
            &at("readOnlyRootFilesystem"),
            format!(
                "container {name:?} can write its root filesystem (readOnlyRootFilesystem is not true)"
            ),
        );
    }
    if flag("allowPrivilegeEscalation") != Some(false) {
        found.add(
            &NO_PRIVILEGE_ESCALATION,
            Some(name),
            &at("allowPrivilegeEscalation"),
            format!(
                "container {name:?} may gain privileges (allowPrivilegeEscalation is not false)"
            ),
        );
    }
    // The container's setting overrides the pod's.
    let non_root = match flag("runAsNonRoot").or(pod.non_root) {
        Some(true) => None,
        Some(false) => Some(format!("container {name:?} sets runAsNonRoot: false")),
        None => Some(format!(
            "container {name:?} may run as root (runAsNonRoot is set on neither the container nor the pod)"
        )),
    };
    if let Some(message) = non_root {
        found.add(&RUN_AS_NON_ROOT, Some(name), &at("runAsNonRoot"), message);
    }
    if flag("privileged") == Some(true) {
        found.add(
            &NOT_PRIVILEGED,
            Some(name),
            &at("privileged"),
            format!("container {name:?} is privileged"),
        );
    }
    audit_image(found, c, name, &format!("{base}/image"));
    audit_host_mounts(found, pod, c, name, base);
}

fn audit_image(found: &mut Found<'_, '_>, c: &Value, name: &str, image_ptr: &str) {
    let (rule, message) = match c.get("image").and_then(Value::as_str) {
        None => (&IMAGE_DIGEST, format!("container {name:?} names no image")),
        Some(image) => match ImageRef::parse(image).pin() {
            Pin::Digest(_) => return,
            Pin::Tag => (
                &IMAGE_DIGEST,
                format!("image {image} is pinned by a mutable tag, not by digest"),
            ),
            Pin::Malformed(d) => (
                &DIGEST_VALID,
                format!(
                    "image {image} pins {d:?}, which is not sha256: followed by 64 lowercase hex digits"
                ),
            ),
        },
    };
    found.add(rule, Some(name), image_ptr, message);
}

/// Writable host paths, per mount (readOnly is per mount).
fn audit_host_mounts(
    found: &mut Found<'_, '_>,
    pod: &PodSpec<'_>,
    c: &Value,
    name: &str,
    base: &str,
) {
    let mounts = c.get("volumeMounts").and_then(Value::as_array);
    for (m, mount) in mounts.into_iter().flatten().enumerate() {
        let vname = mount.get("name").and_then(Value::as_str).unwrap_or("");
        let host = pod.volumes.iter().any(|v| {
            v.get("name").and_then(Value::as_str) == Some(vname) && v.get("hostPath").is_some()
        });
        if host && mount.get("readOnly").and_then(Value::as_bool) != Some(true) {
            let path = mount
                .get("mountPath")
                .and_then(Value::as_str)
                .unwrap_or("?");
            found.add(
                &HOSTPATH_READ_ONLY,
                Some(name),
                &format!("{base}/volumeMounts/{m}"),
                format!("container {name:?} mounts hostPath volume {vname:?} writable at {path}"),
            );
        }
    }
}

fn audit_volumes(found: &mut Found<'_, '_>, pod: &PodSpec<'_>) {
    for (j, v) in pod.volumes.iter().enumerate() {
        let Some(ed) = v.get("emptyDir") else {
            continue;
        };
        let limited = ed
            .get("sizeLimit")
            .is_some_and(|s| !s.is_null() && s.as_str() != Some(""));
        if !limited {
            let vname = v.get("name").and_then(Value::as_str).unwrap_or("?");
            found.add(
                &EMPTYDIR_SIZE,
                None,
                &format!("{}/volumes/{j}/emptyDir", pod.ptr),
                format!("emptyDir volume {vname:?} has no sizeLimit"),
            );
        }
    }
}

/// The human table.
pub fn write_table(out: &mut dyn Write, report: &AuditReport) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = report
        .violations
        .iter()
        .map(|v| {
            vec![
                match v.line {
                    Some(l) => format!("{}:{l}", v.file.display()),
                    None => v.file.display().to_string(),
                },
                v.object.clone(),
                v.container.clone().unwrap_or_else(|| "-".into()),
                format!("{} {}", v.rule, v.rule_name),
                format!("{} — fix: {}", v.message, v.fix),
            ]
        })
        .collect();
    if !rows.is_empty() {
        table::write(
            out,
            &["FILE", "OBJECT", "CONTAINER", "RULE", "MESSAGE"],
            &rows,
        )?;
        writeln!(out)?;
    }
    for e in &report.errors {
        writeln!(out, "error: {}", crate::terminal::Escaped(e))?;
    }
    let mut per_rule: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &report.violations {
        *per_rule.entry(v.rule).or_insert(0) += 1;
    }
    let per: Vec<String> = per_rule.iter().map(|(r, n)| format!("{r}×{n}")).collect();
    writeln!(
        out,
        "{} file(s), {} object(s): {} violation(s){}{}",
        report.files,
        report.objects,
        report.violations.len(),
        if per.is_empty() {
            String::new()
        } else {
            format!(" ({})", per.join(", "))
        },
        if report.errors.is_empty() {
            String::new()
        } else {
            format!(", {} unreadable file(s)", report.errors.len())
        }
    )
}
