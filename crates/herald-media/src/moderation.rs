//! The moderation seam (DESIGN.md, "moderator"): an operator's own service decides whether an upload may be
//! published, after the scanner found nothing and before any URL to it exists.
//!
//! Herald ships one backend, [`WebhookModerator`]: the operator points it at any HTTP service (a CSAM hash
//! matcher, an NSFW classifier, a queue for human review that answers later …) and Herald knows nothing of
//! how it decides. The seam only returns a verdict or an error; whether an error blocks the upload (fail
//! closed) or lets it through (fail open) is the pipeline's policy, not the moderator's.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde::Deserialize;
use sha2::Sha256;
use tokio_util::io::ReaderStream;

/// Header carrying the upload's media id, so the moderator can log and correlate its decision.
pub const MEDIA_ID_HEADER: &str = "X-Herald-Media-Id";
/// Header carrying the BLAKE3 hex hash of the body: lets the moderator cache verdicts per content, and
/// binds the signature to the exact bytes (the receiver can hash the body and compare).
pub const CONTENT_HASH_HEADER: &str = "X-Herald-Content-Hash";
/// Header carrying `sha256=<hex HMAC-SHA256 of the content-hash header's value>` under the shared secret,
/// so the moderator can refuse requests that do not come from Herald.
pub const SIGNATURE_HEADER: &str = "X-Herald-Signature";

/// Largest verdict body read. A verdict is a few dozen bytes; a broken or hostile endpoint must not make
/// Herald buffer an unbounded answer.
const MAX_VERDICT_BYTES: usize = 64 * 1024;

/// Size of the reads from the file being sent.
const READ_CHUNK: usize = 256 * 1024;

/// One upload to judge: the file on local disk (already sniffed, scanned and stripped) and what is known of it.
#[derive(Debug, Clone)]
pub struct ModerationItem<'a> {
    /// The media id the upload will be published under.
    pub media_id: String,
    /// The sniffed content type (never the client's claim).
    pub content_type: &'a str,
    /// BLAKE3 hash of the file, lower-case hex.
    pub content_hash: &'a str,
    /// The file's size in bytes.
    pub size: u64,
    /// The file to judge.
    pub path: &'a Path,
}

/// What the moderator decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModerationVerdict {
    /// The upload may be published.
    Approved,
    /// The upload must not be published, with the moderator's reason (shown to the uploader and logged).
    Rejected(String),
}

/// Why no verdict could be had. None of these is a rejection: the pipeline's policy decides what they mean.
#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    /// No verdict within the configured timeout (connecting, sending the file and reading the answer).
    #[error("moderation timed out")]
    Timeout,
    /// The moderator answered with a status other than 200.
    #[error("moderation endpoint answered HTTP {0}")]
    Status(u16),
    /// The moderator answered 200 with something that is not a verdict.
    #[error("moderation endpoint gave a bad answer: {0}")]
    BadResponse(String),
    /// The moderator could not be reached, or the connection failed mid-exchange.
    #[error("moderation request failed: {0}")]
    Transport(String),
    /// The file to send could not be read.
    #[error("moderation i/o: {0}")]
    Io(String),
}

impl From<reqwest::Error> for ModerationError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            return Self::Timeout;
        }
        // The chain holds the useful part ("connection refused", "body write aborted" …).
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            let _ = write!(message, ": {cause}");
            source = cause.source();
        }
        Self::Transport(message)
    }
}

/// The moderation seam.
#[async_trait]
pub trait Moderator: Send + Sync + 'static {
    /// Judges one upload.
    async fn moderate(&self, item: &ModerationItem<'_>) -> Result<ModerationVerdict, ModerationError>;
}

/// The JSON a webhook answers with.
#[derive(Deserialize)]
struct WebhookVerdict {
    approved: bool,
    #[serde(default)]
    reason: Option<String>,
}

