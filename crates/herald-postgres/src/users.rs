//! Users and their devices.

use crate::PostgresDb;
use crate::db::{Freshness, backend, pg};
use async_trait::async_trait;
use herald_core::store::{Device, StoreError, StoreResult, User, UserStore};
use herald_proto::{DeviceId, Millis, Suspension, UserId};
use tokio_postgres::Row;
use tokio_postgres::types::Type;

const USER_COLUMNS: &str =
    "id, username, password_hash, created_at, suspended_at, suspended_by, suspension_reason, deleted_at";
const DEVICE_COLUMNS: &str = "id, user_id, name, created_at, refresh_hash, refresh_expires_at, previous_refresh_hash";

fn user(row: &Row) -> User {
    let suspension = row.get::<_, Option<i64>>(4).map(|at| Suspension {
        at,
        by: UserId(row.get(5)),
        reason: row.get::<_, Option<String>>(6).unwrap_or_default(),
    });
    User {
        id: UserId(row.get(0)),
        username: row.get(1),
        password_hash: row.get(2),
        created_at: row.get(3),
        suspension,
        deleted_at: row.get(7),
    }
}

fn hash(bytes: Vec<u8>) -> StoreResult<[u8; 32]> {
    bytes.try_into().map_err(|_| backend("corrupt device row: a refresh hash is not 32 bytes"))
}

fn device(row: &Row) -> StoreResult<Device> {
    Ok(Device {
        id: DeviceId(row.get(0)),
        user_id: UserId(row.get(1)),
        name: row.get(2),
        created_at: row.get(3),
        refresh_hash: hash(row.get(4))?,
        refresh_expires_at: row.get(5),
        previous_refresh_hash: row.get::<_, Option<Vec<u8>>>(6).map(hash).transpose()?,
    })
}

