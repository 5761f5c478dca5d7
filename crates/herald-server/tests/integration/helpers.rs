//! Starting servers and talking to them.

use herald_postgres::testing::TestDatabase;
use herald_proto::{ConversationId, Session, UserId};
use herald_server::config::{ClusterLogKind, Config, StorageBackend};
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
    // The 500 ms budget for checking a token is a production bound; on a test machine busy with builds and
    // other servers a connect occasionally took longer and got `unavailable`, which no test here is about.
    config.gateway.auth_timeout_ms = 5_000;
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

/// Whether the suite keeps its stores in PostgreSQL: `HERALD_TEST_BACKEND=postgres` puts every test app's stores
/// in a fresh PostgreSQL database (see `herald_postgres::testing`), and so does `HERALD_TEST_BACKEND=kafka` (see
/// [`kafka_backend`]); anything else, or nothing, uses the embedded store.
pub fn postgres_backend() -> bool {
    std::env::var("HERALD_TEST_BACKEND").is_ok_and(|b| b == "postgres" || b == "kafka")
}

/// Whether every test app is a one-node cluster on the Kafka log (`HERALD_TEST_BACKEND=kafka`): its stores in a
/// fresh PostgreSQL database (as on the PostgreSQL pass), its control plane on the Redis of
/// `HERALD_TEST_REDIS_URL` and its log on the broker(s) of `HERALD_TEST_KAFKA_BROKERS`, which
/// scripts/integration-on-kafka starts for the pass. Each app has a topic, a consumer group and a Redis key prefix
/// of its own (see [`KafkaCluster`]), so the apps sharing the broker and the Redis never see each other.
pub fn kafka_backend() -> bool {
    std::env::var("HERALD_TEST_BACKEND").is_ok_and(|b| b == "kafka")
}

/// A fresh database for `config` when the suite runs on PostgreSQL; on the Kafka pass also a one-node cluster of
/// its own on the Kafka log ([`KafkaCluster::apply`]).
pub async fn use_test_backend(config: &mut Config) -> Option<Arc<TestDatabase>> {
    if !postgres_backend() {
        return None;
    }
    let database = TestDatabase::create().await;
    config.storage.backend = StorageBackend::Postgres;
    config.storage.postgres = database.settings();
    if let Some(cluster) = KafkaCluster::for_this_pass() {
        cluster.apply(config);
    }
    Some(Arc::new(database))
}

/// The PostgreSQL pool of a `herald serve` child process, as a TOML table. A node's pool defaults to 100
/// connections (a production node's); the machine's PostgreSQL allows 100 in all, and a few nodes under load
/// beside the other tests' apps took every one (CI failed with "no database connection"). Eight are plenty
/// for a test's load.
pub const CHILD_POSTGRES_POOL: &str = "[storage.postgres.pool]\nmin_idle = 1\nmax_size = 8\n";

/// Partitions of each test app's topic on the Kafka pass: a one-node cluster needs few, and every partition is
/// one more that the broker stores and the member fetches from.
pub const KAFKA_TEST_PARTITIONS: u32 = 4;

/// How long tansu may hold a test app's fetch (`cluster.kafka.fetch_wait_max_ms`): tansu 0.6 holds every fetch
/// half of it, records at hand or not, so with the default of 500 ms each send would wait ~375 ms for its
/// sequencing and the suites' sequential sends (600 of them in a test) would take minutes. The producer's
/// linger is cut from 5 to 1 ms for the same reason: a test's sends come one at a time.
pub const KAFKA_TEST_FETCH_WAIT_MS: u64 = 5;
pub const KAFKA_TEST_LINGER_MS: u64 = 1;

/// One test app's cluster on the Kafka pass: the shared broker and Redis, and names no other app uses (a topic,
/// a consumer group, a Redis key prefix; the node id, its advertised URL, is its own port). Every key and channel
/// herald-redis uses starts with the prefix, so apps on one Redis cannot read each other's registry, feeds or
/// outcomes, and an app's group has no other member, whose arrival or departure would move its partitions.
#[derive(Clone, Debug)]
pub struct KafkaCluster {
    pub brokers: String,
    pub redis_url: String,
    pub topic: String,
    pub group_id: String,
    pub key_prefix: String,
}