/// The moderation webhook: `POST`s the file to the operator's URL and reads a JSON verdict.
///
/// The request's body is the file itself, streamed from disk (never held in memory), with
/// `Content-Type: <sniffed type>`, `Content-Length`, [`MEDIA_ID_HEADER`], [`CONTENT_HASH_HEADER`] and, when
/// a secret is configured, [`SIGNATURE_HEADER`]. The answer must be `200` with
/// `{"approved": bool, "reason": "..."}` (`reason` optional). Sending the bytes rather than a URL means the
/// moderator needs no access to Herald's storage and judges exactly what will be published.
///
/// HTTPS endpoints work: `object_store`'s S3 client enables reqwest's rustls in this crate's build.
#[derive(Debug, Clone)]
pub struct WebhookModerator {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
    secret: Option<String>,
}

impl WebhookModerator {
    /// A webhook at `url`. `timeout` bounds the whole exchange, including sending the file, so it must
    /// allow for the largest upload over the link to the moderator. `secret` signs each request.
    pub fn new(url: impl Into<String>, timeout: Duration, secret: Option<String>) -> Self {
        Self {
            // Redirects are not followed: a redirected POST would be re-sent as a GET without the file.
            client: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap_or_default(),
            url: url.into(),
            timeout,
            secret,
        }
    }

    /// `sha256=<hex>` of HMAC-SHA256 over the content hash.
    fn signature(secret: &str, content_hash: &str) -> String {
        // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(content_hash.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(7 + 2 * digest.len());
        out.push_str("sha256=");
        for b in digest {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    async fn exchange(&self, item: &ModerationItem<'_>) -> Result<ModerationVerdict, ModerationError> {
        let file = tokio::fs::File::open(item.path)
            .await
            .map_err(|e| ModerationError::Io(format!("{}: {e}", item.path.display())))?;
        // The length of the file as it is, not `item.size`: a mismatch would make the request invalid.
        let len = file.metadata().await.map_err(|e| ModerationError::Io(e.to_string()))?.len();
        let body = reqwest::Body::wrap_stream(ReaderStream::with_capacity(file, READ_CHUNK));

        let mut request = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, item.content_type)
            .header(CONTENT_LENGTH, len)
            .header(MEDIA_ID_HEADER, &item.media_id)
            .header(CONTENT_HASH_HEADER, item.content_hash)
            .body(body);
        if let Some(secret) = &self.secret {
            request = request.header(SIGNATURE_HEADER, Self::signature(secret, item.content_hash));
        }

        let response = request.send().await?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(ModerationError::Status(status.as_u16()));
        }
        let mut answer = BytesMut::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk: Bytes = chunk?;
            if answer.len() + chunk.len() > MAX_VERDICT_BYTES {
                return Err(ModerationError::BadResponse(format!("answer longer than {MAX_VERDICT_BYTES} bytes")));
            }
            answer.extend_from_slice(&chunk);
        }
        let verdict: WebhookVerdict =
            serde_json::from_slice(&answer).map_err(|e| ModerationError::BadResponse(e.to_string()))?;
        Ok(if verdict.approved {
            ModerationVerdict::Approved
        } else {
            ModerationVerdict::Rejected(
                verdict.reason.filter(|r| !r.is_empty()).unwrap_or_else(|| "rejected by moderation".to_owned()),
            )
        })
    }
}

#[async_trait]
impl Moderator for WebhookModerator {
    async fn moderate(&self, item: &ModerationItem<'_>) -> Result<ModerationVerdict, ModerationError> {
        // One deadline over the whole exchange, reading the answer included (reqwest's per-request timeout
        // would too, but this also covers opening the file on a stalled disk).
        let verdict =
            tokio::time::timeout(self.timeout, self.exchange(item)).await.map_err(|_| ModerationError::Timeout)??;
        match &verdict {
            ModerationVerdict::Approved => {
                tracing::debug!(media_id = %item.media_id, "moderation approved");
            }
            ModerationVerdict::Rejected(reason) => {
                tracing::info!(media_id = %item.media_id, %reason, "moderation rejected");
            }
        }
        Ok(verdict)
    }
}
