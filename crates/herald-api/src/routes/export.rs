//! `GET /api/v1/me/export`: everything Herald keeps of the caller, as one ZIP archive, written while it is sent.
//!
//! The archive is made page by page in a task of its own and handed to the response through a small channel,
//! so memory stays at a page of messages (or a chunk of a file) whatever the account holds, and a client that
//! stops reading stops the task. What is in it (`README.txt` says the same to its reader):
//! - `account.json`: the profile and the logged-in devices; `blocks.json`: whom the user blocks;
//! - `conversations.json`: each conversation the user is in, with its members and the user's read positions;
//! - `conversations/<id>.jsonl`: every message of it the user can read, oldest first, one JSON object a line;
//! - `media/<id>/<filename>`: the originals of the files the user sent, and `media.json` listing them.

use crate::AppState;
use crate::error::ApiResult;
use crate::extract::Auth;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use herald_core::auth::Principal;
use herald_core::{CoreError, now_millis};
use herald_proto::{ConversationId, Direction, HistoryQuery, Me, MediaId, Millis};
use serde::Serialize;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// Archive bytes gathered before they are handed to the response.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks waiting for the client: how far the writer may run ahead of it.
const CHUNKS_IN_FLIGHT: usize = 4;
/// Conversations listed per page.
const CONVERSATION_PAGE: u32 = 100;

const README: &str = "\
Your data on this Herald server, as it was when you asked for it.

account.json               your profile and your logged-in devices
blocks.json                the users you block
conversations.json         the conversations you are in: their members, and how far you have read
conversations/<id>.jsonl   every message of a conversation you can read, oldest first, one JSON object a line
media.json                 the files you sent, and where each is in this archive
media/<id>/<name>          the files themselves, as you uploaded them

Times are milliseconds since 1970-01-01 UTC. The formats are those of Herald's API (docs/api.md).
";

