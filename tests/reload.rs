//! Hot reload through the library: a running pipeline picks up an edited
//! pipeline.toml between batches, and keeps running on a broken edit.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driftwatch::config::Config;
use driftwatch::pipeline::{Batch, Chain};
use driftwatch::runtime::{self, Setup};
use driftwatch::sink::{Sink, SinkError};
use driftwatch::source::{BoxFuture, Source, SourceContext, SourceError};
use driftwatch::stats::Stats;
use driftwatch_sdk::{Container, Event, EventKind, Process};
use tokio::sync::{mpsc, watch};

/// Forwards whatever the test sends.
struct Feed(mpsc::Receiver<Event>);

impl Source for Feed {
    fn run(mut self: Box<Self>, ctx: SourceContext) -> BoxFuture<Result<(), SourceError>> {
        Box::pin(async move {
            while let Some(ev) = self.0.recv().await {
                if ctx.events.send(ev).await.is_err() {
                    break;
                }
            }
            Ok(())
        })
    }
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<String>>>);

impl Sink for Collect {
    fn name(&self) -> &'static str {
        "collect"
    }
    fn send(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let mut rules = self.0.lock().unwrap();
        for p in batch {
            for f in p.findings {
                rules.push(format!("{}:{}", p.event.process.name, f.finding.rule));
            }
        }
        Ok(())
    }
}

fn exec(name: &str) -> Event {
    Event {
        kind: EventKind::Exec,
        process: Process {
            name: name.into(),
            vpid: 4,
            pname: "runc".into(),
            ..Process::default()
        },
        container: Some(Container {
            id: "c".repeat(64),
            ..Container::default()
        }),
        ..Event::default()
    }
}

const SHELL_ONLY: &str = "[[plugins]]\nname = \"a\"\nbuiltin = \"shell\"\n";
const PM_ONLY: &str = "[[plugins]]\nname = \"a\"\nbuiltin = \"package-manager\"\n";

impl Collect {
    fn count(&self, prefix: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }
}

/// Polls `cond` until it holds (true) or 20 s pass (false).
async fn until(mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn wait_for(seen: &Collect, what: &str) -> bool {
    until(|| seen.0.lock().unwrap().iter().any(|r| r == what)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_chain_applies_and_broken_edit_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = support::config(dir.path(), SHELL_ONLY);
    // The reload watcher is on: rewrite the header the helper wrote.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("hot_reload = false", "hot_reload = true");
    std::fs::write(&path, &text).unwrap();
    let header = text.replace(SHELL_ONLY, "");

    let cfg = Config::load(&path).unwrap();
    let engine = runtime::engine(&cfg).unwrap();
    let stats = Arc::new(Stats::default());
    let counters = stats.clone();
    let chain = Chain::build(&cfg, &engine, stats.clone()).unwrap();
    let (tx, rx) = mpsc::channel(16);
    let (_stop_tx, stop) = watch::channel(false);
    let seen = Collect::default();
    let run = tokio::spawn(runtime::run(Setup {
        cfg,
        config_path: Some(path.clone()),
        engine,
        chain,
        sources: vec![Box::new(Feed(rx))],
        sinks: vec![Box::new(seen.clone())],
        enrichers: Vec::new(),
        enforcer: None,
        stats,
        shutdown: stop,
    }));

    tx.send(exec("sh")).await.unwrap();
    assert!(wait_for(&seen, "sh:Container Shell Spawned").await);

    // Swap the shell rule for the package-manager rule.
    std::fs::write(&path, format!("{header}{PM_ONLY}")).unwrap();
    let start = Instant::now();
    loop {
        tx.send(exec("apk")).await.unwrap();
        if wait_for_quick(&seen, "apk:Package Manager Execution in Container").await {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "reload never applied"
        );
    }
    // Events keep their order through one source: once this apk's finding
    // is out, the sh before it went through the new chain too.
    let apks = seen.count("apk:");
    tx.send(exec("sh")).await.unwrap();
    tx.send(exec("apk")).await.unwrap();
    assert!(
        until(|| seen.count("apk:") > apks).await,
        "the apk after the reload was not detected"
    );

    // A broken edit: reported, and the running chain stays.
    std::fs::write(
        &path,
        format!("{header}[[plugins]]\nname = \"a\"\nbuiltin = \"nope\"\n"),
    )
    .unwrap();
    assert!(
        until(|| counters.snapshot().reloads.get("failed") == Some(&1)).await,
        "the broken edit was never reported"
    );
    tx.send(exec("apk")).await.unwrap();
    drop(tx);
    let report = run.await.unwrap().unwrap();
    assert!(report.source_errors.is_empty());

    // One reload per edit: reading the file to reload it is not an edit.
    let reloads = counters.snapshot().reloads;
    assert_eq!(reloads.get("applied"), Some(&1), "{reloads:?}");
    assert_eq!(reloads.get("failed"), Some(&1), "{reloads:?}");

    let rules = seen.0.lock().unwrap().clone();
    let after_swap = rules
        .iter()
        .position(|r| r.starts_with("apk:"))
        .expect("package-manager findings after the swap");
    assert!(
        rules[after_swap..].iter().all(|r| r.starts_with("apk:")),
        "the old shell rule still ran after the reload: {rules:?}"
    );
    assert!(
        rules.iter().filter(|r| r.starts_with("apk:")).count() >= 3,
        "the last apk (after the broken edit) was still detected: {rules:?}"
    );
}

async fn wait_for_quick(seen: &Collect, what: &str) -> bool {
    for _ in 0..10 {
        if seen.0.lock().unwrap().iter().any(|r| r == what) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
