//! Herald's one configuration struct. Layered: built-in defaults, then a TOML file, then `HERALD_*`
//! environment variables (`HERALD_SERVER__LISTEN=0.0.0.0:8080`, `HERALD_LIMITS__MAX_GROUP_MEMBERS=5000`:
//! section and field joined by a double underscore), then command-line flags. Unknown keys in the file are
//! errors (a typo there is the operator's); `HERALD_*` variables that name no setting are skipped with a
//! warning, since the environment is shared with other tools (a deploy script's own `HERALD_RELEASE`, say).
//! `herald.example.toml` at the repository root shows every field with its default; a test keeps it in sync.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub cache: CacheConfig,
    pub storage: StorageConfig,
    pub gateway: GatewayConfig,
    pub media: crate::media_config::MediaConfig,
    pub cluster: ClusterConfig,
    pub logins: LoginsConfig,
}

/// Limits on password guessing and account creation (see `herald_core::login_limits`). Counted per node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginsConfig {
    /// Failed logins an account may have before each further one locks it for a while.
    pub account_free_failures: u32,
    /// Failed logins one client address may have, over any accounts, before each further one locks it.
    pub address_free_failures: u32,
    /// The first lock, in milliseconds; each further failure doubles it.
    pub first_delay_ms: u64,
    /// The longest lock, in seconds.
    pub max_delay_secs: u64,
    /// Failures are forgotten this many seconds after the last one.
    pub forget_after_secs: u64,
    /// Accounts one client address may create per hour.
    pub registrations_per_hour: u32,
}

