//! Which container a cgroup belongs to, from the cgroup's name.
//!
//! Every runtime names a container's cgroup after its 64-hex id, each in its
//! own way: podman `libpod-<id>`, `libpod-<id>.scope` (and its `/container`
//! child); docker `docker-<id>.scope` and cgroupfs `/docker/<id>`;
//! containerd `cri-containerd-<id>.scope` and `...:cri-containerd:<id>`;
//! CRI-O `crio-<id>` / `crio-<id>.scope`; and a bare `<id>` (kubepods with
//! the cgroupfs driver). `libpod-conmon-<id>` is the monitor's cgroup, not
//! the container's.
//!
//! Two readings, because their callers see different things:
//! [`container_from_cgroup`] looks at the leaf and its parent only, all the
//! kernel sensor sends; [`container_in_cgroup_path`] is given a whole path
//! from `/proc/<pid>/cgroup` and looks at every component from the leaf up,
//! accepting any `<prefix>-<id>` or `<prefix>:<id>` name, so `driftwatch
//! diff` finds a container of a runtime not listed above too.

use driftwatch_sdk::Runtime;

/// Whose naming scheme a container's cgroup follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupRuntime {
    Podman,
    Docker,
    Containerd,
    CriO,
    /// A bare 64-hex directory (cgroupfs-driver kubepods, plain docker), or
    /// a prefix no runtime above uses: a container, runtime unknown.
    Unknown,
}

impl CgroupRuntime {
    /// The runtime, as events carry it.
    pub fn runtime(self) -> Option<Runtime> {
        match self {
            CgroupRuntime::Podman => Some(Runtime::Podman),
            CgroupRuntime::Docker => Some(Runtime::Docker),
            CgroupRuntime::Containerd => Some(Runtime::Containerd),
            CgroupRuntime::CriO => Some(Runtime::CriO),
            CgroupRuntime::Unknown => None,
        }
    }

    /// The runtime's name, as events carry it.
    pub fn name(self) -> Option<&'static str> {
        match self {
            CgroupRuntime::Podman => Some("podman"),
            CgroupRuntime::Docker => Some("docker"),
            CgroupRuntime::Containerd => Some("containerd"),
            CgroupRuntime::CriO => Some("cri-o"),
            CgroupRuntime::Unknown => None,
        }
    }
}

/// A container id: exactly 64 lowercase hex digits.
fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The container a cgroup path (v1 or v2, any controller) belongs to, as
/// (64-hex id, runtime), or None for a host cgroup. Only the last component
/// is read, and its parent when the last is a runtime's payload cgroup
/// below the container's scope (`/libpod-<id>.scope/container`).
pub fn container_from_cgroup(path: &str) -> Option<(String, CgroupRuntime)> {
    let mut parts = path.trim_end_matches('/').rsplit('/');
    let last = parts.next()?;
    let parent = parts.next();
    if let Some(found) = named(last, parent) {
        return Some(found);
    }
    if matches!(last, "container" | "init.scope") {
        return parent.and_then(|p| named(p, None));
    }
    None
}

/// The container id in a whole cgroup path, looking from the leaf up at
/// every component. A component names a container when a runtime's scheme
/// says so or, failing that, when its last `-`/`:` separated part is an
/// id. Conmon's own scope (`libpod-conmon-<id>.scope`) is skipped.
pub fn container_in_cgroup_path(path: &str) -> Option<(String, CgroupRuntime)> {
    let mut parts = path.rsplit('/').peekable();
    while let Some(comp) = parts.next() {
        if comp.contains("conmon") {
            continue;
        }
        if let Some(found) = named(comp, parts.peek().copied()) {
            return Some(found);
        }
        let bare = comp.strip_suffix(".scope").unwrap_or(comp);
        let tail = bare.rsplit(['-', ':']).next().unwrap_or(bare);
        if is_id(tail) {
            return Some((tail.to_string(), CgroupRuntime::Unknown));
        }
    }
    None
}

