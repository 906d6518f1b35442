//! One finding (or, optionally, one passing event) as one OTLP log record,
//! with OpenTelemetry semantic-convention attributes.
//!
//! The mapping happens before the record enters the spool, so what sits on
//! disk is exactly what will be sent, whatever version reads it back.
//!
//! The spooled form is written and read straight from the event, without an
//! intermediate owned record: export throughput is bounded by per-attribute
//! work, so known attribute keys are one byte on disk and come back as
//! `&'static str` keys the SDK does not copy.
//!
//! Spool record, version 1 (MessagePack):
//! `[1, time_ns, priority | nil, body, [key, value, key, value, ...]]` where a
//! key is an index into [`KEYS`] or a string (pod labels, plugin fields), and
//! a value is a string, an integer, a boolean or an array of strings.

use driftwatch_sdk::{Event, EventKind, Priority};
use opentelemetry::logs::{AnyValue, LogRecord as _, Severity};
use opentelemetry::{Key, StringValue};
use serde::Serialize;

use crate::pipeline::{FindingRecord, Processed};

pub const FINDING_EVENT_NAME: &str = "driftwatch.finding";
pub const EVENT_EVENT_NAME: &str = "driftwatch.event";

const FORMAT_VERSION: u8 = 1;

macro_rules! known_keys {
    ($($name:ident = $key:literal,)*) => {
        /// Attribute keys the mapping writes, by their on-disk index.
        #[derive(Debug, Clone, Copy)]
        #[repr(u8)]
        enum Attr { $($name,)* }

        /// Append-only: a spooled record names its keys by position here.
        pub const KEYS: &[&str] = &[$($key,)*];
    };
}

known_keys! {
    RuleName = "security_rule.name",
    RuleCategory = "security_rule.category",
    RuleDescription = "security_rule.description",
    RulesetName = "security_rule.ruleset.name",
    RuleVersion = "security_rule.version",
    EventKind = "driftwatch.event.kind",
    Pid = "process.pid",
    ParentPid = "process.parent_pid",
    ExePath = "process.executable.path",
    ExeName = "process.executable.name",
    CommandLine = "process.command_line",
    CommandArgs = "process.command_args",
    UserId = "process.user.id",
    UserName = "process.user.name",
    WorkingDirectory = "process.working_directory",
    ProcName = "driftwatch.process.name",
    ParentName = "driftwatch.process.parent.name",
    ParentExePath = "driftwatch.process.parent.executable.path",
    Vpid = "driftwatch.process.vpid",
    ExeUpper = "driftwatch.process.exe_upper_layer",
    ExeLower = "driftwatch.process.exe_lower_layer",
    ExeMemfd = "driftwatch.process.exe_from_memfd",
    ExeSource = "driftwatch.drift.source",
    ExeMount = "driftwatch.drift.mount",
    ContainerId = "container.id",
    ContainerName = "container.name",
    RuntimeName = "container.runtime.name",
    ImageName = "container.image.name",
    ImageTags = "container.image.tags",
    ImageRepoDigests = "container.image.repo_digests",
    ImageId = "container.image.id",
    Namespace = "k8s.namespace.name",
    PodName = "k8s.pod.name",
    PodUid = "k8s.pod.uid",
    KubeContainerName = "k8s.container.name",
    FilePath = "file.path",
    FileDirectory = "file.directory",
    FileName = "file.name",
    FileTarget = "driftwatch.file.target_path",
    FileUpper = "driftwatch.file.upper_layer",
    FileCreated = "driftwatch.file.created",
    FileChange = "driftwatch.file.change",
    FileMode = "driftwatch.file.mode",
    Tags = "driftwatch.tags",
    AlertType = "driftwatch.alert_type",
    RemediationSteps = "driftwatch.remediation.steps",
    FileOutsideRoot = "driftwatch.file.outside_root",
    DeploymentName = "k8s.deployment.name",
    StatefulSetName = "k8s.statefulset.name",
    DaemonSetName = "k8s.daemonset.name",
    JobName = "k8s.job.name",
    CronJobName = "k8s.cronjob.name",
    ReplicaSetName = "k8s.replicaset.name",
    RepeatCount = "driftwatch.event.count",
    RepeatFirst = "driftwatch.event.first_time",
    RepeatLast = "driftwatch.event.last_time",
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

const PRIORITIES: [Priority; 8] = [
    Priority::Emergency,
    Priority::Alert,
    Priority::Critical,
    Priority::Error,
    Priority::Warning,
    Priority::Notice,
    Priority::Informational,
    Priority::Debug,
];

/// Writes one spool record. Writing into a `Vec` cannot fail, so the
/// `rmp` results are discarded on purpose.
struct Writer<'b> {
    out: &'b mut Vec<u8>,
    /// Attribute array: its header is patched once the count is known.
    count_at: usize,
    count: u32,
}

