//! One finding (or, optionally, one passing event) as one OTLP log record,
//! with OpenTelemetry semantic-convention attributes.
//!
//! The mapping happens before the record enters the spool, so what sits on
//! disk is exactly what will be sent, whatever version reads it back.

use driftwatch_sdk::{Event, EventKind, Priority};
use opentelemetry::logs::{AnyValue, LogRecord as _, Severity};
use opentelemetry::{Key, StringValue};
use serde::{Deserialize, Serialize};

use crate::pipeline::{FindingRecord, Processed};

pub const FINDING_EVENT_NAME: &str = "driftwatch.finding";
pub const EVENT_EVENT_NAME: &str = "driftwatch.event";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    S(String),
    I(i64),
    B(bool),
    L(Vec<String>),
}

/// A log record in the spool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub time_ns: u64,
    /// The Falco priority for findings; `None` for plain events.
    pub priority: Option<Priority>,
    pub body: String,
    pub attributes: Vec<(String, Value)>,
}

/// OTel severity number for a Falco priority, and the text as the source
/// (Falco) spells it.
pub fn severity(p: Option<Priority>) -> (Severity, &'static str) {
    match p {
        Some(Priority::Emergency) => (Severity::Fatal4, Priority::Emergency.falco_name()),
        Some(Priority::Alert) => (Severity::Fatal3, Priority::Alert.falco_name()),
        Some(Priority::Critical) => (Severity::Fatal, Priority::Critical.falco_name()),
        Some(Priority::Error) => (Severity::Error, Priority::Error.falco_name()),
        Some(Priority::Warning) => (Severity::Warn, Priority::Warning.falco_name()),
        Some(Priority::Notice) => (Severity::Info2, Priority::Notice.falco_name()),
        Some(Priority::Informational) => (Severity::Info, Priority::Informational.falco_name()),
        Some(Priority::Debug) => (Severity::Debug, Priority::Debug.falco_name()),
        None => (Severity::Info, "Informational"),
    }
}

struct Attrs(Vec<(String, Value)>);

impl Attrs {
    fn s(&mut self, k: &str, v: impl Into<String>) {
        let v = v.into();
        if !v.is_empty() {
            self.0.push((k.into(), Value::S(v)));
        }
    }
    fn opt(&mut self, k: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.s(k, v.clone());
        }
    }
    fn i(&mut self, k: &str, v: i64) {
        self.0.push((k.into(), Value::I(v)));
    }
    fn b(&mut self, k: &str, v: bool) {
        self.0.push((k.into(), Value::B(v)));
    }
    fn l(&mut self, k: &str, v: Vec<String>) {
        if !v.is_empty() {
            self.0.push((k.into(), Value::L(v)));
        }
    }
}

