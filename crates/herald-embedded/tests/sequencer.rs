//! Property tests of ordering and deduplication through the real single-node write path: requests wait on
//! `Waiters`, records go through the in-process partitioned log to the `Sequencer`, which commits to the
//! embedded store and resolves the waiters through `LocalDelivery`.
//!
//! For random sends over a few conversations, with random (often repeated) idempotency keys, appended
//! concurrently in one or more rounds (optionally restarting the log and the sequencer between rounds, as a
//! new partition owner would), every conversation's distinct `(sender, client_msg_id)` pairs get exactly the
//! seqs `1..=n`, every repeat is answered with the first one's message and `duplicate: true`, and the stored
//! history is exactly that.

use herald_core::delivery::{Applied, LocalDelivery, Waiters};
use herald_core::log::{LogRecord, MessageLog, Op};
use herald_core::sequencer::Sequencer;
use herald_core::store::Stores;
use herald_embedded::{EmbeddedDb, InProcessLog};
use herald_proto::{ConversationId, DeviceId, Direction, Message, UserId};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const CONVERSATIONS: usize = 3;
const SENDERS: usize = 2;
const KEYS: u8 = 8;
const MAX_ROUNDS: usize = 3;
const WAIT: Duration = Duration::from_secs(20);

/// One send: into which conversation, by which sender, with which idempotency key, in which round.
#[derive(Clone, Debug)]
struct SendOp {
    conversation: usize,
    sender: usize,
    key: u8,
    round: usize,
}

#[derive(Clone, Debug)]
struct Scenario {
    partitions: u32,
    /// Shut the log and the sequencer down between rounds and start new ones on the same store.
    restart_between_rounds: bool,
    sends: Vec<SendOp>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let send = (0..CONVERSATIONS, 0..SENDERS, 0..KEYS, 0..MAX_ROUNDS)
        .prop_map(|(conversation, sender, key, round)| SendOp { conversation, sender, key, round });
    (1u32..=4, any::<bool>(), prop::collection::vec(send, 1..48))
        .prop_map(|(partitions, restart_between_rounds, sends)| Scenario { partitions, restart_between_rounds, sends })
}

/// The log, the sequencer behind it and the waiters its delivery resolves.
struct Pipeline {
    log: Arc<InProcessLog>,
    waiters: Arc<Waiters>,
}

impl Pipeline {
    fn start(stores: &Stores, partitions: u32) -> Self {
        let waiters = Arc::new(Waiters::default());
        let delivery = Arc::new(LocalDelivery::new(waiters.clone(), None));
        let sequencer = Arc::new(Sequencer::new(stores.clone(), delivery, partitions, Default::default()));
        let log = Arc::new(InProcessLog::new(partitions, 1024, 256));
        log.start(sequencer);
        Self { log, waiters }
    }

    /// Appends every record concurrently, each request registered before its append, and waits for all.
    async fn send_all(&self, records: Vec<(usize, LogRecord)>) -> Vec<(usize, Message, bool)> {
        let mut tasks = Vec::with_capacity(records.len());
        for (index, record) in records {
            let (log, waiters) = (self.log.clone(), self.waiters.clone());
            tasks.push(tokio::spawn(async move {
                let wait = waiters.register(record.request_id);
                log.append(record).await.expect("the log accepts the record");
                (index, wait.wait(WAIT).await)
            }));
        }
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            let (index, outcome) = task.await.expect("a sending task panicked");
            match outcome {
                Ok(Applied::Sent { message, duplicate }) => out.push((index, message, duplicate)),
                other => panic!("send #{index}: expected Applied::Sent, got {other:?}"),
            }
        }
        out
    }
}

fn client_msg_id(key: u8) -> String {
    format!("key-{key}")
}

fn body(index: usize) -> String {
    format!("send #{index}")
}

