//! Falco field names over the event schema, and output templates using them.
//!
//! This is the one mapping from Falco's names (`proc.name`, `fd.name`, ...)
//! to schema fields: plugins render their messages with it and the collector
//! builds Falco-shaped `output_fields` with it.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::{EventOf, Runtime};

/// The value Falco prints for a field with no value.
pub const NA: &str = "<NA>";

macro_rules! field_names {
    ($($name:literal => $id:ident,)*) => {
        /// Every field name [`field`] knows, in documentation order.
        pub const FIELD_NAMES: &[&str] = &[$($name),*];

        /// A field name, resolved once (templates keep these, not strings).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum FieldId {
            $($id),*
        }

        impl FieldId {
            fn from_name(name: &str) -> Option<FieldId> {
                match name {
                    $($name => Some(FieldId::$id),)*
                    _ => None,
                }
            }

            fn name(self) -> &'static str {
                FIELD_NAMES[self as usize]
            }
        }
    };
}

field_names! {
    "evt.type" => EvtType,
    "evt.hostname" => EvtHostname,
    "evt.count" => EvtCount,
    "evt.first_time" => EvtFirstTime,
    "evt.last_time" => EvtLastTime,
    "proc.name" => ProcName,
    "proc.pid" => ProcPid,
    "proc.vpid" => ProcVpid,
    "proc.ppid" => ProcPpid,
    "proc.exe" => ProcExe,
    "proc.exepath" => ProcExepath,
    "proc.program" => ProcProgram,
    "proc.args" => ProcArgs,
    "proc.cmdline" => ProcCmdline,
    "proc.cwd" => ProcCwd,
    "proc.tty" => ProcTty,
    "proc.pname" => ProcPname,
    "proc.pexepath" => ProcPexepath,
    "proc.is_exe_upper_layer" => ProcIsExeUpperLayer,
    "proc.is_exe_lower_layer" => ProcIsExeLowerLayer,
    "proc.is_exe_from_memfd" => ProcIsExeFromMemfd,
    "proc.is_exe_reexec" => ProcIsExeReexec,
    "drift.source" => DriftSource,
    "drift.mount" => DriftMount,
    "drift.change" => DriftChange,
    "drift.via" => DriftVia,
    "drift.file" => DriftFile,
    "drift.file_source" => DriftFileSource,
    "drift.file_mount" => DriftFileMount,
    "drift.file_sha256" => DriftFileSha256,
    "drift.file_sha256_missing" => DriftFileSha256Missing,
    "drift.file_change" => DriftFileChange,
    "drift.file_ino.ctime" => DriftFileInoCtime,
    "drift.file_ino.mtime" => DriftFileInoMtime,
    "drift.file_writer.pid" => DriftFileWriterPid,
    "drift.file_writer.exe" => DriftFileWriterExe,
    "drift.file_writer.cmdline" => DriftFileWriterCmdline,
    "drift.file_writer.time" => DriftFileWriterTime,
    "proc.exe_sha256" => ProcExeSha256,
    "proc.exe_sha256_missing" => ProcExeSha256Missing,
    "drift.writer.pid" => DriftWriterPid,
    "drift.writer.exe" => DriftWriterExe,
    "drift.writer.cmdline" => DriftWriterCmdline,
    "drift.writer.time" => DriftWriterTime,
    "proc.aname[2]" => ProcAname2,
    "proc.aname[3]" => ProcAname3,
    "proc.exe_ino.ctime" => ProcExeInoCtime,
    "proc.exe_ino.mtime" => ProcExeInoMtime,
    "proc.exe_ino.ctime_duration_proc_start" => ProcExeInoCtimeDuration,
    "enforce.action" => EnforceActionField,
    "enforce.reason" => EnforceReasonField,
    "enforce.delivered" => EnforceDelivered,
    "enforce.error" => EnforceError,
    "user.uid" => UserUid,
    "user.name" => UserName,
    "group.gid" => GroupGid,
    "container.id" => ContainerId,
    "container.full_id" => ContainerFullId,
    "container.name" => ContainerName,
    "container.type" => ContainerType,
    "container.image.repository" => ContainerImageRepository,
    "container.image.tag" => ContainerImageTag,
    "container.image.digest" => ContainerImageDigest,
    "container.image.id" => ContainerImageId,
    "k8s.ns.name" => K8sNsName,
    "k8s.pod.name" => K8sPodName,
    "k8s.pod.uid" => K8sPodUid,
    "k8s.container.name" => K8sContainerName,
    "fd.name" => FdName,
    "fd.directory" => FdDirectory,
    "fd.filename" => FdFilename,
    "fd.typechar" => FdTypechar,
    "fs.path.target" => FsPathTarget,
    "evt.is_open_create" => EvtIsOpenCreate,
    "fd.is_upper_layer" => FdIsUpperLayer,
    "fd.nlink" => FdNlink,
    "fd.dev" => FdDev,
    "fd.ino" => FdIno,
}

