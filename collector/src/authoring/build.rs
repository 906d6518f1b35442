//! `driftwatch plugin build`: a Rust plugin crate or a Python `app.py`
//! folder into a component the daemon loads.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::toolchain::{self, RUST_TARGET, ToolchainError};
use super::{AuthoringError, io_error};

/// What a plugin folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Rust,
    Python,
}

impl Language {
    pub fn of(dir: &Path) -> Result<Language, AuthoringError> {
        if dir.join("Cargo.toml").is_file() {
            Ok(Language::Rust)
        } else if dir.join("app.py").is_file() {
            Ok(Language::Python)
        } else {
            Err(AuthoringError::Usage(format!(
                "{} has neither a Cargo.toml (a Rust plugin) nor an app.py (a Python plugin); \
                 `driftwatch plugin new NAME` creates a Rust one",
                dir.display()
            )))
        }
    }
}

/// Builds the plugin in `dir` into a component at `out` (default: the
/// folder's name, dashes as underscores, `.wasm`, inside `dir`). `sdk` is
/// the driftwatch SDK (for Python: its `wit/` and `python/`). Returns
/// where the component is.
pub fn build(
    dir: &Path,
    out: Option<&Path>,
    sdk: Option<&Path>,
) -> Result<PathBuf, AuthoringError> {
    match Language::of(dir)? {
        Language::Rust => build_rust(dir, out),
        Language::Python => build_python(dir, out, sdk),
    }
}

/// The `cargo metadata` facts a build needs.
struct CrateInfo {
    target_dir: PathBuf,
    /// The cdylib's file stem (the lib name, dashes as underscores).
    lib: String,
}

fn crate_info(cargo: &Path, manifest: &Path) -> Result<CrateInfo, AuthoringError> {
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .map_err(|source| ToolchainError::Spawn {
            tool: cargo.display().to_string(),
            source,
        })?;
    let bad = |message: String| AuthoringError::Manifest {
        path: manifest.to_path_buf(),
        message,
    };
    if !out.status.success() {
        return Err(bad(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| bad(format!("cargo metadata printed no JSON: {e}")))?;
    let target_dir = meta["target_directory"]
        .as_str()
        .ok_or_else(|| bad("cargo metadata names no target directory".into()))?;
    let wanted = manifest.canonicalize().map_err(io_error(manifest))?;
    let package = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["manifest_path"]
                .as_str()
                .and_then(|m| Path::new(m).canonicalize().ok())
                .is_some_and(|m| m == wanted)
        })
        .ok_or_else(|| bad("cargo metadata does not list this package".into()))?;
    let lib = package["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| {
            t["crate_types"]
                .as_array()
                .is_some_and(|c| c.iter().any(|k| k == "cdylib"))
        })
        .and_then(|t| t["name"].as_str())
        .ok_or_else(|| {
            bad("has no cdylib target: add `[lib] crate-type = [\"cdylib\", \"rlib\"]`".into())
        })?;
    Ok(CrateInfo {
        target_dir: PathBuf::from(target_dir),
        lib: lib.replace('-', "_"),
    })
}

fn build_rust(dir: &Path, out: Option<&Path>) -> Result<PathBuf, AuthoringError> {
    if !toolchain::target_installed() {
        return Err(AuthoringError::Usage(format!(
            "the Rust target {RUST_TARGET} is not installed: run `rustup target add {RUST_TARGET}`"
        )));
    }
    let cargo = PathBuf::from(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    let manifest = dir.join("Cargo.toml");
    let info = crate_info(&cargo, &manifest)?;
    let mut cmd = toolchain::cargo_guest_build(&cargo, "release", &info.target_dir);
    cmd.arg("--manifest-path").arg(&manifest);
    toolchain::run_cargo(cmd)?;
    let module = info
        .target_dir
        .join(RUST_TARGET)
        .join("release")
        .join(format!("{}.wasm", info.lib));
    let component = toolchain::componentize_module(&module)?;
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join(format!("{}.wasm", info.lib)));
    write_atomically(&out, &component)?;
    Ok(out)
}

fn build_python(
    dir: &Path,
    out: Option<&Path>,
    sdk: Option<&Path>,
) -> Result<PathBuf, AuthoringError> {
    let tool = toolchain::find_componentize_py().ok_or(ToolchainError::NoComponentizePy)?;
    let sdk = match sdk {
        Some(s) => s.to_path_buf(),
        None => super::scaffold::find_sdk().ok_or_else(|| {
            AuthoringError::Usage(
                "cannot find the driftwatch SDK (its wit/ and python/) this binary was built \
                 from; pass --sdk PATH to a driftwatch checkout's sdk/ directory"
                    .into(),
            )
        })?,
    };
    let name = dir
        .canonicalize()
        .map_err(io_error(dir))?
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.replace('-', "_"))
        .unwrap_or_else(|| "plugin".into());
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join(format!("{name}.wasm")));
    let tmp = temp_beside(&out);
    toolchain::componentize_python(&tool, dir, &sdk.join("wit"), &sdk.join("python"), &tmp)?;
    std::fs::rename(&tmp, &out).map_err(io_error(&out))?;
    Ok(out)
}

fn temp_beside(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// A daemon watching the file for hot reload must never load half of it.
fn write_atomically(out: &Path, bytes: &[u8]) -> Result<(), AuthoringError> {
    let tmp = temp_beside(out);
    std::fs::write(&tmp, bytes).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, out).map_err(io_error(out))
}
