//! "Drift Detected (Container Image Modified Binary)": a program that is not
//! an unmodified file of the container's image was run: from the overlay
//! upper layer, from a volume, bind mount or tmpfs mounted into the
//! container, or already deleted. Also flags fileless execution from a
//! memfd, the usual way around file-based checks.
//!
//! The same rule fires for a program the executable only loads: a script
//! executed directly (`./x.sh`, the interpreter is the executable) and the
//! file given to the dynamic loader (`ld.so FILE`), when that file is not an
//! unmodified file of the image (`drift.via`, `drift.file`). A script from
//! outside the image given to an interpreter (`sh /tmp/x.sh`) is a rule of
//! its own, NOTICE by default.
//!
//! What counts is decided by the kernel's facts (`proc.exe_source`, see
//! docs/detections.md); the exemptions rest on namespaces a process in the
//! container cannot change, never on names it chooses.
//!
//! With `[enforcement]` (docs/enforcement.md) the kernel judged the exec
//! too: its verdict is added to the finding (`action`: `killed` or
//! `would_kill`, ...), and a kill no drift finding covers (a denied image
//! binary) is reported on its own, so no kill is silent.

use driftwatch_sdk::fields::Template;
use driftwatch_sdk::rules::{is_container_entrypoint, is_runtime_setup, is_under};
use driftwatch_sdk::{
    Condition, EnforceAction, EnforceReason, EventKind, EventRef, ExeChange, ExeSource, Fired,
    Manifest, Plugin, Priority, ProgramVia, Remediation, RuleSpec, Verdict,
};
use serde::Deserialize;

pub const RULE: &str = "Drift Detected (Container Image Modified Binary)";
pub const MEMFD_RULE: &str = "Fileless Execution in Container (memfd)";
pub const INTERPRETER_RULE: &str = "Script Not in Container Image Run by Interpreter";
pub const DENY_RULE: &str = "Denied Binary Executed in Container";
const DENY_OUTPUT: &str = "Denied binary executed in container (user=%user.name command=%proc.cmdline container=%container.name image=%container.image.repository:%container.image.tag exe_path=%proc.exepath action=%enforce.action)";
const OUTPUT: &str = "Drift detected: new binary executed in container (user=%user.name command=%proc.cmdline container=%container.name image=%container.image.repository:%container.image.tag exe_path=%proc.exepath)";
const PROGRAM_OUTPUT: &str = "Drift detected: new program run in container through its %drift.via (file=%drift.file user=%user.name command=%proc.cmdline container=%container.name image=%container.image.repository:%container.image.tag exe_path=%proc.exepath)";
const INTERPRETER_OUTPUT: &str = "Script not in the container image run by an interpreter (file=%drift.file source=%drift.file_source user=%user.name command=%proc.cmdline container=%container.name image=%container.image.repository:%container.image.tag exe_path=%proc.exepath)";
const MEMFD_OUTPUT: &str = "Fileless execution from memfd in container (user=%user.name command=%proc.cmdline container=%container.name image=%container.image.repository:%container.image.tag exe_path=%proc.exepath)";

/// Where runtimes bind-mount binaries of their own into containers: podman
/// `--init` (catatonit), Docker `--init` (docker-init), and the paths
/// containerd and CRI-O use for the same.
pub const RUNTIME_MOUNTS: &[&str] = &["/run/podman-init", "/sbin/docker-init", "/dev/init"];

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub priority: Priority,
    pub output: String,
    /// Also report execution from a memfd.
    pub memfd: bool,
    pub memfd_priority: Priority,
    /// The priority of an upper-layer executable whose content is the
    /// image's (`drift.change = metadata_only`: chmod, chown or touch of an
    /// image file); the rule's `priority` otherwise.
    pub metadata_only_priority: Priority,
    /// Also report a script from outside the image given to an interpreter
    /// (`sh /tmp/x.sh`; the interpreters are `[enrich] interpreters`).
    pub interpreter: bool,
    pub interpreter_priority: Priority,
    /// Mount points of binaries the runtime injects: an executable on a
    /// volume mounted exactly here, or below one of these directories, is
    /// not drift. Only the `volume` source is exempt: a file written to the
    /// upper layer or a tmpfs at the same path still fires.
    pub runtime_mounts: Vec<String>,
    pub remediation: Remediation,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            priority: Priority::Warning,
            output: OUTPUT.to_string(),
            memfd: true,
            memfd_priority: Priority::Critical,
            metadata_only_priority: Priority::Notice,
            interpreter: true,
            interpreter_priority: Priority::Notice,
            runtime_mounts: RUNTIME_MOUNTS.iter().map(|s| s.to_string()).collect(),
            remediation: Remediation {
                alert_type: "K8S.NODE_ImageBinaryDrift".into(),
                description: "Binary executed that was not part of the original container image"
                    .into(),
                steps: [
                    "Investigate the binary origin and purpose",
                    "Check if the container was compromised",
                    "Rebuild the container from a clean image",
                    "Enable readOnlyRootFilesystem",
                ]
                .map(String::from)
                .to_vec(),
            },
        }
    }
}

