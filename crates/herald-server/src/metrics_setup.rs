//! The Prometheus recorder: installed once per process (the `metrics` facade is global) and shared by
//! every server the process runs (tests run several).
//!
//! The recorder keeps every histogram sample it is given in a queue until something drains it into the
//! buckets: a scrape, or its upkeep. Installed with `install_recorder` it runs no upkeep of its own, so a
//! node nobody scrapes kept 8 bytes per sample, several samples per delivery, for ever (about 1 MB per
//! second at 50k deliveries per second). [`UPKEEP_INTERVAL`] bounds that queue to a few seconds of samples.

use crate::metrics_catalogue;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// How often the recorder's sample queues are drained into their buckets when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Millisecond histograms: the brief's buckets, with sub-millisecond ones added because the embedded
/// store answers in microseconds.
const MS_BUCKETS: &[f64] =
    &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0];
/// Second histograms (connection durations): the brief's buckets.
const SECONDS_BUCKETS: &[f64] = &[1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0];
/// Everything else is a count (batch sizes): powers of two.
const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0];

pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(COUNT_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_ms".into()), MS_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS));
            let handle = match builder.map(|b| b.install_recorder()) {
                Ok(Ok(handle)) => handle,
                // Another recorder is already installed: keep a private one so /metrics still answers.
                Ok(Err(e)) | Err(e) => {
                    tracing::warn!(error = %e, "could not install the Prometheus recorder");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            start_upkeep(handle.clone());
            // Described once the recorder is in place: descriptions given to no recorder are lost.
            metrics_catalogue::describe();
            handle
        })
        .clone()
}

/// Drains the recorder's sample queues for as long as the process lives. A thread rather than a task: the
/// recorder outlives any one server (and its runtime) in a process that runs several.
fn start_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new().name("herald-metrics-upkeep".into()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            handle.run_upkeep();
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the metrics upkeep: histogram samples wait for a scrape");
    }
}