impl Default for LoginsConfig {
    fn default() -> Self {
        let d = herald_core::login_limits::LoginLimitsConfig::default();
        Self {
            account_free_failures: d.account_free_failures,
            address_free_failures: d.address_free_failures,
            first_delay_ms: d.first_delay.as_millis() as u64,
            max_delay_secs: d.max_delay.as_secs(),
            forget_after_secs: d.forget_after.as_secs(),
            registrations_per_hour: d.registrations_per_hour,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Redis of the cluster's control plane (docs/cluster.md): one `redis://host:port` of a single instance,
    /// or nodes of a Redis Cluster (with `redis_cluster = true`). Empty: this node runs alone. A cluster needs
    /// `storage.backend = "postgres"` and the same `auth.jwt_secret` on every node.
    pub redis_urls: Vec<String>,
    /// `redis_urls` name nodes of a Redis Cluster.
    pub redis_cluster: bool,
    /// This node's HTTP base URL as the other nodes reach it, e.g. `http://10.0.0.5:8080`. Empty: `http://`
    /// and the address bound (which must then not be a wildcard such as 0.0.0.0).
    pub advertise_url: String,
    /// Prefix of every Redis key and channel, so several Herald clusters can share one Redis.
    pub key_prefix: String,
    /// Which log the cluster's partitions live in: `leases` (partitions leased in Redis, records forwarded to
    /// their holder over HTTP) or `kafka` (the topic and consumer group of `[cluster.kafka]`). Every node of a
    /// cluster must use the same.
    pub log: ClusterLogKind,
    /// The Kafka log, when `log = "kafka"`. Its partition count is `log.partitions`.
    pub kafka: KafkaConfig,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_urls: Vec::new(),
            redis_cluster: false,
            advertise_url: String::new(),
            key_prefix: "herald".into(),
            log: ClusterLogKind::Leases,
            kafka: KafkaConfig::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterLogKind {
    Leases,
    Kafka,
}

/// The message log on Kafka (docs/cluster.md, "The log on Kafka").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port` of one or more brokers, comma-separated (librdkafka's `bootstrap.servers`).
    pub brokers: String,
    /// The topic of the message log, created with `log.partitions` partitions if missing; a node refuses to
    /// start on an existing topic with another count.
    pub topic: String,
    /// Replicas of each partition when the topic is created here (3 in production, 1 on a single broker).
    pub replication_factor: i32,
    /// The consumer group of the partition owners: the same on every node of one cluster.
    pub group_id: String,
    /// A node not heard from for this long loses its partitions to the others (`session.timeout.ms`).
    pub session_timeout_ms: u64,
    /// How often a node tells the group it is alive (`heartbeat.interval.ms`), below the session timeout.
    pub heartbeat_interval_ms: u64,
    /// How long a broker may hold a fetch of the partition owners while there is nothing new
    /// (`fetch.wait.max.ms`). A Kafka broker answers at once when records arrive; tansu 0.6 holds every fetch
    /// half this long, so on tansu it bounds how soon an append is sequenced.
    pub fetch_wait_max_ms: u64,
    /// How long the producer waits to fill a batch (`linger.ms`).
    pub linger_ms: u64,
    /// How long an append may take, retries included, before it fails (`message.timeout.ms`).
    pub append_timeout_ms: u64,
    /// The topic every announced presence change is published to, for consumers outside Herald (compacted,
    /// keyed by user, created if missing); empty publishes nothing. Nodes do not read it.
    pub presence_topic: String,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        let d = herald_kafka::Settings::new("", "");
        Self {
            brokers: String::new(),
            topic: d.topic,
            replication_factor: d.replication_factor,
            group_id: d.group_id,
            session_timeout_ms: d.session_timeout.as_millis() as u64,
            heartbeat_interval_ms: d.heartbeat_interval.as_millis() as u64,
            fetch_wait_max_ms: d.fetch_wait.as_millis() as u64,
            linger_ms: d.linger.as_millis() as u64,
            append_timeout_ms: d.append_timeout.as_millis() as u64,
            presence_topic: d.presence_topic,
        }
    }
}

impl KafkaConfig {
    /// The Kafka log's settings for a node whose log has `partitions` and batches of `max_batch`;
    /// `client_id` names this node to the brokers.
    pub fn settings(&self, partitions: u32, max_batch: usize, client_id: &str) -> herald_kafka::Settings {
        let mut s = herald_kafka::Settings::new(self.brokers.clone(), client_id);
        s.topic = self.topic.clone();
        s.partitions = partitions;
        s.replication_factor = self.replication_factor;
        s.group_id = self.group_id.clone();
        s.session_timeout = Duration::from_millis(self.session_timeout_ms);
        s.heartbeat_interval = Duration::from_millis(self.heartbeat_interval_ms);
        s.fetch_wait = Duration::from_millis(self.fetch_wait_max_ms);
        s.linger = Duration::from_millis(self.linger_ms);
        s.append_timeout = Duration::from_millis(self.append_timeout_ms);
        s.max_batch = max_batch;
        s.presence_topic = self.presence_topic.clone();
        s
    }
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        !self.redis_urls.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP API listens on. Port 0 picks a free port (printed at start-up).
    pub listen: SocketAddr,
    /// Directory of the embedded database and the generated JWT secret. Created if missing.
    pub data_dir: PathBuf,
    /// On SIGTERM/SIGINT: how long WebSocket clients and in-flight requests get to finish; the log and the store are closed after it in any case.
    pub shutdown_grace_secs: u64,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Addresses of the proxies in front of this node (e.g. nginx) whose `X-Forwarded-For` names the client.
    /// Empty: the TCP peer is the client, whatever the header says.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Secret for signing access tokens (HS256), at least 32 bytes. Every node of a cluster needs the same
    /// one. When unset, a random secret is generated once and kept in `<data_dir>/jwt-secret`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<String>,
    /// Lifetime of an access token, in seconds.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token, in seconds. Each refresh issues a new one.
    pub refresh_token_ttl_secs: u64,
    /// Argon2id memory cost in KiB (OWASP: 19456).
    pub argon2_memory_kib: u32,
    /// Argon2id passes (OWASP: 2).
    pub argon2_iterations: u32,
    /// Password hashes computed at once, each on a blocking thread.
    pub hash_concurrency: usize,
    /// Usernames of the server's admins: they see and resolve users' reports, suspend and delete accounts, and
    /// may use the media admin endpoints too.
    pub admins: Vec<String>,
    /// What becomes of a deleted account's messages: "keep" (they stay, shown as a deleted user's) or "remove"
    /// (each deleted, as its sender would delete it, and its reactions taken back).
    pub deleted_user_messages: herald_core::user_admin::DeletedMessages,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest message body, in bytes.
    pub max_message_bytes: usize,
    /// Most members of a group, owner included.
    pub max_group_members: usize,
    /// Longest group title, in characters.
    pub max_title_chars: usize,
    /// Largest page a client may ask for (history, conversations).
    pub max_page: usize,
    /// Sustained writes per user per second: sends, edits, deletes, reactions, read/delivered positions, typing, presence queries.
    pub sends_per_second: u32,
    /// How many a user may send in a burst above that rate.
    pub send_burst: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Partitions of the message log; one owner task each. Fixed for the life of the data.
    pub partitions: u32,
    /// Records queued per partition before senders wait (backpressure).
    pub queue_depth: usize,
    /// Most records an owner takes in one batch (one group commit).
    pub max_batch: usize,
    /// How long a request waits for its record to be applied before answering `unavailable`.
    pub apply_timeout_ms: u64,
    /// Most writes of this node's clients between the log and their answer at once; more wait up to
    /// `admission_wait_ms` for one to finish, then get `unavailable` with a delay to retry after.
    pub max_pending_writes: usize,
    /// How long a write may wait for room under `max_pending_writes` before it is refused.
    pub admission_wait_ms: u64,
    /// The time writes should take at most while the node is saturated: when even the fastest write of a
    /// 100 ms interval takes longer, the slots under `max_pending_writes` shrink (to no fewer than 1,024) and
    /// writes that find none free are refused without waiting, until writes are fast again. 0, or a
    /// `max_pending_writes` of 1,024 or fewer, keeps the count fixed.
    pub admission_target_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Time to live of the in-process (L1) cache, in seconds. Local changes invalidate entries at once.
    pub l1_ttl_secs: u64,
    /// Time to live of the L2 cache in Redis that the nodes of a cluster share, in seconds. Every change
    /// invalidates its entries once stored, so the TTL only bounds what a change made while Redis was out of
    /// reach, and not yet retried, can leave behind (see docs/cluster.md).
    pub l2_ttl_secs: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where the stores live: `embedded` (a database in `server.data_dir`, nothing to install) or `postgres`
    /// (every store in PostgreSQL, `[storage.postgres]`, for nodes that share no disk).
    pub backend: StorageBackend,
    /// The PostgreSQL backend: `url` of the primary, `replica_urls`, the `pool`, `message_retention_days`.
    pub postgres: herald_postgres::Settings,
    /// Page cache of the embedded database, in MiB. It also holds the pages written since the last
    /// checkpoint, so it bounds how much a checkpoint writes out while the writer waits: a bigger cache
    /// serves more reads itself (the rest come from the OS page cache) but makes checkpoint pauses longer.
    pub cache_mb: usize,
    /// Newest events kept in each user's feed. A device that was offline for more events than this is
    /// told to resync (reload over REST) instead of resuming.
    pub feed_retention: u64,
    /// Messages are durable once in the write-ahead journal; at most this long later they are also in a
    /// durable commit of the database file (a checkpoint), after which the journal is emptied. Longer
    /// makes checkpoints rarer but larger, and the replay after a crash longer.
    pub checkpoint_interval_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: StorageBackend::Embedded,
            postgres: herald_postgres::Settings::default(),
            cache_mb: 16,
            feed_retention: 10_000,
            checkpoint_interval_ms: 5000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageBackend {
    Embedded,
    Postgres,
}

impl StorageConfig {
    /// The PostgreSQL settings with the node-wide ones filled in.
    pub fn postgres_settings(&self) -> herald_postgres::Settings {
        herald_postgres::Settings { feed_retention: self.feed_retention, ..self.postgres.clone() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Every HTTP request head (the WebSocket upgrade included; also the wait on an idle keep-alive connection) and the `auth` frame when the token is not in the upgrade must arrive within this.
    pub handshake_timeout_ms: u64,
    /// Budget for validating a JWT.
    pub auth_timeout_ms: u64,
    /// Server ping interval; a client that has not answered the previous ping by the next is dropped.
    pub heartbeat_secs: u64,
    /// A connection with no frame from its client for this long is closed.
    pub idle_timeout_secs: u64,
    /// New WebSocket handshakes admitted per second on this node (reconnect-storm control).
    pub handshakes_per_second: u32,
    /// Handshakes admitted in a burst above that rate.
    pub handshake_burst: u32,
    /// Frames queued for one connection before it counts as too slow and is disconnected.
    pub queue_depth: usize,
    /// Requests one connection may have waiting for their outcome.
    pub max_in_flight: usize,
    /// Largest message a client may send, in bytes (all its frames together).
    pub max_frame_bytes: usize,
    /// On shutdown, clients are told to reconnect after a random delay below this.
    pub reconnect_jitter_ms: u64,
    /// Presence changes of one user within this window are merged into one announcement.
    pub presence_coalesce_ms: u64,
    /// How long receivers show a typing indicator without a new one.
    pub typing_ttl_ms: u64,
    /// Receipts reach every member only in conversations up to this size (else only the reader's devices).
    pub receipt_fanout_max_members: usize,
    /// A user's presence changes are announced to the members of its conversations up to this size (direct
    /// ones always); members of bigger groups ask with `presence_query`.
    pub presence_fanout_max_members: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            handshake_timeout_ms: 2000,
            auth_timeout_ms: 500,
            heartbeat_secs: 30,
            idle_timeout_secs: 600,
            handshakes_per_second: 1000,
            handshake_burst: 2000,
            queue_depth: 1024,
            max_in_flight: 64,
            max_frame_bytes: 64 * 1024,
            reconnect_jitter_ms: 5000,
            presence_coalesce_ms: 1000,
            typing_ttl_ms: 6000,
            receipt_fanout_max_members: 100,
            presence_fanout_max_members: 100,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./herald-data"),
            shutdown_grace_secs: 30,
            max_body_bytes: 1024 * 1024,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            hash_concurrency: 2,
            admins: Vec::new(),
            deleted_user_messages: herald_core::user_admin::DeletedMessages::Keep,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = herald_core::limits::Limits::default();
        Self {
            max_message_bytes: l.max_message_bytes,
            max_group_members: l.max_group_members,
            max_title_chars: l.max_title_chars,
            max_page: l.max_page,
            sends_per_second: l.sends_per_second,
            send_burst: l.send_burst,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            partitions: 16,
            queue_depth: 8192,
            max_batch: 1024,
            apply_timeout_ms: 10_000,
            max_pending_writes: 8192,
            admission_wait_ms: 100,
            admission_target_ms: 50,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { l1_ttl_secs: 60, l2_ttl_secs: 3600 }
    }
}

/// A configuration that cannot be used, with the offending key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Defaults, then `file` (if any), then the `HERALD_*` variables among `env`.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let file = match file {
            Some(path) if !path.exists() => {
                return Err(ConfigError(format!("config file {} does not exist", path.display())));
            }
            Some(path) => Some(config::File::from(path).format(config::FileFormat::Toml)),
            None => None,
        };
        Self::layered(file, env)
    }

