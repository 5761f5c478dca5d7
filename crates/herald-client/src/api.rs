//! Thin, typed helpers for the REST API (`/api/v1`, see `docs/api.md`).
//!
//! Each method is one request. Methods that need authentication take the access token; [`crate::Client`]
//! offers the same calls with its current token, refreshing it once when the server answers 401.

use crate::error::ClientError;
use herald_proto::{
    AdminUser, BlockedUser, ConversationDetails, ConversationId, ConversationPage, CreateConversation, CreateReport,
    CreateUpload, Credentials, CursorState, DeletedUser, Direction, ErrorBody, HistoryPage, HistoryQuery, Me, MediaId,
    MediaInfo, RefreshRequest, Report, ReportId, ReportListQuery, ReportPage, ReportState, ResolveReport, SearchPage,
    SearchQuery, SendAck, SendMessage, Session, SuspendUser, ThreadState, UpdateCursor, UpdateThreadRead, UserId,
    UserProfile,
};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use std::fmt::Write as _;
use std::time::Duration;

/// How long one REST request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle keep-alive connection stays in the pool. The server closes one after its request-head
/// deadline (`gateway.handshake_timeout_ms`, 2 s by default); a request sent on a connection just as the server
/// closes it fails with "connection closed before message completed", and cannot safely be retried when it
/// is not idempotent. Dropping idle connections well before the server does keeps requests off that race.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

