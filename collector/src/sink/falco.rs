//! Findings in Falco's JSON output shape, so tools built for Falco
//! (falcosidekick, SIEM parsers) consume driftwatch unchanged.

use std::borrow::Cow;
use std::sync::LazyLock;

use chrono::{DateTime, SecondsFormat, Utc};
use driftwatch_sdk::EventKind;
use driftwatch_sdk::fields::Field;
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::pipeline::{FindingRecord, Processed, last_wins};

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
/// For an event that stands for repeats the kernel folded.
const REPEAT: &[&str] = &["evt.count", "evt.first_time", "evt.last_time"];
const K8S: &[&str] = &[
    "k8s.ns.name",
    "k8s.pod.name",
    "k8s.pod.uid",
    "k8s.container.name",
];

/// RFC 3339 with nanoseconds, as Falco prints `time`.
pub fn rfc3339(time_ns: u64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(time_ns as i64)
        .to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// One finding in Falco's JSON shape, serialized straight from the event and
/// the finding: no intermediate `serde_json::Value` tree, which cost a
/// String and a map node per field of every finding. Keys come out in sorted
/// order, as before.
pub struct FalcoFinding<'a> {
    p: &'a Processed<'a>,
    rec: &'a FindingRecord,
}

pub fn finding_json<'a>(p: &'a Processed<'a>, rec: &'a FindingRecord) -> FalcoFinding<'a> {
    FalcoFinding { p, rec }
}

/// The field names above, resolved once.
fn resolved(names: &'static [&'static str]) -> Vec<(&'static str, Field)> {
    names
        .iter()
        .filter_map(|n| Field::parse(n).map(|f| (*n, f)))
        .collect()
}

