use crate::db::{EmbeddedDb, backend};
use crate::tables::{CURSORS, MAX_ID, MIN_ID, THREAD_READS};
use async_trait::async_trait;
use herald_core::store::{CursorStore, CursorUpdate, StoreResult};
use herald_proto::{ConversationId, DeviceCursor, DeviceId, UserId};
use redb::ReadableTable;

#[async_trait]
impl CursorStore for EmbeddedDb {
    async fn advance(&self, updates: &[CursorUpdate]) -> StoreResult<Vec<DeviceCursor>> {
        let updates = updates.to_vec();
        // Not durable on its own: cursors ride along with the next durable commit (see the trait).
        self.write("upsert", "cursors", false, move |txn| {
            let mut table = txn.open_table(CURSORS).map_err(backend)?;
            let mut out = Vec::with_capacity(updates.len());
            for u in &updates {
                let key = (u.conversation.to_bytes(), u.user.to_bytes(), u.device.to_bytes());
                let (delivered, read) = table.get(key).map_err(backend)?.map(|v| v.value()).unwrap_or((0, 0));
                let next = (delivered.max(u.delivered.unwrap_or(0)), read.max(u.read.unwrap_or(0)));
                if next != (delivered, read) {
                    table.insert(key, next).map_err(backend)?;
                }
                out.push(DeviceCursor { device_id: u.device, delivered: next.0, read: next.1 });
            }
            Ok(out)
        })
        .await
    }

    async fn cursors(&self, conversation: ConversationId, user: UserId) -> StoreResult<Vec<DeviceCursor>> {
        self.read("range", "cursors", |txn| {
            let table = txn.open_table(CURSORS).map_err(backend)?;
            let (c, u) = (conversation.to_bytes(), user.to_bytes());
            let mut out = Vec::new();
            for entry in table.range((c, u, MIN_ID)..=(c, u, MAX_ID)).map_err(backend)? {
                let (key, value) = entry.map_err(backend)?;
                let (delivered, read) = value.value();
                out.push(DeviceCursor { device_id: DeviceId::from_bytes(key.value().2), delivered, read });
            }
            Ok(out)
        })
    }

    async fn advance_thread_read(
        &self,
        conversation: ConversationId,
        user: UserId,
        root: u64,
        read: u64,
    ) -> StoreResult<u64> {
        let key = (conversation.to_bytes(), user.to_bytes(), root);
        // As `advance`: rides along with the next durable commit.
        self.write("upsert", "thread_reads", false, move |txn| {
            let mut table = txn.open_table(THREAD_READS).map_err(backend)?;
            let stored = table.get(key).map_err(backend)?.map_or(0, |v| v.value());
            if read > stored {
                table.insert(key, read).map_err(backend)?;
            }
            Ok(read.max(stored))
        })
        .await
    }

    async fn thread_read(&self, conversation: ConversationId, user: UserId, root: u64) -> StoreResult<u64> {
        self.read("select", "thread_reads", |txn| {
            let table = txn.open_table(THREAD_READS).map_err(backend)?;
            Ok(table.get((conversation.to_bytes(), user.to_bytes(), root)).map_err(backend)?.map_or(0, |v| v.value()))
        })
    }
}
