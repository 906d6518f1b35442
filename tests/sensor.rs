//! The kernel sensor end to end: `driftwatch run` against the real kernel
//! and real podman containers, asserting on the findings and events it
//! prints.
//!
//! Needs root, podman and the busybox-static package (scripts/setup.sh
//! installs them). Without root every test says SKIPPED loudly and passes,
//! except under `CI=true`, where it fails: CI runs as root. The tests share the podman daemon and the kernel, so
//! they run one at a time (`SERIAL`).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

const IMAGE: &str = "localhost/driftwatch-sensor-test:1";
const SHELL_RULE: &str = "Container Shell Spawned";
const PKG_RULE: &str = "Package Manager Execution in Container";
const DRIFT_RULE: &str = "Drift Detected (Container Image Modified Binary)";
const WRITE_RULE: &str = "Container File System Write";
const WAIT: Duration = Duration::from_secs(20);

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Without root the sensor cannot load: outside CI the test says SKIPPED
/// loudly and returns; under `CI=true` (CI runs as root) it fails, so a CI
/// that lost root cannot pass by running nothing.
macro_rules! require_root {
    () => {
        if !is_root() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{}: the kernel sensor tests need root, and CI=true: failing instead of skipping",
                module_path!()
            );
            eprintln!(
                "\n*** SKIPPED {}: the kernel sensor tests need root (CI runs them as root) ***\n",
                module_path!()
            );
            return;
        }
    };
}

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn podman(args: &[&str]) -> String {
    let out = Command::new("podman")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("podman {args:?}: {e} (is podman installed? scripts/setup.sh)"));
    assert!(
        out.status.success(),
        "podman {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A busybox image built from the host's busybox-static: applets as
/// symlinks, plus two real copies (`/usr/bin/uname`, `/usr/bin/id`) that
/// tests overwrite or run unchanged.
fn build_image() {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if *built {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("rootfs");
    for d in ["bin", "usr/bin", "etc", "tmp", "var/log", "usr/local/bin"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox is not installed (apt-get install busybox-static)");
    std::fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
    for applet in [
        "sh", "ls", "cp", "cat", "sleep", "echo", "chmod", "rm", "mv", "mkdir", "true", "printf",
        "ln", "chown", "truncate",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
    }
    for real in ["usr/bin/uname", "usr/bin/id"] {
        std::fs::copy(busybox, root.join(real)).expect("copy");
    }
    // The dynamic loader and libc, a dynamic program and a script, all
    // files of the image (the loader and script tests run them as such).
    for (from, to) in [
        ("/lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2"),
        (
            "/lib/x86_64-linux-gnu/libc.so.6",
            "lib/x86_64-linux-gnu/libc.so.6",
        ),
    ] {
        let to = root.join(to);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copying {from}: {e}"));
    }
    dynamic_tool(&root.join("usr/local/bin"));
    std::fs::write(root.join("usr/local/bin/img.sh"), "#!/bin/sh\nsleep 0\n").expect("script");
    std::fs::set_permissions(
        root.join("usr/local/bin/img.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n",
    )
    .expect("passwd");
    let tar = dir.path().join("rootfs.tar");
    let out = sh(&format!(
        "tar -C {} -cf {} . && podman import -q {} {IMAGE}",
        root.display(),
        tar.display(),
        tar.display()
    ));
    assert!(
        out.status.success(),
        "building the test image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    *built = true;
}

/// A running container, removed on drop.
struct Container {
    name: String,
    id: String,
}

impl Container {
    /// Started with a shell as its main process (the entrypoint).
    fn start(tag: &str) -> Container {
        Container::start_with(tag, &[], &["sh", "-c", "while true; do sleep 1; done"])
    }

    /// Started with `podman run` options `opts` and command `cmd`.
    fn start_with(tag: &str, opts: &[&str], cmd: &[&str]) -> Container {
        let name = format!("dw-sensor-{tag}-{}", std::process::id());
        let _ = Command::new("podman").args(["rm", "-f", &name]).output();
        let mut args = vec!["run", "-d", "--name", &name];
        args.extend_from_slice(opts);
        args.push(IMAGE);
        args.extend_from_slice(cmd);
        let id = podman(&args);
        Container { name, id }
    }

    fn exec(&self, script: &str) -> String {
        podman(&["exec", &self.name, "sh", "-c", script])
    }

    fn exec_as(&self, uid: &str, script: &str) -> String {
        podman(&["exec", "--user", uid, &self.name, "sh", "-c", script])
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.name])
            .output();
    }
}

/// `driftwatch run` with a private config; its stdout lines collected.
struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start(events: bool) -> Daemon {
        Daemon::start_with(events, "")
    }

    /// With `ebpf` appended to the `[sources.ebpf]` table.
    fn start_with(events: bool, ebpf: &str) -> Daemon {
        Daemon::start_full(events, ebpf, "")
    }

    /// The config of [`Daemon::start_with`] plus the tables `extra` at its
    /// end, hot-reloaded.
    fn config_body(events: bool, ebpf: &str, extra: &str) -> String {
        format!(
            r#"[sources.ebpf]
scope = "containers"
ring_buffer_kib = 8192
{ebpf}

[[plugins]]
name = "shell"
builtin = "shell"

[[plugins]]
name = "package-manager"
builtin = "package-manager"

[[plugins]]
name = "drift-binary"
builtin = "drift-binary"

[[plugins]]
name = "write-filter"
builtin = "write-filter"

[[plugins]]
name = "exec-bit"
builtin = "exec-bit"

[[plugins]]
name = "io-uring"
builtin = "io-uring"

[outputs.stdout]
events = {events}

{extra}
"#
        )
    }

    fn start_full(events: bool, ebpf: &str, extra: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = Daemon::config_body(events, ebpf, extra);
        let cfg = support::config(dir.path(), &body);
        if !extra.is_empty() {
            let text = std::fs::read_to_string(&cfg).expect("reading the config");
            std::fs::write(
                &cfg,
                text.replace("hot_reload = false", "hot_reload = true"),
            )
            .expect("writing the config");
        }
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
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("driftwatch: {line}");
                if !sent && line.contains("kernel sensor attached") {
                    let _ = tx.send(Ok(()));
                    sent = true;
                }
                if !sent && line.contains("error") {
                    let _ = tx.send(Err(line.clone()));
                    sent = true;
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("driftwatch run failed to start: {e}"),
            Err(_) => panic!("driftwatch run did not attach within 120 s"),
        }
        Daemon { child, lines, dir }
    }

    /// Rewrites the config's `extra` tables (hot reload picks it up).
    fn reconfigure(&self, events: bool, ebpf: &str, extra: &str) {
        let cfg = self.dir.path().join("pipeline.toml");
        let text = std::fs::read_to_string(&cfg).expect("reading the config");
        let head = text
            .split("[sources.ebpf]")
            .next()
            .unwrap_or_default()
            .to_string();
        let body = Daemon::config_body(events, ebpf, extra);
        std::fs::write(&cfg, format!("{head}{body}")).expect("writing the config");
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
                let tail: Vec<String> = all.iter().rev().take(40).map(|v| v.to_string()).collect();
                panic!(
                    "timed out waiting for {what}; last lines:\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn snapshot(&self) -> Vec<Value> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("driftwatch did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every thread of the running daemon holds only the capabilities
/// privileges.rs keeps (CAP_SYS_ADMIN only while the scan is on, which these
/// daemons leave at its default), in every set, with no_new_privs set.
fn assert_least_privilege(d: &Daemon) {
    use driftwatch::privileges::{
        CAP_BPF, CAP_DAC_READ_SEARCH, CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_SYS_PTRACE, ThreadCaps,
        bit,
    };
    let allowed =
        bit(CAP_BPF) | bit(CAP_SYS_PTRACE) | bit(CAP_DAC_READ_SEARCH) | bit(CAP_SYS_ADMIN);
    let dir = format!("/proc/{}/task", d.child.id());
    let mut threads = 0;
    for entry in std::fs::read_dir(&dir).expect("listing the daemon's threads") {
        let path = entry.expect("a task entry").path().join("status");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue; // the thread exited
        };
        let path = path.display().to_string();
        let caps = ThreadCaps::parse(&text, &path).expect("parsing a thread's status");
        assert!(caps.within(allowed, true), "{path}: {caps:?}");
        assert_eq!(caps.effective & bit(CAP_SYS_MODULE), 0, "{path}");
        assert_ne!(caps.effective & bit(CAP_BPF), 0, "{path}: CAP_BPF kept");
        assert!(
            text.lines().any(|l| l.replace(' ', "") == "NoNewPrivs:\t1"),
            "{path}: no_new_privs is set"
        );
        threads += 1;
    }
    // The async runtime, the chain, the outputs, the plugin engine's ticker.
    assert!(threads >= 4, "only {threads} threads seen");
}

fn rule(v: &Value) -> &str {
    v["rule"].as_str().unwrap_or("")
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v["output_fields"][name].as_str().unwrap_or("")
}

/// A finding of `rule_name` in container `c`, whose fields satisfy `extra`.
fn finding_in(c: &Container, rule_name: &str, v: &Value) -> bool {
    rule(v) == rule_name
        && c.id.starts_with(field(v, "container.id"))
        && field(v, "container.id").len() >= 12
}

fn event_in<'a>(c: &Container, v: &'a Value, kind: &str) -> Option<&'a Value> {
    (v["kind"] == kind && v["container"]["id"] == c.id.as_str()).then_some(v)
}

fn assert_identity(c: &Container, v: &Value) {
    assert_eq!(field(v, "container.name"), c.name, "{v}");
    assert_eq!(
        field(v, "container.image.repository"),
        "localhost/driftwatch-sensor-test",
        "{v}"
    );
    assert_eq!(field(v, "container.image.tag"), "1", "{v}");
}

fn setup() -> Option<std::sync::MutexGuard<'static, ()>> {
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    build_image();
    Some(guard)
}

/// The runtime's threads woken per second, from their voluntary context
/// switches over `span`.
fn runtime_wakeups_per_sec(d: &Daemon, span: Duration) -> f64 {
    let count = || -> u64 {
        let dir = format!("/proc/{}/task", d.child.id());
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("listing the daemon's threads") {
            let task = entry.expect("a task entry").path();
            let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if comm.trim() != "tokio-rt-worker" {
                continue;
            }
            let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
            n += status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
        n
    };
    let before = count();
    std::thread::sleep(span);
    (count() - before) as f64 / span.as_secs_f64()
}

/// With nothing happening the daemon sleeps: the kernel wakes it for the
/// first record after its drains found the rings empty, instead of it
/// draining every `drain_interval_ms` (100 wake-ups a second at the
/// default; about 4 a second now, the once-a-second tick's).
#[test]
fn an_idle_sensor_sleeps_until_the_first_record() {
    require_root!();
    let _g = setup();
    let d = Daemon::start(true);
    let c = Container::start_with("idle", &[], &["sleep", "1000"]);
    d.wait_for("the entrypoint's exec event", |v| {
        event_in(&c, v, "exec").is_some()
    });
    std::thread::sleep(Duration::from_secs(1));
    let idle = runtime_wakeups_per_sec(&d, Duration::from_secs(4));
    assert!(
        idle < 25.0,
        "{idle:.1} wake-ups a second with nothing to read"
    );
    // The first record after the quiet is read, on both lanes.
    c.exec("echo probe > /etc/idle-probe; /bin/true idle-probe");
    d.wait_for("the exec after the quiet", |v| {
        event_in(&c, v, "exec").is_some_and(|v| v["process"]["args"][1] == "idle-probe")
    });
    d.wait_for("the write after the quiet", |v| {
        event_in(&c, v, "open_write").is_some_and(|v| v["file"]["path"] == "/etc/idle-probe")
    });
}

#[test]
fn exec_findings_on_real_containers() {
    require_root!();
    let _g = setup();
    let d = Daemon::start(true);
    let c = Container::start("exec");

    // The entrypoint shell: reported as an event with vpid 1 and a runtime
    // parent, and exempt from the shell rule.
    let entry = d.wait_for("the entrypoint's exec event", |v| {
        event_in(&c, v, "exec").is_some_and(|v| v["process"]["vpid"] == 1)
    });
    assert_eq!(entry["process"]["name"], "sh", "{entry}");
    let pname = entry["process"]["pname"].as_str().unwrap_or("");
    // Started by the runtime, from outside the container.
    assert_eq!(entry["process"]["parent_foreign"], true, "{entry}");
    assert_eq!(entry["process"]["prev_exe_foreign"], true, "{entry}");
    assert_eq!(entry["process"]["exe_source"], "image", "{entry}");
    assert_eq!(entry["container"]["name"], c.name.as_str(), "{entry}");
    assert_eq!(entry["process"]["exe_path"], "/bin/busybox", "{entry}");
    assert_eq!(entry["process"]["exe_lower_layer"], true, "{entry}");
    assert_eq!(entry["process"]["exe_upper_layer"], false, "{entry}");
    assert_eq!(entry["process"]["cwd"], "/", "{entry}");
    assert_eq!(
        entry["process"]["args"],
        serde_json::json!(["sh", "-c", "while true; do sleep 1; done"]),
        "{entry}"
    );
    assert!(
        entry["process"]["pid_ns"].as_u64().unwrap_or(0) > 0,
        "{entry}"
    );

    // podman exec sh: fires, with identity filled in.
    c.exec("true");
    let f = d.wait_for("the podman exec shell finding", |v| {
        finding_in(&c, SHELL_RULE, v)
    });
    assert_identity(&c, &f);
    let ev = d.wait_for("the podman exec shell event", |v| {
        event_in(&c, v, "exec")
            .is_some_and(|v| v["process"]["name"] == "sh" && v["process"]["vpid"] != 1)
    });
    assert!(ev["process"]["vpid"].as_u64().unwrap_or(0) > 1, "{ev}");
    // user.name from the container's own /etc/passwd, the uid where it has none.
    assert_eq!(field(&f, "user.name"), "root", "{f}");
    // All of the above ran after the daemon dropped its capabilities: the
    // user name came through /proc/<pid>/root with only what it kept.
    assert_least_privilege(&d);
    c.exec_as("1000", "true");
    let f = d.wait_for("the shell finding of uid 1000", |v| {
        finding_in(&c, SHELL_RULE, v) && field(v, "user.uid") == "1000"
    });
    assert_eq!(field(&f, "user.name"), "app", "{f}");
    c.exec_as("4242", "true");
    let f = d.wait_for("the shell finding of uid 4242", |v| {
        finding_in(&c, SHELL_RULE, v) && field(v, "user.uid") == "4242"
    });
    assert_eq!(field(&f, "user.name"), "4242", "{f}");

    // A package manager by name.
    c.exec("printf '#!/bin/sh\\necho installing\\n' > /tmp/apk && chmod +x /tmp/apk && /tmp/apk add curl");
    let f = d.wait_for("the package manager finding", |v| {
        finding_in(&c, PKG_RULE, v)
    });
    assert_identity(&c, &f);
    assert!(field(&f, "proc.cmdline").contains("add curl"), "{f}");

    // A binary copied in at run time, then an image binary overwritten in
    // place: both drift. An unchanged image binary is not.
    c.exec("cp /bin/busybox /tmp/echo && /tmp/echo copied");
    let f = d.wait_for("drift for a copied binary", |v| {
        finding_in(&c, DRIFT_RULE, v) && field(v, "proc.exepath") == "/tmp/echo"
    });
    assert_identity(&c, &f);
    c.exec("/usr/bin/id >/dev/null; cat /bin/busybox > /usr/bin/uname && /usr/bin/uname");
    d.wait_for("drift for an overwritten image binary", |v| {
        finding_in(&c, DRIFT_RULE, v) && field(v, "proc.exepath") == "/usr/bin/uname"
    });
    let id_exec = d.wait_for("the unchanged binary's exec event", |v| {
        event_in(&c, v, "exec").is_some_and(|v| v["process"]["exe_path"] == "/usr/bin/id")
    });
    assert_eq!(id_exec["process"]["exe_lower_layer"], true, "{id_exec}");
    assert_eq!(id_exec["process"]["exe_upper_layer"], false, "{id_exec}");

    let all = d.snapshot();
    assert!(
        !all.iter()
            .any(|v| finding_in(&c, DRIFT_RULE, v) && field(v, "proc.exepath") == "/usr/bin/id"),
        "an unchanged image binary was reported as drift"
    );
    assert!(
        !all.iter().any(|v| finding_in(&c, SHELL_RULE, v)
            && v["output_fields"]["proc.pname"]
                .as_str()
                .is_some_and(|p| p == pname)
            && field(v, "proc.cmdline").contains("while true")),
        "the entrypoint shell fired the shell rule"
    );
    let st = d.stop();
    assert!(st.success(), "driftwatch exited with {st}");
}

#[test]
fn file_events_and_write_findings() {
    require_root!();
    let _g = setup();
    let d = Daemon::start(true);
    let c = Container::start("files");

    c.exec(
        "echo x > /etc/x; echo y > /usr/local/bin/y; echo t > /tmp/x; echo l > /var/log/x; \
         cd /etc && echo r > rel.txt",
    );
    for path in ["/etc/x", "/usr/local/bin/y", "/etc/rel.txt"] {
        let f = d.wait_for(&format!("a write finding for {path}"), |v| {
            finding_in(&c, WRITE_RULE, v) && field(v, "fd.name") == path
        });
        assert_identity(&c, &f);
    }
    let created = d.wait_for("the open_write event of /etc/x", |v| {
        event_in(&c, v, "open_write").is_some_and(|v| v["file"]["path"] == "/etc/x")
    });
    assert_eq!(created["file"]["created"], true, "{created}");
    assert_eq!(created["file"]["upper_layer"], true, "{created}");
    assert_eq!(created["file"]["file_type"], "regular", "{created}");

    // An existing file opened for append: not created.
    c.exec("echo more >> /etc/x");
    d.wait_for("the append to /etc/x", |v| {
        event_in(&c, v, "open_write")
            .is_some_and(|v| v["file"]["path"] == "/etc/x" && v["file"]["created"] == false)
    });

    c.exec("chmod 600 /etc/x && mv /etc/x /etc/x2 && rm /etc/x2 && cd /etc && chmod 640 rel.txt && mv rel.txt ../usr/rel2 && rm /usr/rel2");
    let ch = d.wait_for("chmod /etc/x", |v| {
        event_in(&c, v, "chmod").is_some_and(|v| v["file"]["path"] == "/etc/x")
    });
    assert_eq!(ch["file"]["mode"], 0o600, "{ch}");
    let mv = d.wait_for("rename /etc/x", |v| {
        event_in(&c, v, "rename").is_some_and(|v| v["file"]["path"] == "/etc/x")
    });
    assert_eq!(mv["file"]["target_path"], "/etc/x2", "{mv}");
    d.wait_for("unlink /etc/x2", |v| {
        event_in(&c, v, "unlink").is_some_and(|v| v["file"]["path"] == "/etc/x2")
    });
    // Relative paths, resolved against the cwd.
    let ch = d.wait_for("chmod of a relative path", |v| {
        event_in(&c, v, "chmod").is_some_and(|v| v["file"]["path"] == "/etc/rel.txt")
    });
    assert_eq!(ch["file"]["mode"], 0o640, "{ch}");
    d.wait_for("rename of relative paths", |v| {
        event_in(&c, v, "rename").is_some_and(|v| {
            v["file"]["path"] == "/etc/rel.txt" && v["file"]["target_path"] == "/usr/rel2"
        })
    });
    d.wait_for("unlink /usr/rel2", |v| {
        event_in(&c, v, "unlink").is_some_and(|v| v["file"]["path"] == "/usr/rel2")
    });

    let all = d.snapshot();
    // The runtime's own set-up writes (before pivot_root, host paths) are
    // seen and marked by the kernel, and do not fire the rule.
    assert!(
        all.iter()
            .any(
                |v| event_in(&c, v, "open_write").is_some_and(|v| v["file"]["outside_root"]
                    == true
                    && v["file"]["path"]
                        .as_str()
                        .is_some_and(|p| p.ends_with("/etc/hosts")))
            ),
        "no outside_root open_write of the container's /etc/hosts"
    );
    let setup: Vec<_> = all
        .iter()
        .filter(|v| finding_in(&c, WRITE_RULE, v) && field(v, "fd.name").contains("/merged/"))
        .collect();
    assert!(setup.is_empty(), "runtime set-up writes fired: {setup:?}");
    for excluded in ["/tmp/x", "/var/log/x"] {
        // The write happened and was seen...
        assert!(
            all.iter()
                .any(|v| event_in(&c, v, "open_write")
                    .is_some_and(|v| v["file"]["path"] == excluded)),
            "no open_write event for {excluded}"
        );
        // ...and the rule's exclusion held.
        assert!(
            !all.iter()
                .any(|v| finding_in(&c, WRITE_RULE, v) && field(v, "fd.name") == excluded),
            "{excluded} fired the write rule"
        );
    }
    assert!(d.stop().success());
}

#[test]
fn host_activity_is_out_of_scope() {
    require_root!();
    let _g = setup();
    let d = Daemon::start(true);
    let c = Container::start("host");
    let dir = tempfile::tempdir().expect("tempdir");
    let marker: PathBuf = dir.path().join("host-marker");
    let m = marker.display();
    // Shells, package-manager names, new binaries and writes, on the host.
    let out = sh(&format!(
        "cp $(command -v busybox) {d}/apk && {d}/apk true; sh -c 'echo x > {m}'; \
         chmod 600 {m}; mv {m} {m}.2; rm {m}.2",
        d = dir.path().display()
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Then something in the container, so the host's actions had time to arrive.
    c.exec("echo done > /etc/marker");
    d.wait_for("the container marker", |v| {
        finding_in(&c, WRITE_RULE, v) && field(v, "fd.name") == "/etc/marker"
    });
    std::thread::sleep(Duration::from_millis(300));
    let dirs = dir.path().display().to_string();
    for v in d.snapshot() {
        assert!(
            !v.to_string().contains(&dirs),
            "a host action was reported with scope = containers: {v}"
        );
        if v.get("rule").is_some() {
            assert!(field(&v, "container.id").len() >= 12, "host finding: {v}");
        } else {
            assert!(v["container"].is_object(), "host event: {v}");
        }
    }
    assert!(d.stop().success());
}

/// `tests/tools/memfd_exec.c`, built static into `dir` (the image has no
/// libc).
fn memfd_tool(dir: &Path) -> PathBuf {
    let src = support::root().join("tests/tools/memfd_exec.c");
    let out = dir.join("memfd_exec");
    let st = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("running cc (scripts/setup.sh installs gcc)");
    assert!(st.success(), "building {}", src.display());
    out
}

fn drift_of<'a>(d: &'a [Value], c: &Container, exe: &str) -> Vec<&'a Value> {
    d.iter()
        .filter(|v| finding_in(c, DRIFT_RULE, v) && field(v, "proc.exepath") == exe)
        .collect()
}

#[test]
fn binary_drift_is_anything_not_from_the_image() {
    require_root!();
    let _g = setup();
    let tools = tempfile::tempdir().expect("tempdir");
    memfd_tool(tools.path());
    let data = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(false);
    let vol_tools = format!("{}:/tools:ro", tools.path().display());
    let vol_data = format!("{}:/data", data.path().display());
    let c = Container::start_with(
        "drift",
        &["--tmpfs", "/scratch", "-v", &vol_tools, "-v", &vol_data],
        &["sh", "-c", "while true; do sleep 1; done"],
    );

    // A tmpfs and a read-write volume (podman mounts /dev/shm noexec).
    c.exec("cp /bin/busybox /scratch/true && /scratch/true");
    let f = d.wait_for("drift from a tmpfs", |v| {
        finding_in(&c, DRIFT_RULE, v) && field(v, "proc.exepath") == "/scratch/true"
    });
    assert_eq!(field(&f, "drift.source"), "tmpfs", "{f}");
    assert_eq!(field(&f, "drift.mount"), "/scratch", "{f}");
    assert_identity(&c, &f);
    c.exec("cp /bin/busybox /data/true && /data/true");
    let f = d.wait_for("drift from a volume", |v| {
        finding_in(&c, DRIFT_RULE, v) && field(v, "proc.exepath") == "/data/true"
    });
    assert_eq!(field(&f, "drift.source"), "volume", "{f}");
    assert_eq!(field(&f, "drift.mount"), "/data", "{f}");
    // cp created it executable.
    d.wait_for("open+create drift", |v| {
        finding_in(&c, "Container Drift Detected (open+create)", v)
            && field(v, "fd.name") == "/data/true"
    });
    c.exec("printf 'echo hi' > /tmp/p && chmod +x /tmp/p");
    d.wait_for("chmod drift", |v| {
        finding_in(&c, "Container Drift Detected (chmod)", v) && field(v, "fd.name") == "/tmp/p"
    });
    // A file deleted before it runs: executed through its descriptor (the
    // symlink gives busybox an applet name).
    c.exec(
        "cp /bin/busybox /tmp/gone && exec 3</tmp/gone && rm /tmp/gone \
         && ln -s /proc/self/fd/3 /tmp/true && /tmp/true",
    );
    let f = d.wait_for("drift from a deleted file", |v| {
        finding_in(&c, DRIFT_RULE, v) && field(v, "drift.source") == "deleted"
    });
    assert!(field(&f, "proc.exepath").starts_with("/tmp/gone"), "{f}");

    // A memfd named like runc's own clone is no exception.
    c.exec("/tools/memfd_exec runc_cloned:/proc/self/exe /bin/busybox true");
    let f = d.wait_for("the memfd finding", |v| {
        finding_in(&c, "Fileless Execution in Container (memfd)", v)
            && field(v, "proc.exepath") == "memfd:runc_cloned:/proc/self/exe"
    });
    assert_identity(&c, &f);

    // An image binary modified in place, run as a shell: busybox then runs
    // `sleep` by re-executing itself (/proc/self/exe). One exec of the
    // drifted file, one finding.
    c.exec(
        "echo >> /usr/bin/uname && ln -s /usr/bin/uname /tmp/sh && /tmp/sh -c 'sleep 0; sleep 0'",
    );
    d.wait_for("drift for the modified binary", |v| {
        finding_in(&c, DRIFT_RULE, v) && field(v, "proc.exepath") == "/usr/bin/uname"
    });
    // The re-execs come after the first exec; give them time to arrive.
    c.exec("cp /bin/busybox /scratch/echo && /scratch/echo marker");
    d.wait_for("a later marker finding", |v| {
        drift_of(std::slice::from_ref(v), &c, "/scratch/echo").len() == 1
    });
    let all = d.snapshot();
    let modified = drift_of(&all, &c, "/usr/bin/uname");
    assert_eq!(modified.len(), 1, "one exec, one finding: {modified:#?}");
    assert_eq!(field(modified[0], "drift.source"), "upper_layer");
    let st = d.stop();
    assert!(st.success(), "driftwatch exited with {st}");
}

#[test]
fn benign_containers_make_no_findings() {
    require_root!();
    let _g = setup();
    let d = Daemon::start(true);
    // A shell as the main process; `--init` (catatonit bind-mounted at
    // /run/podman-init, then the command under it); an exec of an unchanged
    // image binary.
    let shell = Container::start("benign-sh");
    let init = Container::start_with("benign-init", &["--init"], &["sleep", "600"]);
    podman(&["exec", &shell.name, "/usr/bin/id"]);
    podman(&["exec", &init.name, "/usr/bin/id"]);
    // A chmod that adds no execute bit.
    podman(&["exec", &shell.name, "/bin/chmod", "600", "/etc/passwd"]);
    for c in [&shell, &init] {
        d.wait_for("the unchanged binary's exec", |v| {
            event_in(c, v, "exec").is_some_and(|v| v["process"]["exe_path"] == "/usr/bin/id")
        });
    }
    let catatonit = d.wait_for("the --init binary's exec", |v| {
        event_in(&init, v, "exec").is_some_and(|v| v["process"]["vpid"] == 1)
    });
    assert_eq!(catatonit["process"]["exe_source"], "volume", "{catatonit}");
    assert_eq!(
        catatonit["process"]["exe_mount"], "/run/podman-init",
        "{catatonit}"
    );
    // The entrypoint shell's loop runs for a while (each `sleep` an exec).
    std::thread::sleep(Duration::from_secs(3));
    let all = d.snapshot();
    let findings: Vec<&Value> = all
        .iter()
        .filter(|v| {
            v.get("rule").is_some()
                && [&shell, &init]
                    .iter()
                    .any(|c| c.id.starts_with(field(v, "container.id")))
        })
        .collect();
    assert!(findings.is_empty(), "benign activity fired: {findings:#?}");

    // pid 1 itself exec'ing a shell later (an RCE in the main process) is no
    // longer the entrypoint.
    let rce = Container::start_with(
        "pid1-exec",
        &[],
        &[
            "sh",
            "-c",
            "sleep 1; exec /bin/sh -c 'while true; do sleep 1; done'",
        ],
    );
    let f = d.wait_for("the shell pid 1 exec'd later", |v| {
        finding_in(&rce, SHELL_RULE, v) && field(v, "proc.cmdline").contains("while true")
    });
    assert_identity(&rce, &f);
    assert!(
        !d.snapshot().iter().any(|v| finding_in(&rce, SHELL_RULE, v)
            && field(v, "proc.cmdline").contains("exec /bin/sh")),
        "the first exec of pid 1 is the entrypoint"
    );
    let st = d.stop();
    assert!(st.success(), "driftwatch exited with {st}");
}

/// `tests/tools/hello_dyn.c`, built dynamic into `dir`.
fn dynamic_tool(dir: &Path) -> PathBuf {
    let src = support::root().join("tests/tools/hello_dyn.c");
    let out = dir.join("hello_dyn");
    let st = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("running cc (scripts/setup.sh installs gcc)");
    assert!(st.success(), "building {}", src.display());
    out
}

const INTERPRETER_RULE: &str = "Script Not in Container Image Run by Interpreter";

/// A program the executable only loads or interprets is judged as the
/// executable is (issue 16, "Loaders and scripts").
/// The attacker's usual drop: download to /tmp (a write the kernel
/// prefilter drops: no plugin wants writes under /tmp), chmod, run. The
/// write record never leaves the kernel, but the kernel's last-writer map
/// still names who wrote the file.
#[test]
fn a_writer_the_prefilter_dropped_is_still_named() {
    require_root!();
    let _g = setup();
    let d = Daemon::start(false);
    let c = Container::start("kwriter");
    c.exec("cat /bin/busybox > /tmp/w && chmod +x /tmp/w && sh -c '/tmp/w true; sleep 1'");
    let f = d.wait_for("drift for the downloaded binary", |v| {
        finding_in(&c, DRIFT_RULE, v) && field(v, "proc.exepath") == "/tmp/w"
    });
    assert!(
        field(&f, "drift.writer.pid")
            .parse::<u32>()
            .is_ok_and(|p| p > 0),
        "{f}"
    );
    // busybox runs cat inside the shell (a no-fork applet), so the writer
    // is that shell, completed from its exec: `sh -c cat /bin/busybox > …`;
    // a forked cat would be named by its comm. One run in 17 named the
    // shell by its comm alone (its exec not matched, cause not found): the
    // kernel's writer all the same, so that is accepted too.
    let cmdline = field(&f, "drift.writer.cmdline");
    assert!(cmdline.contains("cat") || cmdline == "sh", "{f}");
    assert!(
        field(&f, "drift.writer.time")
            .parse::<u64>()
            .is_ok_and(|t| t > 0),
        "{f}"
    );
}

#[test]
fn loaders_and_scripts_not_from_the_image() {
    require_root!();
    let _g = setup();
    let tools = tempfile::tempdir().expect("tempdir");
    tool(tools.path(), "fexec_script", &[]);
    let vol_tools = format!("{}:/tools:ro", tools.path().display());
    let d = Daemon::start(false);
    let c = Container::start_with(
        "scripts",
        &["--tmpfs", "/scratch", "-v", &vol_tools],
        &["sh", "-c", "while true; do sleep 1; done"],
    );
    let program_finding = |what: &str, rule_name: &str, file: &str| {
        d.wait_for(what, |v| {
            finding_in(&c, rule_name, v) && field(v, "drift.file") == file
        })
    };

    // A dynamic binary dropped in /tmp, run by the image's loader.
    c.exec("cp /usr/local/bin/hello_dyn /tmp/x && /lib64/ld-linux-x86-64.so.2 /tmp/x");
    let f = program_finding("the loader's file", DRIFT_RULE, "/tmp/x");
    assert_eq!(field(&f, "drift.via"), "loader", "{f}");
    assert_eq!(field(&f, "drift.source"), "upper_layer", "{f}");
    assert_eq!(
        field(&f, "proc.exepath"),
        "/lib64/ld-linux-x86-64.so.2",
        "{f}"
    );
    assert_identity(&c, &f);

    // A script executed directly, relative to the cwd, in the upper layer
    // and on a tmpfs.
    c.exec(
        "printf '#!/bin/sh\\nsleep 0\\n' > /tmp/x.sh && chmod +x /tmp/x.sh && cd /tmp && ./x.sh",
    );
    let f = program_finding("the script executed directly", DRIFT_RULE, "/tmp/x.sh");
    assert_eq!(field(&f, "drift.via"), "script", "{f}");
    assert_eq!(field(&f, "drift.source"), "upper_layer", "{f}");
    assert_eq!(field(&f, "proc.exepath"), "/bin/busybox", "{f}");
    // What the finding says of the file is the script's, not the
    // interpreter's: its hash, its change and who wrote it (the shell's
    // printf, a builtin).
    let script_sha = |text: &str| {
        let out = sh(&format!("printf '{text}' | sha256sum"));
        let out = String::from_utf8_lossy(&out.stdout).to_string();
        out.split_whitespace().next().unwrap_or("none").to_string()
    };
    let hashed = |f: Value, again: &str| -> Value {
        if field(&f, "drift.file_sha256") != "<NA>" {
            return f;
        }
        // Not hashed within the batch timeout: said why, and cached for
        // the next exec of the same file.
        assert!(
            field(&f, "drift.file_sha256_missing").contains("batch timeout"),
            "{f}"
        );
        let file = field(&f, "drift.file").to_string();
        c.exec(again);
        d.wait_for("the program file run again", |v| {
            field(v, "drift.file") == file && field(v, "drift.file_sha256") != "<NA>"
        })
    };
    let f = hashed(f, "cd /tmp && ./x.sh");
    assert_eq!(
        field(&f, "drift.file_sha256"),
        script_sha("#!/bin/sh\\nsleep 0\\n"),
        "{f}"
    );
    assert_eq!(field(&f, "drift.change"), "new", "{f}");
    assert!(
        field(&f, "drift.writer.pid")
            .parse::<u32>()
            .is_ok_and(|p| p > 0),
        "{f}"
    );
    assert!(field(&f, "drift.writer.cmdline").contains("sh"), "{f}");
    assert!(
        field(&f, "drift.file_ino.ctime").parse::<i64>().is_ok(),
        "{f}"
    );
    // The interpreter is the image's: no hash of its own to give.
    assert_eq!(field(&f, "proc.exe_sha256"), "<NA>", "{f}");

    // The same script run through its descriptor (`fexecve`): the kernel
    // and the interpreter see only /dev/fd/N. The script sleeps, so the
    // descriptor is still there to be read.
    c.exec(
        "printf '#!/bin/sh\\nsleep 2\\n' > /tmp/f.sh && chmod +x /tmp/f.sh \
         && /tools/fexec_script fd /tmp/f.sh",
    );
    let f = d.wait_for("the script run by descriptor", |v| {
        finding_in(&c, DRIFT_RULE, v) && field(v, "drift.file").starts_with("/dev/fd/")
    });
    assert_eq!(field(&f, "drift.via"), "script", "{f}");
    assert_eq!(field(&f, "drift.source"), "upper_layer", "{f}");
    let f = hashed(f, "/tools/fexec_script fd /tmp/f.sh");
    assert_eq!(
        field(&f, "drift.file_sha256"),
        script_sha("#!/bin/sh\\nsleep 2\\n"),
        "{f}"
    );
    // Copied into a memfd first, no file is left at all: fileless.
    c.exec("/tools/fexec_script memfd /tmp/f.sh");
    let f = d.wait_for("the script run from a memfd", |v| {
        finding_in(&c, "Fileless Execution in Container (memfd)", v)
            && field(v, "drift.file").starts_with("/dev/fd/")
    });
    assert_eq!(field(&f, "drift.source"), "memfd", "{f}");
    assert_eq!(f["priority"], "Critical", "{f}");
    c.exec("cp /tmp/x.sh /scratch/y.sh && /scratch/y.sh");
    let f = program_finding("the script on a tmpfs", DRIFT_RULE, "/scratch/y.sh");
    assert_eq!(field(&f, "drift.source"), "tmpfs", "{f}");
    assert_eq!(field(&f, "drift.mount"), "/scratch", "{f}");

    // A script given to an interpreter: its own rule, NOTICE.
    c.exec("printf 'sleep 0\\n' > /tmp/z.sh && sh /tmp/z.sh");
    let f = program_finding("the interpreter's script", INTERPRETER_RULE, "/tmp/z.sh");
    assert_eq!(f["priority"], "Notice", "{f}");
    assert_eq!(field(&f, "drift.file_source"), "upper_layer", "{f}");

    // A binary written, then run: the drift finding says who wrote it and
    // when, the file's times and the ancestors.
    // The shells sleep after it, so the ancestors are still there to be
    // read when the finding is enriched (an ancestor that has exited and
    // whose exec the sensor did not see is unknown: docs/detections.md).
    c.exec("cp /bin/busybox /tmp/echo && sh -c 'sh -c \"/tmp/echo written; sleep 2\"; sleep 1'");
    let f = d.wait_for("drift for the written binary", |v| {
        finding_in(&c, DRIFT_RULE, v) && field(v, "proc.exepath") == "/tmp/echo"
    });
    assert_eq!(field(&f, "drift.writer.exe"), "/bin/busybox", "{f}");
    // busybox sh runs cp as a fork without an exec: its comm, its parent's
    // program.
    assert_eq!(field(&f, "drift.writer.cmdline"), "cp", "{f}");
    let num = |name: &str| -> i128 {
        field(&f, name)
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number: {f}"))
    };
    assert!(num("drift.writer.pid") > 0, "{f}");
    let (written, ctime) = (num("drift.writer.time"), num("proc.exe_ino.ctime"));
    assert!(num("proc.exe_ino.mtime") > 0 && ctime > 0, "{f}");
    // The write was seen within a few seconds of the file's change time,
    // and the exec came after it.
    assert!((written - ctime).abs() < 5_000_000_000, "{f}");
    assert!(num("proc.exe_ino.ctime_duration_proc_start") >= 0, "{f}");
    // busybox sh runs its applets by exec'ing /proc/self/exe: comm `exe`.
    assert!(["sh", "exe"].contains(&field(&f, "proc.aname[2]")), "{f}");
    assert_ne!(field(&f, "proc.aname[3]"), "<NA>", "{f}");
    // Its sha256 is that of the file (a copy of the image's busybox, itself
    // a copy of the host's).
    let out = sh("sha256sum $(readlink -f /bin/busybox || readlink -f /usr/bin/busybox)");
    let want = String::from_utf8_lossy(&out.stdout);
    let want = want.split_whitespace().next().unwrap_or("none");
    // Hashed within the batch timeout (20 ms), or else missing with the
    // reason and cached for the next exec of the same file.
    let hashed = if field(&f, "proc.exe_sha256") == "<NA>" {
        assert!(
            field(&f, "proc.exe_sha256_missing").contains("batch timeout"),
            "{f}"
        );
        c.exec("/tmp/echo again");
        d.wait_for("drift for the binary run again", |v| {
            finding_in(&c, DRIFT_RULE, v) && field(v, "proc.cmdline") == "echo again"
        })
    } else {
        f
    };
    assert_eq!(field(&hashed, "proc.exe_sha256"), want, "{hashed}");
    assert_eq!(field(&hashed, "drift.change"), "new", "{hashed}");
    assert_eq!(hashed["priority"], "Warning", "{hashed}");

    // A chmod of an image binary copies it up with the same content: drift
    // still, at the lower metadata_only priority. A modified one is not.
    // The second exec of each finds the comparison cached, should the
    // first have left before it was done.
    c.exec("chmod 750 /usr/bin/id && /usr/bin/id && sleep 1 && /usr/bin/id -u");
    let f = d.wait_for("drift for the chmod'ed image binary", |v| {
        finding_in(&c, DRIFT_RULE, v) && field(v, "proc.cmdline") == "id -u"
    });
    assert_eq!(field(&f, "drift.source"), "upper_layer", "{f}");
    assert_eq!(field(&f, "drift.change"), "metadata_only", "{f}");
    assert_eq!(f["priority"], "Notice", "{f}");
    c.exec("echo >> /usr/bin/uname && /usr/bin/uname && sleep 1 && /usr/bin/uname -s");
    let f = d.wait_for("drift for the modified image binary", |v| {
        finding_in(&c, DRIFT_RULE, v) && field(v, "proc.cmdline") == "uname -s"
    });
    assert_eq!(field(&f, "drift.change"), "content_modified", "{f}");
    assert_eq!(f["priority"], "Warning", "{f}");

    // The image's own script and program, run each way: silent.
    c.exec(
        "/usr/local/bin/img.sh && sh /usr/local/bin/img.sh \
         && /lib64/ld-linux-x86-64.so.2 /usr/local/bin/hello_dyn && /usr/local/bin/hello_dyn",
    );
    c.exec("cp /tmp/z.sh /tmp/marker.sh && sh /tmp/marker.sh");
    program_finding("the marker", INTERPRETER_RULE, "/tmp/marker.sh");
    let all = d.snapshot();
    let image: Vec<&Value> = all
        .iter()
        .filter(|v| v.get("rule").is_some() && field(v, "drift.file").starts_with("/usr/"))
        .collect();
    assert!(image.is_empty(), "image files fired: {image:#?}");
    // One exec, one finding: the direct script is not also the
    // interpreter's.
    let x: Vec<&Value> = all
        .iter()
        .filter(|v| finding_in(&c, DRIFT_RULE, v) || finding_in(&c, INTERPRETER_RULE, v))
        .filter(|v| field(v, "drift.file") == "/tmp/x.sh")
        .collect();
    assert_eq!(x.len(), 1, "{x:#?}");
    let st = d.stop();
    assert!(st.success(), "driftwatch exited with {st}");
}

/// `tests/tools/NAME.c`, built static into `dir` with `extra` cc flags.
fn tool(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let src = support::root().join(format!("tests/tools/{name}.c"));
    let out = dir.join(name);
    let st = Command::new("cc")
        .args(["-static", "-O2"])
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .arg("-lpthread")
        .status()
        .expect("running cc (scripts/setup.sh installs gcc)");
    assert!(st.success(), "building {}", src.display());
    out
}

/// The tools of the file tests, in a directory to mount at /tools.
fn file_tools() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    // The 32-bit gate takes 32-bit pointers: no PIE, data below 4 GiB.
    tool(dir.path(), "int80_write", &["-no-pie"]);
    for name in [
        "openat2_hidden",
        "io_uring_setup",
        "io_uring_ops",
        "fifo_block",
        "write_loop",
    ] {
        tool(dir.path(), name, &[]);
    }
    dir
}

fn write_finding<'a>(all: &'a [Value], c: &Container, file: &str) -> Option<&'a Value> {
    all.iter()
        .find(|v| finding_in(c, WRITE_RULE, v) && field(v, "fd.name") == file)
}

