//! What the backend said when it refused an export.
//!
//! opentelemetry-otlp keeps the gRPC status message and the HTTP response
//! body out of the errors it returns (a backend may echo credentials in
//! them) and only emits them as debug events. An operator whose findings
//! are refused needs the backend's reason, so it is caught here: from the
//! gRPC logs client's debug event (a [`tracing`] layer the daemon installs)
//! and from the HTTP response itself (a wrapper around the HTTP client).
//!
//! The same two places see the answer's status, typed: the gRPC code in
//! that event and the HTTP status of the response. The export loop decides
//! between retrying and setting a batch aside on it, since the error the
//! exporter returns is only text.
//!
//! Both happen on the thread that runs the export, inside the export call,
//! so what was said is kept per thread: the export loop clears it before a
//! request and takes it after a failure.

use std::cell::RefCell;

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, Filter};

/// A message longer than this is cut: it goes into one log line.
const MAX_LEN: usize = 1024;

/// The status a backend answered a request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Grpc(tonic::Code),
    Http(http::StatusCode),
}

/// What the backend said about the last refused request on this thread.
#[derive(Debug, Default, PartialEq)]
pub struct Said {
    /// The status of the last answer; `None` when the last attempt got no
    /// answer (unreachable, timed out) or the request was never sent.
    pub status: Option<Status>,
    /// The backend's own words, when it gave any.
    pub message: Option<String>,
}

thread_local! {
    static SAID: RefCell<Said> = const {
        RefCell::new(Said {
            status: None,
            message: None,
        })
    };
}

/// What the backend said since the last `take` on this thread.
pub fn take() -> Said {
    SAID.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

fn put_status(status: Option<Status>) {
    SAID.with(|s| s.borrow_mut().status = status);
}

fn put(message: &str) {
    let message = message.trim();
    if message.is_empty() {
        return;
    }
    let mut message = message.to_string();
    if message.len() > MAX_LEN {
        let mut cut = MAX_LEN;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    SAID.with(|s| s.borrow_mut().message = Some(message));
}

/// The event opentelemetry-otlp emits when the backend answers a logs
/// export with a gRPC error status.
const GRPC_LOGS_FAILED: &str = "TonicLogsClient.ExportFailed";

/// Keeps the `grpc_code` and `grpc_message` of the gRPC logs client's
/// failure events.
struct GrpcStatusMessages;

impl<S: tracing::Subscriber> Layer<S> for GrpcStatusMessages {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Message;
        impl Message {
            fn record(&self, field: &Field, value: &str) {
                match field.name() {
                    "grpc_message" => put(value),
                    "grpc_code" => put_status(grpc_code(value).map(Status::Grpc)),
                    _ => {}
                }
            }
        }
        impl Visit for Message {
            fn record_str(&mut self, field: &Field, value: &str) {
                self.record(field, value);
            }
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                self.record(field, &format!("{value:?}"));
            }
        }
        event.record(&mut Message);
    }
}

/// The event names the code as `tonic::Code`'s `Debug` form: read it back
/// by tonic's own names, so nothing here spells them.
fn grpc_code(name: &str) -> Option<tonic::Code> {
    (0..=16)
        .map(tonic::Code::from_i32)
        .find(|c| format!("{c:?}") == name)
}

/// Only the one event, whatever the daemon's log level.
struct OnlyGrpcLogsFailures;

impl<S> Filter<S> for OnlyGrpcLogsFailures {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: &Context<'_, S>) -> bool {
        meta.target() == "opentelemetry-otlp" && meta.name() == GRPC_LOGS_FAILED
    }
}

/// The layer the daemon's subscriber needs for gRPC refusals to carry the
/// backend's message.
pub fn layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    GrpcStatusMessages.with_filter(OnlyGrpcLogsFailures)
}

/// An OTLP/HTTP client that keeps the body of every error response.
#[derive(Debug)]
pub struct Recording(pub reqwest::Client);

impl HttpClient for Recording {
    fn send_bytes<'s, 'f>(
        &'s self,
        request: Request<Bytes>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'f>,
    >
    where
        's: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            // The exporter retries inside one export: only the last
            // attempt's status stands.
            put_status(None);
            let response = self.0.send_bytes(request).await?;
            if !response.status().is_success() {
                put_status(Some(Status::Http(response.status())));
                put(&body_text(response.body()));
            }
            Ok(response)
        })
    }
}

/// An OTLP/HTTP error body: a protobuf `google.rpc.Status` (the spec's
/// format), whose `message` is field 2; otherwise the body as text.
fn body_text(body: &[u8]) -> String {
    status_message(body).unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

fn status_message(mut b: &[u8]) -> Option<String> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut message = None;
    while !b.is_empty() {
        let key = varint(&mut b)?;
        match key & 7 {
            0 => {
                varint(&mut b)?;
            }
            2 => {
                let len = usize::try_from(varint(&mut b)?).ok()?;
                let field = b.get(..len)?;
                b = &b[len..];
                if key >> 3 == 2 {
                    message = Some(std::str::from_utf8(field).ok()?.to_string());
                }
            }
            _ => return None,
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_error_body_is_read_as_a_status_or_as_text() {
        // code = 3, message = "bad things", one details entry.
        let mut status = vec![0x08, 0x03, 0x12, 10];
        status.extend_from_slice(b"bad things");
        status.extend_from_slice(&[0x1a, 2, 0x0a, 0]);
        assert_eq!(body_text(&status), "bad things");
        assert_eq!(body_text(b"quota exceeded\n"), "quota exceeded\n");
        // Not a Status, not UTF-8: still something to show.
        assert_eq!(body_text(&[0xff, 0xfe]), "\u{fffd}\u{fffd}");
    }

    #[test]
    fn a_message_is_taken_once_and_cut_when_long() {
        put(&"x".repeat(5000));
        let m = take().message.expect("kept");
        assert!(m.len() <= MAX_LEN + '…'.len_utf8() && m.ends_with('…'));
        assert_eq!(take(), Said::default());
        put("  ");
        assert_eq!(take(), Said::default());
    }

    #[test]
    fn the_grpc_logs_clients_failure_event_is_caught() {
        use tracing_subscriber::prelude::*;
        let subscriber = tracing_subscriber::registry().with(layer());
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(
                name: "TonicLogsClient.ExportFailed",
                target: "opentelemetry-otlp",
                grpc_code = "OutOfRange",
                grpc_message = "message too large"
            );
            tracing::debug!(
                name: "TonicMetricsClient.ExportFailed",
                target: "opentelemetry-otlp",
                grpc_message = "not this one"
            );
        });
        let said = take();
        assert_eq!(said.message.as_deref(), Some("message too large"));
        assert_eq!(said.status, Some(Status::Grpc(tonic::Code::OutOfRange)));
    }
}
