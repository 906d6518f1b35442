//! The sandbox holds: a deliberately hostile plugin (tests/plugins/hostile,
//! built as a real component) is contained, reported and counted, and every
//! event still reaches the output according to `on_error`.

mod support;

use std::path::Path;
use std::process::Output;

use serde_json::Value;

/// Ten container shells (pids 1..=10) and, when `boom`, one event named
/// "boom" (pid 99) that the hostile plugin can be told to choke on.
fn events(dir: &Path, boom: bool) -> std::path::PathBuf {
    let mut text = String::new();
    for pid in 1..=10 {
        text.push_str(&format!(
            "{{\"kind\":\"exec\",\"process\":{{\"pid\":{pid},\"vpid\":5,\"name\":\"sh\",\"pname\":\"runc\"}},\"container\":{{\"id\":\"c1\",\"name\":\"web\"}}}}\n"
        ));
        if boom && pid == 5 {
            text.push_str("{\"kind\":\"exec\",\"process\":{\"pid\":99,\"name\":\"boom\"},\"container\":{\"id\":\"c1\"}}\n");
        }
    }
    let p = dir.join("events.jsonl");
    std::fs::write(&p, text).unwrap();
    p
}

struct Run {
    out: Output,
    lines: Vec<Value>,
    stats: Value,
}

/// Replays through [hostile(mode) → shell], printing events and counters.
fn run(hostile: &str, batch_size: usize, boom: bool) -> Run {
    run_with_deadline(hostile, batch_size, boom, 50)
}

fn run_with_deadline(hostile: &str, batch_size: usize, boom: bool, deadline_ms: u64) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let cfg = support::config(
        dir.path(),
        &format!(
            r#"
[pipeline]
batch_size = {batch_size}

[[plugins]]
name = "hostile"
path = "{}"
memory_limit_mib = 32
deadline_ms = {deadline_ms}
max_output_mib = 1
{hostile}

[[plugins]]
name = "shell"
builtin = "shell"
"#,
            support::guest("driftwatch_test_hostile").display()
        ),
    );
    let out = support::bin()
        .env("DRIFTWATCH_LOG", "info")
        .args(["replay", "--events", "--stats", "--config"])
        .arg(&cfg)
        .arg(events(dir.path(), boom))
        .output()
        .unwrap();
    let err = support::stderr(&out);
    let json_start = err.rfind("\n{\n").map(|i| i + 1).unwrap_or(0);
    let stats: Value = serde_json::from_str(&err[json_start..])
        .unwrap_or_else(|e| panic!("no stats JSON ({e}) in {err}"));
    let lines = support::json_lines(&out);
    Run { out, lines, stats }
}

fn is_health(line: &Value) -> bool {
    line["tags"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == "health"))
}

impl Run {
    /// Findings from the plugins; the sensor's own health findings
    /// (rule "Sensor ...") are counted by [`Run::health`].
    fn findings(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| l.get("rule").is_some() && !is_health(l))
            .count()
    }
    fn health(&self, rule: &str) -> usize {
        self.lines
            .iter()
            .filter(|l| is_health(l) && l["rule"] == rule)
            .count()
    }
    fn events(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| l.get("rule").is_none() && l["kind"] != "sensor")
            .count()
    }
    fn failures(&self, kind: &str) -> u64 {
        self.stats["plugin_failures"]["hostile"][kind]
            .as_u64()
            .unwrap_or(0)
    }
    fn stderr(&self) -> String {
        support::stderr(&self.out)
    }
}

fn assert_contained(mode: &str, kind: &str, message: &str) {
    assert_contained_within(mode, kind, message, 50);
}

/// `deadline_ms`: wall-clock time a call may take; generous where the mode
/// does real work, so a loaded machine does not turn it into a timeout.
fn assert_contained_within(mode: &str, kind: &str, message: &str, deadline_ms: u64) {
    let r = run_with_deadline(
        &format!("[plugins.config]\nmode = \"{mode}\""),
        512,
        false,
        deadline_ms,
    );
    assert!(r.out.status.success(), "{}", r.stderr());
    // on_error = pass: every event went on to the shell plugin and the output.
    assert_eq!(r.events(), 10, "{mode}: events lost\n{}", r.stderr());
    assert_eq!(
        r.findings(),
        10,
        "{mode}: later plugin starved\n{}",
        r.stderr()
    );
    assert!(
        r.failures(kind) >= 1,
        "{mode}: not counted as {kind}: {}",
        r.stats
    );
    let err = r.stderr();
    assert!(
        err.contains("hostile") && err.contains(message),
        "{mode}: stderr lacks {message:?}:\n{err}"
    );
}

