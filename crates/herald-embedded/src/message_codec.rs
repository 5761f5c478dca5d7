//! The stored form of a message: a binary layout for the fields every message has, and JSON for the rare ones.
//!
//! Why: a message row used to be the message's JSON, about 330 bytes for a short text (field names, and five ids
//! as 36-character strings). Under `herald bench sends` the writer's largest cost was inserting those rows (a
//! 4 KiB leaf held about eleven of them, so nearly every commit allocated and split leaves for each
//! conversation it touched), and a build that stored 110 bytes per row acked 12–15 % more sends. The same
//! message is 142 bytes here (124 and its body).
//!
//! Layout (integers big-endian):
//! `FORMAT (1) | conversation_id (16) | seq (8) | message_id (16) | sender (16) | sender_device (16) |
//! sent_at (8) | flags (1) | client_msg_id: len u16, bytes | body: len u32, bytes | rest`, where `rest` is a JSON
//! object of the fields that are usually absent (`reply_to`, `thread_root`, `thread`, `edited_at`, `reactions`,
//! `system`, `attachments`,
//! under the names the API uses), or nothing when all of them are. Rows written by earlier versions are the
//! message's JSON, which starts with `{`: [`decode`] reads both, so nothing is migrated (the journal may also
//! hold such rows from before an upgrade).

use crate::db::backend;
use herald_core::store::{StoreError, StoreResult};
use herald_proto::{
    Attachment, ConversationId, DeviceId, Message, MessageId, Millis, SystemEvent, ThreadSummary, UserId,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The first byte of a row in this layout (a JSON row starts with `{`).
const FORMAT: u8 = 1;
/// `flags`: the message is a tombstone.
const DELETED: u8 = 1;
/// The bytes of a row besides its strings and rare fields.
const FIXED: usize = 1 + 16 + 8 + 16 * 3 + 8 + 1 + 2 + 4;

type Reactions = BTreeMap<String, BTreeSet<UserId>>;

/// The rare fields, borrowed from the message being encoded.
#[derive(Serialize)]
struct RareRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thread_root: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thread: Option<&'a ThreadSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    edited_at: Option<Millis>,
    #[serde(skip_serializing_if = "no_reactions")]
    reactions: &'a Reactions,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a SystemEvent>,
    #[serde(skip_serializing_if = "no_attachments")]
    attachments: &'a [Attachment],
}

fn no_reactions(reactions: &&Reactions) -> bool {
    reactions.is_empty()
}

fn no_attachments(attachments: &&[Attachment]) -> bool {
    attachments.is_empty()
}

/// The rare fields, as read back.
#[derive(Default, Deserialize)]
struct Rare {
    #[serde(default)]
    reply_to: Option<u64>,
    #[serde(default)]
    thread_root: Option<u64>,
    #[serde(default)]
    thread: Option<ThreadSummary>,
    #[serde(default)]
    edited_at: Option<Millis>,
    #[serde(default)]
    reactions: Reactions,
    #[serde(default)]
    system: Option<SystemEvent>,
    #[serde(default)]
    attachments: Vec<Attachment>,
}

pub fn encode(message: &Message) -> StoreResult<Vec<u8>> {
    let client_msg_id = u16::try_from(message.client_msg_id.len())
        .map_err(|_| backend(format!("client_msg_id of {} bytes is too long to store", message.client_msg_id.len())))?;
    let body = u32::try_from(message.body.len()).map_err(|_| backend("message body too long to store"))?;
    let mut out = Vec::with_capacity(FIXED + message.client_msg_id.len() + message.body.len());
    out.push(FORMAT);
    out.extend_from_slice(&message.conversation_id.to_bytes());
    out.extend_from_slice(&message.seq.to_be_bytes());
    out.extend_from_slice(&message.message_id.to_bytes());
    out.extend_from_slice(&message.sender.to_bytes());
    out.extend_from_slice(&message.sender_device.to_bytes());
    out.extend_from_slice(&message.sent_at.to_be_bytes());
    out.push(if message.deleted { DELETED } else { 0 });
    out.extend_from_slice(&client_msg_id.to_be_bytes());
    out.extend_from_slice(message.client_msg_id.as_bytes());
    out.extend_from_slice(&body.to_be_bytes());
    out.extend_from_slice(message.body.as_bytes());
    let rare = RareRef {
        reply_to: message.reply_to,
        thread_root: message.thread_root,
        thread: message.thread.as_ref(),
        edited_at: message.edited_at,
        reactions: &message.reactions,
        system: message.system.as_ref(),
        attachments: &message.attachments,
    };
    let all_absent = rare.reply_to.is_none()
        && rare.thread_root.is_none()
        && rare.thread.is_none()
        && rare.edited_at.is_none()
        && rare.reactions.is_empty()
        && rare.system.is_none()
        && rare.attachments.is_empty();
    if !all_absent {
        serde_json::to_writer(&mut out, &rare).map_err(backend)?;
    }
    Ok(out)
}

