use super::{decode, encode};
use crate::db::{EmbeddedDb, backend};
use crate::tables::{DEVICES, MAX_ID, MIN_ID, USER_DEVICES, USERNAMES, USERS};
use async_trait::async_trait;
use herald_core::store::{Device, StoreError, StoreResult, User, UserStore};
use herald_proto::{DeviceId, UserId};
use redb::ReadableTable;

#[async_trait]
impl UserStore for EmbeddedDb {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let user = user.clone();
        let bytes = encode(&user)?;
        self.write("insert", "users", true, move |txn| {
            let mut names = txn.open_table(USERNAMES).map_err(backend)?;
            if names.get(user.username.as_str()).map_err(backend)?.is_some() {
                return Err(StoreError::Conflict("username is taken".into()));
            }
            names.insert(user.username.as_str(), user.id.to_bytes()).map_err(backend)?;
            txn.open_table(USERS).map_err(backend)?.insert(user.id.to_bytes(), bytes.as_slice()).map_err(backend)?;
            Ok(())
        })
        .await
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
        let device = device.clone();
        let bytes = encode(&device)?;
        self.write("insert", "devices", true, move |txn| {
            txn.open_table(DEVICES)
                .map_err(backend)?
                .insert(device.id.to_bytes(), bytes.as_slice())
                .map_err(backend)?;
            txn.open_table(USER_DEVICES)
                .map_err(backend)?
                .insert((device.user_id.to_bytes(), device.id.to_bytes()), ())
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn device(&self, id: DeviceId) -> StoreResult<Option<Device>> {
        self.read("select", "devices", |txn| {
            let table = txn.open_table(DEVICES).map_err(backend)?;
            table.get(id.to_bytes()).map_err(backend)?.map(|v| decode(v.value())).transpose()
        })
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
        self.write("update", "devices", true, move |txn| {
            let mut table = txn.open_table(DEVICES).map_err(backend)?;
            let current: Option<Device> =
                table.get(id.to_bytes()).map_err(backend)?.map(|v| decode(v.value())).transpose()?;
            match current {
                Some(mut device) if device.refresh_hash == expected => {
                    device.previous_refresh_hash = Some(expected);
                    device.refresh_hash = new;
                    device.refresh_expires_at = new_expires_at;
                    table.insert(id.to_bytes(), encode(&device)?.as_slice()).map_err(backend)?;
                    Ok(true)
                }
                _ => Ok(false),
            }
        })
        .await
    }

    async fn delete_device(&self, id: DeviceId) -> StoreResult<bool> {
        self.write("delete", "devices", true, move |txn| {
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
        })
        .await
    }
}
