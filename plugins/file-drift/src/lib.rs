//! "New or Modified Executable in Container": the periodic drift scan found
//! an executable (an execute bit, or an ELF header whatever the mode) that
//! was added to a container or whose content differs from the image's.
//!
//! Unlike "Drift Detected", which needs to see the binary run, this fires
//! for binaries that are merely present, including ones dropped while the
//! sensor was not running.

use driftwatch_sdk::fields::Template;
use driftwatch_sdk::rules::is_under;
use driftwatch_sdk::{
    Condition, EventKind, EventRef, FileType, Finding, Manifest, Plugin, Priority, Remediation,
    Verdict,
};
use serde::Deserialize;

pub const RULE: &str = "New or Modified Executable in Container";
const OUTPUT: &str = "Executable added or modified in container (file=%fd.name container=%container.name image=%container.image.repository:%container.image.tag)";

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Kinds of difference that count: `added`, `modified` (content).
    /// `metadata` can be added to catch a chmod +x on an image file.
    pub changes: Vec<String>,
    /// Directories where new executables are expected (whole components).
    pub exclude_prefixes: Vec<String>,
    pub priority: Priority,
    pub output: String,
    pub remediation: Remediation,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            changes: vec!["added".into(), "modified".into()],
            exclude_prefixes: Vec::new(),
            priority: Priority::Warning,
            output: OUTPUT.to_string(),
            remediation: Remediation {
                alert_type: "K8S.NODE_ImageBinaryDrift".into(),
                description: "Executable present in the container that is not part of its image"
                    .into(),
                steps: [
                    "Compare with the image: driftwatch diff CONTAINER --only executables",
                    "Investigate the binary origin and purpose (sha256 in the finding)",
                    "Rebuild the container from a clean image",
                    "Enable readOnlyRootFilesystem",
                ]
                .map(String::from)
                .to_vec(),
            },
        }
    }
}

pub struct FileDrift {
    changes: Vec<String>,
    exclude: Vec<String>,
    priority: Priority,
    output: Template,
    remediation: Remediation,
}

const KNOWN_CHANGES: &[&str] = &["added", "modified", "metadata"];

impl Plugin for FileDrift {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        if let Some(bad) = c
            .changes
            .iter()
            .find(|k| !KNOWN_CHANGES.contains(&k.as_str()))
        {
            return Err(format!(
                "changes: {bad:?} is not one of {}",
                KNOWN_CHANGES.join(", ")
            ));
        }
        if let Some(bad) = c.exclude_prefixes.iter().find(|p| !p.starts_with('/')) {
            return Err(format!("exclude_prefixes: {bad:?} is not an absolute path"));
        }
        Ok(FileDrift {
            changes: c.changes,
            exclude: c.exclude_prefixes,
            priority: c.priority,
            output: Template::parse(&c.output)?,
            remediation: c.remediation,
        })
    }

    fn manifest(&self) -> Manifest {
        Manifest::new(
            "file-drift",
            env!("CARGO_PKG_VERSION"),
            &[EventKind::FileDrift],
        )
        .with_description(
            "Detect executables added to or modified in a container, found by the drift scan",
        )
        .with_prefilter([
            Condition::in_container(),
            Condition::is_in("fd.typechar", ["f"]),
            Condition::negate(Condition::pmatch("fd.name", &self.exclude)),
        ])
    }

    fn process(&mut self, ev: &EventRef<'_>) -> Verdict {
        let Some(file) = ev.file.as_ref() else {
            return Verdict::pass();
        };
        let change = file.change.map_or("", |c| c.as_str());
        if ev.kind != EventKind::FileDrift
            || ev.container.is_none()
            || file.file_type != FileType::Regular
            || !(file.executable || file.elf)
            || !self.changes.iter().any(|c| c == change)
            || self.exclude.iter().any(|p| is_under(file.path, p))
        {
            return Verdict::pass();
        }
        let mut fields = self.output.fields(ev);
        fields.insert("drift.change".into(), change.to_string());
        if let Some(h) = &file.sha256 {
            fields.insert("drift.sha256".into(), h.to_string());
        }
        fields.insert("drift.elf".into(), file.elf.to_string());
        let mut output = self.output.render(ev);
        output.push_str(&format!(
            " change={change} sha256={} elf={}",
            file.sha256.unwrap_or("<NA>"),
            file.elf
        ));
        Verdict::with_finding(Finding {
            rule: RULE.to_string(),
            priority: self.priority,
            output,
            description: Some(
                "Detect executables added to or modified in a container, found by the drift scan"
                    .into(),
            ),
            tags: ["container", "drift", "filesystem"]
                .map(String::from)
                .to_vec(),
            fields,
            remediation: Some(self.remediation.clone()),
        })
    }
}

