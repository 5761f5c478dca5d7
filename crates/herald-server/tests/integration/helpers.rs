//! Starting servers and talking to them.

use herald_postgres::testing::TestDatabase;
use herald_proto::{ConversationId, Session, UserId};
use herald_server::config::{Config, StorageBackend};
use herald_server::server::{self, Running};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The signing secret test servers use, so tests can forge tokens.
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret!";

/// A throwaway node whose tokens the tests can forge.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config::ephemeral(dir);
    config.server.shutdown_grace_secs = 10;
    config.auth.jwt_secret = Some(JWT_SECRET.into());
    config
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub config: Config,
    running: Option<Running>,
    /// Keeps the data dir alive across restarts.
    pub dir: Arc<tempfile::TempDir>,
    /// The PostgreSQL database of this app when the suite runs on that backend, dropped with the app.
    database: Option<Arc<TestDatabase>>,
}

/// Which backend the suite runs on: `HERALD_TEST_BACKEND=postgres` puts every test app's stores in a fresh
/// PostgreSQL database (see `herald_postgres::testing`); anything else, or nothing, uses the embedded one.
pub fn postgres_backend() -> bool {
    std::env::var("HERALD_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// A fresh database for `config` when the suite runs on PostgreSQL.
pub async fn use_test_backend(config: &mut Config) -> Option<Arc<TestDatabase>> {
    if !postgres_backend() {
        return None;
    }
    let database = TestDatabase::create().await;
    config.storage.backend = StorageBackend::Postgres;
    config.storage.postgres = database.settings();
    Some(Arc::new(database))
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    let mut config = test_config(dir.path());
    let database = use_test_backend(&mut config).await;
    tweak(&mut config);
    start(config, dir, database).await
}

/// Starts a node of `config` (its data dir `dir`; `database` dropped with the last app holding it).
pub async fn start(config: Config, dir: Arc<tempfile::TempDir>, database: Option<Arc<TestDatabase>>) -> TestApp {
    let running = server::start(config.clone()).await.expect("server starts");
    TestApp {
        base: format!("http://{}", running.addr),
        http: reqwest::Client::new(),
        config,
        running: Some(running),
        dir,
        database,
    }
}

/// A node running elsewhere (a `herald serve` child process, `child::Node`) at `base`, for the same requests
/// as to a node of this process; `shutdown` leaves it running.
pub fn at(base: &str) -> TestApp {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    TestApp {
        base: base.to_owned(),
        http: reqwest::Client::new(),
        config: test_config(dir.path()),
        running: None,
        dir,
        database: None,
    }
}

static NAMES: AtomicU64 = AtomicU64::new(0);

/// A unique, valid username.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{:03}", NAMES.fetch_add(1, Ordering::Relaxed))
}

/// A registered user with one device.
#[derive(Clone)]
pub struct User {
    pub session: Session,
}

impl User {
    pub fn id(&self) -> UserId {
        self.session.user.id
    }
    pub fn token(&self) -> &str {
        &self.session.access_token
    }
}

impl TestApp {
    /// Shuts the server down gracefully and starts a new one on the same data dir.
    pub async fn restart(mut self) -> TestApp {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
        start(self.config.clone(), self.dir.clone(), self.database.clone()).await
    }

    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
    }

    /// Sends a request; returns the status and the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.expect("body read");
        let value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn register(&self, prefix: &str) -> User {
        let username = unique_name(prefix);
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/accounts",
                None,
                Some(json!({"username": username, "password": "correct horse"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "register: {body}");
        User { session: serde_json::from_value(body).expect("session") }
    }

    /// Logs the user in again: a second device.
    pub async fn login(&self, user: &User) -> User {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/sessions",
                None,
                Some(json!({"username": user.session.user.username, "password": "correct horse"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "login: {body}");
        User { session: serde_json::from_value(body).expect("session") }
    }

    pub async fn direct(&self, a: &User, b: &User) -> ConversationId {
        let (status, body) =
            self.post("/api/v1/conversations", a.token(), json!({"kind": "direct", "user_id": b.id()})).await;
        assert!(status == StatusCode::CREATED || status == StatusCode::OK, "direct: {status} {body}");
        conversation_id(&body)
    }

    pub async fn group(&self, owner: &User, members: &[&User]) -> ConversationId {
        let ids: Vec<UserId> = members.iter().map(|m| m.id()).collect();
        let (status, body) = self
            .post("/api/v1/conversations", owner.token(), json!({"kind": "group", "title": "team", "members": ids}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "group: {body}");
        conversation_id(&body)
    }

    /// A group of an owner and `members` fresh users; returns it with everyone in it, the owner first.
    pub async fn populated_group(&self, members: usize) -> (ConversationId, Vec<User>) {
        let owner = self.register("owner").await;
        let mut others = Vec::with_capacity(members);
        for _ in 0..members {
            others.push(self.register("m").await);
        }
        let refs: Vec<&User> = others.iter().collect();
        let g = self.group(&owner, &refs).await;
        (g, std::iter::once(owner).chain(others).collect())
    }

    /// Posts a message; returns the status and the answer.
    pub async fn post_message(
        &self,
        user: &User,
        conversation: ConversationId,
        client_msg_id: &str,
        body: &str,
    ) -> (StatusCode, Value) {
        self.post(
            &format!("/api/v1/conversations/{conversation}/messages"),
            user.token(),
            json!({"client_msg_id": client_msg_id, "body": body}),
        )
        .await
    }

    /// Sends and expects a fresh ack; returns its seq.
    pub async fn send(&self, user: &User, conversation: ConversationId, client_msg_id: &str, body: &str) -> u64 {
        let (status, ack) = self.post_message(user, conversation, client_msg_id, body).await;
        assert_eq!(status, StatusCode::CREATED, "send: {ack}");
        ack["seq"].as_u64().expect("seq")
    }

    /// Every message of the conversation, forward, through pagination.
    pub async fn all_messages(&self, user: &User, conversation: ConversationId) -> Vec<Value> {
        let mut out = Vec::new();
        let mut from = 1;
        loop {
            let (status, page) = self
                .get(&format!("/api/v1/conversations/{conversation}/messages?from={from}&limit=200"), user.token())
                .await;
            assert_eq!(status, StatusCode::OK, "history: {page}");
            out.extend(page["messages"].as_array().expect("messages").iter().cloned());
            match page["next"].as_u64() {
                Some(next) => from = next,
                None => return out,
            }
        }
    }

    pub async fn last_seq(&self, user: &User, conversation: ConversationId) -> u64 {
        let (status, body) = self.get(&format!("/api/v1/conversations/{conversation}"), user.token()).await;
        assert_eq!(status, StatusCode::OK, "details: {body}");
        body["last_seq"].as_u64().expect("last_seq")
    }
}

pub fn conversation_id(body: &Value) -> ConversationId {
    body["conversation"]["id"].as_str().expect("conversation id").parse().expect("uuid")
}

/// Asserts an error response: status and `code`, with a non-empty message.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "body: {}", got.1);
    assert_eq!(got.1["code"], code, "body: {}", got.1);
    assert!(got.1["message"].as_str().is_some_and(|m| !m.is_empty()), "message missing: {}", got.1);
}
