//! Outputs. A sink takes batches of processed events and delivers them
//! somewhere; sinks run on the output thread, in configuration order.

pub mod falco;
pub mod stdout;

use crate::pipeline::Processed;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{sink}: {message}")]
    Io { sink: &'static str, message: String },
}

pub trait Sink: Send {
    fn name(&self) -> &'static str;
    /// Delivers (or durably queues) one batch.
    fn send(&mut self, batch: &[Processed]) -> Result<(), SinkError>;
    /// Called once at shutdown, after the last batch.
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
