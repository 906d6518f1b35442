//! "Drift Detected (Container Image Modified Binary)": an executable that is
//! not part of the container's image (added or modified in the upper layer)
//! was run. Also flags fileless execution from a memfd, the usual way around
//! upper-layer checks.

use driftwatch_sdk::fields::Template;
use driftwatch_sdk::rules::EntrypointExemption;
use driftwatch_sdk::{
    Condition, EventKind, EventRef, Finding, Manifest, Plugin, Priority, Remediation, Verdict,
};
use serde::Deserialize;

pub const RULE: &str = "Drift Detected (Container Image Modified Binary)";
pub const MEMFD_RULE: &str = "Fileless Execution in Container (memfd)";
const OUTPUT: &str = "Drift detected: new binary executed in container (user=%user.name command=%proc.cmdline container=%container.name image=%container.image.repository:%container.image.tag exe_path=%proc.exepath)";
const MEMFD_OUTPUT: &str = "Fileless execution from memfd in container (user=%user.name command=%proc.cmdline container=%container.name image=%container.image.repository:%container.image.tag exe_path=%proc.exepath)";

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub entrypoint_parents: Vec<String>,
    pub priority: Priority,
    pub output: String,
    /// Also report execution from a memfd.
    pub memfd: bool,
    pub memfd_priority: Priority,
    /// Executable paths exempt from the memfd rule. runc re-executes itself
    /// from a memfd when it starts or joins a container.
    pub memfd_allowed: Vec<String>,
    pub remediation: Remediation,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            entrypoint_parents: EntrypointExemption::default_parents(),
            priority: Priority::Warning,
            output: OUTPUT.to_string(),
            memfd: true,
            memfd_priority: Priority::Critical,
            memfd_allowed: vec!["memfd:runc_cloned:/proc/self/exe".into()],
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
    entrypoint: EntrypointExemption,
    priority: Priority,
    output: Template,
    memfd: bool,
    memfd_priority: Priority,
    memfd_output: Template,
    memfd_allowed: Vec<String>,
    remediation: Remediation,
}

impl Plugin for DriftBinaryDetector {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        Ok(DriftBinaryDetector {
            entrypoint: EntrypointExemption::new(c.entrypoint_parents),
            priority: c.priority,
            output: Template::parse(&c.output)?,
            memfd: c.memfd,
            memfd_priority: c.memfd_priority,
            memfd_output: Template::parse(MEMFD_OUTPUT)?,
            memfd_allowed: c.memfd_allowed,
            remediation: c.remediation,
        })
    }

    fn manifest(&self) -> Manifest {
        Manifest::new(
            "drift-binary",
            env!("CARGO_PKG_VERSION"),
            &[EventKind::Exec],
        )
        .with_description(
            "Detect execution of a binary not present in the original container image",
        )
        .with_prefilter([Condition::in_container(), {
            // Only drifted or fileless executables can make a finding; the
            // entrypoint exemption stays ours to judge.
            let mut drifted = vec![Condition::is_true("proc.is_exe_upper_layer")];
            if self.memfd {
                drifted.push(Condition::is_true("proc.is_exe_from_memfd"));
            }
            Condition::Any(drifted)
        }])
    }

    fn process(&mut self, ev: &EventRef<'_>) -> Verdict {
        if ev.kind != EventKind::Exec || ev.container.is_none() || self.entrypoint.exempts(ev) {
            return Verdict::pass();
        }
        let p = &ev.process;
        let mut verdict = Verdict::pass();
        if p.exe_upper_layer {
            verdict.findings.push(Finding {
                rule: RULE.to_string(),
                priority: self.priority,
                output: self.output.render(ev),
                description: Some(
                    "Detect execution of a binary not present in the original container image"
                        .into(),
                ),
                tags: ["container", "drift"].map(String::from).to_vec(),
                fields: self.output.fields(ev),
                remediation: Some(self.remediation.clone()),
            });
        }
        if self.memfd && p.exe_from_memfd && !self.memfd_allowed.iter().any(|a| a == p.exe_path) {
            verdict.findings.push(Finding {
                rule: MEMFD_RULE.to_string(),
                priority: self.memfd_priority,
                output: self.memfd_output.render(ev),
                description: Some(
                    "Detect execution of a binary that exists only in memory (memfd)".into(),
                ),
                tags: ["container", "drift", "fileless"]
                    .map(String::from)
                    .to_vec(),
                fields: self.memfd_output.fields(ev),
                remediation: Some(self.remediation.clone()),
            });
        }
        verdict
    }
}

driftwatch_sdk::export_plugin!(DriftBinaryDetector);
