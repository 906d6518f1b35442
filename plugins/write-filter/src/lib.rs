//! "Container File System Write": a regular file opened for writing in a
//! container, outside the paths where writes are expected.

use driftwatch_sdk::fields::Template;
use driftwatch_sdk::rules::is_under;
use driftwatch_sdk::{
    Condition, EventKind, EventRef, FileType, Finding, Manifest, Plugin, Priority, Verdict,
};
use serde::Deserialize;

pub const RULE: &str = "Container File System Write";
const OUTPUT: &str =
    "File write in container (user=%user.name file=%fd.name container=%container.name)";

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directories where writes are expected. Whole path components: `/tmp`
    /// covers `/tmp` and `/tmp/x`, not `/tmpfoo`.
    pub exclude_prefixes: Vec<String>,
    pub priority: Priority,
    pub output: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            exclude_prefixes: ["/tmp", "/var/log", "/proc"].map(String::from).to_vec(),
            priority: Priority::Notice,
            output: OUTPUT.to_string(),
        }
    }
}

pub struct WriteFilter {
    exclude: Vec<String>,
    priority: Priority,
    output: Template,
}

impl Plugin for WriteFilter {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        if let Some(bad) = c.exclude_prefixes.iter().find(|p| !p.starts_with('/')) {
            return Err(format!("exclude_prefixes: {bad:?} is not an absolute path"));
        }
        Ok(WriteFilter {
            exclude: c.exclude_prefixes,
            priority: c.priority,
            output: Template::parse(&c.output)?,
        })
    }

    fn manifest(&self) -> Manifest {
        Manifest::new(
            "write-filter",
            env!("CARGO_PKG_VERSION"),
            &[EventKind::OpenWrite],
        )
        .with_description("Detect writes to container upper layer filesystem")
        // Writes under the excluded paths (logs, /tmp) are the bulk of all
        // writes: they never need to enter the sandbox.
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
        if ev.kind != EventKind::OpenWrite
            || ev.container.is_none()
            || file.file_type != FileType::Regular
            || self.exclude.iter().any(|p| is_under(file.path, p))
            || Self::runtime_setup(ev)
        {
            return Verdict::pass();
        }
        Verdict::with_finding(Finding {
            rule: RULE.to_string(),
            priority: self.priority,
            output: self.output.render(ev),
            description: Some("Detect writes to container upper layer filesystem".into()),
            tags: ["container", "drift", "filesystem"]
                .map(String::from)
                .to_vec(),
            fields: self.output.fields(ev),
            remediation: None,
        })
    }
}

impl WriteFilter {
    /// The runtime preparing the container (`/etc/hosts`, `/etc/resolv.conf`,
    /// ... before `pivot_root`), not the container drifting. Both must hold,
    /// and neither is a name the process chooses:
    /// - the kernel saw the write reach the container's root filesystem from
    ///   outside it (`outside_root`: the writer's root is another
    ///   filesystem, which after `pivot_root` is never the case for the
    ///   container's own processes);
    /// - the writer is PID 1 of the container's pid namespace (the init the
    ///   runtime starts; exec sessions and children never are).
    ///
    /// The event itself still flows (and is exported with `events = true`).
    fn runtime_setup(ev: &EventRef<'_>) -> bool {
        ev.file.as_ref().is_some_and(|f| f.outside_root) && ev.process.vpid == 1
    }
}

driftwatch_sdk::export_plugin!(WriteFilter);
