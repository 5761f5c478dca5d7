use super::{decode, encode, recorded, refused_again};
use crate::db::{EmbeddedDb, backend};
use crate::tables::{BLOCKERS, BLOCKS, DEVICES, Id, MAX_ID, MIN_ID, USER_DEVICES, USERNAMES, USERS};
use async_trait::async_trait;
use herald_core::store::{Device, StoreError, StoreResult, User, UserStore};
use herald_proto::{DeviceId, Millis, Suspension, UserId};
use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

/// The first byte of the journal record of a write to the account tables (`commit_record::MESSAGE_COMMIT`
/// is 1). The rest is the [`AccountWrite`] as JSON.
pub(super) const ACCOUNT_WRITE: u8 = 2;

/// A write to the account tables, journaled: durable once the journal's append is synced, with no durable
/// redb commit. Logins, token refreshes and logouts are frequent, and a durable redb commit costs a sync of
/// the database file and a snapshot of the buffered feed rows (`feed_snapshot`), where an append costs one
/// small fdatasync shared with the messages of the same group commit. Replaying a record runs the same
/// checks against the same state, so it writes exactly what the original write did (or nothing, as it).
#[derive(Serialize, Deserialize)]
enum AccountWrite {
    CreateUser(User),
    CreateDevice(Device),
    RotateRefresh { id: DeviceId, expected: [u8; 32], new: [u8; 32], expires_at: i64 },
    DeleteDevice(DeviceId),
    Block { blocker: UserId, blocked: UserId, at: i64 },
    Unblock { blocker: UserId, blocked: UserId },
    SetSuspension { user: UserId, suspension: Option<Suspension> },
    EraseUser { user: UserId, at: Millis },
}

