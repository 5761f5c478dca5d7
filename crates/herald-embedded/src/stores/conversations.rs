use super::{decode, encode, recorded, refused_again};
use crate::db::{EmbeddedDb, backend};
use crate::tables::{CONVERSATIONS, DIRECT_PAIRS, MAX_ID, MEMBERS, MEMBERSHIPS, MIN_ID};
use async_trait::async_trait;
use herald_core::store::{ConversationStore, StoreError, StoreResult};
use herald_proto::{Conversation, ConversationId, Member, Role, UserId};
use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

/// The first byte of the journal record of a write to the conversation tables (see `users::ACCOUNT_WRITE`).
pub(super) const CONVERSATION_WRITE: u8 = 3;

/// A write to the conversation tables, journaled like account writes and for the same reason: creating a
/// conversation or changing its members would otherwise force a durable redb commit (a database sync and a
/// snapshot of the buffered feed rows) each time. Replaying a record runs the same checks on the same state.
#[derive(Serialize, Deserialize)]
enum ConversationWrite {
    CreateGroup { conversation: Conversation, members: Vec<Member> },
    GetOrCreateDirect { candidate: Conversation, a: UserId, b: UserId },
    SetTitle { id: ConversationId, title: String },
    AddMember { id: ConversationId, member: Member, max_members: usize },
    RemoveMember { id: ConversationId, user: UserId },
    SetRole { id: ConversationId, user: UserId, role: Role },
}

/// What a write did: whether it changed anything, or (for a direct pair) the conversation found or created.
enum Outcome {
    Changed(bool),
    Direct(Conversation),
}

fn insert_member(txn: &WriteTransaction, id: ConversationId, member: &Member) -> StoreResult<()> {
    let bytes = encode(member)?;
    let (c, u) = (id.to_bytes(), member.user_id.to_bytes());
    txn.open_table(MEMBERS).map_err(backend)?.insert((c, u), bytes.as_slice()).map_err(backend)?;
    txn.open_table(MEMBERSHIPS).map_err(backend)?.insert((u, c), ()).map_err(backend)?;
    Ok(())
}

/// Applies a write. Checks before it writes, so a refused write leaves the shared transaction untouched.
fn apply(txn: &WriteTransaction, write: &ConversationWrite) -> StoreResult<Outcome> {
    match write {
        ConversationWrite::CreateGroup { conversation, members } => {
            txn.open_table(CONVERSATIONS)
                .map_err(backend)?
                .insert(conversation.id.to_bytes(), encode(conversation)?.as_slice())
                .map_err(backend)?;
            for member in members {
                insert_member(txn, conversation.id, member)?;
            }
            Ok(Outcome::Changed(true))
        }
        ConversationWrite::GetOrCreateDirect { candidate, a, b } => {
            let pair = if a <= b { (a.to_bytes(), b.to_bytes()) } else { (b.to_bytes(), a.to_bytes()) };
            let mut pairs = txn.open_table(DIRECT_PAIRS).map_err(backend)?;
            let mut conversations = txn.open_table(CONVERSATIONS).map_err(backend)?;
            let existing = pairs.get(pair).map_err(backend)?.map(|v| v.value());
            if let Some(id) = existing {
                let found = conversations.get(id).map_err(backend)?.map(|v| decode(v.value())).transpose()?;
                return found
                    .map(Outcome::Direct)
                    .ok_or_else(|| backend("direct pair points to a missing conversation"));
            }
            pairs.insert(pair, candidate.id.to_bytes()).map_err(backend)?;
            conversations.insert(candidate.id.to_bytes(), encode(candidate)?.as_slice()).map_err(backend)?;
            drop((pairs, conversations));
            for user in [a, b] {
                let member = Member { user_id: *user, role: Role::Member, joined_at: candidate.created_at };
                insert_member(txn, candidate.id, &member)?;
            }
            Ok(Outcome::Direct(candidate.clone()))
        }
        ConversationWrite::SetTitle { id, title } => {
            let mut table = txn.open_table(CONVERSATIONS).map_err(backend)?;
            let current: Option<Conversation> =
                table.get(id.to_bytes()).map_err(backend)?.map(|v| decode(v.value())).transpose()?;
            let Some(mut conversation) = current else { return Ok(Outcome::Changed(false)) };
            conversation.title = Some(title.clone());
            table.insert(id.to_bytes(), encode(&conversation)?.as_slice()).map_err(backend)?;
            Ok(Outcome::Changed(true))
        }
        ConversationWrite::AddMember { id, member, max_members } => {
            let c = id.to_bytes();
            {
                let table = txn.open_table(MEMBERS).map_err(backend)?;
                if table.get((c, member.user_id.to_bytes())).map_err(backend)?.is_some() {
                    return Err(StoreError::Conflict("already a member".into()));
                }
                let count = table.range((c, MIN_ID)..=(c, MAX_ID)).map_err(backend)?.count();
                if count >= *max_members {
                    return Err(StoreError::LimitExceeded(format!("at most {max_members} members")));
                }
            }
            insert_member(txn, *id, member)?;
            Ok(Outcome::Changed(true))
        }
        ConversationWrite::RemoveMember { id, user } => {
            let (c, u) = (id.to_bytes(), user.to_bytes());
            let removed = txn.open_table(MEMBERS).map_err(backend)?.remove((c, u)).map_err(backend)?.is_some();
            txn.open_table(MEMBERSHIPS).map_err(backend)?.remove((u, c)).map_err(backend)?;
            Ok(Outcome::Changed(removed))
        }
        ConversationWrite::SetRole { id, user, role } => {
            let mut table = txn.open_table(MEMBERS).map_err(backend)?;
            let key = (id.to_bytes(), user.to_bytes());
            let current: Option<Member> = table.get(key).map_err(backend)?.map(|v| decode(v.value())).transpose()?;
            let Some(member) = current else { return Ok(Outcome::Changed(false)) };
            table.insert(key, encode(&Member { role: *role, ..member })?.as_slice()).map_err(backend)?;
            Ok(Outcome::Changed(true))
        }
    }
}