/// The value of a Falco field for `ev`, `None` when the event has no value
/// for it (or the name is unknown). Works on owned and borrowed events.
pub fn field<S: AsRef<str>>(ev: &EventOf<S>, name: &str) -> Option<String> {
    let id = FieldId::from_name(name)?;
    value(ev, id).map(Cow::into_owned)
}

/// A field name resolved once, for code that reads the same field of many
/// events (the host's prefilters): no name lookup per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field(FieldId);

impl Field {
    /// `None` for a name that is not in [`FIELD_NAMES`].
    pub fn parse(name: &str) -> Option<Field> {
        FieldId::from_name(name).map(Field)
    }

    pub fn name(self) -> &'static str {
        self.0.name()
    }

    /// The field's value for `ev`; borrowed unless it has to be formatted
    /// (numbers, argument lists).
    pub fn value<'e, S: AsRef<str>>(self, ev: &'e EventOf<S>) -> Option<Cow<'e, str>> {
        value(ev, self.0)
    }
}

/// Appends the value of field `id` to `out`. Returns false, leaving `out`
/// alone, when the event has no value for it.
fn write_field<S: AsRef<str>>(ev: &EventOf<S>, id: FieldId, out: &mut String) -> bool {
    match value(ev, id) {
        Some(v) => {
            out.push_str(&v);
            true
        }
        None => false,
    }
}

