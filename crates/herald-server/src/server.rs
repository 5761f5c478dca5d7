//! Start-up and shutdown of one Herald node.
//!
//! Start: validate the config, open the store (embedded or PostgreSQL), start the log's partition owners, build the
//! services, bind, serve. Shutdown (SIGTERM/SIGINT or [`Running::shutdown`]): mark the node not ready,
//! send WebSocket clients elsewhere (each answers what it has in flight, then gets a jittered reconnect
//! hint), stop accepting HTTP and let in-flight requests finish (their records are still applied: the log
//! runs until they are done), all within the grace period; then drain the log and close the store.

use crate::config::StorageBackend;
use crate::config::{ClusterLogKind, Config};
use crate::metrics_catalogue::{self, Shape};
use crate::storage::Storage;
use crate::{housekeeping, metrics_setup, secret};
use anyhow::Context;
use herald_api::gateway::Gateway;
use herald_api::{AppState, Logins, Readiness};
use herald_core::Services;
use herald_core::accounts::Accounts;
use herald_core::admins::Admins;
use herald_core::auth::{PasswordCost, Passwords, Tokens};
use herald_core::blocks::Blocks;
use herald_core::conversations::Conversations;
use herald_core::delivery::{Delivery, LocalDelivery, Waiters};
use herald_core::hub::Hub;
use herald_core::log::MessageLog;
use herald_core::login_limits::LoginLimits;
use herald_core::messaging::Messaging;
use herald_core::reports::Reports;
use herald_core::sequencer::{Sequencer, SequencerConfig};
use herald_core::submit::Submitter;
use herald_core::user_admin::{UserAdmin, UserAdminParts};
use herald_embedded::InProcessLog;
use herald_redis::l2::L2Cache;
use herald_redis::{Cluster, ClusterLog, LogShape};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long draining the log and closing the store may take after the grace period.
const STORE_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long uploads being processed get to finish at shutdown (the rest resume at the next start).
const MEDIA_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A started node.
pub struct Running {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Asks the node to shut down gracefully and waits until it has.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await.context("server task")?
    }

    /// A token that, when cancelled, starts the graceful shutdown.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Waits until the node has stopped (after a signal or `stop_token().cancel()`).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task")?
    }
}

