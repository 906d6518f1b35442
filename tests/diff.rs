//! `driftwatch diff` and the drift scan against real podman containers.
//!
//! Needs root and podman (scripts/setup.sh installs it). Every container
//! gets a unique name and is removed when its guard drops, pass or fail.

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use driftwatch::config::ScanConfig;
use driftwatch::source::Source;
use driftwatch::source::scan::Scan;
use serde_json::Value;
use sha2::{Digest, Sha256};

const IMAGE: &str = "localhost/driftwatch-diff-test:1";
const APPLETS: &[&str] = &[
    "sh", "ls", "cp", "cat", "sleep", "rm", "mkdir", "chmod", "chown", "echo", "touch", "mv", "ln",
    "mkfifo", "printf",
];
/// What podman + runc put in a fresh container's upper layer (docs/diff.md).
const RUNTIME_FILES: &[&str] = &[
    "/dev",
    "/etc/hostname",
    "/etc/hosts",
    "/etc/mtab",
    "/etc/resolv.conf",
    "/proc",
    "/run",
    "/run/.containerenv",
    "/sys",
];

fn podman(args: &[&str]) -> Output {
    let out = Command::new("podman")
        .args(args)
        .output()
        .expect("running podman (installed by scripts/setup.sh)");
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The test image, built once per test run from the host's busybox.
fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("rootfs");
        let mk = |p: &str| std::fs::create_dir_all(root.join(p)).expect("mkdir");
        for d in [
            "bin",
            "etc",
            "tmp",
            "data/sub",
            "data/gone",
            "usr/share/doc",
        ] {
            mk(d);
        }
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copying /bin/busybox");
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).expect("applet");
        }
        let write = |p: &str, s: &str| std::fs::write(root.join(p), s).expect("write");
        write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
        write("data/hello.txt", "hello\n");
        write("data/keep.txt", "keep\n");
        write("data/chmod.txt", "mode\n");
        write("data/sub/a", "a\n");
        write("data/gone/x", "x\n");
        write("usr/share/doc/readme", "readme\n");
        // An absolute symlink: followed, it would lead to the host's /etc.
        std::os::unix::fs::symlink("/etc", root.join("lnk")).expect("symlink");
        let tar = dir.path().join("rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("tar");
        assert!(st.success());
        podman(&[
            "import",
            "--quiet",
            tar.to_str().expect("utf-8 path"),
            IMAGE,
        ]);
    });
    IMAGE
}

/// A running container, removed on drop.
struct Ctr {
    name: String,
}

impl Ctr {
    fn start(tag: &str) -> Ctr {
        let name = format!("dwdiff-{tag}-{}", std::process::id());
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &name])
            .output();
        podman(&["run", "-d", "--name", &name, image(), "sleep", "100000"]);
        Ctr { name }
    }

    fn sh(&self, script: &str) {
        podman(&["exec", &self.name, "sh", "-c", script]);
    }

    fn inspect(&self, format: &str) -> String {
        stdout(&podman(&["inspect", &self.name, "--format", format]))
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.name])
            .output();
    }
}

/// Runs `driftwatch diff ARGS --json`: (exit code, parsed report).
fn diff_json(args: &[&str]) -> (i32, Value) {
    let out = support::bin()
        .arg("diff")
        .args(args)
        .arg("--json")
        .output()
        .expect("running driftwatch");
    let code = out.status.code().unwrap_or(-1);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "diff {args:?} (exit {code}) printed no JSON: {e}\nstderr: {}",
            support::stderr(&out)
        )
    });
    (code, v)
}

fn entries(v: &Value) -> Vec<&Value> {
    v["entries"].as_array().expect("entries").iter().collect()
}

fn changes(v: &Value) -> BTreeSet<(String, String)> {
    entries(v)
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap_or_default().to_string(),
                e["change"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn entry<'a>(v: &'a Value, path: &str) -> &'a Value {
    entries(v)
        .into_iter()
        .find(|e| e["path"] == path)
        .unwrap_or_else(|| panic!("{path} not in the diff: {v:#}"))
}

fn sha(s: &[u8]) -> String {
    hex::encode(Sha256::digest(s))
}

