//! Which container a cgroup belongs to, from the cgroup's path.
//!
//! Every runtime names a container's cgroup after its id, each in its own
//! way:
//!
//! | runtime | cgroupfs driver | systemd driver |
//! |---|---|---|
//! | podman | `/libpod_parent/libpod-<id>` | `/machine.slice/libpod-<id>.scope` (and its `/container` child) |
//! | docker | `/docker/<id>` | `/system.slice/docker-<id>.scope` |
//! | containerd (CRI) | `/kubepods/<qos>/pod<uid>/<id>` | `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice/cri-containerd-<id>.scope`, or `…:cri-containerd:<id>` |
//! | containerd (plain, `ctr`, nerdctl) | `/<namespace>/<id>` | |
//! | CRI-O | `/kubepods/<qos>/pod<uid>/crio-<id>` | `…/crio-<id>.scope` |
//!
//! The same names appear in cgroup v1 (each controller's hierarchy) and v2.
//! Ids are 64 hex digits, except containerd's own (`ctr run IMG myapp`):
//! those are recognized only as the second component below one of
//! [`CONTAINERD_NAMESPACES`]. `libpod-conmon-<id>` is podman's monitor, not
//! the container.
//!
//! A process that can write its cgroup directory (a privileged container,
//! podman `--systemd`, Docker-in-Docker) can make child cgroups with any
//! name, including another container's. So a path is read from the top,
//! and the *outermost* component that names a container wins: a child
//! named `libpod-<victim>` below the attacker's own cgroup is still the
//! attacker's, and a child with any other name is still in the container.

use std::path::Path;

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

/// containerd namespaces whose containers sit at `/<namespace>/<id>` when
/// no cgroup parent is given: Kubernetes' (`k8s.io`), Docker's (`moby`)
/// and the default one `ctr` and nerdctl use.
pub const CONTAINERD_NAMESPACES: [&str; 3] = ["k8s.io", "moby", "default"];

/// A container id as most runtimes make it: exactly 64 lowercase hex digits.
fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A containerd identifier (containerd's `identifiers.Validate`): 1 to 76
/// characters, alphanumeric runs joined by single `.`, `_` or `-`.
pub fn is_containerd_id(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 76
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.windows(2)
            .all(|w| w[0].is_ascii_alphanumeric() || w[1].is_ascii_alphanumeric())
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// The container a cgroup path (v1 or v2, any controller) belongs to, as
/// (id, runtime), or None for a host cgroup. The outermost component that
/// names a container wins (see the module doc). Leading `..` components,
/// which `/proc/<pid>/cgroup` shows for cgroups outside the reader's cgroup
/// namespace, are skipped.
pub fn container_in_cgroup_path(path: &str) -> Option<(String, CgroupRuntime)> {
    let comps: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .skip_while(|c| *c == "..")
        .collect();
    if let [ns, id] = comps.as_slice()
        && CONTAINERD_NAMESPACES.contains(ns)
        && is_containerd_id(id)
    {
        return Some((id.to_string(), CgroupRuntime::Containerd));
    }
    let mut parent = None;
    for comp in comps {
        if let Some(found) = named(comp, parent) {
            return Some(found);
        }
        parent = Some(comp);
    }
    None
}

/// One cgroup name read by the runtimes' schemes: a runtime's prefix, a
/// bare id, or failing those any `<prefix>-<id>` / `<prefix>:<id>` name (a
/// runtime not listed above). A name with a runtime's prefix but no id
/// after it is not a container, nor is conmon's.
fn named(c: &str, parent: Option<&str>) -> Option<(String, CgroupRuntime)> {
    if c.contains("conmon") {
        return None;
    }
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
    let tail = c.rsplit(['-', ':']).next().unwrap_or(c);
    is_id(tail).then(|| (tail.to_string(), CgroupRuntime::Unknown))
}

/// What a task's cgroup says about its container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    pub container: Option<(String, CgroupRuntime)>,
    /// The whole path was read, so the answer holds for every task of the
    /// cgroup. False when only the two names the kernel sent could be
    /// read (the task was gone): the answer is the best those allow, and
    /// should not be remembered.
    pub complete: bool,
}

/// The container of task `pid`, whose cgroup directory the kernel named
/// `leaf` below `parent`. The whole path comes from
/// `<proc_root>/<pid>/cgroup`, from the line that ends in exactly those two
/// names (the unified hierarchy's first: the kernel reads that one unless
/// the task sits at its root). When no line does (the task exited, or
/// moved since the record), only the two names are read.
pub fn identify(proc_root: &Path, pid: u32, parent: &str, leaf: &str) -> Identified {
    if leaf.is_empty() {
        // The root cgroup: the host's.
        return Identified {
            container: None,
            complete: true,
        };
    }
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup"));
    let whole = text
        .as_deref()
        .ok()
        .and_then(|t| line_ending_in(t, parent, leaf));
    match whole {
        Some(path) => Identified {
            container: container_in_cgroup_path(path),
            complete: true,
        },
        None => Identified {
            container: container_in_cgroup_path(&format!("/{parent}/{leaf}")),
            complete: false,
        },
    }
}

/// The path of the `/proc/<pid>/cgroup` line (`hierarchy:controllers:path`)
/// whose last two components are `parent` and `leaf`, the unified
/// hierarchy's (`0::`) preferred.
fn line_ending_in<'t>(text: &'t str, parent: &str, leaf: &str) -> Option<&'t str> {
    let ends_so = |path: &str| {
        let mut it = path.rsplit('/');
        it.next() == Some(leaf) && it.next() == Some(parent)
    };
    let paths = || text.lines().filter_map(|l| l.splitn(3, ':').nth(2));
    let unified = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .filter(|p| ends_so(p));
    unified.or_else(|| paths().find(|p| ends_so(p)))
}