/// A REST client for one Herald server. Cheap to clone (the connection pool is shared).
#[derive(Clone, Debug)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// A client for the server at `base_url` (`http://host:port`, without `/api/v1`).
    ///
    /// Only plain `http://` is supported by this build: TLS is not compiled in. Put the server behind a
    /// local TLS-terminating proxy, or use `http://` on a trusted network.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()
            .map_err(ClientError::Http)?;
        Self::with_http_client(base_url, http)
    }

    /// Like [`Api::new`], with a `reqwest::Client` of your own (pool sizes, timeouts, proxies).
    pub fn with_http_client(base_url: &str, http: reqwest::Client) -> Result<Self, ClientError> {
        let base = base_url.trim().trim_end_matches('/');
        let rest = base.strip_prefix("http://").or_else(|| base.strip_prefix("https://"));
        match rest {
            Some(host) if !host.is_empty() && !host.starts_with('/') && !host.contains(char::is_whitespace) => {
                Ok(Self { http, base: base.to_owned() })
            }
            _ => Err(ClientError::InvalidUrl(base_url.to_owned())),
        }
    }

    /// The server's base URL, as given (without a trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The WebSocket URL for an access token: `ws://host:port/ws?v=1&token=…&user=…`. The `user` hint lets
    /// a proxy in front of several nodes keep each user on one node (docs/protocol.md); the server refuses
    /// it when it is not the token's user.
    pub(crate) fn ws_url(&self, token: &str, user: UserId) -> String {
        let base = match self.base.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}"),
            None => format!("ws://{}", self.base.trim_start_matches("http://")),
        };
        format!("{base}/ws?v=1&token={}&user={user}", encode(token))
    }

    // ----- accounts and sessions -----

    /// `POST /api/v1/accounts`: creates an account and logs it in on a new device.
    pub async fn register(&self, credentials: &Credentials) -> Result<Session, ClientError> {
        self.json(self.request(Method::POST, "/accounts", None).json(credentials)).await
    }

    /// `POST /api/v1/sessions`: logs in, creating a new device.
    pub async fn login(&self, credentials: &Credentials) -> Result<Session, ClientError> {
        self.json(self.request(Method::POST, "/sessions", None).json(credentials)).await
    }

    /// `POST /api/v1/sessions/refresh`: new tokens for the same device. The old refresh token stops working;
    /// presenting it again revokes the device.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Session, ClientError> {
        let body = RefreshRequest { refresh_token: refresh_token.to_owned() };
        self.json(self.request(Method::POST, "/sessions/refresh", None).json(&body)).await
    }

    /// `DELETE /api/v1/sessions/current`: logs this device out; its tokens stop working at once.
    pub async fn logout(&self, token: &str) -> Result<(), ClientError> {
        self.empty(self.request(Method::DELETE, "/sessions/current", Some(token))).await
    }

    /// `GET /api/v1/me`: the caller, this device and its other devices.
    pub async fn me(&self, token: &str) -> Result<Me, ClientError> {
        self.json(self.request(Method::GET, "/me", Some(token))).await
    }

    /// `GET /api/v1/users?username=`: finds a user by name (case-insensitive).
    pub async fn find_user(&self, token: &str, username: &str) -> Result<UserProfile, ClientError> {
        let path = format!("/users?username={}", encode(username));
        self.json(self.request(Method::GET, &path, Some(token))).await
    }

    /// `GET /api/v1/users/{id}`.
    pub async fn user(&self, token: &str, user_id: UserId) -> Result<UserProfile, ClientError> {
        self.json(self.request(Method::GET, &format!("/users/{user_id}"), Some(token))).await
    }

    // ----- conversations -----

    /// `POST /api/v1/conversations` `{kind: "direct"}`: the direct conversation with `user_id`, created if
    /// there is none yet.
    pub async fn create_direct(&self, token: &str, user_id: UserId) -> Result<ConversationDetails, ClientError> {
        self.create_conversation(token, &CreateConversation::Direct { user_id }).await
    }

    /// `POST /api/v1/conversations` `{kind: "group"}`: a new group owned by the caller.
    pub async fn create_group(
        &self,
        token: &str,
        title: &str,
        members: &[UserId],
    ) -> Result<ConversationDetails, ClientError> {
        let body = CreateConversation::Group { title: title.to_owned(), members: members.to_vec() };
        self.create_conversation(token, &body).await
    }

    /// `POST /api/v1/conversations` with any body.
    pub async fn create_conversation(
        &self,
        token: &str,
        body: &CreateConversation,
    ) -> Result<ConversationDetails, ClientError> {
        self.json(self.request(Method::POST, "/conversations", Some(token)).json(body)).await
    }

    /// `GET /api/v1/conversations/{id}`: the conversation, its members and its last seq.
    pub async fn conversation(&self, token: &str, id: ConversationId) -> Result<ConversationDetails, ClientError> {
        self.json(self.request(Method::GET, &format!("/conversations/{id}"), Some(token))).await
    }

    /// `GET /api/v1/conversations?limit=&cursor=`: the caller's conversations, most recent activity first,
    /// with unread counts. Pass the page's `next_cursor` as `cursor` for the next page.
    pub async fn list_conversations(
        &self,
        token: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<ConversationPage, ClientError> {
        let mut query = Query::default();
        query.add("limit", limit);
        query.add("cursor", cursor);
        let path = format!("/conversations{}", query.finish());
        self.json(self.request(Method::GET, &path, Some(token))).await
    }

    /// `GET /api/v1/conversations/{id}/messages?from=&dir=&limit=`: one page of history.
    pub async fn history(
        &self,
        token: &str,
        conversation: ConversationId,
        query: &HistoryQuery,
    ) -> Result<HistoryPage, ClientError> {
        let path = format!("/conversations/{conversation}/messages{}", page_query(query));
        self.json(self.request(Method::GET, &path, Some(token))).await
    }

    /// `GET /api/v1/conversations/{id}/threads/{root}`: the thread of `root`, with this user's read position
    /// and unread count in it.
    pub async fn thread(
        &self,
        token: &str,
        conversation: ConversationId,
        root: u64,
    ) -> Result<ThreadState, ClientError> {
        let path = format!("/conversations/{conversation}/threads/{root}");
        self.json(self.request(Method::GET, &path, Some(token))).await
    }

    /// `GET /api/v1/conversations/{id}/threads/{root}/messages?from=&dir=&limit=`: one page of the thread's
    /// replies, paged as history is.
    pub async fn thread_replies(
        &self,
        token: &str,
        conversation: ConversationId,
        root: u64,
        query: &HistoryQuery,
    ) -> Result<HistoryPage, ClientError> {
        let path = format!("/conversations/{conversation}/threads/{root}/messages{}", page_query(query));
        self.json(self.request(Method::GET, &path, Some(token))).await
    }

    /// `GET /api/v1/search?q=&conversation=&offset=&limit=`: the messages this user can read that hold every word
    /// of `q.q` (each a word's start), best first, with highlighted snippets; `next` is the offset of the next page.
    pub async fn search(&self, token: &str, q: &SearchQuery) -> Result<SearchPage, ClientError> {
        let mut query = Query::default();
        query.add("q", Some(&q.q));
        query.add("conversation", q.conversation);
        query.add("offset", q.offset);
        query.add("limit", q.limit);
        let path = format!("/search{}", query.finish());
        self.json(self.request(Method::GET, &path, Some(token))).await
    }

    /// `PUT /api/v1/conversations/{id}/threads/{root}/read`: this user has read the thread up to reply `read`.
    pub async fn mark_thread_read(
        &self,
        token: &str,
        conversation: ConversationId,
        root: u64,
        read: u64,
    ) -> Result<ThreadState, ClientError> {
        let path = format!("/conversations/{conversation}/threads/{root}/read");
        self.json(self.request(Method::PUT, &path, Some(token)).json(&UpdateThreadRead { read })).await
    }

    /// `POST /api/v1/conversations/{id}/messages`: sends over REST. A retry with the same `client_msg_id`
    /// answers the original ack with `duplicate: true`.
    pub async fn send_message(
        &self,
        token: &str,
        conversation: ConversationId,
        message: &SendMessage,
    ) -> Result<SendAck, ClientError> {
        let path = format!("/conversations/{conversation}/messages");
        self.json(self.request(Method::POST, &path, Some(token)).json(message)).await
    }

    /// `PUT /api/v1/conversations/{id}/cursor`: moves this device's delivered and read positions forward.
    pub async fn update_cursor(
        &self,
        token: &str,
        conversation: ConversationId,
        cursor: &UpdateCursor,
    ) -> Result<CursorState, ClientError> {
        let path = format!("/conversations/{conversation}/cursor");
        self.json(self.request(Method::PUT, &path, Some(token)).json(cursor)).await
    }

    /// `POST /api/v1/uploads`: announces an upload of `size` bytes. The server sniffs the real type; the
    /// name and claimed type are informational.
    pub async fn create_upload(&self, token: &str, upload: &CreateUpload) -> Result<MediaInfo, ClientError> {
        self.json(self.request(Method::POST, "/uploads", Some(token)).json(upload)).await
    }

    /// `PATCH /api/v1/uploads/{id}`: appends `bytes` at `offset` (which must be what the server has).
    /// Returns the upload with `received` advanced; when that reaches the size, processing starts.
    pub async fn append_upload(
        &self,
        token: &str,
        id: MediaId,
        offset: u64,
        bytes: bytes::Bytes,
    ) -> Result<MediaInfo, ClientError> {
        let request = self
            .request(Method::PATCH, &format!("/uploads/{id}"), Some(token))
            .header("Upload-Offset", offset.to_string())
            .header(reqwest::header::CONTENT_TYPE, "application/offset+octet-stream")
            .body(bytes);
        self.json(request).await
    }

    /// `GET /api/v1/media/{id}`: the upload's state and, once ready, signed URLs of its variants.
    pub async fn media(&self, token: &str, id: MediaId) -> Result<MediaInfo, ClientError> {
        self.json(self.request(Method::GET, &format!("/media/{id}"), Some(token))).await
    }

    /// Uploads `bytes` in chunks of `chunk` bytes, continuing from the server's offset when a chunk fails
    /// (up to `attempts` failures in a row, with a short backoff), then waits until the pipeline has
    /// finished. Returns the final upload: `Ready`, or `Rejected` with its reason.
    pub async fn upload(
        &self,
        token: &str,
        bytes: bytes::Bytes,
        filename: &str,
        chunk: usize,
    ) -> Result<MediaInfo, ClientError> {
        const ATTEMPTS: u32 = 5;
        let upload = CreateUpload { size: bytes.len() as u64, filename: Some(filename.to_owned()), content_type: None };
        let mut info = self.create_upload(token, &upload).await?;
        let chunk = chunk.max(1) as u64;
        let mut failures = 0;
        while info.received < upload.size {
            let start = info.received;
            let end = (start + chunk).min(upload.size);
            match self.append_upload(token, info.id, start, bytes.slice(start as usize..end as usize)).await {
                Ok(next) => {
                    info = next;
                    failures = 0;
                }
                Err(e) if failures + 1 < ATTEMPTS && e.is_retryable() => {
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
                    // Whatever reached the server before the failure counts: ask where to continue.
                    info = self.media(token, info.id).await?;
                }
                Err(e) => return Err(e),
            }
        }
        loop {
            if info.state.is_final() {
                return Ok(info);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            info = self.media(token, info.id).await?;
        }
    }

    // ----- blocking -----

    /// `PUT /api/v1/blocks/{user_id}`: blocks a user (no direct messages or invitations either way, and
    /// neither sees the other's typing or presence). Blocking twice is fine.
    pub async fn block_user(&self, token: &str, user_id: UserId) -> Result<(), ClientError> {
        self.empty(self.request(Method::PUT, &format!("/blocks/{user_id}"), Some(token))).await
    }

    /// `DELETE /api/v1/blocks/{user_id}`: lifts a block. Unblocking someone not blocked is fine.
    pub async fn unblock_user(&self, token: &str, user_id: UserId) -> Result<(), ClientError> {
        self.empty(self.request(Method::DELETE, &format!("/blocks/{user_id}"), Some(token))).await
    }

    /// `GET /api/v1/blocks`: whom the caller blocks, and since when.
    pub async fn blocks(&self, token: &str) -> Result<Vec<BlockedUser>, ClientError> {
        self.json(self.request(Method::GET, "/blocks", Some(token))).await
    }

    // ----- reports -----

    /// `POST /api/v1/reports`: reports a message the caller can read, or another user, to the server's admins.
    /// Reporting the same target again while the first report is open returns that report.
    pub async fn report(&self, token: &str, report: &CreateReport) -> Result<Report, ClientError> {
        self.json(self.request(Method::POST, "/reports", Some(token)).json(report)).await
    }

    /// `GET /api/v1/admin/reports?state=&before=&limit=` (server admins): reports, newest first. Pass the
    /// page's `next_before` as `before` for the next page.
    pub async fn reports(&self, token: &str, query: &ReportListQuery) -> Result<ReportPage, ClientError> {
        let mut q = Query::default();
        q.add(
            "state",
            query.state.map(|s| match s {
                ReportState::Open => "open",
                ReportState::Resolved => "resolved",
            }),
        );
        q.add("before", query.before);
        q.add("limit", query.limit);
        self.json(self.request(Method::GET, &format!("/admin/reports{}", q.finish()), Some(token))).await
    }

    /// `POST /api/v1/admin/reports/{id}/resolve` (server admins): closes a report with a note.
    pub async fn resolve_report(&self, token: &str, id: ReportId, note: &str) -> Result<Report, ClientError> {
        let body = ResolveReport { note: note.to_owned() };
        self.json(self.request(Method::POST, &format!("/admin/reports/{id}/resolve"), Some(token)).json(&body)).await
    }

    /// `GET /api/v1/admin/users/{user_id}` (server admins): the account with its suspension and devices.
    pub async fn admin_user(&self, token: &str, user_id: UserId) -> Result<AdminUser, ClientError> {
        self.json(self.request(Method::GET, &format!("/admin/users/{user_id}"), Some(token))).await
    }

    /// `POST /api/v1/admin/users/{user_id}/suspend` (server admins): suspends the account and closes every
    /// session of it. The reason is for admins only (it may be empty).
    pub async fn suspend_user(&self, token: &str, user_id: UserId, reason: &str) -> Result<AdminUser, ClientError> {
        let body = SuspendUser { reason: reason.to_owned() };
        self.json(self.request(Method::POST, &format!("/admin/users/{user_id}/suspend"), Some(token)).json(&body)).await
    }

    /// `POST /api/v1/admin/users/{user_id}/unsuspend` (server admins): the account may log in again.
    pub async fn unsuspend_user(&self, token: &str, user_id: UserId) -> Result<AdminUser, ClientError> {
        self.json(self.request(Method::POST, &format!("/admin/users/{user_id}/unsuspend"), Some(token))).await
    }

    /// `DELETE /api/v1/admin/users/{user_id}` (server admins): the account's sessions close, its personal data
    /// is erased, it leaves its groups, and its messages stay or go as the server is configured.
    pub async fn delete_user(&self, token: &str, user_id: UserId) -> Result<DeletedUser, ClientError> {
        self.json(self.request(Method::DELETE, &format!("/admin/users/{user_id}"), Some(token))).await
    }

    /// `GET /api/v1/me/export`: everything the server keeps of the caller, as a ZIP archive, written to `out` as
    /// it arrives; returns its size. An export the server cannot finish ends in an error here (the transfer is
    /// cut), never in a short file that looks whole.
    pub async fn export_to<W>(&self, token: &str, out: &mut W) -> Result<u64, ClientError>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::AsyncWriteExt;
        let mut response = self.request(Method::GET, "/me/export", Some(token)).send().await?;
        let status = response.status();
        if !status.is_success() {
            let retry_after = retry_after_header(&response);
            let body = response.bytes().await?;
            return Err(error_from(status, retry_after, &body));
        }
        let mut size = 0;
        while let Some(chunk) = response.chunk().await? {
            out.write_all(&chunk).await.map_err(ClientError::Io)?;
            size += chunk.len() as u64;
        }
        out.flush().await.map_err(ClientError::Io)?;
        Ok(size)
    }

    // ----- plumbing -----

    fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let request = self.http.request(method, format!("{}/api/v1{path}", self.base));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn json<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let response = request.send().await?;
        let status = response.status();
        let retry_after = retry_after_header(&response);
        let body = response.bytes().await?;
        if status.is_success() {
            Ok(serde_json::from_slice(&body)?)
        } else {
            Err(error_from(status, retry_after, &body))
        }
    }

    async fn empty(&self, request: RequestBuilder) -> Result<(), ClientError> {
        let response = request.send().await?;
        let status = response.status();
        let retry_after = retry_after_header(&response);
        let body = response.bytes().await?;
        if status.is_success() { Ok(()) } else { Err(error_from(status, retry_after, &body)) }
    }
}

