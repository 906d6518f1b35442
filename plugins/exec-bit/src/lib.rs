//! "Container Drift Detected (chmod)" and "Container Drift Detected
//! (open+create)": a file in a container is made executable, or created
//! executable. Both are how a dropped payload becomes runnable, before the
//! exec that the drift-binary rule sees.
//!
//! Falco ships its versions of these disabled as too noisy. What made them
//! noisy is the runtime's own set-up and image builds; the exemptions here
//! rest on who the process is (the runtime, by namespaces and root), not on
//! names, so the rules can stay on.

use driftwatch_sdk::fields::Template;
use driftwatch_sdk::program::runs_one_of;
use driftwatch_sdk::rules::is_runtime_setup;
use driftwatch_sdk::{
    Condition, EventKind, EventRef, FileType, Finding, Manifest, Plugin, Priority, Verdict,
};
use serde::Deserialize;

pub const CHMOD_RULE: &str = "Container Drift Detected (chmod)";
pub const CREATE_RULE: &str = "Container Drift Detected (open+create)";
const CHMOD_OUTPUT: &str = "Drift detected (chmod), new executable file in container (user=%user.name command=%proc.cmdline file=%fd.name container=%container.name image=%container.image.repository)";
const CREATE_OUTPUT: &str = "Drift detected (open+create), new executable created in container (user=%user.name command=%proc.cmdline file=%fd.name container=%container.name image=%container.image.repository)";

/// Any of the execute bits.
const EXEC_BITS: u32 = 0o111;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub chmod: bool,
    pub create: bool,
    pub priority: Priority,
    /// Programs (by comm or `proc.program`, as the shell rule matches) whose
    /// executable files are expected: an image build step, or the package
    /// managers when installs in the container are allowed.
    pub allowed_programs: Vec<String>,
    /// Files under these directories are not reported (whole components).
    pub exclude_prefixes: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            chmod: true,
            create: true,
            priority: Priority::Error,
            allowed_programs: Vec::new(),
            exclude_prefixes: Vec::new(),
        }
    }
}

pub struct ExecBitDetector {
    chmod: bool,
    create: bool,
    priority: Priority,
    allowed: Vec<String>,
    exclude: Vec<String>,
    chmod_output: Template,
    create_output: Template,
}

impl Plugin for ExecBitDetector {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        if let Some(bad) = c.exclude_prefixes.iter().find(|p| !p.starts_with('/')) {
            return Err(format!("exclude_prefixes: {bad:?} is not an absolute path"));
        }
        Ok(ExecBitDetector {
            chmod: c.chmod,
            create: c.create,
            priority: c.priority,
            allowed: c.allowed_programs,
            exclude: c.exclude_prefixes,
            chmod_output: Template::parse(CHMOD_OUTPUT)?,
            create_output: Template::parse(CREATE_OUTPUT)?,
        })
    }

    fn manifest(&self) -> Manifest {
        let mut kinds = Vec::new();
        if self.chmod {
            kinds.push(EventKind::Chmod);
        }
        if self.create {
            kinds.push(EventKind::OpenWrite);
        }
        // Only creations count among the writes: the kernel can then drop
        // the other writes no rule wants (docs/sensor.md, "Kernel prefilter").
        let mut prefilter = vec![
            Condition::in_container(),
            Condition::Any(vec![
                Condition::is_in("evt.type", [EventKind::Chmod.as_str()]),
                Condition::is_in("evt.is_open_create", ["true"]),
            ]),
        ];
        if !self.exclude.is_empty() {
            prefilter.push(Condition::negate(Condition::pmatch(
                "fd.name",
                &self.exclude,
            )));
        }
        Manifest::new("exec-bit", env!("CARGO_PKG_VERSION"), &kinds)
            .with_description("Detect files made or created executable in a container")
            .with_prefilter(prefilter)
    }

    fn process(&mut self, ev: &EventRef<'_>) -> Verdict {
        let Some(f) = ev.file.as_ref() else {
            return Verdict::pass();
        };
        let (rule, output) = match ev.kind {
            EventKind::Chmod if self.chmod => (CHMOD_RULE, &self.chmod_output),
            EventKind::OpenWrite if self.create && f.created => (CREATE_RULE, &self.create_output),
            _ => return Verdict::pass(),
        };
        // Directories are searchable, not executable.
        let regular = matches!(f.file_type, FileType::Regular | FileType::Unknown);
        if ev.container.is_none()
            || f.mode & EXEC_BITS == 0
            || !regular
            || runtime_setup(ev)
            || runs_one_of(&ev.process, &self.allowed)
        {
            return Verdict::pass();
        }
        Verdict::with_finding(Finding {
            rule: rule.to_string(),
            priority: self.priority,
            output: output.render(ev),
            description: Some(
                "Detect a file in a container that gains or is created with execute bits".into(),
            ),
            tags: ["container", "drift", "filesystem"]
                .map(String::from)
                .to_vec(),
            fields: output.fields(ev),
            remediation: None,
        })
    }
}

