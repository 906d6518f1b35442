//! The daemon's local control socket: `driftwatch stats` connects and gets
//! the live counters as one JSON document. Root-only (mode 0600), because
//! counters name rules and plugins an attacker would like to know about.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;

use crate::stats::{Snapshot, Stats};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {path} answered with something that is not counters: {source}")]
    Garbled {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ControlError + '_ {
    move |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Binds the socket; replaces a stale one left by a killed daemon.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ControlError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another driftwatch daemon is serving it",
            ),
        });
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(io(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io(path))?;
    Ok(listener)
}

/// Answers every connection with the current snapshot, until aborted.
pub async fn serve(listener: UnixListener, stats: Arc<Stats>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let mut body = serde_json::to_vec(&stats.snapshot()).unwrap_or_default();
        body.push(b'\n');
        // One slow reader must not hold up the next.
        tokio::spawn(async move {
            let _ = conn.write_all(&body).await;
        });
    }
}

/// The client side, for `driftwatch stats`.
pub fn read(path: &Path) -> Result<Snapshot, ControlError> {
    let mut conn = std::os::unix::net::UnixStream::connect(path).map_err(io(path))?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .map_err(io(path))?;
    let mut text = String::new();
    conn.read_to_string(&mut text).map_err(io(path))?;
    serde_json::from_str(&text).map_err(|source| ControlError::Garbled {
        path: path.to_path_buf(),
        source,
    })
}
