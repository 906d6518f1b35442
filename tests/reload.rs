//! Hot reload through the library: a running pipeline picks up an edited
//! pipeline.toml, an edited plugin file and SIGHUP between batches, loses
//! and repeats no event while it does, and keeps running on a broken edit
//! with an error naming the file and the cause.
//!
//! The tests run one at a time ([`SERIAL`]): SIGHUP goes to the whole test
//! process, and every running pipeline with a config file reloads on it.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driftwatch::config::Config;
use driftwatch::pipeline::{Batch, Chain};
use driftwatch::runtime::{self, Setup};
use driftwatch::sink::{Sink, SinkError};
use driftwatch::source::{BoxFuture, Source, SourceContext, SourceError};
use driftwatch::stats::Stats;
use driftwatch_sdk::Event;
use support::exec;
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
                rules.push(format!("{}:{}", p.event.process.name, f.rule()));
            }
        }
        Ok(())
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
    let _one_at_a_time = SERIAL.lock().await;
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
        prefilter: None,
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

/// One reload test at a time (see the module doc).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// driftwatch's log lines, for the tests that check what a failed reload
/// says. Installed once for the whole test process.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buf
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text(logs: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&logs.lock().unwrap()).into_owned()
}

/// Every event that reached the outputs (by pid) and every finding.
#[derive(Clone, Default)]
struct Tally {
    pids: Arc<Mutex<Vec<u32>>>,
    findings: Arc<Mutex<Vec<String>>>,
}

impl Sink for Tally {
    fn name(&self) -> &'static str {
        "tally"
    }
    fn send(&mut self, batch: &Batch) -> Result<(), SinkError> {
        let mut pids = self.pids.lock().unwrap();
        let mut findings = self.findings.lock().unwrap();
        for p in batch {
            pids.push(p.event.process.pid);
            for f in p.findings {
                findings.push(format!("{}:{}", p.event.process.name, f.rule()));
            }
        }
        Ok(())
    }
}

impl Tally {
    fn saw(&self, what: &str) -> bool {
        self.findings.lock().unwrap().iter().any(|r| r == what)
    }
    fn count(&self, what: &str) -> usize {
        self.findings
            .lock()
            .unwrap()
            .iter()
            .filter(|r| *r == what)
            .count()
    }
}

fn exec_pid(name: &str, pid: u32) -> Event {
    let mut e = exec(name);
    e.process.pid = pid;
    e
}

/// A running pipeline on `path` with a [`Tally`] as its only output.
struct Daemon {
    tx: mpsc::Sender<Event>,
    seen: Tally,
    stats: Arc<Stats>,
    run: tokio::task::JoinHandle<Result<runtime::Report, runtime::RuntimeError>>,
    _stop: watch::Sender<bool>,
}

fn start(path: &std::path::Path) -> Daemon {
    let cfg = Config::load(path).unwrap();
    let engine = runtime::engine(&cfg).unwrap();
    let stats = Arc::new(Stats::default());
    let chain = Chain::build(&cfg, &engine, stats.clone()).unwrap();
    let (tx, rx) = mpsc::channel(1024);
    let (stop_tx, stop) = watch::channel(false);
    let seen = Tally::default();
    let run = tokio::spawn(runtime::run(Setup {
        cfg,
        config_path: Some(path.to_path_buf()),
        engine,
        chain,
        sources: vec![Box::new(Feed(rx))],
        sinks: vec![Box::new(seen.clone())],
        enrichers: Vec::new(),
        enforcer: None,
        prefilter: None,
        stats: stats.clone(),
        shutdown: stop,
    }));
    Daemon {
        tx,
        seen,
        stats,
        run,
        _stop: stop_tx,
    }
}

impl Daemon {
    fn reloads(&self, outcome: &str) -> u64 {
        self.stats
            .snapshot()
            .reloads
            .get(outcome)
            .copied()
            .unwrap_or(0)
    }

