//! /metrics against the operator artefacts: the brief's metrics exist from a fresh node's first scrape, the
//! scrape passes `promtool check metrics` (but for the brief's own names), and every metric that the alert
//! rules (deploy/prometheus) and the dashboard (deploy/grafana) read is one that Herald nodes export.

use super::deploy_artefacts::{self, Sample};
use super::helpers::{self, TestApp};
use super::ws::Ws;
use herald_postgres::testing::TestDatabase;
use herald_redis::testing::OwnRedis;
use herald_server::config::{Config, StorageBackend};
use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// A `herald serve` process of its own: a fresh metrics recorder, as in production (the tests' in-process
/// servers share one recorder, so they cannot show what a first scrape holds).
struct OwnProcess {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl OwnProcess {
    fn start() -> OwnProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn herald");
        let stdout = child.stdout.take().expect("stdout");
        let base = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("herald listening on ").map(str::to_owned))
            .expect("the listening line");
        OwnProcess { child, base, _dir: dir }
    }
}

impl Drop for OwnProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn scrape(http: &reqwest::Client, base: &str) -> String {
    let response = http.get(format!("{base}/metrics")).send().await.expect("scrape");
    assert!(response.status().is_success(), "{}", response.status());
    response.text().await.expect("scrape body")
}

fn value(samples: &[Sample], name: &str, labels_contain: &[&str]) -> Option<f64> {
    samples.iter().find(|s| s.name == name && labels_contain.iter().all(|l| s.labels.contains(l))).map(|s| s.value)
}

/// What `promtool check metrics` may say about a Herald scrape: only what comes of the scaling brief's
/// names. The brief names latencies in milliseconds with an `_ms` suffix (so every Herald latency follows it),
/// and names its connections gauge `websocket_connections_total`; promtool's lint prefers base units and
/// keeps `_total` for counters. Anything else it reports (no help text, a counter without `_total`, a
/// malformed line) fails the test.
fn tolerated(problem: &str) -> bool {
    let Some((metric, text)) = problem.split_once(' ') else { return false };
    (metric.ends_with("_ms") && text == "metric names should not contain abbreviated units")
        || (metric == "websocket_connections_total" && text == r#"non-counter metrics should not have "_total" suffix"#)
}

/// `promtool check metrics` on `scrape`; skipped, with a note, where promtool is not installed
/// (scripts/test installs it).
fn promtool_check_metrics(scrape: &str) {
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("note: promtool is not on PATH; `promtool check metrics` skipped (scripts/test installs it)");
            return;
        }
        Err(e) => panic!("running promtool: {e}"),
    };
    child.stdin.take().expect("stdin").write_all(scrape.as_bytes()).expect("feed promtool");
    let out = child.wait_with_output().expect("promtool output");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // 0: clean; 3: lint problems only (1 would be an exposition promtool cannot parse).
    assert!(matches!(out.status.code(), Some(0 | 3)), "promtool check metrics failed: {}\n{report}", out.status);
    let problems: Vec<&str> = report.lines().filter(|l| !l.trim().is_empty() && !tolerated(l)).collect();
    assert!(problems.is_empty(), "promtool check metrics: {problems:#?}");
}