pub struct DriftBinaryDetector {
    priority: Priority,
    output: String,
    memfd: bool,
    memfd_priority: Priority,
    metadata_only_priority: Priority,
    interpreter: bool,
    interpreter_priority: Priority,
    runtime_mounts: Vec<String>,
    remediation: Remediation,
}

const DESCRIPTION: &str =
    "Detect execution of a binary not present in the original container image";
const MEMFD_DESCRIPTION: &str = "Detect execution of a binary that exists only in memory (memfd)";

/// The declared rules, by index (see [`DriftBinaryDetector::rules`]): a
/// rule name can have several templates (the executable, the program it
/// runs, a kill).
const EXE_DRIFT: u32 = 0;
const EXE_MEMFD: u32 = 1;
const PROGRAM_DRIFT: u32 = 2;
const PROGRAM_MEMFD: u32 = 3;
const PROGRAM_INTERPRETER: u32 = 4;
const KILLED_DENIED: u32 = 5;
const KILLED_MEMFD: u32 = 6;
const KILLED_DRIFT: u32 = 7;

/// The kernel's enforcement verdict, reported when it judged the exec.
const ENFORCEMENT_FIELDS: [(&str, &str); 4] = [
    ("action", "enforce.action"),
    ("enforce.reason", "enforce.reason"),
    ("enforce.delivered", "enforce.delivered"),
    ("enforce.error", "enforce.error"),
];

/// What every drift finding of an executable carries in `output_fields`,
/// `<NA>` when unknown: where it is, the file's times, the nearest
/// ancestors and who wrote it (docs/detections.md).
const DRIFT_FIELDS: [&str; 14] = [
    "drift.source",
    "drift.mount",
    "drift.change",
    "proc.exe_sha256",
    "proc.exe_sha256_missing",
    "proc.exe_ino.ctime",
    "proc.exe_ino.mtime",
    "proc.exe_ino.ctime_duration_proc_start",
    "proc.aname[2]",
    "proc.aname[3]",
    "drift.writer.pid",
    "drift.writer.exe",
    "drift.writer.cmdline",
    "drift.writer.time",
];

/// What a program-file finding says of the file that ran, under the names
/// an executable's finding uses (`drift.source` and `drift.mount` are set
/// the same way), and the file's own names.
const PROGRAM_FILE_FIELDS: [(&str, &str); 13] = [
    ("drift.change", "drift.file_change"),
    ("drift.writer.pid", "drift.file_writer.pid"),
    ("drift.writer.exe", "drift.file_writer.exe"),
    ("drift.writer.cmdline", "drift.file_writer.cmdline"),
    ("drift.writer.time", "drift.file_writer.time"),
    ("drift.file_sha256", "drift.file_sha256"),
    ("drift.file_sha256_missing", "drift.file_sha256_missing"),
    ("drift.file_ino.ctime", "drift.file_ino.ctime"),
    ("drift.file_ino.mtime", "drift.file_ino.mtime"),
    ("proc.exe_sha256", "proc.exe_sha256"),
    ("proc.aname[2]", "proc.aname[2]"),
    ("proc.aname[3]", "proc.aname[3]"),
    ("drift.via", "drift.via"),
];