/// Every way around the write rule that worked before (issue 17, "What
/// happens today"), each now seen.
#[test]
fn file_changes_cannot_be_hidden() {
    require_root!();
    let _g = setup();
    let tools = file_tools();
    let d = Daemon::start(true);
    let vol = format!("{}:/tools:ro", tools.path().display());
    // Unconfined: podman's default seccomp profile refuses io_uring_setup.
    let c = Container::start_with(
        "hide",
        &["-v", &vol, "--security-opt", "seccomp=unconfined"],
        &["sh", "-c", "while true; do sleep 1; done"],
    );

    // A file written where writes are expected, then moved into place.
    c.exec("echo /x.so > /tmp/p && mv /tmp/p /etc/ld.so.preload");
    let f = d.wait_for("the rename into /etc/ld.so.preload", |v| {
        finding_in(&c, WRITE_RULE, v) && field(v, "fs.path.target") == "/etc/ld.so.preload"
    });
    assert_eq!(field(&f, "fd.name"), "/tmp/p", "{f}");
    assert_eq!(field(&f, "evt.type"), "rename", "{f}");
    assert_identity(&c, &f);

    // A hard link into an excluded directory, written through.
    c.exec("ln /etc/passwd /tmp/pw && echo 'x::0:0::/:/bin/sh' >> /tmp/pw");
    let f = d.wait_for("the write through the hard link", |v| {
        finding_in(&c, WRITE_RULE, v) && field(v, "fd.name") == "/tmp/pw"
    });
    assert_eq!(field(&f, "fd.nlink"), "2", "{f}");
    let link = d.wait_for("the link event", |v| {
        event_in(&c, v, "link").is_some_and(|v| v["file"]["target_path"] == "/tmp/pw")
    });
    assert_eq!(link["file"]["path"], "/etc/passwd", "{link}");

    // open and write through the 32-bit syscall gate.
    c.exec("/tools/int80_write /etc/int80 hello");
    d.wait_for("the 32-bit write's finding", |v| {
        finding_in(&c, WRITE_RULE, v) && field(v, "fd.name") == "/etc/int80"
    });
    let ev = d.wait_for("the 32-bit open event", |v| {
        event_in(&c, v, "open_write").is_some_and(|v| v["file"]["path"] == "/etc/int80")
    });
    assert_eq!(ev["file"]["compat"], true, "{ev}");
    assert_eq!(ev["file"]["created"], true, "{ev}");

    // openat2 with its `how` in a page the kernel has to fault in.
    c.exec("/tools/openat2_hidden /etc/o2 hi");
    d.wait_for("the openat2 write's finding", |v| {
        finding_in(&c, WRITE_RULE, v) && field(v, "fd.name") == "/etc/o2"
    });

    // io_uring: the ring itself is a finding.
    c.exec("/tools/io_uring_setup");
    let f = d.wait_for("the io_uring finding", |v| {
        finding_in(&c, "io_uring Setup in Container", v)
    });
    assert_eq!(f["priority"], "Notice", "{f}");
    assert_identity(&c, &f);

    // io_uring: the ring's own file operations, which no syscall passes.
    c.exec("/tools/io_uring_ops open /etc/uring_w");
    let f = d.wait_for("the ring's write finding", |v| {
        finding_in(&c, WRITE_RULE, v) && field(v, "fd.name") == "/etc/uring_w"
    });
    assert_identity(&c, &f);
    let ev = d.wait_for("the ring's open event", |v| {
        event_in(&c, v, "open_write").is_some_and(|v| v["file"]["path"] == "/etc/uring_w")
    });
    assert_eq!(ev["file"]["io_uring"], true, "{ev}");
    // Relative to the working directory, moved into place, linked, removed.
    c.exec(
        "cd /tmp && echo /x.so > p2 && /tools/io_uring_ops rename p2 /etc/ld.so.preload \
         && /tools/io_uring_ops link /etc/ld.so.preload /etc/ul \
         && /tools/io_uring_ops symlink /etc/shadow /etc/us \
         && /tools/io_uring_ops unlink /etc/ul",
    );
    let f = d.wait_for("the ring's rename into /etc/ld.so.preload", |v| {
        finding_in(&c, WRITE_RULE, v)
            && field(v, "fs.path.target") == "/etc/ld.so.preload"
            && field(v, "fd.name") == "/tmp/p2"
    });
    assert_eq!(field(&f, "evt.type"), "rename", "{f}");
    let l = d.wait_for("the ring's link", |v| {
        event_in(&c, v, "link").is_some_and(|v| v["file"]["target_path"] == "/etc/ul")
    });
    assert_eq!(l["file"]["path"], "/etc/ld.so.preload", "{l}");
    assert_eq!(l["file"]["io_uring"], true, "{l}");
    let s = d.wait_for("the ring's symlink", |v| {
        event_in(&c, v, "symlink").is_some_and(|v| v["file"]["target_path"] == "/etc/us")
    });
    assert_eq!(s["file"]["path"], "/etc/shadow", "{s}");
    d.wait_for("the ring's unlink", |v| {
        event_in(&c, v, "unlink")
            .is_some_and(|v| v["file"]["path"] == "/etc/ul" && v["file"]["io_uring"] == true)
    });

    // The other ways to change a file are events, with the file's facts.
    c.exec(
        "echo t > /etc/t && truncate -s 1 /etc/t && chown 1000:1000 /etc/t \
         && ln -s /etc/shadow /etc/sl && chmod 600 /etc/t && rm /etc/t",
    );
    let t = d.wait_for("the truncate", |v| {
        event_in(&c, v, "truncate").is_some_and(|v| v["file"]["path"] == "/etc/t")
    });
    assert_eq!(t["file"]["size"], 1, "{t}");
    let o = d.wait_for("the chown", |v| {
        event_in(&c, v, "chown").is_some_and(|v| v["file"]["path"] == "/etc/t")
    });
    assert_eq!(o["file"]["uid"], 1000, "{o}");
    assert_eq!(o["file"]["gid"], 1000, "{o}");
    let s = d.wait_for("the symlink", |v| {
        event_in(&c, v, "symlink").is_some_and(|v| v["file"]["target_path"] == "/etc/sl")
    });
    assert_eq!(s["file"]["path"], "/etc/shadow", "{s}");
    d.wait_for("the symlink's finding", |v| {
        finding_in(&c, WRITE_RULE, v) && field(v, "fs.path.target") == "/etc/sl"
    });
    d.wait_for("the unlink", |v| {
        event_in(&c, v, "unlink").is_some_and(|v| v["file"]["path"] == "/etc/t")
    });
    let w = d.wait_for("the open of /etc/t", |v| {
        event_in(&c, v, "open_write").is_some_and(|v| v["file"]["path"] == "/etc/t")
    });
    // The file's identity, for who-wrote-this-binary questions.
    assert!(w["file"]["ino"].as_u64().unwrap_or(0) > 0, "{w}");
    assert!(w["file"]["dev"].as_u64().unwrap_or(0) > 0, "{w}");
    assert_eq!(w["file"]["nlink"], 1, "{w}");

    // The runtime's own set-up (symlinks in /dev, before pivot_root) fires
    // nothing.
    let all = d.snapshot();
    let setup: Vec<_> = all
        .iter()
        .filter(|v| {
            finding_in(&c, WRITE_RULE, v) && field(v, "fs.path.target").contains("/merged/")
        })
        .collect();
    assert!(setup.is_empty(), "runtime set-up fired: {setup:#?}");
    // Still excluded: a plain write under /tmp.
    c.exec("echo plain > /tmp/plain && echo marker > /etc/marker");
    d.wait_for("the marker", |v| {
        finding_in(&c, WRITE_RULE, v) && field(v, "fd.name") == "/etc/marker"
    });
    assert!(write_finding(&d.snapshot(), &c, "/tmp/plain").is_none());
    assert!(d.stop().success());
}

