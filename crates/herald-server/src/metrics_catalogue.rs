//! Every metric a Herald node exports, with its help text, and the series that exist from the first scrape.
//!
//! The help text is what `# HELP` shows and what `promtool check metrics` asks for. The series registered at
//! start read 0 until something happens, so alert rules and dashboards see "nothing happened" rather than
//! "no data" on a quiet node (a rate over an absent counter is empty, and an alert on it can never fire).
//! The metrics themselves are recorded where things happen, in every crate; a test below keeps this list in
//! step with them.

/// How a metric behaves, which decides its `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family: its name, kind and help text.
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

const fn family(name: &'static str, kind: Kind, help: &'static str) -> Family {
    Family { name, kind, help }
}

use Kind::{Counter, Gauge, Histogram};

/// Every metric family, grouped by the part of Herald that records it.
pub const FAMILIES: &[Family] = &[
    // The scaling brief's own metrics, under its names.
    family("websocket_connections_total", Gauge, "WebSocket connections open on this node now."),
    family("websocket_connection_duration_seconds", Histogram, "How long WebSocket connections lasted, at close."),
    family("message_processing_duration_ms", Histogram, "Time to sequence and durably store a batch of messages."),
    family(
        "message_delivery_success_total",
        Counter,
        "Message events written to a device's socket (live or catch-up).",
    ),
    family("writes_pending", Gauge, "Writes of this node's clients between the log and their answer now."),
    family(
        "writes_refused_total",
        Counter,
        "Writes refused as unavailable, by reason: overloaded (no slot within log.admission_wait_ms), standing_queue (no slot while writes take longer than log.admission_target_ms).",
    ),
    family(
        "writes_pending_limit",
        Gauge,
        "Slots for writes now: log.max_pending_writes, less what the latency target took away.",
    ),
    family("database_query_duration_ms", Histogram, "Store operation time by query type and table."),
    family("cache_hit_rate", Gauge, "Percentage of lookups a cache answered since start, by layer and cache."),
    family("storage_full_refusals_total", Counter, "Writes refused because the embedded store's disk was full."),
    family("login_attempts_refused_total", Counter, "Logins refused for too many recent failures (429)."),
    family("cache_l2_unavailable_total", Counter, "L2 cache reads that found Redis out of reach (the store answered)."),
    family("cache_l2_invalidations_failed_total", Counter, "L2 invalidations Redis did not take (retried)."),
    family(
        "cache_l2_invalidations_dropped_total",
        Counter,
        "L2 invalidations given up because too many waited (their entries live out their TTL).",
    ),
    // The gateway.
    family(
        "message_send_to_deliver_ms",
        Histogram,
        "From a message's sequencing to its frame written to a recipient's socket.",
    ),
    family(
        "websocket_resyncs_total",
        Counter,
        "Resumes answered with resync: the device's position was too old or unknown.",
    ),
    family(
        "websocket_slow_consumer_disconnects_total",
        Counter,
        "Connections closed because the client read too slowly.",
    ),
    family(
        "websocket_ephemeral_dropped_total",
        Counter,
        "Typing and presence frames dropped for a full connection queue.",
    ),
    family("websocket_handshakes_refused_total", Counter, "WebSocket handshakes refused by the handshake rate limit."),
    family("presence_announcements_total", Counter, "Presence changes announced to contacts."),
    family(
        "presence_recipients_total",
        Counter,
        "Users a presence change was announced to (divided by the announcements: the cost of one change).",
    ),
    // The process, under the standard Prometheus names (read at each scrape).
    family("process_resident_memory_bytes", Gauge, "Resident memory of the node's process, in bytes."),
    family("process_open_fds", Gauge, "File descriptors the node's process has open (sockets included)."),
    family("http_requests_total", Counter, "HTTP requests answered, by method, route template and status."),
    family("http_request_duration_ms", Histogram, "HTTP request time, by method and route template."),
    family(
        "http_accept_errors_total",
        Counter,
        "Errors accepting TCP connections (the accept loop backs off and retries).",
    ),
    // The sequencer and the stores.
    family("sequencer_stage_ms", Histogram, "Time of each stage of sequencing a batch (apply, commit, publish)."),
    family("sequencer_batch_size", Histogram, "Messages sequenced in one batch."),
    family(
        "store_errors_total",
        Counter,
        "Store failures that reached a caller: unavailable (unreachable) or backend (failed).",
    ),
    family("storage_data_dir_available_bytes", Gauge, "Bytes free for Herald on the data directory's filesystem."),
    family("storage_data_dir_size_bytes", Gauge, "Size in bytes of the data directory's filesystem."),
    family("embedded_commit_duration_ms", Histogram, "Embedded store: time of each stage of a group commit."),
    family("embedded_job_wait_ms", Histogram, "Embedded store: time a write waited for its group commit."),
    family("embedded_group_commit_jobs", Histogram, "Embedded store: writes in one group commit."),
    family("embedded_wake_ms", Histogram, "Embedded store: time to wake a writer after its commit."),
    family(
        "search_index_commit_ms",
        Histogram,
        "Embedded search index: time to index one batch of messages and commit it.",
    ),
    family(
        "search_indexed_messages_total",
        Counter,
        "Embedded search index: messages indexed (again after each edit).",
    ),
    family("embedded_feed_buffered_rows", Gauge, "Embedded store: feed rows committed but not yet in the feed table."),
    family("database_commit_batch_size", Histogram, "PostgreSQL store: messages written in one commit."),
    family(
        "database_replica_fallbacks_total",
        Counter,
        "PostgreSQL store: replica reads that fell back to the primary.",
    ),
    family(
        "database_replica_usable",
        Gauge,
        "PostgreSQL store: 1 when the read replica answers and is close enough, else 0.",
    ),
    family("database_pool_connections", Gauge, "PostgreSQL store: pooled connections by pool and state."),
    family("database_pool_waiting", Gauge, "PostgreSQL store: requests waiting for a pooled connection."),
    // Memory bounds (see docs/operations.md#memory).
    family("memory_entries", Gauge, "Entries held by an in-memory structure."),
    family("memory_bytes", Gauge, "Estimated bytes held by an in-memory structure."),
    family("memory_entries_bound", Gauge, "The most entries an in-memory structure may hold."),
    // Media.
    family("media_uploads_total", Counter, "Uploads by outcome: created, ready, rejected."),
    family("media_rejections_total", Counter, "Uploads rejected, by reason."),
    family("media_pipeline_duration_ms", Histogram, "Time from a finished upload to its media ready."),
    family("media_stage_duration_ms", Histogram, "Time of each media pipeline stage."),
    family("media_gc_uploads_removed_total", Counter, "Abandoned uploads removed by the sweeper."),
    family("media_gc_contents_removed_total", Counter, "Unreferenced media contents removed by the sweeper."),
    family("media_tier_moves_total", Counter, "Media contents moved between storage tiers."),
    family("media_takedowns_total", Counter, "Media taken down by moderators."),
    // Reports.
    family("reports_total", Counter, "Reports of messages and users filed, by reason."),
    // The cluster.
    family("cluster_nodes_live", Gauge, "Nodes this node sees live in the cluster registry (itself included)."),
    family("cluster_partitions_owned", Gauge, "Log partitions this node owns."),
    family("cluster_bus_messages_total", Counter, "Messages on the nodes' bus, by direction."),
    family(
        "cluster_forward_duration_ms",
        Histogram,
        "Time for a send forwarded to the partition's owner to come back.",
    ),
    family(
        "cluster_feed_dropped_total",
        Counter,
        "Deliveries to other nodes dropped (those clients are caught up from the feed).",
    ),
    family("cluster_ephemeral_dropped_total", Counter, "Typing and presence frames to other nodes dropped."),
    family("log_append_duration_ms", Histogram, "Kafka log: time for an append to be acknowledged by the brokers."),
    family("log_append_errors_total", Counter, "Kafka log: appends that failed."),
    family("log_records_processed_total", Counter, "Kafka log: records this node's partition owners processed."),
    family("log_commit_errors_total", Counter, "Kafka log: offset commits that failed."),
    family("log_unreadable_records_total", Counter, "Kafka log: records that could not be decoded (committed past)."),
    family("log_rebalances_total", Counter, "Kafka log: partitions assigned to or revoked from this node, by kind."),
    family("log_consumer_lag", Gauge, "Kafka log: records past the last commit, per partition this node owns."),
    family(
        "log_rejoins_total",
        Counter,
        "Kafka log: times this node left and rejoined the consumer group so that a dead node's partitions move.",
    ),
    family(
        "presence_updates_published_total",
        Counter,
        "Presence changes the brokers acknowledged on the presence topic (Kafka log).",
    ),
    family(
        "presence_updates_dropped_total",
        Counter,
        "Presence changes not published on the presence topic, by reason (queue full, broker refused).",
    ),
    family(
        "cluster_outcomes_routed_total",
        Counter,
        "Outcomes of records sequenced on one node for requests waiting on another, by direction.",
    ),
    family(
        "cluster_outcomes_dropped_total",
        Counter,
        "Outcomes for requests on other nodes not delivered to a listener (those requests end as unavailable at their timeout).",
    ),
    family("cluster_changes_unconfirmed_total", Counter, "Membership changes some nodes did not confirm in time."),
];