#[test]
fn infinite_loop_hits_the_cpu_deadline() {
    assert_contained("loop", "deadline", "exceeded its CPU deadline of 50 ms");
}

#[test]
fn memory_bomb_hits_the_memory_cap() {
    assert_contained_within(
        "memory-bomb",
        "memory",
        "exceeded its memory limit of 32 MiB",
        5000,
    );
}

#[test]
fn panic_is_a_trap_and_its_message_is_logged() {
    assert_contained("panic", "trap", "trapped");
    let r = run("[plugins.config]\nmode = \"panic\"", 512, false);
    assert!(
        r.stderr().contains("hostile plugin panics on purpose"),
        "{}",
        r.stderr()
    );
}

#[test]
fn guest_error_is_reported() {
    assert_contained("error", "error", "hostile plugin returns an error");
}

#[test]
fn garbage_output_is_malformed() {
    assert_contained("garbage", "malformed", "malformed verdicts");
}

#[test]
fn a_finding_of_an_undeclared_rule_is_refused() {
    assert_contained(
        "undeclared-rule",
        "undeclared_rule",
        "undeclared rule: verdict names rule 3, the manifest declares 1",
    );
}

#[test]
fn a_fired_rule_is_completed_from_its_template() {
    let r = run("[plugins.config]\nmode = \"fire\"", 512, false);
    assert!(r.out.status.success(), "{}", r.stderr());
    let fired: Vec<_> = r
        .lines
        .iter()
        .filter(|l| l["rule"] == "Hostile Rule")
        .collect();
    assert_eq!(fired.len(), 10, "{}", r.stderr());
    for f in fired {
        assert_eq!(f["priority"], "Notice");
        assert_eq!(f["plugin"], "hostile");
        let name = f["output_fields"]["proc.name"].as_str().unwrap();
        assert_eq!(f["output"], format!("hostile saw {name}"));
    }
}

#[test]
fn wrong_verdict_count_is_refused() {
    assert_contained(
        "wrong-count",
        "wrong_count",
        "returned 11 verdicts for 10 events",
    );
}

#[test]
fn huge_output_is_refused() {
    assert_contained_within(
        "huge-output",
        "output_too_large",
        "over its output limit",
        5000,
    );
}

#[test]
fn log_flood_is_rate_limited() {
    let r = run_with_deadline("[plugins.config]\nmode = \"log-flood\"", 512, false, 5000);
    assert_eq!(r.findings(), 10);
    let err = r.stderr();
    assert_eq!(
        err.matches("flood ").count(),
        20,
        "only the per-call budget is printed"
    );
    assert!(err.contains("suppressed 1980 log lines"), "{err}");
}

#[test]
fn on_error_drop_fails_closed_and_counts() {
    let r = run(
        "on_error = \"drop\"\n[plugins.config]\nmode = \"panic\"",
        512,
        false,
    );
    assert_eq!(r.events(), 0);
    assert_eq!(r.findings(), 0);
    assert_eq!(r.stats["dropped_by_plugin"]["hostile"], 10);
}

#[test]
fn one_poisonous_event_does_not_blind_the_plugin_to_its_batch() {
    // The plugin traps on any batch holding "boom"; with on_error = drop
    // only that event may be lost: bisection gets verdicts for the rest.
    let r = run(
        "on_error = \"drop\"\n[plugins.config]\nmode = \"panic\"\ntrigger = \"boom\"",
        512,
        true,
    );
    assert_eq!(r.events(), 10, "{}", r.stderr());
    assert_eq!(r.findings(), 10);
    assert_eq!(r.stats["dropped_by_plugin"]["hostile"], 1);
    assert!(r.lines.iter().all(|l| l["process"]["name"] != "boom"));
}

#[test]
fn repeated_failures_quarantine_the_plugin_and_events_still_flow() {
    let r = run(
        "quarantine_after = 2\n[plugins.config]\nmode = \"error\"",
        1,
        false,
    );
    assert_eq!(r.events(), 10);
    assert_eq!(r.findings(), 10);
    assert_eq!(r.stats["plugin_quarantines"]["hostile"], 1);
    assert_eq!(r.health("Sensor Plugin Quarantined"), 1, "{}", r.stderr());
    // Two failed batches, then it sat out the rest (backoff is 1 s).
    assert_eq!(r.failures("error"), 2, "{}", r.stats);
    assert!(
        r.stderr()
            .contains("plugin quarantined after repeated failures")
    );
}