    /// Defaults, then the TOML text of a config file, then the `HERALD_*` variables among `env`: what
    /// [`Config::load`] does with a file's contents.
    pub fn from_toml(toml: &str, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        Self::layered(Some(config::File::from_str(toml, config::FileFormat::Toml)), env)
    }

    fn layered(
        file: Option<impl config::Source + Send + Sync + 'static>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        // The defaults as a source, made once: building them is most of the work of loading a small file.
        static DEFAULTS: LazyLock<Result<config::Config, String>> =
            LazyLock::new(|| config::Config::try_from(&Config::default()).map_err(|e| e.to_string()));
        let defaults = DEFAULTS.clone().map_err(ConfigError)?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(file) = file {
            builder = builder.add_source(file);
        }
        let (env, ignored) = settings_in(env);
        for name in ignored {
            tracing::warn!(variable = %name, "ignoring an environment variable that names no Herald setting");
        }
        builder = builder.add_source(
            config::Environment::with_prefix("HERALD")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("storage.postgres.replica_urls")
                .with_list_parse_key("cluster.redis_urls")
                .with_list_parse_key("server.trusted_proxies")
                .with_list_parse_key("auth.admins")
                .with_list_parse_key("media.admins")
                .source(Some(env)),
        );
        builder.build().and_then(|c| c.try_deserialize()).map_err(|e| ConfigError(e.to_string()))
    }

