//! Self-telemetry: the daemon's counters ([`Stats`]) as OTLP metrics, to
//! the same receiver as the findings. Counters are observed from the same
//! snapshot `driftwatch stats` prints, so the two never disagree.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader;
use opentelemetry_sdk::runtime::Tokio;

use super::client::{self, ClientError};
use super::settings::Settings;
use crate::config::MetricsConfig;
use crate::stats::{CALL_BUCKETS_US, Snapshot, Stats};

/// One observation per attribute set.
type Points = Vec<(u64, Vec<KeyValue>)>;

pub struct Meters {
    provider: SdkMeterProvider,
}

impl Meters {
    /// Sends a last collection; bounded so a dead backend cannot hold up exit.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || provider.shutdown());
        let _ = tokio::time::timeout(Duration::from_secs(3), done).await;
    }
}

/// Must run inside the export loop's runtime (the reader is a task on it).
pub fn start(
    s: &Settings,
    cfg: &MetricsConfig,
    resource: &Resource,
    stats: &Arc<Stats>,
) -> Result<Meters, ClientError> {
    let exporter = client::metric_exporter(s)?;
    let reader = PeriodicReader::builder(exporter, Tokio)
        .with_interval(Duration::from_secs(cfg.interval_secs.max(1)))
        .build();
    let provider = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource.clone())
        .build();
    let meter = provider.meter("driftwatch");

    let counter = |name: &'static str, description: &'static str, pick: fn(&Snapshot) -> Points| {
        let stats = stats.clone();
        meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_callback(move |o| {
                for (v, attrs) in pick(&stats.snapshot()) {
                    o.observe(v, &attrs);
                }
            })
            .build()
    };
    let _instruments = [
        counter(
            "driftwatch.events.received",
            "Events received, per kind",
            |s| {
                s.events_in
                    .iter()
                    .map(|(k, n)| (*n, vec![KeyValue::new("kind", k.clone())]))
                    .collect()
            },
        ),
        counter(
            "driftwatch.events.lost",
            "Events the kernel could not queue (ring buffer full)",
            |s| vec![(s.kernel_lost, Vec::new())],
        ),
        counter(
            "driftwatch.kernel.read_faults",
            "Kernel reads that failed; the fields they fed are reported unknown",
            |s| vec![(s.kernel_read_faults, Vec::new())],
        ),
        counter(
            "driftwatch.events.dropped",
            "Events dropped by a plugin verdict",
            |s| {
                s.dropped_by_plugin
                    .iter()
                    .map(|(p, n)| (*n, vec![KeyValue::new("plugin", p.clone())]))
                    .collect()
            },
        ),
        counter("driftwatch.findings", "Findings, per rule", |s| {
            s.findings
                .iter()
                .map(|(r, n)| (*n, vec![KeyValue::new("security_rule.name", r.clone())]))
                .collect()
        }),
        counter(
            "driftwatch.findings.by_priority",
            "Findings, per priority",
            |s| {
                s.findings_by_priority
                    .iter()
                    .map(|(p, n)| (*n, vec![KeyValue::new("priority", p.clone())]))
                    .collect()
            },
        ),
        counter(
            "driftwatch.plugin.failures",
            "Failed plugin calls, per plugin and cause",
            |s| {
                s.plugin_failures
                    .iter()
                    .flat_map(|(p, kinds)| {
                        kinds.iter().map(move |(k, n)| {
                            (
                                *n,
                                vec![
                                    KeyValue::new("plugin", p.clone()),
                                    KeyValue::new("error.type", k.clone()),
                                ],
                            )
                        })
                    })
                    .collect()
            },
        ),
        counter(
            "driftwatch.export.records",
            "Log records, per outcome: exported, rejected, refused (spool full), redelivered",
            |s| {
                let e = &s.export;
                [
                    ("exported", e.exported),
                    ("rejected", e.rejected),
                    ("refused", e.spool_refused),
                    ("redelivered", e.redelivered),
                ]
                .into_iter()
                .map(|(o, n)| (n, vec![KeyValue::new("outcome", o)]))
                .collect()
            },
        ),
        counter(
            "driftwatch.export.failures",
            "Failed export requests (each is retried)",
            |s| vec![(s.export.failed_requests, Vec::new())],
        ),
    ];
    let stats_depth = stats.clone();
    let _depth = meter
        .u64_observable_gauge("driftwatch.spool.depth")
        .with_description("Records waiting in the spool for export")
        .with_callback(move |o| o.observe(stats_depth.snapshot().export.spool_records, &[]))
        .build();
    let histogram = meter
        .f64_histogram("driftwatch.plugin.call.duration")
        .with_unit("s")
        .with_description("Duration of one plugin call (one batch)")
        .with_boundaries(
            CALL_BUCKETS_US
                .iter()
                .map(|us| *us as f64 / 1_000_000.0)
                .collect(),
        )
        .build();
    stats.set_call_histogram(histogram);
    // Observable instruments stay registered with the provider; their
    // handles are not needed.
    Ok(Meters { provider })
}
