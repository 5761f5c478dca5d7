//! Media bookkeeping: uploads, the contents they point to, usage, takedowns and the blocklist.
//!
//! Every transaction takes its locks in one order: the content hash's advisory lock, then upload rows (by id),
//! then the content row, then usage rows (by user). Two of them never wait on each other in a cycle.

use crate::PostgresDb;
use crate::db::{Freshness, backend, big, pg, unsigned};
use async_trait::async_trait;
use herald_core::now_millis;
use herald_core::store::{
    BlockedHash, Completed, ContentRecord, MediaRecord, MediaStore, StoreError, StoreResult, TakenDown, Tier,
};
use herald_proto::{ConversationId, MediaId, MediaState, Millis, RejectReason, UserId};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use tokio_postgres::types::Type;
use tokio_postgres::{Row, Transaction};

const MEDIA_COLUMNS: &str = "id, owner, state, reason, detail, declared_size, filename, claimed_type, content_type, \
                             content_hash, created_at, updated_at";

const CONTENT_COLUMNS: &str =
    "hash, content_type, size, width, height, duration_ms, variants::text, tier, refs, created_at, last_access";

/// The states that are not final, as the partial index `media_unfinished` spells them (the planner only uses
/// it for the same predicate).
const UNFINISHED: &str = "state IN ('pending', 'scanning', 'processing')";

/// The advisory-lock class of content hashes: the two-key form, a key space apart from the single-key locks
/// taken elsewhere.
const HASH_LOCK_CLASS: i32 = 0x6d65_6469;

/// A name stored as text (a state, a reason, a tier) read back through its serde name.
fn named<T: DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|e| backend(format!("corrupt media row: unknown name {text:?}: {e}")))
}

fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Hot => "hot",
        Tier::Cold => "cold",
    }
}

fn dimension(value: Option<i64>) -> StoreResult<Option<u32>> {
    value.map(|v| u32::try_from(v).map_err(|_| backend(format!("corrupt content row: dimension {v}")))).transpose()
}

fn media_record(row: &Row) -> StoreResult<MediaRecord> {
    Ok(MediaRecord {
        id: MediaId(row.get(0)),
        owner: UserId(row.get(1)),
        state: named(row.get(2))?,
        reason: row.get::<_, Option<&str>>(3).map(named).transpose()?,
        detail: row.get(4),
        declared_size: unsigned(row.get(5)),
        filename: row.get(6),
        claimed_type: row.get(7),
        content_type: row.get(8),
        content_hash: row.get(9),
        created_at: row.get(10),
        updated_at: row.get(11),
    })
}

fn content_record(row: &Row) -> StoreResult<ContentRecord> {
    Ok(ContentRecord {
        hash: row.get(0),
        content_type: row.get(1),
        size: unsigned(row.get(2)),
        width: dimension(row.get(3))?,
        height: dimension(row.get(4))?,
        duration_ms: row.get::<_, Option<i64>>(5).map(unsigned),
        variants: serde_json::from_str(row.get(6))
            .map_err(|e| backend(format!("corrupt content row: variants: {e}")))?,
        tier: named(row.get(7))?,
        refs: unsigned(row.get(8)),
        created_at: row.get(9),
        last_access: row.get(10),
    })
}

/// The bytes a new upload counts against its owner's quota: its declared size, nothing when created rejected.
fn charge(media: &MediaRecord) -> u64 {
    if media.state == MediaState::Rejected { 0 } else { media.declared_size }
}