#[tokio::test]
async fn a_fresh_node_has_the_briefs_metrics_from_its_first_scrape_and_promtool_accepts_them() {
    let node = OwnProcess::start();
    let http = reqwest::Client::new();
    let first = scrape(&http, &node.base).await;
    let samples = deploy_artefacts::samples(&first);
    // Nothing has happened yet: present, and zero.
    for (name, labels) in [
        ("websocket_connections_total", &[][..]),
        ("websocket_connection_duration_seconds_count", &[]),
        ("message_processing_duration_ms_count", &[]),
        ("message_delivery_success_total", &[]),
        ("message_send_to_deliver_ms_count", &[]),
        ("database_query_duration_ms_count", &[r#"query_type="commit_with_feed""#, r#"table="messages""#][..]),
        ("websocket_slow_consumer_disconnects_total", &[]),
        ("store_errors_total", &[r#"kind="unavailable""#]),
        ("store_errors_total", &[r#"kind="backend""#]),
        ("media_uploads_total", &[r#"result="ready""#]),
    ] {
        assert_eq!(value(&samples, name, labels), Some(0.0), "{name}{labels:?} in the first scrape:\n{first}");
    }
    // Gauges that describe the node at once.
    assert!(value(&samples, "cache_hit_rate", &[r#"cache_layer="l1""#]).is_some(), "cache_hit_rate:\n{first}");
    let size = value(&samples, "storage_data_dir_size_bytes", &[]).expect("disk size in the first scrape");
    let free = value(&samples, "storage_data_dir_available_bytes", &[]).expect("free disk in the first scrape");
    assert!(size > 0.0 && (0.0..=size).contains(&free), "disk {free} of {size}");
    // The process's own memory and descriptors, so a remote node's memory per connection can be read.
    let rss = value(&samples, "process_resident_memory_bytes", &[]).expect("process RSS in the first scrape");
    let fds = value(&samples, "process_open_fds", &[]).expect("open fds in the first scrape");
    assert!(rss > 1_048_576.0 && fds >= 3.0, "RSS {rss} bytes, {fds} fds");
    // Every family says what it is.
    for family in samples.iter().map(|s| s.name.trim_end_matches("_bucket").trim_end_matches("_sum")) {
        let family = family.trim_end_matches("_count");
        assert!(first.contains(&format!("# HELP {family} ")), "no help text for {family}");
    }
    promtool_check_metrics(&first);
}

/// Traffic that makes every single-node metric the artefacts read move: a message sent, delivered live
/// over a WebSocket, and the WebSocket closed.
async fn chat(app: &TestApp) {
    let (a, b) = (app.register("obs_a").await, app.register("obs_b").await);
    let conversation = app.direct(&a, &b).await;
    let (mut ws, _) = Ws::connect_synced(app, &b, 0).await;
    app.send(&a, conversation, "obs-1", "hello").await;
    ws.events(1).await;
    drop(ws);
}

/// A node of a cluster of one, on PostgreSQL (with the primary named as its read replica too, which is
/// never behind) and its own Redis: the cluster and PostgreSQL metrics.
async fn cluster_node(redis: &OwnRedis) -> TestApp {
    let database = Arc::new(TestDatabase::create().await);
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    let mut config: Config = helpers::test_config(dir.path());
    config.storage.backend = StorageBackend::Postgres;
    config.storage.postgres = database.settings();
    config.storage.postgres.replica_urls = vec![database.settings().url];
    config.cluster.redis_urls = vec![redis.url()];
    config.cluster.key_prefix = helpers::unique_name("obs");
    config.log.partitions = 4;
    helpers::start(config, dir, Some(database)).await
}

/// The names the scrapes hold, polled until `wanted` are all there or the wait is over (some gauges are
/// published by periodic tasks).
async fn exported_names(apps: &[&TestApp], wanted: &BTreeSet<String>) -> BTreeSet<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut names = BTreeSet::new();
        for app in apps {
            let text = scrape(&app.http, &app.base).await;
            names.extend(deploy_artefacts::samples(&text).into_iter().map(|s| s.name));
        }
        if wanted.is_subset(&names) || tokio::time::Instant::now() > deadline {
            return names;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Series Prometheus records itself for every target it scrapes; no exporter writes them.
const RECORDED_BY_PROMETHEUS: &[&str] = &["up"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_the_alert_rules_and_the_dashboard_read_is_exported() {
    let mut referenced = BTreeSet::new();
    for file in deploy_artefacts::rule_files() {
        let yaml = std::fs::read_to_string(&file).expect("rule file");
        let alerts = deploy_artefacts::alerts(&yaml);
        assert!(!alerts.is_empty(), "{} has no alerts", file.display());
        for alert in alerts {
            assert!(alert.contains("runbook:"), "an alert without a runbook line in {}: {alert}", file.display());
        }
        for expr in deploy_artefacts::rule_expressions(&yaml) {
            referenced.extend(deploy_artefacts::metric_names(&expr));
        }
    }
    let dashboard_file = deploy_artefacts::deploy_dir().join("grafana/herald.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dashboard_file).expect("dashboard")).expect("dashboard JSON");
    let queries = deploy_artefacts::dashboard_queries(&dashboard);
    assert!(queries.len() > 10, "the dashboard's queries were not found: {queries:?}");
    for query in queries {
        referenced.extend(deploy_artefacts::metric_names(&query));
    }
    referenced.retain(|name| !RECORDED_BY_PROMETHEUS.contains(&name.as_str()));

    let single = helpers::spawn_app().await;
    chat(&single).await;
    let redis = OwnRedis::start().await;
    let clustered = cluster_node(&redis).await;
    chat(&clustered).await;
    let exported = exported_names(&[&single, &clustered], &referenced).await;
    let missing: Vec<&String> = referenced.difference(&exported).collect();
    assert!(missing.is_empty(), "read by deploy/ but exported by no node: {missing:?}");
    single.shutdown().await;
    clustered.shutdown().await;
}