/// The old sensor kept each thread's pending syscall in a map of 16,384
/// entries: one container with that many threads blocked in `open()`
/// blinded every other container. There is no such map any more.
#[test]
fn blocked_threads_in_one_container_hide_nothing_in_another() {
    require_root!();
    let _g = setup();
    let tools = file_tools();
    let d = Daemon::start(false);
    let vol = format!("{}:/tools:ro", tools.path().display());
    let attacker = Container::start_with(
        "fifo",
        &["-v", &vol, "--pids-limit", "-1"],
        &["sh", "-c", "while true; do sleep 1; done"],
    );
    let victim = Container::start("victim");
    let mut blocker = Command::new("podman")
        .args([
            "exec",
            &attacker.name,
            "/tools/fifo_block",
            "/tmp/f",
            "16500",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("podman exec fifo_block");
    let mut line = String::new();
    BufReader::new(blocker.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("fifo_block's output");
    assert_eq!(
        line.trim(),
        "ready 16500",
        "fifo_block did not start its threads"
    );
    victim.exec("echo y > /etc/y");
    d.wait_for("the other container's write", |v| {
        finding_in(&victim, WRITE_RULE, v) && field(v, "fd.name") == "/etc/y"
    });
    let _ = blocker.kill();
    let _ = blocker.wait();
    drop(attacker);
    assert!(d.stop().success());
}

/// A container flooding writes gets its budget and a finding saying so;
/// another container's execs all arrive.
#[test]
fn a_write_flood_loses_no_other_containers_exec() {
    require_root!();
    let _g = setup();
    let tools = file_tools();
    let d = Daemon::start_with(
        true,
        "container_events_per_sec = 200\ncontainer_burst = 400",
    );
    let vol = format!("{}:/tools:ro", tools.path().display());
    let flood = Container::start_with(
        "flood",
        &["-v", &vol],
        &["/tools/write_loop", "/etc/flood", "-1"],
    );
    let quiet = Container::start("quiet");
    // Let the flood run into its budget.
    std::thread::sleep(Duration::from_secs(2));
    for _ in 0..20 {
        podman(&["exec", &quiet.name, "/usr/bin/id", "-u"]);
    }
    let f = d.wait_for("the flood's drop finding", |v| {
        rule(v) == "Sensor Events Dropped for Container"
            && flood.id.starts_with(field(v, "container.id"))
            && field(v, "container.id").len() >= 12
    });
    assert!(
        field(&f, "sensor.count").parse::<u64>().unwrap_or(0) > 0,
        "{f}"
    );
    assert_eq!(f["priority"], "Warning", "{f}");
    assert_eq!(field(&f, "container.name"), flood.name, "{f}");
    let end = Instant::now() + WAIT;
    loop {
        let execs = d
            .snapshot()
            .iter()
            .filter(|v| {
                event_in(&quiet, v, "exec")
                    .is_some_and(|v| v["process"]["exe_path"] == "/usr/bin/id")
            })
            .count();
        if execs == 20 {
            break;
        }
        assert!(Instant::now() < end, "{execs} of 20 execs arrived");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(flood);
    assert!(d.stop().success());
}

/// The occurrences the write findings for `file` in `c` stand for:
/// `evt.count` of each, 1 when absent; and how many findings.
fn write_count(all: &[Value], c: &Container, file: &str) -> (u64, usize) {
    let found: Vec<&Value> = all
        .iter()
        .filter(|v| finding_in(c, WRITE_RULE, v) && field(v, "fd.name") == file)
        .collect();
    let total = found
        .iter()
        .map(|v| match v["output_fields"].get("evt.count") {
            Some(n) => n.as_str().and_then(|n| n.parse().ok()).unwrap_or(0),
            None => 1,
        })
        .sum();
    (total, found.len())
}

/// Repeats of the same write are folded in the kernel into one finding
/// with a count (issue 17, section 4): a container rewriting one file in a
/// loop makes a few findings, not one per write, and their counts add up
/// to every write, none lost and none counted twice.
#[test]
fn repeated_writes_are_one_finding_with_a_count() {
    require_root!();
    let _g = setup();
    let tools = file_tools();
    let d = Daemon::start(false);
    let vol = format!("{}:/tools:ro", tools.path().display());
    let c = Container::start_with(
        "fold",
        &["-v", &vol],
        &["sh", "-c", "while true; do sleep 1; done"],
    );
    const N: u64 = 20_000;
    c.exec(&format!("/tools/write_loop /etc/folded {N}"));
    // Another process writing the same file is its own key: one more.
    c.exec("echo other >> /etc/folded");
    let end = Instant::now() + WAIT;
    let (total, findings) = loop {
        let (total, findings) = write_count(&d.snapshot(), &c, "/etc/folded");
        if total > N || Instant::now() > end {
            break (total, findings);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(total, N + 1, "{findings} findings");
    assert!(findings < 50, "{findings} findings for {N} writes");
    let all = d.snapshot();
    let folded = all
        .iter()
        .find(|v| {
            finding_in(&c, WRITE_RULE, v)
                && field(v, "fd.name") == "/etc/folded"
                && v["output_fields"].get("evt.count").is_some()
        })
        .expect("a folded finding");
    let num = |name: &str| -> u64 { field(folded, name).parse().unwrap_or(0) };
    assert!(num("evt.count") > 1, "{folded}");
    assert!(num("evt.first_time") > 0, "{folded}");
    assert!(num("evt.last_time") >= num("evt.first_time"), "{folded}");
    assert_eq!(field(folded, "proc.name"), "write_loop", "{folded}");
    // A file renamed is written by its new name: not folded into the old.
    c.exec("echo a > /etc/ren1; echo a >> /etc/ren1; mv /etc/ren1 /etc/ren2; echo b >> /etc/ren2");
    d.wait_for("the write by the new name", |v| {
        finding_in(&c, WRITE_RULE, v) && field(v, "fd.name") == "/etc/ren2"
    });
    assert!(d.stop().success());
}

/// A fold window that closed and was reported leaves the kernel's fold
/// map: without that, every file a container ever wrote stays there until
/// the LRU evicts it, and the daemon reads the whole map every second.
/// Then the same write by the same process is a new record, not lost.
#[test]
fn closed_fold_windows_leave_the_kernel_map() {
    require_root!();
    let _g = setup();
    const PORT: u16 = 19872;
    let metrics = format!("[metrics]\nlisten = \"127.0.0.1:{PORT}\"\n");
    let d = Daemon::start_full(false, "", &metrics);
    let c = Container::start("foldkeys");
    // Created first (a creation is never folded), then appended to once
    // each: 300 keys, each with its window open.
    c.exec("mkdir -p /etc/fk && for i in $(seq 300); do : > /etc/fk/f$i; done");
    c.exec("for i in $(seq 300); do echo y >> /etc/fk/f$i; done");
    let end = Instant::now() + Duration::from_secs(5);
    let mut most = 0;
    while most < 300 && Instant::now() < end {
        most = most.max(metric(PORT, "kernel_fold_keys"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(most >= 300, "the fold map held at most {most} keys");
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let held = metric(PORT, "kernel_fold_keys");
        if held == 0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "{held} keys still in the fold map 15 s after their windows closed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The creation and the append so far; then one more, counted once.
    let (before, _) = write_count(&d.snapshot(), &c, "/etc/fk/f7");
    assert_eq!(before, 2, "f7 was created and appended to");
    c.exec("echo z >> /etc/fk/f7");
    let end = Instant::now() + WAIT;
    let after = loop {
        let (total, _) = write_count(&d.snapshot(), &c, "/etc/fk/f7");
        if total > before || Instant::now() > end {
            break total;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(after, before + 1, "the write after its key was deleted");
    assert!(d.stop().success());
}

// ---- [enforcement]: kills in the kernel (docs/enforcement.md) ----

const MEMFD_RULE: &str = "Fileless Execution in Container (memfd)";
const DENY_RULE: &str = "Denied Binary Executed in Container";

/// The `[enforcement]` table of the enforcement tests, in mode `mode`:
/// `/tools/memfd_exec` (on a volume, so drift) and the files directly in
/// `/tmp/ok/` may run; the image's `/usr/bin/id` may not.
fn enforcement(mode: &str, extra: &str) -> String {
    format!(
        r#"[enforcement]
mode = "{mode}"
allow_paths = ["/tools/memfd_exec", "/tmp/ok/"]
deny_binaries = ["/usr/bin/id"]
{extra}
"#
    )
}

/// Runs `script` in `c` and returns its output; each command in it ends
/// with `; echo rc=$?` so a SIGKILLed one shows as `rc=137`.
fn run_in(c: &Container, script: &str) -> String {
    let out = Command::new("podman")
        .args(["exec", &c.name, "sh", "-c", script])
        .output()
        .expect("podman exec");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A drift-binary finding in `c` for `exe`, with `action`.
fn acted(d: &Daemon, c: &Container, rule_name: &str, exe: &str, action: &str) -> Value {
    d.wait_for(
        &format!("{rule_name} for {exe} with action={action}"),
        |v| {
            finding_in(c, rule_name, v)
                && field(v, "proc.exepath") == exe
                && field(v, "action") == action
        },
    )
}

fn enforce_container(tools: &Path, tag: &str) -> Container {
    let vol_tools = format!("{}:/tools:ro", tools.display());
    Container::start_with(
        tag,
        &["--tmpfs", "/scratch", "-v", &vol_tools],
        &["sh", "-c", "while true; do sleep 1; done"],
    )
}

#[test]
fn enforce_mode_kills_drift_before_it_runs() {
    require_root!();
    let _g = setup();
    let tools = tempfile::tempdir().expect("tempdir");
    memfd_tool(tools.path());
    let d = Daemon::start_full(false, "", &enforcement("enforce", ""));
    let vol = tempfile::tempdir().expect("tempdir");
    let c = Container::start_with(
        "enforce",
        &[
            "--tmpfs",
            "/scratch",
            "-v",
            &format!("{}:/tools:ro", tools.path().display()),
            "-v",
            &format!("{}:/vol", vol.path().display()),
        ],
        &["sh", "-c", "while true; do sleep 1; done"],
    );

    // Upper layer, tmpfs: killed before printing anything.
    let out = run_in(&c, "cp /bin/busybox /tmp/echo; /tmp/echo LEAK; echo rc=$?");
    assert_eq!(out.trim(), "rc=137", "the copied binary ran: {out:?}");
    let f = acted(&d, &c, DRIFT_RULE, "/tmp/echo", "killed");
    assert_eq!(field(&f, "enforce.delivered"), "true", "{f}");
    assert_eq!(field(&f, "enforce.reason"), "drift", "{f}");
    assert_eq!(field(&f, "drift.source"), "upper_layer", "{f}");
    assert_identity(&c, &f);
    let out = run_in(
        &c,
        "cp /bin/busybox /scratch/echo; /scratch/echo LEAK; echo rc=$?",
    );
    assert_eq!(out.trim(), "rc=137", "the tmpfs binary ran: {out:?}");
    acted(&d, &c, DRIFT_RULE, "/scratch/echo", "killed");

    // A read-write bind mount (a hostPath or PVC in Kubernetes).
    let out = run_in(&c, "cp /bin/busybox /vol/echo; /vol/echo LEAK; echo rc=$?");
    assert_eq!(out.trim(), "rc=137", "the volume's binary ran: {out:?}");
    let f = acted(&d, &c, DRIFT_RULE, "/vol/echo", "killed");
    assert_eq!(field(&f, "drift.source"), "volume", "{f}");

    // A file deleted before it runs, executed through a descriptor kept
    // open (busybox picks its applet from the link's name, `echo`).
    let out = run_in(
        &c,
        "cp /bin/busybox /tmp/gone && exec 3</tmp/gone && rm /tmp/gone && \
         mkdir -p /tmp/fd && ln -sf /proc/self/fd/3 /tmp/fd/echo && /tmp/fd/echo LEAK; echo rc=$?",
    );
    assert_eq!(out.trim(), "rc=137", "the deleted binary ran: {out:?}");
    let f = d.wait_for("drift for the deleted binary, killed", |v| {
        finding_in(&c, DRIFT_RULE, v)
            && field(v, "action") == "killed"
            && field(v, "proc.exepath").contains("gone")
    });
    assert_eq!(field(&f, "drift.source"), "deleted", "{f}");

    // memfd_exec is allowed (its finding stays); the memfd it runs is not.
    let out = run_in(&c, "/tools/memfd_exec x /bin/busybox echo LEAK; echo rc=$?");
    assert_eq!(out.trim(), "rc=137", "the memfd ran: {out:?}");
    acted(&d, &c, MEMFD_RULE, "memfd:x", "killed");
    acted(&d, &c, DRIFT_RULE, "/tools/memfd_exec", "allowed");

    // An image binary runs; an allow-listed drifted one runs, reported.
    let out = run_in(&c, "/bin/echo image-ran; echo rc=$?");
    assert_eq!(out.trim(), "image-ran\nrc=0", "{out:?}");
    let out = run_in(
        &c,
        "mkdir -p /tmp/ok && cp /bin/busybox /tmp/ok/echo; /tmp/ok/echo allowed-ran; echo rc=$?",
    );
    assert_eq!(out.trim(), "allowed-ran\nrc=0", "{out:?}");
    acted(&d, &c, DRIFT_RULE, "/tmp/ok/echo", "allowed");

    // A denied image binary is killed, and says why.
    let out = run_in(&c, "/usr/bin/id; echo rc=$?");
    assert_eq!(out.trim(), "rc=137", "the denied binary ran: {out:?}");
    let f = acted(&d, &c, DENY_RULE, "/usr/bin/id", "killed");
    assert_eq!(field(&f, "enforce.reason"), "deny", "{f}");
    // The container's init lives on.
    assert_eq!(
        podman(&["inspect", "-f", "{{.State.Running}}", &c.name]),
        "true"
    );
    let st = d.stop();
    assert!(st.success(), "driftwatch exited with {st}");
}

/// A container whose init is itself drift: `/tools/sh`, a busybox copy on
/// a volume, as the command podman runs.
fn drifted_init_container(tools: &Path, tag: &str) -> Container {
    let vol_tools = format!("{}:/tools:ro", tools.display());
    Container::start_with(
        tag,
        &["-v", &vol_tools],
        &["/tools/sh", "-c", "while true; do sleep 1; done"],
    )
}

#[test]
fn a_drifted_init_is_spared_unless_kill_init() {
    require_root!();
    let _g = setup();
    let tools = tempfile::tempdir().expect("tempdir");
    std::fs::copy("/bin/busybox", tools.path().join("sh")).expect("copying busybox");
    let state = |c: &Container| {
        podman(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.ExitCode}}",
            &c.name,
        ])
    };

    // kill_init = false (the default): the container starts and stays up,
    // while a drifted exec by that same init's children is still killed.
    let d = Daemon::start_full(false, "", &enforcement("enforce", ""));
    let c = drifted_init_container(tools.path(), "init-spared");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(state(&c), "true 0", "the drifted init was killed");
    let out = run_in(&c, "/tools/sh -c 'echo LEAK'; echo rc=$?");
    assert_eq!(out.trim(), "rc=137", "a later drifted exec ran: {out:?}");
    acted(&d, &c, DRIFT_RULE, "/tools/sh", "killed");
    assert_eq!(state(&c), "true 0", "the init died with its child");
    assert!(d.stop().success());

    // kill_init = true: the same container dies at its first instruction,
    // and the kill is a finding.
    let d = Daemon::start_full(false, "", &enforcement("enforce", "kill_init = true"));
    let c = drifted_init_container(tools.path(), "init-killed");
    let f = acted(&d, &c, DRIFT_RULE, "/tools/sh", "killed");
    assert_eq!(field(&f, "enforce.delivered"), "true", "{f}");
    let end = Instant::now() + Duration::from_secs(10);
    while state(&c) != "false 137" {
        assert!(
            Instant::now() < end,
            "the container still runs: {}",
            state(&c)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(d.stop().success());
}

#[test]
fn detect_mode_says_would_kill_and_switches_live() {
    require_root!();
    let _g = setup();
    let tools = tempfile::tempdir().expect("tempdir");
    memfd_tool(tools.path());
    let d = Daemon::start_full(false, "", &enforcement("detect", ""));
    let c = enforce_container(tools.path(), "detect");

    let out = run_in(&c, "cp /bin/busybox /tmp/echo; /tmp/echo ran; echo rc=$?");
    assert_eq!(out.trim(), "ran\nrc=0", "{out:?}");
    acted(&d, &c, DRIFT_RULE, "/tmp/echo", "would_kill");
    let out = run_in(
        &c,
        "cp /bin/busybox /scratch/echo; /scratch/echo ran; echo rc=$?",
    );
    assert_eq!(out.trim(), "ran\nrc=0", "{out:?}");
    acted(&d, &c, DRIFT_RULE, "/scratch/echo", "would_kill");
    let out = run_in(&c, "/tools/memfd_exec x /bin/busybox echo ran; echo rc=$?");
    assert_eq!(out.trim(), "ran\nrc=0", "{out:?}");
    acted(&d, &c, MEMFD_RULE, "memfd:x", "would_kill");
    let out = run_in(&c, "/usr/bin/id -u; echo rc=$?");
    assert_eq!(out.trim(), "0\nrc=0", "{out:?}");
    acted(&d, &c, DENY_RULE, "/usr/bin/id", "would_kill");

    // detect -> enforce -> detect by editing the file, no restart.
    let switched = |want: &str| {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let out = run_in(&c, "/tmp/echo ran; echo rc=$?");
            if out.trim() == want {
                return Instant::now() + Duration::from_secs(10) - end;
            }
            assert!(Instant::now() < end, "still {out:?} 10 s after the edit");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    d.reconfigure(false, "", &enforcement("enforce", ""));
    let took = switched("rc=137");
    eprintln!("detect -> enforce applied within {took:?}");
    d.reconfigure(false, "", &enforcement("detect", ""));
    let took = switched("ran\nrc=0");
    eprintln!("enforce -> detect applied within {took:?}");
    let st = d.stop();
    assert!(st.success(), "driftwatch exited with {st}");
}

/// The kernel prefilter follows a reload: writes under /tmp, dropped in
/// the kernel while no plugin wants them, reach a plugin added by editing
/// the file, without a restart.
#[test]
fn a_reload_rewrites_the_kernel_prefilter() {
    require_root!();
    let _g = setup();
    // A non-empty `extra` turns hot reload on.
    let d = Daemon::start_full(false, "", "# reloaded below");
    let c = Container::start("prefilter");
    d.reconfigure(
        false,
        "",
        "[[plugins]]\nname = \"write-filter-all\"\nbuiltin = \"write-filter\"\n\
         [plugins.config]\nexclude_prefixes = []\n",
    );
    let end = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    loop {
        n += 1;
        let path = format!("/tmp/after-reload-{n}");
        c.exec(&format!("echo x > {path}"));
        std::thread::sleep(Duration::from_millis(500));
        let seen = d
            .snapshot()
            .into_iter()
            .any(|v| v["plugin"] == "write-filter-all" && field(&v, "fd.name") == path);
        if seen {
            break;
        }
        assert!(
            Instant::now() < end,
            "no finding for writes under /tmp 20 s after the reload"
        );
    }
    let st = d.stop();
    assert!(st.success(), "driftwatch exited with {st}");
}

/// `driftwatch_<name>` from the metrics endpoint at `port`, summed over its
/// labels; 0 without a series.
fn metric(port: u16, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("metrics request");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("metrics response");
    let key = format!("driftwatch_{name}");
    let values: Vec<f64> = body
        .lines()
        .filter_map(|l| l.strip_prefix(&key))
        .filter(|rest| rest.starts_with([' ', '{']))
        .filter_map(|rest| rest.rsplit(' ').next()?.trim().parse().ok())
        .collect();
    // A labelled family has no series before its first count.
    values.iter().sum::<f64>() as u64
}

/// A reload that excludes a path no plugin named before teaches the
/// kernel that prefix: writes under it stop costing ring-buffer space.
/// Measured by the events entering the pipeline for 300 overwrites of
/// existing files (distinct files, so nothing is folded).
#[test]
fn a_reload_teaches_the_kernel_new_prefixes() {
    require_root!();
    let _g = setup();
    const PORT: u16 = 19871;
    let metrics = format!("[metrics]\nlisten = \"127.0.0.1:{PORT}\"\n");
    let d = Daemon::start_full(false, "", &metrics);
    let c = Container::start("prefixes");
    c.exec("mkdir -p /srv/d && for i in $(seq 300); do echo x > /srv/d/f$i; done");
    std::thread::sleep(Duration::from_secs(2));
    let overwrite = |c: &Container| {
        let before = metric(PORT, "events_in_total");
        c.exec("for i in $(seq 300); do echo y > /srv/d/f$i; done");
        std::thread::sleep(Duration::from_secs(2));
        metric(PORT, "events_in_total") - before
    };
    let seen = overwrite(&c);
    assert!(
        seen >= 300,
        "only {seen} events for 300 overwrites before the reload"
    );

    // Only a write rule that excludes /srv: no plugin wants those writes.
    let cfg = d.dir.path().join("pipeline.toml");
    let text = std::fs::read_to_string(&cfg).expect("reading the config");
    let head = text.split("[sources.ebpf]").next().unwrap_or_default();
    let reloads = metric(PORT, "reloads_total");
    std::fs::write(
        &cfg,
        format!(
            "{head}[sources.ebpf]\nscope = \"containers\"\nring_buffer_kib = 8192\n\n\
             [[plugins]]\nname = \"write-filter\"\nbuiltin = \"write-filter\"\n\
             [plugins.config]\nexclude_prefixes = [\"/tmp\", \"/srv\"]\n\n{metrics}"
        ),
    )
    .expect("writing the config");
    let end = Instant::now() + Duration::from_secs(30);
    while metric(PORT, "reloads_total") == reloads {
        assert!(Instant::now() < end, "no reload 30 s after the edit");
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = overwrite(&c);
    assert!(
        after < 30,
        "{after} events for 300 overwrites under a prefix the reload excluded (kernel kept them)"
    );
    let st = d.stop();
    assert!(st.success(), "driftwatch exited with {st}");
}

#[test]
fn out_of_scope_containers_are_untouched_but_detected() {
    require_root!();
    let _g = setup();
    let tools = tempfile::tempdir().expect("tempdir");
    let inside = enforce_container(tools.path(), "scoped");
    let outside = enforce_container(tools.path(), "unscoped");
    let scope = format!("containers = [\"{}\"]", inside.name);
    let d = Daemon::start_full(false, "", &enforcement("enforce", &scope));

    // The container out of scope: runs, reported as such.
    let out = run_in(
        &outside,
        "cp /bin/busybox /tmp/echo; /tmp/echo ran; echo rc=$?",
    );
    assert_eq!(out.trim(), "ran\nrc=0", "{out:?}");
    d.wait_for("the out-of-scope finding", |v| {
        finding_in(&outside, DRIFT_RULE, v)
            && field(v, "proc.exepath") == "/tmp/echo"
            && ["out_of_scope", "unclassified"].contains(&field(v, "action"))
    });
    // The container in scope: killed once userspace has classified it (its
    // first execs may pass as unclassified, by design).
    run_in(&inside, "cp /bin/busybox /tmp/echo");
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let out = run_in(&inside, "/tmp/echo ran; echo rc=$?");
        if out.trim() == "rc=137" {
            break;
        }
        assert!(
            Instant::now() < end,
            "the scoped container was never enforced: {out:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    acted(&d, &inside, DRIFT_RULE, "/tmp/echo", "killed");
    // Classified by now: out of scope, never killed.
    let out = run_in(&outside, "/tmp/echo ran; echo rc=$?");
    assert_eq!(out.trim(), "ran\nrc=0", "{out:?}");
    acted(&d, &outside, DRIFT_RULE, "/tmp/echo", "out_of_scope");
    let st = d.stop();
    assert!(st.success(), "driftwatch exited with {st}");
}
