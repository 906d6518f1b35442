//! Event sources. Each produces schema [`Event`]s into the pipeline's queue
//! until it runs dry or is told to stop.

pub mod ebpf;
pub mod replay;
pub mod scan;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use driftwatch_sdk::{Event, KindSet};
use tokio::sync::{mpsc, watch};

use crate::stats::Stats;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{source_name}: {source}")]
    Failed {
        source_name: &'static str,
        /// What went wrong: the underlying error, or a message where there
        /// is none.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{source_name}: reading {path}: {source}")]
    Read {
        source_name: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// What a running source is handed.
pub struct SourceContext {
    /// Bounded: when the pipeline is behind, `send` waits.
    pub events: mpsc::Sender<Event>,
    /// Turns true when the daemon shuts down.
    pub shutdown: watch::Receiver<bool>,
    pub stats: Arc<Stats>,
    /// The event kinds the plugin chain wants.
    pub kinds: KindSet,
    pub hostname: Arc<str>,
}

impl SourceError {
    /// The error and every cause under it, for a log line: the errors
    /// below say only their own part, so one line tells the whole story.
    pub fn with_causes(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self).and_then(|s| s.source());
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }
}

/// A source of events. Its errors name it ([`SourceError::Failed`]).
pub trait Source: Send {
    /// Runs until the source is exhausted or `ctx.shutdown` turns true.
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<Result<(), SourceError>>;
}