/// What every record about `ev` carries: process, container, pod, file.
fn event_attributes(ev: &Event, a: &mut Attrs) {
    let p = &ev.process;
    a.s("driftwatch.event.kind", ev.kind.as_str());
    a.i("process.pid", p.pid.into());
    a.i("process.parent_pid", p.ppid.into());
    a.s("process.executable.path", p.exe_path.clone());
    a.s(
        "process.executable.name",
        p.exe_path.rsplit('/').next().unwrap_or_default(),
    );
    // semconv wants the command as launched (argv), not Falco's name + args.
    let command_line = if p.args.is_empty() {
        p.name.clone()
    } else {
        p.args.join(" ")
    };
    a.s("process.command_line", command_line);
    a.l("process.command_args", p.args.clone());
    a.i("process.user.id", p.uid.into());
    a.opt("process.user.name", &p.user_name);
    a.s("process.working_directory", p.cwd.clone());
    a.s("driftwatch.process.name", p.name.clone());
    a.s("driftwatch.process.parent.name", p.pname.clone());
    a.s(
        "driftwatch.process.parent.executable.path",
        p.pexe_path.clone(),
    );
    a.i("driftwatch.process.vpid", p.vpid.into());
    a.b("driftwatch.process.exe_upper_layer", p.exe_upper_layer);
    a.b("driftwatch.process.exe_lower_layer", p.exe_lower_layer);
    a.b("driftwatch.process.exe_from_memfd", p.exe_from_memfd);
    if let Some(c) = &ev.container {
        a.s("container.id", c.id.clone());
        a.opt("container.name", &c.name);
        a.opt("container.runtime.name", &c.runtime);
        a.opt("container.image.name", &c.image_repository);
        if let Some(t) = &c.image_tag {
            a.l("container.image.tags", vec![t.clone()]);
        }
        if let (Some(repo), Some(d)) = (&c.image_repository, &c.image_digest) {
            a.l("container.image.repo_digests", vec![format!("{repo}@{d}")]);
        }
        a.opt("container.image.id", &c.image_id);
    }
    if let Some(k) = &ev.k8s {
        a.opt("k8s.namespace.name", &k.namespace);
        a.opt("k8s.pod.name", &k.pod_name);
        a.opt("k8s.pod.uid", &k.pod_uid);
        a.opt("k8s.container.name", &k.container_name);
        for (key, v) in &k.labels {
            a.s(&format!("k8s.pod.label.{key}"), v.clone());
        }
    }
    if let Some(f) = &ev.file {
        a.s("file.path", f.path.clone());
        if let Some((dir, name)) = f.path.rsplit_once('/') {
            a.s("file.directory", if dir.is_empty() { "/" } else { dir });
            a.s("file.name", name);
        }
        a.opt("driftwatch.file.target_path", &f.target_path);
        a.b("driftwatch.file.upper_layer", f.upper_layer);
        a.b("driftwatch.file.created", f.created);
        a.opt("driftwatch.file.change", &f.change);
        if ev.kind == EventKind::Chmod || f.mode != 0 {
            a.s("driftwatch.file.mode", format!("{:o}", f.mode & 0o7777));
        }
    }
}

pub fn finding_entry(p: &Processed, rec: &FindingRecord) -> Entry {
    let f = &rec.finding;
    let mut a = Attrs(Vec::with_capacity(48));
    a.s("security_rule.name", f.rule.clone());
    // The detector that fired is the stable category of a rule.
    a.s("security_rule.category", rec.plugin.as_ref());
    let description = f
        .description
        .clone()
        .or_else(|| f.remediation.as_ref().map(|r| r.description.clone()));
    a.opt("security_rule.description", &description);
    a.s(
        "security_rule.ruleset.name",
        format!("driftwatch/{}", rec.plugin),
    );
    a.s("security_rule.version", rec.plugin_version.as_ref());
    event_attributes(&p.event, &mut a);
    let mut tags: Vec<String> = f.tags.iter().chain(&p.tags).cloned().collect();
    tags.sort_unstable();
    tags.dedup();
    a.l("driftwatch.tags", tags);
    if let Some(r) = &f.remediation {
        a.s("driftwatch.alert_type", r.alert_type.clone());
        a.l("driftwatch.remediation.steps", r.steps.clone());
    }
    for (k, v) in f.fields.iter().chain(&p.fields) {
        a.s(&format!("driftwatch.field.{k}"), v.clone());
    }
    Entry {
        time_ns: p.event.time_ns,
        priority: Some(f.priority),
        body: f.output.clone(),
        attributes: a.0,
    }
}

/// An event that passed the chain, for `events = true`.
pub fn event_entry(p: &Processed) -> Entry {
    let ev = &p.event;
    let mut a = Attrs(Vec::with_capacity(32));
    event_attributes(ev, &mut a);
    let mut tags = p.tags.clone();
    tags.sort_unstable();
    tags.dedup();
    a.l("driftwatch.tags", tags);
    for (k, v) in &p.fields {
        a.s(&format!("driftwatch.field.{k}"), v.clone());
    }
    let what = match &ev.file {
        Some(f) => f.path.as_str(),
        None => ev.process.exe_path.as_str(),
    };
    Entry {
        time_ns: ev.time_ns,
        priority: None,
        body: format!("{} {what}", ev.kind),
        attributes: a.0,
    }
}

