//! The Kafka log against a real broker (tansu, a Kafka-protocol broker, started per test by
//! `herald_kafka::testing`): the topic, the producer's partitioning, and partition owners as members of one
//! consumer group: every record processed, in order per conversation, by exactly one owner, through
//! rebalances, a member leaving, and restarts of the member and of the broker.

use async_trait::async_trait;
use herald_core::log::{LogRecord, MessageLog, Op, PartitionHandler, partition_of};
use herald_kafka::producer::LogProducer;
use herald_kafka::testing::OwnBroker;
use herald_kafka::{KafkaLog, Settings, ensure_topic};
use herald_proto::{ConversationId, DeviceId, UserId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

const PARTITIONS: u32 = 4;

/// Long enough for a group to form and rebalance on a loaded two-core machine.
const WAIT: Duration = Duration::from_secs(90);

fn settings(broker: &OwnBroker, node: &str) -> Settings {
    let mut s = Settings::new(broker.brokers(), node);
    s.partitions = PARTITIONS;
    s.group_id = "herald-test".into();
    s.session_timeout = Duration::from_secs(6);
    s.max_batch = 32;
    s
}

#[derive(Clone, Debug)]
enum Event {
    Assigned(u32),
    Revoked(u32),
    Processed { partition: u32, records: Vec<LogRecord> },
}

/// Every node's handler writes into one journal, so the order across nodes is visible too.
#[derive(Clone, Default)]
struct Journal {
    events: Arc<Mutex<Vec<(String, Event)>>>,
}

impl Journal {
    fn handler(&self, node: &str) -> Arc<dyn PartitionHandler> {
        Arc::new(Owner { node: node.to_owned(), journal: self.clone() })
    }

    fn events(&self) -> Vec<(String, Event)> {
        self.events.lock().expect("journal").clone()
    }

    /// What `node` owns according to its assigned/revoked calls.
    fn owned(&self, node: &str) -> BTreeSet<u32> {
        let mut owned = BTreeSet::new();
        for (n, e) in self.events() {
            match e {
                Event::Assigned(p) if n == node => {
                    assert!(owned.insert(p), "{node} was assigned partition {p} twice without a revocation");
                }
                Event::Revoked(p) if n == node => {
                    assert!(owned.remove(&p), "{node} lost partition {p} it did not own");
                }
                _ => {}
            }
        }
        owned
    }

    /// Every processed record, in processing order, with the node and partition that processed it.
    fn processed(&self) -> Vec<(String, u32, LogRecord)> {
        self.events()
            .into_iter()
            .flat_map(|(node, e)| match e {
                Event::Processed { partition, records } => {
                    records.into_iter().map(|r| (node.clone(), partition, r)).collect::<Vec<_>>()
                }
                _ => Vec::new(),
            })
            .collect()
    }

    fn processed_ids(&self) -> BTreeSet<Uuid> {
        self.processed().iter().map(|(_, _, r)| r.request_id).collect()
    }
}

struct Owner {
    node: String,
    journal: Journal,
}

impl Owner {
    fn push(&self, e: Event) {
        self.journal.events.lock().expect("journal").push((self.node.clone(), e));
    }
}

#[async_trait]
impl PartitionHandler for Owner {
    async fn assigned(&self, partition: u32) {
        self.push(Event::Assigned(partition));
    }
    async fn revoked(&self, partition: u32) {
        self.push(Event::Revoked(partition));
    }
    async fn process(&self, partition: u32, records: Vec<LogRecord>) {
        // A little work per batch, so batches and rebalances can overlap.
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.push(Event::Processed { partition, records });
    }
}

/// `per_partition` conversations on each partition.
fn conversations(per_partition: usize) -> Vec<ConversationId> {
    let mut by_partition: BTreeMap<u32, Vec<ConversationId>> = BTreeMap::new();
    while by_partition.len() < PARTITIONS as usize || by_partition.values().any(|v| v.len() < per_partition) {
        let c = ConversationId::new();
        let list = by_partition.entry(partition_of(c, PARTITIONS)).or_default();
        if list.len() < per_partition {
            list.push(c);
        }
    }
    by_partition.into_values().flatten().collect()
}

fn record(conversation: ConversationId, n: usize) -> LogRecord {
    LogRecord {
        request_id: Uuid::now_v7(),
        origin: None,
        conversation,
        actor: UserId::new(),
        device: DeviceId::new(),
        op: Op::Send {
            client_msg_id: n.to_string(),
            body: format!("message {n}"),
            reply_to: None,
            thread_root: None,
            attachments: vec![],
        },
    }
}

/// Appends `count` records to each conversation, one conversation per task, in order within each; returns
/// their request ids.
async fn append_all(
    log: &Arc<KafkaLog>,
    conversations: &[ConversationId],
    first: usize,
    count: usize,
) -> BTreeSet<Uuid> {
    let mut tasks = Vec::new();
    for &c in conversations {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in first..first + count {
                let r = record(c, n);
                ids.push(r.request_id);
                log.append(r).await.expect("append");
            }
            ids
        }));
    }
    let mut ids = BTreeSet::new();
    for t in tasks {
        ids.extend(t.await.expect("append task"));
    }
    ids
}

