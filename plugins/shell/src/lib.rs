//! "Container Shell Spawned": a shell started in a container that should be
//! immutable, unless it is the container's own main process.

use driftwatch_sdk::fields::Template;
use driftwatch_sdk::program::runs_one_of;
use driftwatch_sdk::rules::is_container_entrypoint;
use driftwatch_sdk::{
    Condition, EventKind, EventRef, Finding, Manifest, Plugin, Priority, Verdict,
};
use serde::Deserialize;

pub const RULE: &str = "Container Shell Spawned";
const OUTPUT: &str = "Shell spawned in container (user=%user.name shell=%proc.name container=%container.name image=%container.image.repository)";

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Program names that count as shells, matched against `proc.name` and
    /// `proc.program` (a symlinked, renamed or busybox shell is still one).
    pub shells: Vec<String>,
    pub priority: Priority,
    pub output: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            shells: ["bash", "sh", "dash", "zsh", "csh", "ksh"]
                .map(String::from)
                .to_vec(),
            priority: Priority::Warning,
            output: OUTPUT.to_string(),
        }
    }
}

pub struct ShellDetector {
    shells: Vec<String>,
    priority: Priority,
    output: Template,
}

impl Plugin for ShellDetector {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        Ok(ShellDetector {
            shells: c.shells,
            priority: c.priority,
            output: Template::parse(&c.output)?,
        })
    }

    fn manifest(&self) -> Manifest {
        Manifest::new("shell", env!("CARGO_PKG_VERSION"), &[EventKind::Exec])
            .with_description("Detect interactive shell in a container that should be immutable")
            // Most execs are not shells: the host keeps them from us.
            .with_prefilter([
                Condition::in_container(),
                Condition::Any(vec![
                    Condition::is_in("proc.name", &self.shells),
                    Condition::is_in("proc.program", &self.shells),
                ]),
            ])
    }

    fn process(&mut self, ev: &EventRef<'_>) -> Verdict {
        if ev.kind != EventKind::Exec
            || ev.container.is_none()
            || !runs_one_of(&ev.process, &self.shells)
            || is_container_entrypoint(ev)
        {
            return Verdict::pass();
        }
        Verdict::with_finding(Finding {
            rule: RULE.to_string(),
            priority: self.priority,
            output: self.output.render(ev),
            description: Some(
                "Detect interactive shell in a container that should be immutable".into(),
            ),
            tags: ["container", "drift", "shell"].map(String::from).to_vec(),
            fields: self.output.fields(ev),
            remediation: None,
        })
    }
}

driftwatch_sdk::export_plugin!(ShellDetector);
