//! User administration by the server's admins: look an account up, suspend it (every session closed at once,
//! on every node, and no new logins), lift the suspension, and delete it (its personal data erased, its groups
//! left, its messages kept or removed as configured).

use crate::accounts::Accounts;
use crate::admins::Admins;
use crate::auth::Principal;
use crate::conversations::Conversations;
use crate::log::Op;
use crate::store::{Device, Stores, User};
use crate::submit::Submitter;
use crate::{CoreError, CoreResult, now_millis};
use herald_proto::{
    AdminUser, ConversationId, ConversationKind, DeletedUser, DeviceId, Direction, SuspendUser, Suspension, UserId,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Longest suspension reason, in characters.
pub const MAX_REASON_CHARS: usize = 2000;

/// Messages read per page while removing a deleted account's messages.
const REMOVAL_PAGE: usize = 256;

/// What becomes of a deleted account's messages (`auth.deleted_user_messages`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletedMessages {
    /// They stay where they are, under the account's id, which clients show as a deleted user.
    #[default]
    Keep,
    /// Each is deleted as its sender would delete it (a tombstone keeps its seq, and its attachments go), and its
    /// reactions to the others' messages are taken back.
    Remove,
}

/// The parts of the node that user administration drives.
pub struct UserAdminParts {
    pub stores: Stores,
    pub admins: Arc<Admins>,
    pub accounts: Arc<Accounts>,
    pub conversations: Arc<Conversations>,
    pub submitter: Arc<Submitter>,
    pub deleted_messages: DeletedMessages,
}

pub struct UserAdmin {
    stores: Stores,
    admins: Arc<Admins>,
    accounts: Arc<Accounts>,
    conversations: Arc<Conversations>,
    submitter: Arc<Submitter>,
    deleted_messages: DeletedMessages,
}

impl UserAdmin {
    pub fn new(parts: UserAdminParts) -> Self {
        let UserAdminParts { stores, admins, accounts, conversations, submitter, deleted_messages } = parts;
        Self { stores, admins, accounts, conversations, submitter, deleted_messages }
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
        if record.deleted_at.is_some() {
            return Err(CoreError::not_found("the account was deleted"));
        }
        if self.admins.is_admin_name(&record.username) {
            return Err(CoreError::invalid("an admin cannot be suspended: take them out of auth.admins first"));
        }
        if record.suspension.is_none() {
            let suspension = Suspension { at: now_millis(), by: principal.user, reason: body.reason };
            // Written before the devices go: a login racing with this sees one or the other (`Accounts::login`).
            self.stores.users.set_suspension(user, Some(&suspension)).await?;
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
            self.stores.users.set_suspension(user, None).await?;
            tracing::info!(user = %user, by = %principal.user, "account suspension lifted");
        }
        self.view(record).await
    }

    /// Deletes the account: its sessions are closed on every node, its personal data erased (the username is
    /// free again), and it leaves its groups (an owner hands the group on, as when leaving); its messages are
    /// kept or removed as configured. Its direct conversations stay for the other side, who sees a deleted
    /// user. Deleting a deleted account again finishes what an interrupted deletion left undone.
    pub async fn delete(&self, principal: Principal, user: UserId) -> CoreResult<DeletedUser> {
        self.admins.require(principal).await?;
        let record = self.user(user).await?;
        if record.deleted_at.is_none() {
            if self.admins.is_admin_name(&record.username) {
                return Err(CoreError::invalid("an admin cannot be deleted: take them out of auth.admins first"));
            }
            tracing::info!(user = %user, by = %principal.user, "account deleted");
        }
        // Sessions first, so nothing the account does races with its erasure; a login racing with this finds
        // the account gone when it checks again (`Accounts::login`).
        self.accounts.revoke_all(user).await?;
        self.stores.users.erase_user(user, now_millis()).await?;
        // What the account does now is done in its name (its leaving, its deletions), by no device of its own.
        let as_user = Principal { user, device: DeviceId(uuid::Uuid::nil()) };
        let (mut groups_left, mut messages_removed) = (0, 0);
        for (conversation, _) in self.stores.conversations.memberships(user).await? {
            if self.deleted_messages == DeletedMessages::Remove {
                messages_removed += self.remove_messages(as_user, conversation).await?;
            }
            let kind = self.stores.conversations.conversation(conversation).await?.map(|c| c.kind);
            if kind == Some(ConversationKind::Group) {
                self.conversations.remove_member(as_user, conversation, user).await?;
                groups_left += 1;
            }
        }
        let erased = self.user(user).await?;
        Ok(DeletedUser { user: erased.profile(), groups_left, messages_removed })
    }

    /// Deletes what `as_user` sent in the conversation (not membership notices) and takes back its reactions
    /// to the others' messages; returns how many messages it deleted.
    async fn remove_messages(&self, as_user: Principal, conversation: ConversationId) -> CoreResult<u64> {
        let messages = &self.stores.messages;
        let last = messages.last_seq(conversation).await?;
        let (mut from, mut removed) = (1, 0);
        while from <= last {
            let page = messages.history(conversation, from, Direction::Forward, REMOVAL_PAGE).await?;
            let Some(end) = page.last().map(|m| m.seq) else { break };
            for message in page.iter().filter(|m| m.seq <= last && !m.deleted) {
                if message.sender == as_user.user && message.system.is_none() {
                    let op = Op::Delete { seq: message.seq, as_admin: false };
                    self.submitter.submit_for_message(as_user, conversation, op).await?;
                    removed += 1;
                    continue;
                }
                for (emoji, users) in &message.reactions {
                    if users.contains(&as_user.user) {
                        let op = Op::React { seq: message.seq, emoji: emoji.clone(), add: false };
                        self.submitter.submit_for_message(as_user, conversation, op).await?;
                    }
                }
            }
            from = end + 1;
        }
        Ok(removed)
    }

    async fn user(&self, id: UserId) -> CoreResult<User> {
        self.stores.users.user(id).await?.ok_or_else(|| CoreError::not_found("no such user"))
    }

    async fn view(&self, record: User) -> CoreResult<AdminUser> {
        let devices = self.stores.users.devices_of(record.id).await?.iter().map(Device::info).collect();
        Ok(AdminUser { user: record.profile(), suspension: record.suspension, devices })
    }
}