fn value<S: AsRef<str>>(ev: &EventOf<S>, id: FieldId) -> Option<Cow<'_, str>> {
    use FieldId::*;
    let p = &ev.process;
    let c = ev.container.as_ref();
    let k = ev.k8s.as_ref();
    let f = ev.file.as_ref();
    let value: Option<&str> = match id {
        EvtType => Some(ev.kind.as_str()),
        EvtHostname => non_empty(&ev.hostname),
        ProcName => non_empty(&p.name),
        // How many occurrences the event stands for: 1, or the repeats
        // folded into it; the span only for folded ones.
        EvtCount | EvtFirstTime | EvtLastTime => {
            let n = match (id, ev.repeat) {
                (EvtCount, r) => r.map_or(1, |r| r.count),
                (EvtFirstTime, Some(r)) => r.first_ns,
                (EvtLastTime, Some(r)) => r.last_ns,
                _ => return None,
            };
            return Some(Cow::Owned(n.to_string()));
        }
        FdNlink | FdDev | FdIno => {
            let n = match id {
                FdNlink => f.and_then(|f| f.nlink).map(u64::from),
                FdDev => f.and_then(|f| f.dev),
                _ => f.and_then(|f| f.ino),
            };
            return n.map(|n| Cow::Owned(n.to_string()));
        }
        ProcExeInoCtime
        | ProcExeInoMtime
        | ProcExeInoCtimeDuration
        | DriftWriterTime
        | DriftWriterPid
        | DriftFileInoCtime
        | DriftFileInoMtime
        | DriftFileWriterTime
        | DriftFileWriterPid => {
            let file = p.exe_file;
            let prog = p.program_file.as_ref();
            let prog_file = prog.and_then(|x| x.file);
            let prog_writer = prog.and_then(|x| x.writer.as_ref());
            let n: Option<i128> = match id {
                ProcExeInoCtime => file.map(|x| x.ctime_ns.into()),
                ProcExeInoMtime => file.map(|x| x.mtime_ns.into()),
                // Falco's: nanoseconds from the file's ctime to the exec.
                ProcExeInoCtimeDuration => file
                    .filter(|x| x.ctime_ns > 0 && ev.time_ns > 0)
                    .map(|x| i128::from(ev.time_ns) - i128::from(x.ctime_ns)),
                DriftWriterTime => p.exe_writer.as_ref().map(|w| w.time_ns.into()),
                DriftWriterPid => p.exe_writer.as_ref().map(|w| w.pid.into()),
                DriftFileInoCtime => prog_file.map(|x| x.ctime_ns.into()),
                DriftFileInoMtime => prog_file.map(|x| x.mtime_ns.into()),
                DriftFileWriterTime => prog_writer.map(|w| w.time_ns.into()),
                _ => prog_writer.map(|w| w.pid.into()),
            };
            return n.map(|n| Cow::Owned(n.to_string()));
        }
        ProcPid | ProcVpid | ProcPpid | ProcTty | UserUid | GroupGid => {
            let n = match id {
                ProcPid => p.pid,
                ProcVpid => p.vpid,
                ProcPpid => p.ppid,
                ProcTty => p.tty,
                UserUid => p.uid,
                _ => p.gid,
            };
            return Some(Cow::Owned(n.to_string()));
        }
        ProcExe => opt(p.args.first()),
        ProcExepath => non_empty(&p.exe_path),
        ProcProgram => crate::program::program(p),
        ProcArgs => {
            let mut out = String::new();
            for (i, a) in p.args.iter().skip(1).enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(a.as_ref());
            }
            return Some(Cow::Owned(out));
        }
        ProcCmdline => return Some(Cow::Owned(p.cmdline())),
        ProcCwd => non_empty(&p.cwd),
        ProcPname => non_empty(&p.pname),
        ProcPexepath => non_empty(&p.pexe_path),
        ProcIsExeUpperLayer => Some(bool_str(p.exe_upper_layer)),
        ProcIsExeLowerLayer => Some(bool_str(p.exe_lower_layer)),
        ProcIsExeFromMemfd => Some(bool_str(p.exe_from_memfd)),
        ProcIsExeReexec => Some(bool_str(p.exe_reexec)),
        DriftSource => p.exe_origin().map(crate::ExeSource::as_str),
        DriftMount => opt(p.exe_mount.as_ref()),
        DriftWriterExe => p
            .exe_writer
            .as_ref()
            .map(|w| w.exe.as_ref())
            .filter(|e| !e.is_empty()),
        DriftWriterCmdline => p.exe_writer.as_ref().map(|w| w.cmdline.as_ref()),
        ProcExeSha256 => opt(p.exe_sha256.as_ref()),
        ProcExeSha256Missing => opt(p.exe_sha256_missing.as_ref()),
        ProcAname2 => p.ancestors.first().map(AsRef::as_ref),
        ProcAname3 => p.ancestors.get(1).map(AsRef::as_ref),
        DriftChange => p.exe_change.map(crate::ExeChange::as_str),
        DriftVia => p.program_file.as_ref().map(|x| x.via.as_str()),
        DriftFile => p.program_file.as_ref().map(|x| x.path.as_ref()),
        DriftFileSource => p
            .program_file
            .as_ref()
            .and_then(|x| x.source)
            .map(crate::ExeSource::as_str),
        DriftFileMount => opt(p.program_file.as_ref().and_then(|x| x.mount.as_ref())),
        DriftFileSha256 => opt(p.program_file.as_ref().and_then(|x| x.sha256.as_ref())),
        DriftFileSha256Missing => opt(p
            .program_file
            .as_ref()
            .and_then(|x| x.sha256_missing.as_ref())),
        DriftFileChange => p
            .program_file
            .as_ref()
            .and_then(|x| x.change)
            .map(crate::ExeChange::as_str),
        DriftFileWriterExe => p
            .program_file
            .as_ref()
            .and_then(|x| x.writer.as_ref())
            .map(|w| w.exe.as_ref())
            .filter(|e| !e.is_empty()),
        DriftFileWriterCmdline => p
            .program_file
            .as_ref()
            .and_then(|x| x.writer.as_ref())
            .map(|w| w.cmdline.as_ref()),
        EnforceActionField => p.enforcement.map(|e| e.action.as_str()),
        EnforceReasonField => p.enforcement.map(|e| e.reason.as_str()),
        EnforceDelivered => p
            .enforcement
            .filter(|e| e.action == crate::EnforceAction::Killed)
            .map(|e| bool_str(e.delivered)),
        EnforceError => {
            return p
                .enforcement
                .filter(|e| e.action == crate::EnforceAction::Killed && !e.delivered)
                .map(|e| Cow::Owned(errno_name(e.error)));
        }
        UserName => opt(p.user_name.as_ref()),
        // Falco reports host processes as container "host".
        ContainerId => Some(c.map_or("host", |c| c.short_id())),
        ContainerFullId => Some(c.map_or("host", |c| c.id.as_ref())),
        ContainerName => match c {
            None => Some("host"),
            Some(c) => opt(c.name.as_ref()),
        },
        ContainerType => c.and_then(|c| c.runtime.as_ref()).map(Runtime::as_str),
        ContainerImageRepository => opt(c.and_then(|c| c.image_repository.as_ref())),
        ContainerImageTag => opt(c.and_then(|c| c.image_tag.as_ref())),
        ContainerImageDigest => opt(c.and_then(|c| c.image_digest.as_ref())),
        ContainerImageId => opt(c.and_then(|c| c.image_id.as_ref())),
        K8sNsName => opt(k.and_then(|k| k.namespace.as_ref())),
        K8sPodName => opt(k.and_then(|k| k.pod_name.as_ref())),
        K8sPodUid => opt(k.and_then(|k| k.pod_uid.as_ref())),
        K8sContainerName => opt(k.and_then(|k| k.container_name.as_ref())),
        FdName => f.map(|f| f.path.as_ref()),
        FdDirectory => f.map(|f| parent_dir(f.path.as_ref())),
        FdFilename => f.map(|f| file_name(f.path.as_ref())),
        FdTypechar => f.map(|f| f.file_type.typechar_str()),
        FsPathTarget => opt(f.and_then(|f| f.target_path.as_ref())),
        EvtIsOpenCreate => f.map(|f| bool_str(f.created)),
        FdIsUpperLayer => f.map(|f| bool_str(f.upper_layer)),
    };
    value.map(Cow::Borrowed)
}

