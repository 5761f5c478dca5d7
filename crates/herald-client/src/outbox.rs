//! The in-memory outbox: messages written but not yet acknowledged.
//!
//! One queue per conversation. Only the head of a queue is ever on the wire, so the server stores a
//! conversation's messages in the order they were written (the gateway runs a connection's requests
//! concurrently, so two sends in flight could be sequenced either way). Every (re)send of a message uses
//! its one `client_msg_id`, which the server deduplicates; a message leaves the outbox only when the server
//! has acknowledged it (or refused it for good).

use crate::backoff::BackoffConfig;
use crate::error::ClientError;
use herald_proto::{ClientFrame, ConversationId, DeviceId, ErrorCode, Message, SendAck};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// The answer a [`crate::PendingSend`] resolves to.
pub(crate) type SendResult = Result<SendAck, ClientError>;

/// A message waiting in the outbox.
pub(crate) struct Item {
    pub client_msg_id: String,
    pub body: String,
    pub reply_to: Option<u64>,
    /// The thread's root, for a reply in a thread.
    pub thread_root: Option<u64>,
    /// Ready uploads the message attaches (the same ones on every retry).
    pub attachments: Vec<herald_proto::MediaId>,
    pub reply: Option<oneshot::Sender<SendResult>>,
    in_flight: bool,
    /// After a transient refusal: not before this instant.
    not_before: Option<Instant>,
    /// Transient refusals so far (for the retry delay).
    retries: u32,
}

impl Item {
    pub fn new(client_msg_id: String, body: String, reply: oneshot::Sender<SendResult>) -> Self {
        Self {
            client_msg_id,
            body,
            reply_to: None,
            thread_root: None,
            attachments: Vec::new(),
            reply: Some(reply),
            in_flight: false,
            not_before: None,
            retries: 0,
        }
    }

    fn resolve(mut self, result: SendResult) {
        if let Some(reply) = self.reply.take() {
            // The application may have dropped the future: the send still happened.
            let _ = reply.send(result);
        }
    }
}

#[derive(Default)]
pub(crate) struct Outbox {
    queues: HashMap<ConversationId, VecDeque<Item>>,
    /// Which conversation an in-flight request id (the `client_msg_id`) belongs to.
    in_flight: HashMap<String, ConversationId>,
    /// Messages waiting, in flight included; shared with the client handles. Updated before a future is
    /// resolved, so whoever sees the ack also sees the message gone.
    len: Arc<AtomicUsize>,
}

impl Outbox {
    /// An outbox that keeps its length in `len`.
    pub fn new(len: Arc<AtomicUsize>) -> Self {
        Self { queues: HashMap::new(), in_flight: HashMap::new(), len }
    }

    /// Messages waiting, in flight included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn push(&mut self, conversation: ConversationId, item: Item) {
        self.queues.entry(conversation).or_default().push_back(item);
        self.len.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks queue heads in flight and returns their `send` frames: every head that is not in flight and not
    /// waiting for a retry, while fewer than `limit` are in flight.
    pub fn ready(&mut self, now: Instant, limit: usize) -> Vec<ClientFrame> {
        let mut frames = Vec::new();
        for (conversation, queue) in &mut self.queues {
            if self.in_flight.len() >= limit {
                break;
            }
            let Some(head) = queue.front_mut() else { continue };
            if head.in_flight || head.not_before.is_some_and(|t| t > now) {
                continue;
            }
            head.in_flight = true;
            head.not_before = None;
            self.in_flight.insert(head.client_msg_id.clone(), *conversation);
            frames.push(ClientFrame::Send {
                id: Some(head.client_msg_id.clone()),
                conversation_id: *conversation,
                client_msg_id: head.client_msg_id.clone(),
                body: head.body.clone(),
                reply_to: head.reply_to,
                thread_root: head.thread_root,
                attachments: head.attachments.clone(),
            });
        }
        frames
    }

    /// The earliest instant a head waiting for a retry may be sent.
    pub fn next_retry(&self) -> Option<Instant> {
        self.queues.values().filter_map(|q| q.front()).filter(|h| !h.in_flight).filter_map(|h| h.not_before).min()
    }

    /// Whether `id` is the request id of a send in flight.
    pub fn is_in_flight(&self, id: &str) -> bool {
        self.in_flight.contains_key(id)
    }

    /// The server stored the message: removes it and resolves its future. False if it was not (or no
    /// longer) in the outbox, e.g. a duplicate ack.
    pub fn acked(&mut self, ack: SendAck) -> bool {
        match self.take(ack.conversation_id, &ack.client_msg_id) {
            Some(item) => {
                item.resolve(Ok(ack));
                true
            }
            None => false,
        }
    }

    /// One of this device's messages arrived as a feed event: that also proves it stored (the ack may have
    /// been lost with a connection), so it leaves the outbox.
    pub fn seen(&mut self, message: &Message, my_device: DeviceId) {
        if message.sender_device != my_device {
            return;
        }
        let ack = SendAck {
            conversation_id: message.conversation_id,
            client_msg_id: message.client_msg_id.clone(),
            seq: message.seq,
            message_id: message.message_id,
            sent_at: message.sent_at,
            duplicate: false,
        };
        self.acked(ack);
    }

