use super::{decode, encode};
use crate::db::{EmbeddedDb, backend};
use crate::tables::{
    BLOCKLIST, CONTENT_ACCESS, CONTENTS, Id, MAX_ID, MEDIA, MEDIA_BY_HASH, MEDIA_REFS, MEDIA_UNATTACHED,
    MEDIA_UNFINISHED, MEDIA_USAGE, MIN_ID, TAKEDOWNS,
};
use async_trait::async_trait;
use herald_core::now_millis;
use herald_core::store::{
    BlockedHash, Completed, ContentRecord, MediaRecord, MediaStore, StoreError, StoreResult, TakenDown, Tier,
};
use herald_proto::{ConversationId, MediaId, MediaState, Millis, RejectReason, UserId};
use redb::{ReadableTable, Table, WriteTransaction};
use serde::{Deserialize, Serialize};

/// What `TAKEDOWNS` holds for a hash.
#[derive(Serialize, Deserialize)]
struct TakedownRecord {
    #[serde(default)]
    note: Option<String>,
    at: Millis,
}

fn tier_key(tier: Tier) -> u8 {
    match tier {
        Tier::Hot => 0,
        Tier::Cold => 1,
    }
}

fn get_media(table: &impl ReadableTable<Id, &'static [u8]>, id: Id) -> StoreResult<Option<MediaRecord>> {
    table.get(id).map_err(backend)?.map(|v| decode(v.value())).transpose()
}

fn get_content(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    hash: &str,
) -> StoreResult<Option<ContentRecord>> {
    table.get(hash).map_err(backend)?.map(|v| decode(v.value())).transpose()
}

/// Whether any message attaches the upload.
fn attached(refs: &impl ReadableTable<(Id, Id, u64), ()>, media: Id) -> StoreResult<bool> {
    Ok(refs
        .range((media, MIN_ID, 0)..=(media, MAX_ID, u64::MAX))
        .map_err(backend)?
        .next()
        .transpose()
        .map_err(backend)?
        .is_some())
}

/// Adds `add` to and takes `sub` from the user's usage (never below zero: a usage that would go negative
/// is a bookkeeping bug elsewhere, and zero is the least wrong answer).
fn adjust_usage(table: &mut Table<'_, Id, u64>, user: Id, add: u64, sub: u64) -> StoreResult<()> {
    let current = table.get(user).map_err(backend)?.map_or(0, |v| v.value());
    let next = current.saturating_add(add).saturating_sub(sub);
    if next == 0 {
        table.remove(user).map_err(backend)?;
    } else {
        table.insert(user, next).map_err(backend)?;
    }
    Ok(())
}

/// The bytes an upload counts against its owner's quota: the declared size until it is ready, the stored
/// content's size once it is, nothing once rejected.
fn charged(record: &MediaRecord, content: Option<&ContentRecord>) -> u64 {
    match record.state {
        MediaState::Rejected => 0,
        // A ready upload whose content row is missing is already inconsistent; releasing the declared size
        // is the closest to what was charged.
        MediaState::Ready => content.map_or(record.declared_size, |c| c.size),
        MediaState::Pending | MediaState::Scanning | MediaState::Processing => record.declared_size,
    }
}

/// Writes a content row and its access-index entry, replacing the entry of `previous` (the row as stored
/// before, if any).
fn put_content(txn: &WriteTransaction, content: &ContentRecord, previous: Option<&ContentRecord>) -> StoreResult<()> {
    let mut access = txn.open_table(CONTENT_ACCESS).map_err(backend)?;
    if let Some(p) = previous {
        access.remove((tier_key(p.tier), p.last_access, p.hash.as_str())).map_err(backend)?;
    }
    access.insert((tier_key(content.tier), content.last_access, content.hash.as_str()), ()).map_err(backend)?;
    let bytes = encode(content)?;
    txn.open_table(CONTENTS).map_err(backend)?.insert(content.hash.as_str(), bytes.as_slice()).map_err(backend)?;
    Ok(())
}