pub fn decode(bytes: &[u8]) -> StoreResult<Message> {
    match bytes.first() {
        Some(&FORMAT) => decode_binary(bytes).ok_or_else(|| corrupt(bytes)),
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| backend(format!("corrupt message row: {e}"))),
        _ => Err(corrupt(bytes)),
    }
}

fn corrupt(bytes: &[u8]) -> StoreError {
    backend(format!("corrupt message row of {} bytes", bytes.len()))
}

fn decode_binary(bytes: &[u8]) -> Option<Message> {
    let mut r = Reader(bytes.get(1..)?);
    let conversation_id = ConversationId::from_bytes(r.id()?);
    let seq = u64::from_be_bytes(r.array()?);
    let message_id = MessageId::from_bytes(r.id()?);
    let sender = UserId::from_bytes(r.id()?);
    let sender_device = DeviceId::from_bytes(r.id()?);
    let sent_at = Millis::from_be_bytes(r.array()?);
    let [flags] = r.array()?;
    let client_msg_id_len = u16::from_be_bytes(r.array()?) as usize;
    let client_msg_id = r.text(client_msg_id_len)?;
    let body_len = u32::from_be_bytes(r.array()?) as usize;
    let body = r.text(body_len)?;
    let rare: Rare = if r.0.is_empty() { Rare::default() } else { serde_json::from_slice(r.0).ok()? };
    Some(Message {
        conversation_id,
        seq,
        message_id,
        sender,
        sender_device,
        client_msg_id,
        body,
        reply_to: rare.reply_to,
        thread_root: rare.thread_root,
        thread: rare.thread,
        sent_at,
        edited_at: rare.edited_at,
        deleted: flags & DELETED != 0,
        reactions: rare.reactions,
        system: rare.system,
        attachments: rare.attachments,
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn id(&mut self) -> Option<[u8; 16]> {
        self.array()
    }

    fn text(&mut self, len: usize) -> Option<String> {
        std::str::from_utf8(self.take(len)?).ok().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::conformance;

    fn plain() -> Message {
        let mut message = conformance::message(ConversationId::new(), 42, UserId::new(), DeviceId::new());
        message.client_msg_id = uuid::Uuid::now_v7().to_string();
        message.body = "bench message 1234 — with ünïcode".into();
        message
    }

    fn every_field() -> Message {
        let mut message = plain();
        message.reply_to = Some(7);
        message.thread_root = Some(3);
        message.thread = Some(ThreadSummary { replies: 2, last_seq: 41, last_reply_at: 1_800_000_000_001 });
        message.edited_at = Some(1_800_000_000_000);
        message.deleted = true;
        message.reactions.entry("👍".into()).or_default().insert(UserId::new());
        message.system = Some(SystemEvent::MemberLeft { user_id: UserId::new() });
        message.attachments = vec![Attachment {
            media_id: herald_proto::MediaId::new(),
            content_type: "image/png".into(),
            size: 3,
            filename: Some("a \"quoted\" name.png".into()),
            width: Some(1),
            height: None,
        }];
        message
    }

    /// The same message without its rare fields.
    fn plain_like(message: &Message) -> Message {
        Message {
            reply_to: None,
            thread_root: None,
            thread: None,
            edited_at: None,
            reactions: BTreeMap::new(),
            system: None,
            attachments: Vec::new(),
            ..message.clone()
        }
    }

    #[test]
    fn round_trips_every_field_and_reads_json_rows() {
        for message in [plain(), every_field()] {
            let bytes = encode(&message).expect("encodes");
            assert_eq!(decode(&bytes).expect("decodes"), message);
            // What earlier versions stored.
            let json = serde_json::to_vec(&message).expect("json");
            assert_eq!(decode(&json).expect("decodes json"), message);
        }
        let message = plain();
        let (short, json) = (encode(&message).expect("encodes"), serde_json::to_vec(&message).expect("json"));
        assert!(short.len() * 2 < json.len(), "{} bytes, as JSON {}", short.len(), json.len());
    }

    #[test]
    fn no_input_panics_the_decoder() {
        let message = every_field();
        let bytes = encode(&message).expect("encodes");
        // Where the JSON of the rare fields starts: a row cut there is a whole row without them.
        let tail = encode(&Message { deleted: true, ..plain_like(&message) }).expect("encodes").len();
        for cut in (0..bytes.len()).filter(|cut| *cut != tail) {
            assert!(decode(&bytes[..cut]).is_err(), "a row cut at {cut} was accepted");
        }
        for garbage in [&[][..], &[0], &[FORMAT], &[FORMAT; 200], &[0xff; 64], b"{not json"] {
            assert!(decode(garbage).is_err());
        }
        let mut bad_text = encode(&plain()).expect("encodes");
        let body_at = bad_text.len() - 1;
        bad_text[body_at] = 0xff;
        assert!(decode(&bad_text).is_err(), "a body that is not UTF-8 is refused");
    }

    #[test]
    fn a_client_msg_id_too_long_to_store_is_refused() {
        let mut message = plain();
        message.client_msg_id = "x".repeat(70_000);
        assert!(encode(&message).is_err());
    }
}
