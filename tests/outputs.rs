//! What reaches the outputs' thread: every event when an output writes
//! plain events (`events = true`), else only the events with findings.

mod support;

use std::sync::{Arc, Mutex};

use driftwatch::config::Config;
use driftwatch::pipeline::{Batch, Chain};
use driftwatch::runtime::{self, Setup};
use driftwatch::sink::{Sink, SinkError};
use driftwatch::source::{BoxFuture, Source, SourceContext, SourceError};
use driftwatch::stats::Stats;
use driftwatch_sdk::Event;
use support::exec;
use tokio::sync::watch;

/// Sends its events, then ends.
struct Events(Vec<Event>);

impl Source for Events {
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<Result<(), SourceError>> {
        Box::pin(async move {
            for ev in self.0 {
                if ctx.events.send(ev).await.is_err() {
                    break;
                }
            }
            Ok(())
        })
    }
}

/// The process names of the events it was handed, and whether it asks
/// for plain events.
#[derive(Clone)]
struct Seen {
    plain: bool,
    names: Arc<Mutex<Vec<String>>>,
}

impl Seen {
    fn new(plain: bool) -> Seen {
        Seen {
            plain,
            names: Arc::default(),
        }
    }

    fn names(&self) -> Vec<String> {
        self.names.lock().unwrap().clone()
    }
}

impl Sink for Seen {
    fn name(&self) -> &'static str {
        "seen"
    }
    fn writes_plain_events(&self) -> bool {
        self.plain
    }
    fn send(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let mut names = self.names.lock().unwrap();
        names.extend(batch.iter().map(|p| p.event.process.name.clone()));
        Ok(())
    }
}

/// Runs `ls, sh, cat` (only `sh` is a finding of the shell rule) to
/// `sinks` and returns the stats' `events_out`.
async fn run(sinks: Vec<Box<dyn Sink>>) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let path = support::config(
        dir.path(),
        "[[plugins]]\nname = \"shell\"\nbuiltin = \"shell\"\n",
    );
    let cfg = Config::load(&path).unwrap();
    let engine = runtime::engine(&cfg).unwrap();
    let stats = Arc::new(Stats::default());
    let chain = Chain::build(&cfg, &engine, stats.clone()).unwrap();
    let (_stop_tx, stop) = watch::channel(false);
    let report = runtime::run(Setup {
        cfg,
        config_path: None,
        engine,
        chain,
        sources: vec![Box::new(Events(vec![exec("ls"), exec("sh"), exec("cat")]))],
        sinks,
        enrichers: Vec::new(),
        enforcer: None,
        prefilter: None,
        stats,
        shutdown: stop,
    })
    .await
    .unwrap();
    assert!(report.source_errors.is_empty());
    assert_eq!(
        report.stats.queued_events, 0,
        "every event left the queue count"
    );
    report.stats.events_out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_only_outputs_are_handed_only_findings() {
    let findings = Seen::new(false);
    let out = run(vec![Box::new(findings.clone())]).await;
    assert_eq!(findings.names(), ["sh"]);
    // The chain passed all three: only the hand-off to the outputs shrank.
    assert_eq!(out, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_output_of_plain_events_gets_every_event_to_all() {
    let findings = Seen::new(false);
    let plain = Seen::new(true);
    run(vec![Box::new(findings.clone()), Box::new(plain.clone())]).await;
    assert_eq!(plain.names(), ["ls", "sh", "cat"]);
    // Outputs share one batch; each writes what it wants of it.
    assert_eq!(findings.names(), ["ls", "sh", "cat"]);
}
