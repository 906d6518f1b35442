//! Builds the eBPF programs (collector-ebpf, with aya-build and the nightly
//! toolchain) and every WASM guest in the workspace (the built-in plugins, the
//! example and the test plugins) and turns each core module into a component
//! with wit-component, so a fresh clone needs no manual step.
//!
//! Guests are crates with `[package.metadata.driftwatch] guest = true`. They
//! build with the workspace's `guest` profile (fat LTO, one codegen unit) in
//! their own target directory (`target/guests`) so the nested cargo
//! does not wait on the outer one's lock. Components land in
//! `target/guests/components/` for users and tests, and the built-ins are
//! embedded in the binary from `OUT_DIR`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

const GUEST_DIRS: &[&str] = &["plugins", "examples", "tests/plugins"];
const TARGET: &str = "wasm32-unknown-unknown";
/// The cargo profile guests build with (workspace Cargo.toml).
const PROFILE: &str = "guest";

fn main() {
    if let Err(e) = build_ebpf() {
        eprintln!("error building the eBPF programs: {e}");
        std::process::exit(1);
    }
    if let Err(e) = run() {
        eprintln!("error building WASM guests: {e}");
        std::process::exit(1);
    }
}

/// collector-ebpf is outside the workspace (it targets bpfel-unknown-none
/// with nightly and build-std). aya-build runs cargo in the current
/// directory, so run it from the crate's own directory.
fn build_ebpf() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let root = manifest_dir
        .parent()
        .ok_or("collector has no parent dir")?
        .to_path_buf();
    let ebpf_dir = root.join("collector-ebpf");
    let common_dir = root.join("collector-common");
    println!("cargo:rerun-if-changed={}", common_dir.display());
    let dir = ebpf_dir
        .to_str()
        .ok_or("the collector-ebpf path is not UTF-8")?
        .to_string();
    env::set_current_dir(&ebpf_dir).map_err(|e| format!("{}: {e}", ebpf_dir.display()))?;
    let package = aya_build::Package {
        name: "driftwatch-ebpf",
        root_dir: &dir,
        ..Default::default()
    };
    let built = aya_build::build_ebpf([package], aya_build::Toolchain::default()).map_err(|e| {
        format!(
            "{e:#}; the eBPF build needs the nightly toolchain with rust-src and bpf-linker: \
             run scripts/setup.sh"
        )
    });
    env::set_current_dir(&manifest_dir).map_err(|e| e.to_string())?;
    built
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let root = manifest_dir
        .parent()
        .ok_or("collector has no parent dir")?
        .to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);

    println!("cargo:rerun-if-changed={}", root.join("sdk").display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    let mut guests = Vec::new();
    for dir in GUEST_DIRS {
        let dir = root.join(dir);
        println!("cargo:rerun-if-changed={}", dir.display());
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Some(name) = guest_name(&entry.path().join("Cargo.toml"))? {
                guests.push(name);
            }
        }
    }
    guests.sort();

    let target_dir = root.join("target").join("guests");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--profile",
            PROFILE,
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&target_dir);
    for g in &guests {
        cmd.args(["-p", g]);
    }
    // The outer build's settings are for the host target (and clippy's
    // wrapper would lint the guests a second time).
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`cargo build --target {TARGET}` of the guests failed ({status}); is the target installed? \
             run scripts/setup.sh or `rustup target add {TARGET}`"
        ));
    }

    let components = target_dir.join("components");
    let embedded = out_dir.join("guests");
    fs::create_dir_all(&components).map_err(|e| e.to_string())?;
    fs::create_dir_all(&embedded).map_err(|e| e.to_string())?;
    for g in &guests {
        let file = format!("{}.wasm", g.replace('-', "_"));
        let module_path = target_dir.join(TARGET).join(PROFILE).join(&file);
        let module =
            fs::read(&module_path).map_err(|e| format!("{}: {e}", module_path.display()))?;
        let component = wit_component::ComponentEncoder::default()
            .module(&module)
            .map_err(|e| format!("{g}: {e:#}"))?
            .validate(true)
            .encode()
            .map_err(|e| format!("{g}: encoding component: {e:#}"))?;
        write_if_changed(&components.join(&file), &component)?;
        write_if_changed(&embedded.join(&file), &component)?;
    }
    println!(
        "cargo:rustc-env=DRIFTWATCH_GUEST_DIR={}",
        components.display()
    );
    Ok(())
}

/// The package name of a guest crate, or None for other crates.
fn guest_name(manifest: &Path) -> Result<Option<String>, String> {
    let Ok(text) = fs::read_to_string(manifest) else {
        return Ok(None);
    };
    let doc: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let pkg = doc.get("package").and_then(|p| p.as_table());
    let is_guest = pkg
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("driftwatch"))
        .and_then(|d| d.get("guest"))
        .and_then(|g| g.as_bool())
        .unwrap_or(false);
    Ok(is_guest
        .then(|| {
            pkg.and_then(|p| p.get("name"))
                .and_then(|n| n.as_str())
                .map(String::from)
        })
        .flatten())
}

// Rewriting identical bytes would bump mtimes and rebuild dependents.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}
