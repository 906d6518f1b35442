//! OTLP export figures against a real receiver (PyPI rotel, installed by
//! scripts/setup.sh), in one run:
//!
//! 1. throughput: findings per second through the OTLP sink (semconv
//!    mapping, spool write, batching, gzip, export, acknowledgement), for
//!    gRPC and HTTP, per wall second and per CPU second of the daemon side;
//! 2. the exporter's own floor: the same 512 finding records, built once,
//!    exported again and again through opentelemetry-otlp's `LogExporter`
//!    alone (proto conversion, encoding, compression, transport), per CPU
//!    second; no spool, no mapping. What the per-core target can
//!    reach through that exporter at best;
//! 3. latency: event time → receipt at the receiver (p50, p99, max) through
//!    the whole daemon (batcher, default plugin chain, sink) with default
//!    batching, at a steady event rate.
//!
//! `cargo bench -p driftwatch --bench export` (or bench/otlp.sh).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use driftwatch::config::{Config, OtlpConfig, Switch};
use driftwatch::pipeline::{Batch, Chain, FindingRecord, Found, Outcome, Processed};
use driftwatch::plugin::Engine;
use driftwatch::plugin::cache::ComponentCache;
use driftwatch::runtime::{self, Setup};
use driftwatch::sink::Sink;
use driftwatch::sink::otlp::settings::{self, Signal};
use driftwatch::sink::otlp::{Origin, OtlpSink, client, record};
use driftwatch::source::{BoxFuture, Source, SourceContext, SourceError};
use driftwatch::stats::Stats;
use driftwatch_sdk::{Container, Event, EventKind, Priority, Process};

const THROUGHPUT_RECORDS: usize = 200_000;
const FLOOR_EXPORTS: usize = 400;
const LATENCY_RATE: u64 = 2_000;
const LATENCY_SECS: u64 = 10;