    /// Sends `name` execs until `what` is seen (true) or 20 s pass.
    async fn until_detected(&self, name: &str, what: &str) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            self.tx.send(exec(name)).await.unwrap();
            for _ in 0..10 {
                if self.seen.saw(what) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        false
    }

    async fn finish(self) {
        drop(self.tx);
        let report = self.run.await.unwrap().unwrap();
        assert!(report.source_errors.is_empty());
    }
}

fn config_with(dir: &std::path::Path, hot_reload: bool, body: &str) -> std::path::PathBuf {
    let path = support::config(dir, body);
    if hot_reload {
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("hot_reload = false", "hot_reload = true");
        std::fs::write(&path, text).unwrap();
    }
    path
}

/// Replaces `path` the way builds and editors do: a new file renamed over it.
fn replace_file(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn sighup() {
    // SAFETY: kill(2) on our own pid; a SIGHUP handler is installed (see
    // the callers), so the signal cannot end the process.
    let rc = unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

const SHELL: &str = "Container Shell Spawned";
const NET: &str = "Network Tool in Container";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_a_steady_stream_lose_and_repeat_nothing() {
    let _one_at_a_time = SERIAL.lock().await;
    // Ours, before any SIGHUP is sent: the process must never die of one.
    let _hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("tools.wasm");
    std::fs::copy(
        support::guest("driftwatch_example_suspicious_tools"),
        &plugin,
    )
    .unwrap();
    let body = format!(
        "[[plugins]]\nname = \"a\"\nbuiltin = \"shell\"\n\n[[plugins]]\nname = \"b\"\npath = \"{}\"\n",
        plugin.display()
    );
    let path = config_with(dir.path(), true, &body);
    let d = start(&path);

    // A producer that never pauses for the reloads: sh and nc execs with
    // unique pids, a few thousand a second.
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let tx = d.tx.clone();
    let producer = tokio::spawn(async move {
        let mut sent = 0u32;
        while !*stop_rx.borrow_and_update() {
            for _ in 0..20 {
                let name = if sent.is_multiple_of(2) { "sh" } else { "nc" };
                tx.send(exec_pid(name, sent)).await.unwrap();
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        sent
    });

    // Three reloads while it runs, one per trigger: the config is edited,
    // the plugin file is replaced, SIGHUP.
    let edits: [&dyn Fn(); 3] = [
        &|| {
            std::fs::write(
                &path,
                format!("{}\n# edited\n", std::fs::read_to_string(&path).unwrap()),
            )
            .unwrap()
        },
        &|| {
            replace_file(
                &plugin,
                &std::fs::read(support::guest("driftwatch_example_suspicious_tools")).unwrap(),
            )
        },
        &sighup,
    ];
    for (i, edit) in edits.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        edit();
        assert!(
            until(|| d.reloads("applied") > i as u64).await,
            "reload {} never applied: {:?}",
            i + 1,
            d.stats.snapshot().reloads
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(true);
    let sent = producer.await.unwrap();
    let seen = d.seen.clone();
    d.finish().await;

    // Count in, count out: every event exactly once.
    let mut pids = seen.pids.lock().unwrap().clone();
    let out = pids.len();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids.len(), out, "some events reached the outputs twice");
    assert_eq!(out, sent as usize, "{sent} events in, {out} out");
    assert!(sent > 1000, "the stream was too thin to prove much: {sent}");
    // And every one was judged by exactly one chain: one finding each.
    assert_eq!(
        seen.count(&format!("sh:{SHELL}")),
        sent.div_ceil(2) as usize
    );
    assert_eq!(seen.count(&format!("nc:{NET}")), (sent / 2) as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_plugin_file_reloads_and_a_broken_one_keeps_the_old() {
    let _one_at_a_time = SERIAL.lock().await;
    let logs = captured_logs();
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("rule.wasm");
    std::fs::copy(
        support::guest("driftwatch_example_suspicious_tools"),
        &plugin,
    )
    .unwrap();
    let path = config_with(
        dir.path(),
        true,
        &format!(
            "[[plugins]]\nname = \"rule\"\npath = \"{}\"\n",
            plugin.display()
        ),
    );
    let d = start(&path);
    assert!(d.until_detected("nc", &format!("nc:{NET}")).await);

    // The config is untouched; only the component behind it changes.
    replace_file(
        &plugin,
        &std::fs::read(support::guest("driftwatch_plugin_shell")).unwrap(),
    );
    assert!(
        d.until_detected("sh", &format!("sh:{SHELL}")).await,
        "the replaced plugin file was never loaded"
    );
    assert_eq!(d.reloads("applied"), 1);

    // A broken component: the error names the file and why, and the
    // running chain (the shell rule) keeps detecting.
    replace_file(&plugin, b"\0asm not really");
    assert!(
        until(|| d.reloads("failed") == 1).await,
        "the broken plugin was never reported"
    );
    let text = log_text(&logs);
    let line = text
        .lines()
        .find(|l| l.contains("failed, keeping the running pipeline"))
        .unwrap_or_else(|| panic!("no reload error in the log:\n{text}"));
    assert!(line.contains(&path.display().to_string()), "{line}");
    assert!(
        line.contains(&plugin.display().to_string()),
        "the error does not name the plugin file: {line}"
    );
    assert!(
        line.contains("compiling rule"),
        "the error does not say why: {line}"
    );
    let before = d.seen.count(&format!("sh:{SHELL}"));
    d.tx.send(exec("sh")).await.unwrap();
    assert!(
        until(|| d.seen.count(&format!("sh:{SHELL}")) > before).await,
        "the old chain stopped"
    );
    d.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_without_a_watcher_and_a_broken_config_is_named() {
    let _one_at_a_time = SERIAL.lock().await;
    let _hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
    let logs = captured_logs();
    let dir = tempfile::tempdir().unwrap();
    // hot_reload off: edits alone change nothing, SIGHUP applies them.
    let path = config_with(dir.path(), false, SHELL_ONLY);
    let header = std::fs::read_to_string(&path)
        .unwrap()
        .replace(SHELL_ONLY, "");
    let d = start(&path);
    assert!(d.until_detected("sh", &format!("sh:{SHELL}")).await);
    std::fs::write(&path, format!("{header}{PM_ONLY}")).unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        d.reloads("applied"),
        0,
        "an edit reloaded with hot_reload off"
    );
    sighup();
    assert!(
        d.until_detected("apk", "apk:Package Manager Execution in Container")
            .await,
        "SIGHUP did not reload"
    );
    assert_eq!(d.reloads("applied"), 1);

    // A broken config on SIGHUP: named with its line, the old chain stays.
    std::fs::write(
        &path,
        format!("{header}[[plugins]]\nname = \"a\"\nbuiltin = \n"),
    )
    .unwrap();
    sighup();
    assert!(
        until(|| d.reloads("failed") == 1).await,
        "the broken config was never reported"
    );
    let text = log_text(&logs);
    let line = text
        .lines()
        .filter(|l| l.contains("failed, keeping the running pipeline"))
        .find(|l| l.contains(&path.display().to_string()) && !l.contains(".wasm"))
        .unwrap_or_else(|| {
            panic!(
                "no reload error naming {} in the log:\n{text}",
                path.display()
            )
        });
    // The mistake is the third line appended to the header.
    let want = format!("line {}", header.lines().count() + 3);
    assert!(
        line.contains(&want),
        "the error does not locate the mistake ({want}): {line}"
    );
    let before = d.seen.count("apk:Package Manager Execution in Container");
    d.tx.send(exec("apk")).await.unwrap();
    assert!(
        until(|| d.seen.count("apk:Package Manager Execution in Container") > before).await,
        "the old chain stopped"
    );
    d.finish().await;
}
