//! OTLP export against a real OpenTelemetry collector (PyPI `rotel`, which
//! scripts/setup.sh installs): delivery over gRPC and HTTP with the
//! semantic-convention attributes, a receiver that is down for a while, a
//! `kill -9` of the daemon while it is down, and bad endpoints and TLS files.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn rotel_agent() -> PathBuf {
    let venv = std::env::var("DRIFTWATCH_VENV").unwrap_or_else(|_| "/opt/driftwatch-venv".into());
    let lib = Path::new(&venv).join("lib");
    std::fs::read_dir(&lib)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("site-packages/rotel/rotel-agent"))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "rotel-agent not found under {}: run scripts/setup.sh",
                lib.display()
            )
        })
}

/// Appends every line of `stream` to `into`, on a thread of its own.
fn collect_lines(
    stream: impl std::io::Read + Send + 'static,
    into: &Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    let into = into.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut o = into.lock().unwrap();
            o.push_str(&line);
            o.push('\n');
        }
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A rotel collector on loopback printing every log record it receives.
struct Receiver {
    child: Child,
    out: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Receiver {
    fn start(grpc: u16, http: u16, debug: &str) -> Receiver {
        Receiver::start_with(grpc, http, debug, &[])
    }

    fn start_with(grpc: u16, http: u16, debug: &str, extra: &[&str]) -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(rotel_agent())
            .args(["start", "--otlp-grpc-endpoint"])
            .arg(format!("127.0.0.1:{grpc}"))
            .arg("--otlp-http-endpoint")
            .arg(format!("127.0.0.1:{http}"))
            .args(["--exporter", "blackhole", "--debug-log", debug])
            .args(["--debug-log-verbosity", "detailed", "--pid-file"])
            .arg(dir.path().join("rotel.pid"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting rotel-agent");
        let out = Arc::new(Mutex::new(String::new()));
        collect_lines(child.stdout.take().unwrap(), &out);
        collect_lines(child.stderr.take().unwrap(), &out);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", http)).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "rotel did not listen: {}",
                out.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Receiver {
            child,
            out,
            _dir: dir,
        }
    }

    fn text(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Distinct (rule, pid) pairs received; every golden finding has its own.
    fn findings(&self) -> std::collections::BTreeSet<(String, String)> {
        parse_findings(&self.text())
    }

    fn wait_for_findings(
        &self,
        n: usize,
        timeout: Duration,
    ) -> std::collections::BTreeSet<(String, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let f = self.findings();
            if f.len() >= n || Instant::now() >= deadline {
                return f;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// rotel's detailed debug log prints each record's attributes one per line
/// (`-> key: Type(value)`); records are separated by `LogRecord #n`.
fn parse_findings(text: &str) -> std::collections::BTreeSet<(String, String)> {
    let mut out = std::collections::BTreeSet::new();
    for record in text.split("LogRecord #").skip(1) {
        let value = |key: &str| {
            record.lines().find_map(|l| {
                let l = l.trim().trim_start_matches("-> ");
                let rest = l.strip_prefix(key)?.strip_prefix(": ")?;
                let inner = rest.split_once('(').map(|(_, v)| v).unwrap_or(rest);
                Some(inner.trim_end_matches(')').to_string())
            })
        };
        if let (Some(rule), Some(pid)) = (value("security_rule.name"), value("process.pid")) {
            out.insert((rule, pid));
        }
    }
    out
}

/// The shipped pipeline with a private cache and spool, exporting to `otlp`.
fn pipeline(dir: &Path, otlp: &str) -> PathBuf {
    let shipped = std::fs::read_to_string(support::root().join("pipeline.toml")).unwrap();
    let body = shipped
        .split("[sources.ebpf]")
        .nth(1)
        .map(|rest| format!("[sources.ebpf]{rest}"))
        .unwrap();
    let spool = dir.join("spool");
    support::config(
        dir,
        &format!(
            "{body}\n[outputs.otlp]\nenabled = true\n{otlp}\n[outputs.otlp.spool]\ndir = \"{}\"\n",
            spool.display()
        ),
    )
}

/// `driftwatch replay EVENTS --config CFG --stats`, logging at info.
fn replay_command(cfg: &Path, events: &Path) -> Command {
    let mut c = support::bin();
    c.env("DRIFTWATCH_LOG", "info")
        .arg("replay")
        .arg(events)
        .arg("--config")
        .arg(cfg)
        .arg("--stats");
    c
}

fn replay(cfg: &Path, events: &Path) -> std::process::Output {
    replay_command(cfg, events).output().unwrap()
}

/// A replay in the background, its stderr collected into the returned log.
fn spawn_replay(
    cfg: &Path,
    events: &Path,
) -> (Child, Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let mut child = replay_command(cfg, events)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let reader = collect_lines(child.stderr.take().unwrap(), &log);
    (child, log, reader)
}

fn golden() -> PathBuf {
    support::root().join("tests/data/golden.jsonl")
}

fn stats_of(out: &std::process::Output) -> serde_json::Value {
    let err = support::stderr(out);
    let start = err.rfind("\n{").map(|i| i + 1).unwrap_or(0);
    // The export thread may still log a line after the stats once the
    // shutdown deadline has passed: read the one JSON value only.
    serde_json::Deserializer::from_str(&err[start..])
        .into_iter::<serde_json::Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no stats in stderr: {err}"))
}

fn delivers_over(protocol: &str) {
    let (grpc, http) = (free_port(), free_port());
    let rx = Receiver::start(grpc, http, "logs");
    let dir = tempfile::tempdir().unwrap();
    let endpoint = match protocol {
        "grpc" => format!("http://127.0.0.1:{grpc}"),
        _ => format!("http://127.0.0.1:{http}"),
    };
    let cfg = pipeline(
        dir.path(),
        &format!(
            "endpoint = \"{endpoint}\"\nprotocol = \"{protocol}\"\n\
             headers = {{ authorization = \"Bearer test\" }}\n[outputs.otlp.metrics]\nenabled = false\n"
        ),
    );
    let out = replay(&cfg, &golden());
    assert!(out.status.success(), "{}", support::stderr(&out));
    // With OTLP on, stdout stays quiet unless asked.
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let got = rx.wait_for_findings(support::golden_findings(), Duration::from_secs(20));
    assert_eq!(
        got.len(),
        support::golden_findings(),
        "{got:?}\n{}",
        rx.text()
    );
    let stats = stats_of(&out);
    assert_eq!(
        stats["export"]["exported"],
        support::golden_findings() as u64,
        "{stats}"
    );
    assert_eq!(stats["export"]["spool_records"], 0, "{stats}");

    let text = rx.text();
    for needle in [
        "security_rule.name",
        "security_rule.category",
        "security_rule.ruleset.name",
        "security_rule.version",
        "process.pid",
        "process.parent_pid",
        "process.executable.path",
        "process.executable.name",
        "process.command_line",
        "process.command_args",
        "process.user.id",
        "process.working_directory",
        "container.id",
        "container.name",
        "container.image.name",
        "container.image.tags",
        "container.runtime.name",
        "file.path",
        "file.directory",
        "file.name",
        "driftwatch.process.exe_upper_layer",
        "driftwatch.tags",
        "driftwatch.remediation.steps",
        "driftwatch.alert_type",
        "driftwatch.finding",
        "service.name",
        "driftwatch",
        "host.name",
        "os.type",
        // Body: the rule's output message.
        "Shell spawned in container",
        // Severity from the priority.
        "Warning",
    ] {
        assert!(
            text.contains(needle),
            "receiver output lacks {needle:?}:\n{text}"
        );
    }
}

#[test]
fn grpc_delivers_every_finding_with_semantic_conventions() {
    delivers_over("grpc");
}

#[test]
fn http_delivers_every_finding_with_semantic_conventions() {
    delivers_over("http/protobuf");
}

#[test]
fn a_receiver_down_for_a_while_loses_nothing() {
    let (grpc, http) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = pipeline(
        dir.path(),
        &format!(
            "endpoint = \"http://127.0.0.1:{grpc}\"\nprotocol = \"grpc\"\n\
             retry_initial_ms = 100\nretry_max_ms = 500\nshutdown_timeout_ms = 60000\n\
             [outputs.otlp.metrics]\nenabled = false\n"
        ),
    );
    // The daemon runs and fails to export for a while, then the receiver comes.
    let (mut child, log, reader) = spawn_replay(&cfg, &golden());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log
        .lock()
        .unwrap()
        .contains("OTLP export failed, keeping findings in the spool")
    {
        assert!(Instant::now() < deadline, "{}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Down a little longer: a few retries fail too.
    std::thread::sleep(Duration::from_secs(1));
    let rx = Receiver::start(grpc, http, "logs");
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let err = log.lock().unwrap().clone();
    assert!(status.success(), "{err}");
    assert!(err.contains("OTLP export works again"), "{err}");
    let out = std::process::Output {
        status,
        stdout: Vec::new(),
        stderr: err.into_bytes(),
    };
    let got = rx.wait_for_findings(support::golden_findings(), Duration::from_secs(20));
    assert_eq!(got.len(), support::golden_findings(), "{got:?}");
    let stats = stats_of(&out);
    assert!(
        stats["export"]["failed_requests"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    assert_eq!(stats["export"]["spool_records"], 0, "{stats}");
}

#[test]
fn kill_9_while_the_receiver_is_down_loses_nothing() {
    let (grpc, http) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = pipeline(
        dir.path(),
        &format!(
            "endpoint = \"http://127.0.0.1:{http}\"\nprotocol = \"http/protobuf\"\n\
             retry_initial_ms = 100\nretry_max_ms = 500\nshutdown_timeout_ms = 60000\n\
             [outputs.otlp.metrics]\nenabled = false\n"
        ),
    );
    let (mut child, log, _reader) = spawn_replay(&cfg, &golden());
    // Once the replay is done the daemon sits in its (long) shutdown flush,
    // still failing to export: everything is in the spool. Kill it there.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log.lock().unwrap().contains("OTLP export failed") {
        assert!(Instant::now() < deadline, "{}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let rx = Receiver::start(grpc, http, "logs");
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let out = replay(&cfg, &empty);
    let err = support::stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resuming export of spooled records"), "{err}");
    let got = rx.wait_for_findings(support::golden_findings(), Duration::from_secs(20));
    assert_eq!(got.len(), support::golden_findings(), "{got:?}\n{err}");
    let stats = stats_of(&out);
    assert_eq!(stats["export"]["spool_records"], 0, "{stats}");
    assert!(
        stats["export"]["exported"].as_u64().unwrap() >= support::golden_findings() as u64,
        "{stats}"
    );
}

/// Two processes on one spool (a second daemon, `verify-digests --export`
/// with the daemon's config): the second is refused, naming the holder,
/// and nothing the first spooled is lost.
#[test]
fn a_second_process_on_the_same_spool_is_refused() {
    let (grpc, http) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = pipeline(
        dir.path(),
        &format!(
            "endpoint = \"http://127.0.0.1:{http}\"\nprotocol = \"http/protobuf\"\n\
             retry_initial_ms = 100\nretry_max_ms = 500\nshutdown_timeout_ms = 60000\n\
             [outputs.otlp.metrics]\nenabled = false\n"
        ),
    );
    let (mut child, log, _reader) = spawn_replay(&cfg, &golden());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log.lock().unwrap().contains("OTLP export failed") {
        assert!(Instant::now() < deadline, "{}", log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let second = replay(&cfg, &empty);
    let err = support::stderr(&second);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is in use by another process")
            && err.contains(&format!("pid {}:", child.id())),
        "{err}"
    );
    child.kill().unwrap(); // SIGKILL: the lock goes with the process
    child.wait().unwrap();

    let rx = Receiver::start(grpc, http, "logs");
    let out = replay(&cfg, &empty);
    let err = support::stderr(&out);
    assert!(out.status.success(), "{err}");
    let got = rx.wait_for_findings(support::golden_findings(), Duration::from_secs(20));
    assert_eq!(got.len(), support::golden_findings(), "{got:?}\n{err}");
}

/// A config that cannot reach any receiver: the run reports why, keeps
/// running, and every finding stays in the spool.
fn spools_with(keys: &str, tables: &str, expect: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = pipeline(
        dir.path(),
        &format!(
            "{keys}\nretry_initial_ms = 50\nshutdown_timeout_ms = 1500\n{tables}\n\
             [outputs.otlp.metrics]\nenabled = false\n"
        ),
    );
    let out = replay(&cfg, &golden());
    let err = support::stderr(&out);
    assert!(out.status.success(), "{err}");
    for e in expect {
        assert!(err.contains(e), "stderr lacks {e:?}:\n{err}");
    }
    let stats = stats_of(&out);
    assert_eq!(
        stats["export"]["spool_records"],
        support::golden_findings() as u64,
        "{stats}"
    );
    assert_eq!(stats["export"]["exported"], 0, "{stats}");
    assert_eq!(stats["export"]["spool_refused"], 0, "{stats}");
    assert!(
        err.contains("records stay in the spool for the next start"),
        "{err}"
    );
}

#[test]
fn a_bad_endpoint_is_reported_and_findings_are_kept() {
    spools_with(
        "endpoint = \"collector:4317\"",
        "",
        &["outputs.otlp.endpoint", "needs a scheme"],
    );
}

#[test]
fn an_unreachable_host_is_reported_and_findings_are_kept() {
    let port = free_port(); // nothing listens there
    spools_with(
        &format!("endpoint = \"http://127.0.0.1:{port}\"\nprotocol = \"grpc\""),
        "",
        &["OTLP export failed", "Unavailable"],
    );
}

#[test]
fn a_bad_tls_file_is_reported_and_findings_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("ca.pem");
    std::fs::write(&bad, "this is not a certificate").unwrap();
    spools_with(
        &format!(
            "endpoint = \"https://127.0.0.1:{}\"\nprotocol = \"grpc\"",
            free_port()
        ),
        &format!("[outputs.otlp.tls]\nca_file = \"{}\"", bad.display()),
        &["TLS CA file", "ca.pem", "not a PEM file"],
    );
}

#[test]
fn a_request_too_large_for_the_receiver_is_split_and_a_record_too_large_is_set_aside() {
    // A receiver that takes at most 1 MiB per request, and findings of
    // about 10 KB each (a long command line, sent as the command line and
    // as its arguments, uncompressed): 240 of them are 2.4 MB, far too
    // large as one request. In the middle, one finding of 1.2 MB that no
    // request can carry: it must be set aside, not block the rest.
    let (grpc, http) = (free_port(), free_port());
    let rx = Receiver::start_with(
        grpc,
        http,
        "logs",
        &["--otlp-grpc-max-recv-msg-size-mib", "1"],
    );
    let dir = tempfile::tempdir().unwrap();
    let shell = std::fs::read_to_string(golden())
        .unwrap()
        .lines()
        .find(|l| l.contains("\"pid\":101,"))
        .map(str::to_owned)
        .unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut events = String::new();
    const N: usize = 240;
    const GIANT: usize = 100;
    for i in 0..=N {
        let mut e: serde_json::Value = serde_json::from_str(&shell).unwrap();
        // Incompressible, so that the size does not depend on gzip.
        let noise: String = (0..if i == GIANT { 600_000 } else { 5_000 })
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b"0123456789abcdef"[(seed % 16) as usize])
            })
            .collect();
        e["process"]["pid"] = (10_000 + i).into();
        e["process"]["tid"] = (10_000 + i).into();
        e["process"]["args"] = serde_json::json!(["sh", "-c", noise]);
        events.push_str(&format!("{e}\n"));
    }
    let events_path = dir.path().join("big.jsonl");
    std::fs::write(&events_path, events).unwrap();
    let cfg = pipeline(
        dir.path(),
        &format!(
            "endpoint = \"http://127.0.0.1:{grpc}\"\nprotocol = \"grpc\"\ncompression = \"none\"\n\
             batch_max_kib = 65536\nshutdown_timeout_ms = 60000\n\
             [outputs.otlp.metrics]\nenabled = false\n"
        ),
    );
    let out = replay(&cfg, &events_path);
    let err = support::stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("refused a request of 241 records"), "{err}");
    // With the receiver's own words (tonic's decode-limit message).
    assert!(
        err.contains("the backend said: ") && err.contains("too large"),
        "{err}"
    );
    // Nothing from the OTel crates' internal logs claiming data loss.
    assert!(!err.contains("will be lost"), "{err}");
    assert!(
        err.contains("one record larger than the backend accepts"),
        "{err}"
    );
    let stats = stats_of(&out);
    assert_eq!(stats["export"]["exported"], N as u64, "{stats}");
    assert_eq!(stats["export"]["rejected"], 1, "{stats}");
    let rejected = std::fs::read_to_string(dir.path().join("spool/rejected.jsonl")).unwrap();
    assert_eq!(rejected.lines().count(), 1);
    assert!(rejected.contains(&format!("\"process.pid\":{}", 10_000 + GIANT)));
    assert_eq!(stats["export"]["spool_records"], 0, "{stats}");
    assert!(
        stats["export"]["failed_requests"].as_u64().unwrap() >= 1,
        "{stats}"
    );
    let got = rx.wait_for_findings(N, Duration::from_secs(20));
    assert_eq!(got.len(), N, "{}", err);
    assert!(
        !got.iter()
            .any(|(_, pid)| *pid == (10_000 + GIANT).to_string())
    );
}

/// A stand-in for a backend that refuses the data itself, which no real
/// receiver here can be made to do: every OTLP/HTTP request is answered
/// with 400 and a `google.rpc.Status` saying why.
fn refusing_backend(message: &'static str) -> u16 {
    use std::io::{BufRead, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    // google.rpc.Status { code: 3, message }
                    let mut status = vec![0x08, 0x03, 0x12, message.len() as u8];
                    status.extend_from_slice(message.as_bytes());
                    let head = format!(
                        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
                        status.len()
                    );
                    if conn.write_all(head.as_bytes()).is_err() || conn.write_all(&status).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_refusal_is_logged_with_the_backends_message_and_set_aside() {
    let port = refusing_backend("log record 3 lacks a field");
    let dir = tempfile::tempdir().unwrap();
    let cfg = pipeline(
        dir.path(),
        &format!(
            "endpoint = \"http://127.0.0.1:{port}\"\nprotocol = \"http/protobuf\"\n\
             [outputs.otlp.metrics]\nenabled = false\n"
        ),
    );
    let out = replay(&cfg, &golden());
    let err = support::stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("the OTLP backend rejected a batch")
            && err.contains("status code: 400; the backend said: log record 3 lacks a field"),
        "{err}"
    );
    let stats = stats_of(&out);
    assert_eq!(
        stats["export"]["rejected"],
        support::golden_findings() as u64,
        "{stats}"
    );
    assert_eq!(stats["export"]["spool_records"], 0, "{stats}");
    let rejected = std::fs::read_to_string(dir.path().join("spool/rejected.jsonl")).unwrap();
    assert_eq!(rejected.lines().count(), support::golden_findings());
}

/// A backend that refuses every request is misconfigured, not looking at
/// bad data: after 8 refused requests in a row the rest stay spooled.
#[test]
fn a_backend_refusing_everything_is_not_believed_past_eight_in_a_row() {
    let port = refusing_backend("missing credentials");
    let dir = tempfile::tempdir().unwrap();
    // One record per request, so every finding is a request of its own.
    let cfg = pipeline(
        dir.path(),
        &format!(
            "endpoint = \"http://127.0.0.1:{port}\"\nprotocol = \"http/protobuf\"\n\
             batch_size = 1\nretry_initial_ms = 50\nshutdown_timeout_ms = 1500\n\
             [outputs.otlp.metrics]\nenabled = false\n"
        ),
    );
    let findings = support::golden_findings();
    assert!(findings > 8, "the golden replay has {findings} findings");
    let out = replay(&cfg, &golden());
    let err = support::stderr(&out);
    assert!(
        err.contains("the backend refused 9 requests in a row")
            && err.contains("findings stay spooled until a request is taken"),
        "{err}"
    );
    let stats = stats_of(&out);
    assert_eq!(stats["export"]["rejected"], 8, "{stats}");
    assert_eq!(
        stats["export"]["spool_records"],
        (findings - 8) as u64,
        "{stats}"
    );
    let rejected = std::fs::read_to_string(dir.path().join("spool/rejected.jsonl")).unwrap();
    assert_eq!(rejected.lines().count(), 8);
}

#[test]
fn a_full_spool_says_so_and_counts_what_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    // No receiver and a tiny spool: a few findings fit, the rest are refused.
    let cfg = pipeline(
        dir.path(),
        &format!(
            "endpoint = \"http://127.0.0.1:{}\"\nshutdown_timeout_ms = 500\n\
             [outputs.otlp.metrics]\nenabled = false\n",
            free_port()
        ),
    );
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "\n[outputs.otlp.spool]\ndir",
        "\n[outputs.otlp.spool]\nmax_kib = 8\ndir",
    );
    std::fs::write(&cfg, text).unwrap();
    let out = replay(&cfg, &golden());
    let err = support::stderr(&out);
    let stats = stats_of(&out);
    let kept = stats["export"]["spool_records"].as_u64().unwrap();
    let refused = stats["export"]["spool_refused"].as_u64().unwrap();
    assert!(err.contains("OTLP spool is FULL"), "{err}");
    assert!(refused > 0, "{stats}");
    assert_eq!(kept + refused, support::golden_findings() as u64, "{stats}");
}

#[test]
fn self_telemetry_reaches_the_receiver_as_metrics() {
    let (grpc, http) = (free_port(), free_port());
    let rx = Receiver::start(grpc, http, "metrics");
    let dir = tempfile::tempdir().unwrap();
    let cfg = pipeline(
        dir.path(),
        &format!(
            "endpoint = \"http://127.0.0.1:{grpc}\"\nprotocol = \"grpc\"\n\
             [outputs.otlp.metrics]\nenabled = true\ninterval_secs = 1\n"
        ),
    );
    let out = replay(&cfg, &golden());
    assert!(out.status.success(), "{}", support::stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    let wanted = [
        "driftwatch.events.received",
        "driftwatch.events.lost",
        "driftwatch.kernel.read_faults",
        "driftwatch.findings",
        "driftwatch.plugin.call.duration",
        "driftwatch.export.records",
        "driftwatch.spool.depth",
    ];
    loop {
        let text = rx.text();
        if wanted.iter().all(|w| text.contains(w)) {
            break;
        }
        assert!(Instant::now() < deadline, "missing metrics in:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn driftwatch_stats_reads_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/control.sock");
    // A live daemon with only the periodic scan (of a container that does
    // not exist), so it idles until told to stop.
    let cfg = support::config(
        dir.path(),
        "[sources.ebpf]\nenabled = false\n[sources.scan]\nenabled = true\ninterval_secs = 3600\n\
         containers = [\"no-such-container\"]\n",
    );
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[daemon]\n",
        &format!("[daemon]\ncontrol_socket = \"{}\"\n", socket.display()),
    );
    std::fs::write(&cfg, text).unwrap();
    let mut child = support::bin()
        .args(["run", "-c"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no control socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = support::bin()
        .args(["stats", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::stderr(&out));
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "events_in",
        "kernel_lost",
        "findings",
        "plugin_calls",
        "export",
    ] {
        assert!(stats.get(key).is_some(), "{key} missing: {stats}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "socket mode {mode:o}");

    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists(), "socket left behind");
    // And with no daemon, a clear error.
    let out = support::bin()
        .args(["stats", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = support::stderr(&out);
    assert!(err.contains("is the daemon running"), "{err}");
}

#[test]
fn events_can_be_exported_too_and_stdout_can_run_beside_otlp() {
    let (grpc, http) = (free_port(), free_port());
    let rx = Receiver::start(grpc, http, "logs");
    let dir = tempfile::tempdir().unwrap();
    let cfg = pipeline(
        dir.path(),
        &format!(
            "endpoint = \"http://127.0.0.1:{grpc}\"\nprotocol = \"grpc\"\nevents = true\n\
             [outputs.otlp.metrics]\nenabled = false\n"
        ),
    );
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "enabled = \"auto\"\n# Also print",
        "enabled = true\n# Also print",
    );
    std::fs::write(&cfg, text).unwrap();
    let out = replay(&cfg, &golden());
    assert!(out.status.success(), "{}", support::stderr(&out));
    // stdout: the findings as Falco JSON lines, as without OTLP.
    let lines = support::json_lines(&out);
    assert_eq!(lines.len(), support::golden_findings(), "{lines:?}");
    // The receiver: every finding, and every event that passed the chain.
    let got = rx.wait_for_findings(support::golden_findings(), Duration::from_secs(20));
    assert_eq!(got.len(), support::golden_findings());
    let stats = stats_of(&out);
    let passed = stats["events_out"].as_u64().unwrap();
    assert!(passed > 0, "{stats}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = rx.text().matches("EventName: driftwatch.event\n").count() as u64;
        if events == passed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{events} of {passed} events arrived"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        stats["export"]["exported"].as_u64().unwrap(),
        passed + support::golden_findings() as u64,
        "{stats}"
    );
}