impl<'b> Writer<'b> {
    fn start(out: &'b mut Vec<u8>, time_ns: u64, priority: Option<Priority>, body: &str) -> Self {
        let _ = rmp::encode::write_array_len(out, 5);
        let _ = rmp::encode::write_uint(out, FORMAT_VERSION.into());
        let _ = rmp::encode::write_uint(out, time_ns);
        match priority {
            Some(p) => {
                let i = PRIORITIES.iter().position(|x| *x == p).unwrap_or(6);
                let _ = rmp::encode::write_uint(out, i as u64);
            }
            None => {
                let _ = rmp::encode::write_nil(out);
            }
        }
        let _ = rmp::encode::write_str(out, body);
        // array32 header, patched in `finish`.
        let count_at = out.len();
        out.extend_from_slice(&[0xdd, 0, 0, 0, 0]);
        Writer {
            out,
            count_at,
            count: 0,
        }
    }

    fn key(&mut self, k: Attr) {
        let _ = rmp::encode::write_uint(self.out, k as u64);
        self.count += 2;
    }

    fn dyn_key(&mut self, prefix: &str, name: &str) {
        let _ = rmp::encode::write_str_len(self.out, (prefix.len() + name.len()) as u32);
        self.out.extend_from_slice(prefix.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.count += 2;
    }

    fn s(&mut self, k: Attr, v: &str) {
        if !v.is_empty() {
            self.key(k);
            let _ = rmp::encode::write_str(self.out, v);
        }
    }

    fn opt(&mut self, k: Attr, v: &Option<String>) {
        if let Some(v) = v {
            self.s(k, v);
        }
    }

    fn i(&mut self, k: Attr, v: i64) {
        self.key(k);
        let _ = rmp::encode::write_sint(self.out, v);
    }

    fn b(&mut self, k: Attr, v: bool) {
        self.key(k);
        let _ = rmp::encode::write_bool(self.out, v);
    }

    fn l<'s>(&mut self, k: Attr, v: impl ExactSizeIterator<Item = &'s str>) {
        if v.len() > 0 {
            self.key(k);
            let _ = rmp::encode::write_array_len(self.out, v.len() as u32);
            for s in v {
                let _ = rmp::encode::write_str(self.out, s);
            }
        }
    }

    /// A string value made of `parts` joined by `sep`, without building it.
    fn joined_value<S: AsRef<str>>(&mut self, parts: &[S], sep: &str) {
        let len = parts.iter().map(|p| p.as_ref().len()).sum::<usize>()
            + sep.len() * parts.len().saturating_sub(1);
        let _ = rmp::encode::write_str_len(self.out, len as u32);
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                self.out.extend_from_slice(sep.as_bytes());
            }
            self.out.extend_from_slice(p.as_ref().as_bytes());
        }
    }

    fn dyn_s(&mut self, prefix: &str, name: &str, v: &str) {
        if !v.is_empty() {
            self.dyn_key(prefix, name);
            let _ = rmp::encode::write_str(self.out, v);
        }
    }

    fn finish(self) {
        self.out[self.count_at + 1..self.count_at + 5].copy_from_slice(&self.count.to_be_bytes());
    }
}