#[test]
fn a_fresh_container_diffs_clean_apart_from_the_runtime_files() {
    let c = Ctr::start("fresh");
    let (code, v) = diff_json(&[&c.name]);
    assert_eq!(code, 0, "{v:#}");
    assert!(entries(&v).is_empty(), "{v:#}");
    assert_eq!(v["counts"]["runtime_hidden"], RUNTIME_FILES.len());

    let (code, v) = diff_json(&[&c.name, "--include-runtime"]);
    assert_eq!(code, 1);
    let paths: BTreeSet<String> = changes(&v).into_iter().map(|(p, _)| p).collect();
    let expected: BTreeSet<String> = RUNTIME_FILES.iter().map(|s| s.to_string()).collect();
    assert_eq!(paths, expected, "{v:#}");
    assert!(entries(&v).iter().all(|e| e["runtime_created"] == true));

    let out = support::bin().args(["diff", &c.name]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("0 added, 0 modified, 0 metadata only, 0 removed"),
        "{text}"
    );
    assert!(
        !text.contains('\x1b'),
        "no colour when stdout is not a terminal"
    );
}

#[test]
fn added_modified_chmodded_and_deleted_files_are_listed_exactly() {
    let c = Ctr::start("changes");
    c.sh(concat!(
        "echo new > /data/new.txt; ",
        "echo changed >> /data/hello.txt; ",
        "chmod 600 /data/chmod.txt; ",
        "rm /data/keep.txt; ",
        "rm -r /data/gone; ",
        "mkdir -p /opt/tool/lib; printf 'x' > /opt/tool/lib/f; ",
        "cp /bin/busybox /opt/tool/run; ",
        "rm -r /data/sub; mkdir /data/sub; echo b > /data/sub/b; ",
        "chmod 700 /usr/share/doc; ",
        "rm /lnk; mkdir /lnk; echo mine > /lnk/passwd",
    ));
    let (code, v) = diff_json(&[&c.name]);
    assert_eq!(code, 1, "{v:#}");
    let expected: BTreeSet<(String, String)> = [
        ("/data/new.txt", "added"),
        ("/data/hello.txt", "modified"),
        ("/data/chmod.txt", "metadata"),
        ("/data/keep.txt", "removed"),
        ("/data/gone", "removed"),
        ("/opt", "added"),
        ("/opt/tool", "added"),
        ("/opt/tool/lib", "added"),
        ("/opt/tool/lib/f", "added"),
        ("/opt/tool/run", "added"),
        // Re-created directory: opaque, its old content is gone.
        ("/data/sub/a", "removed"),
        ("/data/sub/b", "added"),
        ("/usr/share/doc", "metadata"),
        // A symlink in the image replaced by a directory; its file is
        // compared with nothing, never with the host's /etc/passwd.
        ("/lnk", "modified"),
        ("/lnk/passwd", "added"),
    ]
    .iter()
    .map(|(p, c)| (p.to_string(), c.to_string()))
    .collect();
    assert_eq!(changes(&v), expected, "{v:#}");

    let new = entry(&v, "/data/new.txt");
    assert_eq!(new["sha256"], sha(b"new\n"));
    assert_eq!(new["file_type"], "regular");
    assert_eq!(new["size"], 4);
    assert_eq!(new["executable"], false);

    let hello = entry(&v, "/data/hello.txt");
    assert_eq!(hello["sha256"], sha(b"hello\nchanged\n"));
    assert_eq!(hello["image"]["sha256"], sha(b"hello\n"));

    let chmod = entry(&v, "/data/chmod.txt");
    assert_eq!(chmod["mode"], "0600");
    assert_eq!(chmod["image"]["mode"], "0644");
    assert_eq!(chmod["sha256"], sha(b"mode\n"));
    assert_eq!(chmod["image"]["sha256"], sha(b"mode\n"));

    let removed = entry(&v, "/data/keep.txt");
    assert_eq!(removed["sha256"], sha(b"keep\n"));
    assert_eq!(entry(&v, "/data/gone")["file_type"], "directory");
    assert_eq!(entry(&v, "/lnk")["image"]["file_type"], "symlink");
    assert_eq!(entry(&v, "/lnk/passwd")["sha256"], sha(b"mine\n"));

    let busybox = std::fs::read("/bin/busybox").unwrap();
    let run = entry(&v, "/opt/tool/run");
    assert_eq!(run["elf"], true);
    assert_eq!(run["executable"], true);
    assert_eq!(run["sha256"], sha(&busybox));
    let count = |change: &str| expected.iter().filter(|(_, c)| c == change).count();
    assert_eq!(v["counts"]["added"], count("added"));
    assert_eq!(v["counts"]["removed"], count("removed"));

    // Filters: executables, kinds of change, and both.
    let (code, v) = diff_json(&[&c.name, "--only", "executables"]);
    assert_eq!(code, 1);
    let paths: Vec<String> = changes(&v).into_iter().map(|(p, _)| p).collect();
    assert_eq!(paths, ["/opt/tool/run"]);
    let (_, v) = diff_json(&[&c.name, "--only", "removed,metadata"]);
    assert!(
        changes(&v)
            .iter()
            .all(|(_, k)| k == "removed" || k == "metadata")
    );
    assert_eq!(changes(&v).len(), count("removed") + count("metadata"));
    let (code, v) = diff_json(&[&c.name, "--only", "removed,executables"]);
    assert_eq!(code, 0, "no removed executables: no drift shown");
    assert!(entries(&v).is_empty());
    let out = support::bin()
        .args(["diff", &c.name, "--only", "bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    // The table names every path and counts them.
    let out = support::bin().args(["diff", &c.name]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for (p, _) in &expected {
        assert!(text.contains(p.as_str()), "{p} missing from:\n{text}");
    }
    assert!(
        text.contains("8 added, 2 modified, 2 metadata only, 3 removed"),
        "{text}"
    );
}

#[test]
fn containers_resolve_by_id_short_id_name_and_pid() {
    let c = Ctr::start("resolve");
    c.sh("echo x > /marker");
    let id = c.inspect("{{.Id}}");
    let pid = c.inspect("{{.State.Pid}}");
    assert_eq!(id.len(), 64);
    for query in [id.as_str(), &id[..12], c.name.as_str(), pid.as_str()] {
        let (code, v) = diff_json(&[query]);
        assert_eq!(code, 1, "{query}: {v:#}");
        assert_eq!(v["container"]["id"], id.as_str(), "{query}");
        assert_eq!(v["container"]["name"], c.name.as_str(), "{query}");
        assert_eq!(changes(&v).len(), 1, "{query}: {v:#}");
        entry(&v, "/marker");
    }
}

fn diff_error(query: &str) -> String {
    let out = support::bin().args(["diff", query]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{query}: {out:?}");
    assert!(out.stdout.is_empty());
    support::stderr(&out)
}

#[test]
fn stopped_unknown_and_host_targets_are_clear_errors() {
    let name = format!("dwdiff-stopped-{}", std::process::id());
    let _ = Command::new("podman").args(["rm", "-f", &name]).output();
    podman(&["create", "--name", &name, image(), "sleep", "100000"]);
    let guard = Ctr { name: name.clone() };
    let e = diff_error(&name);
    assert!(e.contains("is not running"), "{e}");
    assert!(e.contains(&name), "{e}");
    drop(guard);

    let e = diff_error("dwdiff-no-such-container");
    assert!(
        e.contains("no container matches \"dwdiff-no-such-container\""),
        "{e}"
    );
    let e = diff_error(&std::process::id().to_string());
    assert!(e.contains("is not in a container"), "{e}");
}

#[test]
fn the_scan_source_reports_each_difference_once() {
    let c = Ctr::start("scan");
    c.sh("echo one > /data/one.txt; cp /bin/busybox /bin/dropped");
    let id = c.inspect("{{.Id}}");
    let cfg = ScanConfig {
        interval_secs: 1,
        containers: vec![c.name.clone()],
        jobs: 1,
        ..ScanConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let events = rt.block_on(async {
        let (ctx, mut rx, stop) = support::source_context();
        let task = tokio::spawn(Box::new(Scan::new(cfg)).run(ctx));
        let mut got = Vec::new();
        // Several scans with the first changes, then a new change and
        // several more.
        support::drain(&mut rx, Duration::from_millis(3500), &mut got).await;
        let first = got.len();
        let name = c.name.clone();
        tokio::task::spawn_blocking(move || {
            podman(&[
                "exec",
                &name,
                "sh",
                "-c",
                "echo two > /data/one.txt; rm /data/hello.txt",
            ])
        })
        .await
        .unwrap();
        support::drain(&mut rx, Duration::from_millis(3500), &mut got).await;
        stop.send(true).unwrap();
        task.await.unwrap().unwrap();
        (first, got)
    });
    let (first, events) = events;
    let seen: Vec<(String, String, Option<String>)> = events
        .iter()
        .map(|e| {
            let f = e.file.as_ref().expect("file_drift has a file");
            (
                f.path.clone(),
                f.change.map(|c| c.as_str().to_string()).unwrap_or_default(),
                f.sha256.clone(),
            )
        })
        .collect();
    assert_eq!(first, 2, "first scans: {seen:?}");
    let expected = [
        (
            "/bin/dropped".to_string(),
            "added".to_string(),
            Some(sha(&std::fs::read("/bin/busybox").unwrap())),
        ),
        (
            "/data/one.txt".to_string(),
            "added".to_string(),
            Some(sha(b"one\n")),
        ),
        (
            "/data/hello.txt".to_string(),
            "removed".to_string(),
            Some(sha(b"hello\n")),
        ),
        (
            "/data/one.txt".to_string(),
            "added".to_string(),
            Some(sha(b"two\n")),
        ),
    ];
    let mut first_two = seen[..2].to_vec();
    first_two.sort();
    assert_eq!(first_two, expected[..2].to_vec());
    let mut later = seen[2..].to_vec();
    later.sort();
    assert_eq!(later, expected[2..].to_vec(), "{seen:?}");
    for e in &events {
        assert_eq!(e.kind, driftwatch_sdk::EventKind::FileDrift);
        let ctr = e.container.as_ref().unwrap();
        assert_eq!(ctr.id, id);
        assert_eq!(ctr.name.as_deref(), Some(c.name.as_str()));
        assert_eq!(e.hostname, "test-host");
    }
    let dropped = events
        .iter()
        .find_map(|e| e.file.as_ref().filter(|f| f.path == "/bin/dropped"))
        .unwrap();
    assert!(dropped.elf && dropped.executable && dropped.upper_layer);
}

/// Hostile names and trees made inside a real container: a file name that
/// would erase the table's lines above it, and a binary nested deeper than
/// PATH_MAX. The table shows the name escaped; both are found.
#[test]
fn hostile_names_are_escaped_and_deep_binaries_found() {
    let c = Ctr::start("hostile");
    c.sh(concat!(
        "cd /data; touch \"$(printf 'evil\\033[1A\\033[2Kharmless')\"; ",
        "touch \"$(printf 'cr\\rover')\"; ",
        // Two chains of 15 levels of 252-byte names (3.8 KB each: a shell
        // cannot `cd` past PATH_MAX), the second moved to the bottom of
        // the first: the binary ends up 7.6 KB deep.
        "n=dddddddddd; n=$n$n$n$n$n; n=$n$n$n$n$n; ",
        "mk() { cd $1; i=10; while [ $i -lt 25 ]; do mkdir $i$n; cd $i$n; i=$((i+1)); done; }; ",
        "mkdir /data/x /data/y; xp=$(mk /data/x; pwd); ",
        "(mk /data/y; cp /bin/busybox miner); mv /data/y \"$xp/\"",
    ));
    let out = support::bin()
        .arg("diff")
        .arg(&c.name)
        .output()
        .expect("running driftwatch");
    assert_eq!(out.status.code(), Some(1), "{}", support::stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        !table.contains('\x1b') && !table.contains('\r'),
        "raw control characters reached the table:\n{table:?}"
    );
    assert!(
        table.contains("/data/evil\\x1b[1A\\x1b[2Kharmless"),
        "{table}"
    );
    assert!(table.contains("/data/cr\\rover"), "{table}");
    let miner = table
        .lines()
        .find(|l| l.contains("/miner"))
        .unwrap_or_else(|| panic!("the deep binary is missing:\n{table}"));
    assert!(miner.contains("elf"), "{miner}");
    assert!(!table.contains("warning:"), "{table}");

    let (_, v) = diff_json(&[&c.name]);
    let deep = entries(&v)
        .into_iter()
        .find(|e| e["path"].as_str().is_some_and(|p| p.ends_with("/miner")))
        .expect("deep binary in JSON");
    let path = deep["path"].as_str().unwrap();
    assert!(path.len() > 7000, "{} bytes: {path}", path.len());
    assert_eq!(deep["change"], "added");
}
