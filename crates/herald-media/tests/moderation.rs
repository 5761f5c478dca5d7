//! The moderation webhook against a real HTTP server on 127.0.0.1: what it sends (the exact bytes and
//! headers) and how it reads every kind of answer.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use herald_media::moderation::{ModerationError, ModerationItem, ModerationVerdict, Moderator, WebhookModerator};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const HASH: &str = "5f3c0e3b1c8a9d2e4f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a";

/// One request as the server saw it.
#[derive(Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// A moderation service: each path answers one way (an unknown path, 404).
async fn spawn_moderator() -> (SocketAddr, Log) {
    async fn answer(State(log): State<Log>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let path = uri.path().to_owned();
        let known = ["/approve", "/reject", "/reject-silently", "/error", "/accepted", "/garbage", "/huge", "/slow"];
        if !known.contains(&path.as_str()) {
            return StatusCode::NOT_FOUND.into_response();
        }
        log.lock().expect("log lock").push(Received { path: path.clone(), headers, body });
        match path.as_str() {
            "/approve" => r#"{"approved": true}"#.into_response(),
            "/reject" => r#"{"approved": false, "reason": "nudity"}"#.into_response(),
            "/reject-silently" => r#"{"approved": false}"#.into_response(),
            "/error" => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
            "/accepted" => (StatusCode::ACCEPTED, r#"{"approved": true}"#).into_response(),
            "/garbage" => "<html>definitely not a verdict</html>".into_response(),
            "/huge" => format!(r#"{{"approved": true, "reason": "{}"}}"#, "x".repeat(1 << 20)).into_response(),
            _ => {
                tokio::time::sleep(Duration::from_secs(10)).await;
                r#"{"approved": true}"#.into_response()
            }
        }
    }
    let log: Log = Arc::default();
    let app = Router::new().fallback(post(answer)).with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (addr, log)
}

/// A file larger than one read chunk, so the body really is streamed in pieces.
fn media_file(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let bytes: Vec<u8> = (0..700_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let path = dir.join("upload.jpg");
    std::fs::write(&path, &bytes).expect("write the media file");
    (path, bytes)
}

fn item(path: &Path, size: u64) -> ModerationItem<'_> {
    ModerationItem {
        media_id: "01J9ZK3M5X-media".to_owned(),
        content_type: "image/jpeg",
        content_hash: HASH,
        size,
        path,
    }
}

fn header<'a>(r: &'a Received, name: &str) -> Option<&'a str> {
    r.headers.get(name).map(|v| v.to_str().expect("ascii header"))
}

fn last(log: &Log) -> Received {
    log.lock().expect("log lock").last().cloned().expect("the server got a request")
}

#[tokio::test]
async fn approves_and_sends_the_exact_bytes_and_signed_headers() {
    let (addr, log) = spawn_moderator().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, bytes) = media_file(dir.path());
    let secret = "webhook-secret";
    let moderator =
        WebhookModerator::new(format!("http://{addr}/approve"), Duration::from_secs(10), Some(secret.to_owned()));

    let verdict = moderator.moderate(&item(&path, bytes.len() as u64)).await.expect("verdict");
    assert_eq!(verdict, ModerationVerdict::Approved);

    let got = last(&log);
    assert_eq!(got.path, "/approve");
    assert_eq!(got.body, bytes.as_slice(), "the exact file bytes");
    assert_eq!(header(&got, "content-type"), Some("image/jpeg"));
    assert_eq!(header(&got, "content-length"), Some(bytes.len().to_string().as_str()));
    assert_eq!(header(&got, "x-herald-media-id"), Some("01J9ZK3M5X-media"));
    assert_eq!(header(&got, "x-herald-content-hash"), Some(HASH));

    // The receiver's side of the signature check.
    let signature = header(&got, "x-herald-signature").expect("signed");
    let hex = signature.strip_prefix("sha256=").expect("sha256= prefix");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(HASH.as_bytes());
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, expected);
}

#[tokio::test]
async fn rejects_with_the_reason_and_sends_no_signature_without_a_secret() {
    let (addr, log) = spawn_moderator().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, bytes) = media_file(dir.path());
    let moderator = WebhookModerator::new(format!("http://{addr}/reject"), Duration::from_secs(10), None);
    let verdict = moderator.moderate(&item(&path, bytes.len() as u64)).await.expect("verdict");
    assert_eq!(verdict, ModerationVerdict::Rejected("nudity".to_owned()));
    let got = last(&log);
    assert_eq!(got.body, bytes.as_slice());
    assert_eq!(header(&got, "x-herald-signature"), None);

    // A rejection without a reason still reads as a rejection, with a stock reason.
    let moderator = WebhookModerator::new(format!("http://{addr}/reject-silently"), Duration::from_secs(10), None);
    let verdict = moderator.moderate(&item(&path, bytes.len() as u64)).await.expect("verdict");
    assert!(matches!(verdict, ModerationVerdict::Rejected(reason) if !reason.is_empty()));
}

#[tokio::test]
async fn bad_answers_are_errors_not_verdicts() {
    let (addr, _log) = spawn_moderator().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, bytes) = media_file(dir.path());
    let it = item(&path, bytes.len() as u64);
    let at = |p: &str| WebhookModerator::new(format!("http://{addr}{p}"), Duration::from_secs(10), None);

    assert!(matches!(at("/error").moderate(&it).await, Err(ModerationError::Status(500))));
    assert!(matches!(at("/accepted").moderate(&it).await, Err(ModerationError::Status(202))));
    // An unknown path answers 404 without reading the body, and the server may close the connection while
    // the file is still being sent: depending on that race the client sees the 404 or a reset. Either way it
    // is an error, never a verdict.
    assert!(matches!(
        at("/nowhere").moderate(&it).await,
        Err(ModerationError::Status(404) | ModerationError::Transport(_))
    ));
    assert!(matches!(at("/garbage").moderate(&it).await, Err(ModerationError::BadResponse(_))));
    assert!(matches!(at("/huge").moderate(&it).await, Err(ModerationError::BadResponse(_))));

    // Nobody listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let refused = WebhookModerator::new(format!("http://127.0.0.1:{port}/"), Duration::from_secs(10), None);
    assert!(matches!(refused.moderate(&it).await, Err(ModerationError::Transport(_))));

    // The file vanished before moderation.
    let gone_path = dir.path().join("gone.jpg");
    let gone = item(&gone_path, 1);
    assert!(matches!(at("/approve").moderate(&gone).await, Err(ModerationError::Io(_))));
}

#[tokio::test]
async fn a_slow_moderator_times_out() {
    let (addr, log) = spawn_moderator().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, bytes) = media_file(dir.path());
    let moderator = WebhookModerator::new(format!("http://{addr}/slow"), Duration::from_millis(300), None);
    let started = Instant::now();
    let outcome = moderator.moderate(&item(&path, bytes.len() as u64)).await;
    assert!(matches!(outcome, Err(ModerationError::Timeout)), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // It did get the whole file before the moderator stalled.
    assert_eq!(last(&log).body, bytes.as_slice());
}
