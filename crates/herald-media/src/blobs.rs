//! The blob storage seam (DESIGN.md, "blob storage"): where originals, thumbnails and renditions live.
//!
//! A single node keeps media on local disk and a cluster on S3-compatible storage. Both go through the
//! `object_store` crate, so there is one implementation, [`ObjectBlobs`], and the backends differ only in
//! how it is constructed ([`ObjectBlobs::local`], [`ObjectBlobs::s3`]). The trait speaks the domain (put a
//! finished file, read a byte range for an HTTP `Range` request, list keys for the orphan sweep, move a blob
//! between tiers); no `object_store` type appears in it, so a backend outside `object_store` could still plug
//! in.
//!
//! Everything streams: an upload is read from disk in small chunks and sent as a multipart upload once it is
//! larger than [`PART_SIZE`], and a read hands back a stream of chunks. A large video never sits in memory
//! whole; an upload holds at most [`PART_SIZE`] × ([`PARTS_IN_FLIGHT`] + 1) bytes.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::Deserialize;
use tokio_util::io::ReaderStream;

/// Size of one part of a multipart upload, and the size above which an upload becomes multipart.
///
/// 5 MiB is S3's minimum for every part but the last: the smallest parts keep an upload's memory low, and a
/// body up to this size goes up as one `PUT`, which is one request instead of three.
pub const PART_SIZE: usize = 5 * 1024 * 1024;

/// Parts of one multipart upload sent concurrently. Two keep the link busy while a part is being read
/// from disk without letting one upload's buffers grow.
pub const PARTS_IN_FLIGHT: usize = 2;

/// Size of the reads from a local file being uploaded.
const READ_CHUNK: usize = 256 * 1024;

/// Errors of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No blob has this key. Reads of a missing blob answer this, so that HTTP can answer 404.
    #[error("blob not found")]
    NotFound,
    /// The key (or list prefix) breaks [`BlobKey`]'s rules.
    #[error("invalid blob key: {0}")]
    InvalidKey(String),
    /// The requested byte range starts at or beyond the end of the blob (or is empty); HTTP answers 416 with
    /// `Content-Range: bytes */{size}`.
    #[error("range not satisfiable (blob is {size} bytes)")]
    RangeNotSatisfiable {
        /// The blob's whole size.
        size: u64,
    },
    /// The storage backend failed (S3 unreachable or refusing, a disk error inside `object_store` …).
    #[error("blob backend: {0}")]
    Backend(String),
    /// Reading the local file being uploaded failed.
    #[error("blob i/o: {0}")]
    Io(String),
}

impl From<object_store::Error> for BlobError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => Self::NotFound,
            other => Self::Backend(other.to_string()),
        }
    }
}

impl From<std::io::Error> for BlobError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e.to_string())
    }
}

/// The name of a blob in the store, validated so that it can never escape the store's root.
///
/// Keys are built by Herald, never taken from a client, but they still become file paths on the local
/// backend, so the rules are strict: only `[a-z0-9._/-]`, at most [`BlobKey::MAX_LEN`] bytes, no leading or
/// trailing `/`, no empty segment and no `..` anywhere (which also rules out `.`-tricks like `a/../b`), and
/// no `.` segment. Lower case only, because S3 keys are case-sensitive and some local file systems are not.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobKey(String);

impl BlobKey {
    /// Longest key accepted: well under S3's 1024 bytes and a file system's 4096-byte path limit.
    pub const MAX_LEN: usize = 512;

    /// The key of one variant (`original`, `thumb.webp`, `720p.mp4` …) of the content with this BLAKE3 hash:
    /// `"{first 2 hex}/{hash}/{variant}"`. The two-character fan-out keeps directories small on local disk
    /// and spreads S3's per-prefix request limits.
    pub fn new(hash_hex: &str, variant: &str) -> Result<Self, BlobError> {
        let hash_ok = (2..=128).contains(&hash_hex.len())
            && hash_hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hash_ok {
            return Err(BlobError::InvalidKey(format!(
                "hash must be 2 to 128 lower-case hex digits, got {hash_hex:?}"
            )));
        }
        if variant.contains('/') {
            return Err(BlobError::InvalidKey(format!("variant must be one path segment, got {variant:?}")));
        }
        Self::parse(format!("{}/{hash_hex}/{variant}", &hash_hex[..2]))
    }