/// Starts a node; returns once it is listening.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    config.validate()?;
    let metrics = metrics_setup::prometheus();
    metrics_catalogue::register_at_start(Shape {
        cluster: config.cluster.enabled(),
        postgres: config.storage.backend == StorageBackend::Postgres,
    });
    let data_dir = &config.server.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let jwt_secret = secret::load_or_create(config.auth.jwt_secret.as_deref(), data_dir)?;

    let db = Arc::new(Storage::open(&config).await?);
    let limits = config.core_limits();

    // Bound early: a cluster node announces the address it is reached at.
    let listener = bind(config.server.listen).with_context(|| format!("binding {}", config.server.listen))?;
    let addr = listener.local_addr()?;

    let stores = if config.cluster.enabled() {
        let ttl = Duration::from_secs(config.cache.l2_ttl_secs);
        let l2 = L2Cache::connect(&cluster_settings(&config, addr, &jwt_secret), ttl)
            .await
            .context("connecting the L2 cache (cluster.redis_urls)")?;
        herald_redis::cached_stores::with_l2(db.stores(), l2)
    } else {
        db.stores()
    };

    let hub = Hub::new(stores.clone(), config.hub());
    let waiters = Arc::new(Waiters::default());
    let (log, delivery, cluster): (Arc<dyn MessageLog>, Arc<dyn Delivery>, Option<Joined>) = if config.cluster.enabled()
    {
        let settings = cluster_settings(&config, addr, &jwt_secret);
        let cluster_log = match config.cluster.log {
            ClusterLogKind::Leases => ClusterLog::Leases(LogShape {
                partitions: config.log.partitions,
                queue_depth: config.log.queue_depth,
                max_batch: config.log.max_batch,
            }),
            ClusterLogKind::Kafka => ClusterLog::External(kafka_log(&config, &settings.advertise_url).await?),
        };
        let presence_topic = match config.cluster.log {
            ClusterLogKind::Kafka => kafka_presence(&config, &settings.advertise_url, &hub).await?,
            ClusterLogKind::Leases => None,
        };
        let (cluster, parts) = Cluster::start(settings, hub.clone(), waiters.clone(), cluster_log)
            .await
            .context("joining the cluster (cluster.redis_urls)")?;
        (parts.log, parts.delivery, Some(Joined { cluster, changes: parts.changes, presence_topic }))
    } else {
        let log = InProcessLog::new(config.log.partitions, config.log.queue_depth, config.log.max_batch);
        (Arc::new(log), Arc::new(LocalDelivery::new(waiters.clone(), Some(hub.clone()))), None)
    };
    let sequencer_config = SequencerConfig {
        receipt_fanout_max_members: config.gateway.receipt_fanout_max_members,
        ..SequencerConfig::default()
    };
    let sequencer = Arc::new(Sequencer::new(stores.clone(), delivery, log.partitions(), sequencer_config));
    log.start(sequencer.clone());
    let (max_pending, wait) = (config.log.max_pending_writes, Duration::from_millis(config.log.admission_wait_ms));
    let admission = match config.log.admission_target_ms {
        0 => herald_core::admission::Admission::new(max_pending, wait),
        target => {
            herald_core::admission::Admission::with_latency_target(max_pending, wait, Duration::from_millis(target))
        }
    };
    let mut submitter =
        Submitter::new(log.clone(), waiters.clone(), Duration::from_millis(config.log.apply_timeout_ms))
            .with_admission(admission);
    if let Some(joined) = &cluster
        && config.cluster.log == ClusterLogKind::Kafka
    {
        // Records are sequenced on whichever node the group gave their partition: the outcome comes back
        // on this node's channel.
        submitter = submitter.with_origin(joined.cluster.node_id());
    }
    let submitter = Arc::new(submitter);

    let auth = &config.auth;
    let passwords = Passwords::new(&PasswordCost {
        memory_kib: auth.argon2_memory_kib,
        iterations: auth.argon2_iterations,
        concurrency: auth.hash_concurrency,
    })?;
    let tokens = Tokens::new(
        &jwt_secret,
        Duration::from_secs(auth.access_token_ttl_secs),
        Duration::from_secs(auth.refresh_token_ttl_secs),
    );
    let accounts = Arc::new(Accounts::new(stores.users.clone(), passwords, tokens, Some(hub.clone())));
    let conversations = Arc::new(Conversations::new(
        stores.clone(),
        limits.clone(),
        submitter.clone(),
        Duration::from_secs(config.cache.l1_ttl_secs),
    ));
    let blocks = Blocks::new(stores.clone());
    conversations.set_blocks(blocks.clone());
    hub.set_blocks(blocks.clone());
    if let Some(joined) = &cluster {
        accounts.set_change_bus(joined.changes.clone());
        joined.cluster.add_listener(hub.clone());
        conversations.set_change_bus(joined.changes.clone());
        joined.cluster.add_listener(conversations.clone());
        blocks.set_change_bus(joined.changes.clone());
        joined.cluster.add_listener(blocks.clone());
    }
    let forward = cluster.as_ref().map(|_| {
        Arc::new(herald_api::ForwardEndpoint {
            submitter: submitter.clone(),
            token: herald_core::forward::cluster_token(&jwt_secret).into(),
        })
    });
    let messaging = Arc::new(Messaging::new(stores.clone(), conversations.clone(), submitter.clone(), limits));
    let admins = Arc::new(Admins::new(stores.users.clone(), config.auth.admins.iter().cloned()));
    let reports = Arc::new(Reports::new(stores.clone(), conversations.clone(), admins.clone()));
    let user_admin = Arc::new(UserAdmin::new(UserAdminParts {
        stores: stores.clone(),
        admins,
        accounts: accounts.clone(),
        conversations: conversations.clone(),
        submitter,
        deleted_messages: config.auth.deleted_user_messages,
    }));
    let services = Services {
        accounts,
        conversations: conversations.clone(),
        messaging: messaging.clone(),
        reports: reports.clone(),
        user_admin,
        blocks: blocks.clone(),
        search: Arc::new(herald_core::search::Search::new(stores.clone(), conversations.clone())),
    };

    let media = herald_media::Media::new(
        stores.clone(),
        conversations.clone(),
        config.media.options(data_dir),
        config.media.backends(data_dir).context("opening media storage")?,
        &media_url_key(&jwt_secret),
    )
    .context("opening the media work directory")?;
    let resumed = media.recover().await.map_err(|e| anyhow::anyhow!("resuming media uploads: {e}"))?;
    if resumed > 0 {
        tracing::info!(resumed, "media: resumed uploads interrupted by the last shutdown");
    }

    let readiness = Arc::new(Readiness::default());
    let gateway = Arc::new(Gateway::new(config.gateway()));
    // The server's admins may do what media admins do.
    let admins = Arc::new(config.media.admins.iter().chain(&config.auth.admins).cloned().collect());
    let logins = Arc::new(Logins {
        limits: LoginLimits::new(config.login_limits()),
        trusted_proxies: config.server.trusted_proxies.clone(),
    });
    let state = AppState {
        services: Arc::new(services),
        metrics,
        readiness: readiness.clone(),
        hub: hub.clone(),
        gateway: gateway.clone(),
        media: media.clone(),
        admins,
        forward,
        logins: logins.clone(),
    };
    let router = herald_api::router(state, config.server.max_body_bytes);

    let head_timeout = Duration::from_millis(config.gateway.handshake_timeout_ms);
    let stop = CancellationToken::new();
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    // Before the first request can arrive: the gauges exist from the first scrape (housekeeping's first tick
    // races with it).
    crate::disk_space::publish(&config.server.data_dir);
    let upkeep = tokio::spawn(housekeeping::run(housekeeping::Holders {
        db: db.clone(),
        hub: hub.clone(),
        sequencer,
        conversations,
        messaging,
        reports,
        blocks,
        waiters,
        media: media.clone(),
        max_in_flight: config.gateway.max_in_flight,
        data_dir: config.server.data_dir.clone(),
        logins,
    }));
    let alarms = tokio::spawn(herald_api::gateway::ring_alarms(hub.clone(), gateway.config.alarm_tick()));
    let sweeper = tokio::spawn(media.clone().run_sweeper(stop.clone().cancelled_owned()));
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            readiness.set(true);
            let http_stop = CancellationToken::new();
            let serve = tokio::spawn(herald_api::serve::serve(listener, router, head_timeout, http_stop.clone()));
            stop.cancelled().await;
            // Not ready first, so load balancers stop sending; then send WebSocket clients elsewhere
            // (each answers what it has in flight, then gets a jittered reconnect hint), then stop HTTP.
            readiness.set(false);
            if let Some(joined) = &cluster {
                // Hand the partitions to the other nodes while this one still answers what is on its way.
                joined.cluster.drain().await;
            }
            tracing::info!("shutting down: draining WebSocket connections, then in-flight requests");
            // WebSockets and HTTP share the grace period; the log and the store are closed in any case,
            // so whatever was acknowledged is on disk when the process exits.
            let deadline = tokio::time::Instant::now() + grace;
            if !gateway.drain(&hub, grace).await {
                tracing::warn!("some WebSocket connections outlived the grace period");
            }
            http_stop.cancel();
            let mut serve = serve;
            match tokio::time::timeout_at(deadline, &mut serve).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "HTTP server task failed"),
                Err(_) => {
                    // Stop waiting: requests still running fail against the closed store, and nothing they
                    // did not get an answer for was acknowledged.
                    serve.abort();
                    tracing::warn!(grace_secs = grace.as_secs(), "HTTP requests outlived the grace period");
                }
            }
            upkeep.abort();
            alarms.abort();
            let _ = sweeper.await;
            // Uploads still in the pipeline are picked up again at the next start.
            if tokio::time::timeout(MEDIA_CLOSE_TIMEOUT, media.close()).await.is_err() {
                tracing::warn!("media processing still running at shutdown; it resumes at the next start");
            }
            let closed = tokio::time::timeout(STORE_CLOSE_TIMEOUT, async {
                log.shutdown().await;
                if let Some(joined) = &cluster {
                    joined.cluster.leave().await;
                    if let Some(topic) = &joined.presence_topic {
                        topic.flush(PRESENCE_FLUSH_TIMEOUT).await;
                    }
                }
                db.close().await
            })
            .await;
            match closed {
                Ok(Ok(())) => tracing::info!("shut down cleanly"),
                Ok(Err(e)) => tracing::error!(error = %e, "closing the store failed"),
                Err(_) => tracing::error!("the log and the store did not close in time"),
            }
            Ok(())
        }
    });
    tracing::info!(%addr, "herald listening");
    Ok(Running { addr, stop, task })
}

