//! A fixed piece of work timed before every run, printed beside the results: figures taken on different
//! machines (or on one machine at different moments: these are shared) can then be told apart from changes
//! to Herald.

use sha2::Digest;
use std::time::Instant;

/// What the machine did with the fixed work.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Calibration {
    /// Cores the process may use.
    pub cores: usize,
    /// SHA-256 over 64 MiB on one thread, in MB/s (the best of three).
    pub sha256_mb_per_second: f64,
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
        Calibration {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            sha256_mb_per_second: BYTES as f64 / 1e6 / best.max(1e-9),
        }
    }

    /// The line printed before a run's results.
    pub fn line(&self) -> String {
        format!("calibration: {} cores, SHA-256 {:.0} MB/s on one core", self.cores, self.sha256_mb_per_second)
    }
}