static ALWAYS_FIELDS: LazyLock<Vec<(&'static str, Field)>> = LazyLock::new(|| resolved(ALWAYS));
static FILE_FIELDS: LazyLock<Vec<(&'static str, Field)>> = LazyLock::new(|| resolved(FILE));
static K8S_FIELDS: LazyLock<Vec<(&'static str, Field)>> = LazyLock::new(|| resolved(K8S));
static REPEAT_FIELDS: LazyLock<Vec<(&'static str, Field)>> = LazyLock::new(|| resolved(REPEAT));

impl Serialize for FalcoFinding<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (ev, rec) = (self.p.event, self.rec);
        let mut tags: Vec<&str> = rec
            .tags()
            .iter()
            .chain(self.p.tags)
            .map(String::as_str)
            .collect();
        tags.sort_unstable();
        tags.dedup();
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("hostname", &ev.hostname)?;
        m.serialize_entry("output", &rec.output(ev))?;
        m.serialize_entry("output_fields", &OutputFields(self.p, self.rec))?;
        m.serialize_entry("plugin", self.rec.plugin.as_ref())?;
        m.serialize_entry("priority", rec.priority().falco_name())?;
        if let Some(r) = rec.remediation() {
            m.serialize_entry(
                "remediation",
                &RemediationJson {
                    alert_type: &r.alert_type,
                    description: &r.description,
                    remediation_steps: &r.steps,
                },
            )?;
        }
        m.serialize_entry("rule", rec.rule())?;
        m.serialize_entry("source", "syscall")?;
        m.serialize_entry("tags", &tags)?;
        m.serialize_entry("time", &rfc3339(ev.time_ns))?;
        m.end()
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct RemediationJson<'a> {
    alert_type: &'a str,
    description: &'a str,
    remediation_steps: &'a [String],
}

/// The fixed fields (null when the event has no value), then the rule's
/// fields, then the ones plugins added to the event: a later one with the
/// same name wins.
struct OutputFields<'a>(&'a Processed<'a>, &'a FindingRecord);

impl Serialize for OutputFields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (p, rec) = (self.0, self.1);
        let ev = p.event;
        let mut all: Vec<(&str, Option<Cow<'_, str>>)> = Vec::with_capacity(24);
        let mut fixed = |list: &[(&'static str, Field)]| {
            all.extend(list.iter().map(|(n, field)| (*n, field.value(ev))));
        };
        fixed(&ALWAYS_FIELDS);
        if ev.kind != EventKind::Exec {
            fixed(&FILE_FIELDS);
        }
        if ev.k8s.is_some() {
            fixed(&K8S_FIELDS);
        }
        if ev.repeat.is_some() {
            fixed(&REPEAT_FIELDS);
        }
        all.extend(rec.fields(ev).into_iter().map(|(k, v)| (k, Some(v))));
        for (k, v) in p.fields {
            all.push((k, Some(Cow::Borrowed(v))));
        }
        last_wins(&mut all);
        let mut m = s.serialize_map(None)?;
        for (name, value) in &all {
            m.serialize_entry(name, value)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use driftwatch_sdk::{Container, Event, FileInfo, Finding, Priority, Process, Remediation};
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn a_finding_in_falco_shape() {
        let event = Event {
            time_ns: 1_700_000_000_123_456_789,
            kind: EventKind::OpenWrite,
            hostname: "node-1".into(),
            process: Process {
                pid: 42,
                name: "tee".into(),
                args: vec!["tee".into(), "/etc/x".into()],
                ..Process::default()
            },
            container: Some(Container {
                id: "abc".into(),
                name: Some("web".into()),
                ..Container::default()
            }),
            file: Some(FileInfo {
                path: "/etc/x".into(),
                ..FileInfo::default()
            }),
            ..Event::default()
        };
        let rec = FindingRecord {
            plugin: Arc::from("write-filter"),
            plugin_version: Arc::from("0.1.0"),
            finding: Finding {
                rule: "Container File System Write".into(),
                priority: Priority::Notice,
                output: "write to /etc/x".into(),
                description: None,
                tags: vec!["filesystem".into(), "container".into()],
                // Overrides the fixed field of the same name.
                fields: [("proc.name".to_string(), "rule-says".to_string())].into(),
                remediation: Some(Remediation {
                    alert_type: "K8S.NODE_X".into(),
                    description: "why".into(),
                    steps: vec!["one".into()],
                }),
            }
            .into(),
        };
        let tags = vec!["container".to_string(), "extra".to_string()];
        let fields: BTreeMap<String, String> =
            [("proc.name".to_string(), "plugin-added".to_string())].into();
        let p = Processed {
            event: &event,
            findings: std::slice::from_ref(&rec),
            tags: &tags,
            fields: &fields,
        };
        let text = serde_json::to_string(&finding_json(&p, &rec)).expect("serializes");
        let v: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(v["time"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(v["rule"], "Container File System Write");
        assert_eq!(v["priority"], "Notice");
        assert_eq!(v["source"], "syscall");
        assert_eq!(v["hostname"], "node-1");
        assert_eq!(v["plugin"], "write-filter");
        assert_eq!(v["tags"], json!(["container", "extra", "filesystem"]));
        let of = &v["output_fields"];
        assert_eq!(of["proc.name"], "plugin-added");
        assert_eq!(of["proc.pid"], "42");
        assert_eq!(of["proc.cmdline"], "tee /etc/x");
        assert_eq!(of["fd.name"], "/etc/x");
        assert_eq!(of["container.id"], "abc");
        assert_eq!(of["container.image.tag"], Value::Null);
        assert!(
            of.get("k8s.pod.name").is_none(),
            "no k8s fields outside pods"
        );
        assert_eq!(
            v["remediation"],
            json!({"alertType": "K8S.NODE_X", "description": "why", "remediationSteps": ["one"]})
        );
        // Each name once, in sorted order, at both levels.
        let keys: Vec<&str> = of
            .as_object()
            .expect("map")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys.iter().filter(|k| **k == "proc.name").count(), 1);
        let pos = |k: &str| text.find(&format!("\"{k}\"")).expect(k);
        assert!(pos("hostname") < pos("output") && pos("rule") < pos("tags"));
        assert!(pos("container.id") < pos("fd.name") && pos("fd.name") < pos("proc.cmdline"));
    }

    #[test]
    fn every_fixed_field_name_resolves() {
        assert_eq!(ALWAYS_FIELDS.len(), ALWAYS.len());
        assert_eq!(FILE_FIELDS.len(), FILE.len());
        assert_eq!(K8S_FIELDS.len(), K8S.len());
    }
}
