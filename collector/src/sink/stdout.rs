//! JSON lines on stdout: one Falco-shaped object per finding, and
//! optionally every event that passed the chain in the schema's JSON form
//! (which `driftwatch replay` reads back).

use std::io::Write;

use super::falco::finding_json;
use super::{Sink, SinkError};
use crate::pipeline::Batch;

pub struct JsonLines<W: Write + Send> {
    out: W,
    events: bool,
}

impl JsonLines<std::io::BufWriter<std::io::Stdout>> {
    pub fn stdout(events: bool) -> Self {
        JsonLines::new(std::io::BufWriter::new(std::io::stdout()), events)
    }
}

impl<W: Write + Send> JsonLines<W> {
    pub fn new(out: W, events: bool) -> Self {
        JsonLines { out, events }
    }

    fn write_batch(&mut self, batch: &Batch) -> std::io::Result<()> {
        for p in batch {
            for rec in p.findings {
                serde_json::to_writer(&mut self.out, &finding_json(&p, rec))?;
                self.out.write_all(b"\n")?;
            }
            if self.events {
                serde_json::to_writer(&mut self.out, &p.event)?;
                self.out.write_all(b"\n")?;
            }
        }
        // One flush per batch: lines appear promptly without a syscall each.
        self.out.flush()
    }
}

impl<W: Write + Send> Sink for JsonLines<W> {
    fn name(&self) -> &'static str {
        "stdout"
    }

    fn send(&mut self, batch: &Batch) -> Result<(), SinkError> {
        self.write_batch(batch).map_err(|source| SinkError::Io {
            sink: "stdout",
            source,
        })
    }

    fn writes_plain_events(&self) -> bool {
        self.events
    }

    fn flush(&mut self, _deadline: std::time::Instant) -> Result<(), SinkError> {
        self.out.flush().map_err(|source| SinkError::Io {
            sink: "stdout",
            source,
        })
    }
}
