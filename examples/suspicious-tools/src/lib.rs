//! An example custom detection to copy as a starting point: network and
//! reconnaissance tools run inside a container. Build it with
//! `cargo build -p driftwatch-example-suspicious-tools --target wasm32-unknown-unknown --release`
//! and point a `[[plugins]]` entry's `path` at the resulting component (see
//! docs/plugin-abi.md); the collector's build does this for you in
//! `target/guests/`.

use driftwatch_sdk::fields::Template;
use driftwatch_sdk::{
    Condition, EventKind, EventRef, Finding, Manifest, Plugin, Priority, Verdict,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub tools: Vec<String>,
    pub priority: Priority,
    /// Tag events instead of alerting (shows how plugins enrich events).
    pub tag_only: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tools: [
                "nc", "ncat", "netcat", "socat", "nmap", "masscan", "tcpdump",
            ]
            .map(String::from)
            .to_vec(),
            priority: Priority::Notice,
            tag_only: false,
        }
    }
}

pub struct SuspiciousTools {
    cfg: Config,
    output: Template,
}

impl Plugin for SuspiciousTools {
    type Config = Config;

    fn new(cfg: Config) -> Result<Self, String> {
        let output = Template::parse(
            "Network tool run in container (user=%user.name command=%proc.cmdline container=%container.name)",
        )?;
        Ok(SuspiciousTools { cfg, output })
    }

    fn manifest(&self) -> Manifest {
        Manifest::new(
            "suspicious-tools",
            env!("CARGO_PKG_VERSION"),
            &[EventKind::Exec],
        )
        // Tell the host which execs can matter, so that the others never
        // cost a call into the sandbox. `process` still checks everything.
        .with_prefilter([
            Condition::in_container(),
            Condition::is_in("proc.name", &self.cfg.tools),
        ])
    }

    fn process(&mut self, ev: &EventRef<'_>) -> Verdict {
        if ev.container.is_none() || !self.cfg.tools.iter().any(|t| t == ev.process.name) {
            return Verdict::pass();
        }
        let mut v = Verdict::pass();
        v.tags.push("network-tool".into());
        if !self.cfg.tag_only {
            v.findings.push(Finding {
                rule: "Network Tool in Container".into(),
                priority: self.cfg.priority,
                output: self.output.render(ev),
                description: None,
                tags: vec!["container".into(), "network".into()],
                fields: self.output.fields(ev),
                remediation: None,
            });
        }
        v
    }
}

driftwatch_sdk::export_plugin!(SuspiciousTools);
