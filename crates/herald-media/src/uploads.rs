//! The partial-upload area: one file per pending upload under `work_dir/uploads`, appended to by
//! resumable `PATCH` requests. The file's length is the upload's offset (no database write per chunk):
//! whatever reached the disk before a dropped connection or a crash is where the client resumes.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use herald_proto::MediaId;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::io::AsyncWriteExt;

pub struct UploadArea {
    dir: PathBuf,
    /// Uploads with a request writing to them right now: a second concurrent writer is refused.
    busy: Mutex<HashSet<MediaId>>,
}

/// Why an append failed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the upload is at offset {current}, not {given}")]
    WrongOffset { current: u64, given: u64 },
    #[error("another request is writing to this upload")]
    Busy,
    #[error("the bytes go past the declared size of {declared}")]
    TooLong { declared: u64 },
    #[error("the upload's partial file is missing")]
    Missing,
    #[error("reading the request body: {0}")]
    Body(String),
    #[error("writing the partial file: {0}")]
    Io(#[from] std::io::Error),
}

/// Frees the busy mark when the append ends, however it ends.
struct BusyMark<'a> {
    area: &'a UploadArea,
    id: MediaId,
}

impl Drop for BusyMark<'_> {
    fn drop(&mut self) {
        self.area.busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

impl UploadArea {
    pub fn open(work_dir: &Path) -> std::io::Result<Self> {
        let dir = work_dir.join("uploads");
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir, busy: Mutex::default() })
    }

    pub fn path(&self, id: MediaId) -> PathBuf {
        self.dir.join(format!("{id}.part"))
    }

    /// A scratch directory for processing one upload (renditions, posters); the caller removes it.
    pub fn scratch(&self, id: MediaId) -> PathBuf {
        self.dir.join(format!("{id}.work"))
    }

    pub async fn create(&self, id: MediaId) -> std::io::Result<()> {
        tokio::fs::File::create(self.path(id)).await.map(drop)
    }

    /// Bytes received so far; `None` when there is no partial file.
    pub async fn received(&self, id: MediaId) -> Option<u64> {
        tokio::fs::metadata(self.path(id)).await.ok().map(|m| m.len())
    }

    /// Appends `body` at `offset` (which must be the current length) without passing `declared` bytes in
    /// all. A body that would pass it is refused whole: the file is cut back to `offset`, so a retry
    /// starts from a known state. A body that ends early (dropped connection) keeps what arrived. Returns
    /// the new length.
    pub async fn append<S, E>(&self, id: MediaId, offset: u64, declared: u64, body: S) -> Result<u64, AppendError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        if !self.busy.lock().unwrap_or_else(|p| p.into_inner()).insert(id) {
            return Err(AppendError::Busy);
        }
        let _mark = BusyMark { area: self, id };
        let path = self.path(id);
        let current = match tokio::fs::metadata(&path).await {
            Ok(meta) => meta.len(),
            Err(_) => return Err(AppendError::Missing),
        };
        if current != offset {
            return Err(AppendError::WrongOffset { current, given: offset });
        }
        let mut file = tokio::fs::OpenOptions::new().append(true).open(&path).await?;
        let mut written = offset;
        let mut body = std::pin::pin!(body);
        let outcome = loop {
            match body.next().await {
                None => break Ok(()),
                Some(Err(e)) => break Err(AppendError::Body(e.to_string())),
                Some(Ok(chunk)) => {
                    if written + chunk.len() as u64 > declared {
                        break Err(AppendError::TooLong { declared });
                    }
                    if let Err(e) = file.write_all(&chunk).await {
                        break Err(AppendError::Io(e));
                    }
                    written += chunk.len() as u64;
                }
            }
        };
        file.flush().await?;
        match outcome {
            Ok(()) => {
                if written == declared {
                    // The pipeline reads it next; make the complete file durable first.
                    file.sync_all().await?;
                }
                Ok(written)
            }
            Err(AppendError::TooLong { declared }) => {
                file.set_len(offset).await?;
                Err(AppendError::TooLong { declared })
            }
            // A body cut short keeps what arrived: the client resumes from the new length.
            Err(e) => Err(e),
        }
    }

    /// Removes the partial file and scratch directory of an upload (missing ones are fine).
    pub async fn discard(&self, id: MediaId) {
        let _ = tokio::fs::remove_file(self.path(id)).await;
        let _ = tokio::fs::remove_dir_all(self.scratch(id)).await;
    }

    /// Ids of uploads that have files here (for sweeping leftovers of uploads the store no longer knows).
    pub async fn leftovers(&self) -> Vec<MediaId> {
        let mut ids = Vec::new();
        let Ok(mut entries) = tokio::fs::read_dir(&self.dir).await else { return ids };
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let stem = name.split('.').next().unwrap_or_default();
            if let Ok(id) = stem.parse::<MediaId>()
                && !ids.contains(&id)
            {
                ids.push(id);
            }
        }
        ids
    }
}