/// `GET /api/v1/me/export`: 200 with `application/zip`, streamed.
#[utoipa::path(
    get,
    path = "/api/v1/me/export",
    tag = "accounts",
    responses((status = 200, description = "a ZIP archive of everything the server keeps of the caller", content_type = "application/zip", body = Vec<u8>))
)]
pub async fn export(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Response> {
    // What can fail before the first byte is answered as an error; later, a failure can only cut the stream
    // (the client sees a transfer that ends early, never a short archive that looks whole: a ZIP's directory
    // is at its end).
    // An export reads everything the user has: it takes from the same per-user budget as a send.
    s.services.messaging.rate_limiter().check(p.user)?;
    let me = s.services.accounts.me(p).await?;
    let filename = format!("herald-export-{}-{}.zip", me.user.username, now_millis() / 1000);
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
    tokio::spawn(async move {
        let mut archive = Archive::new(tx.clone());
        let written = match write_archive(&s, p, me, &mut archive).await {
            Ok(()) => archive.finish().await,
            Err(stop) => Err(stop),
        };
        match written {
            Ok(()) => {}
            Err(Stop::ClientGone) => tracing::debug!(user = %p.user, "a data export was abandoned by its client"),
            Err(Stop::Failed(e)) => {
                tracing::warn!(user = %p.user, error = %e, "a data export failed; its stream is cut");
                let _ = tx.send(Err(std::io::Error::other(e))).await;
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) });
    let mut response = Response::new(Body::from_stream(body.boxed()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let disposition = format!("attachment; filename=\"{}\"", filename.replace(|c: char| !c.is_ascii_graphic(), "_"));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Why the archive stopped before its end.
enum Stop {
    /// The response was dropped: nobody reads any more.
    ClientGone,
    Failed(String),
}

impl From<CoreError> for Stop {
    fn from(e: CoreError) -> Self {
        Stop::Failed(e.to_string())
    }
}

impl From<zip::result::ZipError> for Stop {
    fn from(e: zip::result::ZipError) -> Self {
        Stop::Failed(format!("writing the archive: {e}"))
    }
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Self {
        Stop::Failed(format!("writing the archive: {e}"))
    }
}

/// One file of the archive that holds a user's upload.
#[derive(Serialize)]
struct ExportedMedia {
    media_id: MediaId,
    conversation_id: ConversationId,
    seq: u64,
    sent_at: Millis,
    content_type: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    filename: Option<String>,
    /// Where the bytes are in the archive; absent when the file is gone from the server (taken down or removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
}

/// One conversation in `conversations.json`.
#[derive(Serialize)]
struct ExportedConversation {
    #[serde(flatten)]
    details: herald_proto::ConversationDetails,
    cursor: herald_proto::CursorState,
}

async fn write_archive(s: &AppState, p: Principal, me: Me, archive: &mut Archive) -> Result<(), Stop> {
    archive.file("README.txt", README.as_bytes()).await?;
    archive.json("account.json", &me).await?;
    archive.json("blocks.json", &s.services.blocks.list(p).await?).await?;

    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = s.services.conversations.list(p, Some(CONVERSATION_PAGE), cursor.as_deref()).await?;
        ids.extend(page.conversations.iter().map(|c| c.conversation.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut conversations = Vec::with_capacity(ids.len());
    for &id in &ids {
        let details = s.services.conversations.details(p, id).await?;
        let cursor = s.services.messaging.cursor_state(p, id).await?;
        conversations.push(ExportedConversation { details, cursor });
    }
    archive.json("conversations.json", &conversations).await?;
    drop(conversations);

    let mut media = Vec::new();
    for id in ids {
        archive.start(&format!("conversations/{id}.jsonl"), CompressionMethod::Deflated)?;
        let mut from = Some(1);
        while let Some(seq) = from {
            let query = HistoryQuery { from: Some(seq), dir: Direction::Forward, limit: None };
            let page = s.services.messaging.history(p, id, query).await?;
            for message in &page.messages {
                serde_json::to_writer(&mut archive.zip, message).map_err(|e| Stop::Failed(e.to_string()))?;
                archive.zip.write_all(b"\n")?;
                if message.sender == p.user {
                    media.extend(message.attachments.iter().map(|a| ExportedMedia {
                        media_id: a.media_id,
                        conversation_id: id,
                        seq: message.seq,
                        sent_at: message.sent_at,
                        content_type: a.content_type.clone(),
                        size: a.size,
                        filename: a.filename.clone(),
                        path: None,
                    }));
                }
            }
            archive.send().await?;
            from = page.next;
        }
    }

    for item in &mut media {
        let Some(blob) = s.media.own_original(p, item.media_id).await? else { continue };
        let path = format!("media/{}/{}", item.media_id, safe_name(item.filename.as_deref()));
        // Already compressed, most of them (images, video): stored as they are.
        archive.start(&path, CompressionMethod::Stored)?;
        let mut body = blob.body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Stop::Failed(format!("reading {}: {e}", item.media_id)))?;
            archive.zip.write_all(&chunk)?;
            archive.send().await?;
        }
        item.path = Some(path);
    }
    archive.json("media.json", &media).await
}

/// A file name from a client, fit for a path in the archive: no directories, nothing hidden, never empty.
fn safe_name(name: Option<&str>) -> String {
    let name = name.unwrap_or_default();
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base.chars().filter(|c| !c.is_control()).take(200).collect();
    let cleaned = cleaned.trim_start_matches('.').trim();
    if cleaned.is_empty() { "file".to_owned() } else { cleaned.to_owned() }
}

/// Where the ZIP writer puts its bytes until they are sent: the writer owns its output, so it is shared.
#[derive(Clone, Default)]
struct Spool(Arc<Mutex<Vec<u8>>>);

impl Spool {
    fn take(&self, at_least: usize) -> Option<Vec<u8>> {
        let mut buffer = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (buffer.len() >= at_least.max(1)).then(|| std::mem::take(&mut *buffer))
    }
}

impl Write for Spool {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The archive being written and sent.
struct Archive {
    zip: ZipWriter<zip::write::StreamWriter<Spool>>,
    spool: Spool,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
}

impl Archive {
    fn new(tx: mpsc::Sender<std::io::Result<Bytes>>) -> Self {
        let spool = Spool::default();
        Archive { zip: ZipWriter::new_stream(spool.clone()), spool, tx }
    }

    fn start(&mut self, name: &str, method: CompressionMethod) -> Result<(), Stop> {
        let options = SimpleFileOptions::default().compression_method(method).large_file(true);
        Ok(self.zip.start_file(name, options)?)
    }

    async fn file(&mut self, name: &str, bytes: &[u8]) -> Result<(), Stop> {
        self.start(name, CompressionMethod::Deflated)?;
        self.zip.write_all(bytes)?;
        self.send().await
    }

    async fn json<T: Serialize>(&mut self, name: &str, value: &T) -> Result<(), Stop> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| Stop::Failed(e.to_string()))?;
        self.file(name, &bytes).await
    }

    /// Hands what the writer has produced to the response, once there is a chunk of it.
    async fn send(&mut self) -> Result<(), Stop> {
        send(&self.spool, &self.tx, CHUNK_BYTES).await
    }

    /// Writes the archive's directory and sends the rest.
    async fn finish(self) -> Result<(), Stop> {
        let Archive { zip, spool, tx } = self;
        zip.finish()?;
        send(&spool, &tx, 1).await
    }
}

async fn send(spool: &Spool, tx: &mpsc::Sender<std::io::Result<Bytes>>, at_least: usize) -> Result<(), Stop> {
    match spool.take(at_least) {
        Some(bytes) => tx.send(Ok(Bytes::from(bytes))).await.map_err(|_| Stop::ClientGone),
        None => Ok(()),
    }
}
