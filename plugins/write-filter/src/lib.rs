//! "Container File System Write": a file of a container changed outside the
//! paths where changes are expected. A regular file opened for writing or
//! truncated there; a file renamed, hard-linked or symlinked to a name
//! there (`mv /tmp/p /etc/ld.so.preload` changes `/etc`, whatever `/tmp`
//! is); and a write to a file with other hard links anywhere, since its
//! other names may be outside the excluded paths (`ln /etc/passwd /tmp/p`).

use driftwatch_sdk::fields::Template;
use driftwatch_sdk::rules::is_under;
use driftwatch_sdk::{
    Condition, EventKind, EventRef, FileType, Fired, Manifest, Plugin, Priority, RuleSpec, Verdict,
};
use serde::Deserialize;

pub const RULE: &str = "Container File System Write";
const OUTPUT: &str =
    "File write in container (user=%user.name file=%fd.name container=%container.name)";
/// For renames and links: the new name is what changed.
const NAME_OUTPUT: &str = "File write in container (user=%user.name file=%fs.path.target \
     op=%evt.type from=%fd.name container=%container.name)";
/// The kinds whose new name (`file.target_path`) is the change.
const NAMING: [EventKind; 3] = [EventKind::Rename, EventKind::Link, EventKind::Symlink];

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directories where writes are expected. Whole path components: `/tmp`
    /// covers `/tmp` and `/tmp/x`, not `/tmpfoo`.
    pub exclude_prefixes: Vec<String>,
    pub priority: Priority,
    pub output: String,
    /// The output of renames, links and symlinks.
    pub name_output: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            exclude_prefixes: ["/tmp", "/var/log", "/proc"].map(String::from).to_vec(),
            priority: Priority::Notice,
            output: OUTPUT.to_string(),
            name_output: NAME_OUTPUT.to_string(),
        }
    }
}

pub struct WriteFilter {
    exclude: Vec<String>,
    priority: Priority,
    output: String,
    name_output: String,
}

/// The declared rules, by index: the same rule, with the output of a
/// changed file and of a new name.
const WRITE: u32 = 0;
const NAME: u32 = 1;

impl Plugin for WriteFilter {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        if let Some(bad) = c.exclude_prefixes.iter().find(|p| !p.starts_with('/')) {
            return Err(format!("exclude_prefixes: {bad:?} is not an absolute path"));
        }
        // Checked here so a typo fails `init`; the host renders them.
        Template::parse(&c.output)?;
        Template::parse(&c.name_output)?;
        Ok(WriteFilter {
            exclude: c.exclude_prefixes,
            priority: c.priority,
            output: c.output,
            name_output: c.name_output,
        })
    }

    fn manifest(&self) -> Manifest {
        Manifest::new(
            "write-filter",
            env!("CARGO_PKG_VERSION"),
            &[
                EventKind::OpenWrite,
                EventKind::Truncate,
                EventKind::Rename,
                EventKind::Link,
                EventKind::Symlink,
            ],
        )
        .with_description(DESCRIPTION)
        // Writes under the excluded paths (logs, /tmp) are the bulk of all
        // writes: they never need to enter the sandbox (and the kernel drops
        // them before they cost ring-buffer space). A write to a file with
        // other links, and every new name, still gets in.
        .with_prefilter([
            Condition::in_container(),
            Condition::Any(vec![
                Condition::is_in("evt.type", NAMING.map(EventKind::as_str)),
                // "?": the type is unknown (a ring's open, reported before
                // it ran; a file the kernel could not read): judged as if
                // regular, not let through unjudged.
                Condition::is_in("fd.typechar", ["f", "?"]),
            ]),
            Condition::Any(vec![
                Condition::is_in("evt.type", NAMING.map(EventKind::as_str)),
                Condition::negate(Condition::pmatch("fd.name", &self.exclude)),
                Condition::negate(Condition::is_in("fd.nlink", ["0", "1"])),
            ]),
        ])
        .with_rule(self.rule(&self.output))
        .with_rule(self.rule(&self.name_output))
    }

    fn process(&mut self, ev: &EventRef<'_>) -> Verdict {
        let Some(file) = ev.file.as_ref() else {
            return Verdict::pass();
        };
        if ev.container.is_none() || Self::runtime_setup(ev) {
            return Verdict::pass();
        }
        let excluded = |p: &str| self.exclude.iter().any(|x| is_under(p, x));
        let (rule, extra) = match ev.kind {
            EventKind::OpenWrite | EventKind::Truncate => {
                if !matches!(file.file_type, FileType::Regular | FileType::Unknown) {
                    return Verdict::pass();
                }
                // Another name of the same file may be anywhere.
                let linked = file.nlink.is_some_and(|n| n > 1);
                if excluded(file.path) && !linked {
                    return Verdict::pass();
                }
                (WRITE, linked.then(|| file.nlink.unwrap_or(0)))
            }
            k if NAMING.contains(&k) => match file.target_path {
                Some(t) if !t.is_empty() && !excluded(t) => (NAME, None),
                _ => return Verdict::pass(),
            },
            _ => return Verdict::pass(),
        };
        let mut fired = Fired::new(rule, self.priority);
        if let Some(n) = extra {
            fired.fields.insert("fd.nlink".to_string(), n.to_string());
        }
        Verdict {
            fired: vec![fired],
            ..Verdict::default()
        }
    }
}

const DESCRIPTION: &str = "Detect writes to container upper layer filesystem";

impl WriteFilter {
    fn rule(&self, output: &str) -> RuleSpec {
        RuleSpec::new(RULE, output)
            .with_description(DESCRIPTION)
            .with_tags(&["container", "drift", "filesystem"])
    }

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