/// The container of process `pid` by its `/proc` cgroup file: the first
/// line naming one, the unified hierarchy's first. None when it names
/// none, or the process is gone.
pub fn container_of_pid(proc_root: &Path, pid: u32) -> Option<(String, CgroupRuntime)> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    let unified = text.lines().find_map(|l| l.strip_prefix("0::"));
    unified.and_then(container_in_cgroup_path).or_else(|| {
        text.lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .find_map(container_in_cgroup_path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3ab290c732230f85615f8c1a30667d2ab7059f721bf2bd086b6e4f5baa4a46c9";
    const OTHER: &str = "c811d759cd84d2b82f41bca4039440b6c48b9a7e33c361ed30c4b94006d3eaae";

    /// Every layout in the module doc, v1 and v2 alike, with its runtime.
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
            // kubepods with the cgroupfs driver (containerd, cri-dockerd): the id alone.
            (format!("/kubepods/besteffort/podabc/{ID}"), Unknown),
            (format!("/kubepods/pod0d3e-11/{ID}"), Unknown),
            // containerd's plain namespaces, 64-hex ids or its own.
            (format!("/k8s.io/{ID}"), Containerd),
            (format!("/moby/{ID}"), Containerd),
            (format!("/default/{ID}"), Containerd),
            // a trailing slash does not matter.
            (format!("/libpod_parent/libpod-{ID}/"), Podman),
            // seen from another cgroup namespace.
            (format!("/../../docker/{ID}"), Docker),
        ]
    }

    /// Host cgroups, and names that only look like a container's.
    fn hosts() -> Vec<String> {
        vec![
            "/".into(),
            "".into(),
            "/user.slice/user-0.slice/session-1.scope".into(),
            "/system.slice/containerd.service".into(),
            "/system.slice/docker.service".into(),
            "/libpod_parent/conmon".into(),
            format!("/libpod_parent/libpod-conmon-{ID}"),
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            // 63 and 65 hex digits, upper case.
            format!("/docker/{}", &ID[1..]),
            format!("/docker/{ID}0"),
            format!("/docker/{}", ID.to_uppercase()),
            "/process_api/855ac3144b488bcbe145a2ca54eb3542".into(),
            format!("/libpod-{}.scope", &ID[..12]),
            // Not one of the containerd namespaces, or not at the top.
            "/system.slice/app.service".into(),
            "/kubepods/besteffort".into(),
            "/user.slice/default".into(),
            "/x/default/app".into(),
            "/default/app/child".into(),
            "/default/-app".into(),
        ]
    }

    #[test]
    fn every_layout_names_its_container() {
        for (p, rt) in containers() {
            assert_eq!(container_in_cgroup_path(&p), Some((ID.into(), rt)), "{p}");
        }
        for p in hosts() {
            assert_eq!(container_in_cgroup_path(&p), None, "{p}");
        }
    }

    #[test]
    fn containerd_ids_of_its_own() {
        for (p, id) in [
            ("/default/dw-plain", "dw-plain"),
            ("/k8s.io/web.1_a", "web.1_a"),
            ("/moby/x", "x"),
        ] {
            assert_eq!(
                container_in_cgroup_path(p),
                Some((id.into(), CgroupRuntime::Containerd)),
                "{p}"
            );
        }
        for bad in ["", "-a", "a-", "a..b", "a b", &"a".repeat(77)] {
            assert!(!is_containerd_id(bad), "{bad:?}");
        }
        assert!(is_containerd_id(&"a".repeat(76)));
    }

    /// Review M1: a container that can write its cgroup directory cannot
    /// leave its container, nor pass for another, by naming a child.
    #[test]
    fn the_outermost_container_wins() {
        for p in [
            format!("/libpod_parent/libpod-{ID}/libpod-{OTHER}"),
            format!("/libpod_parent/libpod-{ID}/x/y/docker-{OTHER}.scope"),
            format!("/docker/{ID}/{OTHER}"),
            format!("/default/{ID}/x"),
            format!("/system.slice/docker-{ID}.scope/anything"),
            format!("/machine.slice/libpod-{ID}.scope/payload/child"),
            format!("/libpod-{ID}.scope/libpod-conmon-{OTHER}.scope"),
        ] {
            assert_eq!(
                container_in_cgroup_path(&p).map(|(id, _)| id),
                Some(ID.into()),
                "{p}"
            );
        }
    }

    #[test]
    fn any_prefix_before_an_id_is_a_container() {
        for p in [
            format!("/system.slice/buildah-{ID}.scope"),
            format!("/ci/job:{ID}"),
        ] {
            assert_eq!(
                container_in_cgroup_path(&p),
                Some((ID.into(), CgroupRuntime::Unknown)),
                "{p}"
            );
        }
    }

    #[test]
    fn runtimes_are_named_as_events_name_them() {
        use CgroupRuntime::*;
        for rt in [Podman, Docker, Containerd, CriO, Unknown] {
            assert_eq!(rt.runtime().as_ref().map(Runtime::as_str), rt.name());
        }
    }

    fn proc_with(pid: u32, text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(pid.to_string())).unwrap();
        std::fs::write(dir.path().join(pid.to_string()).join("cgroup"), text).unwrap();
        dir
    }

    #[test]
    fn the_whole_path_is_read_from_proc() {
        // A child two levels below a podman container, named like another
        // container: the kernel's two names alone would be fooled.
        let leaf = format!("libpod-{OTHER}");
        let cg = format!(
            "4:memory:/\n0::/libpod_parent/libpod-{ID}/nested/{leaf}\n1:name=systemd:/x/nested/{leaf}\n"
        );
        let proc = proc_with(7, &cg);
        let got = identify(proc.path(), 7, "nested", &leaf);
        assert_eq!(
            got,
            Identified {
                container: Some((ID.into(), CgroupRuntime::Podman)),
                complete: true
            }
        );
        // The process is gone: the two names, not to be remembered.
        let got = identify(proc.path(), 8, "nested", &leaf);
        assert_eq!(
            got,
            Identified {
                container: Some((OTHER.into(), CgroupRuntime::Podman)),
                complete: false
            }
        );
        // A line that does not end in the kernel's names is another cgroup
        // (the task moved, or the pid was reused): not used.
        let got = identify(proc.path(), 7, "elsewhere", &leaf);
        assert!(!got.complete);
        // Hybrid hosts: the v1 memory hierarchy's line when the task sits
        // at the unified root.
        let proc = proc_with(9, &format!("4:memory:/docker/{ID}\n0::/\n"));
        assert_eq!(
            identify(proc.path(), 9, "docker", ID),
            Identified {
                container: Some((ID.into(), CgroupRuntime::Docker)),
                complete: true
            }
        );
        // The root cgroup names nothing.
        assert_eq!(identify(proc.path(), 9, "", "").container, None);
    }

    #[test]
    fn a_pid_is_looked_up_in_every_hierarchy() {
        let proc = proc_with(5, &format!("4:memory:/libpod_parent/libpod-{ID}\n0::/\n"));
        assert_eq!(
            container_of_pid(proc.path(), 5),
            Some((ID.into(), CgroupRuntime::Podman))
        );
        let proc = proc_with(6, "4:memory:/\n0::/user.slice\n");
        assert_eq!(container_of_pid(proc.path(), 6), None);
        assert_eq!(container_of_pid(proc.path(), 99), None);
    }
}
