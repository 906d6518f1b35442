//! "Package Manager Execution in Container": installing software into a
//! running container is drift by definition.

use driftwatch_sdk::fields::Template;
use driftwatch_sdk::program::runs_one_of;
use driftwatch_sdk::{
    Condition, EventKind, EventRef, Manifest, Plugin, Priority, RuleSpec, Verdict,
};
use serde::Deserialize;

pub const RULE: &str = "Package Manager Execution in Container";
const OUTPUT: &str = "Package manager executed in container (user=%user.name command=%proc.cmdline container=%container.name image=%container.image.repository)";

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Program names of package managers, matched exactly against
    /// `proc.name` and `proc.program` (a symlinked or loader-run one counts).
    pub package_managers: Vec<String>,
    pub priority: Priority,
    pub output: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            package_managers: [
                "apt", "apt-get", "yum", "dnf", "apk", "pip", "pip3", "npm", "gem", "cargo",
            ]
            .map(String::from)
            .to_vec(),
            priority: Priority::Error,
            output: OUTPUT.to_string(),
        }
    }
}

pub struct PackageManagerDetector {
    names: Vec<String>,
    priority: Priority,
    output: String,
}

const DESCRIPTION: &str = "Detect use of package managers indicating drift";

impl Plugin for PackageManagerDetector {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        // Checked here so a typo fails `init`; the host renders it.
        Template::parse(&c.output)?;
        Ok(PackageManagerDetector {
            names: c.package_managers,
            priority: c.priority,
            output: c.output,
        })
    }

    fn manifest(&self) -> Manifest {
        Manifest::new(
            "package-manager",
            env!("CARGO_PKG_VERSION"),
            &[EventKind::Exec],
        )
        .with_description(DESCRIPTION)
        .with_prefilter([
            Condition::in_container(),
            Condition::Any(vec![
                Condition::is_in("proc.name", &self.names),
                Condition::is_in("proc.program", &self.names),
            ]),
        ])
        .with_rule(
            RuleSpec::new(RULE, &self.output)
                .with_description(DESCRIPTION)
                .with_tags(&["container", "drift", "package-manager"]),
        )
    }

    fn process(&mut self, ev: &EventRef<'_>) -> Verdict {
        // The seed's rule has no entrypoint exception: a container whose main
        // process is a package manager is installing software at run time.
        if ev.kind != EventKind::Exec
            || ev.container.is_none()
            || !runs_one_of(&ev.process, &self.names)
        {
            return Verdict::pass();
        }
        Verdict::fire(0, self.priority)
    }
}

driftwatch_sdk::export_plugin!(PackageManagerDetector);