/// One cgroup name read by the runtimes' schemes. A name with a runtime's
/// prefix but no id after it is not a container (conmon's, say).
fn named(c: &str, parent: Option<&str>) -> Option<(String, CgroupRuntime)> {
    let c = c.strip_suffix(".scope").unwrap_or(c);
    // `system.slice:cri-containerd:<id>` (systemd driver seen through cgroupfs names).
    if let Some((_, id)) = c.rsplit_once(":cri-containerd:") {
        return is_id(id).then(|| (id.to_string(), CgroupRuntime::Containerd));
    }
    let prefixed = [
        ("libpod-", CgroupRuntime::Podman),
        ("docker-", CgroupRuntime::Docker),
        ("cri-containerd-", CgroupRuntime::Containerd),
        ("crio-", CgroupRuntime::CriO),
    ];
    for (prefix, rt) in prefixed {
        if let Some(id) = c.strip_prefix(prefix) {
            return is_id(id).then(|| (id.to_string(), rt));
        }
    }
    if is_id(c) {
        let rt = match parent {
            Some("docker") => CgroupRuntime::Docker,
            _ => CgroupRuntime::Unknown,
        };
        return Some((c.to_string(), rt));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3ab290c732230f85615f8c1a30667d2ab7059f721bf2bd086b6e4f5baa4a46c9";

    /// Every container shape either old parser was tested with (the
    /// kernel sensor's and `driftwatch diff`'s), with its runtime.
    fn containers() -> Vec<(String, CgroupRuntime)> {
        use CgroupRuntime::*;
        vec![
            (format!("/libpod_parent/libpod-{ID}"), Podman),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                Podman,
            ),
            (format!("/machine.slice/libpod-{ID}.scope"), Podman),
            (format!("/system.slice/docker-{ID}.scope"), Docker),
            (format!("/docker/{ID}"), Docker),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{ID}.scope"
                ),
                Containerd,
            ),
            (
                format!("/kubepods-besteffort-pod12.slice:cri-containerd:{ID}"),
                Containerd,
            ),
            (
                format!("/kubepods.slice/kubepods-pod1.slice/crio-{ID}.scope"),
                CriO,
            ),
            (format!("/kubepods/burstable/pod0d3e-11/crio-{ID}"), CriO),
            (format!("/kubepods/besteffort/pod1/crio-{ID}"), CriO),
            // cgroup v1 kubepods, cgroupfs driver: the id alone.
            (format!("/kubepods/besteffort/podabc/{ID}"), Unknown),
            // a trailing slash does not matter.
            (format!("/libpod_parent/libpod-{ID}/"), Podman),
        ]
    }

    /// Every host shape either old parser was tested with.
    fn hosts() -> Vec<String> {
        vec![
            "/".into(),
            "".into(),
            "/user.slice/user-0.slice/session-1.scope".into(),
            "/system.slice/containerd.service".into(),
            "/libpod_parent/conmon".into(),
            format!("/libpod_parent/libpod-conmon-{ID}"),
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            // 63 and 65 hex digits, upper case.
            format!("/docker/{}", &ID[1..]),
            format!("/docker/{ID}0"),
            format!("/docker/{}", ID.to_uppercase()),
            "/process_api/855ac3144b488bcbe145a2ca54eb3542".into(),
            format!("/libpod-{}.scope", &ID[..12]),
        ]
    }

    #[test]
    fn leaf_and_parent_name_every_runtime() {
        for (p, rt) in containers() {
            assert_eq!(container_from_cgroup(&p), Some((ID.into(), rt)), "{p}");
        }
        for p in hosts() {
            assert_eq!(container_from_cgroup(&p), None, "{p}");
        }
    }

    #[test]
    fn whole_paths_name_every_runtime() {
        for (p, rt) in containers() {
            assert_eq!(container_in_cgroup_path(&p), Some((ID.into(), rt)), "{p}");
        }
        for p in hosts() {
            assert_eq!(container_in_cgroup_path(&p), None, "{p}");
        }
    }

    /// Where the two readings differ, on purpose (each keeps what its
    /// caller did before the parsers were merged).
    #[test]
    fn whole_paths_look_deeper_and_accept_any_prefix() {
        for p in [
            format!("/machine.slice/libpod-{ID}.scope/payload/child"),
            format!("/system.slice/buildah-{ID}.scope"),
            format!("/ci/job:{ID}"),
        ] {
            assert_eq!(container_from_cgroup(&p), None, "{p}");
            assert_eq!(
                container_in_cgroup_path(&p).map(|(id, _)| id),
                Some(ID.into()),
                "{p}"
            );
        }
        // Conmon's scope is skipped, so its parent is looked at.
        assert_eq!(
            container_in_cgroup_path(&format!("/libpod-{ID}.scope/libpod-conmon-{ID}.scope")),
            Some((ID.into(), CgroupRuntime::Podman))
        );
    }

    #[test]
    fn runtimes_are_named_as_events_name_them() {
        use CgroupRuntime::*;
        for rt in [Podman, Docker, Containerd, CriO, Unknown] {
            assert_eq!(rt.runtime().as_ref().map(Runtime::as_str), rt.name());
        }
    }
}
