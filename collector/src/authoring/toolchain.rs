//! Turning guest sources into plugin components: the cargo invocation for
//! Rust guests, wit-component for their core modules, and componentize-py
//! for Python ones.
//!
//! This file is compiled twice: into the library (for `driftwatch plugin
//! build`) and, through `#[path]`, into collector/build.rs (for the
//! workspace's own guests), so both build plugins the same way. It may
//! therefore use only std and wit-component.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target Rust guests compile to: core modules with no WASI.
pub const RUST_TARGET: &str = "wasm32-unknown-unknown";
/// The componentize-py release the project builds and tests with
/// (scripts/setup.sh installs it).
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
/// The WIT world every plugin implements (sdk/wit/plugin.wit).
pub const WORLD: &str = "plugin";

/// Why a guest could not be built.
#[derive(Debug)]
pub enum ToolchainError {
    /// A tool could not be run at all.
    Spawn {
        tool: String,
        source: std::io::Error,
    },
    /// A tool ran and failed; `hint` says how to fix the usual cause.
    Failed {
        what: String,
        status: std::process::ExitStatus,
        hint: String,
    },
    /// componentize-py is not installed where we look.
    NoComponentizePy,
    /// wit-component refused the core module.
    Componentize { module: PathBuf, message: String },
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl fmt::Display for ToolchainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolchainError::Spawn { tool, source } => write!(f, "cannot run {tool}: {source}"),
            ToolchainError::Failed { what, status, hint } => {
                write!(f, "{what} failed ({status}){hint}")
            }
            ToolchainError::NoComponentizePy => write!(
                f,
                "componentize-py is not installed (looked on PATH, in $DRIFTWATCH_VENV/bin and \
                 {DEFAULT_VENV}/bin): run scripts/setup.sh, or \
                 `pip install componentize-py=={COMPONENTIZE_PY_VERSION}`"
            ),
            ToolchainError::Componentize { module, message } => write!(
                f,
                "{}: not a core module that wit-component can wrap into a component \
                 (was it built with the driftwatch SDK's `guest` feature and \
                 `export_plugin!`?): {message}",
                module.display()
            ),
            ToolchainError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for ToolchainError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ToolchainError::Spawn { source, .. } | ToolchainError::Io { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

/// Where scripts/setup.sh puts the project's Python tools.
pub const DEFAULT_VENV: &str = "/opt/driftwatch-venv";

/// `cargo build` of Rust guests for [`RUST_TARGET`] with `profile`, in
/// `target_dir`. The caller adds `-p` or `--manifest-path`.
///
/// Settings meant for the host build are removed: a guest built from a
/// build script would otherwise inherit the host's flags (and clippy's
/// wrapper would lint it a second time).
pub fn cargo_guest_build(cargo: &Path, profile: &str, target_dir: &Path) -> Command {
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--profile",
        profile,
        "--target",
        RUST_TARGET,
        "--target-dir",
    ])
    .arg(target_dir);
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
    cmd
}

/// Runs a guest `cargo build` and explains the common failure.
pub fn run_cargo(mut cmd: Command) -> Result<(), ToolchainError> {
    let status = cmd.status().map_err(|source| ToolchainError::Spawn {
        tool: "cargo".into(),
        source,
    })?;
    if status.success() {
        return Ok(());
    }
    let missing_target = !target_installed();
    Err(ToolchainError::Failed {
        what: format!("`cargo build --target {RUST_TARGET}`"),
        status,
        hint: if missing_target {
            format!(
                "; the Rust target {RUST_TARGET} is not installed: run \
                 `rustup target add {RUST_TARGET}` (or scripts/setup.sh)"
            )
        } else {
            "; see cargo's messages above".into()
        },
    })
}

/// Whether rustup reports the guest target installed (true when rustup is
/// absent: a toolchain without it may still have the target).
pub fn target_installed() -> bool {
    match Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == RUST_TARGET),
        _ => true,
    }
}

/// Wraps a core module built against the SDK into a component.
pub fn componentize_module(module_path: &Path) -> Result<Vec<u8>, ToolchainError> {
    let module = std::fs::read(module_path).map_err(|source| ToolchainError::Io {
        path: module_path.to_path_buf(),
        source,
    })?;
    let bad = |e: &dyn fmt::Display| ToolchainError::Componentize {
        module: module_path.to_path_buf(),
        message: format!("{e:#}"),
    };
    wit_component::ComponentEncoder::default()
        .module(&module)
        .map_err(|e| bad(&e))?
        .validate(true)
        .encode()
        .map_err(|e| bad(&e))
}

/// The componentize-py executable: on PATH, else in the project's venv.
pub fn find_componentize_py() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(v) = std::env::var_os("DRIFTWATCH_VENV") {
        dirs.push(PathBuf::from(v).join("bin"));
    }
    dirs.push(Path::new(DEFAULT_VENV).join("bin"));
    dirs.into_iter()
        .map(|d| d.join("componentize-py"))
        .find(|p| p.is_file())
}

/// Builds the Python plugin in `dir` (its module is `app.py`) into the
/// component `out`, against the WIT in `wit_dir`, with the SDK helper
/// module from `python_sdk` on the module path.
///
/// `--stub-wasi`: the CPython runtime componentize-py embeds imports WASI,
/// which the host refuses; stubbed, those imports become traps inside the
/// component and the plugin imports only `host.log`.
pub fn componentize_python(
    tool: &Path,
    dir: &Path,
    wit_dir: &Path,
    python_sdk: &Path,
    out: &Path,
) -> Result<(), ToolchainError> {
    let status = Command::new(tool)
        .arg("-d")
        .arg(wit_dir)
        .args(["-w", WORLD, "componentize", "--stub-wasi", "-p"])
        .arg(dir)
        .arg("-p")
        .arg(python_sdk)
        .arg("app")
        .arg("-o")
        .arg(out)
        .status()
        .map_err(|source| ToolchainError::Spawn {
            tool: tool.display().to_string(),
            source,
        })?;
    if status.success() {
        return Ok(());
    }
    Err(ToolchainError::Failed {
        what: format!("componentize-py for {}", dir.display()),
        status,
        hint: format!(
            "; app.py must define `class WitWorld(wit_world.WitWorld)` with `init` and \
             `process_batch` (see plugins/network-tool); componentize-py \
             {COMPONENTIZE_PY_VERSION} is the tested version"
        ),
    })
}
