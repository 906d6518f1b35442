//! Golden tests: recorded events through the real default pipeline (the
//! built-in plugins as WASM components in wasmtime), checked exactly.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;

const SHELL: &str = "Container Shell Spawned";
const PM: &str = "Package Manager Execution in Container";
const DRIFT: &str = "Drift Detected (Container Image Modified Binary)";
const MEMFD: &str = "Fileless Execution in Container (memfd)";
const WRITE: &str = "Container File System Write";

/// The default pipeline.toml, with a private cache and no reload.
fn default_pipeline(dir: &std::path::Path) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(support::root().join("pipeline.toml")).unwrap();
    let body: String = shipped
        .split("[sources.ebpf]")
        .nth(1)
        .map(|rest| format!("[sources.ebpf]{rest}"))
        .unwrap();
    support::config(dir, &body)
}

/// `driftwatch replay FILE EXTRA...` through the default pipeline.
fn replay_file(file: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let cfg = default_pipeline(dir.path());
    support::bin()
        .arg("replay")
        .arg(file)
        .arg("--config")
        .arg(&cfg)
        .args(extra)
        .output()
        .unwrap()
}

fn replay(extra: &[&str]) -> (std::process::Output, Vec<Value>) {
    let out = replay_file(&support::root().join("tests/data/golden.jsonl"), extra);
    let lines = support::json_lines(&out);
    (out, lines)
}

