//! Accounts and sessions: register, log in, refresh, log out, list and revoke devices, authenticate.

use crate::auth::{Passwords, Principal, Tokens};
use crate::changes::{Change, ChangeBus};
use crate::store::{Device, StoreError, User, UserStore};
use crate::{CoreError, CoreResult, now_millis};
use herald_proto::{Credentials, DeviceId, DeviceInfo, Me, Session, UserId, UserProfile};
use std::sync::{Arc, OnceLock};

const MAX_PASSWORD_BYTES: usize = 1024;
const MIN_PASSWORD_CHARS: usize = 8;
const MAX_DEVICE_NAME_CHARS: usize = 64;

/// Told when a device is revoked, so what it still holds open (WebSocket connections) closes at once.
pub trait RevocationListener: Send + Sync + 'static {
    fn device_revoked(&self, user: UserId, device: DeviceId);
    /// Every device of `user` was revoked.
    fn user_revoked(&self, user: UserId);
}

/// The message of a login refused because the account is suspended.
pub const SUSPENDED: &str = "this account is suspended";

pub struct Accounts {
    users: Arc<dyn UserStore>,
    passwords: Passwords,
    tokens: Tokens,
    on_revoke: Option<Arc<dyn RevocationListener>>,
    /// Carries revocations to the other nodes of a cluster, whose connections this node's listener cannot reach.
    changes: OnceLock<Arc<dyn ChangeBus>>,
}

impl Accounts {
    pub fn new(
        users: Arc<dyn UserStore>,
        passwords: Passwords,
        tokens: Tokens,
        on_revoke: Option<Arc<dyn RevocationListener>>,
    ) -> Self {
        Self { users, passwords, tokens, on_revoke, changes: OnceLock::new() }
    }

    /// Sets the bus that carries revocations to the other nodes of a cluster (once, at start).
    pub fn set_change_bus(&self, bus: Arc<dyn ChangeBus>) {
        if self.changes.set(bus).is_err() {
            tracing::warn!("change bus set twice; keeping the first");
        }
    }

    async fn revoke(&self, user: UserId, device: DeviceId) -> CoreResult<()> {
        self.users.delete_device(device).await?;
        if let Some(listener) = &self.on_revoke {
            listener.device_revoked(user, device);
        }
        if let Some(bus) = self.changes.get() {
            bus.announce(Change::Revoked { user, device: Some(device) }).await;
        }
        Ok(())
    }

    /// Revokes every device of `user` (a suspension): their tokens stop working and their connections close,
    /// on every node, before this returns. Returns how many devices there were.
    pub async fn revoke_all(&self, user: UserId) -> CoreResult<usize> {
        let devices = self.users.devices_of(user).await?;
        for device in &devices {
            self.users.delete_device(device.id).await?;
        }
        if let Some(listener) = &self.on_revoke {
            listener.user_revoked(user);
        }
        if let Some(bus) = self.changes.get() {
            bus.announce(Change::Revoked { user, device: None }).await;
        }
        Ok(devices.len())
    }

    pub async fn register(&self, credentials: Credentials) -> CoreResult<Session> {
        let username = validate_username(&credentials.username)?;
        validate_password(&credentials.password)?;
        let device_name = validate_device_name(credentials.device_name.as_deref())?;
        if self.users.user_by_name(&username).await?.is_some() {
            return Err(CoreError::conflict("username is taken"));
        }
        let user = User {
            id: UserId::new(),
            username,
            password_hash: self.passwords.hash(credentials.password).await?,
            created_at: now_millis(),
            suspension: None,
            deleted_at: None,
        };
        self.users.create_user(&user).await.map_err(|e| match e {
            StoreError::Conflict(_) => CoreError::conflict("username is taken"),
            other => other.into(),
        })?;
        self.open_session(&user, device_name).await
    }

    pub async fn login(&self, credentials: Credentials) -> CoreResult<Session> {
        let device_name = validate_device_name(credentials.device_name.as_deref())?;
        if credentials.password.len() > MAX_PASSWORD_BYTES {
            return Err(CoreError::unauthorized("wrong username or password"));
        }
        let user = match validate_username(&credentials.username) {
            Ok(name) => self.users.user_by_name(&name).await?,
            Err(_) => None,
        };
        let hash = user.as_ref().map(|u| u.password_hash.clone());
        let ok = self.passwords.verify(credentials.password, hash).await?;
        match user {
            // Said only to whoever knows the password.
            Some(user) if ok && user.suspension.is_some() => Err(CoreError::forbidden(SUSPENDED)),
            Some(user) if ok => {
                let session = self.open_session(&user, device_name).await?;
                // A suspension or deletion made while this login ran may have revoked the devices before this
                // one was created: the account is read again (fresh: by name) now that the device exists, and
                // the device goes if so. A suspension is written before its revocation starts, and a deletion
                // frees the name, so one of the two sees the other.
                match self.users.user_by_name(&user.username).await {
                    Ok(Some(now)) if now.id == user.id && now.suspension.is_none() => Ok(session),
                    Ok(Some(now)) if now.id == user.id => {
                        self.revoke(user.id, session.device_id).await?;
                        Err(CoreError::forbidden(SUSPENDED))
                    }
                    Ok(_) => {
                        self.revoke(user.id, session.device_id).await?;
                        Err(CoreError::unauthorized("wrong username or password"))
                    }
                    Err(e) => {
                        self.revoke(user.id, session.device_id).await?;
                        Err(e.into())
                    }
                }
            }
            _ => Err(CoreError::unauthorized("wrong username or password")),
        }
    }

