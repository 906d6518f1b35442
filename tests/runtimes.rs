//! driftwatch against real container runtimes: Docker and containerd (Debian's
//! docker.io and containerd) beside podman. The daemon's findings must name
//! the container, its image, its pod and its user; `driftwatch diff` must find
//! Docker and containerd containers by name; a runtime that is absent or
//! refuses must cost a single log line.
//!
//! Needs root, podman, containerd and dockerd (scripts/setup.sh installs them;
//! scripts/start-runtimes.sh, run here once, starts the daemons in the
//! background when they are not running, and reuses them when they are).
//! Without root the tests say SKIPPED loudly and pass, except under
//! `CI=true`, where they fail: CI runs as root. They share the daemons and the
//! kernel, so they run one at a time (`SERIAL`). CRI-O is not packaged here:
//! its client is tested against recorded answers (collector/src/container/crio.rs).

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

const IMAGE: &str = "localhost/driftwatch-runtimes-test:1";
const REPO: &str = "localhost/driftwatch-runtimes-test";
const SHELL_RULE: &str = "Container Shell Spawned";
const WRITE_RULE: &str = "Container File System Write";
const WAIT: Duration = Duration::from_secs(20);

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Without root nothing here can run: outside CI the test says SKIPPED
/// loudly and returns; under `CI=true` it fails.
macro_rules! require_root {
    () => {
        if !is_root() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{}: the runtime tests need root, and CI=true: failing instead of skipping",
                module_path!()
            );
            eprintln!(
                "\n*** SKIPPED {}: the runtime tests need root (CI runs them as root) ***\n",
                module_path!()
            );
            return;
        }
    };
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e} (installed by scripts/setup.sh?)"))
}

/// Runs `cmd args`, which must succeed; its trimmed stdout.
fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// containerd and dockerd answering, and the test image in podman, Docker
/// and containerd's `k8s.io` and `default` namespaces. Once per test run.
fn setup() -> std::sync::MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let script = support::root().join("scripts/start-runtimes.sh");
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        assert!(
            out.status.success(),
            "starting containerd and dockerd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        build_image();
    });
    guard
}

/// A busybox image with two users, built with podman and loaded into Docker
/// (`podman save` as docker-archive) and containerd (as oci-archive).
fn build_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("rootfs");
    for d in ["bin", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("copying /bin/busybox (apt-get install busybox-static)");
    for a in ["sh", "sleep", "cp", "cat", "true", "echo"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).expect("applet");
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n",
    )
    .expect("passwd");
    let tar = dir.path().join("rootfs.tar");
    let tar_s = tar.to_str().unwrap();
    ok("tar", &["-C", root.to_str().unwrap(), "-cf", tar_s, "."]);
    ok("podman", &["import", "-q", tar_s, IMAGE]);
    let docker_tar = dir.path().join("docker.tar");
    let oci_tar = dir.path().join("oci.tar");
    let (d, o) = (docker_tar.to_str().unwrap(), oci_tar.to_str().unwrap());
    ok("podman", &["save", "-q", "-o", d, IMAGE]);
    ok("docker", &["load", "-q", "-i", d]);
    ok(
        "podman",
        &["save", "-q", "--format", "oci-archive", "-o", o, IMAGE],
    );
    for ns in ["k8s.io", "default"] {
        ok("ctr", &["-n", ns, "images", "import", o]);
    }
}

fn unique(tag: &str) -> String {
    format!("dw-rt-{tag}-{}", std::process::id())
}

/// A 64-hex id, as the kubelet's CRI plugin makes them.
fn hex_id(seed: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(format!("{seed}{}", std::process::id())))
}

/// A Docker container, removed on drop.
struct Docker {
    name: String,
    id: String,
}

impl Docker {
    fn run(tag: &str) -> Docker {
        let name = unique(tag);
        let _ = run("docker", &["rm", "-f", &name]);
        let id = ok(
            "docker",
            &["run", "-d", "--name", &name, IMAGE, "sh", "-c", "sleep 300"],
        );
        Docker { name, id }
    }