/// The `Retry-After` header in milliseconds (whole seconds only, as Herald sends it).
fn retry_after_header(response: &reqwest::Response) -> Option<u64> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(|secs| secs.saturating_mul(1000))
}

/// An error answer: the server's `{code, message}` when the body is one, else the raw text.
pub(crate) fn error_from(status: StatusCode, retry_after_header_ms: Option<u64>, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => ClientError::Server {
            status: Some(status.as_u16()),
            code: error.code,
            message: error.message,
            retry_after_ms: error.retry_after_ms.or(retry_after_header_ms),
        },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let body: String = text.chars().take(500).collect();
            ClientError::Unexpected { status: status.as_u16(), body }
        }
    }
}

/// A query string of the given pairs, values percent-encoded.
#[derive(Default)]
struct Query(String);

impl Query {
    fn add(&mut self, key: &str, value: Option<impl std::fmt::Display>) {
        if let Some(value) = value {
            self.0.push(if self.0.is_empty() { '?' } else { '&' });
            self.0.push_str(key);
            self.0.push('=');
            self.0.push_str(&encode(&value.to_string()));
        }
    }

    fn finish(self) -> String {
        self.0
    }
}

/// Percent-encodes everything but the unreserved characters of RFC 3986.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The query string of a page of history or of a thread.
fn page_query(query: &HistoryQuery) -> String {
    let mut q = Query::default();
    q.add("from", query.from);
    q.add(
        "dir",
        Some(match query.dir {
            Direction::Forward => "forward",
            Direction::Backward => "backward",
        }),
    );
    q.add("limit", query.limit);
    q.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_normalised() {
        let api = Api::new("http://127.0.0.1:8080/").expect("valid");
        assert_eq!(api.base_url(), "http://127.0.0.1:8080");
        let user: UserId = "0190a0b1-2c3d-7e4f-8a9b-0c1d2e3f4a5b".parse().expect("a user id");
        assert_eq!(
            api.ws_url("a.b-c_d", user),
            "ws://127.0.0.1:8080/ws?v=1&token=a.b-c_d&user=0190a0b1-2c3d-7e4f-8a9b-0c1d2e3f4a5b"
        );
        let tls = Api::new("https://chat.example.com").expect("valid");
        assert_eq!(
            tls.ws_url("t", user),
            "wss://chat.example.com/ws?v=1&token=t&user=0190a0b1-2c3d-7e4f-8a9b-0c1d2e3f4a5b"
        );
        for bad in ["", "127.0.0.1:8080", "ftp://x", "http://", "http:///x", "http://a b"] {
            assert!(matches!(Api::new(bad), Err(ClientError::InvalidUrl(_))), "{bad:?}");
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("bob"), "bob");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        let mut q = Query::default();
        q.add("limit", Some(5));
        q.add("cursor", None::<&str>);
        q.add("from", Some("x y"));
        assert_eq!(q.finish(), "?limit=5&from=x%20y");
    }

    #[test]
    fn error_bodies_keep_code_message_and_retry_hint() {
        let body = br#"{"code":"rate_limited","message":"slow down","retry_after_ms":1422}"#;
        match error_from(StatusCode::TOO_MANY_REQUESTS, Some(2000), body) {
            ClientError::Server { status, code, message, retry_after_ms } => {
                assert_eq!(status, Some(429));
                assert_eq!(code, herald_proto::ErrorCode::RateLimited);
                assert_eq!(message, "slow down");
                assert_eq!(retry_after_ms, Some(1422));
            }
            other => panic!("unexpected {other:?}"),
        }
        let body = br#"{"code":"rate_limited","message":"slow down"}"#;
        let error = error_from(StatusCode::TOO_MANY_REQUESTS, Some(2000), body);
        assert!(matches!(error, ClientError::Server { retry_after_ms: Some(2000), .. }));
        let error = error_from(StatusCode::BAD_GATEWAY, None, b"<html>bad gateway</html>");
        assert!(matches!(error, ClientError::Unexpected { status: 502, .. }));
    }
}
