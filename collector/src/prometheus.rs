//! The `[metrics]` endpoint: `/metrics` in Prometheus' text format, with
//! the same counters as `driftwatch stats`, and `/healthz` for a liveness
//! probe.
//!
//! The server is a few lines over a TCP listener rather than an HTTP
//! framework: it answers two GETs with `Connection: close`, and a scraper
//! or kubelet needs nothing more. Each connection gets a bounded time and
//! request size, so a client that never finishes its request holds nothing.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::stats::{CALL_BUCKETS_US, ExportSnapshot, Snapshot, Stats};

/// Longest request head read; a GET with its headers is far smaller.
const MAX_REQUEST: usize = 8 << 10;
/// How long a client may take to send its request and read the answer.
const CLIENT_TIME: Duration = Duration::from_secs(5);

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
#[error("metrics endpoint {addr}: {source}")]
pub struct BindError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Binds the listener (port 0 picks a free one; [`TcpListener::local_addr`]
/// says which).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let err = |source| BindError { addr, source };
    let l = std::net::TcpListener::bind(addr).map_err(err)?;
    l.set_nonblocking(true).map_err(err)?;
    TcpListener::from_std(l).map_err(err)
}

/// Answers every connection, until aborted.
pub async fn serve(listener: TcpListener, stats: Arc<Stats>) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            // Out of descriptors or the like: do not spin on it.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CLIENT_TIME, answer(conn, &stats)).await;
        });
    }
}

async fn answer(mut conn: TcpStream, stats: &Stats) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST {
            return reply(&mut conn, "431 Request Header Fields Too Large", "", b"").await;
        }
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, ctype, body) = match path {
        _ if method != "GET" && method != "HEAD" => (
            "405 Method Not Allowed",
            "text/plain",
            b"GET only\n".to_vec(),
        ),
        "/metrics" => (
            "200 OK",
            CONTENT_TYPE,
            render(&stats.snapshot()).into_bytes(),
        ),
        "/healthz" if stats.health.alive(Instant::now()) => {
            ("200 OK", "text/plain", b"ok\n".to_vec())
        }
        "/healthz" => (
            "503 Service Unavailable",
            "text/plain",
            b"the pipeline has not moved for over 10 s\n".to_vec(),
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            b"/metrics or /healthz\n".to_vec(),
        ),
    };
    let body = if method == "HEAD" { &[][..] } else { &body[..] };
    reply(&mut conn, status, ctype, body).await
}

async fn reply(
    conn: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body).await?;
    conn.shutdown().await
}

