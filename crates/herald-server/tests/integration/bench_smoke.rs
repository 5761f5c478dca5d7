//! A seconds-long run of every benchmark scenario, for correctness only (each scenario fails on a lost,
//! doubled or misordered message). Timing is never asserted here: that is what BENCHMARKS.md is for.

use super::helpers::{KafkaCluster, postgres_backend, spawn_app};
use herald_postgres::testing::TestDatabase;
use std::process::Command;

/// Runs `herald bench`; on the suite's PostgreSQL (and Kafka) pass, its servers keep their stores in one fresh
/// database.
struct Bench {
    env: Vec<(&'static str, String)>,
    _database: Option<TestDatabase>,
}

impl Bench {
    fn new() -> Self {
        if !postgres_backend() {
            return Self { env: Vec::new(), _database: None };
        }
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let database = runtime.block_on(TestDatabase::create());
        // A bench server's pool defaults to 100 connections, as a production node's; two bench runs side by
        // side beside the other tests' servers took every connection PostgreSQL allows (100), and the next
        // server to start failed. Each server here gets the pool of a test app.
        let env = vec![
            ("HERALD_STORAGE__BACKEND", "postgres".to_owned()),
            ("HERALD_STORAGE__POSTGRES__URL", database.url()),
            ("HERALD_STORAGE__POSTGRES__POOL__MAX_SIZE", database.settings().pool.max_size.to_string()),
        ];
        Self { env, _database: Some(database) }
    }

    fn run(&self, args: &[&str]) -> String {
        self.run_with_report(args).0
    }

    /// Runs `herald bench ARGS`: its stdout and JSON report.
    fn run_with_report(&self, args: &[&str]) -> (String, serde_json::Value) {
        // On the Kafka pass each run's server is a one-node cluster of its own (a topic, group and Redis key
        // prefix of its own; the runs share the database).
        let mut env = self.env.clone();
        env.extend(KafkaCluster::for_this_pass().map(|cluster| cluster.env()).unwrap_or_default());
        bench(args, &env)
    }
}

/// Runs `herald bench ARGS`, checks what every run writes, and returns its stdout and JSON report.
fn bench(args: &[&str], env: &[(&str, String)]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("report.json");
    let chart = dir.path().join("chart.svg");
    let output = Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--chart")
        .arg(&chart)
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run herald bench");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "herald bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("JSON report written")).expect("JSON report parses");
    assert!(report["calibration"]["sha256_mb_per_second"].as_f64().is_some_and(|v| v > 0.0), "{report}");
    assert!(report["calibration"]["fsync_ms_median"].as_f64().is_some_and(|v| v > 0.0), "{report}");
    assert!(stdout.starts_with("calibration: "), "{stdout}");
    if !["sends", "media", "search"].contains(&args[0]) {
        let svg = std::fs::read_to_string(&chart).expect("chart written");
        assert!(svg.starts_with("<svg"), "{svg}");
        if ["groups", "direct"].contains(&args[0]) {
            assert!(svg.contains("p99 ms, each second"), "the fleet scenarios chart latency over time: {svg}");
        }
    }
    (stdout, report)
}

