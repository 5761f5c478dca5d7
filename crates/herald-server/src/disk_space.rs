//! Free space on the filesystem that holds the data directory, published as
//! `storage_data_dir_available_bytes` and `storage_data_dir_size_bytes`: a full disk stops every write (the
//! journal, the database, media uploads), and the alert rules warn before it is full.

use std::path::Path;

/// The filesystem's space as an unprivileged process sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes this process may still write (blocks reserved for root excluded).
    pub available: u64,
    /// The filesystem's size in bytes.
    pub size: u64,
}

#[cfg(unix)]
pub fn of(path: &Path) -> std::io::Result<DiskSpace> {
    let stat = rustix::fs::statvfs(path)?;
    Ok(DiskSpace {
        available: stat.f_bavail.saturating_mul(stat.f_frsize),
        size: stat.f_blocks.saturating_mul(stat.f_frsize),
    })
}

#[cfg(not(unix))]
pub fn of(_path: &Path) -> std::io::Result<DiskSpace> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "disk space is only read on Unix"))
}

/// Sets the gauges; a filesystem that cannot be read leaves them at their last value, with a warning.
pub fn publish(data_dir: &Path) {
    match of(data_dir) {
        Ok(space) => {
            metrics::gauge!("storage_data_dir_available_bytes").set(space.available as f64);
            metrics::gauge!("storage_data_dir_size_bytes").set(space.size as f64);
        }
        Err(e) => {
            tracing::warn!(error = %e, dir = %data_dir.display(), "could not read the data directory's disk space")
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    #[test]
    fn the_data_directorys_filesystem_has_a_size_and_some_room() {
        let dir = tempfile::tempdir().expect("tempdir");
        let space = super::of(dir.path()).expect("statvfs");
        assert!(space.size > 0);
        assert!(space.available <= space.size, "{space:?}");
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        assert!(super::of(std::path::Path::new("/no/such/herald/dir")).is_err());
    }
}
