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
//!
//! Python plugins (a folder under `plugins/` with an `app.py`) are built
//! with componentize-py into the same folder when it is installed; under
//! `CI=true` its absence is an error, elsewhere a warning. The cargo
//! invocation and both ways of making a component are shared with
//! `driftwatch plugin build` (src/authoring/toolchain.rs).

#[path = "src/authoring/toolchain.rs"]
mod toolchain;

use std::path::{Path, PathBuf};
use std::{env, fs};

const GUEST_DIRS: &[&str] = &["plugins", "examples", "tests/plugins"];
const TARGET: &str = toolchain::RUST_TARGET;
/// The cargo profile guests build with (workspace Cargo.toml).
const PROFILE: &str = "guest";

fn main() {
    if let Err(e) = build_ebpf() {
        eprintln!("error building the eBPF programs: {e}");
        std::process::exit(1);
    }
    if let Err(e) = build_guests() {
        eprintln!("error building WASM guests: {e}");
        std::process::exit(1);
    }
    if let Err(e) = build_python_guests() {
        eprintln!("error building Python plugins: {e}");
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

fn build_guests() -> Result<(), String> {
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
    let mut cmd = toolchain::cargo_guest_build(Path::new(&cargo), PROFILE, &target_dir);
    cmd.current_dir(&root);
    for g in &guests {
        cmd.args(["-p", g]);
    }
    toolchain::run_cargo(cmd).map_err(|e| e.to_string())?;

    let components = target_dir.join("components");
    let embedded = out_dir.join("guests");
    fs::create_dir_all(&components).map_err(|e| e.to_string())?;
    fs::create_dir_all(&embedded).map_err(|e| e.to_string())?;
    for g in &guests {
        let file = format!("{}.wasm", g.replace('-', "_"));
        let module_path = target_dir.join(TARGET).join(PROFILE).join(&file);
        let component = toolchain::componentize_module(&module_path).map_err(|e| e.to_string())?;
        write_if_changed(&components.join(&file), &component)?;
        write_if_changed(&embedded.join(&file), &component)?;
    }
    println!(
        "cargo:rustc-env=DRIFTWATCH_GUEST_DIR={}",
        components.display()
    );
    Ok(())
}

/// Builds each Python plugin under `plugins/` (a folder with `app.py`)
/// into `target/guests/components/NAME.wasm` (dashes as underscores).
fn build_python_guests() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let root = manifest_dir
        .parent()
        .ok_or("collector has no parent dir")?
        .to_path_buf();
    let (wit, python_sdk) = (root.join("sdk/wit"), root.join("sdk/python"));
    println!("cargo:rerun-if-changed={}", python_sdk.display());
    println!("cargo:rerun-if-env-changed=CI");
    let mut apps: Vec<PathBuf> = fs::read_dir(root.join("plugins"))
        .map_err(|e| format!("plugins/: {e}"))?
        .flatten()
        .map(|e| e.path())
        .filter(|d| d.join("app.py").is_file())
        .collect();
    apps.sort();
    if apps.is_empty() {
        return Ok(());
    }
    let Some(tool) = toolchain::find_componentize_py() else {
        let err = toolchain::ToolchainError::NoComponentizePy;
        if env::var("CI").is_ok_and(|v| v == "true") {
            return Err(err.to_string());
        }
        println!("cargo:warning=Python plugins not built: {err}");
        return Ok(());
    };
    let components = root.join("target").join("guests").join("components");
    fs::create_dir_all(&components).map_err(|e| e.to_string())?;
    for app in apps {
        println!("cargo:rerun-if-changed={}", app.display());
        let name = app
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| format!("{}: not a UTF-8 name", app.display()))?
            .replace('-', "_");
        let out = components.join(format!("{name}.wasm"));
        // componentize-py writes where it is told; build beside and
        // rename, so a reader never sees half a component.
        let tmp = components.join(format!(".{name}.wasm.tmp"));
        toolchain::componentize_python(&tool, &app, &wit, &python_sdk, &tmp)
            .map_err(|e| e.to_string())?;
        let bytes = fs::read(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        write_if_changed(&out, &bytes)?;
        let _ = fs::remove_file(&tmp);
    }
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