/// Fills an SDK log record from a spooled entry.
pub fn fill(entry: Entry, record: &mut opentelemetry_sdk::logs::SdkLogRecord) {
    let (number, text) = severity(entry.priority);
    record.set_event_name(if entry.priority.is_some() {
        FINDING_EVENT_NAME
    } else {
        EVENT_EVENT_NAME
    });
    record.set_timestamp(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(entry.time_ns));
    record.set_observed_timestamp(std::time::SystemTime::now());
    record.set_severity_number(number);
    record.set_severity_text(text);
    record.set_body(AnyValue::String(StringValue::from(entry.body)));
    for (k, v) in entry.attributes {
        let v = match v {
            Value::S(s) => AnyValue::String(StringValue::from(s)),
            Value::I(i) => AnyValue::Int(i),
            Value::B(b) => AnyValue::Boolean(b),
            Value::L(l) => AnyValue::ListAny(Box::new(
                l.into_iter()
                    .map(|s| AnyValue::String(StringValue::from(s)))
                    .collect(),
            )),
        };
        record.add_attribute(Key::from(k), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftwatch_sdk::{Container, FileInfo, Finding, Process, Remediation};
    use std::sync::Arc;

    #[test]
    fn a_finding_carries_the_semantic_conventions() {
        let event = Event {
            time_ns: 42,
            kind: EventKind::OpenWrite,
            process: Process {
                pid: 7,
                ppid: 1,
                uid: 0,
                user_name: Some("root".into()),
                exe_path: "/usr/bin/tee".into(),
                args: vec!["tee".into(), "/etc/x".into()],
                cwd: "/".into(),
                ..Process::default()
            },
            container: Some(Container {
                id: "abc".into(),
                name: Some("web".into()),
                runtime: Some("podman".into()),
                image_repository: Some("docker.io/library/nginx".into()),
                image_tag: Some("1.27".into()),
                image_digest: Some("sha256:00ff".into()),
                image_id: None,
            }),
            file: Some(FileInfo {
                path: "/etc/x".into(),
                ..FileInfo::default()
            }),
            ..Event::default()
        };
        let p = Processed {
            event,
            findings: Vec::new(),
            tags: vec!["extra".into()],
            fields: Default::default(),
        };
        let rec = FindingRecord {
            plugin: Arc::from("write-filter"),
            plugin_version: Arc::from("0.1.0"),
            finding: Finding {
                rule: "Container File System Write".into(),
                priority: Priority::Notice,
                output: "write to /etc/x".into(),
                description: None,
                tags: vec!["filesystem".into()],
                fields: Default::default(),
                remediation: Some(Remediation {
                    alert_type: "K8S.NODE_X".into(),
                    description: "why".into(),
                    steps: vec!["one".into(), "two".into()],
                }),
            },
        };
        let e = finding_entry(&p, &rec);
        let get = |k: &str| {
            e.attributes
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("security_rule.name"),
            Some(Value::S("Container File System Write".into()))
        );
        assert_eq!(
            get("security_rule.description"),
            Some(Value::S("why".into()))
        );
        assert_eq!(get("process.pid"), Some(Value::I(7)));
        assert_eq!(get("process.executable.name"), Some(Value::S("tee".into())));
        assert_eq!(
            get("process.command_line"),
            Some(Value::S("tee /etc/x".into()))
        );
        assert_eq!(
            get("container.image.repo_digests"),
            Some(Value::L(vec!["docker.io/library/nginx@sha256:00ff".into()]))
        );
        assert_eq!(get("file.directory"), Some(Value::S("/etc".into())));
        assert_eq!(get("file.name"), Some(Value::S("x".into())));
        assert_eq!(
            get("driftwatch.tags"),
            Some(Value::L(vec!["extra".into(), "filesystem".into()]))
        );
        assert_eq!(
            get("driftwatch.remediation.steps"),
            Some(Value::L(vec!["one".into(), "two".into()]))
        );
        assert_eq!(severity(e.priority), (Severity::Info2, "Notice"));
        // It survives the spool's encoding unchanged.
        let bytes = rmp_serde::to_vec(&e).unwrap();
        assert_eq!(rmp_serde::from_slice::<Entry>(&bytes).unwrap(), e);
    }
}