/// What every record about `ev` carries: process, container, pod, file.
fn event_attributes(ev: &Event, a: &mut Writer<'_>) {
    let p = &ev.process;
    a.s(Attr::EventKind, ev.kind.as_str());
    a.i(Attr::Pid, p.pid.into());
    a.i(Attr::ParentPid, p.ppid.into());
    a.s(Attr::ExePath, &p.exe_path);
    a.s(
        Attr::ExeName,
        p.exe_path.rsplit('/').next().unwrap_or_default(),
    );
    // semconv wants the command as launched (argv), not Falco's name + args.
    if p.args.iter().all(String::is_empty) {
        a.s(Attr::CommandLine, &p.name);
    } else {
        a.key(Attr::CommandLine);
        a.joined_value(&p.args, " ");
    }
    a.l(Attr::CommandArgs, p.args.iter().map(String::as_str));
    a.i(Attr::UserId, p.uid.into());
    a.opt(Attr::UserName, &p.user_name);
    a.s(Attr::WorkingDirectory, &p.cwd);
    a.s(Attr::ProcName, &p.name);
    a.s(Attr::ParentName, &p.pname);
    a.s(Attr::ParentExePath, &p.pexe_path);
    a.i(Attr::Vpid, p.vpid.into());
    a.b(Attr::ExeUpper, p.exe_upper_layer);
    a.b(Attr::ExeLower, p.exe_lower_layer);
    a.b(Attr::ExeMemfd, p.exe_from_memfd);
    if let Some(source) = p.exe_source {
        a.s(Attr::ExeSource, source.as_str());
    }
    a.opt(Attr::ExeMount, &p.exe_mount);
    if let Some(c) = &ev.container {
        a.s(Attr::ContainerId, &c.id);
        a.opt(Attr::ContainerName, &c.name);
        if let Some(r) = &c.runtime {
            a.s(Attr::RuntimeName, r.as_str());
        }
        a.opt(Attr::ImageName, &c.image_repository);
        if let Some(t) = &c.image_tag {
            a.l(Attr::ImageTags, std::iter::once(t.as_str()));
        }
        if let (Some(repo), Some(d)) = (&c.image_repository, &c.image_digest) {
            a.key(Attr::ImageRepoDigests);
            let _ = rmp::encode::write_array_len(a.out, 1);
            a.joined_value(&[repo, d], "@");
        }
        a.opt(Attr::ImageId, &c.image_id);
    }
    if let Some(k) = &ev.k8s {
        a.opt(Attr::Namespace, &k.namespace);
        a.opt(Attr::PodName, &k.pod_name);
        a.opt(Attr::PodUid, &k.pod_uid);
        a.opt(Attr::KubeContainerName, &k.container_name);
        for (key, v) in &k.labels {
            a.dyn_s("k8s.pod.label.", key, v);
        }
        // The owning workload, under its kind's semantic-convention key.
        if let (Some(kind), Some(name)) = (&k.workload_kind, &k.workload_name) {
            let attr = match kind.as_str() {
                "Deployment" => Some(Attr::DeploymentName),
                "StatefulSet" => Some(Attr::StatefulSetName),
                "DaemonSet" => Some(Attr::DaemonSetName),
                "Job" => Some(Attr::JobName),
                "CronJob" => Some(Attr::CronJobName),
                "ReplicaSet" => Some(Attr::ReplicaSetName),
                _ => None,
            };
            if let Some(attr) = attr {
                a.s(attr, name);
            }
        }
    }
    if let Some(r) = ev.repeat {
        let ns = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        a.i(Attr::RepeatCount, ns(r.count));
        a.i(Attr::RepeatFirst, ns(r.first_ns));
        a.i(Attr::RepeatLast, ns(r.last_ns));
    }
    if let Some(f) = &ev.file {
        a.s(Attr::FilePath, &f.path);
        if let Some((dir, name)) = f.path.rsplit_once('/') {
            a.s(Attr::FileDirectory, if dir.is_empty() { "/" } else { dir });
            a.s(Attr::FileName, name);
        }
        a.opt(Attr::FileTarget, &f.target_path);
        a.b(Attr::FileUpper, f.upper_layer);
        a.b(Attr::FileCreated, f.created);
        if f.outside_root {
            a.b(Attr::FileOutsideRoot, true);
        }
        if let Some(c) = f.change {
            a.s(Attr::FileChange, c.as_str());
        }
        if ev.kind == EventKind::Chmod || f.mode != 0 {
            a.s(Attr::FileMode, &format!("{:o}", f.mode & 0o7777));
        }
    }
}

