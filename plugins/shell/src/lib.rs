//! "Container Shell Spawned": a shell started in a container that should be
//! immutable, unless it is the container's own main process.

use driftwatch_sdk::fields::Template;
use driftwatch_sdk::program::runs_one_of;
use driftwatch_sdk::rules::is_container_entrypoint;
use driftwatch_sdk::{
    Condition, EventKind, EventRef, Manifest, Plugin, Priority, RuleSpec, Verdict,
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
    output: String,
}

const DESCRIPTION: &str = "Detect interactive shell in a container that should be immutable";

impl Plugin for ShellDetector {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        // Checked here so a typo fails `init` with the plugin's own error;
        // the host renders it.
        Template::parse(&c.output)?;
        Ok(ShellDetector {
            shells: c.shells,
            priority: c.priority,
            output: c.output,
        })
    }

    fn manifest(&self) -> Manifest {
        Manifest::new("shell", env!("CARGO_PKG_VERSION"), &[EventKind::Exec])
            .with_description(DESCRIPTION)
            // Most execs are not shells: the host keeps them from us.
            .with_prefilter([
                Condition::in_container(),
                Condition::Any(vec![
                    Condition::is_in("proc.name", &self.shells),
                    Condition::is_in("proc.program", &self.shells),
                ]),
            ])
            .with_rule(
                RuleSpec::new(RULE, &self.output)
                    .with_description(DESCRIPTION)
                    .with_tags(&["container", "drift", "shell"]),
            )
    }

    fn process(&mut self, ev: &EventRef<'_>) -> Verdict {
        if ev.kind != EventKind::Exec
            || ev.container.is_none()
            || !runs_one_of(&ev.process, &self.shells)
            || is_container_entrypoint(ev)
        {
            return Verdict::pass();
        }
        Verdict::fire(0, self.priority)
    }
}

driftwatch_sdk::export_plugin!(ShellDetector);