fn non_empty<S: AsRef<str>>(v: &S) -> Option<&str> {
    Some(v.as_ref()).filter(|v| !v.is_empty())
}

fn opt<S: AsRef<str>>(v: Option<&S>) -> Option<&str> {
    v.map(|v| v.as_ref())
}

fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// `/usr/bin/sh` → `/usr/bin`; `/sh` → `/`.
pub fn parent_dir(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => "",
    }
}

/// `/usr/bin/sh` → `sh`.
pub fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A Falco-style output template (`"shell=%proc.name user=%user.name"`),
/// parsed once. `%name` is replaced by the field's value, or `<NA>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(FieldId),
}

impl Template {
    /// Parses `src`. Unknown field names are an error, so a typo in a
    /// plugin's configured output is caught at `init`, not at alert time.
    pub fn parse(src: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = src;
        while let Some(i) = rest.find('%') {
            text.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            let len = after
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '.'))
                .unwrap_or(after.len());
            // A sentence-ending dot is not part of the name.
            let mut name = after[..len].trim_end_matches('.');
            // An index (`proc.aname[2]`) is.
            if name.len() == len
                && let Some(index) = after[len..].strip_prefix('[')
                && let Some(end) = index.find(']')
                && end > 0
                && index[..end].bytes().all(|b| b.is_ascii_digit())
            {
                name = &after[..len + end + 2];
            }
            if name.is_empty() {
                text.push('%');
                rest = after;
                continue;
            }
            let Some(id) = FieldId::from_name(name) else {
                return Err(format!("unknown field %{name} in output template"));
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Field(id));
            rest = &after[name.len()..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template { parts })
    }

    pub fn render<S: AsRef<str>>(&self, ev: &EventOf<S>) -> String {
        let mut out = String::with_capacity(128);
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(id) => {
                    if !write_field(ev, *id, &mut out) {
                        out.push_str(NA);
                    }
                }
            }
        }
        out
    }

    /// The fields the template uses, with their values for `ev`.
    pub fn fields<S: AsRef<str>>(&self, ev: &EventOf<S>) -> BTreeMap<String, String> {
        self.field_list()
            .map(|f| {
                let value = f.value(ev).map_or_else(|| NA.to_string(), Cow::into_owned);
                (f.name().to_string(), value)
            })
            .collect()
    }

    /// The fields the template uses, in order (a repeated one each time).
    pub fn field_list(&self) -> impl Iterator<Item = Field> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(id) => Some(Field(*id)),
            Part::Text(_) => None,
        })
    }
}

