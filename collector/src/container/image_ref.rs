//! Image references, as users, manifests and the runtimes' state spell them:
//! `[registry/]repository[:tag][@digest]`, the distribution reference
//! grammar's `name [":" tag] ["@" digest]`.
//!
//! The parser splits at the grammar's delimiters and does not validate the
//! components, so what a runtime or a manifest wrote is reported as written
//! even when a registry would refuse it. Whether a digest is well formed is
//! asked separately ([`ImageRef::pin`]): only a digest says "this content",
//! a tag can be re-pushed.

/// An image reference split into its parts (`registry/path:tag@digest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Everything before the tag and digest, registry included, e.g.
    /// `docker.io/library/nginx`.
    pub repository: String,
    pub tag: Option<String>,
    /// The text after `@`, unvalidated: see [`Pin`].
    pub digest: Option<String>,
}

impl ImageRef {
    /// Splits `image`. Never fails: a string without a tag or digest is all
    /// repository.
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

    /// The registry the repository names, if it names one (`nginx` does
    /// not: the runtime's default registry applies).
    pub fn registry(&self) -> Option<&str> {
        split_registry(&self.repository).0
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
    /// Something after `@` that is not a digest a registry would accept,
    /// as written (it is what a report shows the user).
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

/// (registry, rest) of a repository: the first component is a registry
/// when more follow and it looks like a host (a `.`, a port, `localhost`).
fn split_registry(repo: &str) -> (Option<&str>, &str) {
    match repo.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (Some(first), rest)
        }
        _ => (None, repo),
    }
}

/// Docker Hub's implicit registry and `library/` namespace made explicit.
pub fn normalize_repository(repo: &str) -> String {
    match split_registry(repo) {
        (Some(_), _) => {
            let repo = repo
                .strip_prefix("index.docker.io/")
                .map_or_else(|| repo.to_string(), |rest| format!("docker.io/{rest}"));
            if let Some(rest) = repo.strip_prefix("docker.io/")
                && !rest.contains('/')
            {
                return format!("docker.io/library/{rest}");
            }
            repo
        }
        (None, _) if repo.contains('/') => format!("docker.io/{repo}"),
        (None, _) => format!("docker.io/library/{repo}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:9b2a6fb0c7c4aa1e4f8b5f3ad3e8b1e3a4d5f6c7b8a9e0d1c2b3a4f5e6d7c8b9";

    fn repo_tag(image: &str) -> (String, Option<String>) {
        let r = ImageRef::parse(image);
        (r.repository, r.tag)
    }

    /// Every case the three old splitters (podman enrichment, `diff`,
    /// Kubernetes) were tested with.
    #[test]
    fn image_names_split_at_the_tag_not_the_port() {
        for (image, repo, tag) in [
            ("localhost/dw:1", "localhost/dw", Some("1")),
            ("registry:5000/team/app", "registry:5000/team/app", None),
            ("registry:5000/app:v2", "registry:5000/app", Some("v2")),
            (
                "docker.io/library/alpine@sha256:abc",
                "docker.io/library/alpine",
                None,
            ),
            ("localhost:5000/app:1.2", "localhost:5000/app", Some("1.2")),
            ("localhost:5000/app", "localhost:5000/app", None),
            ("registry:5000/app", "registry:5000/app", None),
        ] {
            assert_eq!(
                repo_tag(image),
                (repo.to_string(), tag.map(String::from)),
                "{image}"
            );
        }
    }

    #[test]
    fn splits_tag_digest_and_registry_port() {
        let r = ImageRef::parse(&format!("registry:5000/team/app:v1.0@{D}"));
        assert_eq!(r.repository, "registry:5000/team/app");
        assert_eq!(r.tag.as_deref(), Some("v1.0"));
        assert_eq!(r.registry(), Some("registry:5000"));
        assert_eq!(r.pin(), Pin::Digest(D.into()));
        let r = ImageRef::parse("registry:5000/app");
        assert_eq!(r.repository, "registry:5000/app");
        assert_eq!(r.tag, None);
        assert_eq!(r.pin(), Pin::Tag);
        assert_eq!(ImageRef::parse("bitnami/redis:7").registry(), None);
        assert_eq!(ImageRef::parse("nginx").registry(), None);
        assert_eq!(
            ImageRef::parse("localhost/app").registry(),
            Some("localhost")
        );
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
}
