//! Conditions shared by several detections, defined once.

use crate::EventOf;

/// Parent process names (`comm`, so at most 15 bytes) of the runtime
/// processes that launch a container's main process.
pub const DEFAULT_ENTRYPOINT_PARENTS: &[&str] = &[
    "runc",
    "runc:[0:PARENT]",
    "runc:[1:CHILD]",
    "runc:[2:INIT]",
    "crun",
    "conmon",
    "conmonrs",
    "containerd-shim", // containerd-shim-runc-v2, truncated by the kernel
    "docker-runc",
    "crio",
    "youki",
];

/// The seed's `container_entrypoint` exception, narrowed so it cannot hide an
/// interactive session: it exempts only a container's **main process**, the
/// ENTRYPOINT/CMD the runtime starts with the container. That process is PID
/// 1 of the container's pid namespace and its parent is a runtime process.
///
/// A `podman exec` / `kubectl exec` shell also has a runtime parent, but it
/// is never PID 1 of the namespace, so it is not exempt; neither is anything
/// the main process starts (its parent is the main process). A process whose
/// namespace pid is unknown (0) is not exempt: when in doubt, alert.
#[derive(Debug, Clone)]
pub struct EntrypointExemption {
    parents: Vec<String>,
}

impl EntrypointExemption {
    pub fn new(parents: Vec<String>) -> EntrypointExemption {
        EntrypointExemption { parents }
    }

    pub fn default_parents() -> Vec<String> {
        DEFAULT_ENTRYPOINT_PARENTS
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    pub fn exempts<S: AsRef<str>>(&self, ev: &EventOf<S>) -> bool {
        ev.container.is_some()
            && ev.process.vpid == 1
            && self.parents.iter().any(|p| p == ev.process.pname.as_ref())
    }
}

impl Default for EntrypointExemption {
    fn default() -> Self {
        EntrypointExemption::new(EntrypointExemption::default_parents())
    }
}

/// Whether `path` is `prefix` or lies below it: `/tmp/x` is under `/tmp`,
/// `/tmpfoo` is not.
pub fn is_under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return path.starts_with('/');
    }
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Container, Event, Process};

    fn ev(vpid: u32, pname: &str, container: bool) -> Event {
        Event {
            process: Process {
                vpid,
                pname: pname.into(),
                ..Process::default()
            },
            container: container.then(Container::default),
            ..Event::default()
        }
    }

    #[test]
    fn only_the_main_process_is_exempt() {
        let x = EntrypointExemption::default();
        assert!(x.exempts(&ev(1, "conmon", true)));
        assert!(x.exempts(&ev(1, "containerd-shim", true)));
        // podman exec: runtime parent, but not pid 1.
        assert!(!x.exempts(&ev(7, "runc", true)));
        // started by the main process.
        assert!(!x.exempts(&ev(8, "sh", true)));
        // pid 1 with a non-runtime parent (e.g. host pid namespace sharing).
        assert!(!x.exempts(&ev(1, "bash", true)));
        assert!(!x.exempts(&ev(0, "conmon", true)));
        assert!(!x.exempts(&ev(1, "conmon", false)));
    }

    #[test]
    fn prefixes_are_path_components() {
        assert!(is_under("/tmp", "/tmp"));
        assert!(is_under("/tmp/x", "/tmp"));
        assert!(is_under("/tmp/x", "/tmp/"));
        assert!(!is_under("/tmpfoo", "/tmp"));
        assert!(!is_under("/var/logs/x", "/var/log"));
        assert!(is_under("/var/log/x", "/var/log"));
        assert!(is_under("/anything", "/"));
    }
}