/// The snapshot in Prometheus' text exposition format: counters end in
/// `_total`, the spool's depth is a gauge, plugin call latency a histogram
/// in seconds.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP driftwatch_{name} {help}");
        let _ = writeln!(out, "# TYPE driftwatch_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "driftwatch_{name}{labels} {value}");
        }
    };
    let one = |v: u64| vec![(String::new(), v.to_string())];
    let by = |key: &str, m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| (labels(&[(key, k.as_str())]), v.to_string()))
            .collect::<Vec<_>>()
    };
    family(
        "build_info",
        "gauge",
        "The running driftwatch version.",
        vec![(
            labels(&[("version", env!("CARGO_PKG_VERSION"))]),
            "1".into(),
        )],
    );
    family(
        "events_in_total",
        "counter",
        "Events the sources delivered to the plugin chain, by kind.",
        by("kind", &s.events_in),
    );
    family(
        "events_out_total",
        "counter",
        "Events that passed the plugin chain.",
        one(s.events_out),
    );
    family(
        "kernel_lost_total",
        "counter",
        "Events the kernel could not queue (ring buffer full).",
        one(s.kernel_lost),
    );
    family(
        "kernel_read_faults_total",
        "counter",
        "Facts of kernel records the kernel could not read.",
        one(s.kernel_read_faults),
    );
    family(
        "kernel_dropped_total",
        "counter",
        "File records the kernel dropped over their container's budget.",
        one(s.kernel_dropped),
    );
    family(
        "dropped_by_plugin_total",
        "counter",
        "Events a plugin dropped.",
        by("plugin", &s.dropped_by_plugin),
    );
    family(
        "plugin_failures_total",
        "counter",
        "Plugin calls that failed, by plugin and kind of failure.",
        s.plugin_failures
            .iter()
            .flat_map(|(p, kinds)| {
                kinds.iter().map(move |(k, v)| {
                    (
                        labels(&[("plugin", p.as_str()), ("kind", k.as_str())]),
                        v.to_string(),
                    )
                })
            })
            .collect(),
    );
    family(
        "plugin_quarantines_total",
        "counter",
        "Times a plugin was quarantined after repeated failures.",
        by("plugin", &s.plugin_quarantines),
    );
    family(
        "findings_total",
        "counter",
        "Findings, by rule.",
        by("rule", &s.findings),
    );
    family(
        "findings_by_priority_total",
        "counter",
        "Findings, by priority.",
        by("priority", &s.findings_by_priority),
    );
    family(
        "sink_errors_total",
        "counter",
        "Batches an output failed to take.",
        by("output", &s.sink_errors),
    );
    family(
        "reloads_total",
        "counter",
        "Hot reloads of pipeline.toml, by outcome.",
        by("outcome", &s.reloads),
    );
    family(
        "enforcement_total",
        "counter",
        "Execs the kernel's enforcement judged, by action; kill_failed: kills not delivered.",
        by("action", &s.enforcement),
    );
    family(
        "plugin_events_total",
        "counter",
        "Events given to each plugin.",
        s.plugin_calls
            .iter()
            .map(|(p, c)| (labels(&[("plugin", p.as_str())]), c.events.to_string()))
            .collect(),
    );
    let mut calls = Vec::new();
    for (plugin, c) in &s.plugin_calls {
        let mut cumulative = 0;
        for (i, n) in c.buckets.iter().enumerate() {
            cumulative += n;
            let le = CALL_BUCKETS_US
                .get(i)
                .map_or("+Inf".to_string(), |us| format!("{}", *us as f64 / 1e6));
            calls.push((
                format!(
                    "_bucket{}",
                    labels(&[("plugin", plugin.as_str()), ("le", le.as_str())])
                ),
                cumulative.to_string(),
            ));
        }
        if c.buckets.is_empty() {
            calls.push((
                format!(
                    "_bucket{}",
                    labels(&[("plugin", plugin.as_str()), ("le", "+Inf")])
                ),
                c.calls.to_string(),
            ));
        }
        calls.push((
            format!("_sum{}", labels(&[("plugin", plugin.as_str())])),
            format!("{}", c.total_us as f64 / 1e6),
        ));
        calls.push((
            format!("_count{}", labels(&[("plugin", plugin.as_str())])),
            c.calls.to_string(),
        ));
    }
    family(
        "plugin_call_duration_seconds",
        "histogram",
        "Duration of plugin calls (one call per batch).",
        calls,
    );
    let outputs = [("otlp", &s.export), ("http", &s.http)];
    let per_output = |f: fn(&ExportSnapshot) -> u64| {
        outputs
            .iter()
            .map(|(name, e)| (labels(&[("output", *name)]), f(e).to_string()))
            .collect::<Vec<_>>()
    };
    family(
        "export_delivered_total",
        "counter",
        "Records a spooled output delivered.",
        per_output(|e| e.exported),
    );
    family(
        "export_failed_requests_total",
        "counter",
        "Requests of a spooled output that failed (each is retried).",
        per_output(|e| e.failed_requests),
    );
    family(
        "export_rejected_total",
        "counter",
        "Records a receiver refused for good (kept in rejected.jsonl).",
        per_output(|e| e.rejected),
    );
    family(
        "export_spool_refused_total",
        "counter",
        "Records lost because the output's spool was full.",
        per_output(|e| e.spool_refused),
    );
    family(
        "export_redelivered_total",
        "counter",
        "Records sent again after a restart that may already have been delivered.",
        per_output(|e| e.redelivered),
    );
    family(
        "export_spool_records",
        "gauge",
        "Records waiting in the output's spool.",
        per_output(|e| e.spool_records),
    );
    family(
        "export_spool_bytes",
        "gauge",
        "Bytes waiting in the output's spool.",
        per_output(|e| e.spool_bytes),
    );
    family(
        "queued_events",
        "gauge",
        "Events in memory between the batcher and the outputs.",
        one(s.queued_events),
    );
    family(
        "kernel_fold_keys",
        "gauge",
        "Keys the kernel's fold map holds (an LRU of 8192; near it, evictions lose repeat counts).",
        one(s.kernel_fold_keys),
    );
    out
}

/// `{k="v",...}` with Prometheus' escapes; empty for no labels.
fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftwatch_sdk::{EventKind, Priority};

    #[test]
    fn counters_render_with_escaped_labels_and_cumulative_buckets() {
        let stats = Stats::default();
        stats.events_in([EventKind::Exec, EventKind::Exec].into_iter());
        stats.finding("Rule \"quoted\"\\x", Priority::Notice);
        stats.plugin_call("shell", 3, Duration::from_micros(40));
        stats.plugin_call("shell", 3, Duration::from_micros(700));
        let text = render(&stats.snapshot());
        assert!(
            text.contains("driftwatch_events_in_total{kind=\"exec\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("driftwatch_findings_total{rule=\"Rule \\\"quoted\\\"\\\\x\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("driftwatch_plugin_call_duration_seconds_bucket{plugin=\"shell\",le=\"0.00005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "driftwatch_plugin_call_duration_seconds_bucket{plugin=\"shell\",le=\"+Inf\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("driftwatch_plugin_call_duration_seconds_count{plugin=\"shell\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("driftwatch_export_spool_records{output=\"http\"} 0\n"),
            "{text}"
        );
        // Every sample line belongs to a family declared just before.
        let mut declared = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|b| declared.contains(*b))
                    .unwrap_or(name);
                assert!(declared.contains(base), "undeclared sample {line}");
            }
        }
    }
}