driftwatch_sdk::export_plugin!(FileDrift);

#[cfg(test)]
mod tests {
    use super::*;
    use driftwatch_sdk::{Container, Event, FileChange, FileInfo};

    fn drift(path: &str, change: FileChange, executable: bool, elf: bool) -> Event {
        Event {
            kind: EventKind::FileDrift,
            container: Some(Container {
                id: "a".repeat(64),
                name: Some("web".into()),
                ..Container::default()
            }),
            file: Some(FileInfo {
                path: path.into(),
                file_type: FileType::Regular,
                change: Some(change),
                sha256: Some("ab".repeat(32)),
                executable,
                elf,
                ..FileInfo::default()
            }),
            ..Event::default()
        }
    }

    fn plugin(c: Config) -> FileDrift {
        FileDrift::new(c).unwrap()
    }

    #[test]
    fn added_or_modified_executables_fire() {
        let mut p = plugin(Config::default());
        let v = p.process(&drift("/usr/local/bin/x", FileChange::Added, true, true).as_event_ref());
        assert_eq!(v.findings.len(), 1);
        assert_eq!(v.findings[0].rule, RULE);
        assert!(v.findings[0].output.contains("file=/usr/local/bin/x"));
        assert!(v.findings[0].output.contains("change=added"));
        assert_eq!(v.findings[0].fields["drift.sha256"], "ab".repeat(32));
        // ELF without an execute bit still counts: chmod later is one call.
        assert_eq!(
            p.process(&drift("/tmp/x", FileChange::Modified, false, true).as_event_ref())
                .findings
                .len(),
            1
        );
        assert_eq!(
            p.process(&drift("/tmp/s.sh", FileChange::Added, true, false).as_event_ref())
                .findings
                .len(),
            1
        );
    }

    #[test]
    fn everything_else_passes() {
        let mut p = plugin(Config::default());
        assert!(
            p.process(&drift("/etc/x", FileChange::Added, false, false).as_event_ref())
                .findings
                .is_empty()
        );
        assert!(
            p.process(&drift("/bin/x", FileChange::Removed, true, true).as_event_ref())
                .findings
                .is_empty()
        );
        assert!(
            p.process(&drift("/bin/x", FileChange::Metadata, true, true).as_event_ref())
                .findings
                .is_empty()
        );
        let mut ev = drift("/bin/x", FileChange::Added, true, true);
        ev.kind = EventKind::OpenWrite;
        assert!(p.process(&ev.as_event_ref()).findings.is_empty());
        let mut ev = drift("/bin/x", FileChange::Added, true, true);
        ev.container = None;
        assert!(p.process(&ev.as_event_ref()).findings.is_empty());
        let mut ev = drift("/bin", FileChange::Added, true, false);
        if let Some(f) = ev.file.as_mut() {
            f.file_type = FileType::Directory;
        }
        assert!(p.process(&ev.as_event_ref()).findings.is_empty());
    }

    #[test]
    fn config_is_checked_and_honoured() {
        let mut p = plugin(Config {
            changes: vec!["metadata".into()],
            exclude_prefixes: vec!["/opt".into()],
            ..Config::default()
        });
        assert_eq!(
            p.process(&drift("/bin/x", FileChange::Metadata, true, true).as_event_ref())
                .findings
                .len(),
            1
        );
        assert!(
            p.process(&drift("/opt/x", FileChange::Metadata, true, true).as_event_ref())
                .findings
                .is_empty()
        );
        assert!(
            FileDrift::new(Config {
                changes: vec!["removed".into()],
                ..Config::default()
            })
            .is_err()
        );
        assert!(
            FileDrift::new(Config {
                exclude_prefixes: vec!["opt".into()],
                ..Config::default()
            })
            .is_err()
        );
    }
}
