//! Events per second through the default four-plugin chain (WASM components
//! in wasmtime), against the same four rules run natively with the same
//! MessagePack encoding and decoding, side by side in one run.
//!
//! `cargo bench -p driftwatch --bench chain`; the ratio is what matters.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use driftwatch::config::Config;
use driftwatch::pipeline::Chain;
use driftwatch::plugin::Engine;
use driftwatch::plugin::cache::ComponentCache;
use driftwatch::stats::Stats;
use driftwatch_sdk::{
    Container, Event, EventKind, FileInfo, FileType, Plugin, Process, Verdict, codec,
};

const BATCH: usize = 512;

/// A realistic mix: container execs (a few shells, package managers and
/// drifted binaries) and writes, some outside containers.
fn events() -> Vec<Event> {
    let names = [
        "nginx", "sh", "python3", "apt-get", "ls", "node", "x", "cat",
    ];
    (0..BATCH)
        .map(|i| {
            let exec = i % 10 < 7;
            let name = names[i % names.len()].to_string();
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
                    path: if i % 3 == 0 {
                        format!("/tmp/f{i}")
                    } else {
                        format!("/etc/app/{i}.conf")
                    },
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
/// the components: each event encoded once, one MessagePack batch per
/// plugin of the kinds it wants, verdicts encoded and decoded again.
struct Native {
    shell: driftwatch_plugin_shell::ShellDetector,
    pm: driftwatch_plugin_package_manager::PackageManagerDetector,
    drift: driftwatch_plugin_drift_binary::DriftBinaryDetector,
    write: driftwatch_plugin_write_filter::WriteFilter,
}

impl Native {
    fn new() -> Native {
        Native {
            shell: Plugin::new(Default::default()).unwrap(),
            pm: Plugin::new(Default::default()).unwrap(),
            drift: Plugin::new(Default::default()).unwrap(),
            write: Plugin::new(Default::default()).unwrap(),
        }
    }

    fn process(&mut self, events: &[Event]) -> usize {
        // Like the chain: every event encoded once, back to back, and each
        // plugin's batch copied together from the slices it takes.
        let mut encoded = Vec::with_capacity(events.len() * 512);
        let mut ranges = Vec::with_capacity(events.len());
        for e in events {
            let start = encoded.len();
            codec::encode_into(&mut encoded, e).unwrap();
            ranges.push(start..encoded.len());
        }
        let batch = |kind: EventKind| {
            let sel: Vec<&[u8]> = events
                .iter()
                .zip(&ranges)
                .filter(|(e, _)| e.kind == kind)
                .map(|(_, r)| &encoded[r.clone()])
                .collect();
            let mut out = Vec::with_capacity(sel.iter().map(|b| b.len()).sum::<usize>() + 5);
            codec::write_array_header(&mut out, sel.len());
            sel.iter().for_each(|b| out.extend_from_slice(b));
            out
        };
        let (execs, writes) = (batch(EventKind::Exec), batch(EventKind::OpenWrite));
        let mut findings = 0;
        let mut count = |bytes: Vec<u8>| {
            codec::decode_array::<Verdict, _>(&bytes, |v| findings += v.findings.len()).unwrap();
        };
        count(driftwatch_sdk::plugin::process_batch(&mut self.shell, &execs).unwrap());
        count(driftwatch_sdk::plugin::process_batch(&mut self.pm, &execs).unwrap());
        count(driftwatch_sdk::plugin::process_batch(&mut self.drift, &execs).unwrap());
        count(driftwatch_sdk::plugin::process_batch(&mut self.write, &writes).unwrap());
        findings
    }
}

fn chain() -> Chain {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipeline.toml");
    let cfg = Config::load(&path).expect("pipeline.toml");
    let engine = Engine::new(ComponentCache::disabled()).expect("engine");
    Chain::build(&cfg, &engine, Arc::new(Stats::default())).expect("chain")
}

fn bench(c: &mut Criterion) {
    let evs = events();
    let mut native = Native::new();
    let mut chain = chain();
    // Both paths must agree before their speed means anything.
    let chain_findings: usize = chain
        .process(evs.clone())
        .iter()
        .map(|p| p.findings.len())
        .sum();
    assert_eq!(chain_findings, native.process(&evs));

    let mut g = c.benchmark_group("four-rule chain");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("wasm chain (wasmtime)", |b| {
        b.iter_batched(
            || evs.clone(),
            |e| black_box(chain.process(e)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("native rules, same msgpack", |b| {
        b.iter(|| black_box(native.process(&evs)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
