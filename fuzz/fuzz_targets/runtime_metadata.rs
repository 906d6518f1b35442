//! What container runtimes answer (Docker, CRI-O, containerd: JSON and
//! protobuf) and what podman keeps on disk, plus the cgroup paths and image
//! references derived from them. A runtime is not an attacker, but a
//! container's own labels and annotations flow through all of it.
#![no_main]

use driftwatch::container::{containerd, crio, docker, podman};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    docker::fuzz_documents(data);
    crio::fuzz_inspect(data);
    containerd::fuzz_documents(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = driftwatch::container::cgroup::container_in_cgroup_path(text);
        let r = driftwatch::container::image_ref::ImageRef::parse(text);
        let _ = r.registry();
        let _ = driftwatch::container::image_ref::normalize_repository(text);
        let _ = driftwatch::container::image_ref::is_valid_digest(text);
    }
    podman_store(data);
});

/// podman's state files, each given the input: the store joins containers
/// to images and walks layer parents (a loop in them must end).
fn podman_store(data: &[u8]) {
    let Ok(root) = tempfile::Builder::new().tempdir_in("/dev/shm") else {
        return;
    };
    for (dir, file) in [
        ("overlay-containers", "containers.json"),
        ("overlay-containers", "volatile-containers.json"),
        ("overlay-images", "images.json"),
        ("overlay-layers", "layers.json"),
    ] {
        let d = root.path().join(dir);
        if std::fs::create_dir_all(&d).is_err() || std::fs::write(d.join(file), data).is_err() {
            return;
        }
    }
    let _ = podman::PodmanStore::new(root.path()).containers();
}