/// Appends the spool record of one finding about `p` to `out`.
pub fn write_finding(out: &mut Vec<u8>, p: &Processed<'_>, rec: &FindingRecord) {
    let ev = p.event;
    let mut a = Writer::start(out, ev.time_ns, Some(rec.priority()), &rec.output(ev));
    a.s(Attr::RuleName, rec.rule());
    // The detector that fired is the stable category of a rule.
    a.s(Attr::RuleCategory, &rec.plugin);
    let description = rec
        .description()
        .or_else(|| rec.remediation().map(|r| r.description.as_str()));
    if let Some(d) = description {
        a.s(Attr::RuleDescription, d);
    }
    a.key(Attr::RulesetName);
    a.joined_value(&["driftwatch", &rec.plugin], "/");
    a.s(Attr::RuleVersion, &rec.plugin_version);
    event_attributes(p.event, &mut a);
    write_tags(&mut a, rec.tags().iter().chain(p.tags));
    if let Some(r) = rec.remediation() {
        a.s(Attr::AlertType, &r.alert_type);
        a.l(Attr::RemediationSteps, r.steps.iter().map(String::as_str));
    }
    for (k, v) in rec.fields(ev) {
        a.dyn_s("driftwatch.field.", k, &v);
    }
    for (k, v) in p.fields {
        a.dyn_s("driftwatch.field.", k, v);
    }
    a.finish();
}

/// Appends the spool record of an event that passed the chain
/// (`events = true`) to `out`.
pub fn write_event(out: &mut Vec<u8>, p: &Processed<'_>) {
    let ev = p.event;
    let what = match &ev.file {
        Some(f) => f.path.as_str(),
        None => ev.process.exe_path.as_str(),
    };
    let body = format!("{} {what}", ev.kind);
    let mut a = Writer::start(out, ev.time_ns, None, &body);
    event_attributes(ev, &mut a);
    write_tags(&mut a, p.tags.iter());
    for (k, v) in p.fields {
        a.dyn_s("driftwatch.field.", k, v);
    }
    a.finish();
}

/// Tags sorted and deduplicated: the rule's and those the chain added.
fn write_tags<'s>(a: &mut Writer<'_>, tags: impl Iterator<Item = &'s String>) {
    let mut tags: Vec<&str> = tags.map(String::as_str).collect();
    tags.sort_unstable();
    tags.dedup();
    a.l(Attr::Tags, tags.into_iter());
}

#[derive(Debug, thiserror::Error)]
#[error("spooled log record does not decode: {0}")]
pub struct DecodeError(String);

fn bad(what: impl std::fmt::Display) -> DecodeError {
    DecodeError(what.to_string())
}

/// An attribute key as read back: a known key, or one built at run time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyRef<'a> {
    Known(&'static str),
    Other(&'a str),
}

impl KeyRef<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            KeyRef::Known(k) => k,
            KeyRef::Other(k) => k,
        }
    }
}

/// An attribute value as read back, borrowing from the record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ValueRef<'a> {
    S(&'a str),
    I(i64),
    B(bool),
    L(Vec<&'a str>),
}

/// A spooled record's fixed part.
#[derive(Debug, Clone, PartialEq)]
pub struct Header<'a> {
    pub time_ns: u64,
    /// The Falco priority for findings; `None` for plain events.
    pub priority: Option<Priority>,
    pub body: &'a str,
}

fn read_str<'a>(rd: &mut &'a [u8]) -> Result<&'a str, DecodeError> {
    let (s, rest) = rmp::decode::read_str_from_slice(*rd).map_err(bad)?;
    *rd = rest;
    Ok(s)
}

fn read_uint(rd: &mut &[u8]) -> Result<u64, DecodeError> {
    rmp::decode::read_int(rd).map_err(bad)
}

fn peek(rd: &[u8]) -> Result<rmp::Marker, DecodeError> {
    rd.first()
        .map(|b| rmp::Marker::from_u8(*b))
        .ok_or_else(|| bad("truncated"))
}

fn is_str(m: rmp::Marker) -> bool {
    use rmp::Marker as M;
    matches!(m, M::FixStr(_) | M::Str8 | M::Str16 | M::Str32)
}

fn read_value<'a>(rd: &mut &'a [u8]) -> Result<ValueRef<'a>, DecodeError> {
    use rmp::Marker as M;
    Ok(match peek(rd)? {
        m if is_str(m) => ValueRef::S(read_str(rd)?),
        M::True | M::False => ValueRef::B(rmp::decode::read_bool(rd).map_err(bad)?),
        M::FixArray(_) | M::Array16 | M::Array32 => {
            let n = rmp::decode::read_array_len(rd).map_err(bad)?;
            let mut l = Vec::with_capacity((n as usize).min(rd.len()));
            for _ in 0..n {
                l.push(read_str(rd)?);
            }
            ValueRef::L(l)
        }
        _ => ValueRef::I(rmp::decode::read_int(rd).map_err(bad)?),
    })
}

