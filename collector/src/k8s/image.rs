//! Image references and digests, as Kubernetes and the container runtimes
//! spell them.
//!
//! The check that matters is "is this the approved content", and only a
//! digest answers it: a tag can be re-pushed, so an image pinned by tag alone
//! can change under the same manifest.

/// An image reference split into its parts (`registry/path:tag@digest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Everything before the tag and digest, e.g. `docker.io/library/nginx`.
    pub repository: String,
    pub tag: Option<String>,
    /// The text after `@`, unvalidated: see [`Pin`].
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(image: &str) -> ImageRef {
        let image = image.trim();
        let (name, digest) = match image.split_once('@') {
            Some((n, d)) => (n, Some(d.to_string())),
            None => (image, None),
        };
        // A colon after the last slash separates the tag; one before it
        // belongs to a registry port (`registry:5000/app`).
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (
                name[..last_slash + i].to_string(),
                Some(name[last_slash + i + 1..].to_string()),
            ),
            None => (name.to_string(), None),
        };
        ImageRef {
            repository,
            tag,
            digest,
        }
    }

    /// How the reference is pinned.
    pub fn pin(&self) -> Pin {
        match &self.digest {
            None => Pin::Tag,
            Some(d) if is_valid_digest(d) => Pin::Digest(d.clone()),
            Some(d) => Pin::Malformed(d.clone()),
        }
    }

    /// The repository as a registry resolves it: `nginx` and
    /// `docker.io/library/nginx` are the same image.
    pub fn normalized_repository(&self) -> String {
        normalize_repository(&self.repository)
    }
}

/// How an image reference is pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// A well-formed `sha256:` digest.
    Digest(String),
    /// No digest: the tag (or `latest`) decides, and tags move.
    Tag,
    /// Something after `@` that is not a digest a registry would accept.
    Malformed(String),
}

/// `sha256:` followed by exactly 64 lowercase hex digits: the form image
/// digests take in manifests and in the runtimes' `imageID`.
pub fn is_valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Docker Hub's implicit registry and `library/` namespace made explicit.
pub fn normalize_repository(repo: &str) -> String {
    let first = repo.split('/').next().unwrap_or("");
    // The first component is a registry when it looks like a host.
    let has_registry =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        let repo = repo
            .strip_prefix("index.docker.io/")
            .map_or_else(|| repo.to_string(), |rest| format!("docker.io/{rest}"));
        if let Some(rest) = repo.strip_prefix("docker.io/")
            && !rest.contains('/')
        {
            return format!("docker.io/library/{rest}");
        }
        repo
    } else if repo.contains('/') {
        format!("docker.io/{repo}")
    } else {
        format!("docker.io/library/{repo}")
    }
}

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
    fn splits_tag_digest_and_registry_port() {
        let r = ImageRef::parse(&format!("registry:5000/team/app:v1.0@{D}"));
        assert_eq!(r.repository, "registry:5000/team/app");
        assert_eq!(r.tag.as_deref(), Some("v1.0"));
        assert_eq!(r.pin(), Pin::Digest(D.into()));
        let r = ImageRef::parse("registry:5000/app");
        assert_eq!(r.repository, "registry:5000/app");
        assert_eq!(r.tag, None);
        assert_eq!(r.pin(), Pin::Tag);
    }

    #[test]
    fn the_seed_digest_is_malformed() {
        let r = ImageRef::parse("app:v1.0@sha256:abc123...");
        assert_eq!(r.pin(), Pin::Malformed("sha256:abc123...".into()));
        assert!(!is_valid_digest(
            &D.to_uppercase().replace("SHA256", "sha256")
        ));
        assert!(!is_valid_digest(&D[..70]));
        assert!(!is_valid_digest(&format!("{D}0")));
        assert!(!is_valid_digest(&D.replace("sha256", "sha512")));
        assert!(is_valid_digest(D));
    }

    #[test]
    fn docker_hub_names_normalize() {
        assert_eq!(normalize_repository("nginx"), "docker.io/library/nginx");
        assert_eq!(
            normalize_repository("bitnami/redis"),
            "docker.io/bitnami/redis"
        );
        assert_eq!(
            normalize_repository("docker.io/nginx"),
            "docker.io/library/nginx"
        );
        assert_eq!(
            normalize_repository("index.docker.io/library/nginx"),
            "docker.io/library/nginx"
        );
        assert_eq!(normalize_repository("ghcr.io/o/app"), "ghcr.io/o/app");
        assert_eq!(normalize_repository("localhost/app"), "localhost/app");
    }

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
