//! Who a container is in Kubernetes, from what the runtime stored with it,
//! so pod identity needs no API server.
//!
//! The kubelet creates every pod container through the CRI, handing the
//! runtime the pod's name, namespace and uid and the container's name; each
//! runtime keeps them with the container:
//!
//! - containerd's CRI plugin: OCI spec annotations `io.kubernetes.cri.*`
//!   (`sandbox-name`, `sandbox-namespace`, `sandbox-uid`, `container-name`,
//!   `container-type`, `image-name`; containerd `pkg/cri/annotations`);
//! - CRI-O: spec annotations `io.kubernetes.pod.*`, `io.kubernetes.container.name`
//!   and its own `io.kubernetes.cri-o.*` (`ContainerType`, `ImageName`);
//! - cri-dockerd: Docker labels, the CRI labels as they are plus
//!   `io.kubernetes.docker.type`;
//! - and every one of them: the kubelet's CRI labels `io.kubernetes.pod.name`,
//!   `io.kubernetes.pod.namespace`, `io.kubernetes.pod.uid`,
//!   `io.kubernetes.container.name` (kubelet `pkg/kubelet/types/labels.go`).
//!
//! A pod's sandbox ("pause") container belongs to the pod but is none of
//! its containers: it gets the pod and no container name.

use super::Annotations;

/// The pod a container belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    pub namespace: String,
    pub pod_name: String,
    pub pod_uid: Option<String>,
    /// The container's name in the pod spec; `None` for the sandbox.
    pub container_name: Option<String>,
}

/// The first non-empty value of `keys` in any of `maps`.
fn first<'a>(maps: &[&'a Annotations], keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .flat_map(|k| maps.iter().filter_map(move |m| m.get(*k)))
        .map(String::as_str)
        .find(|v| !v.is_empty())
}

/// The pod identity `maps` (labels and annotations, any order) carry, if
/// they name a pod: a namespace and a pod name, at least.
pub fn pod_identity(maps: &[&Annotations]) -> Option<PodIdentity> {
    let namespace = first(
        maps,
        &[
            "io.kubernetes.cri.sandbox-namespace",
            "io.kubernetes.pod.namespace",
        ],
    )?;
    let pod_name = first(
        maps,
        &["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"],
    )?;
    let pod_uid = first(
        maps,
        &["io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"],
    );
    let sandbox = first(
        maps,
        &[
            "io.kubernetes.cri.container-type",
            "io.kubernetes.cri-o.ContainerType",
            "io.kubernetes.docker.type",
        ],
    )
    .is_some_and(|t| t == "sandbox" || t == "podsandbox");
    let container_name = if sandbox {
        None
    } else {
        first(
            maps,
            &[
                "io.kubernetes.cri.container-name",
                "io.kubernetes.container.name",
            ],
        )
        // The kubelet names the sandbox "POD" in labels of older runtimes.
        .filter(|n| *n != "POD")
    };
    Some(PodIdentity {
        namespace: namespace.to_string(),
        pod_name: pod_name.to_string(),
        pod_uid: pod_uid.map(str::to_string),
        container_name: container_name.map(str::to_string),
    })
}

/// The image name the CRI recorded for the container, when the runtime's
/// own image field is less useful (an image id, or nothing).
pub fn image_name(maps: &[&Annotations]) -> Option<String> {
    first(
        maps,
        &[
            "io.kubernetes.cri.image-name",
            "io.kubernetes.cri-o.ImageName",
        ],
    )
    .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Annotations {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn containerd_cri_annotations() {
        let spec = map(&[
            ("io.kubernetes.cri.container-type", "container"),
            ("io.kubernetes.cri.container-name", "app"),
            ("io.kubernetes.cri.sandbox-name", "web-0"),
            ("io.kubernetes.cri.sandbox-namespace", "shop"),
            ("io.kubernetes.cri.sandbox-uid", "0d3e-11"),
            (
                "io.kubernetes.cri.image-name",
                "docker.io/library/nginx:1.27",
            ),
        ]);
        let labels = map(&[("io.kubernetes.pod.name", "web-0")]);
        assert_eq!(
            pod_identity(&[&labels, &spec]),
            Some(PodIdentity {
                namespace: "shop".into(),
                pod_name: "web-0".into(),
                pod_uid: Some("0d3e-11".into()),
                container_name: Some("app".into()),
            })
        );
        assert_eq!(
            image_name(&[&spec]).as_deref(),
            Some("docker.io/library/nginx:1.27")
        );
        let sandbox = map(&[
            ("io.kubernetes.cri.container-type", "sandbox"),
            ("io.kubernetes.cri.sandbox-name", "web-0"),
            ("io.kubernetes.cri.sandbox-namespace", "shop"),
        ]);
        let p = pod_identity(&[&sandbox]).unwrap();
        assert_eq!((p.pod_name.as_str(), p.container_name), ("web-0", None));
    }

    #[test]
    fn kubelet_labels_as_cri_o_and_cri_dockerd_keep_them() {
        let labels = map(&[
            ("io.kubernetes.pod.name", "api-5f7c9"),
            ("io.kubernetes.pod.namespace", "prod"),
            ("io.kubernetes.pod.uid", "a1b2"),
            ("io.kubernetes.container.name", "server"),
            ("io.kubernetes.docker.type", "container"),
        ]);
        let p = pod_identity(&[&labels]).unwrap();
        assert_eq!(
            (
                p.namespace.as_str(),
                p.pod_name.as_str(),
                p.pod_uid.as_deref(),
                p.container_name.as_deref()
            ),
            ("prod", "api-5f7c9", Some("a1b2"), Some("server"))
        );
        let pause = map(&[
            ("io.kubernetes.pod.name", "api-5f7c9"),
            ("io.kubernetes.pod.namespace", "prod"),
            ("io.kubernetes.docker.type", "podsandbox"),
            ("io.kubernetes.container.name", "POD"),
        ]);
        assert_eq!(pod_identity(&[&pause]).unwrap().container_name, None);
    }

    #[test]
    fn a_pod_needs_a_namespace_and_a_name() {
        assert_eq!(pod_identity(&[&map(&[])]), None);
        assert_eq!(
            pod_identity(&[&map(&[("io.kubernetes.pod.name", "x")])]),
            None
        );
        assert_eq!(
            pod_identity(&[&map(&[
                ("io.kubernetes.pod.name", ""),
                ("io.kubernetes.pod.namespace", "ns")
            ])]),
            None
        );
    }
}