/// Removes a content row and its access-index entry.
fn delete_content(txn: &WriteTransaction, content: &ContentRecord) -> StoreResult<()> {
    txn.open_table(CONTENT_ACCESS)
        .map_err(backend)?
        .remove((tier_key(content.tier), content.last_access, content.hash.as_str()))
        .map_err(backend)?;
    txn.open_table(CONTENTS).map_err(backend)?.remove(content.hash.as_str()).map_err(backend)?;
    Ok(())
}

fn put_media(txn: &WriteTransaction, record: &MediaRecord) -> StoreResult<()> {
    let bytes = encode(record)?;
    txn.open_table(MEDIA).map_err(backend)?.insert(record.id.to_bytes(), bytes.as_slice()).map_err(backend)?;
    Ok(())
}

/// Applies the attachment changes of a message commit, in its transaction: `(media, conversation, seq)`
/// rows to drop and to add. Keeps `MEDIA_UNATTACHED` exact: an upload leaves it with its first reference
/// and comes back with the loss of its last. A reference to an upload that does not exist (any more) is
/// still written: the message is what it is, and `attached_in` answers truthfully.
pub(crate) fn apply_refs(
    txn: &WriteTransaction,
    added: &[(Id, Id, u64)],
    dropped: &[(Id, Id, u64)],
) -> StoreResult<()> {
    if added.is_empty() && dropped.is_empty() {
        return Ok(());
    }
    let mut refs = txn.open_table(MEDIA_REFS).map_err(backend)?;
    let media = txn.open_table(MEDIA).map_err(backend)?;
    let mut unattached = txn.open_table(MEDIA_UNATTACHED).map_err(backend)?;
    for &(m, c, seq) in dropped {
        let removed = refs.remove((m, c, seq)).map_err(backend)?.is_some();
        if removed
            && !attached(&refs, m)?
            && let Some(record) = get_media(&media, m)?
        {
            unattached.insert((record.created_at, m), ()).map_err(backend)?;
        }
    }
    for &(m, c, seq) in added {
        let was_attached = attached(&refs, m)?;
        refs.insert((m, c, seq), ()).map_err(backend)?;
        if !was_attached && let Some(record) = get_media(&media, m)? {
            unattached.remove((record.created_at, m)).map_err(backend)?;
        }
    }
    Ok(())
}