/// The runtime preparing the container: an exec-side set-up process, or its
/// init (pid 1) before `pivot_root`: writing into the root from outside it
/// (as the write rule judges it), or changing modes by path, which runc does
/// to the mount points it prepares. A path-based chmod carries no inode
/// facts to tell the two apart, so pid 1's are not reported (a blind spot,
/// docs/detections.md).
fn runtime_setup(ev: &EventRef<'_>) -> bool {
    let Some(f) = ev.file.as_ref() else {
        return false;
    };
    is_runtime_setup(ev)
        || (ev.process.vpid == 1
            && (f.outside_root
                || (ev.kind == EventKind::Chmod && f.file_type == FileType::Unknown)))
}

driftwatch_sdk::export_plugin!(ExecBitDetector);

#[cfg(test)]
mod tests {
    use super::*;
    use driftwatch_sdk::{Container, Event, FileInfo, Process};

    fn ev(kind: EventKind, mode: u32, created: bool) -> Event {
        Event {
            kind,
            process: Process {
                vpid: 7,
                name: "sh".into(),
                ..Process::default()
            },
            container: Some(Container::default()),
            file: Some(FileInfo {
                path: "/tmp/x".into(),
                mode,
                created,
                file_type: FileType::Regular,
                ..FileInfo::default()
            }),
            ..Event::default()
        }
    }

    fn rules(p: &mut ExecBitDetector, e: &Event) -> Vec<String> {
        p.process(&e.as_event_ref())
            .findings
            .into_iter()
            .map(|f| f.rule)
            .collect()
    }

    #[test]
    fn execute_bits_fire_and_nothing_else_does() {
        let mut p = ExecBitDetector::new(Config::default()).unwrap();
        assert_eq!(
            rules(&mut p, &ev(EventKind::Chmod, 0o755, false)),
            [CHMOD_RULE]
        );
        assert_eq!(
            rules(&mut p, &ev(EventKind::Chmod, 0o100, false)),
            [CHMOD_RULE]
        );
        assert!(rules(&mut p, &ev(EventKind::Chmod, 0o644, false)).is_empty());
        assert_eq!(
            rules(&mut p, &ev(EventKind::OpenWrite, 0o700, true)),
            [CREATE_RULE]
        );
        // Opened for writing, not created; or created without execute bits.
        assert!(rules(&mut p, &ev(EventKind::OpenWrite, 0o755, false)).is_empty());
        assert!(rules(&mut p, &ev(EventKind::OpenWrite, 0o644, true)).is_empty());
        let mut dir = ev(EventKind::Chmod, 0o755, false);
        dir.file.as_mut().unwrap().file_type = FileType::Directory;
        assert!(rules(&mut p, &dir).is_empty());
        let mut host = ev(EventKind::Chmod, 0o755, false);
        host.container = None;
        assert!(rules(&mut p, &host).is_empty());
    }

    #[test]
    fn the_runtime_and_allowed_programs_are_exempt() {
        let mut p = ExecBitDetector::new(Config {
            allowed_programs: vec!["apk".into()],
            ..Config::default()
        })
        .unwrap();
        let mut setup = ev(EventKind::OpenWrite, 0o755, true);
        setup.process.vpid = 1;
        setup.file.as_mut().unwrap().outside_root = true;
        assert!(rules(&mut p, &setup).is_empty());
        // The same from inside the root is the container's own.
        setup.file.as_mut().unwrap().outside_root = false;
        assert_eq!(rules(&mut p, &setup), [CREATE_RULE]);
        let mut apk = ev(EventKind::Chmod, 0o755, false);
        apk.process.name = "apk".into();
        assert!(rules(&mut p, &apk).is_empty());
    }
}
