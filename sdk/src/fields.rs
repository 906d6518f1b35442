//! Falco field names over the event schema, and output templates using them.
//!
//! This is the one mapping from Falco's names (`proc.name`, `fd.name`, ...)
//! to schema fields: plugins render their messages with it and the collector
//! builds Falco-shaped `output_fields` with it.

use std::collections::BTreeMap;

use crate::Event;

/// The value Falco prints for a field with no value.
pub const NA: &str = "<NA>";

/// Every field name [`field`] knows, in documentation order.
pub const FIELD_NAMES: &[&str] = &[
    "evt.type",
    "evt.hostname",
    "proc.name",
    "proc.pid",
    "proc.vpid",
    "proc.ppid",
    "proc.exe",
    "proc.exepath",
    "proc.args",
    "proc.cmdline",
    "proc.cwd",
    "proc.tty",
    "proc.pname",
    "proc.pexepath",
    "proc.is_exe_upper_layer",
    "proc.is_exe_lower_layer",
    "proc.is_exe_from_memfd",
    "user.uid",
    "user.name",
    "group.gid",
    "container.id",
    "container.full_id",
    "container.name",
    "container.type",
    "container.image.repository",
    "container.image.tag",
    "container.image.digest",
    "container.image.id",
    "k8s.ns.name",
    "k8s.pod.name",
    "k8s.pod.uid",
    "k8s.container.name",
    "fd.name",
    "fd.directory",
    "fd.filename",
    "fd.typechar",
    "fs.path.target",
    "evt.is_open_create",
    "fd.is_upper_layer",
];

/// The value of a Falco field for `ev`, `None` when the event has no value
/// for it (or the name is unknown).
pub fn field(ev: &Event, name: &str) -> Option<String> {
    let p = &ev.process;
    let c = ev.container.as_ref();
    let k = ev.k8s.as_ref();
    let f = ev.file.as_ref();
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Some(match name {
        "evt.type" => ev.kind.as_str().to_string(),
        "evt.hostname" => return non_empty(&ev.hostname),
        "proc.name" => return non_empty(&p.name),
        "proc.pid" => p.pid.to_string(),
        "proc.vpid" => p.vpid.to_string(),
        "proc.ppid" => p.ppid.to_string(),
        "proc.exe" => return p.args.first().cloned(),
        "proc.exepath" => return non_empty(&p.exe_path),
        "proc.args" => p.args.iter().skip(1).cloned().collect::<Vec<_>>().join(" "),
        "proc.cmdline" => p.cmdline(),
        "proc.cwd" => return non_empty(&p.cwd),
        "proc.tty" => p.tty.to_string(),
        "proc.pname" => return non_empty(&p.pname),
        "proc.pexepath" => return non_empty(&p.pexe_path),
        "proc.is_exe_upper_layer" => p.exe_upper_layer.to_string(),
        "proc.is_exe_lower_layer" => p.exe_lower_layer.to_string(),
        "proc.is_exe_from_memfd" => p.exe_from_memfd.to_string(),
        "user.uid" => p.uid.to_string(),
        "user.name" => return p.user_name.clone(),
        "group.gid" => p.gid.to_string(),
        // Falco reports host processes as container "host".
        "container.id" => c.map_or("host", |c| c.short_id()).to_string(),
        "container.full_id" => c.map_or("host", |c| c.id.as_str()).to_string(),
        "container.name" => match c {
            None => "host".to_string(),
            Some(c) => return c.name.clone(),
        },
        "container.type" => return c.and_then(|c| c.runtime.clone()),
        "container.image.repository" => return c.and_then(|c| c.image_repository.clone()),
        "container.image.tag" => return c.and_then(|c| c.image_tag.clone()),
        "container.image.digest" => return c.and_then(|c| c.image_digest.clone()),
        "container.image.id" => return c.and_then(|c| c.image_id.clone()),
        "k8s.ns.name" => return k.and_then(|k| k.namespace.clone()),
        "k8s.pod.name" => return k.and_then(|k| k.pod_name.clone()),
        "k8s.pod.uid" => return k.and_then(|k| k.pod_uid.clone()),
        "k8s.container.name" => return k.and_then(|k| k.container_name.clone()),
        "fd.name" => return f.map(|f| f.path.clone()),
        "fd.directory" => return f.map(|f| parent_dir(&f.path).to_string()),
        "fd.filename" => return f.map(|f| file_name(&f.path).to_string()),
        "fd.typechar" => return f.map(|f| f.file_type.typechar().to_string()),
        "fs.path.target" => return f.and_then(|f| f.target_path.clone()),
        "evt.is_open_create" => return f.map(|f| f.created.to_string()),
        "fd.is_upper_layer" => return f.map(|f| f.upper_layer.to_string()),
        _ => return None,
    })
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
    Field(String),
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
            let name = after[..len].trim_end_matches('.');
            if name.is_empty() {
                text.push('%');
                rest = after;
                continue;
            }
            if !FIELD_NAMES.contains(&name) {
                return Err(format!("unknown field %{name} in output template"));
            }
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(Part::Field(name.to_string()));
            rest = &after[name.len()..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Template { parts })
    }

    pub fn render(&self, ev: &Event) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(name) => out.push_str(field(ev, name).as_deref().unwrap_or(NA)),
            }
        }
        out
    }

    /// The fields the template uses, with their values for `ev`.
    pub fn fields(&self, ev: &Event) -> BTreeMap<String, String> {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Field(name) => Some((
                    name.clone(),
                    field(ev, name).unwrap_or_else(|| NA.to_string()),
                )),
                Part::Text(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Container, Process};

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
    fn path_helpers() {
        assert_eq!(parent_dir("/usr/bin/sh"), "/usr/bin");
        assert_eq!(parent_dir("/sh"), "/");
        assert_eq!(file_name("/usr/bin/sh"), "sh");
    }
}