/// The `drift.source` values the rule fires on.
const DRIFT_SOURCES: [ExeSource; 4] = [
    ExeSource::UpperLayer,
    ExeSource::Volume,
    ExeSource::Tmpfs,
    ExeSource::Deleted,
];

impl Plugin for DriftBinaryDetector {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        if let Some(bad) = c.runtime_mounts.iter().find(|p| !p.starts_with('/')) {
            return Err(format!("runtime_mounts: {bad:?} is not an absolute path"));
        }
        // Checked here so a typo fails `init`; the host renders them.
        Template::parse(&c.output)?;
        Ok(DriftBinaryDetector {
            priority: c.priority,
            output: c.output,
            memfd: c.memfd,
            memfd_priority: c.memfd_priority,
            metadata_only_priority: c.metadata_only_priority,
            interpreter: c.interpreter,
            interpreter_priority: c.interpreter_priority,
            runtime_mounts: c.runtime_mounts,
            remediation: c.remediation,
        })
    }

    fn manifest(&self) -> Manifest {
        let mut sources: Vec<&str> = DRIFT_SOURCES.iter().map(|s| s.as_str()).collect();
        if self.memfd {
            sources.push(ExeSource::Memfd.as_str());
        }
        Manifest::new(
            "drift-binary",
            env!("CARGO_PKG_VERSION"),
            &[EventKind::Exec],
        )
        .with_description(
            "Detect execution of a binary not present in the original container image",
        )
        // Only drifted or fileless executables can make a finding; the
        // exemptions stay ours to judge.
        .with_prefilter([
            Condition::in_container(),
            Condition::Any(vec![
                Condition::is_in("drift.source", sources.clone()),
                Condition::is_in("drift.file_source", sources),
                // The kernel judged it (a denied image binary too).
                Condition::Exists {
                    field: "enforce.action".into(),
                },
            ]),
        ])
        .with_rules(self.rules())
    }

    fn process(&mut self, ev: &EventRef<'_>) -> Verdict {
        let p = &ev.process;
        // A re-exec of the same file (`/proc/self/exe`, as busybox runs its
        // applets) is the program already judged at its first exec: one exec
        // of a drifted binary is one finding (below).
        if ev.kind != EventKind::Exec || ev.container.is_none() {
            return Verdict::pass();
        }
        // A kill (or one detect mode held back) is always reported, even
        // where this rule's own exemptions would stay silent.
        let enforced = p
            .enforcement
            .filter(|e| matches!(e.action, EnforceAction::Killed | EnforceAction::WouldKill));
        // The re-exec exemption is the executable's alone (below): the
        // script a re-exec'd shell runs is still judged.
        let exempt = is_container_entrypoint(ev) || is_runtime_setup(ev);
        let source = p.exe_origin().filter(|_| !exempt);
        let mut verdict = Verdict::pass();
        // The script a shell runs by exec'ing it is a re-exec of the shell's
        // own file (`#!/bin/sh` run from busybox sh): the executable was
        // judged, the script was not.
        let exe_drift = source.is_some_and(|source| {
            !p.exe_reexec && source.is_drift() && !self.runtime_injected(source, p.exe_mount)
        });
        if source.is_some()
            && !exe_drift
            && let Some(f) = self.program_file(ev)
        {
            verdict.fired.push(f);
        }
        if exe_drift {
            let priority = if p.exe_change == Some(ExeChange::MetadataOnly) {
                self.metadata_only_priority
            } else {
                self.priority
            };
            verdict.fired.push(Fired::new(EXE_DRIFT, priority));
        }
        if self.memfd && !p.exe_reexec && source == Some(ExeSource::Memfd) {
            verdict
                .fired
                .push(Fired::new(EXE_MEMFD, self.memfd_priority));
        }
        if verdict.fired.is_empty()
            && let Some(e) = enforced
        {
            verdict.fired.push(match e.reason {
                EnforceReason::Deny => Fired::new(KILLED_DENIED, Priority::Critical),
                EnforceReason::Memfd => Fired::new(KILLED_MEMFD, self.memfd_priority),
                EnforceReason::Drift | EnforceReason::Unknown => {
                    Fired::new(KILLED_DRIFT, self.priority)
                }
            });
        }
        verdict
    }
}