/// A series registered at start: a family and one set of labels.
type Series = (&'static str, Kind, &'static [(&'static str, &'static str)]);

/// On every node, from the first scrape: the brief's metrics and what the alert rules and the dashboard read.
const EVERY_NODE: &[Series] = &[
    ("websocket_connections_total", Gauge, &[]),
    ("websocket_connection_duration_seconds", Histogram, &[]),
    ("message_processing_duration_ms", Histogram, &[]),
    ("message_delivery_success_total", Counter, &[]),
    // The message write, which both stores time under this name.
    ("database_query_duration_ms", Histogram, &[("query_type", "commit_with_feed"), ("table", "messages")]),
    ("message_send_to_deliver_ms", Histogram, &[]),
    ("websocket_resyncs_total", Counter, &[]),
    ("websocket_slow_consumer_disconnects_total", Counter, &[]),
    ("websocket_ephemeral_dropped_total", Counter, &[]),
    ("websocket_handshakes_refused_total", Counter, &[]),
    ("writes_pending", Gauge, &[]),
    ("writes_refused_total", Counter, &[("reason", "overloaded")]),
    ("http_accept_errors_total", Counter, &[]),
    ("login_attempts_refused_total", Counter, &[]),
    ("store_errors_total", Counter, &[("kind", "unavailable")]),
    ("store_errors_total", Counter, &[("kind", "backend")]),
    ("media_uploads_total", Counter, &[("result", "created")]),
    ("media_uploads_total", Counter, &[("result", "ready")]),
    ("media_uploads_total", Counter, &[("result", "rejected")]),
    ("media_takedowns_total", Counter, &[]),
];