    /// The dotted paths of every setting, e.g. `limits.max_group_members` or `media.storage.bucket`.
    fn setting_paths() -> Vec<String> {
        fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(fields) => {
                    for (key, value) in fields {
                        let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                        walk(&path, value, out);
                    }
                }
                _ => out.push(prefix.to_owned()),
            }
        }
        // Every optional setting given a value, so that none is left out of the serialised form.
        let mut every = Config::default();
        every.auth.jwt_secret = Some(String::new());
        let mut paths = Vec::new();
        if let Ok(every) = serde_json::to_value(every) {
            walk("", &every, &mut paths);
        }
        paths
    }

    /// Checks every value before anything is bound or opened.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn check(ok: bool, key: &str, rule: &str) -> Result<(), ConfigError> {
            if ok { Ok(()) } else { Err(ConfigError(format!("{key} {rule}"))) }
        }
        let (s, a, l, g) = (&self.server, &self.auth, &self.limits, &self.log);
        check(!s.data_dir.as_os_str().is_empty(), "server.data_dir", "must not be empty")?;
        let c = &self.cluster;
        if c.enabled() {
            check(
                self.storage.backend == StorageBackend::Postgres,
                "cluster.redis_urls",
                "needs storage.backend = \"postgres\" (nodes of a cluster share their stores)",
            )?;
            check(
                a.jwt_secret.is_some(),
                "cluster.redis_urls",
                "needs auth.jwt_secret, the same on every node (tokens and node-to-node requests use it)",
            )?;
            check(
                c.redis_urls.iter().all(|u| u.starts_with("redis://") || u.starts_with("rediss://")),
                "cluster.redis_urls",
                "must be redis:// (or rediss://) URLs",
            )?;
            check(
                !c.advertise_url.is_empty() || !s.listen.ip().is_unspecified(),
                "cluster.advertise_url",
                "must be set when server.listen is a wildcard address (how do the other nodes reach this one?)",
            )?;
            check(
                c.advertise_url.is_empty()
                    || c.advertise_url.starts_with("http://")
                    || c.advertise_url.starts_with("https://"),
                "cluster.advertise_url",
                "must be an http:// or https:// URL",
            )?;
            check(
                !c.key_prefix.is_empty() && !c.key_prefix.contains(['{', '}']),
                "cluster.key_prefix",
                "must be non-empty, without braces",
            )?;
        }
        if c.log == ClusterLogKind::Kafka {
            let k = &c.kafka;
            check(
                c.enabled(),
                "cluster.log",
                "= \"kafka\" needs cluster.redis_urls (outcomes and deliveries travel there)",
            )?;
            check(!k.brokers.trim().is_empty(), "cluster.kafka.brokers", "must name at least one broker (host:port)")?;
            check(!k.topic.is_empty(), "cluster.kafka.topic", "must not be empty")?;
            check(!k.group_id.is_empty(), "cluster.kafka.group_id", "must not be empty")?;
            check(k.replication_factor >= 1, "cluster.kafka.replication_factor", "must be at least 1")?;
            check(
                k.heartbeat_interval_ms >= 1 && k.heartbeat_interval_ms < k.session_timeout_ms,
                "cluster.kafka.heartbeat_interval_ms",
                "must be at least 1 and below cluster.kafka.session_timeout_ms",
            )?;
            check(k.append_timeout_ms >= 1, "cluster.kafka.append_timeout_ms", "must be at least 1")?;
            check(k.fetch_wait_max_ms >= 1, "cluster.kafka.fetch_wait_max_ms", "must be at least 1")?;
        }
        check(s.shutdown_grace_secs <= 3600, "server.shutdown_grace_secs", "must be at most 3600")?;
        check(s.max_body_bytes >= 1024, "server.max_body_bytes", "must be at least 1024")?;
        if let Some(secret) = &a.jwt_secret {
            check(secret.len() >= 32, "auth.jwt_secret", "must be at least 32 bytes")?;
        }
        check(a.access_token_ttl_secs >= 10, "auth.access_token_ttl_secs", "must be at least 10")?;
        check(
            a.refresh_token_ttl_secs >= a.access_token_ttl_secs,
            "auth.refresh_token_ttl_secs",
            "must be at least auth.access_token_ttl_secs",
        )?;
        check(a.argon2_memory_kib >= 8, "auth.argon2_memory_kib", "must be at least 8")?;
        check(a.argon2_iterations >= 1, "auth.argon2_iterations", "must be at least 1")?;
        check(a.hash_concurrency >= 1, "auth.hash_concurrency", "must be at least 1")?;
        check(l.max_message_bytes >= 1, "limits.max_message_bytes", "must be at least 1")?;
        check(
            l.max_message_bytes < s.max_body_bytes,
            "limits.max_message_bytes",
            "must be below server.max_body_bytes",
        )?;
        check(l.max_group_members >= 2, "limits.max_group_members", "must be at least 2")?;
        check(l.max_title_chars >= 1, "limits.max_title_chars", "must be at least 1")?;
        check(l.max_page >= 1, "limits.max_page", "must be at least 1")?;
        check(l.sends_per_second >= 1, "limits.sends_per_second", "must be at least 1")?;
        check((1..=4096).contains(&g.partitions), "log.partitions", "must be between 1 and 4096")?;
        check(g.queue_depth >= 1, "log.queue_depth", "must be at least 1")?;
        check(g.max_batch >= 1, "log.max_batch", "must be at least 1")?;
        check(g.apply_timeout_ms >= 100, "log.apply_timeout_ms", "must be at least 100")?;
        check(g.max_pending_writes >= 1, "log.max_pending_writes", "must be at least 1")?;
        check(self.cache.l1_ttl_secs >= 1, "cache.l1_ttl_secs", "must be at least 1")?;
        check(self.cache.l2_ttl_secs >= 1, "cache.l2_ttl_secs", "must be at least 1")?;
        let logins = &self.logins;
        check(logins.first_delay_ms >= 1, "logins.first_delay_ms", "must be at least 1")?;
        check(logins.max_delay_secs >= 1, "logins.max_delay_secs", "must be at least 1")?;
        check(logins.forget_after_secs >= 1, "logins.forget_after_secs", "must be at least 1")?;
        check(logins.registrations_per_hour >= 1, "logins.registrations_per_hour", "must be at least 1")?;
        check((1..=1 << 20).contains(&self.storage.cache_mb), "storage.cache_mb", "must be between 1 and 1048576")?;
        check(self.storage.feed_retention >= 100, "storage.feed_retention", "must be at least 100")?;
        if self.storage.backend == StorageBackend::Postgres {
            let pg = &self.storage.postgres;
            check(!pg.url.is_empty(), "storage.postgres.url", "must be set when storage.backend is postgres")?;
            check(pg.pool.max_size >= 1, "storage.postgres.pool.max_size", "must be at least 1")?;
            check(
                pg.pool.min_idle <= pg.pool.max_size,
                "storage.postgres.pool.min_idle",
                "must be at most storage.postgres.pool.max_size",
            )?;
            check(pg.pool.connect_timeout_ms >= 1, "storage.postgres.pool.connect_timeout_ms", "must be at least 1")?;
            check(
                pg.pool.statement_timeout_ms >= 1,
                "storage.postgres.pool.statement_timeout_ms",
                "must be at least 1",
            )?;
        }
        check(
            (10..=600_000).contains(&self.storage.checkpoint_interval_ms),
            "storage.checkpoint_interval_ms",
            "must be between 10 and 600000",
        )?;
        let w = &self.gateway;
        check(w.handshake_timeout_ms >= 100, "gateway.handshake_timeout_ms", "must be at least 100")?;
        check(w.auth_timeout_ms >= 10, "gateway.auth_timeout_ms", "must be at least 10")?;
        check(w.heartbeat_secs >= 1, "gateway.heartbeat_secs", "must be at least 1")?;
        check(w.idle_timeout_secs >= 1, "gateway.idle_timeout_secs", "must be at least 1")?;
        check(w.handshakes_per_second >= 1, "gateway.handshakes_per_second", "must be at least 1")?;
        check(w.queue_depth >= 16, "gateway.queue_depth", "must be at least 16")?;
        check(w.max_in_flight >= 1, "gateway.max_in_flight", "must be at least 1")?;
        check(w.max_frame_bytes >= 1024, "gateway.max_frame_bytes", "must be at least 1024")?;
        check(w.presence_coalesce_ms >= 1, "gateway.presence_coalesce_ms", "must be at least 1")?;
        check(w.typing_ttl_ms >= 100, "gateway.typing_ttl_ms", "must be at least 100")?;
        check(w.presence_fanout_max_members >= 2, "gateway.presence_fanout_max_members", "must be at least 2")?;
        // A connection with its in-flight limit reached stops reading (and so stops seeing pongs) until a
        // request completes; a request may take up to the apply timeout.
        check(
            w.heartbeat_secs.saturating_mul(1000) > g.apply_timeout_ms,
            "gateway.heartbeat_secs",
            "must be longer than log.apply_timeout_ms",
        )?;
        self.media.validate()
    }

    /// A throwaway node, for tests and local experiments: port 0 on loopback, data in `dir`, password hashing
    /// made cheap and per-user rate limits lifted, and accounts created without limit from one address (all
    /// its clients are on loopback): none of that is what such a node is for.
    pub fn ephemeral(dir: &Path) -> Config {
        let mut config = Config::default();
        config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.server.data_dir = dir.to_owned();
        config.auth.argon2_memory_kib = 256;
        config.auth.argon2_iterations = 1;
        config.limits.sends_per_second = 100_000;
        config.limits.send_burst = 100_000;
        config.logins.registrations_per_hour = 1_000_000;
        config
    }

    pub fn gateway(&self) -> herald_api::gateway::GatewayConfig {
        let w = &self.gateway;
        herald_api::gateway::GatewayConfig {
            handshake_timeout: Duration::from_millis(w.handshake_timeout_ms),
            auth_timeout: Duration::from_millis(w.auth_timeout_ms),
            heartbeat_interval: Duration::from_secs(w.heartbeat_secs),
            idle_timeout: Duration::from_secs(w.idle_timeout_secs),
            handshakes_per_second: w.handshakes_per_second,
            handshake_burst: w.handshake_burst,
            max_in_flight: w.max_in_flight,
            max_frame_bytes: w.max_frame_bytes,
            reconnect_jitter: Duration::from_millis(w.reconnect_jitter_ms),
        }
    }

    pub fn hub(&self) -> herald_core::hub::HubConfig {
        let w = &self.gateway;
        herald_core::hub::HubConfig {
            queue_depth: w.queue_depth,
            presence_coalesce: Duration::from_millis(w.presence_coalesce_ms),
            typing_ttl: Duration::from_millis(w.typing_ttl_ms),
            typing_interval: Duration::from_millis(w.typing_ttl_ms / 3),
            presence_fanout_max_members: w.presence_fanout_max_members,
        }
    }

    pub fn login_limits(&self) -> herald_core::login_limits::LoginLimitsConfig {
        let l = &self.logins;
        herald_core::login_limits::LoginLimitsConfig {
            account_free_failures: l.account_free_failures,
            address_free_failures: l.address_free_failures,
            first_delay: Duration::from_millis(l.first_delay_ms),
            max_delay: Duration::from_secs(l.max_delay_secs),
            forget_after: Duration::from_secs(l.forget_after_secs),
            registrations_per_hour: l.registrations_per_hour,
        }
    }

    pub fn core_limits(&self) -> herald_core::limits::Limits {
        let l = &self.limits;
        herald_core::limits::Limits {
            max_message_bytes: l.max_message_bytes,
            max_group_members: l.max_group_members,
            max_title_chars: l.max_title_chars,
            max_page: l.max_page,
            sends_per_second: l.sends_per_second,
            send_burst: l.send_burst,
        }
    }
}