/// Applies a journaled conversation write again (see `db`'s recovery).
pub(super) fn replay(txn: &WriteTransaction, record: &[u8]) -> StoreResult<()> {
    refused_again(apply(txn, &recorded(record)?).map(|_| ()))
}

impl EmbeddedDb {
    async fn conversation_write(
        &self,
        query_type: &'static str,
        table: &'static str,
        write: ConversationWrite,
    ) -> StoreResult<Outcome> {
        self.logical_write(query_type, table, CONVERSATION_WRITE, write, apply).await
    }

    /// A write whose outcome is whether it changed anything.
    async fn conversation_change(
        &self,
        query_type: &'static str,
        table: &'static str,
        write: ConversationWrite,
    ) -> StoreResult<bool> {
        match self.conversation_write(query_type, table, write).await? {
            Outcome::Changed(changed) => Ok(changed),
            Outcome::Direct(_) => Err(backend("a direct conversation from a write that makes none")),
        }
    }
}

#[async_trait]
impl ConversationStore for EmbeddedDb {
    async fn create_group(&self, conversation: &Conversation, members: &[Member]) -> StoreResult<()> {
        let write = ConversationWrite::CreateGroup { conversation: conversation.clone(), members: members.to_vec() };
        self.conversation_change("insert", "conversations", write).await.map(|_| ())
    }

    async fn get_or_create_direct(&self, candidate: &Conversation, a: UserId, b: UserId) -> StoreResult<Conversation> {
        let write = ConversationWrite::GetOrCreateDirect { candidate: candidate.clone(), a, b };
        match self.conversation_write("upsert", "direct_pairs", write).await? {
            Outcome::Direct(conversation) => Ok(conversation),
            Outcome::Changed(_) => Err(backend("no conversation from a direct pair's write")),
        }
    }

    async fn conversation(&self, id: ConversationId) -> StoreResult<Option<Conversation>> {
        self.read("select", "conversations", |txn| {
            let table = txn.open_table(CONVERSATIONS).map_err(backend)?;
            table.get(id.to_bytes()).map_err(backend)?.map(|v| decode(v.value())).transpose()
        })
    }

    async fn set_title(&self, id: ConversationId, title: &str) -> StoreResult<()> {
        let write = ConversationWrite::SetTitle { id, title: title.to_owned() };
        self.conversation_change("update", "conversations", write).await.map(|_| ())
    }

    async fn members(&self, id: ConversationId) -> StoreResult<Vec<Member>> {
        self.read("range", "members", |txn| {
            let table = txn.open_table(MEMBERS).map_err(backend)?;
            let c = id.to_bytes();
            let mut members: Vec<Member> = Vec::new();
            for entry in table.range((c, MIN_ID)..=(c, MAX_ID)).map_err(backend)? {
                members.push(decode(entry.map_err(backend)?.1.value())?);
            }
            members.sort_by_key(|m| (m.joined_at, m.user_id));
            Ok(members)
        })
    }

    async fn member(&self, id: ConversationId, user: UserId) -> StoreResult<Option<Member>> {
        self.read("select", "members", |txn| {
            let table = txn.open_table(MEMBERS).map_err(backend)?;
            table.get((id.to_bytes(), user.to_bytes())).map_err(backend)?.map(|v| decode(v.value())).transpose()
        })
    }

    async fn add_member(&self, id: ConversationId, member: &Member, max_members: usize) -> StoreResult<()> {
        let write = ConversationWrite::AddMember { id, member: member.clone(), max_members };
        self.conversation_change("insert", "members", write).await.map(|_| ())
    }

    async fn remove_member(&self, id: ConversationId, user: UserId) -> StoreResult<bool> {
        self.conversation_change("delete", "members", ConversationWrite::RemoveMember { id, user }).await
    }

    async fn set_role(&self, id: ConversationId, user: UserId, role: Role) -> StoreResult<bool> {
        self.conversation_change("update", "members", ConversationWrite::SetRole { id, user, role }).await
    }

    async fn memberships(&self, user: UserId) -> StoreResult<Vec<(ConversationId, Member)>> {
        self.read("range", "memberships", |txn| {
            let index = txn.open_table(MEMBERSHIPS).map_err(backend)?;
            let members = txn.open_table(MEMBERS).map_err(backend)?;
            let u = user.to_bytes();
            let mut out = Vec::new();
            for entry in index.range((u, MIN_ID)..=(u, MAX_ID)).map_err(backend)? {
                let c = entry.map_err(backend)?.0.value().1;
                if let Some(v) = members.get((c, u)).map_err(backend)? {
                    out.push((ConversationId::from_bytes(c), decode(v.value())?));
                }
            }
            Ok(out)
        })
    }
}
