//! User administration by the server's admins: look an account up, suspend it (every session closed at once,
//! on every node, and no new logins) and lift the suspension.

use crate::accounts::Accounts;
use crate::admins::Admins;
use crate::auth::Principal;
use crate::store::{Device, User, UserStore};
use crate::{CoreError, CoreResult, now_millis};
use herald_proto::{AdminUser, SuspendUser, Suspension, UserId};
use std::sync::Arc;

/// Longest suspension reason, in characters.
pub const MAX_REASON_CHARS: usize = 2000;

pub struct UserAdmin {
    users: Arc<dyn UserStore>,
    admins: Arc<Admins>,
    accounts: Arc<Accounts>,
}

impl UserAdmin {
    pub fn new(users: Arc<dyn UserStore>, admins: Arc<Admins>, accounts: Arc<Accounts>) -> Self {
        Self { users, admins, accounts }
    }

    /// The server's admins.
    pub fn admins(&self) -> &Admins {
        &self.admins
    }

    /// The account with its suspension and devices.
    pub async fn get(&self, principal: Principal, user: UserId) -> CoreResult<AdminUser> {
        self.admins.require(principal).await?;
        let record = self.user(user).await?;
        self.view(record).await
    }

    /// Suspends the account and closes its sessions. A suspended account stays suspended as it was (the first
    /// reason and time are kept), and its sessions are closed again.
    pub async fn suspend(&self, principal: Principal, user: UserId, body: SuspendUser) -> CoreResult<AdminUser> {
        self.admins.require(principal).await?;
        if body.reason.chars().count() > MAX_REASON_CHARS {
            return Err(CoreError::invalid(format!("the reason is longer than {MAX_REASON_CHARS} characters")));
        }
        let mut record = self.user(user).await?;
        if self.admins.is_admin_name(&record.username) {
            return Err(CoreError::invalid("an admin cannot be suspended: take them out of auth.admins first"));
        }
        if record.suspension.is_none() {
            let suspension = Suspension { at: now_millis(), by: principal.user, reason: body.reason };
            // Written before the devices go: a login racing with this sees one or the other (`Accounts::login`).
            self.users.set_suspension(user, Some(&suspension)).await?;
            record.suspension = Some(suspension);
            tracing::info!(user = %user, by = %principal.user, "account suspended");
        }
        self.accounts.revoke_all(user).await?;
        self.view(record).await
    }

    /// Lifts the suspension: the account may log in again. Lifting none changes nothing.
    pub async fn unsuspend(&self, principal: Principal, user: UserId) -> CoreResult<AdminUser> {
        self.admins.require(principal).await?;
        let mut record = self.user(user).await?;
        if record.suspension.take().is_some() {
            self.users.set_suspension(user, None).await?;
            tracing::info!(user = %user, by = %principal.user, "account suspension lifted");
        }
        self.view(record).await
    }

    async fn user(&self, id: UserId) -> CoreResult<User> {
        self.users.user(id).await?.ok_or_else(|| CoreError::not_found("no such user"))
    }

    async fn view(&self, record: User) -> CoreResult<AdminUser> {
        let devices = self.users.devices_of(record.id).await?.iter().map(Device::info).collect();
        Ok(AdminUser { user: record.profile(), suspension: record.suspension, devices })
    }
}
