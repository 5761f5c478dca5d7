//! The process's own resident memory and open file descriptors, under the standard Prometheus names
//! (`process_resident_memory_bytes`, `process_open_fds`), read from `/proc/self` at each scrape: a bench or an
//! operator on another host can then read a node's memory per connection from its `/metrics` alone. Read at
//! scrape time rather than on a timer, so a value taken just after a burst of connections is that burst's.
//! Off Linux (no `/proc`) the gauges are simply absent.

/// Sets both gauges from `/proc/self`; what cannot be read is left out.
pub fn publish() {
    if let Some(bytes) = resident_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(bytes as f64);
    }
    if let Some(fds) = open_fds() {
        metrics::gauge!("process_open_fds").set(fds as f64);
    }
}

/// Resident set size in bytes: `VmRSS` of `/proc/self/status`, which the kernel gives in KiB (no page size
/// to look up, unlike `statm`).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Open file descriptors: the entries of `/proc/self/fd` (the directory handle being read is one of them, as
/// in every exporter that counts this way).
fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn this_process_has_memory_and_descriptors() {
        assert!(super::resident_bytes().is_some_and(|b| b > 1024 * 1024), "{:?}", super::resident_bytes());
        let before = super::open_fds().expect("fds");
        let file = std::fs::File::open("/proc/self/status").expect("open");
        assert!(super::open_fds().expect("fds") > before, "an opened file is counted");
        drop(file);
    }
}
