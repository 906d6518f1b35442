//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_driftwatch"));
    c.env("DRIFTWATCH_LOG", "warn");
    c
}

/// Where the build put the guest components (built-ins, example, hostile).
pub fn guest(name: &str) -> PathBuf {
    Path::new(driftwatch::plugin::builtin::GUEST_DIR).join(format!("{name}.wasm"))
}

/// The tests' shared compile cache: entries are keyed by component and
/// engine, so sharing is safe, and it spares recompiling every plugin in
/// every test.
pub fn cache_dir() -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache");
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir);
    dir
}

/// A pipeline.toml in `dir`, using the shared test compile cache. The
/// metrics endpoint is off unless `body` has a `[metrics]` table: tests
/// run side by side and would race for its port.
pub fn config(dir: &Path, body: &str) -> PathBuf {
    let cache = cache_dir();
    let metrics = if body.contains("[metrics]") {
        ""
    } else {
        "[metrics]\nlisten = false\n\n"
    };
    let text = format!(
        "[daemon]\ncache_dir = \"{}\"\nstats_interval_secs = 0\nhot_reload = false\n\n{metrics}{body}",
        cache.display()
    );
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).expect("writing test config");
    p
}

/// stdout parsed as JSON lines.
pub fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// How many findings the golden replay produces: the lines of its recorded
/// output, so no test keeps its own copy of the number.
pub fn golden_findings() -> usize {
    let path = root().join("tests/data/golden.findings.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .count()
}

/// What a source needs to run in-process: its context, the receiver its
/// events arrive on, and the sender that asks it to stop.
pub fn source_context() -> (
    driftwatch::source::SourceContext,
    tokio::sync::mpsc::Receiver<driftwatch_sdk::Event>,
    tokio::sync::watch::Sender<bool>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let ctx = driftwatch::source::SourceContext {
        events: tx,
        shutdown,
        stats: std::sync::Arc::new(driftwatch::stats::Stats::default()),
        kinds: driftwatch_sdk::KindSet::ALL,
        hostname: std::sync::Arc::from("test-host"),
    };
    (ctx, rx, stop)
}

/// Collects what `rx` delivers for `how_long`.
pub async fn drain(
    rx: &mut tokio::sync::mpsc::Receiver<driftwatch_sdk::Event>,
    how_long: std::time::Duration,
    got: &mut Vec<driftwatch_sdk::Event>,
) {
    let until = tokio::time::Instant::now() + how_long;
    while let Ok(Some(ev)) = tokio::time::timeout_at(until, rx.recv()).await {
        got.push(ev);
    }
}

/// An exec of `name` in a container, its parent the runtime (`runc`): what
/// the shell and package-manager rules judge.
pub fn exec(name: &str) -> driftwatch_sdk::Event {
    driftwatch_sdk::Event {
        kind: driftwatch_sdk::EventKind::Exec,
        process: driftwatch_sdk::Process {
            name: name.into(),
            vpid: 4,
            pname: "runc".into(),
            ..driftwatch_sdk::Process::default()
        },
        container: Some(driftwatch_sdk::Container {
            id: "c".repeat(64),
            ..driftwatch_sdk::Container::default()
        }),
        ..driftwatch_sdk::Event::default()
    }
}
