//! Conversations: direct (one per pair of users) and groups (owner, admins, members), who may change them,
//! and "my conversations" with last message and unread count.

use crate::auth::Principal;
use crate::blocks::Blocks;
use crate::cache::TtlCache;
use crate::changes::{Change, ChangeBus, ChangeListener};
use crate::limits::Limits;
use crate::log::Op;
use crate::store::{StoreError, Stores};
use crate::submit::Submitter;
use crate::{CoreError, CoreResult, now_millis};
use herald_proto::{
    Conversation, ConversationDetails, ConversationId, ConversationKind, ConversationPage, ConversationSummary, Member,
    Millis, Role, SystemEvent, UserId,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

pub struct Conversations {
    stores: Stores,
    limits: Limits,
    submitter: Arc<Submitter>,
    membership: TtlCache<(ConversationId, UserId), Option<Member>>,
    /// In a cluster: the other nodes, told of membership changes before they are acknowledged.
    changes: std::sync::OnceLock<Arc<dyn ChangeBus>>,
    /// Who blocks whom: no direct messages or invitations across a block.
    blocks: std::sync::OnceLock<Arc<Blocks>>,
}

impl Conversations {
    pub fn new(stores: Stores, limits: Limits, submitter: Arc<Submitter>, cache_ttl: Duration) -> Self {
        Self {
            stores,
            limits,
            submitter,
            membership: TtlCache::new("membership", cache_ttl, 200_000),
            changes: std::sync::OnceLock::new(),
            blocks: std::sync::OnceLock::new(),
        }
    }

    /// Sets the block list the conversations respect (once, at start).
    pub fn set_blocks(&self, blocks: Arc<Blocks>) {
        if self.blocks.set(blocks).is_err() {
            tracing::warn!("block list set twice; keeping the first");
        }
    }

    /// `forbidden` when either of the two blocks the other.
    async fn require_unblocked(&self, a: UserId, b: UserId) -> CoreResult<()> {
        match self.blocks.get() {
            Some(blocks) => blocks.require_none(a, b).await,
            None => Ok(()),
        }
    }

    /// In a direct conversation, `forbidden` when either member blocks the other: what a send checks. Most
    /// users block nobody and are blocked by nobody, and for them this reads nothing but a cached empty set.
    pub async fn require_unblocked_direct(&self, principal: Principal, id: ConversationId) -> CoreResult<()> {
        let Some(blocks) = self.blocks.get() else { return Ok(()) };
        let separated = blocks.separated_from(principal.user).await?;
        if separated.is_empty() || self.conversation(id).await?.kind != ConversationKind::Direct {
            return Ok(());
        }
        let members = self.stores.conversations.members(id).await?;
        if members.iter().any(|m| m.user_id != principal.user && separated.contains(&m.user_id)) {
            return Err(CoreError::forbidden("one of you has blocked the other"));
        }
        Ok(())
    }

    /// Sets the bus that carries membership changes to the other nodes of a cluster (once, at start).
    pub fn set_change_bus(&self, bus: Arc<dyn ChangeBus>) {
        if self.changes.set(bus).is_err() {
            tracing::warn!("change bus set twice; keeping the first");
        }
    }

    /// A membership changed (already stored): forget it here, and on every other node before the change is
    /// acknowledged to the client.
    async fn member_changed(&self, conversation: ConversationId, user: UserId) {
        self.membership.invalidate(&(conversation, user));
        if let Some(bus) = self.changes.get() {
            bus.announce(Change::Membership { conversation, user }).await;
        }
    }

    /// What the membership cache holds.
    pub fn footprint(&self) -> crate::footprint::Footprint {
        self.membership.footprint()
    }

    /// Gives back what the membership cache holds past its TTL.
    pub fn purge_expired(&self) {
        self.membership.purge_expired();
    }

    /// Records a change as a notice in the conversation, so every member's devices (and a departed
    /// member's) learn of it in order. The change itself is already stored: a failure here is logged, not
    /// reported, since retrying the change would now conflict.
    async fn notice(&self, principal: Principal, id: ConversationId, event: SystemEvent) {
        if let Err(e) = self.submitter.submit(principal, id, Op::System { event }).await {
            tracing::warn!(conversation = %id, error = %e, "could not record a membership notice");
        }
    }

    /// The caller's membership, or `not_found` (a non-member may not learn that the conversation exists).
    pub async fn require_member(&self, principal: Principal, id: ConversationId) -> CoreResult<Member> {
        let key = (id, principal.user);
        let member = match self.membership.get(&key) {
            Some(cached) => cached,
            None => {
                let generation = self.membership.generation();
                let fresh = self.stores.conversations.member(id, principal.user).await?;
                self.membership.insert_unless_invalidated(generation, key, fresh.clone());
                fresh
            }
        };
        member.ok_or_else(|| CoreError::not_found("no such conversation"))
    }

    /// Returns the pair's direct conversation and whether this call created it.
    pub async fn create_direct(&self, principal: Principal, peer: UserId) -> CoreResult<(ConversationDetails, bool)> {
        if peer == principal.user {
            return Err(CoreError::invalid("a direct conversation needs another user"));
        }
        self.require_user(peer).await?;
        self.require_unblocked(principal.user, peer).await?;
        let candidate = Conversation {
            id: ConversationId::new(),
            kind: ConversationKind::Direct,
            title: None,
            created_by: principal.user,
            created_at: now_millis(),
        };
        let conversation = self.stores.conversations.get_or_create_direct(&candidate, principal.user, peer).await?;
        self.invalidate_all(conversation.id, &[principal.user, peer]).await;
        let created = conversation.id == candidate.id;
        Ok((self.details_of(conversation).await?, created))
    }

    pub async fn create_group(
        &self,
        principal: Principal,
        title: &str,
        members: Vec<UserId>,
    ) -> CoreResult<ConversationDetails> {
        let title = self.validate_title(title)?;
        let others: BTreeSet<UserId> = members.into_iter().filter(|u| *u != principal.user).collect();
        if others.len() + 1 > self.limits.max_group_members {
            return Err(CoreError::new(
                herald_proto::ErrorCode::LimitExceeded,
                format!("a group has at most {} members", self.limits.max_group_members),
            ));
        }
        for user in &others {
            self.require_user(*user).await?;
            self.require_unblocked(principal.user, *user).await?;
        }
        let now = now_millis();
        let conversation = Conversation {
            id: ConversationId::new(),
            kind: ConversationKind::Group,
            title: Some(title),
            created_by: principal.user,
            created_at: now,
        };
        let mut all = vec![Member { user_id: principal.user, role: Role::Owner, joined_at: now }];
        all.extend(others.iter().map(|u| Member { user_id: *u, role: Role::Member, joined_at: now }));
        self.stores.conversations.create_group(&conversation, &all).await?;
        self.details_of(conversation).await
    }

    pub async fn details(&self, principal: Principal, id: ConversationId) -> CoreResult<ConversationDetails> {
        self.require_member(principal, id).await?;
        let conversation = self.conversation(id).await?;
        self.details_of(conversation).await
    }

    pub async fn set_title(
        &self,
        principal: Principal,
        id: ConversationId,
        title: &str,
    ) -> CoreResult<ConversationDetails> {
        let me = self.require_member(principal, id).await?;
        let conversation = self.require_group(id).await?;
        require_role(&me, Role::Admin, "only an admin can rename the group")?;
        let title = self.validate_title(title)?;
        self.stores.conversations.set_title(id, &title).await?;
        self.notice(principal, id, SystemEvent::TitleChanged { title: title.clone() }).await;
        self.details_of(Conversation { title: Some(title), ..conversation }).await
    }

    pub async fn add_member(&self, principal: Principal, id: ConversationId, user: UserId) -> CoreResult<Member> {
        let me = self.require_member(principal, id).await?;
        self.require_group(id).await?;
        require_role(&me, Role::Admin, "only an admin can add members")?;
        self.require_user(user).await?;
        self.require_unblocked(principal.user, user).await?;
        let member = Member { user_id: user, role: Role::Member, joined_at: now_millis() };
        self.stores.conversations.add_member(id, &member, self.limits.max_group_members).await.map_err(
            |e| match e {
                StoreError::Conflict(_) => CoreError::conflict("already a member"),
                StoreError::LimitExceeded(_) => CoreError::new(
                    herald_proto::ErrorCode::LimitExceeded,
                    format!("a group has at most {} members", self.limits.max_group_members),
                ),
                other => other.into(),
            },
        )?;
        self.member_changed(id, user).await;
        self.notice(principal, id, SystemEvent::MemberAdded { user_id: user }).await;
        Ok(member)
    }

    /// Removes `user` from the group: leaving when it is the caller, otherwise an admin removing someone of
    /// a lower role. An owner who leaves hands ownership to the longest-standing admin, else member.
    pub async fn remove_member(&self, principal: Principal, id: ConversationId, user: UserId) -> CoreResult<()> {
        let me = self.require_member(principal, id).await?;
        self.require_group(id).await?;
        if user != principal.user {
            require_role(&me, Role::Admin, "only an admin can remove members")?;
            let target = self
                .stores
                .conversations
                .member(id, user)
                .await?
                .ok_or_else(|| CoreError::not_found("not a member"))?;
            if target.role >= me.role {
                return Err(CoreError::forbidden("you can only remove members of a lower role"));
            }
        }
        if !self.stores.conversations.remove_member(id, user).await? {
            return Err(CoreError::not_found("not a member"));
        }
        self.member_changed(id, user).await;
        let event = if user == principal.user {
            SystemEvent::MemberLeft { user_id: user }
        } else {
            SystemEvent::MemberRemoved { user_id: user }
        };
        self.notice(principal, id, event).await;
        if user == principal.user && me.role == Role::Owner {
            let members = self.stores.conversations.members(id).await?;
            let successor = members.iter().find(|m| m.role == Role::Admin).or(members.first());
            if let Some(next) = successor {
                self.stores.conversations.set_role(id, next.user_id, Role::Owner).await?;
                self.member_changed(id, next.user_id).await;
                self.notice(principal, id, SystemEvent::RoleChanged { user_id: next.user_id, role: Role::Owner }).await;
            }
        }
        Ok(())
    }

    /// Changes a member's role. Only the owner may; making someone owner hands ownership over.
    pub async fn set_role(
        &self,
        principal: Principal,
        id: ConversationId,
        user: UserId,
        role: Role,
    ) -> CoreResult<Member> {
        let me = self.require_member(principal, id).await?;
        self.require_group(id).await?;
        require_role(&me, Role::Owner, "only the owner can change roles")?;
        if user == principal.user {
            return Err(CoreError::invalid("the owner's role changes only by handing ownership to another member"));
        }
        let target =
            self.stores.conversations.member(id, user).await?.ok_or_else(|| CoreError::not_found("not a member"))?;
        self.stores.conversations.set_role(id, user, role).await?;
        self.member_changed(id, user).await;
        self.notice(principal, id, SystemEvent::RoleChanged { user_id: user, role }).await;
        if role == Role::Owner {
            self.stores.conversations.set_role(id, principal.user, Role::Admin).await?;
            self.member_changed(id, principal.user).await;
            self.notice(principal, id, SystemEvent::RoleChanged { user_id: principal.user, role: Role::Admin }).await;
        }
        Ok(Member { role, ..target })
    }

    /// The caller's conversations, most recently active first, `limit` at a time. The cursor is opaque.
    pub async fn list(
        &self,
        principal: Principal,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> CoreResult<ConversationPage> {
        let limit = self.page_size(limit)?;
        let after = cursor.map(parse_list_cursor).transpose()?;
        let memberships = self.stores.conversations.memberships(principal.user).await?;
        let mut rows = Vec::with_capacity(memberships.len());
        for (id, member) in memberships {
            let Some(conversation) = self.stores.conversations.conversation(id).await? else { continue };
            rows.push(self.summary(principal.user, conversation, member.role).await?);
        }
        // Newest activity first; the id breaks ties so the order (and the cursor) is total.
        rows.sort_by_key(|r| std::cmp::Reverse((r.last_activity_at, r.conversation.id)));
        if let Some((at, id)) = after {
            rows.retain(|r| (r.last_activity_at, r.conversation.id) < (at, id));
        }
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor =
            if more { rows.last().map(|r| format!("{}_{}", r.last_activity_at, r.conversation.id)) } else { None };
        Ok(ConversationPage { conversations: rows, next_cursor })
    }

    pub fn page_size(&self, limit: Option<u32>) -> CoreResult<usize> {
        match limit {
            None => Ok(50.min(self.limits.max_page)),
            Some(0) => Err(CoreError::invalid("limit must be at least 1")),
            Some(n) if n as usize > self.limits.max_page => {
                Err(CoreError::invalid(format!("limit must be at most {}", self.limits.max_page)))
            }
            Some(n) => Ok(n as usize),
        }
    }

    async fn summary(&self, user: UserId, conversation: Conversation, role: Role) -> CoreResult<ConversationSummary> {
        let id = conversation.id;
        let last_seq = self.stores.messages.last_seq(id).await?;
        let last_message = match last_seq {
            0 => None,
            seq => self.stores.messages.message(id, seq).await?,
        };
        let read = self.stores.position(id, user).await?.read;
        let unread = self.stores.unread(id, last_seq, read).await?;
        let peer = match conversation.kind {
            ConversationKind::Direct => {
                self.stores.conversations.members(id).await?.iter().map(|m| m.user_id).find(|u| *u != user)
            }
            ConversationKind::Group => None,
        };
        Ok(ConversationSummary {
            last_activity_at: last_message.as_ref().map_or(conversation.created_at, |m| m.sent_at),
            conversation,
            role,
            peer,
            last_seq,
            last_message,
            read: read.min(last_seq),
            unread,
        })
    }

    async fn details_of(&self, conversation: Conversation) -> CoreResult<ConversationDetails> {
        let members = self.stores.conversations.members(conversation.id).await?;
        let last_seq = self.stores.messages.last_seq(conversation.id).await?;
        Ok(ConversationDetails { conversation, members, last_seq })
    }

    async fn conversation(&self, id: ConversationId) -> CoreResult<Conversation> {
        self.stores.conversations.conversation(id).await?.ok_or_else(|| CoreError::not_found("no such conversation"))
    }

    async fn require_group(&self, id: ConversationId) -> CoreResult<Conversation> {
        let conversation = self.conversation(id).await?;
        if conversation.kind != ConversationKind::Group {
            return Err(CoreError::invalid("a direct conversation has fixed members and no title"));
        }
        Ok(conversation)
    }

    async fn require_user(&self, user: UserId) -> CoreResult<()> {
        match self.stores.users.user(user).await? {
            Some(_) => Ok(()),
            None => Err(CoreError::not_found(format!("no such user {user}"))),
        }
    }

    fn validate_title(&self, title: &str) -> CoreResult<String> {
        let title = title.trim();
        let chars = title.chars().count();
        if chars == 0 || chars > self.limits.max_title_chars || title.chars().any(char::is_control) {
            return Err(CoreError::invalid(format!(
                "title must be 1 to {} printable characters",
                self.limits.max_title_chars
            )));
        }
        Ok(title.to_owned())
    }

    async fn invalidate_all(&self, id: ConversationId, users: &[UserId]) {
        for user in users {
            self.member_changed(id, *user).await;
        }
    }
}

fn require_role(member: &Member, at_least: Role, message: &str) -> CoreResult<()> {
    if member.role >= at_least { Ok(()) } else { Err(CoreError::forbidden(message)) }
}

fn parse_list_cursor(cursor: &str) -> CoreResult<(Millis, ConversationId)> {
    let bad = || CoreError::invalid("malformed cursor");
    let (at, id) = cursor.split_once('_').ok_or_else(bad)?;
    Ok((at.parse().map_err(|_| bad())?, id.parse().map_err(|_| bad())?))
}

impl ChangeListener for Conversations {
    fn apply(&self, change: &Change) {
        match *change {
            Change::Membership { conversation, user } => self.membership.invalidate(&(conversation, user)),
            Change::Block { .. } | Change::Revoked { .. } => {}
        }
    }

    fn forget_all(&self) {
        self.membership.clear();
    }
}
