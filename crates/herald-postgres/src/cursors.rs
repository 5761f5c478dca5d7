//! Delivered and read positions per device.

use crate::PostgresDb;
use crate::db::{Freshness, big, pg, unsigned};
use async_trait::async_trait;
use herald_core::store::{CursorStore, CursorUpdate, StoreResult};
use herald_proto::{ConversationId, DeviceCursor, DeviceId, UserId};
use std::collections::HashMap;
use tokio_postgres::types::Type;

type Key = (uuid::Uuid, uuid::Uuid, uuid::Uuid);

#[async_trait]
impl CursorStore for PostgresDb {
    /// One transaction: the stored positions of the keys named, locked, then the updates applied in order
    /// in memory (each answer is the cursor after its own update), then one upsert of the final values.
    async fn advance(&self, updates: &[CursorUpdate]) -> StoreResult<Vec<DeviceCursor>> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let key = |u: &CursorUpdate| (u.conversation.0, u.user.0, u.device.0);
        let mut keys: Vec<Key> = updates.iter().map(key).collect();
        // One lock order for every transaction, so two batches never wait on each other in a cycle.
        keys.sort_unstable();
        keys.dedup();
        self.pools
            .write("upsert", "cursors", async |client| {
                let txn = client.transaction().await.map_err(pg)?;
                let (c, u, d) = columns(&keys);
                let rows = txn
                    .query_typed(
                        "SELECT conversation_id, user_id, device_id, delivered, read FROM cursors
                          WHERE (conversation_id, user_id, device_id) IN
                                (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[]))
                          ORDER BY conversation_id, user_id, device_id
                          FOR UPDATE",
                        &[(&c, Type::UUID_ARRAY), (&u, Type::UUID_ARRAY), (&d, Type::UUID_ARRAY)],
                    )
                    .await
                    .map_err(pg)?;
                let mut current: HashMap<Key, (u64, u64)> = rows
                    .iter()
                    .map(|r| ((r.get(0), r.get(1), r.get(2)), (unsigned(r.get(3)), unsigned(r.get(4)))))
                    .collect();
                let mut out = Vec::with_capacity(updates.len());
                for update in updates {
                    let position = current.entry(key(update)).or_default();
                    position.0 = position.0.max(update.delivered.unwrap_or(0));
                    position.1 = position.1.max(update.read.unwrap_or(0));
                    out.push(DeviceCursor { device_id: update.device, delivered: position.0, read: position.1 });
                }
                let delivered: Vec<i64> = keys.iter().map(|k| big(current.get(k).map_or(0, |p| p.0))).collect();
                let read: Vec<i64> = keys.iter().map(|k| big(current.get(k).map_or(0, |p| p.1))).collect();
                txn.execute_typed(
                    "INSERT INTO cursors (conversation_id, user_id, device_id, delivered, read)
                     SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::bigint[], $5::bigint[])
                     ON CONFLICT (conversation_id, user_id, device_id) DO UPDATE
                        SET delivered = greatest(cursors.delivered, excluded.delivered),
                            read = greatest(cursors.read, excluded.read)",
                    &[
                        (&c, Type::UUID_ARRAY),
                        (&u, Type::UUID_ARRAY),
                        (&d, Type::UUID_ARRAY),
                        (&delivered, Type::INT8_ARRAY),
                        (&read, Type::INT8_ARRAY),
                    ],
                )
                .await
                .map_err(pg)?;
                txn.commit().await.map_err(pg)?;
                Ok(out)
            })
            .await
    }

    /// Fresh: unread counts and receipts are computed from it.
    async fn cursors(&self, conversation: ConversationId, user: UserId) -> StoreResult<Vec<DeviceCursor>> {
        self.pools
            .read("range", "cursors", Freshness::Fresh, |client| async move {
                let rows = client
                    .query_typed(
                        "SELECT device_id, delivered, read FROM cursors
                          WHERE conversation_id = $1 AND user_id = $2 ORDER BY device_id",
                        &[(&conversation.0, Type::UUID), (&user.0, Type::UUID)],
                    )
                    .await
                    .map_err(pg)?;
                Ok(rows
                    .iter()
                    .map(|r| DeviceCursor {
                        device_id: DeviceId(r.get(0)),
                        delivered: unsigned(r.get(1)),
                        read: unsigned(r.get(2)),
                    })
                    .collect())
            })
            .await
    }

    async fn advance_thread_read(
        &self,
        conversation: ConversationId,
        user: UserId,
        root: u64,
        read: u64,
    ) -> StoreResult<u64> {
        self.pools
            .write("upsert", "thread_reads", async |client| {
                let row = client
                    .query_typed_one(
                        "INSERT INTO thread_reads (conversation_id, user_id, thread_root, read) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (conversation_id, user_id, thread_root) DO UPDATE
                            SET read = greatest(thread_reads.read, excluded.read)
                         RETURNING read",
                        &[
                            (&conversation.0, Type::UUID),
                            (&user.0, Type::UUID),
                            (&big(root), Type::INT8),
                            (&big(read), Type::INT8),
                        ],
                    )
                    .await
                    .map_err(pg)?;
                Ok(unsigned(row.get(0)))
            })
            .await
    }

    /// Fresh, as the cursors.
    async fn thread_read(&self, conversation: ConversationId, user: UserId, root: u64) -> StoreResult<u64> {
        self.pools
            .read("select", "thread_reads", Freshness::Fresh, |client| async move {
                let row = client
                    .query_typed_opt(
                        "SELECT read FROM thread_reads WHERE conversation_id = $1 AND user_id = $2 AND thread_root = $3",
                        &[(&conversation.0, Type::UUID), (&user.0, Type::UUID), (&big(root), Type::INT8)],
                    )
                    .await
                    .map_err(pg)?;
                Ok(row.map_or(0, |r| unsigned(r.get(0))))
            })
            .await
    }
}

fn columns(keys: &[Key]) -> (Vec<uuid::Uuid>, Vec<uuid::Uuid>, Vec<uuid::Uuid>) {
    let mut out = (Vec::with_capacity(keys.len()), Vec::with_capacity(keys.len()), Vec::with_capacity(keys.len()));
    for (c, u, d) in keys {
        out.0.push(*c);
        out.1.push(*u);
        out.2.push(*d);
    }
    out
}
