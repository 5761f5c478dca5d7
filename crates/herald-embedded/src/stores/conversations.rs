use super::{decode, encode};
use crate::db::{EmbeddedDb, backend};
use crate::tables::{CONVERSATIONS, DIRECT_PAIRS, MAX_ID, MEMBERS, MEMBERSHIPS, MIN_ID};
use async_trait::async_trait;
use herald_core::store::{ConversationStore, StoreError, StoreResult};
use herald_proto::{Conversation, ConversationId, Member, Role, UserId};
use redb::{ReadableTable, WriteTransaction};

fn insert_member(txn: &WriteTransaction, id: ConversationId, member: &Member) -> StoreResult<()> {
    let bytes = encode(member)?;
    let (c, u) = (id.to_bytes(), member.user_id.to_bytes());
    txn.open_table(MEMBERS).map_err(backend)?.insert((c, u), bytes.as_slice()).map_err(backend)?;
    txn.open_table(MEMBERSHIPS).map_err(backend)?.insert((u, c), ()).map_err(backend)?;
    Ok(())
}

#[async_trait]
impl ConversationStore for EmbeddedDb {
    async fn create_group(&self, conversation: &Conversation, members: &[Member]) -> StoreResult<()> {
        let conversation = conversation.clone();
        let members = members.to_vec();
        let bytes = encode(&conversation)?;
        self.write("insert", "conversations", true, move |txn| {
            txn.open_table(CONVERSATIONS)
                .map_err(backend)?
                .insert(conversation.id.to_bytes(), bytes.as_slice())
                .map_err(backend)?;
            for member in &members {
                insert_member(txn, conversation.id, member)?;
            }
            Ok(())
        })
        .await
    }

    async fn get_or_create_direct(&self, candidate: &Conversation, a: UserId, b: UserId) -> StoreResult<Conversation> {
        let candidate = candidate.clone();
        let bytes = encode(&candidate)?;
        let pair = if a <= b { (a.to_bytes(), b.to_bytes()) } else { (b.to_bytes(), a.to_bytes()) };
        self.write("upsert", "direct_pairs", true, move |txn| {
            let mut pairs = txn.open_table(DIRECT_PAIRS).map_err(backend)?;
            let mut conversations = txn.open_table(CONVERSATIONS).map_err(backend)?;
            let existing = pairs.get(pair).map_err(backend)?.map(|v| v.value());
            if let Some(id) = existing {
                let found = conversations.get(id).map_err(backend)?.map(|v| decode(v.value())).transpose()?;
                return found.ok_or_else(|| backend("direct pair points to a missing conversation"));
            }
            pairs.insert(pair, candidate.id.to_bytes()).map_err(backend)?;
            conversations.insert(candidate.id.to_bytes(), bytes.as_slice()).map_err(backend)?;
            drop((pairs, conversations));
            for user in [a, b] {
                let member = Member { user_id: user, role: Role::Member, joined_at: candidate.created_at };
                insert_member(txn, candidate.id, &member)?;
            }
            Ok(candidate)
        })
        .await
    }

    async fn conversation(&self, id: ConversationId) -> StoreResult<Option<Conversation>> {
        self.read("select", "conversations", |txn| {
            let table = txn.open_table(CONVERSATIONS).map_err(backend)?;
            table.get(id.to_bytes()).map_err(backend)?.map(|v| decode(v.value())).transpose()
        })
    }

    async fn set_title(&self, id: ConversationId, title: &str) -> StoreResult<()> {
        let title = title.to_owned();
        self.write("update", "conversations", true, move |txn| {
            let mut table = txn.open_table(CONVERSATIONS).map_err(backend)?;
            let current: Option<Conversation> =
                table.get(id.to_bytes()).map_err(backend)?.map(|v| decode(v.value())).transpose()?;
            if let Some(mut conversation) = current {
                conversation.title = Some(title);
                table.insert(id.to_bytes(), encode(&conversation)?.as_slice()).map_err(backend)?;
            }
            Ok(())
        })
        .await
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
        let member = member.clone();
        self.write("insert", "members", true, move |txn| {
            let c = id.to_bytes();
            {
                let table = txn.open_table(MEMBERS).map_err(backend)?;
                if table.get((c, member.user_id.to_bytes())).map_err(backend)?.is_some() {
                    return Err(StoreError::Conflict("already a member".into()));
                }
                let count = table.range((c, MIN_ID)..=(c, MAX_ID)).map_err(backend)?.count();
                if count >= max_members {
                    return Err(StoreError::LimitExceeded(format!("at most {max_members} members")));
                }
            }
            insert_member(txn, id, &member)
        })
        .await
    }

    async fn remove_member(&self, id: ConversationId, user: UserId) -> StoreResult<bool> {
        self.write("delete", "members", true, move |txn| {
            let (c, u) = (id.to_bytes(), user.to_bytes());
            let removed = txn.open_table(MEMBERS).map_err(backend)?.remove((c, u)).map_err(backend)?.is_some();
            txn.open_table(MEMBERSHIPS).map_err(backend)?.remove((u, c)).map_err(backend)?;
            Ok(removed)
        })
        .await
    }

    async fn set_role(&self, id: ConversationId, user: UserId, role: Role) -> StoreResult<bool> {
        self.write("update", "members", true, move |txn| {
            let mut table = txn.open_table(MEMBERS).map_err(backend)?;
            let key = (id.to_bytes(), user.to_bytes());
            let current: Option<Member> = table.get(key).map_err(backend)?.map(|v| decode(v.value())).transpose()?;
            match current {
                Some(member) => {
                    table.insert(key, encode(&Member { role, ..member })?.as_slice()).map_err(backend)?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
        .await
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