/// The message log on Kafka: its topic made (or checked) first, then the producer; the node joins the group
/// when the log is started.
async fn kafka_log(config: &Config, client_id: &str) -> anyhow::Result<Arc<dyn MessageLog>> {
    let settings = config.cluster.kafka.settings(config.log.partitions, config.log.max_batch, client_id);
    herald_kafka::ensure_topic(&settings).await.with_context(|| {
        format!("the Kafka log's topic {} (cluster.kafka.brokers {})", settings.topic, settings.brokers)
    })?;
    let log = herald_kafka::KafkaLog::new(settings).context("the Kafka log's producer (cluster.kafka)")?;
    Ok(Arc::new(log))
}

/// The presence topic on Kafka (`cluster.kafka.presence_topic`), made if missing, receiving every presence
/// change this node announces; none when the setting is empty.
async fn kafka_presence(
    config: &Config,
    node: &str,
    hub: &Arc<Hub>,
) -> anyhow::Result<Option<Arc<herald_kafka::PresenceTopic>>> {
    let settings = config.cluster.kafka.settings(config.log.partitions, config.log.max_batch, node);
    if settings.presence_topic.is_empty() {
        return Ok(None);
    }
    herald_kafka::ensure_presence_topic(&settings)
        .await
        .with_context(|| format!("the presence topic {} (cluster.kafka.presence_topic)", settings.presence_topic))?;
    let topic = Arc::new(herald_kafka::PresenceTopic::new(&settings).context("the presence topic's producer")?);
    hub.set_presence_updates(topic.clone(), node.to_owned());
    Ok(Some(topic))
}

