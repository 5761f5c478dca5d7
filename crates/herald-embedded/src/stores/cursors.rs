use crate::db::{EmbeddedDb, backend};
use crate::tables::{CURSORS, MAX_ID, MIN_ID};
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
}