    fn exec(&self, user: &str, script: &str) {
        ok(
            "docker",
            &["exec", "--user", user, &self.name, "sh", "-c", script],
        );
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        let out = run("docker", &["rm", "-f", &self.name]);
        if !out.status.success() {
            eprintln!(
                "removing docker container {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A containerd container made with `ctr run`, removed on drop.
struct Ctr {
    ns: &'static str,
    id: String,
}

impl Ctr {
    fn run(ns: &'static str, id: String, opts: &[&str]) -> Ctr {
        let c = Ctr { ns, id };
        c.remove();
        let mut args = vec!["-n", ns, "run", "-d"];
        args.extend_from_slice(opts);
        args.extend_from_slice(&[IMAGE, &c.id, "sh", "-c", "sleep 300"]);
        ok("ctr", &args);
        c
    }

    /// Runs `script` as root, or as the image's user `app` (uid 1000)
    /// through busybox `su`: `ctr task exec --user` mounts the container's
    /// snapshot a second time to read its passwd, and overlayfs then warns
    /// that the upper directory "is in-use" and the container's view of it
    /// breaks (writes fail with ENOENT).
    fn exec(&self, as_app: bool, script: &str) {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let exec_id = format!("dw-exec-{n}");
        let mut args = vec![
            "-n",
            self.ns,
            "task",
            "exec",
            "--exec-id",
            &exec_id,
            &self.id,
        ];
        if as_app {
            args.extend(["/bin/busybox", "su", "app", "-c", script]);
        } else {
            args.extend(["sh", "-c", script]);
        }
        ok("ctr", &args);
    }

    fn remove(&self) {
        let _ = run(
            "ctr",
            &["-n", self.ns, "task", "kill", "-s", "SIGKILL", &self.id],
        );
        let _ = run("ctr", &["-n", self.ns, "task", "delete", "-f", &self.id]);
        let _ = run("ctr", &["-n", self.ns, "containers", "delete", &self.id]);
    }
}

impl Drop for Ctr {
    fn drop(&mut self) {
        self.remove();
    }
}

/// `driftwatch run` with a private config; its stdout lines and stderr
/// collected.
struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    logs: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// The shell and write rules, every event printed, `extra` appended to
    /// the config (a `[runtimes]` section, say).
    fn start(extra: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = format!(
            r#"[sources.ebpf]
scope = "containers"

[sources.scan]
enabled = false

[[plugins]]
name = "shell"
builtin = "shell"

[[plugins]]
name = "write-filter"
builtin = "write-filter"

[k8s]
enabled = false

[outputs.stdout]
events = true

{extra}
"#
        );
        let cfg = support::config(dir.path(), &body);
        let mut child = support::bin()
            .args(["run", "-c"])
            .arg(&cfg)
            .env("DRIFTWATCH_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting driftwatch run");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("stdout");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(v);
                }
            }
        });
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let log_sink = logs.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("driftwatch: {line}");
                if !sent && line.contains("kernel sensor attached") {
                    let _ = tx.send(Ok(()));
                    sent = true;
                }
                if !sent && line.contains("ERROR") {
                    let _ = tx.send(Err(line.clone()));
                    sent = true;
                }
                log_sink
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("driftwatch run failed to start: {e}"),
            Err(_) => panic!("driftwatch run did not attach within 120 s"),
        }
        Daemon {
            child,
            lines,
            logs,
            _dir: dir,
        }
    }

    /// Waits until a line satisfies `pred`; returns it.
    fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + WAIT;
        loop {
            if let Some(v) = self.snapshot().into_iter().find(|v| pred(v)) {
                return v;
            }
            if Instant::now() > end {
                let all = self.snapshot();
                let tail: Vec<String> = all.iter().rev().take(30).map(|v| v.to_string()).collect();
                panic!(
                    "timed out waiting for {what}; last lines:\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Does `act` (the n-th time) until a line satisfying `pred` comes, at
    /// most 5 times 4 s: a container's first events may precede the
    /// runtime's answer (they then say unknown, by design), its later ones
    /// must carry it.
    fn act_until(&self, what: &str, act: impl Fn(usize), pred: impl Fn(&Value) -> bool) -> Value {
        for n in 0..5 {
            act(n);
            let end = Instant::now() + Duration::from_secs(4);
            while Instant::now() < end {
                if let Some(v) = self.snapshot().into_iter().find(|v| pred(v)) {
                    return v;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.wait_for(what, pred)
    }

    fn snapshot(&self) -> Vec<Value> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `container.runtime` of the write event of container `id` to a path
/// starting with `prefix` (findings carry no runtime field; events do).
fn runtime_of(d: &Daemon, id: &str, prefix: &str) -> String {
    let ev = d.wait_for("the write event", |v| {
        v["kind"] == "open_write"
            && v["container"]["id"] == id
            && v["file"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with(prefix))
            && !v["container"]["runtime"].is_null()
    });
    ev["container"]["runtime"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v["output_fields"][name].as_str().unwrap_or("")
}

/// A finding of `rule` in the container whose full id is `id` (findings
/// carry Falco's 12-character `container.id`), for which `more` holds.
fn finding(v: &Value, rule: &str, id: &str, more: impl Fn(&Value) -> bool) -> bool {
    v["rule"] == rule && field(v, "container.id") == id.get(..12).unwrap_or(id) && more(v)
}

#[test]
fn findings_name_docker_and_containerd_containers_and_their_pods() {
    require_root!();
    let _g = setup();
    let d = Daemon::start("");

    // Docker: the shell and the write name the container and its image,
    // and the user by the container's own passwd.
    let web = Docker::run("web");
    let f = d.act_until(
        "the docker write finding",
        |n| web.exec("0", &format!("echo x > /etc/dw-docker-{n}")),
        |v| {
            finding(v, WRITE_RULE, &web.id, |v| {
                field(v, "fd.name").starts_with("/etc/dw-docker-")
                    && !field(v, "container.name").is_empty()
            })
        },
    );
    for (k, want) in [
        ("container.name", web.name.as_str()),
        ("container.image.repository", REPO),
        ("container.image.tag", "1"),
        ("user.name", "root"),
    ] {
        assert_eq!(field(&f, k), want, "{k}: {f}");
    }
    assert_eq!(runtime_of(&d, &web.id, "/etc/dw-docker-"), "docker");
    let f = d.wait_for("the docker shell finding", |v| {
        finding(v, SHELL_RULE, &web.id, |v| {
            !field(v, "container.name").is_empty()
        })
    });
    assert_eq!(field(&f, "container.name"), web.name, "{f}");
    assert_eq!(field(&f, "container.image.repository"), REPO, "{f}");
    web.exec("1000", "true");
    let f = d.wait_for("the docker shell finding of uid 1000", |v| {
        finding(v, SHELL_RULE, &web.id, |v| field(v, "user.uid") == "1000")
    });
    assert_eq!(field(&f, "user.name"), "app", "{f}");

    // containerd laid out as the kubelet's CRI plugin lays a pod's container
    // out: a kubepods cgroup and the io.kubernetes.cri.* annotations. Pod
    // identity comes from them; no API server is involved.
    let pod_uid = "6b1f3c2e-0d9a-4c4e-9a51-7f2b9c1d0e11";
    let id = hex_id("cri");
    let cgroup = format!("/kubepods/besteffort/pod{pod_uid}/{id}");
    let annotations = [
        "io.kubernetes.cri.container-type=container",
        "io.kubernetes.cri.container-name=app",
        "io.kubernetes.cri.sandbox-name=web-0",
        "io.kubernetes.cri.sandbox-namespace=dw-shop",
    ];
    let uid_annotation = format!("io.kubernetes.cri.sandbox-uid={pod_uid}");
    let mut opts = vec!["--cgroup", cgroup.as_str()];
    for a in annotations.iter().chain([&uid_annotation.as_str()]) {
        opts.extend(["--annotation", a]);
    }
    let cri = Ctr::run("k8s.io", id.clone(), &opts);
    let f = d.act_until(
        "the CRI container's write finding",
        |n| cri.exec(false, &format!("echo x > /etc/dw-cri-{n}")),
        |v| {
            finding(v, WRITE_RULE, &cri.id, |v| {
                field(v, "fd.name").starts_with("/etc/dw-cri-")
                    && !field(v, "k8s.pod.name").is_empty()
            })
        },
    );
    for (k, want) in [
        ("k8s.ns.name", "dw-shop"),
        ("k8s.pod.name", "web-0"),
        ("k8s.pod.uid", pod_uid),
        ("k8s.container.name", "app"),
        ("container.name", "app"),
        ("container.image.repository", REPO),
        ("container.image.tag", "1"),
        ("user.name", "root"),
    ] {
        assert_eq!(field(&f, k), want, "{k}: {f}");
    }
    assert_eq!(runtime_of(&d, &cri.id, "/etc/dw-cri-"), "containerd");
    cri.exec(true, "true");
    let f = d.wait_for("the CRI container's shell finding of uid 1000", |v| {
        finding(v, SHELL_RULE, &cri.id, |v| field(v, "user.uid") == "1000")
    });
    assert_eq!(field(&f, "user.name"), "app", "{f}");
    assert_eq!(field(&f, "k8s.pod.name"), "web-0", "{f}");

    // A plain `ctr` container: cgroup /default/<id>, an id of containerd's
    // own. It is a container (its writes are not the host's, which the
    // write rule would leave out), named by its id.
    let plain = Ctr::run("default", unique("plain"), &[]);
    let f = d.act_until(
        "the plain ctr container's write finding",
        |n| plain.exec(false, &format!("echo x > /etc/dw-plain-{n}")),
        |v| {
            finding(v, WRITE_RULE, &plain.id, |v| {
                field(v, "fd.name").starts_with("/etc/dw-plain-")
                    && !field(v, "container.name").is_empty()
            })
        },
    );
    assert_eq!(field(&f, "container.name"), plain.id, "{f}");
    assert_eq!(field(&f, "container.image.repository"), REPO, "{f}");
    assert!(
        f["output_fields"].get("k8s.pod.name").is_none(),
        "not a pod: {f}"
    );
    assert_eq!(runtime_of(&d, &plain.id, "/etc/dw-plain-"), "containerd");

    // A process in a pid namespace of its own whose cgroup names no
    // container (here the host's cgroup): a container nobody can name,
    // never the host (review M1), so the shell rule sees it.
    let marker = unique("unshare");
    ok(
        "unshare",
        &[
            "--pid",
            "--fork",
            "/bin/sh",
            "-c",
            &format!("/bin/sh -c 'true {marker}'"),
        ],
    );
    let f = d.wait_for("the shell finding in an unnamed pid namespace", |v| {
        v["rule"] == SHELL_RULE && field(v, "proc.cmdline").contains(&marker)
    });
    assert_eq!(field(&f, "container.id"), "unknown", "{f}");

    // podman's user names, in the same daemon.
    let name = unique("podman");
    let _ = run("podman", &["rm", "-f", &name]);
    let podman_id = ok(
        "podman",
        &["run", "-d", "--name", &name, IMAGE, "sleep", "300"],
    );
    struct Podman(String);
    impl Drop for Podman {
        fn drop(&mut self) {
            let _ = run("podman", &["rm", "-f", "-t", "0", &self.0]);
        }
    }
    let _p = Podman(name.clone());
    let f = d.act_until(
        "the podman shell finding of uid 1000",
        |_| {
            ok(
                "podman",
                &["exec", "--user", "1000", &name, "sh", "-c", "true"],
            );
        },
        |v| {
            finding(v, SHELL_RULE, &podman_id, |v| {
                field(v, "user.uid") == "1000" && !field(v, "container.name").is_empty()
            })
        },
    );
    assert_eq!(field(&f, "user.name"), "app", "{f}");
    assert_eq!(field(&f, "container.name"), name, "{f}");
}

#[test]
fn diff_finds_docker_and_containerd_containers_by_name_id_and_pid() {
    require_root!();
    let _g = setup();
    let web = Docker::run("diff");
    web.exec(
        "0",
        "echo x > /etc/dw-added && cp /bin/busybox /tmp/dropped",
    );
    let diff = |query: &str| -> Value {
        let out = support::bin()
            .args(["diff", "--json", query])
            .output()
            .expect("driftwatch diff");
        assert_eq!(
            out.status.code(),
            Some(1),
            "drift shown for {query}: {}",
            support::stderr(&out)
        );
        serde_json::from_slice(&out.stdout).expect("diff JSON")
    };
    let paths = |v: &Value| -> Vec<String> {
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_string())
            .collect()
    };
    let by_name = diff(&web.name);
    assert_eq!(by_name["container"]["id"], web.id.as_str(), "{by_name}");
    assert_eq!(by_name["container"]["runtime"], "docker");
    assert_eq!(by_name["container"]["image"], IMAGE);
    assert_eq!(paths(&by_name), ["/etc/dw-added", "/tmp/dropped"]);
    // The layers diffed are Docker's own records.
    let upper = by_name["upper_dir"].as_str().unwrap();
    assert!(
        upper.starts_with("/var/lib/docker/overlay2/") && upper.ends_with("/diff"),
        "{upper}"
    );
    assert_eq!(by_name["warnings"], serde_json::json!([]));
    let pid = ok("docker", &["inspect", "-f", "{{.State.Pid}}", &web.name]);
    assert_eq!(paths(&diff(&web.id[..12])), paths(&by_name));
    assert_eq!(diff(&pid)["container"]["id"], web.id.as_str());

    // containerd: by its own id, from the snapshotter's layers.
    let plain = Ctr::run("default", unique("diff"), &[]);
    plain.exec(false, "echo x > /etc/dw-ctr");
    let v = diff(&plain.id);
    assert_eq!(v["container"]["runtime"], "containerd", "{v}");
    assert_eq!(paths(&v), ["/etc/dw-ctr"], "{v}");
    assert!(
        v["upper_dir"]
            .as_str()
            .unwrap()
            .starts_with("/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/"),
        "{v}"
    );

    // The periodic scan finds the same differences in both runtimes'
    // containers, named as diff names them.
    let scanned = scan_once(&[web.name.as_str(), plain.id.as_str()]);
    let mut got: Vec<(String, String)> = scanned
        .iter()
        .map(|e| {
            let c = e
                .container
                .as_ref()
                .expect("a scanned event has its container");
            let f = e.file.as_ref().expect("file_drift has a file");
            (c.id.clone(), f.path.clone())
        })
        .collect();
    got.sort();
    let mut want = vec![
        (web.id.clone(), "/etc/dw-added".to_string()),
        (web.id.clone(), "/tmp/dropped".to_string()),
        (plain.id.clone(), "/etc/dw-ctr".to_string()),
    ];
    want.sort();
    assert_eq!(got, want, "{scanned:?}");

    // A name nobody knows is an error (exit 2).
    let out = support::bin()
        .args(["diff", "dw-rt-nobody"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", support::stderr(&out));
}

/// One pass of the scan source over the containers `scope` names (each
/// scanned once: differences are reported once), its events.
fn scan_once(scope: &[&str]) -> Vec<driftwatch_sdk::Event> {
    use driftwatch::config::ScanConfig;
    use driftwatch::source::Source;
    use driftwatch::source::scan::Scan;
    let cfg = ScanConfig {
        interval_secs: 1,
        containers: scope.iter().map(|s| s.to_string()).collect(),
        jobs: 1,
        ..ScanConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let (ctx, mut rx, stop) = support::source_context();
        let task = tokio::spawn(Box::new(Scan::new(cfg)).run(ctx));
        let mut got = Vec::new();
        // Two or three scans: the later ones must add nothing.
        support::drain(&mut rx, Duration::from_millis(2500), &mut got).await;
        stop.send(true).expect("scan still running");
        task.await.expect("scan task").expect("scan ran");
        got
    })
}

#[test]
fn an_absent_or_refusing_runtime_costs_one_log_line() {
    require_root!();
    let _g = setup();
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.sock");
    // A socket file nobody listens on any more: connections are refused.
    let refusing = dir.path().join("refusing.sock");
    drop(std::os::unix::net::UnixListener::bind(&refusing).unwrap());
    let mut d = Daemon::start(&format!(
        "[runtimes]\ndocker_socket = \"{}\"\ncontainerd_socket = \"{}\"\ncrio_socket = \"{}\"\npodman_root = \"{}\"\n",
        absent.display(),
        refusing.display(),
        absent.display(),
        dir.path().join("no-podman").display()
    ));
    let web = Docker::run("absent");
    for i in 0..3 {
        web.exec("0", &format!("echo {i} > /etc/dw-absent-{i}"));
    }
    // The daemon runs, the container is known by its id from the cgroup,
    // and what only the runtime knows is unknown, never guessed.
    for i in 0..3 {
        let f = d.wait_for("a write finding without the runtime", |v| {
            finding(v, WRITE_RULE, &web.id, |v| {
                field(v, "fd.name") == format!("/etc/dw-absent-{i}")
            })
        });
        // Unknown: null, or Falco's <NA> where the rule renders the field.
        for k in ["container.name", "container.image.repository"] {
            let v = &f["output_fields"][k];
            assert!(v.is_null() || v == "<NA>", "{k}: {f}");
        }
    }
    // The runtime, from the cgroup alone.
    assert_eq!(runtime_of(&d, &web.id, "/etc/dw-absent-"), "docker");
    assert!(d.running(), "the daemon keeps running");
    let logs = d.logs();
    let mentioning = |p: &Path| {
        logs.iter()
            .filter(|l| l.contains(p.to_str().unwrap()))
            .count()
    };
    // Docker's and CRI-O's socket is the absent one: one line each.
    assert_eq!(mentioning(&absent), 2, "{logs:#?}");
    assert_eq!(mentioning(&refusing), 1, "{logs:#?}");
    assert!(
        logs.iter()
            .any(|l| l.contains(refusing.to_str().unwrap()) && l.contains("refused")),
        "the cause is told: {logs:#?}"
    );
}