impl DriftBinaryDetector {
    /// The declared rules, in the order of their indices.
    fn rules(&self) -> Vec<RuleSpec> {
        let rule = |name: &str, output: &str, description: &str, tags: &[&str]| {
            RuleSpec::new(name, output)
                .with_description(description)
                .with_tags(tags)
                .with_remediation(Some(self.remediation.clone()))
        };
        let drift = ["container", "drift"];
        let killed = ["container", "drift", "enforcement"];
        // An executable's finding always says what the kernel saw of the
        // file (`<NA>` when unknown): the seed's message stays as users
        // know it.
        let exe = |r: RuleSpec| {
            ENFORCEMENT_FIELDS
                .iter()
                .fold(r.with_fields(&DRIFT_FIELDS), |r, (key, field)| {
                    r.with_optional_field(key, field)
                })
        };
        let enforcement_only = |r: RuleSpec| {
            ENFORCEMENT_FIELDS
                .iter()
                .fold(r, |r, (key, field)| r.with_optional_field(key, field))
        };
        // What a program's finding is about is the file, not the
        // executable: its source and mount, under the executable's names.
        let program = |r: RuleSpec| {
            [
                ("drift.source", "drift.file_source"),
                ("drift.mount", "drift.file_mount"),
            ]
            .into_iter()
            .chain(PROGRAM_FILE_FIELDS)
            .fold(r, |r, (key, field)| r.with_field_as(key, field))
        };
        vec![
            exe(rule(RULE, &self.output, DESCRIPTION, &drift)),
            enforcement_only(rule(
                MEMFD_RULE,
                MEMFD_OUTPUT,
                MEMFD_DESCRIPTION,
                &["container", "drift", "fileless"],
            )),
            program(rule(RULE, PROGRAM_OUTPUT, DESCRIPTION, &drift)),
            program(rule(
                MEMFD_RULE,
                PROGRAM_OUTPUT,
                "Detect execution of a program that exists only in memory (memfd)",
                &drift,
            )),
            program(rule(
                INTERPRETER_RULE,
                INTERPRETER_OUTPUT,
                "Detect an interpreter running a script not present in the original container image",
                &drift,
            )),
            exe(rule(
                DENY_RULE,
                DENY_OUTPUT,
                "Detect execution of a binary listed in [enforcement] deny_binaries",
                &killed,
            )),
            exe(rule(MEMFD_RULE, MEMFD_OUTPUT, MEMFD_DESCRIPTION, &killed)),
            exe(rule(RULE, &self.output, DESCRIPTION, &killed)),
        ]
    }

    /// The finding for a program the executable runs (a script, the
    /// loader's file, an interpreter's script) that is not from the image.
    fn program_file(&self, ev: &EventRef<'_>) -> Option<Fired> {
        let f = ev.process.program_file.as_ref()?;
        let source = f.source?;
        let memfd = source == ExeSource::Memfd;
        if !(source.is_drift() || memfd && self.memfd) || self.runtime_injected(source, f.mount) {
            return None;
        }
        Some(match f.via {
            // A script or loaded file that exists only in memory (handed
            // over as `/dev/fd/N`, the way `fexecve` runs a script), by
            // whatever program.
            _ if memfd => Fired::new(PROGRAM_MEMFD, self.memfd_priority),
            ProgramVia::Script | ProgramVia::Loader => Fired::new(
                PROGRAM_DRIFT,
                if f.change == Some(ExeChange::MetadataOnly) {
                    self.metadata_only_priority
                } else {
                    self.priority
                },
            ),
            ProgramVia::Interpreter if self.interpreter => {
                Fired::new(PROGRAM_INTERPRETER, self.interpreter_priority)
            }
            _ => return None,
        })
    }

    /// A binary the runtime bind-mounted in (`runtime_mounts`).
    fn runtime_injected(&self, source: ExeSource, mount: Option<&str>) -> bool {
        source == ExeSource::Volume
            && mount.is_some_and(|m| self.runtime_mounts.iter().any(|r| is_under(m, r)))
    }
}

driftwatch_sdk::export_plugin!(DriftBinaryDetector);