/// On cluster nodes only: on a single node these would read as a cluster of none.
const CLUSTER_NODE: &[Series] = &[
    ("cluster_bus_messages_total", Counter, &[("direction", "sent")]),
    ("cluster_bus_messages_total", Counter, &[("direction", "received")]),
    ("cluster_forward_duration_ms", Histogram, &[]),
    ("cluster_feed_dropped_total", Counter, &[]),
    ("cluster_ephemeral_dropped_total", Counter, &[]),
    ("cluster_outcomes_routed_total", Counter, &[("direction", "sent")]),
    ("cluster_outcomes_routed_total", Counter, &[("direction", "received")]),
    ("cluster_outcomes_dropped_total", Counter, &[]),
    ("cluster_changes_unconfirmed_total", Counter, &[]),
    ("cache_l2_unavailable_total", Counter, &[]),
    ("cache_l2_invalidations_failed_total", Counter, &[]),
    ("cache_l2_invalidations_dropped_total", Counter, &[]),
];

/// On nodes whose stores are in PostgreSQL.
const POSTGRES_NODE: &[Series] = &[("database_replica_fallbacks_total", Counter, &[])];

/// Gives every family its help text. Idempotent; call it once the recorder is installed.
pub fn describe() {
    for f in FAMILIES {
        match f.kind {
            Counter => metrics::describe_counter!(f.name, f.help),
            Gauge => metrics::describe_gauge!(f.name, f.help),
            Histogram => metrics::describe_histogram!(f.name, f.help),
        }
    }
}