impl KafkaCluster {
    /// Fresh names on the pass's broker and Redis; `None` unless the suite runs on the Kafka pass.
    ///
    /// # Panics
    /// On the Kafka pass without `HERALD_TEST_KAFKA_BROKERS` or `HERALD_TEST_REDIS_URL` (run the pass with
    /// scripts/integration-on-kafka, which starts both).
    pub fn for_this_pass() -> Option<KafkaCluster> {
        if !kafka_backend() {
            return None;
        }
        let var = |name: &str| {
            std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| {
                panic!("HERALD_TEST_BACKEND=kafka needs {name}: run the pass with scripts/integration-on-kafka")
            })
        };
        let id = uuid::Uuid::now_v7().simple().to_string();
        Some(KafkaCluster {
            brokers: var("HERALD_TEST_KAFKA_BROKERS"),
            redis_url: var("HERALD_TEST_REDIS_URL"),
            topic: format!("messages-{id}"),
            group_id: format!("herald-{id}"),
            key_prefix: format!("herald-{id}"),
        })
    }

    /// Makes `config` a node of this cluster: Redis, the Kafka log, and a group that notices a dead member
    /// within 6 s (as the two-node test in cluster.rs).
    pub fn apply(&self, config: &mut Config) {
        config.cluster.redis_urls = vec![self.redis_url.clone()];
        config.cluster.key_prefix = self.key_prefix.clone();
        config.cluster.log = ClusterLogKind::Kafka;
        config.cluster.kafka.brokers = self.brokers.clone();
        config.cluster.kafka.topic = self.topic.clone();
        config.cluster.kafka.group_id = self.group_id.clone();
        config.cluster.kafka.replication_factor = 1;
        config.cluster.kafka.session_timeout_ms = 6_000;
        config.cluster.kafka.heartbeat_interval_ms = 500;
        config.cluster.kafka.fetch_wait_max_ms = KAFKA_TEST_FETCH_WAIT_MS;
        config.cluster.kafka.linger_ms = KAFKA_TEST_LINGER_MS;
        config.log.partitions = KAFKA_TEST_PARTITIONS;
    }

    /// The same settings as `HERALD_*` environment variables, for a child process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("HERALD_LOG__PARTITIONS", KAFKA_TEST_PARTITIONS.to_string()),
            ("HERALD_CLUSTER__REDIS_URLS", self.redis_url.clone()),
            ("HERALD_CLUSTER__KEY_PREFIX", self.key_prefix.clone()),
            ("HERALD_CLUSTER__LOG", "kafka".to_owned()),
            ("HERALD_CLUSTER__KAFKA__BROKERS", self.brokers.clone()),
            ("HERALD_CLUSTER__KAFKA__TOPIC", self.topic.clone()),
            ("HERALD_CLUSTER__KAFKA__GROUP_ID", self.group_id.clone()),
            ("HERALD_CLUSTER__KAFKA__REPLICATION_FACTOR", "1".to_owned()),
            ("HERALD_CLUSTER__KAFKA__SESSION_TIMEOUT_MS", "6000".to_owned()),
            ("HERALD_CLUSTER__KAFKA__HEARTBEAT_INTERVAL_MS", "500".to_owned()),
            ("HERALD_CLUSTER__KAFKA__FETCH_WAIT_MAX_MS", KAFKA_TEST_FETCH_WAIT_MS.to_string()),
            ("HERALD_CLUSTER__KAFKA__LINGER_MS", KAFKA_TEST_LINGER_MS.to_string()),
            // A cluster's nodes need the tokens' secret.
            ("HERALD_AUTH__JWT_SECRET", JWT_SECRET.to_owned()),
        ]
    }

    /// The same settings as TOML, for a `herald serve` child process.
    pub fn toml(&self) -> String {
        format!(
            "[log]\npartitions = {KAFKA_TEST_PARTITIONS}\n\
             [cluster]\nredis_urls = [\"{}\"]\nkey_prefix = \"{}\"\nlog = \"kafka\"\n\
             [cluster.kafka]\nbrokers = \"{}\"\ntopic = \"{}\"\ngroup_id = \"{}\"\nreplication_factor = 1\n\
             session_timeout_ms = 6000\nheartbeat_interval_ms = 500\nfetch_wait_max_ms = {KAFKA_TEST_FETCH_WAIT_MS}\n\
             linger_ms = {KAFKA_TEST_LINGER_MS}\n",
            self.redis_url, self.key_prefix, self.brokers, self.topic, self.group_id
        )
    }
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
