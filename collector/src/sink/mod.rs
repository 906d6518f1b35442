//! Outputs. A sink takes batches of processed events and delivers them
//! somewhere; sinks run on the output thread, in configuration order.

pub mod backoff;
pub mod falco;
pub mod feed;
pub mod http;
pub mod otlp;
pub mod refusal;
pub mod spool;
pub mod stdout;

use std::sync::Arc;
use std::time::Instant;

use crate::config::{Config, Switch};
use crate::pipeline::Batch;
use crate::stats::Stats;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{sink}: {source}")]
    Io {
        sink: &'static str,
        source: std::io::Error,
    },
    #[error("{sink}: {source}")]
    Spool {
        sink: &'static str,
        source: spool::SpoolError,
    },
    #[error("{sink}: {source} ({lost} records not kept)")]
    NotKept {
        sink: &'static str,
        lost: u64,
        source: spool::SpoolError,
    },
    #[error("{sink}: {message}")]
    Config { sink: &'static str, message: String },
    #[error("{sink}: starting the export thread: {source}")]
    Thread {
        sink: &'static str,
        source: std::io::Error,
    },
}

pub trait Sink: Send {
    fn name(&self) -> &'static str;
    /// Delivers (or durably queues) one batch.
    fn send(&mut self, batch: &Batch) -> Result<(), SinkError>;
    /// Whether it writes events that raised no finding (`events = true`).
    /// When no output does, the chain keeps such events from the outputs'
    /// thread: it then wakes only for findings, and nothing crosses to it
    /// only to be freed there.
    fn writes_plain_events(&self) -> bool {
        true
    }
    /// Called once at shutdown, after the last batch. Returns by
    /// `deadline`: what a remote output could not deliver by then stays in
    /// its spool.
    fn flush(&mut self, _deadline: Instant) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Whether OTLP export is on for this configuration and environment.
pub fn otlp_active(cfg: &Config) -> bool {
    otlp::settings::active(&cfg.outputs.otlp, &otlp::settings::process_env)
}

/// Whether JSON lines go to stdout: on request, or (`"auto"`) when no OTLP
/// backend is set.
pub fn stdout_active(cfg: &Config) -> bool {
    match cfg.outputs.stdout.enabled {
        Switch::On => true,
        Switch::Off => false,
        Switch::Auto => !otlp_active(cfg),
    }
}

/// The configured outputs, in a fixed order: stdout, OTLP, then HTTP.
/// `force_events` prints every passing event on stdout too.
pub fn build(
    cfg: &Config,
    force_events: bool,
    stats: &Arc<Stats>,
) -> Result<Vec<Box<dyn Sink>>, SinkError> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if stdout_active(cfg) || force_events {
        sinks.push(Box::new(stdout::JsonLines::stdout(
            cfg.outputs.stdout.events || force_events,
        )));
    }
    if otlp_active(cfg) {
        let origin = otlp::Origin {
            host_name: crate::host::hostname(cfg.daemon.hostname.as_deref()),
            node_name: cfg
                .k8s
                .node_name
                .clone()
                .or_else(|| otlp::settings::process_env("NODE_NAME")),
        };
        sinks.push(Box::new(otlp::OtlpSink::start(
            &cfg.outputs.otlp,
            &cfg.base_dir,
            &origin,
            stats.clone(),
        )?));
    }
    if cfg.outputs.http.enabled {
        sinks.push(Box::new(http::HttpSink::start(
            &cfg.outputs.http,
            &cfg.base_dir,
            stats.clone(),
        )?));
    }
    Ok(sinks)
}
