//! Findings in Falco's JSON output shape, so tools built for Falco
//! (falcosidekick, SIEM parsers) consume driftwatch unchanged.

use chrono::{DateTime, SecondsFormat, Utc};
use driftwatch_sdk::{EventKind, fields};
use serde_json::{Map, Value, json};

use crate::pipeline::{FindingRecord, Processed};

/// Fields every finding carries in `output_fields`, beside the ones its rule
/// used. File fields only for file events, Kubernetes ones only in pods.
const ALWAYS: &[&str] = &[
    "evt.type",
    "proc.name",
    "proc.pid",
    "proc.cmdline",
    "proc.pname",
    "proc.exepath",
    "user.name",
    "user.uid",
    "container.id",
    "container.name",
    "container.image.repository",
    "container.image.tag",
];
const FILE: &[&str] = &["fd.name", "fs.path.target"];
const K8S: &[&str] = &["k8s.ns.name", "k8s.pod.name", "k8s.pod.uid"];

/// RFC 3339 with nanoseconds, as Falco prints `time`.
pub fn rfc3339(time_ns: u64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(time_ns as i64)
        .to_rfc3339_opts(SecondsFormat::Nanos, true)
}

pub fn finding_json(p: &Processed<'_>, rec: &FindingRecord) -> Value {
    let ev = p.event;
    let f = &rec.finding;
    let mut out = Map::new();
    let mut add = |name: &str| {
        out.insert(
            name.to_string(),
            fields::field(ev, name)
                .map(Value::String)
                .unwrap_or(Value::Null),
        );
    };
    ALWAYS.iter().for_each(|n| add(n));
    if ev.kind != EventKind::Exec {
        FILE.iter().for_each(|n| add(n));
    }
    if ev.k8s.is_some() {
        K8S.iter().for_each(|n| add(n));
    }
    for (k, v) in f.fields.iter().chain(p.fields) {
        out.insert(k.clone(), Value::String(v.clone()));
    }
    let mut tags: Vec<&str> = f.tags.iter().chain(p.tags).map(String::as_str).collect();
    tags.sort_unstable();
    tags.dedup();
    let mut v = json!({
        "time": rfc3339(ev.time_ns),
        "rule": f.rule,
        "priority": f.priority.falco_name(),
        "output": f.output,
        "source": "syscall",
        "hostname": ev.hostname,
        "tags": tags,
        "output_fields": out,
        "plugin": rec.plugin.as_ref(),
    });
    if let Some(r) = &f.remediation {
        v["remediation"] = json!({
            "alertType": r.alert_type,
            "description": r.description,
            "remediationSteps": r.steps,
        });
    }
    v
}
