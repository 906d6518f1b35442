//! Conditions shared by several detections, defined once.

use crate::EventOf;

/// The seed's `container_entrypoint` exception, made unforgeable: only a
/// container's **main process**, the ENTRYPOINT/CMD the runtime starts, is
/// exempt. Recognized by what a process inside the container cannot set:
/// - it is PID 1 of its pid namespace;
/// - its parent is in another mount namespace (the runtime, on the host);
/// - the program this exec replaced was not a file of its mount namespace
///   (the runtime's own binary), so a later exec by PID 1 itself (an RCE in
///   the main process calling `execve`) is not exempt;
/// - it is not in the host's mount namespace.
///
/// Not by `comm`, which anyone sets with `prctl`. A `podman exec` or
/// `kubectl exec` session has a runtime parent too but is never PID 1; the
/// PID 1 of a pid namespace nested in the container has its parent in the
/// container. A fact the sensor could not read is false: when in doubt,
/// alert.
pub fn is_container_entrypoint<S: AsRef<str>>(ev: &EventOf<S>) -> bool {
    let p = &ev.process;
    ev.container.is_some()
        && p.vpid == 1
        && p.parent_foreign
        && p.prev_exe_foreign
        && !p.host_mount_ns
}

/// An exec by the container runtime itself while it sets a container up,
/// before entering the container's mount namespace: the process, its parent
/// and the program it replaced are all in the host's mount namespace. No
/// process inside a container can be there without first leaving through
/// `setns` (and whatever it then runs from inside the container is
/// foreign), so this is who the process is, not what it calls itself.
pub fn is_runtime_setup<S: AsRef<str>>(ev: &EventOf<S>) -> bool {
    let p = &ev.process;
    p.host_mount_ns && !p.parent_foreign && !p.prev_exe_foreign
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

    fn ev(vpid: u32, parent_foreign: bool, prev_exe_foreign: bool, container: bool) -> Event {
        Event {
            process: Process {
                vpid,
                parent_foreign,
                prev_exe_foreign,
                pname: "conmon".into(),
                ..Process::default()
            },
            container: container.then(Container::default),
            ..Event::default()
        }
    }

    #[test]
    fn only_the_main_process_is_exempt() {
        let x = is_container_entrypoint;
        assert!(x(&ev(1, true, true, true)));
        // podman exec: runtime parent and program, but not pid 1.
        assert!(!x(&ev(7, true, true, true)));
        // A later exec by pid 1 itself: its previous program was the
        // container's.
        assert!(!x(&ev(1, true, false, true)));
        // pid 1 of a nested pid namespace: its parent is in the container.
        assert!(!x(&ev(1, false, true, true)));
        assert!(!x(&ev(0, true, true, true)));
        assert!(!x(&ev(1, true, true, false)));
        let mut host = ev(1, true, true, true);
        host.process.host_mount_ns = true;
        assert!(!x(&host));
    }

    #[test]
    fn runtime_setup_is_all_on_the_host_side() {
        let mut e = ev(40, false, false, true);
        assert!(!is_runtime_setup(&e), "not in the host's mount namespace");
        e.process.host_mount_ns = true;
        assert!(is_runtime_setup(&e));
        // setns into the host from a container: its previous program or its
        // parent is the container's.
        e.process.prev_exe_foreign = true;
        assert!(!is_runtime_setup(&e));
        e.process.prev_exe_foreign = false;
        e.process.parent_foreign = true;
        assert!(!is_runtime_setup(&e));
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