/// Reads one spooled record: its fixed part, and each attribute in order.
pub fn decode<'a>(
    bytes: &'a [u8],
    mut attr: impl FnMut(KeyRef<'a>, ValueRef<'a>),
) -> Result<Header<'a>, DecodeError> {
    let rd = &mut &bytes[..];
    if rmp::decode::read_array_len(rd).map_err(bad)? != 5 {
        return Err(bad("not a version-1 record"));
    }
    let version = read_uint(rd)?;
    if version != u64::from(FORMAT_VERSION) {
        return Err(bad(format!(
            "record format {version}, expected {FORMAT_VERSION}"
        )));
    }
    let time_ns = read_uint(rd)?;
    let priority = if peek(rd)? == rmp::Marker::Null {
        rmp::decode::read_nil(rd).map_err(bad)?;
        None
    } else {
        let i = read_uint(rd)? as usize;
        Some(
            *PRIORITIES
                .get(i)
                .ok_or_else(|| bad(format!("priority {i}")))?,
        )
    };
    let body = read_str(rd)?;
    let n = rmp::decode::read_array_len(rd).map_err(bad)?;
    if n % 2 != 0 {
        return Err(bad("odd attribute array"));
    }
    for _ in 0..n / 2 {
        let key = if is_str(peek(rd)?) {
            KeyRef::Other(read_str(rd)?)
        } else {
            let i = read_uint(rd)? as usize;
            // A newer version's key: refuse rather than mislabel.
            KeyRef::Known(
                KEYS.get(i)
                    .ok_or_else(|| bad(format!("attribute key {i}")))?,
            )
        };
        attr(key, read_value(rd)?);
    }
    Ok(Header {
        time_ns,
        priority,
        body,
    })
}

/// Fills an SDK log record from a spooled one.
pub fn fill(
    bytes: &[u8],
    record: &mut opentelemetry_sdk::logs::SdkLogRecord,
) -> Result<(), DecodeError> {
    let h = decode(bytes, |k, v| {
        let key = match k {
            KeyRef::Known(k) => Key::from_static_str(k),
            KeyRef::Other(k) => Key::from(k.to_owned()),
        };
        let v = match v {
            ValueRef::S(s) => AnyValue::String(StringValue::from(s.to_owned())),
            ValueRef::I(i) => AnyValue::Int(i),
            ValueRef::B(b) => AnyValue::Boolean(b),
            ValueRef::L(l) => AnyValue::ListAny(Box::new(
                l.into_iter()
                    .map(|s| AnyValue::String(StringValue::from(s.to_owned())))
                    .collect(),
            )),
        };
        record.add_attribute(key, v);
    })?;
    let (number, text) = severity(h.priority);
    record.set_event_name(if h.priority.is_some() {
        FINDING_EVENT_NAME
    } else {
        EVENT_EVENT_NAME
    });
    record.set_timestamp(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(h.time_ns));
    record.set_observed_timestamp(std::time::SystemTime::now());
    record.set_severity_number(number);
    record.set_severity_text(text);
    record.set_body(AnyValue::String(StringValue::from(h.body.to_owned())));
    Ok(())
}