/// `bpf_send_signal`'s errors by name (the guest has no libc to ask).
fn errno_name(errno: i32) -> String {
    let name = match errno {
        1 => "EPERM",
        3 => "ESRCH",
        11 => "EAGAIN",
        16 => "EBUSY",
        22 => "EINVAL",
        _ => return format!("errno {errno}"),
    };
    format!("{name} (errno {errno})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Container, Event, Process};

    fn ev() -> Event {
        Event {
            process: Process {
                name: "sh".into(),
                args: vec!["/bin/sh".into(), "-c".into(), "id".into()],
                user_name: Some("root".into()),
                ..Process::default()
            },
            container: Some(Container {
                id: "0123456789abcdef".repeat(4),
                name: Some("web".into()),
                image_repository: Some("localhost/app".into()),
                image_tag: Some("v1".into()),
                ..Container::default()
            }),
            ..Event::default()
        }
    }

    #[test]
    fn renders_fields_and_na() {
        let t = Template::parse(
            "shell=%proc.name cmd=%proc.cmdline image=%container.image.repository:%container.image.tag k=%k8s.pod.name.",
        )
        .unwrap();
        assert_eq!(
            t.render(&ev()),
            "shell=sh cmd=sh -c id image=localhost/app:v1 k=<NA>."
        );
        assert_eq!(t.fields(&ev()).len(), 5);
    }

    #[test]
    fn unknown_field_is_an_error_and_lone_percent_is_text() {
        assert!(Template::parse("%proc.nmae").is_err());
        assert_eq!(
            Template::parse("100% sure").unwrap().render(&ev()),
            "100% sure"
        );
    }

    #[test]
    fn host_process_is_container_host() {
        let mut e = ev();
        e.container = None;
        assert_eq!(field(&e, "container.id").as_deref(), Some("host"));
        assert_eq!(field(&e, "container.image.repository"), None);
    }

    #[test]
    fn every_listed_field_is_known() {
        let mut e = ev();
        e.file = Some(crate::FileInfo::default());
        e.k8s = Some(crate::K8s::default());
        for name in FIELD_NAMES {
            // Unknown names return None for every event; listed names must
            // be handled, which the parser relies on.
            let _ = field(&e, name);
            assert!(Template::parse(&format!("%{name}")).is_ok(), "{name}");
        }
    }

    #[test]
    fn borrowed_and_owned_events_give_the_same_fields() {
        let mut e = ev();
        e.file = Some(crate::FileInfo {
            path: "/etc/app/x.conf".into(),
            target_path: Some("/etc/app/y.conf".into()),
            ..crate::FileInfo::default()
        });
        e.k8s = Some(crate::K8s {
            namespace: Some("prod".into()),
            ..crate::K8s::default()
        });
        let r = e.as_event_ref();
        for name in FIELD_NAMES {
            assert_eq!(field(&e, name), field(&r, name), "{name}");
        }
        assert_eq!(field(&e, "proc.args").as_deref(), Some("-c id"));
        assert_eq!(field(&e, "proc.exe").as_deref(), Some("/bin/sh"));
        assert_eq!(field(&e, "fd.directory").as_deref(), Some("/etc/app"));
        assert_eq!(field(&e, "fd.typechar").as_deref(), Some("?"));
        assert_eq!(field(&e, "proc.pid").as_deref(), Some("0"));
        assert_eq!(field(&e, "evt.hostname"), None);
        assert_eq!(r.to_event(), e);
    }

    #[test]
    fn indexed_names_and_exe_times() {
        let mut e = ev();
        e.time_ns = 5_000;
        e.process.ancestors = vec!["bash".into(), "sshd".into()];
        e.process.exe_file = Some(crate::ExeFile {
            ctime_ns: 3_000,
            mtime_ns: 2_000,
            ..crate::ExeFile::default()
        });
        let t = Template::parse(
            "a=%proc.aname[2] b=%proc.aname[3]. d=%proc.exe_ino.ctime_duration_proc_start [x]",
        )
        .unwrap();
        assert_eq!(t.render(&e), "a=bash b=sshd. d=2000 [x]");
        assert!(Template::parse("%proc.aname[9]").is_err());
        assert_eq!(field(&e, "proc.exe_ino.mtime").as_deref(), Some("2000"));
        assert_eq!(field(&e, "drift.writer.pid"), None);
    }

    #[test]
    fn path_helpers() {
        assert_eq!(parent_dir("/usr/bin/sh"), "/usr/bin");
        assert_eq!(parent_dir("/sh"), "/");
        assert_eq!(file_name("/usr/bin/sh"), "sh");
    }
}
