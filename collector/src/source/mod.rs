//! Event sources. Each produces schema [`Event`]s into the pipeline's queue
//! until it runs dry or is told to stop.

pub mod ebpf;
pub mod replay;
pub mod scan;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use driftwatch_sdk::Event;
use tokio::sync::{mpsc, watch};

use crate::stats::Stats;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{source_name}: {message}")]
    Failed {
        source_name: &'static str,
        message: String,
    },
}

/// What a running source is handed.
pub struct SourceContext {
    /// Bounded: when the pipeline is behind, `send` waits.
    pub events: mpsc::Sender<Event>,
    /// Turns true when the daemon shuts down.
    pub shutdown: watch::Receiver<bool>,
    pub stats: Arc<Stats>,
    /// Bit set of the event kinds the plugin chain wants (see `EventKind::bit`).
    pub kinds: u32,
    pub hostname: Arc<str>,
}

pub trait Source: Send {
    fn name(&self) -> &'static str;
    /// Runs until the source is exhausted or `ctx.shutdown` turns true.
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<Result<(), SourceError>>;
}