#[test]
fn drop_verdicts_end_the_path() {
    let r = run("[plugins.config]\nmode = \"drop-all\"", 512, false);
    assert_eq!(r.events(), 0);
    assert_eq!(r.findings(), 0, "later plugins never saw the events");
    assert_eq!(r.stats["dropped_by_plugin"]["hostile"], 10);
}

#[test]
fn a_prefilter_limits_what_the_plugin_is_given() {
    // The numeric field goes through the same formatting as templates.
    let r = run(
        "[plugins.config]\nmode = \"mark\"\n\
         [[plugins.config.prefilter]]\nin = { field = \"proc.pid\", values = [\"3\", \"4\"] }",
        512,
        false,
    );
    assert!(r.out.status.success(), "{}", r.stderr());
    let mut seen: Vec<u64> = r
        .lines
        .iter()
        .filter(|l| l["output_fields"]["hostile.seen"] == "yes")
        .map(|l| {
            l["output_fields"]["proc.pid"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [3, 4], "{}", r.stderr());
    assert_eq!(
        r.stats["plugin_calls"]["hostile"]["events"], 2,
        "{}",
        r.stats
    );
    assert_eq!(
        r.stats["plugin_calls"]["shell"]["events"], 10,
        "{}",
        r.stats
    );
    // The events it was not given still went on, to the shell plugin too.
    assert_eq!(r.events(), 10);
    assert_eq!(r.findings(), 10);
}

/// `driftwatch check` on a pipeline with the hostile plugin named "picky"
/// and `config_toml` after it: must exit 2; returns its stderr.
fn check_refuses_picky(config_toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cfg = support::config(
        dir.path(),
        &format!(
            "[[plugins]]\nname = \"picky\"\npath = \"{}\"\n{config_toml}",
            support::guest("driftwatch_test_hostile").display()
        ),
    );
    let out = support::bin().arg("check").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    support::stderr(&out)
}

#[test]
fn a_prefilter_on_an_unknown_field_is_a_clear_error() {
    let err =
        check_refuses_picky("[[plugins.config.prefilter]]\nexists = { field = \"proc.nmae\" }\n");
    assert!(
        err.contains(
            "plugin picky returned a bad manifest: prefilter names unknown field \"proc.nmae\""
        ),
        "{err}"
    );
}

#[test]
fn init_failure_is_a_clear_error_naming_the_plugin() {
    let err = check_refuses_picky(
        "[plugins.config]\nmode = \"fail-init\"\ninit_error = \"needs a license key\"\n",
    );
    assert!(
        err.contains(
            "plugin picky refused its configuration: returned an error: needs a license key"
        ),
        "{err}"
    );
}

#[test]
fn a_declared_rule_naming_an_unknown_field_is_refused_at_load() {
    let err = check_refuses_picky("[plugins.config]\nmode = \"init-bad-rule\"\n");
    assert!(
        err.contains("plugin picky")
            && err.contains("rule \"Hostile Rule\": unknown field %proc.nmae"),
        "{err}"
    );
}

#[test]
fn missing_and_invalid_plugin_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = support::config(
        dir.path(),
        "[[plugins]]\nname = \"gone\"\npath = \"plugins/gone.wasm\"\n",
    );
    let out = support::bin().arg("check").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = support::stderr(&out);
    assert!(
        err.contains("plugin gone: cannot read") && err.contains("plugins/gone.wasm"),
        "{err}"
    );

    std::fs::write(dir.path().join("bad.wasm"), b"\0asm\x01\0\0\0garbage").unwrap();
    let cfg = support::config(
        dir.path(),
        "[[plugins]]\nname = \"bad\"\npath = \"bad.wasm\"\n",
    );
    let out = support::bin().arg("check").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        support::stderr(&out).contains("compiling bad"),
        "{}",
        support::stderr(&out)
    );
}

#[test]
fn broken_pipeline_toml_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = support::config(
        dir.path(),
        "[[plugins]]\nname = \"shell\"\nbuiltin = \"shell\"\ndeadline = 5\n",
    );
    let out = support::bin().arg("check").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = support::stderr(&out);
    assert!(err.contains(&cfg.display().to_string()), "{err}");
    // Where the mistake is in the file as written (after the test header).
    let text = std::fs::read_to_string(&cfg).unwrap();
    let line = 1 + text
        .lines()
        .position(|l| l == "deadline = 5")
        .expect("the mistake is in the file");
    assert!(
        err.contains(&format!("line {line}, column 1")) && err.contains("unknown field `deadline`"),
        "{err}"
    );
}