/// What a node runs on, which decides the series it has from the start.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub cluster: bool,
    pub postgres: bool,
}

/// Registers the node's series at zero. Registering does not change a value already there, so nodes that
/// share a process (tests) do not reset each other's.
pub fn register_at_start(shape: Shape) {
    let mut all: Vec<&Series> = EVERY_NODE.iter().collect();
    if shape.cluster {
        all.extend(CLUSTER_NODE);
    }
    if shape.postgres {
        all.extend(POSTGRES_NODE);
    }
    for (name, kind, labels) in all {
        let labels: Vec<metrics::Label> = labels.iter().map(|(k, v)| metrics::Label::new(*k, *v)).collect();
        // The handles are dropped at once: the recorder keeps the series.
        match kind {
            Counter => drop(metrics::counter!(*name, labels)),
            Gauge => drop(metrics::gauge!(*name, labels)),
            Histogram => drop(metrics::histogram!(*name, labels)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Every metric recorded in the workspace's sources under a literal name (the counter, gauge and
    /// histogram macros), with its kind.
    fn recorded_in_sources() -> BTreeSet<(String, &'static str)> {
        fn walk(dir: &Path, found: &mut BTreeSet<(String, &'static str)>) {
            for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).expect("read source");
                    for kind in ["counter", "gauge", "histogram"] {
                        let call = format!("metrics::{kind}!(\"");
                        for (at, _) in text.match_indices(&call) {
                            let rest = &text[at + call.len()..];
                            let name = &rest[..rest.find('"').expect("closing quote")];
                            found.insert((name.to_owned(), kind));
                        }
                    }
                }
            }
        }
        let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = BTreeSet::new();
        for entry in std::fs::read_dir(&crates).expect("crates dir").flatten() {
            walk(&entry.path().join("src"), &mut found);
        }
        found
    }

    fn kind_name(kind: Kind) -> &'static str {
        match kind {
            Counter => "counter",
            Gauge => "gauge",
            Histogram => "histogram",
        }
    }

    #[test]
    fn every_metric_recorded_anywhere_is_in_the_catalogue_with_its_kind() {
        let recorded = recorded_in_sources();
        assert!(recorded.len() > 30, "the scan found too little: {recorded:?}");
        let catalogue: BTreeSet<(String, &str)> =
            FAMILIES.iter().map(|f| (f.name.to_owned(), kind_name(f.kind))).collect();
        let missing: Vec<_> = recorded.difference(&catalogue).collect();
        assert!(missing.is_empty(), "recorded but not in FAMILIES (or with another kind): {missing:?}");
        let stale: Vec<_> = catalogue.difference(&recorded).collect();
        assert!(stale.is_empty(), "in FAMILIES but recorded nowhere: {stale:?}");
    }

    #[test]
    fn series_registered_at_start_belong_to_families_of_their_kind() {
        for (name, kind, _) in EVERY_NODE.iter().chain(CLUSTER_NODE).chain(POSTGRES_NODE) {
            assert!(FAMILIES.iter().any(|f| f.name == *name && f.kind == *kind), "{name} is not a {kind:?} family");
        }
    }

    #[test]
    fn names_are_unique() {
        let names: BTreeSet<_> = FAMILIES.iter().map(|f| f.name).collect();
        assert_eq!(names.len(), FAMILIES.len());
    }
}