/// Splits the `HERALD_*` variables among `env` into those that name a setting (`HERALD_SECTION__FIELD`, in
/// any case) and the names of those that do not. Other variables are left out.
fn settings_in(env: impl IntoIterator<Item = (String, String)>) -> (HashMap<String, String>, Vec<String>) {
    static KNOWN: LazyLock<Vec<String>> = LazyLock::new(Config::setting_paths);
    let known = &*KNOWN;
    let mut settings = HashMap::new();
    let mut ignored = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("HERALD_") else { continue };
        if known.contains(&rest.to_lowercase().replace("__", ".")) {
            settings.insert(name, value);
        } else {
            ignored.push(name);
        }
    }
    ignored.sort();
    (settings, ignored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("defaults validate");
        Config::ephemeral(Path::new("/tmp/x")).validate().expect("an ephemeral node validates");
    }

    #[test]
    fn environment_overrides_and_unrelated_variables_are_skipped() {
        let c =
            Config::load(None, env(&[("HERALD_LIMITS__MAX_GROUP_MEMBERS", "5000"), ("PATH", "/bin")])).expect("loads");
        assert_eq!(c.limits.max_group_members, 5000);
        // A deploy script's own variables, a typo'd field, a section alone: skipped (with a warning), not fatal.
        let shared = env(&[
            ("HERALD_RELEASE", "2026.12"),
            ("HERALD_LIMITS__NOPE", "1"),
            ("HERALD_SERVER", "x"),
            ("herald_gateway__queue_depth", "7"),
            ("HERALD_GATEWAY__QUEUE_DEPTH", "512"),
            ("HERALD_MEDIA__STORAGE__KIND", "local"),
            ("HERALD_AUTH__JWT_SECRET", "a secret of at least thirty-two bytes"),
        ]);
        let c = Config::load(None, shared.clone()).expect("an unrelated HERALD_ variable does not stop the start");
        assert_eq!(c.gateway.queue_depth, 512);
        let (kept, ignored) = settings_in(shared);
        assert_eq!(kept.len(), 3, "{kept:?}");
        assert_eq!(c.auth.jwt_secret.as_deref(), Some("a secret of at least thirty-two bytes"), "an optional setting");
        assert_eq!(ignored, ["HERALD_LIMITS__NOPE", "HERALD_RELEASE", "HERALD_SERVER"]);
        let err = Config::load(None, env(&[("HERALD_SERVER__LISTEN", "not-an-address")])).expect_err("bad value");
        assert!(err.to_string().contains("listen") || err.to_string().contains("address"), "{err}");
        // Lists of names, comma-separated.
        let c = Config::load(None, env(&[("HERALD_AUTH__ADMINS", "alice,bob"), ("HERALD_MEDIA__ADMINS", "carol")]))
            .expect("admins from the environment");
        assert_eq!((c.auth.admins, c.media.admins), (vec!["alice".into(), "bob".into()], vec!["carol".into()]));
    }

    #[test]
    fn a_config_files_text_loads_as_the_file_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "[limits]\nmax_group_members = 300\n[gateway]\nqueue_depth = 64\n";
        let file = dir.path().join("herald.toml");
        std::fs::write(&file, text).expect("writes");
        let from_text = Config::from_toml(text, env(&[("HERALD_GATEWAY__QUEUE_DEPTH", "128")])).expect("loads");
        assert_eq!(
            from_text,
            Config::load(Some(&file), env(&[("HERALD_GATEWAY__QUEUE_DEPTH", "128")])).expect("loads")
        );
        assert_eq!(
            (from_text.limits.max_group_members, from_text.gateway.queue_depth),
            (300, 128),
            "the file, then env"
        );
        let err = Config::from_toml("[limits]\nmax_group_member = 3\n", env(&[])).expect_err("a typo");
        assert!(err.to_string().contains("max_group_member"), "{err}");
        assert!(Config::from_toml("[limits\n", env(&[])).is_err(), "not TOML");
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = Config::default();
        c.log.partitions = 0;
        assert!(c.validate().expect_err("invalid").to_string().contains("log.partitions"));
        let mut c = Config::default();
        c.auth.jwt_secret = Some("short".into());
        assert!(c.validate().expect_err("invalid").to_string().contains("auth.jwt_secret"));
        // TOML has `inf`; a duration of infinite days would panic at start-up.
        let c = Config::from_toml("[media]\ncold_after_days = inf\n", env(&[])).expect("a float");
        assert!(c.validate().expect_err("invalid").to_string().contains("media.cold_after_days"));
    }

    #[test]
    fn the_kafka_log_is_chosen_by_file_or_environment_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("herald.toml");
        std::fs::write(
            &file,
            "[storage]\nbackend = \"postgres\"\n[auth]\njwt_secret = \"a secret of at least thirty-two bytes\"\n\
             [cluster]\nredis_urls = [\"redis://127.0.0.1:6379\"]\nadvertise_url = \"http://10.0.0.5:8080\"\n\
             log = \"kafka\"\n[cluster.kafka]\nbrokers = \"k1:9092,k2:9092\"\ngroup_id = \"chat\"\n",
        )
        .expect("writes");
        let c = Config::load(Some(&file), env(&[("HERALD_CLUSTER__KAFKA__TOPIC", "chat-messages")])).expect("loads");
        assert_eq!(c.cluster.log, ClusterLogKind::Kafka);
        assert_eq!(
            (c.cluster.kafka.brokers.as_str(), c.cluster.kafka.topic.as_str()),
            ("k1:9092,k2:9092", "chat-messages")
        );
        c.validate().expect("a Kafka cluster validates");
        let s = c.cluster.kafka.settings(c.log.partitions, c.log.max_batch, "node-1");
        assert_eq!((s.group_id.as_str(), s.partitions, s.client_id.as_str()), ("chat", 16, "node-1"));

        std::fs::write(dir.path().join("bad.toml"), "[cluster.kafka]\nbroker = \"k1:9092\"\n").expect("writes");
        assert!(Config::load(Some(&dir.path().join("bad.toml")), env(&[])).is_err(), "unknown keys are errors");
        let mut no_brokers = c.clone();
        no_brokers.cluster.kafka.brokers.clear();
        assert!(no_brokers.validate().expect_err("invalid").to_string().contains("cluster.kafka.brokers"));
        let mut alone = Config::default();
        alone.cluster.log = ClusterLogKind::Kafka;
        alone.cluster.kafka.brokers = "k1:9092".into();
        assert!(alone.validate().expect_err("invalid").to_string().contains("cluster.log"));
    }
}
