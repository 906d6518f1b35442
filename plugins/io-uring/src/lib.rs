//! "io_uring Setup in Container": a process in a container set up an
//! io_uring. Files opened, renamed, linked or removed through a ring never
//! pass the syscalls tracers follow (the kernel sensor reports them from
//! io_uring's own tracepoint, from the request, before it ran); few container workloads
//! need it (and the default seccomp profiles of Docker and containerd
//! refuse it since 2023), so the ring itself is worth a look.

use driftwatch_sdk::fields::Template;
use driftwatch_sdk::{
    Condition, EventKind, EventRef, Finding, Manifest, Plugin, Priority, Verdict,
};
use serde::Deserialize;

pub const RULE: &str = "io_uring Setup in Container";
const OUTPUT: &str = "io_uring set up in container: its file operations bypass syscall \
     tracing (user=%user.name command=%proc.cmdline container=%container.name \
     image=%container.image.repository)";
const DESCRIPTION: &str =
    "Detect io_uring rings in containers: their file operations bypass syscall tracing";

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub priority: Priority,
    pub output: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            priority: Priority::Notice,
            output: OUTPUT.to_string(),
        }
    }
}

pub struct IoUringSetup {
    priority: Priority,
    output: Template,
}

impl Plugin for IoUringSetup {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        Ok(IoUringSetup {
            priority: c.priority,
            output: Template::parse(&c.output)?,
        })
    }

    fn manifest(&self) -> Manifest {
        Manifest::new(
            "io-uring",
            env!("CARGO_PKG_VERSION"),
            &[EventKind::IoUringSetup],
        )
        .with_description(DESCRIPTION)
        .with_prefilter([Condition::in_container()])
    }

    fn process(&mut self, ev: &EventRef<'_>) -> Verdict {
        if ev.kind != EventKind::IoUringSetup || ev.container.is_none() {
            return Verdict::pass();
        }
        Verdict::with_finding(Finding {
            rule: RULE.to_string(),
            priority: self.priority,
            output: self.output.render(ev),
            description: Some(DESCRIPTION.into()),
            tags: ["container", "io_uring", "evasion"]
                .map(String::from)
                .to_vec(),
            fields: self.output.fields(ev),
            remediation: None,
        })
    }
}

driftwatch_sdk::export_plugin!(IoUringSetup);

#[cfg(test)]
mod tests {
    use driftwatch_sdk::{Container, Event};

    use super::*;

    fn event(kind: EventKind, container: bool) -> Event {
        Event {
            kind,
            container: container.then(|| Container {
                id: "ab".repeat(32),
                ..Container::default()
            }),
            ..Event::default()
        }
    }

    #[test]
    fn a_ring_in_a_container_is_a_notice() {
        let mut p = IoUringSetup::new(Config::default()).unwrap();
        let v = p.process(&event(EventKind::IoUringSetup, true).as_event_ref());
        assert_eq!(v.findings.len(), 1);
        assert_eq!(v.findings[0].rule, RULE);
        assert_eq!(v.findings[0].priority, Priority::Notice);
        assert!(
            p.process(&event(EventKind::IoUringSetup, false).as_event_ref())
                .is_pass()
        );
        assert!(
            p.process(&event(EventKind::Exec, true).as_event_ref())
                .is_pass()
        );
    }

    #[test]
    fn the_priority_is_configurable() {
        let mut p = IoUringSetup::new(Config {
            priority: Priority::Warning,
            ..Config::default()
        })
        .unwrap();
        let v = p.process(&event(EventKind::IoUringSetup, true).as_event_ref());
        assert_eq!(v.findings[0].priority, Priority::Warning);
    }
}