async fn wait_until(what: &str, journal: &Journal, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}; journal: {:#?}", summary(journal));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The journal without the records' bodies, for failure messages.
fn summary(journal: &Journal) -> Vec<String> {
    journal
        .events()
        .into_iter()
        .map(|(n, e)| match e {
            Event::Processed { partition, records } => format!("{n} processed {partition} x{}", records.len()),
            other => format!("{n} {other:?}"),
        })
        .collect()
}

/// Each request processed exactly once, the expected ones and no others.
fn assert_each_once(journal: &Journal, expected: &BTreeSet<Uuid>) {
    let mut seen: HashMap<Uuid, usize> = HashMap::new();
    for (_, _, r) in journal.processed() {
        *seen.entry(r.request_id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "records processed more than once: {twice:?}");
    let got: BTreeSet<Uuid> = seen.into_keys().collect();
    assert_eq!(&got, expected, "processed records differ from appended ones");
}

/// Per conversation, records were processed in the order they were appended (client_msg_id counts up),
/// each on its conversation's partition.
fn assert_in_order(journal: &Journal) {
    let mut last: HashMap<ConversationId, usize> = HashMap::new();
    for (node, partition, r) in journal.processed() {
        assert_eq!(
            partition,
            partition_of(r.conversation, PARTITIONS),
            "{node} processed a record on another partition"
        );
        let Op::Send { client_msg_id, .. } = &r.op else { panic!("unexpected op") };
        let n: usize = client_msg_id.parse().expect("a number");
        if let Some(prev) = last.insert(r.conversation, n) {
            assert!(n > prev, "conversation {:?}: record {n} processed after {prev}", r.conversation);
        }
    }
}

/// Waits until `nodes` own disjoint sets of partitions that cover them all, each owning at least one.
async fn wait_split(journal: &Journal, nodes: &[&str]) {
    wait_until("the partitions are split between the members", journal, || {
        let owned: Vec<BTreeSet<u32>> = nodes.iter().map(|n| journal.owned(n)).collect();
        let total: usize = owned.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<u32> = owned.iter().flatten().copied().collect();
        owned.iter().all(|o| !o.is_empty()) && total == PARTITIONS as usize && union.len() == PARTITIONS as usize
    })
    .await;
}

async fn start(broker: &OwnBroker, journal: &Journal, node: &str) -> Arc<KafkaLog> {
    let log = Arc::new(KafkaLog::new(settings(broker, node)).expect("log"));
    log.start_member(journal.handler(node)).await.expect("member");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topic_is_created_once_and_records_go_to_their_conversations_partition() {
    let Some(broker) = OwnBroker::start().await else { return };
    let s = settings(&broker, "admin");
    assert_eq!(ensure_topic(&s).await.expect("create"), PARTITIONS);
    assert_eq!(ensure_topic(&s).await.expect("already there"), PARTITIONS, "a second call finds the topic");
    let mut other = s.clone();
    other.partitions = PARTITIONS * 2;
    let refused = ensure_topic(&other).await.expect_err("another partition count is refused");
    assert!(refused.to_string().contains("partitions"), "{refused}");

    let producer = LogProducer::new(&s).expect("producer");
    let mut last_offset: HashMap<u32, i64> = HashMap::new();
    for c in conversations(3) {
        for n in 0..5 {
            let at = producer.send(&record(c, n)).await.expect("send");
            assert_eq!(at.partition, partition_of(c, PARTITIONS));
            if let Some(prev) = last_offset.insert(at.partition, at.offset) {
                assert!(at.offset > prev, "offsets grow within a partition");
            }
        }
    }
    assert_eq!(last_offset.len(), PARTITIONS as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_the_partitions_and_process_every_record_once_in_order() {
    let Some(broker) = OwnBroker::start().await else { return };
    ensure_topic(&settings(&broker, "admin")).await.expect("topic");
    let journal = Journal::default();
    let a = start(&broker, &journal, "a").await;
    let b = start(&broker, &journal, "b").await;
    wait_split(&journal, &["a", "b"]).await;

    let convs = conversations(4);
    // Appended from both nodes: whoever appends, the partition's owner processes.
    let mut ids = append_all(&a, &convs[..8], 0, 10).await;
    ids.extend(append_all(&b, &convs[8..], 0, 10).await);
    wait_until("every record is processed", &journal, || journal.processed_ids().len() == ids.len()).await;

    assert_each_once(&journal, &ids);
    assert_in_order(&journal);
    let owners: BTreeSet<String> = journal.processed().into_iter().map(|(n, _, _)| n).collect();
    assert_eq!(owners.len(), 2, "both members processed records");
    // Each record was processed by the member owning its partition.
    let (owned_a, owned_b) = (journal.owned("a"), journal.owned("b"));
    for (node, partition, _) in journal.processed() {
        let owned = if node == "a" { &owned_a } else { &owned_b };
        assert!(owned.contains(&partition), "{node} processed partition {partition} it does not own");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_leaves_hands_its_partitions_over_without_losing_or_repeating_a_record() {
    let Some(broker) = OwnBroker::start().await else { return };
    ensure_topic(&settings(&broker, "admin")).await.expect("topic");
    let journal = Journal::default();
    let a = start(&broker, &journal, "a").await;
    let b = start(&broker, &journal, "b").await;
    wait_split(&journal, &["a", "b"]).await;
    let had_b = journal.owned("b");

    let convs = conversations(3);
    // Before the leave: b may be in the middle of a batch when it is told to stop.
    let mut ids = append_all(&a, &convs, 0, 10).await;
    // During it: appends go on while b leaves.
    let during = {
        let (a, convs) = (a.clone(), convs.clone());
        tokio::spawn(async move { append_all(&a, &convs, 10, 10).await })
    };
    b.shutdown().await;
    let b_done = journal.events().iter().filter(|(n, _)| n == "b").count();
    assert!(journal.owned("b").is_empty(), "b let go of every partition before its shutdown returned");
    ids.extend(during.await.expect("appends during the leave"));
    // After it.
    ids.extend(append_all(&a, &convs, 20, 10).await);

    wait_until("a owns every partition", &journal, || journal.owned("a").len() == PARTITIONS as usize).await;
    wait_until("every record is processed", &journal, || journal.processed_ids().len() == ids.len()).await;
    assert_each_once(&journal, &ids);
    assert_in_order(&journal);
    assert_eq!(journal.events().iter().filter(|(n, _)| n == "b").count(), b_done, "b did nothing after it left");
    // b's partitions were processed by a after the leave: the records appended after it, at least.
    let after: Vec<_> = journal.processed().into_iter().filter(|(_, p, _)| had_b.contains(p)).collect();
    assert!(after.iter().any(|(n, _, _)| n == "a"), "a took over b's partitions");
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_resumes_after_its_last_commit_even_across_a_broker_restart() {
    let Some(mut broker) = OwnBroker::start().await else { return };
    ensure_topic(&settings(&broker, "admin")).await.expect("topic");
    let convs = conversations(2);

    let first = Journal::default();
    let a = start(&broker, &first, "a").await;
    let ids_1 = append_all(&a, &convs, 0, 10).await;
    wait_until("the first records are processed", &first, || first.processed_ids().len() == ids_1.len()).await;
    a.shutdown().await;
    assert!(first.owned("a").is_empty(), "a let go of every partition");
    assert!(matches!(a.append(record(convs[0], 99)).await, Err(herald_core::log::LogError::Closed)));
    assert_each_once(&first, &ids_1);

    // Committed offsets are the broker's: they survive its restart (it stores in SQLite).
    broker.restart().await;

    let second = Journal::default();
    let a = start(&broker, &second, "a").await;
    let ids_2 = append_all(&a, &convs, 10, 10).await;
    wait_until("the new records are processed", &second, || second.processed_ids().len() == ids_2.len()).await;
    // Give a wrongly rewound member time to show it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_each_once(&second, &ids_2);
    assert_in_order(&second);
    a.shutdown().await;
}

// A member killed (SIGKILL) in the middle of a batch: the test runs a member in a child process (this test
// binary again, running only `killed_member_child`), lets it stall inside `process` so that batch is never
// committed, kills it, and checks that a member of this process takes its partitions over once the group's
// session timeout has passed and processes every record, repeating only the killed member's uncommitted batch.

const CHILD_BROKERS: &str = "HERALD_KAFKA_CHILD_BROKERS";
const CHILD_JOURNAL: &str = "HERALD_KAFKA_CHILD_JOURNAL";
/// The child stalls in the first `process` call that brings it to this many records.
const CHILD_STALLS_AT: usize = 20;

/// The child's handler: each batch is written to a file (a line "<partition> <id>,<id>..." for a batch that
/// returned, "stalled <partition> <id>,..." for the one it never returns from).
struct StallingOwner {
    journal: std::path::PathBuf,
    processed: Mutex<usize>,
}

#[async_trait]
impl PartitionHandler for StallingOwner {
    async fn assigned(&self, _: u32) {}
    async fn revoked(&self, _: u32) {}
    async fn process(&self, partition: u32, records: Vec<LogRecord>) {
        use std::io::Write;
        let total = {
            let mut processed = self.processed.lock().expect("count");
            *processed += records.len();
            *processed
        };
        let stall = total >= CHILD_STALLS_AT;
        let ids: Vec<String> = records.iter().map(|r| r.request_id.to_string()).collect();
        let line = format!("{}{partition} {}\n", if stall { "stalled " } else { "" }, ids.join(","));
        let mut file =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.journal).expect("child journal");
        file.write_all(line.as_bytes()).expect("child journal");
        file.sync_all().expect("child journal");
        if stall {
            // A node that hangs here, then dies: this batch is never committed.
            std::future::pending::<()>().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the member that a_killed_members_partitions_are_taken_over runs in a child process"]
async fn killed_member_child() {
    let (Some(brokers), Some(journal)) = (std::env::var_os(CHILD_BROKERS), std::env::var_os(CHILD_JOURNAL)) else {
        return;
    };
    let mut s = Settings::new(brokers.to_string_lossy().into_owned(), "child");
    s.partitions = PARTITIONS;
    s.group_id = "herald-test".into();
    s.session_timeout = Duration::from_secs(6);
    s.max_batch = 8;
    let log = KafkaLog::new(s).expect("log");
    let handler = Arc::new(StallingOwner { journal: journal.into(), processed: Mutex::new(0) });
    log.start_member(handler).await.expect("member");
    // Until the parent kills this process.
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_members_partitions_are_taken_over_and_only_its_uncommitted_batch_is_repeated() {
    let Some(broker) = OwnBroker::start().await else { return };
    ensure_topic(&settings(&broker, "admin")).await.expect("topic");
    let producer = Arc::new(KafkaLog::new(settings(&broker, "producer")).expect("producer"));
    let convs = conversations(2);
    let ids = append_all(&producer, &convs, 0, 10).await;

    let dir = tempfile::tempdir().expect("temp dir");
    let child_journal = dir.path().join("child.journal");
    let mut child = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args(["killed_member_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_BROKERS, broker.brokers())
        .env(CHILD_JOURNAL, &child_journal)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the child member");
    let read_child = || std::fs::read_to_string(&child_journal).unwrap_or_default();
    let deadline = Instant::now() + WAIT;
    while !read_child().contains("stalled") {
        assert!(Instant::now() < deadline, "the child member did not stall; its journal:\n{}", read_child());
        assert!(child.try_wait().expect("child").is_none(), "the child member exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().expect("kill -9 the child member");
    child.wait().expect("reap the child member");
    let killed_at = Instant::now();

    let (mut committed, mut stalled) = (BTreeSet::new(), BTreeSet::new());
    for line in read_child().lines() {
        let (set, rest) = match line.strip_prefix("stalled ") {
            Some(rest) => (&mut stalled, rest),
            None => (&mut committed, line),
        };
        let ids = rest.split_once(' ').map(|(_, ids)| ids).unwrap_or_default();
        set.extend(ids.split(',').filter(|i| !i.is_empty()).map(|i| i.parse::<Uuid>().expect("an id")));
    }
    assert!(!stalled.is_empty() && !committed.is_empty(), "the child processed batches before it stalled");

    let journal = Journal::default();
    let b = start(&broker, &journal, "b").await;
    wait_until("b owns every partition", &journal, || journal.owned("b").len() == PARTITIONS as usize).await;
    let took_over = killed_at.elapsed();
    wait_until("b processed what the child did not commit", &journal, || {
        let done = journal.processed_ids();
        ids.difference(&committed).all(|id| done.contains(id))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let by_b = journal.processed_ids();
    assert!(by_b.is_disjoint(&committed), "b repeated records whose offsets the killed member had committed");
    assert!(stalled.is_subset(&by_b), "b processed the killed member's uncommitted batch again");
    let all: BTreeSet<Uuid> = by_b.union(&committed).copied().collect();
    assert_eq!(all, ids, "every record processed");
    assert_in_order(&journal);
    eprintln!("the killed member's partitions were taken over {took_over:?} after the kill");
    assert!(took_over < Duration::from_secs(60), "taken over within the session timeout, give or take a rebalance");
    b.shutdown().await;
}

// Fencing. A partition can have two owners for a moment (a rebalance, a paused member waking up); here two
// nodes each run a member of a group of its own, so both own the one partition of the topic for the whole test
// and sequence every record, each with its own `Sequencer` and its own connections to one PostgreSQL database.
// The store's conditional write (seq = last + 1 in the transaction that stores the message, the idempotency
// key unique) lets one of them win each seq: no seq is stored twice or skipped, no send is stored twice, and
// every member's feed positions stay dense with each message in them once.

mod fencing {
    use super::*;
    use herald_core::delivery::{Applied, LocalDelivery, Waiters};
    use herald_core::sequencer::Sequencer;
    use herald_core::store::{FeedEvent, Stores, User};
    use herald_postgres::PostgresDb;
    use herald_postgres::testing::TestDatabase;
    use herald_proto::{Conversation, ConversationKind, Direction, Member, Role};

    /// Users of the conversations (each a member of all of them), conversations, sends to each.
    const FENCED_USERS: usize = 3;
    const FENCED_CONVERSATIONS: usize = 3;
    const FENCED_SENDS: usize = 40;

    struct Node {
        log: Arc<KafkaLog>,
        waiters: Arc<Waiters>,
    }

    async fn node(base: &Settings, database: &TestDatabase, name: &str) -> Node {
        let db = PostgresDb::open(&database.settings()).await.expect("open the database");
        let waiters = Arc::new(Waiters::default());
        let delivery = Arc::new(LocalDelivery::new(waiters.clone(), None));
        let sequencer = Arc::new(Sequencer::new(db.stores(), delivery, 1, Default::default()));
        let mut s = base.clone();
        s.client_id = name.into();
        s.group_id = format!("split-{name}");
        s.max_batch = 8;
        let log = Arc::new(KafkaLog::new(s).expect("log"));
        log.start_member(sequencer).await.expect("member");
        Node { log, waiters }
    }

    async fn setup(stores: &Stores) -> (Vec<UserId>, Vec<ConversationId>) {
        let now = herald_core::now_millis();
        let mut users = Vec::new();
        for _ in 0..FENCED_USERS {
            let id = UserId::new();
            let user = User {
                id,
                username: format!("fenced-{id}"),
                password_hash: "x".into(),
                created_at: now,
                suspension: None,
                deleted_at: None,
            };
            stores.users.create_user(&user).await.expect("create a user");
            users.push(id);
        }
        let members: Vec<Member> =
            users.iter().map(|&user_id| Member { user_id, role: Role::Member, joined_at: now }).collect();
        let mut conversations = Vec::new();
        for i in 0..FENCED_CONVERSATIONS {
            let c = Conversation {
                id: ConversationId::new(),
                kind: ConversationKind::Group,
                title: Some(format!("fenced {i}")),
                created_by: users[0],
                created_at: now,
            };
            stores.conversations.create_group(&c, &members).await.expect("create a group");
            conversations.push(c.id);
        }
        (users, conversations)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_owners_of_one_partition_at_once_never_store_a_seq_twice_skip_one_or_store_a_send_twice() {
        let Some(broker) = OwnBroker::start().await else { return };
        let database = TestDatabase::create().await;
        let mut base = settings(&broker, "producer");
        base.topic = "fenced".into();
        base.partitions = 1;
        ensure_topic(&base).await.expect("topic");
        let db = PostgresDb::open(&database.settings()).await.expect("open the database");
        let stores = db.stores();
        let (users, conversations) = setup(&stores).await;

        let (a, b) = (node(&base, &database, "a").await, node(&base, &database, "b").await);
        let producer = Arc::new(KafkaLog::new(base.clone()).expect("producer"));

        // Every request is awaited on both nodes; the appends of each conversation go in order, the
        // conversations concurrently, without waiting for outcomes (so the owners see batches).
        let mut records = Vec::new();
        for &c in &conversations {
            for n in 0..FENCED_SENDS {
                let mut r = record(c, n);
                r.actor = users[n % FENCED_USERS];
                records.push(r);
            }
        }
        let waits: Vec<_> =
            records.iter().map(|r| (a.waiters.register(r.request_id), b.waiters.register(r.request_id))).collect();
        let mut appends = Vec::new();
        for &c in &conversations {
            let (producer, mine) =
                (producer.clone(), records.iter().filter(|r| r.conversation == c).cloned().collect::<Vec<_>>());
            appends.push(tokio::spawn(async move {
                for r in mine {
                    producer.append(r).await.expect("append");
                }
            }));
        }
        for t in appends {
            t.await.expect("appends");
        }
        let mut outcomes = Vec::new();
        for (wa, wb) in waits {
            outcomes.push((wa.wait(WAIT).await, wb.wait(WAIT).await));
        }

        // Per record: stored once (one original answer, the other a duplicate of it, or refused), or refused by
        // both and not stored.
        let (mut both_stored, mut one_refused, mut both_refused) = (0, 0, 0);
        let mut stored_seq: HashMap<Uuid, u64> = HashMap::new();
        for (r, outcome) in records.iter().zip(&outcomes) {
            let sent = |o: &Result<Applied, _>| match o {
                Ok(Applied::Sent { message, duplicate }) => Some((message.clone(), *duplicate)),
                Ok(other) => panic!("unexpected outcome {other:?}"),
                Err(_) => None,
            };
            match (sent(&outcome.0), sent(&outcome.1)) {
                (Some((ma, da)), Some((mb, db))) => {
                    assert_eq!(ma, mb, "both nodes answer the one stored message");
                    assert!(da != db, "exactly one node stored {:?}, the other found it", r.request_id);
                    both_stored += 1;
                    stored_seq.insert(r.request_id, ma.seq);
                }
                (Some((m, dup)), None) | (None, Some((m, dup))) => {
                    assert!(!dup, "a node that found the message stored says so only if the other stored it");
                    one_refused += 1;
                    stored_seq.insert(r.request_id, m.seq);
                }
                (None, None) => both_refused += 1,
            }
        }
        eprintln!(
            "fencing: {both_stored} sequenced by both owners (one stored, one found it), {one_refused} refused \
             by one owner, {both_refused} refused by both (their senders retry)"
        );

        // The store: per conversation, seqs 1..=n, each send once, each answered seq holding its send.
        let mut stored_messages = BTreeSet::new();
        for &c in &conversations {
            let last = stores.messages.last_seq(c).await.expect("last_seq");
            let history = stores.messages.history(c, 1, Direction::Forward, 10_000).await.expect("history");
            let seqs: Vec<u64> = history.iter().map(|m| m.seq).collect();
            assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "conversation {c:?}: seqs dense, none twice");
            let keys: BTreeSet<(UserId, String)> =
                history.iter().map(|m| (m.sender, m.client_msg_id.clone())).collect();
            assert_eq!(keys.len(), history.len(), "conversation {c:?}: a send stored twice");
            for m in &history {
                stored_messages.insert((c, m.seq));
            }
        }
        for r in &records {
            let Op::Send { client_msg_id, .. } = &r.op else { unreachable!() };
            let found = stores.messages.by_client_id(r.conversation, r.actor, client_msg_id).await.expect("by id");
            assert_eq!(found.map(|m| m.seq), stored_seq.get(&r.request_id).copied(), "stored iff answered, at its seq");
        }

        // Every member's feed: positions 1..=last, each stored message in it once.
        for &user in &users {
            let page = stores.messages.feed(user, 0, 100_000).await.expect("feed");
            let positions: Vec<u64> = page.entries.iter().map(|(p, _)| *p).collect();
            assert_eq!(positions, (1..=page.last).collect::<Vec<_>>(), "user {user:?}: feed positions dense");
            let messages: Vec<(ConversationId, u64)> = page
                .entries
                .iter()
                .filter_map(|(_, e)| match e {
                    FeedEvent::Message { conversation, seq } => Some((*conversation, *seq)),
                    _ => None,
                })
                .collect();
            let unique: BTreeSet<_> = messages.iter().copied().collect();
            assert_eq!(unique.len(), messages.len(), "user {user:?}: a message twice in the feed");
            assert_eq!(unique, stored_messages, "user {user:?}: the feed has every stored message");
        }

        a.log.shutdown().await;
        b.log.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_under_appends_loses_no_acknowledged_record_and_stores_none_twice() {
    let Some(mut broker) = OwnBroker::start().await else { return };
    ensure_topic(&settings(&broker, "admin")).await.expect("topic");
    let journal = Journal::default();
    let a = start(&broker, &journal, "a").await;
    let convs = conversations(1);

    // Appends go on, one conversation per task, while the broker is killed and started again; those that
    // fail (none should, within the append timeout) are left out of what must be there.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut tasks = Vec::new();
    for &c in &convs {
        let (a, acked) = (a.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let (mut failed, mut slowest) = (0, Duration::ZERO);
            for n in 0..60 {
                let r = record(c, n);
                let id = r.request_id;
                let started = Instant::now();
                let appended = a.append(r).await;
                slowest = slowest.max(started.elapsed());
                match appended {
                    Ok(()) => {
                        acked.lock().expect("acked").insert(id);
                    }
                    Err(_) => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (failed, slowest)
        }));
    }
    while acked.lock().expect("acked").len() < 60 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broker.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.restart().await;
    let (mut failed, mut slowest) = (0, Duration::ZERO);
    for t in tasks {
        let (f, s) = t.await.expect("appends");
        failed += f;
        slowest = slowest.max(s);
    }
    let acked = acked.lock().expect("acked").clone();
    eprintln!("broker restart: {} appends acknowledged, {failed} failed, the slowest took {slowest:?}", acked.len());
    assert_eq!(failed, 0, "producers retry through a broker restart within the append timeout");
    assert!(slowest >= Duration::from_millis(400), "appends went on while the broker was down");

    wait_until("every acknowledged record is processed", &journal, || acked.is_subset(&journal.processed_ids())).await;
    assert_in_order(&journal);
    a.shutdown().await;

    // What the log holds, read from its start by a group of its own: every record once (the idempotent
    // producer's retries stored nothing twice).
    let audit = Journal::default();
    let mut s = settings(&broker, "audit");
    s.group_id = "audit".into();
    let reader = Arc::new(KafkaLog::new(s).expect("log"));
    reader.start_member(audit.handler("audit")).await.expect("member");
    wait_until("the audit read the log", &audit, || audit.processed_ids().len() >= acked.len()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_each_once(&audit, &acked);
    reader.shutdown().await;
}