/// How long a node leaving waits for the presence updates still queued (the last ones: its users going).
const PRESENCE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// This node's place in a cluster.
struct Joined {
    cluster: Arc<Cluster>,
    changes: Arc<dyn herald_core::changes::ChangeBus>,
    /// Where this node publishes presence changes, with the Kafka log.
    presence_topic: Option<Arc<herald_kafka::PresenceTopic>>,
}

fn cluster_settings(config: &Config, addr: SocketAddr, jwt_secret: &[u8]) -> herald_redis::Settings {
    let c = &config.cluster;
    let advertise = if c.advertise_url.is_empty() { format!("http://{addr}") } else { c.advertise_url.clone() };
    let mut settings =
        herald_redis::Settings::new(c.redis_urls.clone(), c.redis_cluster, advertise, jwt_secret.to_vec());
    settings.key_prefix = c.key_prefix.clone();
    settings.forward_timeout = Duration::from_millis(config.log.apply_timeout_ms);
    settings
}

/// Pending connections the kernel may queue for us (it caps this at `net.core.somaxconn`). tokio's default
/// of 1,024 overflowed when 20,000 clients reconnected at once: the overflow waited for SYN retransmits (1, 3,
/// 7 … s) and the storm took 30 s instead of a few.
const LISTEN_BACKLOG: u32 = 65_535;

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The key of signed media URLs, derived from the token secret (so every node of a cluster agrees, and
/// the token secret itself never signs anything else).
fn media_url_key(jwt_secret: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"herald media url key v1\n");
    hasher.update(jwt_secret);
    hasher.finalize().to_vec()
}
