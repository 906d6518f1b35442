//! The plugin author's loop: `driftwatch plugin new` scaffolds a plugin
//! crate, `plugin build` turns a Rust crate or a Python `app.py` into a
//! component, and `plugin test` runs recorded events through a component
//! and prints what the daemon would.

pub mod build;
pub mod commands;
pub mod scaffold;
pub mod toolchain;
pub mod trial;

/// Why an authoring command failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthoringError {
    #[error(transparent)]
    Toolchain(#[from] toolchain::ToolchainError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Manifest {
        path: std::path::PathBuf,
        message: String,
    },
    /// A usage problem, said as what to do about it.
    #[error("{0}")]
    Usage(String),
}

fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> AuthoringError + '_ {
    move |source| AuthoringError::Io {
        path: path.to_path_buf(),
        source,
    }
}
