//! Fixed pieces of work timed before every run, printed beside the results: figures taken on different
//! machines (or on one machine at different moments: these are shared) can then be told apart from changes
//! to Herald. One is CPU (SHA-256), one is the disk's flush (what every durable ack and checkpoint waits on).

use sha2::Digest;
use std::io::Write;
use std::time::Instant;

/// Flushes timed for the disk's figure.
const SYNCS: usize = 100;

/// What the machine did with the fixed work.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Calibration {
    /// Cores the process may use.
    pub cores: usize,
    /// SHA-256 over 64 MiB on one thread, in MB/s (the best of three).
    pub sha256_mb_per_second: f64,
    /// A 4 KiB append and `fdatasync` in the temp dir (where a private bench node keeps its data): the
    /// median and the slowest of 100, in milliseconds; absent if the temp dir cannot be written.
    pub fsync_ms_median: Option<f64>,
    pub fsync_ms_max: Option<f64>,
}

impl Calibration {
    pub fn measure() -> Calibration {
        const BYTES: usize = 64 * 1024 * 1024;
        let data = vec![0x5au8; BYTES];
        let best = (0..3)
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(sha2::Sha256::digest(std::hint::black_box(&data)));
                started.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        let syncs = fsync_times().map_err(|e| eprintln!("calibration: no fsync figure ({e})")).ok();
        Calibration {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            sha256_mb_per_second: BYTES as f64 / 1e6 / best.max(1e-9),
            fsync_ms_median: syncs.as_ref().map(|s| s[s.len() / 2]),
            fsync_ms_max: syncs.as_ref().and_then(|s| s.last().copied()),
        }
    }

    /// The line printed before a run's results.
    pub fn line(&self) -> String {
        let mut line =
            format!("calibration: {} cores, SHA-256 {:.0} MB/s on one core", self.cores, self.sha256_mb_per_second);
        if let (Some(median), Some(max)) = (self.fsync_ms_median, self.fsync_ms_max) {
            line.push_str(&format!(", fsync {median:.2} ms (slowest {max:.2})"));
        }
        line
    }
}

/// The times of [`SYNCS`] appends of 4 KiB, each followed by `fdatasync`, sorted, in milliseconds.
fn fsync_times() -> std::io::Result<Vec<f64>> {
    let dir = tempfile::tempdir()?;
    let mut file = std::fs::File::create(dir.path().join("calibration"))?;
    let block = [0xa5u8; 4096];
    let mut times = Vec::with_capacity(SYNCS);
    for _ in 0..SYNCS {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}