    /// Exchanges a refresh token for a new access token and a new refresh token. A token that was already
    /// used means it leaked: the device is revoked.
    pub async fn refresh(&self, refresh_token: &str) -> CoreResult<Session> {
        let device_id = Tokens::refresh_device(refresh_token)?;
        let device =
            self.users.device(device_id).await?.ok_or_else(|| CoreError::unauthorized("the device was revoked"))?;
        let presented = Tokens::refresh_hash(refresh_token);
        if Some(presented) == device.previous_refresh_hash {
            self.revoke(device.user_id, device_id).await?;
            tracing::warn!(device = %device_id, "refresh token reused; device revoked");
            return Err(CoreError::unauthorized("refresh token already used; the device was revoked"));
        }
        if presented != device.refresh_hash {
            return Err(CoreError::unauthorized("invalid refresh token"));
        }
        if device.refresh_expires_at <= now_millis() {
            return Err(CoreError::unauthorized("refresh token expired; log in again"));
        }
        let next = self.tokens.new_refresh(device_id);
        if !self.users.rotate_refresh(device_id, presented, next.hash, next.expires_at).await? {
            return Err(CoreError::unauthorized("refresh token already used"));
        }
        let user = self.users.user(device.user_id).await?.ok_or_else(|| CoreError::unauthorized("no such user"))?;
        let principal = Principal { user: user.id, device: device_id };
        let (access_token, access_expires_at) = self.tokens.access_token(principal)?;
        Ok(Session { user: user.profile(), device_id, access_token, access_expires_at, refresh_token: next.token })
    }

    /// Checks an access token and that its device still exists (so revocation takes effect at once).
    pub async fn authenticate(&self, access_token: &str) -> CoreResult<Principal> {
        let principal = self.tokens.verify_access(access_token)?;
        match self.users.device(principal.device).await? {
            Some(device) if device.user_id == principal.user => Ok(principal),
            _ => Err(CoreError::unauthorized("the device was revoked")),
        }
    }

    /// Whether the principal's device still exists (checked again once a connection is registered, so a
    /// revocation between the token check and the registration cannot leave a socket open).
    pub async fn device_active(&self, principal: Principal) -> CoreResult<bool> {
        Ok(self.users.device(principal.device).await?.is_some_and(|d| d.user_id == principal.user))
    }

    pub async fn me(&self, principal: Principal) -> CoreResult<Me> {
        let user = self.users.user(principal.user).await?.ok_or_else(|| CoreError::unauthorized("no such user"))?;
        let devices = self.devices(principal).await?;
        // Told by the caller, who knows the admins.
        Ok(Me { user: user.profile(), device_id: principal.device, devices, admin: false })
    }

    pub async fn devices(&self, principal: Principal) -> CoreResult<Vec<DeviceInfo>> {
        Ok(self.users.devices_of(principal.user).await?.iter().map(Device::info).collect())
    }

    /// Revokes one of the caller's own devices (its tokens stop working at once). Another user's device is
    /// reported as not found, so device ids cannot be probed.
    pub async fn revoke_device(&self, principal: Principal, device: DeviceId) -> CoreResult<()> {
        match self.users.device(device).await? {
            Some(d) if d.user_id == principal.user => self.revoke(d.user_id, device).await,
            _ => Err(CoreError::not_found("no such device")),
        }
    }

    pub async fn user_by_name(&self, username: &str) -> CoreResult<UserProfile> {
        let name = validate_username(username).map_err(|_| CoreError::not_found("no such user"))?;
        self.users.user_by_name(&name).await?.map(|u| u.profile()).ok_or_else(|| CoreError::not_found("no such user"))
    }

    pub async fn user(&self, id: UserId) -> CoreResult<UserProfile> {
        self.users.user(id).await?.map(|u| u.profile()).ok_or_else(|| CoreError::not_found("no such user"))
    }

    async fn open_session(&self, user: &User, device_name: String) -> CoreResult<Session> {
        let device_id = DeviceId::new();
        let refresh = self.tokens.new_refresh(device_id);
        let device = Device {
            id: device_id,
            user_id: user.id,
            name: device_name,
            created_at: now_millis(),
            refresh_hash: refresh.hash,
            refresh_expires_at: refresh.expires_at,
            previous_refresh_hash: None,
        };
        self.users.create_device(&device).await?;
        let (access_token, access_expires_at) =
            self.tokens.access_token(Principal { user: user.id, device: device_id })?;
        Ok(Session { user: user.profile(), device_id, access_token, access_expires_at, refresh_token: refresh.token })
    }
}

/// Usernames are 3 to 32 characters of `a-z 0-9 _ . -`, compared case-insensitively (stored lowercase).
pub fn validate_username(raw: &str) -> CoreResult<String> {
    let name = raw.trim().to_ascii_lowercase();
    let ok_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
    if !(3..=32).contains(&name.len()) || !ok_chars {
        return Err(CoreError::invalid("username must be 3 to 32 characters of a-z, 0-9, '_', '.', '-'"));
    }
    Ok(name)
}

fn validate_password(password: &str) -> CoreResult<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
        return Err(CoreError::invalid(format!(
            "password must be at least {MIN_PASSWORD_CHARS} characters and at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

fn validate_device_name(name: Option<&str>) -> CoreResult<String> {
    let name = name.map(str::trim).unwrap_or("");
    if name.chars().count() > MAX_DEVICE_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(CoreError::invalid(format!(
            "device_name must be at most {MAX_DEVICE_NAME_CHARS} printable characters"
        )));
    }
    Ok(if name.is_empty() { "unnamed device".to_owned() } else { name.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(validate_username(" Alice ").expect("valid"), "alice");
        for bad in ["ab", "a b c", "ünï", "x".repeat(33).as_str(), "semi;colon"] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
    }
}