    /// Validates a whole key, such as one read back from [`BlobStore::list`] or stored in a database row.
    pub fn parse(key: impl Into<String>) -> Result<Self, BlobError> {
        let key = key.into();
        validate(&key)?;
        Ok(Self(key))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as an `object_store` path. It cannot fail for a validated key; the check stays so that a
    /// change to `object_store`'s rules is an error, not a panic.
    fn to_path(&self) -> Result<ObjectPath, BlobError> {
        ObjectPath::parse(&self.0).map_err(|e| BlobError::InvalidKey(e.to_string()))
    }
}

fn validate(key: &str) -> Result<(), BlobError> {
    let invalid = |why: &str| Err(BlobError::InvalidKey(format!("{key:?}: {why}")));
    if key.is_empty() {
        return invalid("empty");
    }
    if key.len() > BlobKey::MAX_LEN {
        return invalid("too long");
    }
    if let Some(c) = key.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '/' | '-')) {
        return invalid(&format!("character {c:?} not allowed"));
    }
    if key.contains("..") {
        return invalid("contains \"..\"");
    }
    if key.starts_with('/') || key.ends_with('/') {
        return invalid("leading or trailing '/'");
    }
    if key.split('/').any(|s| s.is_empty() || s == ".") {
        return invalid("empty or \".\" segment");
    }
    Ok(())
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobKey({:?})", self.0)
    }
}

impl AsRef<str> for BlobKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BlobKey {
    type Error = BlobError;
    fn try_from(key: String) -> Result<Self, BlobError> {
        Self::parse(key)
    }
}

impl std::str::FromStr for BlobKey {
    type Err = BlobError;
    fn from_str(key: &str) -> Result<Self, BlobError> {
        Self::parse(key)
    }
}

/// A blob being read: what HTTP needs for `Content-Length`, `Content-Range` and the body.
pub struct BlobStream {
    /// Size of the whole blob, whatever range was asked for (the `/{size}` of `Content-Range`).
    pub size: u64,
    /// The byte range the body holds: the requested one with its end clamped to `size`, or `0..size`.
    pub range: Range<u64>,
    /// The bytes of `range`, in order.
    pub body: BoxStream<'static, Result<Bytes, BlobError>>,
}

impl fmt::Debug for BlobStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStream").field("size", &self.size).field("range", &self.range).finish_non_exhaustive()
    }
}

impl BlobStream {
    /// Collects the body. For tests and small blobs (thumbnails) only: it holds the whole range in memory.
    pub async fn bytes(self) -> Result<Bytes, BlobError> {
        let chunks: Vec<Bytes> = self.body.try_collect().await?;
        Ok(chunks.concat().into())
    }
}

/// The blob storage seam. Writes are atomic: a reader sees the whole new blob or none of it, never a part
/// (S3 publishes an object on the last request; the local backend writes a staging file and renames it).
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Uploads a finished local file (the scanned, stripped original, a rendition) and returns its size.
    /// The file is read in chunks and never held in memory whole.
    async fn put_file(&self, key: &BlobKey, path: &Path) -> Result<u64, BlobError>;

    /// Uploads a blob already in memory (a thumbnail).
    async fn put_bytes(&self, key: &BlobKey, bytes: Bytes) -> Result<(), BlobError>;

    /// Uploads a stream of chunks and returns the number of bytes written. This is what moves a blob
    /// between stores without a local copy ([`BlobStore::copy_to`]). If the stream yields an error, nothing
    /// is published and the error is returned.
    async fn put_stream(
        &self,
        key: &BlobKey,
        body: BoxStream<'static, Result<Bytes, BlobError>>,
    ) -> Result<u64, BlobError>;

    /// The blob's size, or `None` when there is no such blob.
    async fn size(&self, key: &BlobKey) -> Result<Option<u64>, BlobError>;

    /// Reads the blob, or the byte `range` of it. A range's end past the blob's end is clamped, so
    /// `start..u64::MAX` reads to the end; a suffix request (`bytes=-n`) is `size - n..size`, with the size
    /// from [`BlobStore::size`]. A missing blob is [`BlobError::NotFound`]; an empty range, or one that
    /// starts at or past the end, is [`BlobError::RangeNotSatisfiable`].
    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> Result<BlobStream, BlobError>;

    /// Deletes the blob. Deleting a missing blob succeeds, so a retried or concurrent delete (the orphan
    /// sweep racing a user's delete) is not an error.
    async fn delete(&self, key: &BlobKey) -> Result<(), BlobError>;

    /// Every key under `prefix`, for the orphan sweep. The prefix matches whole segments: `"ab"` lists
    /// `ab/…` but not `abc/…`; `""` lists everything. Objects whose names are not valid keys (put there by
    /// something other than Herald) are skipped with a warning rather than failing the sweep.
    async fn list(&self, prefix: &str) -> Result<Vec<BlobKey>, BlobError>;

    /// Copies the blob into `other` under the same key, streaming, and returns its size: how media moves
    /// between tiers (local disk to S3 when a node joins a cluster, hot to cold storage). The source is not
    /// deleted; the caller deletes it once the copy is recorded.
    async fn copy_to(&self, key: &BlobKey, other: &dyn BlobStore) -> Result<u64, BlobError> {
        let source = self.get(key, None).await?;
        let expected = source.size;
        let written = other.put_stream(key, source.body).await?;
        if written != expected {
            // The source changed under us (or the backend lied). A wrong blob must not stay behind.
            other.delete(key).await?;
            return Err(BlobError::Backend(format!("copy of {key} wrote {written} bytes, the source has {expected}")));
        }
        Ok(written)
    }
}