#[test]
fn every_scenario_runs_and_checks_itself() {
    let b = Bench::new();
    let out = b.run(&["sends", "--users", "4", "--in-flight", "2", "--duration", "1"]);
    assert!(out.contains("scenario sends"), "{out}");
    let out = b.run(&["sends", "--over", "ws", "--users", "4", "--in-flight", "3", "--duration", "1"]);
    assert!(out.contains("scenario sends over Ws"), "{out}");
    let out = b.run(&["idle", "--connections", "50", "--hold", "1", "--processes", "2", "--source-ips", "2"]);
    assert!(out.contains("scenario idle"), "{out}");
    let out = b.run(&["groups", "--rooms", "2", "--members", "4", "--rate", "40", "--duration", "1"]);
    assert!(out.contains("scenario groups") && !out.contains("same node"), "one server: overall figures only: {out}");
    assert!(out.contains("40 msg/s: p99 per second: median"), "each phase's seconds are summed up: {out}");
    let out = b.run(&["direct", "--pairs", "4", "--rate", "40", "--duration", "1"]);
    assert!(out.contains("scenario direct"), "{out}");
    let out = b.run(&[
        "saturate",
        "--rooms",
        "2",
        "--members",
        "3",
        "--start-rate",
        "20",
        "--phase-seconds",
        "1",
        "--steps",
        "1",
        "--p99-ms",
        "0.001",
    ]);
    assert!(out.contains("scenario saturate"), "{out}");
    let out = b.run(&["storm", "--connections", "20", "--missed", "2"]);
    assert!(out.contains("scenario storm"), "{out}");
    let out = b.run(&["crowd", "--members", "60", "--small-members", "4", "--connect-over", "0.5", "--duration", "1"]);
    assert!(out.contains("scenario crowd") && out.contains("slow-consumer disconnects: 0"), "{out}");
    // The small conversation's members (outside the group) hear each other come online: presence is counted.
    let out = b.run(&[
        "crowd",
        "--members",
        "30",
        "--small-members",
        "3",
        "--small-outside",
        "--connect-over",
        "0.2",
        "--duration",
        "1",
    ]);
    assert!(out.contains("a conversation of 3 other users") && !out.contains(" 0 frames received"), "{out}");
    let (out, report) = b.run_with_report(&["search", "--messages", "400", "--conversations", "4", "--queries", "40"]);
    assert!(out.contains("scenario search: 400 messages in 4 conversations"), "{out}");
    assert_eq!(report["kinds"].as_array().map(Vec::len), Some(10), "five kinds, over all or one: {report}");
    assert!(report["kinds"][0]["mean_results"].as_f64().is_some_and(|n| n > 0.0), "common words are found: {report}");
    let out = b.run(&["soak", "--rooms", "2", "--members", "3", "--rate", "20", "--duration", "2", "--interval", "1"]);
    assert!(out.contains("scenario soak") && out.contains("open fds") && !out.contains("reconnects/s"), "{out}");
    // The mixed soak: devices that come back and resume, history pages and uploads beside the groups traffic,
    // every one checked (a gap in a resumed feed or a page would fail the run), none failed.
    let out = b.run(&[
        "soak",
        "--rooms",
        "2",
        "--members",
        "3",
        "--rate",
        "20",
        "--reconnecting",
        "4",
        "--online-seconds",
        "1",
        "--history-per-second",
        "8",
        "--uploads-per-second",
        "1",
        "--duration",
        "6",
        "--interval",
        "3",
    ]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| minute") && !l.starts_with("| connected"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    let number = |row: &[&str], column: usize| row[column].parse::<f64>().unwrap_or_else(|_| panic!("{out}"));
    for row in &rows {
        // Columns: minute, deliveries/s, p50, p99, max, RSS, fds, reconnects/s, reconnect p99, caught up,
        // history/s, history p99, uploads/s, upload p99, failed (after the leading empty cell).
        assert!(number(row, 8) > 0.0 && number(row, 11) > 0.0 && number(row, 13) > 0.0, "{out}");
        assert_eq!(number(row, 15), 0.0, "{out}");
    }
    let out = b.run(&[
        "media",
        "--images",
        "2",
        "--width",
        "800",
        "--height",
        "600",
        "--videos",
        "1",
        "--video-seconds",
        "1",
    ]);
    assert!(out.contains("scenario media") && out.contains("| video | 1 |"), "{out}");
}

/// `overload` against a server that holds at most 4 pending writes: sends are refused, retried after their
/// delay, and each conversation still ends with its seqs dense (the run fails otherwise).
#[test]
fn overload_refuses_retries_and_loses_nothing() {
    let b = Bench::new();
    let mut env = b.env.clone();
    env.extend(KafkaCluster::for_this_pass().map(|cluster| cluster.env()).unwrap_or_default());
    env.push(("HERALD_LOG__MAX_PENDING_WRITES", "4".into()));
    env.push(("HERALD_LOG__ADMISSION_WAIT_MS", "0".into()));
    let args = ["overload", "--users", "8", "--in-flight", "16", "--heavy", "2", "--light", "1", "--light-users", "2"];
    let (out, report) = bench(&args, &env);
    assert!(out.contains("scenario overload") && out.contains("| heavy |"), "{out}");
    let heavy = &report["phases"][0];
    assert!(heavy["refused_per_second"].as_f64().is_some_and(|r| r > 0.0), "4 slots for 128 sends: {report}");
    assert!(heavy["served_per_second"].as_f64().is_some_and(|r| r > 0.0), "{report}");
}

/// `broadcast` at a tiny size: 40 sockets in 2 groups over 2 client processes, every one receiving its group's
/// message, and the server's memory read from its own /metrics (the way remote nodes are measured).
#[test]
fn broadcast_reaches_every_socket_and_reads_the_servers_memory_from_its_metrics() {
    let b = Bench::new();
    let (out, report) = b.run_with_report(&[
        "broadcast",
        "--connections",
        "40",
        "--group-size",
        "20",
        "--processes",
        "2",
        "--source-ips",
        "2",
        "--timeout",
        "30",
    ]);
    assert!(
        out.contains("scenario broadcast: 40 connections over 1 nodes, 2 groups of up to 20, 2 client processes"),
        "{out}"
    );
    assert!(out.contains("| node | connections (server says) | RSS before (MiB) |"), "{out}");
    assert!(out.contains("| 40 (40) |"), "the server counts every socket: {out}");
    assert!(out.contains("every one of 40 sockets received its group's message; p50 "), "{out}");
    assert!(out.contains("client helpers' RSS (MiB): "), "{out}");
    let node = &report["per_node"][0];
    assert!(node["rss_connected_bytes"].as_f64().is_some_and(|b| b > 1_048_576.0), "{report}");
    assert!(node["open_fds_connected"].as_f64().is_some_and(|f| f >= 40.0), "{report}");
    assert!(report["latency_ms_p99"].as_f64().is_some_and(|l| l > 0.0), "{report}");
    assert_eq!(report["helper_rss_bytes"].as_array().map(Vec::len), Some(2), "{report}");
}

/// `--server` given twice. The same server named twice stands in for two nodes (a real cluster is measured by
/// hand, BENCHMARKS.md): what is checked is that the members are spread over both, that every delivery is
/// counted under exactly one route, and that the table and the JSON give both.
#[test]
fn several_servers_report_same_and_cross_node_latency_apart() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let app = runtime.block_on(spawn_app());
    let base = app.base.clone();
    let (out, report) = bench(
        &[
            "groups",
            "--server",
            &base,
            "--server",
            &base,
            "--rooms",
            "2",
            "--members",
            "4",
            "--rate",
            "40",
            "--duration",
            "1",
        ],
        &[],
    );
    assert!(out.contains("| same node |") && out.contains("| cross node |"), "{out}");
    let deliveries = |route: &str| report[route]["deliveries"].as_u64().expect("deliveries of the route");
    // Members alternate between the nodes, so half of each room (its sender among them) is on the sender's.
    assert!(deliveries("same_node") > 0, "{report}");
    assert_eq!(deliveries("same_node"), deliveries("cross_node"), "{report}");
    assert_eq!(Some(deliveries("same_node") * 2), report["deliveries"].as_u64(), "{report}");
    assert!(report["cross_node"]["latency_ms_p99"].as_f64().is_some(), "{report}");
    runtime.block_on(app.shutdown());
}