/// A spooled record as JSON, for the rejects file: a person reads it.
pub fn to_json(bytes: &[u8]) -> Result<serde_json::Value, DecodeError> {
    let mut attributes = serde_json::Map::new();
    let h = decode(bytes, |k, v| {
        attributes.insert(
            k.as_str().to_owned(),
            serde_json::to_value(&v).unwrap_or(serde_json::Value::Null),
        );
    })?;
    Ok(serde_json::json!({
        "time_ns": h.time_ns,
        "severity_text": severity(h.priority).1,
        "body": h.body,
        "attributes": attributes,
    }))
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
            k8s: Some(driftwatch_sdk::K8s {
                namespace: Some("shop".into()),
                pod_name: Some("web-6d8f9b7c5-x7k2p".into()),
                container_name: Some("app".into()),
                workload_kind: Some("Deployment".into()),
                workload_name: Some("web".into()),
                ..Default::default()
            }),
            ..Event::default()
        };
        let tags = vec!["extra".to_string()];
        let fields = Default::default();
        let p = Processed {
            event: &event,
            findings: &[],
            tags: &tags,
            fields: &fields,
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
                fields: [("custom".to_string(), "v".to_string())].into(),
                remediation: Some(Remediation {
                    alert_type: "K8S.NODE_X".into(),
                    description: "why".into(),
                    steps: vec!["one".into(), "two".into()],
                }),
            }
            .into(),
        };
        let mut bytes = Vec::new();
        write_finding(&mut bytes, &p, &rec);
        let mut attrs = Vec::new();
        let h = decode(&bytes, |k, v| attrs.push((k.as_str().to_owned(), v))).expect("decodes");
        let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(h.body, "write to /etc/x");
        assert_eq!(h.time_ns, 42);
        assert_eq!(
            get("security_rule.name"),
            Some(ValueRef::S("Container File System Write"))
        );
        assert_eq!(get("security_rule.description"), Some(ValueRef::S("why")));
        assert_eq!(
            get("security_rule.ruleset.name"),
            Some(ValueRef::S("driftwatch/write-filter"))
        );
        assert_eq!(get("process.pid"), Some(ValueRef::I(7)));
        assert_eq!(get("process.executable.name"), Some(ValueRef::S("tee")));
        assert_eq!(get("process.command_line"), Some(ValueRef::S("tee /etc/x")));
        assert_eq!(
            get("container.image.repo_digests"),
            Some(ValueRef::L(vec!["docker.io/library/nginx@sha256:00ff"]))
        );
        assert_eq!(get("file.directory"), Some(ValueRef::S("/etc")));
        assert_eq!(get("file.name"), Some(ValueRef::S("x")));
        assert_eq!(get("driftwatch.file.upper_layer"), Some(ValueRef::B(false)));
        assert_eq!(
            get("driftwatch.tags"),
            Some(ValueRef::L(vec!["extra", "filesystem"]))
        );
        assert_eq!(
            get("driftwatch.remediation.steps"),
            Some(ValueRef::L(vec!["one", "two"]))
        );
        assert_eq!(get("driftwatch.field.custom"), Some(ValueRef::S("v")));
        assert_eq!(get("k8s.namespace.name"), Some(ValueRef::S("shop")));
        assert_eq!(get("k8s.container.name"), Some(ValueRef::S("app")));
        assert_eq!(get("k8s.deployment.name"), Some(ValueRef::S("web")));
        assert_eq!(get("k8s.pod.uid"), None);
        // Empty values are left out rather than sent as "".
        assert_eq!(get("process.working_directory"), Some(ValueRef::S("/")));
        assert_eq!(get("container.image.id"), None);
        assert_eq!(severity(h.priority), (Severity::Info2, "Notice"));
        let json = to_json(&bytes).expect("json");
        assert_eq!(json["attributes"]["process.pid"], 7);
        assert_eq!(json["severity_text"], "Notice");
    }

    #[test]
    fn a_record_from_an_unknown_format_or_key_is_refused() {
        let (event, fields) = (Event::default(), Default::default());
        let p = Processed {
            event: &event,
            findings: &[],
            tags: &[],
            fields: &fields,
        };
        let mut bytes = Vec::new();
        write_event(&mut bytes, &p);
        assert!(decode(&bytes, |_, _| {}).is_ok());
        // Version byte.
        let mut v2 = bytes.clone();
        v2[1] = 2;
        assert!(decode(&v2, |_, _| {}).is_err());
        // A key index past the table (written by a newer version).
        let mut rec = Vec::new();
        let _ = rmp::encode::write_array_len(&mut rec, 5);
        let _ = rmp::encode::write_uint(&mut rec, 1);
        let _ = rmp::encode::write_uint(&mut rec, 5);
        let _ = rmp::encode::write_nil(&mut rec);
        let _ = rmp::encode::write_str(&mut rec, "b");
        let _ = rmp::encode::write_array_len(&mut rec, 2);
        let _ = rmp::encode::write_uint(&mut rec, KEYS.len() as u64);
        let _ = rmp::encode::write_str(&mut rec, "v");
        let err = decode(&rec, |_, _| {}).expect_err("unknown key");
        assert!(err.to_string().contains("attribute key"), "{err}");
        // Truncated anywhere: an error, never a panic.
        for cut in 0..bytes.len() {
            let _ = decode(&bytes[..cut], |_, _| {});
        }
    }
}
