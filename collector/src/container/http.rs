//! HTTP/1.1 `GET` on a unix socket: Docker's Engine API and CRI-O's
//! inspect endpoint speak it. One connection per request, as both servers
//! expect of simple clients; bodies are bounded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// A response body larger than this is refused (a runtime with tens of
/// thousands of containers lists a few MiB).
pub const MAX_BODY: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No socket, nobody listening, or the connection failed before an
    /// answer: the server is not there.
    #[error("connecting to {}: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Http { path: String, source: hyper::Error },
    #[error("{path}: answered {status}: {message}")]
    Status {
        path: String,
        status: http::StatusCode,
        message: String,
    },
    #[error("{path}: the answer is larger than {MAX_BODY} bytes or broken: {source}")]
    Body {
        path: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{path}: building the request: {source}")]
    Build { path: String, source: http::Error },
    #[error("{path}: no answer within {} ms", after.as_millis())]
    Timeout { path: String, after: Duration },
}

impl HttpError {
    /// The server is not there, rather than answering badly.
    pub fn is_connect(&self) -> bool {
        matches!(self, HttpError::Connect { .. })
    }

    pub fn status(&self) -> Option<http::StatusCode> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Sends `GET path` (with its query) on `socket`; the response head once it
/// arrives. Any status is returned: the caller decides.
pub async fn get_head(socket: &Path, path: &str) -> Result<http::Response<Incoming>, HttpError> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| HttpError::Connect {
            socket: socket.to_path_buf(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| HttpError::Http {
            path: path.to_string(),
            source,
        })?;
    // The connection is driven beside the request; it ends with the body.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("runtime API connection: {e}");
        }
    });
    let req = http::Request::get(path)
        // Go's HTTP server refuses HTTP/1.1 requests without a Host.
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|source| HttpError::Build {
            path: path.to_string(),
            source,
        })?;
    sender
        .send_request(req)
        .await
        .map_err(|source| HttpError::Http {
            path: path.to_string(),
            source,
        })
}

/// `GET path` on `socket` within `timeout`: the body of a 2xx answer. Any
/// other status is [`HttpError::Status`] with the server's message.
pub async fn get(socket: &Path, path: &str, timeout: Duration) -> Result<Bytes, HttpError> {
    let fut = async {
        let resp = get_head(socket, path).await?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|source| HttpError::Body {
                path: path.to_string(),
                source,
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(HttpError::Status {
                path: path.to_string(),
                status,
                message: message(&body),
            });
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| {
            Err(HttpError::Timeout {
                path: path.to_string(),
                after: timeout,
            })
        })
}

/// An error body as text: Docker's `{"message": ...}`, or the text itself,
/// cut to 512 bytes and stripped of control characters.
fn message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Msg {
        message: String,
    }
    let text = match serde_json::from_slice::<Msg>(body) {
        Ok(m) => m.message,
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    text.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(512)
        .collect()
}

/// Percent-encodes a path segment or query value (everything but
/// unreserved characters).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot server on a socket in `dir` that answers `response` and
    /// hands back the request it read.
    async fn serve_once(
        dir: &Path,
        response: &'static [u8],
    ) -> (PathBuf, tokio::task::JoinHandle<String>) {
        let sock = dir.join("api.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(response).await.unwrap();
            s.shutdown().await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (sock, task)
    }

    #[tokio::test]
    async fn answers_statuses_and_absent_servers() {
        let dir = tempfile::tempdir().unwrap();
        let (sock, task) = serve_once(
            dir.path(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        )
        .await;
        let body = get(&sock, "/containers/x/json", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(&body[..], b"{}");
        let req = task.await.unwrap();
        assert!(
            req.starts_with("GET /containers/x/json HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(
            req.to_ascii_lowercase().contains("host: localhost"),
            "{req}"
        );
        std::fs::remove_file(&sock).unwrap();

        let (sock, _task) = serve_once(
            dir.path(),
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 37\r\n\r\n{\"message\":\"No such container: nope\"}",
        )
        .await;
        let err = get(&sock, "/containers/nope/json", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(http::StatusCode::NOT_FOUND));
        assert!(err.to_string().contains("No such container: nope"), "{err}");
        std::fs::remove_file(&sock).unwrap();

        // No socket at all.
        let err = get(&sock, "/", Duration::from_secs(5)).await.unwrap_err();
        assert!(err.is_connect(), "{err}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn encoding() {
        assert_eq!(
            encode(r#"{"type":["container"]}"#),
            "%7B%22type%22%3A%5B%22container%22%5D%7D"
        );
        assert_eq!(encode("a-b_c.d~e"), "a-b_c.d~e");
    }
}
