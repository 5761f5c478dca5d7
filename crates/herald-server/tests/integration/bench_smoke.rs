//! A seconds-long run of every benchmark scenario, for correctness only (each scenario fails on a lost,
//! doubled or misordered message). Timing is never asserted here: that is what BENCHMARKS.md is for.

use std::process::Command;

fn bench(args: &[&str]) -> String {
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
    assert!(stdout.starts_with("calibration: "), "{stdout}");
    if !["sends", "media"].contains(&args[0]) {
        let svg = std::fs::read_to_string(&chart).expect("chart written");
        assert!(svg.starts_with("<svg"), "{svg}");
    }
    stdout
}

#[test]
fn every_scenario_runs_and_checks_itself() {
    let out = bench(&["sends", "--users", "4", "--in-flight", "2", "--duration", "1"]);
    assert!(out.contains("scenario sends"), "{out}");
    let out = bench(&["sends", "--over", "ws", "--users", "4", "--in-flight", "3", "--duration", "1"]);
    assert!(out.contains("scenario sends over Ws"), "{out}");
    let out = bench(&["idle", "--connections", "50", "--hold", "1", "--processes", "2", "--source-ips", "2"]);
    assert!(out.contains("scenario idle"), "{out}");
    let out = bench(&["groups", "--rooms", "2", "--members", "4", "--rate", "40", "--duration", "1"]);
    assert!(out.contains("scenario groups"), "{out}");
    let out = bench(&["direct", "--pairs", "4", "--rate", "40", "--duration", "1"]);
    assert!(out.contains("scenario direct"), "{out}");
    let out = bench(&[
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
    let out = bench(&["storm", "--connections", "20", "--missed", "2"]);
    assert!(out.contains("scenario storm"), "{out}");
    let out = bench(&["soak", "--rooms", "2", "--members", "3", "--rate", "20", "--duration", "2", "--interval", "1"]);
    assert!(out.contains("scenario soak") && out.contains("open fds"), "{out}");
    let out = bench(&[
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