/// Where a cluster keeps its media: an S3-compatible bucket (AWS S3, MinIO, Garage, Ceph RGW, R2 …).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The service's URL, e.g. `http://minio:9000`. `None` means AWS S3 itself, addressed by `region`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The bucket; it must exist (Herald does not create buckets: that is an operator's decision about
    /// policies and lifecycle rules).
    pub bucket: String,
    /// The region, for request signing. Most non-AWS services accept any value, e.g. `us-east-1`.
    pub region: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key. Never printed by `Debug`.
    pub secret_key: String,
    /// Allow a plain `http://` endpoint. Only for a service on a trusted network or in tests: blobs and
    /// request signatures would otherwise cross the network in clear.
    #[serde(default)]
    pub allow_http: bool,
    /// Address the bucket in the path (`endpoint/bucket/key`) rather than as a subdomain
    /// (`bucket.endpoint/key`). Self-hosted services usually need this; AWS prefers subdomains.
    #[serde(default)]
    pub path_style: bool,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("allow_http", &self.allow_http)
            .field("path_style", &self.path_style)
            .finish()
    }
}

/// [`BlobStore`] over any `object_store` backend: the one implementation for local disk and S3.
#[derive(Clone)]
pub struct ObjectBlobs {
    store: Arc<dyn ObjectStore>,
}

impl fmt::Debug for ObjectBlobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectBlobs({})", self.store)
    }
}

impl ObjectBlobs {
    /// Blobs as files under `dir` (created if missing): the single node's store.
    ///
    /// Crash-safe: `object_store`'s local store writes every object (and every multipart upload) to a
    /// staging file `<name>#<n>` next to it and renames it into place, so a crash leaves the old blob or
    /// none, never a torn one; staging files are invisible to reads and [`BlobStore::list`]. `fsync` is on,
    /// so a blob is on disk before the upload is acknowledged, as S3 would guarantee. Deletes remove the
    /// directories they empty, so the `{2 hex}/{hash}/` fan-out does not pile up empty directories.
    pub fn local(dir: &Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(dir)?;
        let store = LocalFileSystem::new_with_prefix(dir)?.with_fsync(true).with_automatic_cleanup(true);
        Ok(Self::new(Arc::new(store)))
    }

    /// Blobs in an S3-compatible bucket: the cluster's store.
    ///
    /// The overall request timeout is off, because a `get` body is consumed at the pace of the HTTP client
    /// downloading it and a long video to a slow phone must not be cut after 30 s; a read that stalls for
    /// 30 s and a connect that takes over 5 s still fail.
    pub fn s3(cfg: &S3Config) -> Result<Self, BlobError> {
        let client = ClientOptions::new()
            .with_allow_http(cfg.allow_http)
            .with_timeout_disabled()
            .with_connect_timeout(Duration::from_secs(5))
            .with_read_timeout(Duration::from_secs(30));
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_access_key_id(&cfg.access_key)
            .with_secret_access_key(&cfg.secret_key)
            .with_allow_http(cfg.allow_http)
            .with_virtual_hosted_style_request(!cfg.path_style)
            .with_client_options(client);
        if let Some(endpoint) = &cfg.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        Ok(Self::new(Arc::new(builder.build()?)))
    }