/// Applies a write; whether it changed anything (a refresh with a stale token, or a device already gone,
/// changes nothing). Checks before it writes, so a refused write leaves the shared transaction untouched.
fn apply(txn: &WriteTransaction, write: &AccountWrite) -> StoreResult<bool> {
    match write {
        AccountWrite::CreateUser(user) => {
            let mut names = txn.open_table(USERNAMES).map_err(backend)?;
            if names.get(user.username.as_str()).map_err(backend)?.is_some() {
                return Err(StoreError::Conflict("username is taken".into()));
            }
            names.insert(user.username.as_str(), user.id.to_bytes()).map_err(backend)?;
            txn.open_table(USERS)
                .map_err(backend)?
                .insert(user.id.to_bytes(), encode(user)?.as_slice())
                .map_err(backend)?;
            Ok(true)
        }
        AccountWrite::CreateDevice(device) => {
            txn.open_table(DEVICES)
                .map_err(backend)?
                .insert(device.id.to_bytes(), encode(device)?.as_slice())
                .map_err(backend)?;
            txn.open_table(USER_DEVICES)
                .map_err(backend)?
                .insert((device.user_id.to_bytes(), device.id.to_bytes()), ())
                .map_err(backend)?;
            Ok(true)
        }
        AccountWrite::RotateRefresh { id, expected, new, expires_at } => {
            let mut table = txn.open_table(DEVICES).map_err(backend)?;
            let current: Option<Device> =
                table.get(id.to_bytes()).map_err(backend)?.map(|v| decode(v.value())).transpose()?;
            match current {
                Some(mut device) if device.refresh_hash == *expected => {
                    device.previous_refresh_hash = Some(*expected);
                    device.refresh_hash = *new;
                    device.refresh_expires_at = *expires_at;
                    table.insert(id.to_bytes(), encode(&device)?.as_slice()).map_err(backend)?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
        AccountWrite::DeleteDevice(id) => {
            let mut table = txn.open_table(DEVICES).map_err(backend)?;
            let removed: Option<Device> =
                table.remove(id.to_bytes()).map_err(backend)?.map(|v| decode(v.value())).transpose()?;
            if let Some(device) = &removed {
                txn.open_table(USER_DEVICES)
                    .map_err(backend)?
                    .remove((device.user_id.to_bytes(), id.to_bytes()))
                    .map_err(backend)?;
            }
            Ok(removed.is_some())
        }
        AccountWrite::Block { blocker, blocked, at } => {
            let key = (blocker.to_bytes(), blocked.to_bytes());
            let mut blocks = txn.open_table(BLOCKS).map_err(backend)?;
            if blocks.get(key).map_err(backend)?.is_some() {
                return Ok(false);
            }
            blocks.insert(key, *at).map_err(backend)?;
            txn.open_table(BLOCKERS).map_err(backend)?.insert((key.1, key.0), ()).map_err(backend)?;
            Ok(true)
        }
        AccountWrite::Unblock { blocker, blocked } => {
            let key = (blocker.to_bytes(), blocked.to_bytes());
            let removed = txn.open_table(BLOCKS).map_err(backend)?.remove(key).map_err(backend)?.is_some();
            txn.open_table(BLOCKERS).map_err(backend)?.remove((key.1, key.0)).map_err(backend)?;
            Ok(removed)
        }
        AccountWrite::SetSuspension { user, suspension } => {
            let mut users = txn.open_table(USERS).map_err(backend)?;
            let current: Option<User> =
                users.get(user.to_bytes()).map_err(backend)?.map(|v| decode(v.value())).transpose()?;
            let Some(mut record) = current else { return Ok(false) };
            record.suspension = suspension.clone();
            users.insert(user.to_bytes(), encode(&record)?.as_slice()).map_err(backend)?;
            Ok(true)
        }
        AccountWrite::EraseUser { user, at } => erase_user(txn, *user, *at),
    }
}

/// `UserStore::erase_user` in the shared transaction.
fn erase_user(txn: &WriteTransaction, user: UserId, at: Millis) -> StoreResult<bool> {
    let u = user.to_bytes();
    let mut users = txn.open_table(USERS).map_err(backend)?;
    let current: Option<User> = users.get(u).map_err(backend)?.map(|v| decode(v.value())).transpose()?;
    let Some(record) = current else { return Ok(false) };
    if record.deleted_at.is_some() {
        return Ok(true);
    }
    let mut names = txn.open_table(USERNAMES).map_err(backend)?;
    let owns_name = names.get(record.username.as_str()).map_err(backend)?.is_some_and(|id| id.value() == u);
    if owns_name {
        names.remove(record.username.as_str()).map_err(backend)?;
    }
    let erased = User {
        username: User::deleted_username(user),
        password_hash: String::new(),
        suspension: None,
        deleted_at: Some(at),
        ..record
    };
    users.insert(u, encode(&erased)?.as_slice()).map_err(backend)?;

    let mut index = txn.open_table(USER_DEVICES).map_err(backend)?;
    let mut devices = txn.open_table(DEVICES).map_err(backend)?;
    let owned = second_ids(index.range((u, MIN_ID)..=(u, MAX_ID)).map_err(backend)?)?;
    for device in owned {
        devices.remove(device).map_err(backend)?;
        index.remove((u, device)).map_err(backend)?;
    }

    // Both directions: (blocker, blocked) in BLOCKS, (blocked, blocker) in BLOCKERS.
    let mut blocks = txn.open_table(BLOCKS).map_err(backend)?;
    let mut blockers = txn.open_table(BLOCKERS).map_err(backend)?;
    let blocked = second_ids(blocks.range((u, MIN_ID)..=(u, MAX_ID)).map_err(backend)?)?;
    let blocking = second_ids(blockers.range((u, MIN_ID)..=(u, MAX_ID)).map_err(backend)?)?;
    for other in blocked {
        blocks.remove((u, other)).map_err(backend)?;
        blockers.remove((other, u)).map_err(backend)?;
    }
    for other in blocking {
        blocks.remove((other, u)).map_err(backend)?;
        blockers.remove((u, other)).map_err(backend)?;
    }
    Ok(true)
}

/// The second halves of the keys of a range over one user's pairs.
fn second_ids<V: redb::Value + 'static>(range: redb::Range<'_, (Id, Id), V>) -> StoreResult<Vec<Id>> {
    range.map(|entry| entry.map(|(key, _)| key.value().1).map_err(backend)).collect()
}

/// Applies a journaled account write again (see `db`'s recovery). A write its original refused (a taken
/// username) is refused again and leaves nothing, as the original did.
pub(super) fn replay(txn: &WriteTransaction, record: &[u8]) -> StoreResult<()> {
    refused_again(apply(txn, &recorded(record)?).map(|_| ()))
}

impl EmbeddedDb {
    async fn account_write(
        &self,
        query_type: &'static str,
        table: &'static str,
        write: AccountWrite,
    ) -> StoreResult<bool> {
        let device = match &write {
            AccountWrite::CreateUser(_)
            | AccountWrite::Block { .. }
            | AccountWrite::Unblock { .. }
            | AccountWrite::SetSuspension { .. }
            | AccountWrite::EraseUser { .. } => None,
            AccountWrite::CreateDevice(device) => Some(device.id),
            AccountWrite::RotateRefresh { id, .. } | AccountWrite::DeleteDevice(id) => Some(*id),
        };
        let result = self.logical_write(query_type, table, ACCOUNT_WRITE, write, apply).await;
        // Whatever the outcome (a failed commit may still have reached the journal), before the caller hears.
        if let Some(id) = device {
            self.device_cache.written(id);
        }
        result
    }
}

#[async_trait]
impl UserStore for EmbeddedDb {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        self.account_write("insert", "users", AccountWrite::CreateUser(user.clone())).await.map(|_| ())
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        self.read("select", "users", |txn| {
            let table = txn.open_table(USERS).map_err(backend)?;
            table.get(id.to_bytes()).map_err(backend)?.map(|v| decode(v.value())).transpose()
        })
    }

    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        self.read("select", "usernames", |txn| {
            let names = txn.open_table(USERNAMES).map_err(backend)?;
            let Some(id) = names.get(username).map_err(backend)? else { return Ok(None) };
            let users = txn.open_table(USERS).map_err(backend)?;
            users.get(id.value()).map_err(backend)?.map(|v| decode(v.value())).transpose()
        })
    }

    async fn create_device(&self, device: &Device) -> StoreResult<()> {
        self.account_write("insert", "devices", AccountWrite::CreateDevice(device.clone())).await.map(|_| ())
    }

    async fn device(&self, id: DeviceId) -> StoreResult<Option<Device>> {
        if let Some(device) = self.device_cache.get(id) {
            return Ok(Some(device));
        }
        // Taken before the snapshot opens: a write finishing meanwhile keeps this read out of the cache.
        let generation = self.device_cache.generation();
        let device: Option<Device> = self.read("select", "devices", |txn| {
            let table = txn.open_table(DEVICES).map_err(backend)?;
            table.get(id.to_bytes()).map_err(backend)?.map(|v| decode(v.value())).transpose()
        })?;
        if let Some(device) = &device {
            self.device_cache.put(generation, device);
        }
        Ok(device)
    }

    async fn devices_of(&self, user: UserId) -> StoreResult<Vec<Device>> {
        self.read("range", "devices", |txn| {
            let index = txn.open_table(USER_DEVICES).map_err(backend)?;
            let devices = txn.open_table(DEVICES).map_err(backend)?;
            let u = user.to_bytes();
            let mut out = Vec::new();
            for entry in index.range((u, MIN_ID)..=(u, MAX_ID)).map_err(backend)? {
                let (key, _) = entry.map_err(backend)?;
                if let Some(v) = devices.get(key.value().1).map_err(backend)? {
                    out.push(decode(v.value())?);
                }
            }
            Ok(out)
        })
    }

    async fn rotate_refresh(
        &self,
        id: DeviceId,
        expected: [u8; 32],
        new: [u8; 32],
        new_expires_at: i64,
    ) -> StoreResult<bool> {
        let write = AccountWrite::RotateRefresh { id, expected, new, expires_at: new_expires_at };
        self.account_write("update", "devices", write).await
    }

    async fn delete_device(&self, id: DeviceId) -> StoreResult<bool> {
        self.account_write("delete", "devices", AccountWrite::DeleteDevice(id)).await
    }

    async fn block(&self, blocker: UserId, blocked: UserId, at: i64) -> StoreResult<bool> {
        self.account_write("insert", "blocks", AccountWrite::Block { blocker, blocked, at }).await
    }

    async fn unblock(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool> {
        self.account_write("delete", "blocks", AccountWrite::Unblock { blocker, blocked }).await
    }

    async fn blocked_by(&self, blocker: UserId) -> StoreResult<Vec<(UserId, i64)>> {
        self.read("range", "blocks", |txn| {
            let table = txn.open_table(BLOCKS).map_err(backend)?;
            let u = blocker.to_bytes();
            let mut out = Vec::new();
            for entry in table.range((u, MIN_ID)..=(u, MAX_ID)).map_err(backend)? {
                let (key, at) = entry.map_err(backend)?;
                out.push((UserId::from_bytes(key.value().1), at.value()));
            }
            Ok(out)
        })
    }

    async fn blockers_of(&self, blocked: UserId) -> StoreResult<Vec<UserId>> {
        self.read("range", "blockers", |txn| {
            let table = txn.open_table(BLOCKERS).map_err(backend)?;
            let u = blocked.to_bytes();
            let mut out = Vec::new();
            for entry in table.range((u, MIN_ID)..=(u, MAX_ID)).map_err(backend)? {
                out.push(UserId::from_bytes(entry.map_err(backend)?.0.value().1));
            }
            Ok(out)
        })
    }

    async fn set_suspension(&self, user: UserId, suspension: Option<&Suspension>) -> StoreResult<bool> {
        let write = AccountWrite::SetSuspension { user, suspension: suspension.cloned() };
        self.account_write("update", "users", write).await
    }

    async fn erase_user(&self, user: UserId, at: Millis) -> StoreResult<bool> {
        // Its devices leave the device cache after the write (`account_write` forgets one device per write).
        let devices = self.devices_of(user).await?;
        let result = self.account_write("update", "users", AccountWrite::EraseUser { user, at }).await;
        for device in devices {
            self.device_cache.written(device.id);
        }
        result
    }
}