async fn check(scenario: Scenario) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = EmbeddedDb::open(dir.path()).expect("open the embedded database");
    let stores = db.stores();
    let conversations: Vec<ConversationId> = (0..CONVERSATIONS).map(|_| ConversationId::new()).collect();
    let senders: Vec<(UserId, DeviceId)> = (0..SENDERS).map(|_| (UserId::new(), DeviceId::new())).collect();

    // Send, round by round; every round's sends race each other.
    let mut answers: Vec<Option<(Message, bool)>> = vec![None; scenario.sends.len()];
    let mut pipeline = Pipeline::start(&stores, scenario.partitions);
    for round in 0..MAX_ROUNDS {
        let records: Vec<(usize, LogRecord)> = scenario
            .sends
            .iter()
            .enumerate()
            .filter(|(_, send)| send.round == round)
            .map(|(index, send)| {
                let (actor, device) = senders[send.sender];
                let record = LogRecord {
                    request_id: Uuid::now_v7(),
                    origin: None,
                    conversation: conversations[send.conversation],
                    actor,
                    device,
                    op: Op::Send {
                        client_msg_id: client_msg_id(send.key),
                        body: body(index),
                        reply_to: None,
                        thread_root: None,
                        attachments: Vec::new(),
                    },
                };
                (index, record)
            })
            .collect();
        if records.is_empty() {
            continue;
        }
        for (index, message, duplicate) in pipeline.send_all(records).await {
            answers[index] = Some((message, duplicate));
        }
        if scenario.restart_between_rounds {
            pipeline.log.shutdown().await;
            pipeline = Pipeline::start(&stores, scenario.partitions);
        }
    }
    pipeline.log.shutdown().await;
    assert!(pipeline.waiters.is_empty(), "every waiter was resolved and removed");

    // Group the answers by idempotency key.
    type Key = (usize, usize, u8);
    let mut by_key: BTreeMap<Key, Vec<(usize, Message, bool)>> = BTreeMap::new();
    for (index, (send, answer)) in scenario.sends.iter().zip(answers).enumerate() {
        let (message, duplicate) = answer.expect("every send was answered");
        let (sender, device) = senders[send.sender];
        assert_eq!(message.conversation_id, conversations[send.conversation], "send #{index}: wrong conversation");
        assert_eq!(message.sender, sender, "send #{index}: wrong sender");
        assert_eq!(message.client_msg_id, client_msg_id(send.key), "send #{index}: wrong client_msg_id");
        assert_eq!(message.sender_device, device, "send #{index}: wrong device");
        by_key.entry((send.conversation, send.sender, send.key)).or_default().push((index, message, duplicate));
    }

    // Each key was stored once: one first answer, every repeat a duplicate of exactly that message.
    let mut first_of: BTreeMap<Key, Message> = BTreeMap::new();
    for (key, answers) in &by_key {
        let originals: Vec<usize> = answers.iter().filter(|(_, _, dup)| !dup).map(|(i, _, _)| *i).collect();
        assert_eq!(originals.len(), 1, "key {key:?}: exactly one send must be the original, got sends {originals:?}");
        let original = originals[0];
        let first_round = answers.iter().map(|(i, _, _)| scenario.sends[*i].round).min().expect("non-empty");
        assert_eq!(
            scenario.sends[original].round, first_round,
            "key {key:?}: the original must be in the first round that used the key"
        );
        let (_, message, _) = answers.iter().find(|(i, _, _)| *i == original).expect("the original is answered");
        assert_eq!(message.body, body(original), "key {key:?}: the stored body must be the original send's");
        for (index, repeat, duplicate) in answers {
            assert_eq!(
                (repeat.seq, repeat.message_id),
                (message.seq, message.message_id),
                "key {key:?}: send #{index} (duplicate: {duplicate}) got another seq or message_id than the original"
            );
            assert_eq!(repeat, message, "key {key:?}: send #{index} was answered with another message");
        }
        first_of.insert(*key, message.clone());
    }

    // Per conversation: dense seqs 1..=n over the distinct keys, later rounds after earlier ones, and the
    // store holds exactly those messages.
    for (c, conversation) in conversations.iter().enumerate() {
        let mut expected: Vec<(u64, usize, Message)> = first_of
            .iter()
            .filter(|(key, _)| key.0 == c)
            .map(|(key, message)| {
                let round = by_key[key].iter().map(|(i, _, _)| scenario.sends[*i].round).min().expect("non-empty");
                (message.seq, round, message.clone())
            })
            .collect();
        expected.sort_by_key(|(seq, _, _)| *seq);
        let n = expected.len() as u64;
        let got: Vec<u64> = expected.iter().map(|(seq, _, _)| *seq).collect();
        assert_eq!(got, (1..=n).collect::<Vec<_>>(), "conversation {c}: seqs must be exactly 1..={n}");
        assert!(
            expected.windows(2).all(|w| w[0].1 <= w[1].1),
            "conversation {c}: a key first sent in a later round got a lower seq than one of an earlier round"
        );
        let messages: Vec<Message> = expected.into_iter().map(|(_, _, m)| m).collect();
        assert_eq!(stores.messages.last_seq(*conversation).await.expect("last_seq"), n, "conversation {c}: last_seq");
        let history = stores.messages.history(*conversation, 1, Direction::Forward, 10_000).await.expect("history");
        assert_eq!(history, messages, "conversation {c}: the stored history must be exactly the acknowledged sends");
        for message in &messages {
            let found = stores
                .messages
                .by_client_id(*conversation, message.sender, &message.client_msg_id)
                .await
                .expect("by_client_id");
            assert_eq!(found.as_ref(), Some(message), "conversation {c}: by_client_id of seq {}", message.seq);
        }
    }
}

fn run(scenario: Scenario) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime");
    runtime.block_on(check(scenario));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 16,
        // Failures print the minimal scenario; no regression file is written next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn sends_are_dense_ordered_and_deduplicated(scenario in scenario()) {
        run(scenario);
    }
}

/// A heavier fixed load: hundreds of racing sends, about a third of them retries, so batches are large and
/// retries land both in the same batch as their original and in later ones.
#[test]
fn many_racing_sends_are_dense_and_deduplicated() {
    let sends = (0..600usize)
        .map(|i| SendOp {
            conversation: (i * 7) % CONVERSATIONS,
            sender: (i / 3) % SENDERS,
            key: ((i * 13) % 97 % usize::from(KEYS * 4)) as u8,
            round: (i * 5) % MAX_ROUNDS,
        })
        .collect();
    run(Scenario { partitions: 2, restart_between_rounds: false, sends });
}