    /// Over any other `object_store` backend (GCS, Azure, the in-memory store).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    /// Tells a range that cannot be served apart from other failures, with the size HTTP's 416 needs.
    /// `start` is the range's start, or `None` for an empty range (never satisfiable).
    async fn unsatisfiable(&self, path: &ObjectPath, start: Option<u64>, otherwise: BlobError) -> BlobError {
        match self.store.head(path).await {
            Ok(meta) if start.is_none_or(|start| start >= meta.size) => {
                BlobError::RangeNotSatisfiable { size: meta.size }
            }
            Ok(_) => otherwise,
            Err(e) => e.into(),
        }
    }
}

#[async_trait]
impl BlobStore for ObjectBlobs {
    async fn put_file(&self, key: &BlobKey, path: &Path) -> Result<u64, BlobError> {
        let file = tokio::fs::File::open(path).await?;
        let body = ReaderStream::with_capacity(file, READ_CHUNK).map_err(BlobError::from).boxed();
        self.put_stream(key, body).await
    }

    async fn put_bytes(&self, key: &BlobKey, bytes: Bytes) -> Result<(), BlobError> {
        self.store.put(&key.to_path()?, PutPayload::from(bytes)).await?;
        Ok(())
    }

    async fn put_stream(
        &self,
        key: &BlobKey,
        mut body: BoxStream<'static, Result<Bytes, BlobError>>,
    ) -> Result<u64, BlobError> {
        let path = key.to_path()?;
        // Read up to one part first: a body that ends by then goes up in a single PUT.
        let mut head = Vec::new();
        let mut buffered = 0usize;
        while buffered <= PART_SIZE {
            match body.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    buffered += chunk.len();
                    head.push(chunk);
                }
                None => {
                    self.store.put(&path, head.into_iter().collect()).await?;
                    return Ok(buffered as u64);
                }
            }
        }

        let upload = self.store.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut total = buffered as u64;
        let sent: Result<(), BlobError> = async {
            for chunk in head {
                writer.put(chunk);
            }
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                // Backpressure: wait for a part to finish before buffering more than one more.
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                total += chunk.len() as u64;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        match sent {
            Ok(()) => {
                writer.finish().await?;
                Ok(total)
            }
            Err(e) => {
                // Abort so that S3 does not keep (and bill) the parts already sent.
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(%key, error = %abort, "aborting a failed multipart upload failed");
                }
                Err(e)
            }
        }
    }

    async fn size(&self, key: &BlobKey) -> Result<Option<u64>, BlobError> {
        match self.store.head(&key.to_path()?).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, key: &BlobKey, range: Option<Range<u64>>) -> Result<BlobStream, BlobError> {
        let path = key.to_path()?;
        if let Some(r) = &range
            && r.start >= r.end
        {
            // An empty range is never satisfiable; the `head` only finds the size for the 416.
            let fallback = BlobError::Backend(format!("empty range {r:?}"));
            return Err(self.unsatisfiable(&path, None, fallback).await);
        }
        let start = range.as_ref().map(|r| r.start);
        // "To the end" goes out as an open range (`bytes=n-`): some servers (s3s) refuse an end near
        // u64::MAX rather than clamping it.
        let options = GetOptions::new().with_range(range.map(|r| match r.end {
            u64::MAX => GetRange::Offset(r.start),
            _ => GetRange::Bounded(r),
        }));
        match self.store.get_opts(&path, options).await {
            Ok(result) => Ok(BlobStream {
                size: result.meta.size,
                range: result.range.clone(),
                body: result.into_stream().map_err(BlobError::from).boxed(),
            }),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::NotFound),
            // Backends report an unsatisfiable range in their own words (a local error, an S3 416); one
            // `head` tells it apart from a real failure.
            Err(e) => match start {
                Some(start) => Err(self.unsatisfiable(&path, Some(start), e.into()).await),
                None => Err(e.into()),
            },
        }
    }

    async fn delete(&self, key: &BlobKey) -> Result<(), BlobError> {
        match self.store.delete(&key.to_path()?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<BlobKey>, BlobError> {
        let prefix = prefix.trim_end_matches('/');
        let prefix = if prefix.is_empty() { None } else { Some(BlobKey::parse(prefix)?.to_path()?) };
        let mut listing = self.store.list(prefix.as_ref());
        let mut keys = Vec::new();
        while let Some(meta) = listing.next().await {
            let location = meta?.location;
            match BlobKey::parse(location.as_ref()) {
                Ok(key) => keys.push(key),
                Err(e) => tracing::warn!(%location, error = %e, "skipping a foreign object in the blob store"),
            }
        }
        Ok(keys)
    }
}