#[test]
fn plugins_import_nothing_but_host_log() {
    let mut cfg = wasmtime::Config::new();
    cfg.wasm_component_model(true);
    let engine = wasmtime::Engine::new(&cfg).unwrap();
    let dir = std::fs::read_dir(driftwatch::plugin::builtin::GUEST_DIR).unwrap();
    let mut checked = 0;
    for entry in dir {
        let path = entry.unwrap().path();
        let component = wasmtime::component::Component::from_file(&engine, &path).unwrap();
        let imports: Vec<String> = component
            .component_type()
            .imports(&engine)
            .map(|(name, _)| name.to_string())
            .collect();
        assert_eq!(
            imports,
            ["driftwatch:plugin/host@0.1.0"],
            "{}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 6, "every guest was checked");
}

/// The deadline clock rests while no plugin runs; a call that starts after
/// a long idle spell must still be interrupted on time.
#[test]
fn the_deadline_holds_after_an_idle_spell() {
    use driftwatch::plugin::Engine;
    use driftwatch::plugin::cache::ComponentCache;
    use driftwatch::plugin::host::{Limits, PluginError};
    use std::time::{Duration, Instant};

    let engine = Engine::new(ComponentCache::disabled()).unwrap();
    let bytes = std::fs::read(support::guest("driftwatch_test_hostile")).unwrap();
    let mut config = Vec::new();
    rmp_serde::encode::write_named(&mut config, &serde_json::json!({"mode": "loop"})).unwrap();
    let limits = Limits {
        deadline: Duration::from_millis(50),
        ..Limits::default()
    };
    let plugin = engine.load("hostile", &bytes, limits, config).unwrap();
    let mut inst = plugin.instantiate().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut batch = Vec::new();
    driftwatch_sdk::codec::write_array_header(&mut batch, 1);
    driftwatch_sdk::codec::encode_into(&mut batch, &driftwatch_sdk::Event::default()).unwrap();
    let start = Instant::now();
    let err = inst
        .process_batch(&batch, 1)
        .expect_err("the loop must be cut");
    assert!(matches!(err, PluginError::Deadline { .. }), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

/// Components that no guest toolchain emits but an attacker can write by
/// hand: a core module whose `start` function runs at instantiation, and
/// modules with more (or larger) linear memories than the ABI needs. They
/// export `init` and `process-batch` with the plugin world's types, so
/// they link and the host gets as far as instantiating them.
mod crafted {
    use wasm_encoder::{
        CanonicalOption, CodeSection, ComponentBuilder, ComponentExportKind, ComponentValType,
        ExportKind, ExportSection, Function, FunctionSection, MemorySection, MemoryType, Module,
        PrimitiveValType, StartSection, TypeSection, ValType,
    };

    /// `memories` memories of `pages` 64 KiB pages each; with `start_loop`
    /// the module's start function never returns.
    pub fn component(memories: u32, pages: u64, start_loop: bool) -> Vec<u8> {
        let mut module = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], []);
        types
            .ty()
            .function([ValType::I32, ValType::I32], [ValType::I32]);
        types.ty().function([ValType::I32; 4], [ValType::I32]);
        module.section(&types);
        let mut funcs = FunctionSection::new();
        funcs.function(0).function(1).function(2);
        module.section(&funcs);
        let mut mems = MemorySection::new();
        for _ in 0..memories {
            mems.memory(MemoryType {
                minimum: pages,
                maximum: None,
                memory64: false,
                shared: false,
                page_size_log2: None,
            });
        }
        module.section(&mems);
        let mut exports = ExportSection::new();
        exports
            .export("memory", ExportKind::Memory, 0)
            .export("init", ExportKind::Func, 1)
            .export("process-batch", ExportKind::Func, 1)
            .export("cabi_realloc", ExportKind::Func, 2);
        module.section(&exports);
        if start_loop {
            module.section(&StartSection { function_index: 0 });
        }
        let mut code = CodeSection::new();
        let mut start = Function::new([]);
        if start_loop {
            start
                .instructions()
                .loop_(wasm_encoder::BlockType::Empty)
                .br(0)
                .end();
        }
        start.instructions().end();
        code.function(&start);
        // Returns a pointer to a zeroed `result`: ok, an empty list.
        let mut call = Function::new([]);
        call.instructions().i32_const(0).end();
        code.function(&call);
        let mut realloc = Function::new([]);
        realloc.instructions().i32_const(64).end();
        code.function(&realloc);
        module.section(&code);

        let mut c = ComponentBuilder::default();
        let m = c.core_module(None, &module);
        let inst = c.core_instantiate(None, m, []);
        let memory = c.core_alias_export(None, inst, "memory", ExportKind::Memory);
        let realloc = c.core_alias_export(None, inst, "cabi_realloc", ExportKind::Func);
        let core_call = c.core_alias_export(None, inst, "init", ExportKind::Func);
        let (bytes, ty) = c.type_defined(None);
        ty.list(PrimitiveValType::U8);
        let (res, ty) = c.type_defined(None);
        ty.result(
            Some(ComponentValType::Type(bytes)),
            Some(ComponentValType::Primitive(PrimitiveValType::String)),
        );
        let opts = || {
            [
                CanonicalOption::UTF8,
                CanonicalOption::Memory(memory),
                CanonicalOption::Realloc(realloc),
            ]
        };
        for (name, param) in [("init", "config"), ("process-batch", "events")] {
            let (fty, mut ty) = c.type_function(None);
            ty.params([(param, ComponentValType::Type(bytes))])
                .result(Some(ComponentValType::Type(res)));
            let f = c.lift_func(None, core_call, fty, opts());
            c.export(name, ComponentExportKind::Func, f, None);
        }
        c.finish()
    }
}

/// `driftwatch plugin inspect` on hand-made component bytes, with a time
/// limit: returns (exit code, stderr, seconds taken).
fn inspect_crafted(bytes: &[u8]) -> (Option<i32>, String, f64) {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crafted.wasm");
    std::fs::write(&path, bytes).unwrap();
    let start = Instant::now();
    let mut child = support::bin()
        .args(["plugin", "inspect"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A hang is the bug this guards against: kill it rather than wait.
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        support::stderr(&out),
        start.elapsed().as_secs_f64(),
    )
}

#[test]
fn a_start_function_that_never_returns_hits_the_deadline() {
    let (code, err, secs) = inspect_crafted(&crafted::component(1, 1, true));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("failed to start: exceeded its CPU deadline of 50 ms"),
        "{err}"
    );
    assert!(secs < 10.0, "took {secs} s");
}

#[test]
fn the_memory_cap_covers_all_memories_together() {
    // Two memories of 40 MiB each: each alone is under the 64 MiB default,
    // together they are not.
    let (code, err, _) = inspect_crafted(&crafted::component(2, 640, false));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("failed to start: exceeded its memory limit of 64 MiB"),
        "{err}"
    );
}

#[test]
fn more_memories_than_a_plugin_needs_are_refused() {
    let (code, err, _) = inspect_crafted(&crafted::component(20, 1, false));
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("failed to start") && err.contains("memory"),
        "{err}"
    );
}

