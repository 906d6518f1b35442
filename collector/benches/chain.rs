//! Events per second through the default four-plugin chain (WASM components
//! in wasmtime), against the same four rules run natively with the same
//! MessagePack encoding and decoding, side by side in one run.
//!
//! `cargo bench -p driftwatch --bench chain`; the ratio is what matters.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use driftwatch::config::Config;
use driftwatch::pipeline::{Chain, Found};
use driftwatch::plugin::Engine;
use driftwatch::plugin::cache::ComponentCache;
use driftwatch::stats::Stats;
use driftwatch_sdk::{
    Container, Event, EventKind, FileInfo, FileType, Plugin, Prefilter, Process, RuleTable,
    Verdict, codec,
};

const BATCH: usize = 512;

/// Which replay to run.
#[derive(Clone, Copy)]
enum Mix {
    /// Under attack: shells, package managers, drifted binaries and writes
    /// to /etc in most containers; about 4 events in 10 make a finding.
    Attack,
    /// A quiet production node: applications exec their own binaries and
    /// write to /tmp and /var/log; 2 events of 512 are drift.
    Steady,
}

fn events(mix: Mix) -> Vec<Event> {
    let names: [&str; 8] = match mix {
        Mix::Attack => [
            "nginx", "sh", "python3", "apt-get", "ls", "node", "x", "cat",
        ],
        Mix::Steady => [
            "nginx", "python3", "node", "ls", "cat", "gzip", "java", "ruby",
        ],
    };
    (0..BATCH)
        .map(|i| {
            let exec = i % 10 < 7;
            let name = match mix {
                Mix::Steady if i == 100 => "sh".to_string(),
                _ => names[i % names.len()].to_string(),
            };
            let path = match mix {
                Mix::Attack if i % 3 == 0 => format!("/tmp/f{i}"),
                Mix::Attack => format!("/etc/app/{i}.conf"),
                Mix::Steady if i == 207 => "/etc/passwd".to_string(),
                Mix::Steady if i % 2 == 0 => format!("/tmp/f{i}"),
                Mix::Steady => format!("/var/log/app/{i}.log"),
            };
            Event {
                time_ns: 1_780_000_000_000_000_000 + i as u64,
                kind: if exec {
                    EventKind::Exec
                } else {
                    EventKind::OpenWrite
                },
                hostname: "node-1".into(),
                process: Process {
                    pid: 1000 + i as u32,
                    tid: 1000 + i as u32,
                    ppid: 999,
                    vpid: 2 + (i % 5) as u32,
                    user_name: Some("root".into()),
                    exe_path: format!("/usr/bin/{name}"),
                    args: vec![name.clone(), "--flag".into(), format!("/srv/data/{i}")],
                    cwd: "/srv".into(),
                    pname: "bash".into(),
                    pexe_path: "/bin/bash".into(),
                    exe_upper_layer: name == "x",
                    exe_lower_layer: name != "x",
                    name,
                    ..Process::default()
                },
                container: (i % 8 != 0).then(|| Container {
                    id: "3f1c9a7be2d04c55a1e8f0b6d2c4e6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c6d8e0".into(),
                    name: Some("web".into()),
                    runtime: Some("podman".into()),
                    image_repository: Some("localhost/app".into()),
                    image_tag: Some("v1".into()),
                    image_digest: None,
                    image_id: None,
                }),
                k8s: None,
                file: (!exec).then(|| FileInfo {
                    path,
                    flags: 0o101,
                    mode: 0o644,
                    file_type: FileType::Regular,
                    ..FileInfo::default()
                }),
                ..Event::default()
            }
        })
        .collect()
}

/// The four built-in rules as native Rust, fed exactly like the chain feeds
/// the components: each plugin gets the events of its kinds that pass its
/// manifest's prefilter, each such event encoded once, one MessagePack batch
/// per plugin, verdicts encoded and decoded again.
struct Native {
    shell: driftwatch_plugin_shell::ShellDetector,
    pm: driftwatch_plugin_package_manager::PackageManagerDetector,
    drift: driftwatch_plugin_drift_binary::DriftBinaryDetector,
    write: driftwatch_plugin_write_filter::WriteFilter,
    prefilters: [Prefilter; 4],
    /// Each plugin's declared rules, which fired verdicts name.
    rules: [RuleTable; 4],
}

fn prefilter(p: &impl Plugin) -> Prefilter {
    Prefilter::compile(&p.manifest().prefilter).unwrap()
}