    /// The server refused the send with request id `id`. Transient refusals (unavailable, rate limited …)
    /// are retried later with the same `client_msg_id`; any other refusal is final: the message leaves
    /// the outbox and its future resolves to the error.
    pub fn refused(
        &mut self,
        id: &str,
        code: ErrorCode,
        message: String,
        retry_after_ms: Option<u64>,
        now: Instant,
        backoff: &BackoffConfig,
    ) {
        let Some(conversation) = self.in_flight.remove(id) else { return };
        let Some(queue) = self.queues.get_mut(&conversation) else { return };
        let Some(index) = queue.iter().position(|i| i.client_msg_id == id) else { return };
        let transient = matches!(
            code,
            ErrorCode::Unavailable | ErrorCode::RateLimited | ErrorCode::Timeout | ErrorCode::SlowConsumer
        );
        if transient {
            let item = &mut queue[index];
            item.in_flight = false;
            let jittered = backoff.delay(item.retries, rand::random::<f64>());
            let hinted = retry_after_ms.map(std::time::Duration::from_millis).unwrap_or_default();
            item.not_before = Some(now + jittered.max(hinted));
            item.retries = item.retries.saturating_add(1);
            tracing::debug!(client_msg_id = id, %code, "send refused for now; will retry");
        } else if let Some(item) = queue.remove(index) {
            self.len.fetch_sub(1, Ordering::Relaxed);
            if queue.is_empty() {
                self.queues.remove(&conversation);
            }
            tracing::debug!(client_msg_id = id, %code, "send refused");
            item.resolve(Err(ClientError::from_frame(code, message, retry_after_ms)));
        }
    }

    /// The connection dropped: nothing is in flight any more; everything is sent again after reconnecting.
    pub fn connection_lost(&mut self) {
        self.in_flight.clear();
        for queue in self.queues.values_mut() {
            for item in queue {
                item.in_flight = false;
            }
        }
    }

    /// Fails everything (the client is closing).
    pub fn fail_all(&mut self) {
        self.in_flight.clear();
        self.len.store(0, Ordering::Relaxed);
        for (_, queue) in self.queues.drain() {
            for item in queue {
                item.resolve(Err(ClientError::Closed));
            }
        }
    }

    fn take(&mut self, conversation: ConversationId, client_msg_id: &str) -> Option<Item> {
        let queue = self.queues.get_mut(&conversation)?;
        let index = queue.iter().position(|i| i.client_msg_id == client_msg_id)?;
        let item = queue.remove(index)?;
        if queue.is_empty() {
            self.queues.remove(&conversation);
        }
        self.in_flight.remove(client_msg_id);
        self.len.fetch_sub(1, Ordering::Relaxed);
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_proto::MessageId;

    fn item(id: &str) -> (Item, oneshot::Receiver<SendResult>) {
        let (tx, rx) = oneshot::channel();
        (Item::new(id.into(), format!("body {id}"), tx), rx)
    }

    fn ack(conversation: ConversationId, id: &str, seq: u64) -> SendAck {
        SendAck {
            conversation_id: conversation,
            client_msg_id: id.into(),
            seq,
            message_id: MessageId::new(),
            sent_at: 0,
            duplicate: false,
        }
    }

    fn ids(frames: &[ClientFrame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| match f {
                ClientFrame::Send { client_msg_id, .. } => client_msg_id.clone(),
                other => panic!("not a send: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn one_send_in_flight_per_conversation_in_order() {
        let (c, d) = (ConversationId::new(), ConversationId::new());
        let mut outbox = Outbox::default();
        let mut receivers = Vec::new();
        for id in ["c1", "c2", "c3"] {
            let (item, rx) = item(id);
            outbox.push(c, item);
            receivers.push(rx);
        }
        let (item, _rx_d) = item("d1");
        outbox.push(d, item);
        let now = Instant::now();
        let mut first = ids(&outbox.ready(now, 10));
        first.sort();
        assert_eq!(first, ["c1", "d1"]);
        assert!(outbox.ready(now, 10).is_empty(), "heads are in flight");
        assert!(outbox.acked(ack(c, "c1", 1)));
        assert!(!outbox.acked(ack(c, "c1", 1)), "a second ack is ignored");
        assert_eq!(ids(&outbox.ready(now, 10)), ["c2"]);
        // The connection drops: c2 goes out again, with the same id.
        outbox.connection_lost();
        let mut again = ids(&outbox.ready(now, 10));
        again.sort();
        assert_eq!(again, ["c2", "d1"]);
        assert_eq!(outbox.len(), 3);
        assert!(matches!(receivers[0].try_recv(), Ok(Ok(SendAck { seq: 1, .. }))));
    }

    #[test]
    fn the_in_flight_limit_holds() {
        let mut outbox = Outbox::default();
        for n in 0..5 {
            let (item, _) = item(&format!("m{n}"));
            outbox.push(ConversationId::new(), item);
        }
        assert_eq!(outbox.ready(Instant::now(), 2).len(), 2);
        assert_eq!(outbox.ready(Instant::now(), 2).len(), 0);
    }

    #[test]
    fn transient_refusals_retry_later_and_final_ones_fail() {
        let c = ConversationId::new();
        let mut outbox = Outbox::default();
        let (a, mut rx_a) = item("a");
        let (b, _rx_b) = item("b");
        outbox.push(c, a);
        outbox.push(c, b);
        let now = Instant::now();
        let backoff = BackoffConfig::default();
        assert_eq!(ids(&outbox.ready(now, 10)), ["a"]);
        outbox.refused("a", ErrorCode::RateLimited, "slow".into(), Some(500), now, &backoff);
        assert!(outbox.ready(now, 10).is_empty(), "waits for the hint");
        let retry = outbox.next_retry().expect("a retry is scheduled");
        assert!(retry >= now + std::time::Duration::from_millis(500));
        assert_eq!(ids(&outbox.ready(retry, 10)), ["a"], "same client_msg_id again");
        outbox.refused("a", ErrorCode::InvalidInput, "blank".into(), None, now, &backoff);
        match rx_a.try_recv() {
            Ok(Err(e)) => assert_eq!(e.code(), Some(ErrorCode::InvalidInput)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(ids(&outbox.ready(now, 10)), ["b"], "the next one goes");
        assert_eq!(outbox.len(), 1);
    }
}