/// The recorded output, byte for byte: a change to the schema, the rules,
/// the field rendering or the JSON writer shows up here first. When a change
/// is meant, regenerate with the command in tests/data/README.md.
#[test]
fn output_is_byte_identical_to_the_recorded_output() {
    for (extra, recorded) in [
        (&[][..], "golden.findings.jsonl"),
        (&["--events"][..], "golden.events.jsonl"),
    ] {
        let (out, _) = replay(extra);
        assert!(out.status.success(), "{}", support::stderr(&out));
        let want = std::fs::read(support::root().join("tests/data").join(recorded)).unwrap();
        assert!(
            out.stdout == want,
            "replay {extra:?} differs from tests/data/{recorded}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn every_case_fires_exactly_the_expected_rules() {
    let (out, lines) = replay(&[]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    let got: BTreeSet<(u64, String)> = lines
        .iter()
        .map(|l| {
            let pid: u64 = l["output_fields"]["proc.pid"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            (pid, l["rule"].as_str().unwrap().to_string())
        })
        .collect();
    let want: BTreeSet<(u64, String)> = [
        (101, SHELL),
        (104, SHELL),
        (106, SHELL),
        (108, SHELL),
        (109, SHELL),
        (110, SHELL),
        (111, SHELL),
        (201, PM),
        (202, PM),
        (206, PM),
        (208, PM),
        (301, DRIFT),
        (305, MEMFD),
        (307, SHELL),
        (307, DRIFT),
        (401, WRITE),
        (403, WRITE),
        (405, WRITE),
        (409, WRITE),
        (410, "Container Drift Detected (chmod)"),
    ]
    .into_iter()
    .map(|(p, r)| (p, r.to_string()))
    .collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unexpected {extra:?}"
    );
    assert_eq!(lines.len(), want.len(), "one line per finding");
}

fn finding(lines: &[Value], pid: &str, rule: &str) -> Value {
    lines
        .iter()
        .find(|l| l["output_fields"]["proc.pid"] == pid && l["rule"] == rule)
        .cloned()
        .unwrap_or_else(|| panic!("no {rule} for pid {pid}"))
}

#[test]
fn findings_have_falco_shape_and_the_seed_messages() {
    let (_, lines) = replay(&[]);
    let shell = finding(&lines, "101", SHELL);
    assert_eq!(shell["priority"], "Warning");
    assert_eq!(shell["source"], "syscall");
    assert_eq!(shell["hostname"], "node-1");
    assert_eq!(
        shell["output"],
        "Shell spawned in container (user=root shell=sh container=web image=localhost/app)"
    );
    assert_eq!(
        shell["tags"],
        serde_json::json!(["container", "drift", "shell"])
    );
    assert!(shell["time"].as_str().unwrap().ends_with('Z'));
    let f = &shell["output_fields"];
    assert_eq!(f["container.id"], "3f1c9a7be2d0");
    assert_eq!(f["container.name"], "web");
    assert_eq!(f["container.image.repository"], "localhost/app");
    assert_eq!(f["container.image.tag"], "v1");
    assert_eq!(f["proc.name"], "sh");
    assert_eq!(f["proc.pname"], "runc");
    assert_eq!(f["user.name"], "root");

    let pm = finding(&lines, "201", PM);
    assert_eq!(pm["priority"], "Error");
    assert_eq!(
        pm["output"],
        "Package manager executed in container (user=root command=apt-get install -y curl container=web image=localhost/app)"
    );
    assert_eq!(
        pm["output_fields"]["proc.cmdline"],
        "apt-get install -y curl"
    );

    let drift = finding(&lines, "301", DRIFT);
    assert_eq!(drift["priority"], "Warning");
    assert_eq!(
        drift["output"],
        "Drift detected: new binary executed in container (user=root command=x --pwn container=web image=localhost/app:v1 exe_path=/tmp/x)"
    );
    assert_eq!(
        drift["remediation"]["alertType"],
        "K8S.NODE_ImageBinaryDrift"
    );
    assert_eq!(
        drift["remediation"]["remediationSteps"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(drift["tags"], serde_json::json!(["container", "drift"]));

    let write = finding(&lines, "401", WRITE);
    assert_eq!(write["priority"], "Notice");
    assert_eq!(
        write["output"],
        "File write in container (user=root file=/etc/x container=web)"
    );
    assert_eq!(write["output_fields"]["fd.name"], "/etc/x");
    assert_eq!(write["output_fields"]["evt.type"], "open_write");

    assert_eq!(finding(&lines, "305", MEMFD)["priority"], "Critical");
}

#[test]
fn events_flag_prints_every_event_and_stats_count_them() {
    let (out, lines) = replay(&["--events", "--stats"]);
    assert!(out.status.success());
    let events = lines.iter().filter(|l| l.get("rule").is_none()).count();
    assert_eq!(events, 38);
    let stats: Value = serde_json::from_str(
        support::stderr(&out)
            .split_once('{')
            .map(|(_, r)| format!("{{{r}"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(stats["events_in"]["exec"], 27);
    assert_eq!(stats["events_in"]["open_write"], 10);
    assert_eq!(stats["events_out"], 38);
    assert_eq!(stats["findings"][SHELL], 8);
}

#[test]
fn replayed_event_output_replays_to_the_same_findings() {
    let (_, first) = replay(&["--events"]);
    let dir = tempfile::tempdir().unwrap();
    let events: String = first
        .iter()
        .filter(|l| l.get("rule").is_none())
        .map(|l| format!("{l}\n"))
        .collect();
    let file = dir.path().join("again.jsonl");
    std::fs::write(&file, events).unwrap();
    let out = replay_file(&file, &[]);
    let second = support::json_lines(&out);
    let rules = |v: &[Value]| {
        let mut r: Vec<String> = v
            .iter()
            .filter(|l| l.get("rule").is_some())
            .map(|l| l.to_string())
            .collect();
        r.sort();
        r
    };
    assert_eq!(rules(&first), rules(&second));
}

#[test]
fn msgpack_replay_matches_json_replay() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(support::root().join("tests/data/golden.jsonl")).unwrap();
    let mut bytes = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let ev: driftwatch_sdk::Event = serde_json::from_str(line).unwrap();
        bytes.extend(driftwatch_sdk::codec::encode(&ev).unwrap());
    }
    let file = dir.path().join("golden.msgpack");
    std::fs::write(&file, bytes).unwrap();
    let out = replay_file(&file, &[]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    assert_eq!(support::json_lines(&out).len(), support::golden_findings());
    let recorded = std::fs::read(support::root().join("tests/data/golden.findings.jsonl")).unwrap();
    assert!(
        out.stdout == recorded,
        "MessagePack replay differs from the JSON one"
    );
}

#[test]
fn a_bad_line_is_reported_and_the_rest_still_flows() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mixed.jsonl");
    let good = std::fs::read_to_string(support::root().join("tests/data/golden.jsonl")).unwrap();
    let first = good.lines().find(|l| l.starts_with('{')).unwrap();
    std::fs::write(
        &file,
        format!("{first}\n{{\"kind\": \"teleport\"}}\n{first}\n"),
    )
    .unwrap();
    let cfg = default_pipeline(dir.path());
    let out = support::bin()
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = support::stderr(&out);
    assert!(err.contains("line 2") && err.contains("teleport"), "{err}");
    assert_eq!(
        support::json_lines(&out).len(),
        2,
        "both good events still produce findings"
    );
}

#[test]
fn plugin_config_overrides_apply() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = support::config(
        dir.path(),
        r#"
[[plugins]]
name = "writes"
builtin = "write-filter"
[plugins.config]
exclude_prefixes = ["/etc", "/tmp"]
priority = "critical"
"#,
    );
    let out = support::bin()
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg(support::root().join("tests/data/golden.jsonl"))
        .output()
        .unwrap();
    let lines = support::json_lines(&out);
    let files: BTreeSet<&str> = lines
        .iter()
        .map(|l| l["output_fields"]["fd.name"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        BTreeSet::from([
            "/tmpx",
            "/var/logs/x",
            "/var/log/x",
            "/proc/self/attr/current",
            "/usr/local/bin/y"
        ])
    );
    assert!(lines.iter().all(|l| l["priority"] == "Critical"));
}

#[test]
fn runtime_setup_writes_do_not_fire_but_look_alikes_do() {
    // A runtime's init writing /etc/hosts before pivot_root (420, and 423:
    // the name proves nothing either way, so it is not looked at), and what
    // must still fire: the same write seen inside the root (421, a process
    // calling itself runc), and from a process that is not PID 1 (422).
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("setup.jsonl");
    let line = |pid: u32, vpid: u32, name: &str, outside: bool| {
        serde_json::json!({
            "kind": "open_write",
            "process": {"pid": pid, "vpid": vpid, "name": name},
            "container": {"id": "abc", "name": "web"},
            "file": {
                "path": "/var/lib/containers/storage/overlay/1f/merged/etc/hosts",
                "file_type": "regular",
                "outside_root": outside,
            }
        })
        .to_string()
    };
    let body = [
        line(420, 1, "runc:[2:INIT]", true),
        line(421, 1, "runc:[2:INIT]", false),
        line(422, 7, "runc:[2:INIT]", true),
        line(423, 1, "nginx", true),
    ]
    .join("\n");
    std::fs::write(&events, body).unwrap();
    let cfg = default_pipeline(dir.path());
    let out = support::bin()
        .arg("replay")
        .arg(&events)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::stderr(&out));
    let pids: BTreeSet<String> = support::json_lines(&out)
        .iter()
        .filter(|l| l["rule"] == WRITE)
        .map(|l| l["output_fields"]["proc.pid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pids, BTreeSet::from(["421", "422"].map(String::from)));
}

#[test]
fn the_example_plugin_loads_by_path_and_tags() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("nc.jsonl");
    std::fs::write(
        &events,
        r#"{"kind":"exec","process":{"pid":9,"name":"nc","args":["nc","-l","4444"]},"container":{"id":"abc","name":"db"}}
{"kind":"exec","process":{"pid":10,"name":"nc"}}
"#,
    )
    .unwrap();
    let cfg = support::config(
        dir.path(),
        &format!(
            "[[plugins]]\nname = \"tools\"\npath = \"{}\"\n",
            support::guest("driftwatch_example_suspicious_tools").display()
        ),
    );
    let out = support::bin()
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg(&events)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::stderr(&out));
    let lines = support::json_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["rule"], "Network Tool in Container");
    assert_eq!(lines[0]["output_fields"]["proc.cmdline"], "nc -l 4444");
    assert!(
        lines[0]["tags"]
            .as_array()
            .unwrap()
            .contains(&"network-tool".into())
    );
}

#[test]
fn plugin_inspect_prints_the_manifest() {
    let out = support::bin()
        .args(["plugin", "inspect"])
        .arg(support::guest("driftwatch_plugin_write_filter"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::stderr(&out));
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["name"], "write-filter");
    assert_eq!(
        m["kinds"],
        serde_json::json!(["open_write", "truncate", "rename", "link", "symlink"])
    );
    // A bad config is refused by the plugin's own init.
    let out = support::bin()
        .args([
            "plugin",
            "inspect",
            "--config-json",
            r#"{"exclude_prefixes": ["tmp"]}"#,
        ])
        .arg(support::guest("driftwatch_plugin_write_filter"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        support::stderr(&out).contains("not an absolute path"),
        "{}",
        support::stderr(&out)
    );
    // Not a component at all.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"definitely not wasm").unwrap();
    let out = support::bin()
        .args(["plugin", "inspect"])
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(support::stderr(&out).contains("junk.wasm is not a usable driftwatch plugin"));
}

/// Shells and package managers are known by the program they run, not by
/// the comm the caller picked (a symlink's name, `busybox`, the loader).
#[test]
fn evasions_of_names_and_layers_are_caught() {
    let out = replay_file(&support::root().join("tests/data/evasions.jsonl"), &[]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    let got: BTreeSet<(String, String)> = support::json_lines(&out)
        .iter()
        .map(|l| {
            (
                l["output_fields"]["proc.pid"].as_str().unwrap().to_string(),
                l["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("901", SHELL),
        ("902", SHELL),
        ("903", SHELL),
        ("904", PM),
        ("905", PM),
        ("910", MEMFD),
        ("911", DRIFT),
        ("912", DRIFT),
        ("913", DRIFT),
        ("915", DRIFT),
        ("917", SHELL),
        ("918", SHELL),
    ]
    .iter()
    .map(|(p, r)| (p.to_string(), r.to_string()))
    .collect();
    assert_eq!(got, want);
}

/// A queue capacity tokio cannot allocate used to panic the replay; it is
/// now a configuration error naming the key, its range and its line.
#[test]
fn an_impossible_queue_capacity_is_a_clean_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = support::config(
        dir.path(),
        "[pipeline]\nqueue_capacity = 4611686018427387904\n",
    );
    let out = support::bin()
        .arg("replay")
        .arg(support::root().join("tests/data/golden.jsonl"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = support::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("queue_capacity must be between 1 and 1048576"),
        "{err}"
    );
    assert!(err.contains("line "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