fn rules(p: &impl Plugin) -> RuleTable {
    RuleTable::compile(&p.manifest().rules).unwrap()
}

impl Native {
    fn new() -> Native {
        let shell = Plugin::new(Default::default()).unwrap();
        let pm = Plugin::new(Default::default()).unwrap();
        let drift = Plugin::new(Default::default()).unwrap();
        let write = Plugin::new(Default::default()).unwrap();
        Native {
            prefilters: [
                prefilter(&shell),
                prefilter(&pm),
                prefilter(&drift),
                prefilter(&write),
            ],
            rules: [rules(&shell), rules(&pm), rules(&drift), rules(&write)],
            shell,
            pm,
            drift,
            write,
        }
    }

    fn process(&mut self, events: &[Event]) -> usize {
        let kinds = [
            EventKind::Exec,
            EventKind::Exec,
            EventKind::Exec,
            EventKind::OpenWrite,
        ];
        let mut encoded = Vec::new();
        let mut spans: Vec<Option<(usize, usize)>> = vec![None; events.len()];
        let mut batches: [Vec<u8>; 4] = Default::default();
        for (p, batch) in batches.iter_mut().enumerate() {
            let sel: Vec<usize> = (0..events.len())
                .filter(|&i| events[i].kind == kinds[p] && self.prefilters[p].matches(&events[i]))
                .collect();
            for &i in &sel {
                if spans[i].is_none() {
                    let start = encoded.len();
                    codec::encode_into(&mut encoded, &events[i]).unwrap();
                    spans[i] = Some((start, encoded.len()));
                }
            }
            codec::write_array_header(batch, sel.len());
            for &i in &sel {
                let (a, b) = spans[i].unwrap();
                batch.extend_from_slice(&encoded[a..b]);
            }
        }
        // Findings as the chain keeps them: spelled out, or the declared
        // rule (rendered later, by the sink).
        let mut findings: Vec<Found> = Vec::new();
        let mut collect = |p: usize, bytes: Vec<u8>| {
            let rules = &self.rules[p];
            codec::decode_array::<Verdict, _>(&bytes, |v| {
                findings.extend(Found::of_verdict(v.findings, v.fired, rules));
            })
            .unwrap();
        };
        let [shell, pm, drift, write] = &batches;
        collect(
            0,
            driftwatch_sdk::plugin::process_batch(&mut self.shell, shell).unwrap(),
        );
        collect(
            1,
            driftwatch_sdk::plugin::process_batch(&mut self.pm, pm).unwrap(),
        );
        collect(
            2,
            driftwatch_sdk::plugin::process_batch(&mut self.drift, drift).unwrap(),
        );
        collect(
            3,
            driftwatch_sdk::plugin::process_batch(&mut self.write, write).unwrap(),
        );
        findings.len()
    }
}

fn chain() -> Chain {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipeline.toml");
    let cfg = Config::load(&path).expect("pipeline.toml");
    let engine = Engine::new(ComponentCache::disabled()).expect("engine");
    Chain::build(&cfg, &engine, Arc::new(Stats::default())).expect("chain")
}

fn bench(c: &mut Criterion) {
    for (mix, name) in [
        (Mix::Attack, "four-rule chain, attack mix"),
        (Mix::Steady, "four-rule chain, steady mix"),
    ] {
        let evs = events(mix);
        let mut native = Native::new();
        let mut chain = chain();
        // Both paths must agree before their speed means anything.
        let chain_findings: usize = chain
            .process(evs.clone())
            .iter()
            .map(|p| p.findings.len())
            .sum();
        let native_findings = native.process(&evs);
        assert_eq!(chain_findings, native_findings);
        assert!(chain_findings > 0, "the mix must exercise the rules");
        eprintln!("{name}: {chain_findings} findings per {BATCH} events");

        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(BATCH as u64));
        // The chain consumes its batch, so each iteration gets a fresh
        // copy. `LargeInput` keeps one copy in memory at a time: with
        // `SmallInput`, tens of megabytes of prepared batches and results
        // stayed alive per sample, and the chain was timed on memory that
        // was cold in the caches and freshly faulted in, where the native
        // side reuses its warm input.
        g.bench_function("wasm chain (wasmtime)", |b| {
            b.iter_batched(
                || evs.clone(),
                |e| black_box(chain.process(e)),
                BatchSize::LargeInput,
            )
        });
        g.bench_function("native rules, same msgpack", |b| {
            b.iter(|| black_box(native.process(&evs)))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