/// Serialises the writes that decide a content hash's fate (completing an upload of it, taking it down)
/// across connections and nodes, for the rest of the transaction: the content row cannot be locked before it
/// exists, and a completion must see a takedown committed before it, a takedown every completion before it.
async fn lock_hash(txn: &Transaction<'_>, hash: &str) -> StoreResult<()> {
    txn.execute_typed(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[(&HASH_LOCK_CLASS, Type::INT4), (&hash, Type::TEXT)],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// Adds `add` to and takes `sub` from the user's usage in one statement on the user's row, never below zero
/// (a usage that would go negative is a bookkeeping bug elsewhere, and zero is the least wrong answer) nor
/// past what a bigint holds.
async fn adjust_usage(txn: &Transaction<'_>, user: UserId, add: u64, sub: u64) -> StoreResult<()> {
    if add == sub {
        return Ok(());
    }
    txn.execute_typed(
        "INSERT INTO media_usage (user_id, bytes)
         VALUES ($1, LEAST(GREATEST($2::numeric - $3, 0), 9223372036854775807)::bigint)
         ON CONFLICT (user_id) DO UPDATE
            SET bytes = LEAST(GREATEST(media_usage.bytes::numeric + $2 - $3, 0), 9223372036854775807)::bigint",
        &[(&user.0, Type::UUID), (&big(add), Type::INT8), (&big(sub), Type::INT8)],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// An upload's row locked for an update that keeps its key (so it does not wait on readers that only need
/// the row to stay), when it is there and not final: its owner and what it is charged.
async fn lock_unfinished(txn: &Transaction<'_>, id: MediaId) -> StoreResult<Option<(UserId, u64)>> {
    let row = txn
        .query_typed_opt(
            &format!("SELECT owner, charged FROM media WHERE id = $1 AND {UNFINISHED} FOR NO KEY UPDATE"),
            &[(&id.0, Type::UUID)],
        )
        .await
        .map_err(pg)?;
    Ok(row.map(|r| (UserId(r.get(0)), unsigned(r.get(1)))))
}

#[async_trait]
impl MediaStore for PostgresDb {
    async fn create_upload(&self, media: &MediaRecord, quota: u64) -> StoreResult<()> {
        let cost = charge(media);
        self.pools
            .write("insert", "media", async |client| {
                let txn = client.transaction().await.map_err(pg)?;
                let inserted = txn
                    .execute_typed(
                        &format!(
                            "INSERT INTO media ({MEDIA_COLUMNS}, charged)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                             ON CONFLICT (id) DO NOTHING"
                        ),
                        &[
                            (&media.id.0, Type::UUID),
                            (&media.owner.0, Type::UUID),
                            (&media.state.as_str(), Type::TEXT),
                            (&media.reason.map(RejectReason::as_str), Type::TEXT),
                            (&media.detail, Type::TEXT),
                            (&big(media.declared_size), Type::INT8),
                            (&media.filename, Type::TEXT),
                            (&media.claimed_type, Type::TEXT),
                            (&media.content_type, Type::TEXT),
                            (&media.content_hash, Type::TEXT),
                            (&media.created_at, Type::INT8),
                            (&media.updated_at, Type::INT8),
                            (&big(cost), Type::INT8),
                        ],
                    )
                    .await
                    .map_err(pg)?;
                if inserted == 0 {
                    return Err(StoreError::Conflict(format!("upload {} exists", media.id)));
                }
                // Checked and counted in one statement on the owner's row: concurrent uploads queue on its lock
                // and each sees the usage the one before left. `cost <= quota` first, so nothing overflows.
                let counted = if cost > quota {
                    None
                } else {
                    txn.query_typed_opt(
                        "INSERT INTO media_usage (user_id, bytes) VALUES ($1, $2)
                         ON CONFLICT (user_id) DO UPDATE SET bytes = media_usage.bytes + EXCLUDED.bytes
                          WHERE media_usage.bytes <= $3 - EXCLUDED.bytes
                         RETURNING bytes",
                        &[(&media.owner.0, Type::UUID), (&big(cost), Type::INT8), (&big(quota), Type::INT8)],
                    )
                    .await
                    .map_err(pg)?
                };
                if counted.is_none() {
                    let used = txn
                        .query_typed_opt(
                            "SELECT bytes FROM media_usage WHERE user_id = $1",
                            &[(&media.owner.0, Type::UUID)],
                        )
                        .await
                        .map_err(pg)?
                        .map_or(0, |r| unsigned(r.get(0)));
                    return Err(StoreError::LimitExceeded(format!(
                        "{cost} bytes more would pass the quota of {quota} bytes ({used} used)"
                    )));
                }
                txn.commit().await.map_err(pg)
            })
            .await
    }

    async fn media(&self, id: MediaId) -> StoreResult<Option<MediaRecord>> {
        self.pools
            .read("select", "media", Freshness::Fresh, |client| async move {
                let row = client
                    .query_typed_opt(
                        &format!("SELECT {MEDIA_COLUMNS} FROM media WHERE id = $1"),
                        &[(&id.0, Type::UUID)],
                    )
                    .await
                    .map_err(pg)?;
                row.as_ref().map(media_record).transpose()
            })
            .await
    }

    async fn set_progress(&self, id: MediaId, state: MediaState, content_type: Option<&str>) -> StoreResult<bool> {
        if state.is_final() {
            return Err(backend(format!("set_progress to the final state {state:?}; use complete or reject")));
        }
        let changed = self
            .pools
            .write("update", "media", async |client| {
                client
                    .execute_typed(
                        &format!(
                            "UPDATE media SET state = $2, content_type = coalesce($3, content_type), updated_at = $4
                              WHERE id = $1 AND {UNFINISHED}"
                        ),
                        &[
                            (&id.0, Type::UUID),
                            (&state.as_str(), Type::TEXT),
                            (&content_type, Type::TEXT),
                            (&now_millis(), Type::INT8),
                        ],
                    )
                    .await
                    .map_err(pg)
            })
            .await?;
        Ok(changed == 1)
    }

    /// Under the hash's lock: the upload (locked, not final), the takedown check, the content (refs + 1, or
    /// inserted), the usage and the upload's new state, in one transaction; any refusal rolls it all back.
    async fn complete(&self, id: MediaId, content: &ContentRecord) -> StoreResult<Completed> {
        let hash = content.hash.as_str();
        let variants = serde_json::to_string(&content.variants).map_err(backend)?;
        self.pools
            .write("update", "media", async |client| {
                let txn = client.transaction().await.map_err(pg)?;
                lock_hash(&txn, hash).await?;
                let Some((owner, charged)) = lock_unfinished(&txn, id).await? else {
                    return Err(StoreError::Conflict(format!("upload {id} is already final or gone")));
                };
                let taken_down = txn
                    .query_typed_opt("SELECT 1 FROM media_takedowns WHERE hash = $1", &[(&hash, Type::TEXT)])
                    .await
                    .map_err(pg)?;
                if taken_down.is_some() {
                    return Err(StoreError::Conflict("the content was taken down".into()));
                }
                // No other transaction inserts this hash while the lock is held, so when the update finds no
                // row the insert cannot collide.
                let existing = txn
                    .query_typed_opt(
                        &format!(
                            "UPDATE media_contents SET refs = refs + 1 WHERE hash = $1 RETURNING {CONTENT_COLUMNS}"
                        ),
                        &[(&hash, Type::TEXT)],
                    )
                    .await
                    .map_err(pg)?;
                let existed = existing.is_some();
                let row = match existing {
                    Some(row) => row,
                    None => txn
                        .query_typed_one(
                            &format!(
                                "INSERT INTO media_contents (hash, content_type, size, width, height, duration_ms,
                                                             variants, tier, refs, created_at, last_access)
                                 VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, 1, $9, $10)
                                 RETURNING {CONTENT_COLUMNS}"
                            ),
                            &[
                                (&hash, Type::TEXT),
                                (&content.content_type, Type::TEXT),
                                (&big(content.size), Type::INT8),
                                (&content.width.map(i64::from), Type::INT8),
                                (&content.height.map(i64::from), Type::INT8),
                                (&content.duration_ms.map(big), Type::INT8),
                                (&variants, Type::TEXT),
                                (&tier_name(content.tier), Type::TEXT),
                                (&content.created_at, Type::INT8),
                                (&content.last_access, Type::INT8),
                            ],
                        )
                        .await
                        .map_err(pg)?,
                };
                let stored = content_record(&row)?;
                txn.execute_typed(
                    "UPDATE media SET state = 'ready', content_hash = $2, content_type = $3, charged = $4,
                                      updated_at = $5
                      WHERE id = $1",
                    &[
                        (&id.0, Type::UUID),
                        (&stored.hash, Type::TEXT),
                        (&stored.content_type, Type::TEXT),
                        (&big(stored.size), Type::INT8),
                        (&now_millis(), Type::INT8),
                    ],
                )
                .await
                .map_err(pg)?;
                adjust_usage(&txn, owner, stored.size, charged).await?;
                txn.commit().await.map_err(pg)?;
                Ok(Completed { content: stored, existed })
            })
            .await
    }

    async fn reject(&self, id: MediaId, reason: RejectReason, detail: Option<&str>) -> StoreResult<bool> {
        self.pools
            .write("update", "media", async |client| {
                let txn = client.transaction().await.map_err(pg)?;
                let Some((owner, charged)) = lock_unfinished(&txn, id).await? else {
                    return Ok(false);
                };
                txn.execute_typed(
                    "UPDATE media SET state = 'rejected', reason = $2, detail = $3, charged = 0, updated_at = $4
                      WHERE id = $1",
                    &[
                        (&id.0, Type::UUID),
                        (&reason.as_str(), Type::TEXT),
                        (&detail, Type::TEXT),
                        (&now_millis(), Type::INT8),
                    ],
                )
                .await
                .map_err(pg)?;
                adjust_usage(&txn, owner, 0, charged).await?;
                txn.commit().await.map_err(pg)?;
                Ok(true)
            })
            .await
    }

    async fn content(&self, hash: &str) -> StoreResult<Option<ContentRecord>> {
        self.pools
            .read("select", "media_contents", Freshness::Fresh, |client| async move {
                let row = client
                    .query_typed_opt(
                        &format!("SELECT {CONTENT_COLUMNS} FROM media_contents WHERE hash = $1"),
                        &[(&hash, Type::TEXT)],
                    )
                    .await
                    .map_err(pg)?;
                row.as_ref().map(content_record).transpose()
            })
            .await
    }

    /// Fresh: who may fetch an upload follows from it, right after the message that attaches it.
    async fn attached_in(&self, id: MediaId) -> StoreResult<Vec<ConversationId>> {
        self.pools
            .read("select", "media_refs", Freshness::Fresh, |client| async move {
                let rows = client
                    .query_typed(
                        "SELECT DISTINCT conversation_id FROM media_refs WHERE media_id = $1 ORDER BY conversation_id",
                        &[(&id.0, Type::UUID)],
                    )
                    .await
                    .map_err(pg)?;
                Ok(rows.iter().map(|r| ConversationId(r.get(0))).collect())
            })
            .await
    }

    /// Oldest first, in one stable order, so a caller that skips some finds them again at the front.
    async fn unreferenced(&self, created_before: Millis, limit: usize) -> StoreResult<Vec<MediaRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.pools
            .read("select", "media", Freshness::Fresh, |client| async move {
                let rows = client
                    .query_typed(
                        &format!(
                            "SELECT {MEDIA_COLUMNS} FROM media m
                              WHERE created_at < $1
                                AND NOT EXISTS (SELECT 1 FROM media_refs r WHERE r.media_id = m.id)
                              ORDER BY created_at, id
                              LIMIT $2"
                        ),
                        &[(&created_before, Type::INT8), (&limit, Type::INT8)],
                    )
                    .await
                    .map_err(pg)?;
                rows.iter().map(media_record).collect()
            })
            .await
    }

    /// The upload's row is locked for deletion before media_refs is read: a message commit that locks the
    /// uploads it attaches (key share) is then either seen here or waits, and finds the upload gone.
    async fn remove(&self, id: MediaId) -> StoreResult<Option<ContentRecord>> {
        self.pools
            .write("delete", "media", async |client| {
                let txn = client.transaction().await.map_err(pg)?;
                let Some(row) = txn
                    .query_typed_opt(
                        "SELECT owner, state, charged, content_hash FROM media WHERE id = $1 FOR UPDATE",
                        &[(&id.0, Type::UUID)],
                    )
                    .await
                    .map_err(pg)?
                else {
                    return Ok(None);
                };
                let (owner, state, charged) =
                    (UserId(row.get(0)), named::<MediaState>(row.get(1))?, unsigned(row.get(2)));
                let hash: Option<String> = row.get(3);
                let attached = txn
                    .query_typed_opt("SELECT 1 FROM media_refs WHERE media_id = $1 LIMIT 1", &[(&id.0, Type::UUID)])
                    .await
                    .map_err(pg)?;
                if attached.is_some() {
                    return Err(StoreError::Conflict(format!("upload {id} is attached to a message")));
                }
                txn.execute_typed("DELETE FROM media WHERE id = $1", &[(&id.0, Type::UUID)]).await.map_err(pg)?;
                let mut last = None;
                if let (MediaState::Ready, Some(hash)) = (state, hash) {
                    // Locked before deciding, so a completion of the same bytes cannot slip between the
                    // count and the delete.
                    let refs = txn
                        .query_typed_opt(
                            "SELECT refs FROM media_contents WHERE hash = $1 FOR UPDATE",
                            &[(&hash, Type::TEXT)],
                        )
                        .await
                        .map_err(pg)?
                        .map(|r| r.get::<_, i64>(0));
                    match refs {
                        Some(refs) if refs > 1 => {
                            txn.execute_typed(
                                "UPDATE media_contents SET refs = refs - 1 WHERE hash = $1",
                                &[(&hash, Type::TEXT)],
                            )
                            .await
                            .map_err(pg)?;
                        }
                        Some(_) => {
                            let row = txn
                                .query_typed_one(
                                    &format!("DELETE FROM media_contents WHERE hash = $1 RETURNING {CONTENT_COLUMNS}"),
                                    &[(&hash, Type::TEXT)],
                                )
                                .await
                                .map_err(pg)?;
                            last = Some(ContentRecord { refs: 0, ..content_record(&row)? });
                        }
                        None => {}
                    }
                }
                adjust_usage(&txn, owner, 0, charged).await?;
                txn.commit().await.map_err(pg)?;
                Ok(last)
            })
            .await
    }

    async fn unfinished(&self) -> StoreResult<Vec<MediaRecord>> {
        self.pools
            .read("select", "media", Freshness::Fresh, |client| async move {
                let rows = client
                    .query_typed(&format!("SELECT {MEDIA_COLUMNS} FROM media WHERE {UNFINISHED} ORDER BY id"), &[])
                    .await
                    .map_err(pg)?;
                rows.iter().map(media_record).collect()
            })
            .await
    }

    /// Under the hash's lock: the takedown recorded, the ready uploads of the hash locked (by id) and
    /// rejected, the content row deleted and each owner's usage released (by user), in one transaction.
    async fn take_down(&self, hash: &str, note: Option<&str>, at: Millis) -> StoreResult<TakenDown> {
        self.pools
            .write("update", "media_takedowns", async |client| {
                let txn = client.transaction().await.map_err(pg)?;
                lock_hash(&txn, hash).await?;
                // The first takedown's record stays; a repeat changes nothing.
                txn.execute_typed(
                    "INSERT INTO media_takedowns (hash, note, taken_at) VALUES ($1, $2, $3) ON CONFLICT (hash) DO NOTHING",
                    &[(&hash, Type::TEXT), (&note, Type::TEXT), (&at, Type::INT8)],
                )
                .await
                .map_err(pg)?;
                let rows = txn
                    .query_typed(
                        "SELECT id, owner, charged FROM media WHERE content_hash = $1 AND state = 'ready'
                          ORDER BY id FOR NO KEY UPDATE",
                        &[(&hash, Type::TEXT)],
                    )
                    .await
                    .map_err(pg)?;
                let content = txn
                    .query_typed_opt(
                        &format!("DELETE FROM media_contents WHERE hash = $1 RETURNING {CONTENT_COLUMNS}"),
                        &[(&hash, Type::TEXT)],
                    )
                    .await
                    .map_err(pg)?
                    .as_ref()
                    .map(content_record)
                    .transpose()?;
                let mut uploads = Vec::with_capacity(rows.len());
                let mut released: BTreeMap<UserId, u64> = BTreeMap::new();
                for row in &rows {
                    uploads.push(MediaId(row.get(0)));
                    let owner = UserId(row.get(1));
                    let charged = unsigned(row.get(2));
                    released.entry(owner).and_modify(|sum| *sum = sum.saturating_add(charged)).or_insert(charged);
                }
                if !uploads.is_empty() {
                    let ids: Vec<uuid::Uuid> = uploads.iter().map(|m| m.0).collect();
                    txn.execute_typed(
                        "UPDATE media SET state = 'rejected', reason = 'taken_down', detail = $2, charged = 0,
                                          updated_at = $3
                          WHERE id = ANY($1)",
                        &[(&ids, Type::UUID_ARRAY), (&note, Type::TEXT), (&at, Type::INT8)],
                    )
                    .await
                    .map_err(pg)?;
                }
                for (owner, bytes) in released {
                    adjust_usage(&txn, owner, 0, bytes).await?;
                }
                txn.commit().await.map_err(pg)?;
                Ok(TakenDown { content, uploads })
            })
            .await
    }

    async fn is_taken_down(&self, hash: &str) -> StoreResult<bool> {
        self.pools
            .read("select", "media_takedowns", Freshness::Fresh, |client| async move {
                let row = client
                    .query_typed_opt("SELECT 1 FROM media_takedowns WHERE hash = $1", &[(&hash, Type::TEXT)])
                    .await
                    .map_err(pg)?;
                Ok(row.is_some())
            })
            .await
    }

    async fn block(&self, entry: &BlockedHash) -> StoreResult<()> {
        // The u64 bit for bit: perceptual hashes use all 64 bits.
        let phash = entry.phash as i64;
        self.pools
            .write("insert", "media_blocklist", async |client| {
                client
                    .execute_typed(
                        "INSERT INTO media_blocklist (phash, note, created_at) VALUES ($1, $2, $3)
                         ON CONFLICT (phash) DO NOTHING",
                        &[(&phash, Type::INT8), (&entry.note, Type::TEXT), (&entry.created_at, Type::INT8)],
                    )
                    .await
                    .map_err(pg)
            })
            .await
            .map(|_| ())
    }

    /// May lag: an image blocked a moment ago being let through once is within what moderation tolerates.
    async fn blocklist(&self) -> StoreResult<Vec<BlockedHash>> {
        let mut entries = self
            .pools
            .read("select", "media_blocklist", Freshness::MayLag, |client| async move {
                let rows =
                    client.query_typed("SELECT phash, note, created_at FROM media_blocklist", &[]).await.map_err(pg)?;
                Ok(rows
                    .iter()
                    .map(|r| BlockedHash { phash: r.get::<_, i64>(0) as u64, note: r.get(1), created_at: r.get(2) })
                    .collect::<Vec<_>>())
            })
            .await?;
        entries.sort_unstable_by_key(|e| e.phash);
        Ok(entries)
    }

    async fn usage(&self, user: UserId) -> StoreResult<u64> {
        self.pools
            .read("select", "media_usage", Freshness::Fresh, |client| async move {
                let row = client
                    .query_typed_opt("SELECT bytes FROM media_usage WHERE user_id = $1", &[(&user.0, Type::UUID)])
                    .await
                    .map_err(pg)?;
                Ok(row.map_or(0, |r| unsigned(r.get(0))))
            })
            .await
    }

    /// One statement: the latest time per hash, the rows to move locked in hash order (so two concurrent
    /// calls never wait on each other in a cycle), then updated.
    async fn touch(&self, accesses: &[(String, Millis)]) -> StoreResult<()> {
        let mut latest: BTreeMap<&str, Millis> = BTreeMap::new();
        for (hash, at) in accesses {
            latest.entry(hash.as_str()).and_modify(|t| *t = (*t).max(*at)).or_insert(*at);
        }
        if latest.is_empty() {
            return Ok(());
        }
        let (hashes, times): (Vec<&str>, Vec<Millis>) = latest.into_iter().unzip();
        self.pools
            .write("update", "media_contents", async |client| {
                client
                    .execute_typed(
                        "UPDATE media_contents c SET last_access = t.at
                           FROM (SELECT l.hash, v.at FROM media_contents l
                                   JOIN unnest($1::text[], $2::bigint[]) AS v(hash, at) ON l.hash = v.hash
                                  WHERE l.last_access < v.at
                                  ORDER BY l.hash
                                  FOR UPDATE OF l) AS t
                          WHERE c.hash = t.hash",
                        &[(&hashes, Type::TEXT_ARRAY), (&times, Type::INT8_ARRAY)],
                    )
                    .await
                    .map_err(pg)
            })
            .await
            .map(|_| ())
    }

    async fn idle_contents(&self, tier: Tier, idle_before: Millis, limit: usize) -> StoreResult<Vec<ContentRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.pools
            .read("select", "media_contents", Freshness::Fresh, |client| async move {
                let rows = client
                    .query_typed(
                        &format!(
                            "SELECT {CONTENT_COLUMNS} FROM media_contents
                              WHERE tier = $1 AND last_access < $2
                              ORDER BY last_access, hash
                              LIMIT $3"
                        ),
                        &[(&tier_name(tier), Type::TEXT), (&idle_before, Type::INT8), (&limit, Type::INT8)],
                    )
                    .await
                    .map_err(pg)?;
                rows.iter().map(content_record).collect()
            })
            .await
    }

    async fn set_tier(&self, hash: &str, tier: Tier) -> StoreResult<bool> {
        let changed = self
            .pools
            .write("update", "media_contents", async |client| {
                client
                    .execute_typed(
                        "UPDATE media_contents SET tier = $2 WHERE hash = $1",
                        &[(&hash, Type::TEXT), (&tier_name(tier), Type::TEXT)],
                    )
                    .await
                    .map_err(pg)
            })
            .await?;
        Ok(changed == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [MediaState; 5] =
        [MediaState::Pending, MediaState::Scanning, MediaState::Processing, MediaState::Ready, MediaState::Rejected];

    /// The names written are the ones read back, and the SQL's unfinished states are exactly the non-final ones.
    #[test]
    fn names_round_trip() {
        for state in STATES {
            assert_eq!(named::<MediaState>(state.as_str()).ok(), Some(state));
            assert_eq!(UNFINISHED.contains(&format!("'{}'", state.as_str())), !state.is_final(), "{state:?}");
        }
        for reason in [RejectReason::TakenDown, RejectReason::Malware, RejectReason::ModerationFailed] {
            assert_eq!(named::<RejectReason>(reason.as_str()).ok(), Some(reason));
        }
        assert_eq!(named::<RejectReason>("taken_down").ok(), Some(RejectReason::TakenDown));
        assert_eq!(named::<MediaState>("ready").ok(), Some(MediaState::Ready));
        assert_eq!(named::<MediaState>("rejected").ok(), Some(MediaState::Rejected));
        for tier in [Tier::Hot, Tier::Cold] {
            assert_eq!(named::<Tier>(tier_name(tier)).ok(), Some(tier));
        }
        assert!(named::<Tier>("lukewarm").is_err());
    }
}
