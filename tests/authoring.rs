//! The plugin author's loop through the real binary: `plugin new` makes a
//! crate that passes its own test, `plugin build` turns it (and the Python
//! network-tool plugin) into components the unchanged host loads, and
//! `plugin test` prints the daemon's Falco JSON with a meaningful exit code.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{bin, json_lines, root, stderr};

/// Nested cargo builds share one target dir across runs, so only the first
/// run compiles the SDK's dependencies.
fn guest_target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("authoring-target")
}

fn run(cmd: &mut Command) -> Output {
    cmd.env("CARGO_TARGET_DIR", guest_target_dir())
        .output()
        .expect("running a command")
}

/// `driftwatch plugin SUB` with the tests' shared compile cache: a
/// Python component compiles once per content, not once per command.
fn plugin(sub: &str) -> Command {
    let mut c = bin();
    c.args(["plugin", sub, "--cache-dir"])
        .arg(support::cache_dir());
    c
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

fn exec_event(name: &str, args: &[&str], container: bool) -> String {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.insert(0, name.to_string());
    let mut ev = serde_json::json!({
        "schema_version": 1,
        "time_ns": 1_700_000_000_000_000_000u64,
        "kind": "exec",
        "hostname": "node-1",
        "process": {"pid": 4242, "vpid": 7, "name": name, "exe_path": format!("/usr/bin/{name}"),
                    "args": args, "pname": "sh", "uid": 0, "user_name": "root"},
    });
    if container {
        ev["container"] = serde_json::json!({
            "id": "ab".repeat(32), "name": "web", "runtime": "podman",
            "image_repository": "localhost/app", "image_tag": "v1"
        });
    }
    ev.to_string()
}

fn write_events(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

#[test]
fn new_plugin_passes_its_test_builds_and_fires() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("download-tools");
    let out = run(bin()
        .args(["plugin", "new", "download-tools", "--dir"])
        .arg(&dir));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    for f in ["Cargo.toml", "src/lib.rs", "README.md"] {
        assert!(dir.join(f).is_file(), "plugin new did not write {f}");
    }
    // A second `new` into the same folder must not overwrite the author's work.
    let again = run(bin()
        .args(["plugin", "new", "download-tools", "--dir"])
        .arg(&dir));
    assert_eq!(code(&again), 2);
    assert!(stderr(&again).contains("not empty"), "{}", stderr(&again));

    // Its own test passes natively, as created.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tested = run(Command::new(&cargo)
        .args(["test", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env_remove("RUSTFLAGS"));
    assert!(
        tested.status.success(),
        "the scaffold's own test failed:\n{}\n{}",
        String::from_utf8_lossy(&tested.stdout),
        stderr(&tested)
    );
    assert!(
        String::from_utf8_lossy(&tested.stdout).contains("1 passed"),
        "{}",
        String::from_utf8_lossy(&tested.stdout)
    );

    let wasm = tmp.path().join("download_tools.wasm");
    let built = run(bin()
        .args(["plugin", "build", "--cache-dir"])
        .arg(support::cache_dir())
        .arg(&dir)
        .arg("--out")
        .arg(&wasm));
    assert_eq!(code(&built), 0, "{}", stderr(&built));
    let said = String::from_utf8_lossy(&built.stdout);
    assert!(said.contains("download-tools 0.1.0 [exec]"), "{said}");

    // Something fires: exit 1, and stdout is the daemon's Falco JSON.
    let events = write_events(
        tmp.path(),
        "mixed.jsonl",
        &[
            exec_event("ls", &["-l"], true),
            exec_event("curl", &["-o", "/tmp/x", "http://example.invalid/x"], true),
            exec_event("curl", &["http://example.invalid/"], false),
        ],
    );
    let tested = run(plugin("test").arg(&wasm).arg(&events));
    assert_eq!(code(&tested), 1, "{}", stderr(&tested));
    let findings = json_lines(&tested);
    assert_eq!(findings.len(), 1, "{findings:?}");
    let f = &findings[0];
    assert_eq!(f["rule"], "Download tool in container");
    assert_eq!(f["priority"], "Notice");
    assert_eq!(f["source"], "syscall");
    assert_eq!(f["hostname"], "node-1");
    assert_eq!(f["plugin"], "download_tools");
    assert_eq!(f["output_fields"]["container.name"], "web");
    assert_eq!(
        f["output_fields"]["proc.cmdline"],
        "curl -o /tmp/x http://example.invalid/x"
    );
    let report = stderr(&tested);
    assert!(
        report.contains("event 2 (exec curl): pass, 1 finding(s): Download tool in container"),
        "{report}"
    );
    assert!(report.contains("event 1 (exec ls): not given"), "{report}");
    assert!(
        report.contains("event 3 (exec curl): not given"),
        "{report}"
    );

    // The config reaches the plugin: with another list nothing fires.
    let quiet = run(bin()
        .args(["plugin", "test", "--cache-dir"])
        .arg(support::cache_dir())
        .arg(&wasm)
        .arg(&events)
        .args(["--config-json", r#"{"names": ["wget"]}"#]));
    assert_eq!(code(&quiet), 0, "{}", stderr(&quiet));
    assert!(json_lines(&quiet).is_empty());

    // Errors are 2: a config the plugin refuses, a bad event, a missing file.
    let refused = run(bin()
        .args(["plugin", "test", "--cache-dir"])
        .arg(support::cache_dir())
        .arg(&wasm)
        .arg(&events)
        .args(["--config-json", r#"{"nmaes": ["wget"]}"#]));
    assert_eq!(code(&refused), 2);
    assert!(stderr(&refused).contains("nmaes"), "{}", stderr(&refused));
    let bad = write_events(tmp.path(), "bad.jsonl", &["{\"kind\": 3}".to_string()]);
    let broken = run(plugin("test").arg(&wasm).arg(&bad));
    assert_eq!(code(&broken), 2);
    assert!(stderr(&broken).contains("line 1"), "{}", stderr(&broken));
    let missing = run(bin()
        .args(["plugin", "test", "--cache-dir"])
        .arg(support::cache_dir())
        .arg(tmp.path().join("nope.wasm"))
        .arg(&events));
    assert_eq!(code(&missing), 2);
    assert!(
        stderr(&missing).contains("nope.wasm"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn plugin_build_explains_a_folder_that_is_no_plugin() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(plugin("build").arg(tmp.path()));
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(
        err.contains("neither a Cargo.toml") && err.contains("app.py"),
        "{err}"
    );
    let bad_name = run(bin()
        .args(["plugin", "new", "Bad_Name", "--dir"])
        .arg(tmp.path().join("x")));
    assert_eq!(code(&bad_name), 2);
    assert!(
        stderr(&bad_name).contains("lowercase"),
        "{}",
        stderr(&bad_name)
    );
}

/// componentize-py, or None when this machine has none and this is not CI
/// (scripts/setup.sh installs it; under CI its absence fails the test).
fn componentize_py() -> Option<PathBuf> {
    let found = driftwatch::authoring::toolchain::find_componentize_py();
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "componentize-py is missing under CI=true: scripts/setup.sh installs it"
        );
        eprintln!("SKIPPED: componentize-py is not installed (scripts/setup.sh installs it)");
    }
    found
}

#[test]
fn python_network_tool_builds_and_detects_in_the_unchanged_host() {
    if componentize_py().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let wasm = tmp.path().join("network_tool.wasm");
    let built = run(bin()
        .args(["plugin", "build", "--cache-dir"])
        .arg(support::cache_dir())
        .arg(root().join("plugins/network-tool"))
        .arg("--out")
        .arg(&wasm));
    assert_eq!(code(&built), 0, "{}", stderr(&built));
    assert!(
        String::from_utf8_lossy(&built.stdout).contains("network-tool 0.1.0 [exec]"),
        "{}",
        String::from_utf8_lossy(&built.stdout)
    );

    let events = write_events(
        tmp.path(),
        "events.jsonl",
        &[
            exec_event("nc", &["-lvp", "4444"], true),
            exec_event("ls", &[], true),
            exec_event("nmap", &["-sS", "10.0.0.0/24"], false),
            exec_event("tcpdump", &["-i", "eth0"], true),
            exec_event("ncat", &["10.0.0.1", "80"], true),
        ],
    );
    let tested = run(plugin("test").arg(&wasm).arg(&events));
    assert_eq!(code(&tested), 1, "{}", stderr(&tested));
    let findings = json_lines(&tested);
    let names: Vec<&str> = findings
        .iter()
        .map(|f| f["output_fields"]["proc.name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nc", "tcpdump", "ncat"], "{findings:?}");
    for f in &findings {
        assert_eq!(f["rule"], "Network tool launched in container");
        assert_eq!(f["priority"], "Notice");
        assert_eq!(f["plugin"], "network_tool");
        assert_eq!(f["output_fields"]["container.id"], "abababababab");
    }
    assert_eq!(
        findings[0]["output"],
        "Network tool launched in container (user=root command=nc -lvp 4444 container=web image=localhost/app)"
    );
    let tags: Vec<&str> = findings[0]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(
        tags.contains(&"network-tool") && tags.contains(&"network"),
        "{tags:?}"
    );

    // The list is configurable: only socat now, so none of these fire.
    let quiet = run(bin()
        .args(["plugin", "test", "--cache-dir"])
        .arg(support::cache_dir())
        .arg(&wasm)
        .arg(&events)
        .args([
            "--config-json",
            r#"{"tools": ["socat"], "priority": "warning"}"#,
        ]));
    assert_eq!(code(&quiet), 0, "{}", stderr(&quiet));
    let socat = write_events(
        tmp.path(),
        "socat.jsonl",
        &[exec_event("socat", &["-"], true)],
    );
    let loud = run(plugin("test").arg(&wasm).arg(&socat).args([
        "--config-json",
        r#"{"tools": ["socat"], "priority": "warning"}"#,
    ]));
    assert_eq!(code(&loud), 1, "{}", stderr(&loud));
    assert_eq!(json_lines(&loud)[0]["priority"], "Warning");

    // A config mistake is the plugin's init error, named.
    let refused = run(bin()
        .args(["plugin", "test", "--cache-dir"])
        .arg(support::cache_dir())
        .arg(&wasm)
        .arg(&events)
        .args(["--config-json", r#"{"tool": ["nc"]}"#]));
    assert_eq!(code(&refused), 2);
    assert!(
        stderr(&refused).contains("unknown config key(s) tool"),
        "{}",
        stderr(&refused)
    );

    // The daemon's own path: a pipeline.toml entry, replayed.
    let config = support::config(
        tmp.path(),
        &format!(
            "[[plugins]]\nname = \"network-tool\"\npath = \"{}\"\ndeadline_ms = 1000\n",
            wasm.display()
        ),
    );
    let replayed = run(bin()
        .arg("replay")
        .arg(&events)
        .arg("--config")
        .arg(&config));
    assert_eq!(code(&replayed), 0, "{}", stderr(&replayed));
    let daemon = json_lines(&replayed);
    assert_eq!(daemon.len(), 3, "{daemon:?}");
    // Same Falco JSON as `plugin test` but for the plugin's configured name.
    let mut expected = findings[0].clone();
    expected["plugin"] = "network-tool".into();
    assert_eq!(daemon[0], expected);
}

#[test]
fn setup_installs_the_componentize_py_the_build_expects() {
    let setup = std::fs::read_to_string(root().join("scripts/setup.sh")).unwrap();
    let pinned = format!(
        "componentize_py_version={}\n",
        driftwatch::authoring::toolchain::COMPONENTIZE_PY_VERSION
    );
    assert!(
        setup.contains(&pinned),
        "scripts/setup.sh does not install componentize-py {}",
        driftwatch::authoring::toolchain::COMPONENTIZE_PY_VERSION
    );
}