#[async_trait]
impl UserStore for PostgresDb {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let inserted = self
            .pools
            .write("insert", "users", async |client| {
                client
                    .execute_typed(
                        "INSERT INTO users (id, username, password_hash, created_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (username) DO NOTHING",
                        &[
                            (&user.id.0, Type::UUID),
                            (&user.username, Type::TEXT),
                            (&user.password_hash, Type::TEXT),
                            (&user.created_at, Type::INT8),
                        ],
                    )
                    .await
                    .map_err(pg)
            })
            .await?;
        if inserted == 0 {
            return Err(StoreError::Conflict("username is taken".into()));
        }
        Ok(())
    }

    async fn user(&self, id: UserId) -> StoreResult<Option<User>> {
        self.pools
            .read("select", "users", Freshness::MayLag, |client| async move {
                let row = client
                    .query_typed_opt(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"), &[(&id.0, Type::UUID)])
                    .await
                    .map_err(pg)?;
                Ok(row.as_ref().map(user))
            })
            .await
    }

    /// Fresh: a login just after registering must find the account.
    async fn user_by_name(&self, username: &str) -> StoreResult<Option<User>> {
        self.pools
            .read("select", "users", Freshness::Fresh, |client| async move {
                let row = client
                    .query_typed_opt(
                        &format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1"),
                        &[(&username, Type::TEXT)],
                    )
                    .await
                    .map_err(pg)?;
                Ok(row.as_ref().map(user))
            })
            .await
    }

    async fn create_device(&self, device: &Device) -> StoreResult<()> {
        let previous = device.previous_refresh_hash.map(|h| h.to_vec());
        self.pools
            .write("insert", "devices", async |client| {
                client
                    .execute_typed(
                        &format!("INSERT INTO devices ({DEVICE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
                        &[
                            (&device.id.0, Type::UUID),
                            (&device.user_id.0, Type::UUID),
                            (&device.name, Type::TEXT),
                            (&device.created_at, Type::INT8),
                            (&device.refresh_hash.as_slice(), Type::BYTEA),
                            (&device.refresh_expires_at, Type::INT8),
                            (&previous, Type::BYTEA),
                        ],
                    )
                    .await
                    .map_err(pg)
            })
            .await
            .map(|_| ())
    }

    /// Fresh: authentication depends on it (a revoked device must stop working everywhere).
    async fn device(&self, id: DeviceId) -> StoreResult<Option<Device>> {
        self.pools
            .read("select", "devices", Freshness::Fresh, |client| async move {
                let row = client
                    .query_typed_opt(
                        &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"),
                        &[(&id.0, Type::UUID)],
                    )
                    .await
                    .map_err(pg)?;
                row.as_ref().map(device).transpose()
            })
            .await
    }

    async fn devices_of(&self, user: UserId) -> StoreResult<Vec<Device>> {
        self.pools
            .read("select", "devices", Freshness::Fresh, |client| async move {
                let rows = client
                    .query_typed(
                        &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 ORDER BY created_at, id"),
                        &[(&user.0, Type::UUID)],
                    )
                    .await
                    .map_err(pg)?;
                rows.iter().map(device).collect()
            })
            .await
    }

    async fn rotate_refresh(
        &self,
        id: DeviceId,
        expected: [u8; 32],
        new: [u8; 32],
        new_expires_at: i64,
    ) -> StoreResult<bool> {
        let changed = self
            .pools
            .write("update", "devices", async |client| {
                client
                    .execute_typed(
                        "UPDATE devices SET refresh_hash = $3, refresh_expires_at = $4, previous_refresh_hash = $2
                          WHERE id = $1 AND refresh_hash = $2",
                        &[
                            (&id.0, Type::UUID),
                            (&expected.as_slice(), Type::BYTEA),
                            (&new.as_slice(), Type::BYTEA),
                            (&new_expires_at, Type::INT8),
                        ],
                    )
                    .await
                    .map_err(pg)
            })
            .await?;
        Ok(changed == 1)
    }

    async fn delete_device(&self, id: DeviceId) -> StoreResult<bool> {
        let deleted = self
            .pools
            .write("delete", "devices", async |client| {
                client.execute_typed("DELETE FROM devices WHERE id = $1", &[(&id.0, Type::UUID)]).await.map_err(pg)
            })
            .await?;
        Ok(deleted == 1)
    }

    async fn block(&self, blocker: UserId, blocked: UserId, at: i64) -> StoreResult<bool> {
        let inserted = self
            .pools
            .write("insert", "blocks", async |client| {
                client
                    .execute_typed(
                        "INSERT INTO blocks (blocker, blocked, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                        &[(&blocker.0, Type::UUID), (&blocked.0, Type::UUID), (&at, Type::INT8)],
                    )
                    .await
                    .map_err(pg)
            })
            .await?;
        Ok(inserted == 1)
    }

    async fn unblock(&self, blocker: UserId, blocked: UserId) -> StoreResult<bool> {
        let deleted = self
            .pools
            .write("delete", "blocks", async |client| {
                client
                    .execute_typed(
                        "DELETE FROM blocks WHERE blocker = $1 AND blocked = $2",
                        &[(&blocker.0, Type::UUID), (&blocked.0, Type::UUID)],
                    )
                    .await
                    .map_err(pg)
            })
            .await?;
        Ok(deleted == 1)
    }

    /// Fresh: a block must hold from the moment it is acknowledged.
    async fn blocked_by(&self, blocker: UserId) -> StoreResult<Vec<(UserId, i64)>> {
        self.pools
            .read("range", "blocks", Freshness::Fresh, |client| async move {
                let rows = client
                    .query_typed(
                        "SELECT blocked, created_at FROM blocks WHERE blocker = $1 ORDER BY blocked",
                        &[(&blocker.0, Type::UUID)],
                    )
                    .await
                    .map_err(pg)?;
                Ok(rows.iter().map(|row| (UserId(row.get(0)), row.get(1))).collect())
            })
            .await
    }

    async fn blockers_of(&self, blocked: UserId) -> StoreResult<Vec<UserId>> {
        self.pools
            .read("range", "blocks", Freshness::Fresh, |client| async move {
                let rows = client
                    .query_typed(
                        "SELECT blocker FROM blocks WHERE blocked = $1 ORDER BY blocker",
                        &[(&blocked.0, Type::UUID)],
                    )
                    .await
                    .map_err(pg)?;
                Ok(rows.iter().map(|row| UserId(row.get(0))).collect())
            })
            .await
    }

    async fn set_suspension(&self, user: UserId, suspension: Option<&Suspension>) -> StoreResult<bool> {
        let updated = self
            .pools
            .write("update", "users", async |client| {
                client
                    .execute_typed(
                        "UPDATE users SET suspended_at = $2, suspended_by = $3, suspension_reason = $4 WHERE id = $1",
                        &[
                            (&user.0, Type::UUID),
                            (&suspension.map(|s| s.at), Type::INT8),
                            (&suspension.map(|s| s.by.0), Type::UUID),
                            (&suspension.map(|s| s.reason.as_str()), Type::TEXT),
                        ],
                    )
                    .await
                    .map_err(pg)
            })
            .await?;
        Ok(updated == 1)
    }

    async fn erase_user(&self, user: UserId, at: Millis) -> StoreResult<bool> {
        self.pools
            .write("update", "users", async |client| {
                let txn = client.transaction().await.map_err(pg)?;
                // The row is locked first, so two erasures of one account run one after the other.
                let row = txn
                    .query_typed_opt("SELECT deleted_at FROM users WHERE id = $1 FOR UPDATE", &[(&user.0, Type::UUID)])
                    .await
                    .map_err(pg)?;
                let Some(row) = row else { return Ok(false) };
                if row.get::<_, Option<i64>>(0).is_some() {
                    return Ok(true);
                }
                txn.execute_typed(
                    "UPDATE users SET username = $2, password_hash = '', suspended_at = NULL, suspended_by = NULL,
                     suspension_reason = NULL, deleted_at = $3 WHERE id = $1",
                    &[(&user.0, Type::UUID), (&User::deleted_username(user).as_str(), Type::TEXT), (&at, Type::INT8)],
                )
                .await
                .map_err(pg)?;
                txn.execute_typed("DELETE FROM devices WHERE user_id = $1", &[(&user.0, Type::UUID)])
                    .await
                    .map_err(pg)?;
                txn.execute_typed("DELETE FROM blocks WHERE blocker = $1 OR blocked = $1", &[(&user.0, Type::UUID)])
                    .await
                    .map_err(pg)?;
                txn.commit().await.map_err(pg)?;
                Ok(true)
            })
            .await
    }
}