#[async_trait]
impl MediaStore for EmbeddedDb {
    async fn create_upload(&self, media: &MediaRecord, quota: u64) -> StoreResult<()> {
        let media = media.clone();
        let bytes = encode(&media)?;
        let cost = charged(&media, None);
        self.write("insert", "media", true, move |txn| {
            let (id, owner) = (media.id.to_bytes(), media.owner.to_bytes());
            let mut records = txn.open_table(MEDIA).map_err(backend)?;
            let mut usage = txn.open_table(MEDIA_USAGE).map_err(backend)?;
            if records.get(id).map_err(backend)?.is_some() {
                return Err(StoreError::Conflict(format!("upload {} exists", media.id)));
            }
            let used = usage.get(owner).map_err(backend)?.map_or(0, |v| v.value());
            if used.checked_add(cost).is_none_or(|total| total > quota) {
                return Err(StoreError::LimitExceeded(format!(
                    "{cost} bytes more would pass the quota of {quota} bytes ({used} used)"
                )));
            }
            records.insert(id, bytes.as_slice()).map_err(backend)?;
            adjust_usage(&mut usage, owner, cost, 0)?;
            if !media.state.is_final() {
                txn.open_table(MEDIA_UNFINISHED).map_err(backend)?.insert(id, ()).map_err(backend)?;
            }
            txn.open_table(MEDIA_UNATTACHED).map_err(backend)?.insert((media.created_at, id), ()).map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn media(&self, id: MediaId) -> StoreResult<Option<MediaRecord>> {
        self.read("select", "media", |txn| get_media(&txn.open_table(MEDIA).map_err(backend)?, id.to_bytes()))
    }

    async fn set_progress(&self, id: MediaId, state: MediaState, content_type: Option<&str>) -> StoreResult<bool> {
        // Checked here, not in the shared transaction, where an error would abort everyone's writes.
        if state.is_final() {
            return Err(backend(format!("set_progress to the final state {state:?}; use complete or reject")));
        }
        let content_type = content_type.map(str::to_owned);
        self.write("update", "media", true, move |txn| {
            let Some(mut record) = get_media(&txn.open_table(MEDIA).map_err(backend)?, id.to_bytes())? else {
                return Ok(false);
            };
            if record.state.is_final() {
                return Ok(false);
            }
            record.state = state;
            if content_type.is_some() {
                record.content_type = content_type;
            }
            record.updated_at = now_millis();
            put_media(txn, &record)?;
            Ok(true)
        })
        .await
    }

    async fn complete(&self, id: MediaId, content: &ContentRecord) -> StoreResult<Completed> {
        let content = content.clone();
        self.write("update", "media", true, move |txn| {
            let hash = content.hash.as_str();
            // Every check first: a refusal must leave the shared transaction untouched.
            let record = get_media(&txn.open_table(MEDIA).map_err(backend)?, id.to_bytes())?;
            let Some(mut record) = record.filter(|r| !r.state.is_final()) else {
                return Err(StoreError::Conflict(format!("upload {id} is already final or gone")));
            };
            if txn.open_table(TAKEDOWNS).map_err(backend)?.get(hash).map_err(backend)?.is_some() {
                return Err(StoreError::Conflict("the content was taken down".into()));
            }
            let existing = get_content(&txn.open_table(CONTENTS).map_err(backend)?, hash)?;
            let existed = existing.is_some();
            let stored = match &existing {
                Some(found) => ContentRecord { refs: found.refs + 1, ..found.clone() },
                None => ContentRecord { refs: 1, ..content.clone() },
            };
            put_content(txn, &stored, existing.as_ref())?;
            adjust_usage(
                &mut txn.open_table(MEDIA_USAGE).map_err(backend)?,
                record.owner.to_bytes(),
                stored.size,
                record.declared_size,
            )?;
            record.state = MediaState::Ready;
            record.content_hash = Some(stored.hash.clone());
            record.content_type = Some(stored.content_type.clone());
            record.updated_at = now_millis();
            put_media(txn, &record)?;
            txn.open_table(MEDIA_UNFINISHED).map_err(backend)?.remove(id.to_bytes()).map_err(backend)?;
            txn.open_table(MEDIA_BY_HASH).map_err(backend)?.insert((hash, id.to_bytes()), ()).map_err(backend)?;
            Ok(Completed { content: stored, existed })
        })
        .await
    }

    async fn reject(&self, id: MediaId, reason: RejectReason, detail: Option<&str>) -> StoreResult<bool> {
        let detail = detail.map(str::to_owned);
        self.write("update", "media", true, move |txn| {
            let Some(mut record) = get_media(&txn.open_table(MEDIA).map_err(backend)?, id.to_bytes())? else {
                return Ok(false);
            };
            if record.state.is_final() {
                return Ok(false);
            }
            let released = charged(&record, None);
            adjust_usage(&mut txn.open_table(MEDIA_USAGE).map_err(backend)?, record.owner.to_bytes(), 0, released)?;
            record.state = MediaState::Rejected;
            record.reason = Some(reason);
            record.detail = detail;
            record.updated_at = now_millis();
            put_media(txn, &record)?;
            txn.open_table(MEDIA_UNFINISHED).map_err(backend)?.remove(id.to_bytes()).map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn content(&self, hash: &str) -> StoreResult<Option<ContentRecord>> {
        self.read("select", "contents", |txn| get_content(&txn.open_table(CONTENTS).map_err(backend)?, hash))
    }

    async fn attached_in(&self, id: MediaId) -> StoreResult<Vec<ConversationId>> {
        self.read("range", "media_refs", |txn| {
            let refs = txn.open_table(MEDIA_REFS).map_err(backend)?;
            let m = id.to_bytes();
            let mut out: Vec<ConversationId> = Vec::new();
            // Rows are ordered by conversation, so one conversation's messages are adjacent.
            for entry in refs.range((m, MIN_ID, 0)..=(m, MAX_ID, u64::MAX)).map_err(backend)? {
                let conversation = ConversationId::from_bytes(entry.map_err(backend)?.0.value().1);
                if out.last() != Some(&conversation) {
                    out.push(conversation);
                }
            }
            Ok(out)
        })
    }

    async fn unreferenced(&self, created_before: Millis, limit: usize) -> StoreResult<Vec<MediaRecord>> {
        self.read("range", "media_unattached", |txn| {
            let index = txn.open_table(MEDIA_UNATTACHED).map_err(backend)?;
            let records = txn.open_table(MEDIA).map_err(backend)?;
            let mut out = Vec::new();
            for entry in index.range((i64::MIN, MIN_ID)..(created_before, MIN_ID)).map_err(backend)?.take(limit) {
                if let Some(record) = get_media(&records, entry.map_err(backend)?.0.value().1)? {
                    out.push(record);
                }
            }
            Ok(out)
        })
    }

    async fn remove(&self, id: MediaId) -> StoreResult<Option<ContentRecord>> {
        self.write("delete", "media", true, move |txn| {
            let m = id.to_bytes();
            let Some(record) = get_media(&txn.open_table(MEDIA).map_err(backend)?, m)? else {
                return Ok(None);
            };
            if attached(&txn.open_table(MEDIA_REFS).map_err(backend)?, m)? {
                return Err(StoreError::Conflict(format!("upload {id} is attached to a message")));
            }
            let content = match (&record.state, &record.content_hash) {
                (MediaState::Ready, Some(hash)) => get_content(&txn.open_table(CONTENTS).map_err(backend)?, hash)?,
                _ => None,
            };
            let released = charged(&record, content.as_ref());
            adjust_usage(&mut txn.open_table(MEDIA_USAGE).map_err(backend)?, record.owner.to_bytes(), 0, released)?;
            txn.open_table(MEDIA).map_err(backend)?.remove(m).map_err(backend)?;
            txn.open_table(MEDIA_UNFINISHED).map_err(backend)?.remove(m).map_err(backend)?;
            txn.open_table(MEDIA_UNATTACHED).map_err(backend)?.remove((record.created_at, m)).map_err(backend)?;
            let Some(content) = content else { return Ok(None) };
            txn.open_table(MEDIA_BY_HASH).map_err(backend)?.remove((content.hash.as_str(), m)).map_err(backend)?;
            if content.refs > 1 {
                put_content(txn, &ContentRecord { refs: content.refs - 1, ..content.clone() }, Some(&content))?;
                return Ok(None);
            }
            delete_content(txn, &content)?;
            Ok(Some(ContentRecord { refs: 0, ..content }))
        })
        .await
    }

    async fn unfinished(&self) -> StoreResult<Vec<MediaRecord>> {
        self.read("range", "media_unfinished", |txn| {
            let index = txn.open_table(MEDIA_UNFINISHED).map_err(backend)?;
            let records = txn.open_table(MEDIA).map_err(backend)?;
            let mut out = Vec::new();
            for entry in index.iter().map_err(backend)? {
                if let Some(record) = get_media(&records, entry.map_err(backend)?.0.value())? {
                    out.push(record);
                }
            }
            Ok(out)
        })
    }

    async fn take_down(&self, hash: &str, note: Option<&str>, at: Millis) -> StoreResult<TakenDown> {
        let hash = hash.to_owned();
        let note = note.map(str::to_owned);
        self.write("update", "takedowns", true, move |txn| {
            let h = hash.as_str();
            {
                let mut takedowns = txn.open_table(TAKEDOWNS).map_err(backend)?;
                // The first takedown's record stays; a repeat changes nothing.
                if takedowns.get(h).map_err(backend)?.is_none() {
                    let record = encode(&TakedownRecord { note: note.clone(), at })?;
                    takedowns.insert(h, record.as_slice()).map_err(backend)?;
                }
            }
            let content = get_content(&txn.open_table(CONTENTS).map_err(backend)?, h)?;
            let ids: Vec<Id> = {
                let by_hash = txn.open_table(MEDIA_BY_HASH).map_err(backend)?;
                let rows = by_hash.range((h, MIN_ID)..=(h, MAX_ID)).map_err(backend)?;
                rows.map(|row| row.map(|(k, _)| k.value().1).map_err(backend)).collect::<StoreResult<_>>()?
            };
            let mut uploads = Vec::with_capacity(ids.len());
            {
                let mut by_hash = txn.open_table(MEDIA_BY_HASH).map_err(backend)?;
                let mut records = txn.open_table(MEDIA).map_err(backend)?;
                let mut usage = txn.open_table(MEDIA_USAGE).map_err(backend)?;
                for id in ids {
                    by_hash.remove((h, id)).map_err(backend)?;
                    let Some(mut record) = get_media(&records, id)? else { continue };
                    if record.state != MediaState::Ready {
                        continue;
                    }
                    adjust_usage(&mut usage, record.owner.to_bytes(), 0, charged(&record, content.as_ref()))?;
                    record.state = MediaState::Rejected;
                    record.reason = Some(RejectReason::TakenDown);
                    record.detail = note.clone();
                    record.updated_at = at;
                    records.insert(id, encode(&record)?.as_slice()).map_err(backend)?;
                    uploads.push(record.id);
                }
            }
            if let Some(content) = &content {
                delete_content(txn, content)?;
            }
            Ok(TakenDown { content, uploads })
        })
        .await
    }

    async fn is_taken_down(&self, hash: &str) -> StoreResult<bool> {
        self.read("select", "takedowns", |txn| {
            Ok(txn.open_table(TAKEDOWNS).map_err(backend)?.get(hash).map_err(backend)?.is_some())
        })
    }

    async fn block(&self, entry: &BlockedHash) -> StoreResult<()> {
        let entry = entry.clone();
        let bytes = encode(&entry)?;
        self.write("insert", "blocklist", true, move |txn| {
            let mut table = txn.open_table(BLOCKLIST).map_err(backend)?;
            if table.get(entry.phash).map_err(backend)?.is_none() {
                table.insert(entry.phash, bytes.as_slice()).map_err(backend)?;
            }
            Ok(())
        })
        .await
    }

    async fn blocklist(&self) -> StoreResult<Vec<BlockedHash>> {
        self.read("range", "blocklist", |txn| {
            let table = txn.open_table(BLOCKLIST).map_err(backend)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(backend)? {
                out.push(decode(entry.map_err(backend)?.1.value())?);
            }
            Ok(out)
        })
    }

    async fn usage(&self, user: UserId) -> StoreResult<u64> {
        self.read("select", "media_usage", |txn| {
            let table = txn.open_table(MEDIA_USAGE).map_err(backend)?;
            Ok(table.get(user.to_bytes()).map_err(backend)?.map_or(0, |v| v.value()))
        })
    }

    async fn touch(&self, accesses: &[(String, Millis)]) -> StoreResult<()> {
        let accesses = accesses.to_vec();
        // Not durable on its own: losing the last few access times in a crash only delays tiering.
        self.write("update", "contents", false, move |txn| {
            for (hash, at) in &accesses {
                let Some(content) = get_content(&txn.open_table(CONTENTS).map_err(backend)?, hash)? else {
                    continue;
                };
                if *at > content.last_access {
                    put_content(txn, &ContentRecord { last_access: *at, ..content.clone() }, Some(&content))?;
                }
            }
            Ok(())
        })
        .await
    }

    async fn idle_contents(&self, tier: Tier, idle_before: Millis, limit: usize) -> StoreResult<Vec<ContentRecord>> {
        self.read("range", "content_access", |txn| {
            let index = txn.open_table(CONTENT_ACCESS).map_err(backend)?;
            let contents = txn.open_table(CONTENTS).map_err(backend)?;
            let t = tier_key(tier);
            let mut out = Vec::new();
            for entry in index.range((t, i64::MIN, "")..(t, idle_before, "")).map_err(backend)?.take(limit) {
                let key = entry.map_err(backend)?.0;
                if let Some(content) = get_content(&contents, key.value().2)? {
                    out.push(content);
                }
            }
            Ok(out)
        })
    }

    async fn set_tier(&self, hash: &str, tier: Tier) -> StoreResult<bool> {
        let hash = hash.to_owned();
        self.write("update", "contents", true, move |txn| {
            let Some(content) = get_content(&txn.open_table(CONTENTS).map_err(backend)?, &hash)? else {
                return Ok(false);
            };
            if content.tier != tier {
                put_content(txn, &ContentRecord { tier, ..content.clone() }, Some(&content))?;
            }
            Ok(true)
        })
        .await
    }
}