fn rotel_agent() -> PathBuf {
    let venv = std::env::var("DRIFTWATCH_VENV").unwrap_or_else(|_| "/opt/driftwatch-venv".into());
    std::fs::read_dir(Path::new(&venv).join("lib"))
        .expect("python venv: run scripts/setup.sh")
        .flatten()
        .map(|e| e.path().join("site-packages/rotel/rotel-agent"))
        .find(|p| p.exists())
        .expect("rotel-agent: run scripts/setup.sh")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Rotel(Child);

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rotel(grpc: u16, http: u16, debug: bool, pid_dir: &Path) -> Rotel {
    let mut c = Command::new(rotel_agent());
    c.args(["start", "--exporter", "blackhole", "--otlp-grpc-endpoint"])
        .arg(format!("127.0.0.1:{grpc}"))
        .arg("--otlp-http-endpoint")
        .arg(format!("127.0.0.1:{http}"))
        .arg("--pid-file")
        .arg(pid_dir.join(format!("rotel-{grpc}.pid")))
        .stderr(Stdio::null());
    if debug {
        c.args(["--debug-log", "logs", "--debug-log-verbosity", "detailed"])
            .stdout(Stdio::piped());
    } else {
        c.stdout(Stdio::null());
    }
    let child = c.spawn().expect("starting rotel");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err()
        || std::net::TcpStream::connect(("127.0.0.1", http)).is_err()
    {
        assert!(Instant::now() < deadline, "rotel did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Rotel(child)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A shell exec in a container: what the default chain flags.
fn shell_event(i: u64, time_ns: u64) -> Event {
    Event {
        time_ns,
        kind: EventKind::Exec,
        hostname: "node-1".into(),
        process: Process {
            pid: 10_000 + (i % 50_000) as u32,
            tid: 10_000 + (i % 50_000) as u32,
            ppid: 999,
            vpid: 5,
            user_name: Some("root".into()),
            name: "sh".into(),
            exe_path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), format!("echo {i}")],
            cwd: "/srv".into(),
            pname: "bash".into(),
            pexe_path: "/bin/bash".into(),
            exe_lower_layer: true,
            ..Process::default()
        },
        container: Some(Container {
            id: "3f1c9a7be2d04c55a1e8f0b6d2c4e6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c6d8e0".into(),
            name: Some("web".into()),
            runtime: Some("podman".into()),
            image_repository: Some("localhost/app".into()),
            image_tag: Some("v1".into()),
            image_digest: None,
            image_id: None,
        }),
        ..Event::default()
    }
}

/// The default chain's finding for [`shell_event`].
/// The finding the built-in shell rule makes, as the chain keeps it: its
/// declared rule, rendered by the sink.
fn shell_finding() -> FindingRecord {
    use driftwatch_sdk::{Fired, Plugin, RuleTable};
    let shell = driftwatch_plugin_shell::ShellDetector::new(Default::default()).expect("shell");
    let rules = RuleTable::compile(&shell.manifest().rules).expect("rules");
    let fired = Fired::new(0, Priority::Warning);
    let finding = Found::of_verdict(Vec::new(), vec![fired], &rules)
        .next()
        .expect("rule 0 is declared");
    FindingRecord {
        plugin: Arc::from("shell"),
        plugin_version: Arc::from("0.1.0"),
        finding,
    }
}

fn otlp_config(endpoint: String, protocol: &str, spool: &Path) -> OtlpConfig {
    let mut c = OtlpConfig {
        enabled: Switch::On,
        endpoint: Some(endpoint),
        protocol: Some(protocol.parse().expect("a protocol")),
        ..OtlpConfig::default()
    };
    c.spool.dir = spool.to_path_buf();
    c.spool.max_kib = 4 << 20;
    c.metrics.enabled = false;
    c
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// A blackhole receiver on fresh ports: it, the endpoint for `protocol`,
/// and its gRPC port (unique, so it names per-run files).
fn receiver(protocol: &str, dir: &Path) -> (Rotel, String, u16) {
    let (grpc, http) = (free_port(), free_port());
    let rx = rotel(grpc, http, false, dir);
    let endpoint = match protocol {
        "grpc" => format!("http://127.0.0.1:{grpc}"),
        _ => format!("http://127.0.0.1:{http}"),
    };
    (rx, endpoint, grpc)
}

fn throughput(protocol: &str, compression: &str, dir: &Path) {
    let (_rx, endpoint, grpc) = receiver(protocol, dir);
    let spool = dir.join(format!("spool-{grpc}"));
    let stats = Arc::new(Stats::default());
    let mut cfg = otlp_config(endpoint, protocol, &spool);
    cfg.compression = Some(compression.parse().expect("a compression"));
    let mut sink =
        OtlpSink::start(&cfg, dir, &Origin::default(), stats.clone()).expect("OTLP sink");
    let finding = shell_finding();
    let batches: Vec<Batch> = (0..THROUGHPUT_RECORDS as u64)
        .collect::<Vec<_>>()
        .chunks(512)
        .map(|c| {
            c.iter()
                .map(|i| {
                    let outcome = Outcome {
                        findings: vec![finding.clone()],
                        ..Outcome::default()
                    };
                    (shell_event(*i, now_ns()), outcome)
                })
                .collect()
        })
        .collect();
    let (t0, cpu0) = (Instant::now(), cpu_seconds());
    for b in &batches {
        sink.send(b).expect("spool");
    }
    let spooled = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    while (stats.export.exported.load(Ordering::Relaxed) as usize) < THROUGHPUT_RECORDS {
        assert!(
            Instant::now() < deadline,
            "export stalled: {:?}",
            stats.snapshot().export
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let (wall, cpu) = (t0.elapsed(), cpu_seconds() - cpu0);
    sink.flush(Instant::now() + Duration::from_secs(5))
        .expect("flush");
    let n = THROUGHPUT_RECORDS as f64;
    println!(
        "throughput {protocol:<14} {compression:<5} {THROUGHPUT_RECORDS} findings: {:.2}s wall ({:.0} records/s), \
         {:.2} CPU-s in the daemon ({:.0} records per CPU-second); spooling alone took {:.2}s; \
         failed requests {}",
        wall.as_secs_f64(),
        n / wall.as_secs_f64(),
        cpu,
        n / cpu,
        spooled.as_secs_f64(),
        stats.export.failed_requests.load(Ordering::Relaxed),
    );
}

/// opentelemetry-otlp's `LogExporter` alone: 512 finding records (the
/// sink's own attribute mapping), built once and exported again and again.
/// Whatever this costs per record, every record exported through that
/// exporter costs at least as much.
fn exporter_floor(protocol: &str, compression: &str, dir: &Path) {
    use opentelemetry::InstrumentationScope;
    use opentelemetry::logs::{Logger as _, LoggerProvider as _};
    use opentelemetry_sdk::logs::{LogBatch, LogExporter as _, SdkLogRecord, SdkLoggerProvider};

    let (_rx, endpoint, _) = receiver(protocol, dir);
    let mut cfg = otlp_config(endpoint, protocol, &dir.join("unused-spool"));
    cfg.compression = Some(compression.parse().expect("a compression"));
    let s = settings::resolve(&cfg, dir, Signal::Logs, &settings::process_env).expect("settings");
    let provider = SdkLoggerProvider::builder().build();
    let logger = provider.logger("driftwatch");
    let scope = InstrumentationScope::builder("driftwatch")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let finding = shell_finding();
    let (tags, fields) = (Vec::new(), Default::default());
    let records: Vec<SdkLogRecord> = (0..512)
        .map(|i| {
            let event = shell_event(i, now_ns());
            let p = Processed {
                event: &event,
                findings: std::slice::from_ref(&finding),
                tags: &tags,
                fields: &fields,
            };
            let mut bytes = Vec::new();
            record::write_finding(&mut bytes, &p, &finding);
            let mut r = logger.create_log_record();
            record::fill(&bytes, &mut r).expect("a spooled record decodes");
            r
        })
        .collect();
    let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
        records.iter().map(|r| (r, &scope)).collect();
    // One thread, like the sink's export loop.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (wall, cpu) = rt.block_on(async {
        let mut exporter = client::log_exporter(&s).expect("exporter");
        exporter.set_resource(&Origin::default().resource());
        // The first export opens the connection.
        exporter.export(LogBatch::new(&refs)).await.expect("export");
        let (t0, cpu0) = (Instant::now(), cpu_seconds());
        for _ in 0..FLOOR_EXPORTS {
            exporter.export(LogBatch::new(&refs)).await.expect("export");
        }
        (t0.elapsed(), cpu_seconds() - cpu0)
    });
    let n = (FLOOR_EXPORTS * refs.len()) as f64;
    println!(
        "exporter alone {protocol:<14} {compression:<5} {} records: {:.2}s wall, {:.2} CPU-s \
         ({:.0} records per CPU-second, {:.1} us of CPU per record)",
        n,
        wall.as_secs_f64(),
        cpu,
        n / cpu,
        cpu / n * 1e6,
    );
}

/// Emits shell execs at a steady rate, stamped with the current time.
struct Paced {
    rate: u64,
    total: u64,
}

impl Source for Paced {
    fn run(self: Box<Self>, ctx: SourceContext) -> BoxFuture<Result<(), SourceError>> {
        Box::pin(async move {
            let start = tokio::time::Instant::now();
            let every = Duration::from_nanos(1_000_000_000 / self.rate);
            for i in 0..self.total {
                tokio::time::sleep_until(start + every * i as u32).await;
                if ctx.events.send(shell_event(i, now_ns())).await.is_err() {
                    break;
                }
            }
            Ok(())
        })
    }
}

fn latency(dir: &Path) {
    let (grpc, http) = (free_port(), free_port());
    let mut rx = rotel(grpc, http, true, dir);
    let stdout = rx.0.stdout.take().expect("rotel stdout");
    let samples = Arc::new(Mutex::new(Vec::<u64>::new()));
    let s2 = samples.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(ts) = line.strip_prefix("Timestamp: ")
                && let Ok(ts) = ts.trim().parse::<u64>()
            {
                let arrived = now_ns();
                if let Ok(mut s) = s2.lock() {
                    s.push(arrived.saturating_sub(ts));
                }
            }
        }
    });

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipeline.toml");
    let mut cfg = Config::load(&path).expect("pipeline.toml");
    cfg.daemon.hot_reload = false;
    cfg.daemon.stats_interval_secs = 0;
    cfg.daemon.control_socket = None;
    cfg.outputs.stdout.enabled = Switch::Off;
    cfg.outputs.otlp = otlp_config(
        format!("http://127.0.0.1:{grpc}"),
        "grpc",
        &dir.join("spool-latency"),
    );
    let stats = Arc::new(Stats::default());
    let engine = Engine::new(ComponentCache::disabled()).expect("engine");
    let chain = Chain::build(&cfg, &engine, stats.clone()).expect("chain");
    let sinks = driftwatch::sink::build(&cfg, false, &stats).expect("sinks");
    let total = LATENCY_RATE * LATENCY_SECS;
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(runtime::run(Setup {
        cfg,
        config_path: None,
        engine,
        chain,
        sources: vec![Box::new(Paced {
            rate: LATENCY_RATE,
            total,
        })],
        sinks,
        enrichers: Vec::new(),
        enforcer: None,
        prefilter: None,
        stats: stats.clone(),
        shutdown,
    }))
    .expect("run");
    let deadline = Instant::now() + Duration::from_secs(60);
    while samples.lock().map(|s| s.len()).unwrap_or(0) < total as usize && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut s = samples.lock().map(|s| s.clone()).unwrap_or_default();
    s.sort_unstable();
    let pct = |p: f64| {
        s.get(((s.len() as f64 * p) as usize).min(s.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1e6
    };
    let otlp = OtlpConfig::default();
    println!(
        "latency event -> receiver, {LATENCY_RATE} events/s for {LATENCY_SECS}s through the default chain \
         (pipeline batch 20 ms, OTLP batch {} / {} ms): {} of {total} received; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        otlp.batch_size,
        otlp.batch_timeout_ms,
        s.len(),
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing
    // useful either: this is a measurement, so only run it when asked to.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // Any other argument picks sections by substring, e.g.
    // `-- "throughput grpc gzip"` to profile one of them.
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| name.contains(w.as_str()));
    let dir = tempfile::tempdir().expect("tempdir");
    for protocol in ["grpc", "http/protobuf"] {
        for compression in ["gzip", "none"] {
            if run(&format!("throughput {protocol} {compression}")) {
                throughput(protocol, compression, dir.path());
            }
        }
    }
    for protocol in ["grpc", "http/protobuf"] {
        for compression in ["gzip", "none"] {
            if run(&format!("exporter {protocol} {compression}")) {
                exporter_floor(protocol, compression, dir.path());
            }
        }
    }
    if run("latency") {
        latency(dir.path());
    }
}
