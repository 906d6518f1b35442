//! Image and container ids as the kubelet reports them in a pod's
//! `status.containerStatuses`. Image references themselves are parsed by
//! [`crate::container::image_ref`].

/// The repository digest in a container status's `imageID`.
///
/// Runtimes report `docker.io/library/nginx@sha256:…` (containerd, CRI-O) or
/// `docker-pullable://nginx@sha256:…` (dockershim). A bare `sha256:…` or
/// `docker://sha256:…` is the local image (config) id, which is a different
/// hash from the manifest digest a deployment pins, so it is not returned.
pub fn running_digest(image_id: &str) -> Option<&str> {
    let (_, digest) = image_id.rsplit_once('@')?;
    Some(digest)
}

/// A container id from `status.containerStatuses[].containerID` without the
/// runtime's scheme (`containerd://`, `cri-o://`, `docker://`), as the kernel
/// sensor reports it from the cgroup path.
pub fn strip_runtime_scheme(container_id: &str) -> &str {
    container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:9b2a6fb0c7c4aa1e4f8b5f3ad3e8b1e3a4d5f6c7b8a9e0d1c2b3a4f5e6d7c8b9";

    #[test]
    fn running_digest_only_from_repo_digests() {
        assert_eq!(
            running_digest(&format!("docker.io/library/nginx@{D}")),
            Some(D)
        );
        assert_eq!(
            running_digest(&format!("docker-pullable://nginx@{D}")),
            Some(D)
        );
        assert_eq!(running_digest(D), None);
        assert_eq!(running_digest(&format!("docker://{D}")), None);
        assert_eq!(strip_runtime_scheme("containerd://abc"), "abc");
        assert_eq!(strip_runtime_scheme("cri-o://abc"), "abc");
        assert_eq!(strip_runtime_scheme("abc"), "abc");
    }
}
