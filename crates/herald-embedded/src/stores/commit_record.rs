//! The journal record of a message commit: the messages as stored (`message_codec`) and the feed rows, in a binary
//! frame. Integers big-endian:
//!
//! `kind (1) = 1 | writes u32 | (insert u8, len u32, message)* | feed u32 | (user (16), len u8, row)*`

use crate::db::backend;
use crate::tables::Id;
use herald_core::store::StoreResult;
use herald_proto::Message;

/// The first byte of a message commit's record (other kinds of record may follow it one day).
pub const MESSAGE_COMMIT: u8 = 1;

/// A write as the record holds it: whether it inserts (else it replaces), and the stored bytes.
pub type RecordedWrite = (bool, Vec<u8>);
/// A feed row as the record holds it: the user, and the row in `feed_codec`'s layout.
pub type RecordedFeed = (Id, Vec<u8>);

pub fn encode(writes: &[(bool, Message, Vec<u8>)], feed: &[(Id, Vec<u8>)]) -> StoreResult<Vec<u8>> {
    let size =
        9 + writes.iter().map(|w| 5 + w.2.len()).sum::<usize>() + feed.iter().map(|f| 17 + f.1.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.push(MESSAGE_COMMIT);
    out.extend_from_slice(&count(writes.len())?.to_be_bytes());
    for (insert, _, bytes) in writes {
        out.push(u8::from(*insert));
        out.extend_from_slice(&count(bytes.len())?.to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(&count(feed.len())?.to_be_bytes());
    for (user, row) in feed {
        out.extend_from_slice(user);
        out.push(u8::try_from(row.len()).map_err(|_| backend("feed row too long for the journal"))?);
        out.extend_from_slice(row);
    }
    Ok(out)
}

pub fn decode(record: &[u8]) -> StoreResult<(Vec<RecordedWrite>, Vec<RecordedFeed>)> {
    let mut r = Reader(record);
    if r.take(1)? != [MESSAGE_COMMIT] {
        return Err(corrupt());
    }
    let writes = (0..r.u32()?)
        .map(|_| {
            let insert = r.take(1)?[0] == 1;
            let len = r.u32()? as usize;
            Ok((insert, r.take(len)?.to_vec()))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let feed = (0..r.u32()?)
        .map(|_| {
            let user: Id = r.take(16)?.try_into().map_err(|_| corrupt())?;
            let len = r.take(1)?[0] as usize;
            Ok((user, r.take(len)?.to_vec()))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    if !r.0.is_empty() {
        return Err(corrupt());
    }
    Ok((writes, feed))
}

fn count(n: usize) -> StoreResult<u32> {
    u32::try_from(n).map_err(|_| backend("message commit too large for the journal"))
}

fn corrupt() -> herald_core::store::StoreError {
    backend("corrupt journal record")
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> StoreResult<&'a [u8]> {
        if self.0.len() < n {
            return Err(corrupt());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> StoreResult<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().map_err(|_| corrupt())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_decodes_to_what_was_encoded_and_garbage_is_refused() {
        let message: Message = serde_json::from_value(serde_json::json!({
            "message_id": "00000000-0000-0000-0000-000000000001",
            "conversation_id": "00000000-0000-0000-0000-000000000002",
            "seq": 7,
            "sender": "00000000-0000-0000-0000-000000000003",
            "sender_device": "00000000-0000-0000-0000-000000000004",
            "client_msg_id": "c1",
            "body": "hi",
            "sent_at": 1
        }))
        .expect("record test");
        let bytes = serde_json::to_vec(&message).expect("record test");
        let writes = vec![(true, message.clone(), bytes.clone()), (false, message, b"{}".to_vec())];
        let feed = vec![([1; 16], vec![1, 2, 3]), ([2; 16], vec![])];
        let record = encode(&writes, &feed).expect("record test");
        let (decoded, decoded_feed) = decode(&record).expect("record test");
        assert_eq!(decoded, vec![(true, bytes), (false, b"{}".to_vec())]);
        assert_eq!(decoded_feed, feed);
        for cut in 0..record.len() {
            assert!(decode(&record[..cut]).is_err(), "a record cut at {cut} was accepted");
        }
        let mut longer = record.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        assert!(decode(&[2]).is_err());
    }
}
