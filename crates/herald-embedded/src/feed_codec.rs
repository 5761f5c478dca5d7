//! The feed row format: a fixed binary layout instead of JSON, because a group message writes one row per
//! member and the bytes of every row are rewritten into the B-tree's pages at each commit.
//!
//! `kind (1) | conversation (16) | seq (8)` for messages and updates, and
//! `kind (1) | conversation (16) | user (16) | delivered (8) | read (8)` for receipts; integers big-endian.

use crate::db::backend;
use herald_core::store::{FeedEvent, StoreResult};
use herald_proto::{ConversationId, UserId};

const MESSAGE: u8 = 1;
const MESSAGE_UPDATED: u8 = 2;
const RECEIPT: u8 = 3;

pub fn encode(event: &FeedEvent) -> Vec<u8> {
    let mut out = Vec::with_capacity(49);
    match event {
        FeedEvent::Message { conversation, seq } | FeedEvent::MessageUpdated { conversation, seq } => {
            out.push(if matches!(event, FeedEvent::Message { .. }) { MESSAGE } else { MESSAGE_UPDATED });
            out.extend_from_slice(&conversation.to_bytes());
            out.extend_from_slice(&seq.to_be_bytes());
        }
        FeedEvent::Receipt { conversation, user, delivered, read } => {
            out.push(RECEIPT);
            out.extend_from_slice(&conversation.to_bytes());
            out.extend_from_slice(&user.to_bytes());
            out.extend_from_slice(&delivered.to_be_bytes());
            out.extend_from_slice(&read.to_be_bytes());
        }
    }
    out
}

pub fn decode(bytes: &[u8]) -> StoreResult<FeedEvent> {
    let corrupt = || backend(format!("corrupt feed row of {} bytes", bytes.len()));
    let id = |at: usize| -> StoreResult<[u8; 16]> {
        bytes.get(at..at + 16).and_then(|b| b.try_into().ok()).ok_or_else(corrupt)
    };
    let int = |at: usize| -> StoreResult<u64> {
        bytes.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes).ok_or_else(corrupt)
    };
    let conversation = ConversationId::from_bytes(id(1)?);
    match bytes.first() {
        Some(&MESSAGE) => Ok(FeedEvent::Message { conversation, seq: int(17)? }),
        Some(&MESSAGE_UPDATED) => Ok(FeedEvent::MessageUpdated { conversation, seq: int(17)? }),
        Some(&RECEIPT) => Ok(FeedEvent::Receipt {
            conversation,
            user: UserId::from_bytes(id(17)?),
            delivered: int(33)?,
            read: int(41)?,
        }),
        _ => Err(corrupt()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let c = ConversationId::new();
        for event in [
            FeedEvent::Message { conversation: c, seq: 7 },
            FeedEvent::MessageUpdated { conversation: c, seq: u64::MAX },
            FeedEvent::Receipt { conversation: c, user: UserId::new(), delivered: 9, read: 3 },
        ] {
            assert_eq!(decode(&encode(&event)).expect("decodes"), event);
        }
        assert!(decode(&[]).is_err());
        assert!(decode(&[1, 2, 3]).is_err());
        assert!(decode(&[9; 25]).is_err());
    }
}