#[test]
fn a_crafted_component_within_limits_gets_as_far_as_its_manifest() {
    // The control: the same shape, one small memory and no loop, is
    // instantiated and called; it fails only on its empty manifest.
    let (code, err, _) = inspect_crafted(&crafted::component(1, 1, false));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("returned a bad manifest"), "{err}");
}

#[test]
fn a_loop_in_init_is_cut_by_the_deadline() {
    let err = check_refuses_picky("[plugins.config]\nmode = \"init-loop\"\n");
    assert!(
        err.contains("plugin picky refused its configuration: exceeded its CPU deadline of 50 ms"),
        "{err}"
    );
}

/// Creating an instance is timed apart from compiling it: the chain thread
/// does it after every failure, so it must be cut as promptly as a call.
#[test]
fn instantiation_and_init_are_cut_within_the_deadline() {
    use driftwatch::plugin::Engine;
    use driftwatch::plugin::cache::ComponentCache;
    use driftwatch::plugin::host::{Limits, PluginError};
    use std::time::{Duration, Instant};

    let engine = Engine::new(ComponentCache::disabled()).unwrap();
    let limits = Limits {
        deadline: Duration::from_millis(50),
        ..Limits::default()
    };
    let start_loop = engine
        .load(
            "start-loop",
            &crafted::component(1, 1, true),
            limits,
            Vec::new(),
        )
        .unwrap();
    let t = Instant::now();
    let err = start_loop
        .instantiate()
        .err()
        .expect("the loop must be cut");
    let took = t.elapsed();
    assert!(matches!(err, PluginError::Start { .. }), "{err}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    let mut config = Vec::new();
    rmp_serde::encode::write_named(&mut config, &serde_json::json!({"mode": "init-loop"})).unwrap();
    let bytes = std::fs::read(support::guest("driftwatch_test_hostile")).unwrap();
    let init_loop = engine.load("init-loop", &bytes, limits, config).unwrap();
    let t = Instant::now();
    let err = init_loop.instantiate().err().expect("the loop must be cut");
    let took = t.elapsed();
    assert!(matches!(err, PluginError::Init { .. }), "{err}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn a_memory_bomb_in_init_hits_the_memory_cap() {
    let err = check_refuses_picky(
        "memory_limit_mib = 32\ndeadline_ms = 5000\n[plugins.config]\nmode = \"init-memory-bomb\"\n",
    );
    assert!(
        err.contains("plugin picky refused its configuration: exceeded its memory limit of 32 MiB"),
        "{err}"
    );
}

/// Every guest this build makes fits the per-store counts with room to
/// spare, so the limits refuse only what no real plugin needs.
#[test]
fn every_guest_fits_the_store_limits() {
    use driftwatch::plugin::Engine;
    use driftwatch::plugin::cache::ComponentCache;
    use driftwatch::plugin::host::Limits;

    let engine = Engine::new(ComponentCache::disabled()).unwrap();
    let mut config = Vec::new();
    rmp_serde::encode::write_named(&mut config, &serde_json::json!({})).unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(driftwatch::plugin::builtin::GUEST_DIR).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).unwrap();
        let plugin = engine
            .load(&name, &bytes, Limits::default(), config.clone())
            .unwrap();
        if let Err(e) = plugin.instantiate() {
            // Some guests refuse an empty config; that is past instantiation.
            assert!(
                matches!(e, driftwatch::plugin::PluginError::Init { .. }),
                "{name}: {e}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 6);
}

/// A cache entry altered on disk (one flipped byte of code) is refused
/// before it is deserialized, and rebuilt; so are entries that are not
/// ours or that others can write.
#[test]
fn a_tampered_cache_entry_is_refused_and_rebuilt() {
    use driftwatch::plugin::cache::{ComponentCache, Outcome};
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let cache = ComponentCache::new(&cache_dir);
    let mut cfg = wasmtime::Config::new();
    cfg.wasm_component_model(true).epoch_interruption(true);
    let engine = wasmtime::Engine::new(&cfg).unwrap();
    let bytes = std::fs::read(support::guest("driftwatch_test_hostile")).unwrap();
    let load = || cache.load_traced(&engine, &bytes).unwrap().1;

    assert_eq!(load(), Outcome::Miss);
    assert_eq!(load(), Outcome::Hit);
    let entry = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .expect("an entry was written");
    let meta = std::fs::metadata(&entry).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let mut code = std::fs::read(&entry).unwrap();
    let mid = code.len() / 2;
    code[mid] ^= 0x5a;
    std::fs::write(&entry, &code).unwrap();
    match load() {
        Outcome::Refused(why) => assert!(why.contains("digest"), "{why}"),
        other => panic!("tampered entry used: {other:?}"),
    }
    assert_eq!(load(), Outcome::Hit, "rebuilt after refusal");

    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    match load() {
        Outcome::Refused(why) => assert!(why.contains("writable"), "{why}"),
        other => panic!("world-writable entry used: {other:?}"),
    }
    assert_eq!(load(), Outcome::Hit);

    // SAFETY: chown on a path we own, with valid ids.
    let c = std::ffi::CString::new(entry.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
    match load() {
        Outcome::Refused(why) => assert!(why.contains("owned by uid 65534"), "{why}"),
        other => panic!("foreign entry used: {other:?}"),
    }
    assert_eq!(load(), Outcome::Hit);

    // A planted symlink to a valid entry elsewhere is not followed.
    let elsewhere = dir.path().join("elsewhere.cwasm");
    std::fs::rename(&entry, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &entry).unwrap();
    match load() {
        Outcome::Refused(why) => assert!(why.contains("symlink"), "{why}"),
        other => panic!("symlinked entry used: {other:?}"),
    }
    assert_eq!(load(), Outcome::Hit);
}
