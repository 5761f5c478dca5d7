//! Conversations and their members.

use crate::PostgresDb;
use crate::db::{Freshness, backend, pg};
use async_trait::async_trait;
use herald_core::store::{ConversationStore, StoreError, StoreResult};
use herald_proto::{Conversation, ConversationId, ConversationKind, Member, Role, UserId};
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, Row};

const CONVERSATION_COLUMNS: &str = "id, kind, title, created_by, created_at";

fn kind_text(kind: ConversationKind) -> &'static str {
    match kind {
        ConversationKind::Direct => "direct",
        ConversationKind::Group => "group",
    }
}

fn role_text(role: Role) -> &'static str {
    match role {
        Role::Member => "member",
        Role::Admin => "admin",
        Role::Owner => "owner",
    }
}

fn role(text: &str) -> StoreResult<Role> {
    match text {
        "member" => Ok(Role::Member),
        "admin" => Ok(Role::Admin),
        "owner" => Ok(Role::Owner),
        other => Err(backend(format!("corrupt member row: role {other:?}"))),
    }
}

fn conversation(row: &Row) -> StoreResult<Conversation> {
    let kind = match row.get::<_, &str>(1) {
        "direct" => ConversationKind::Direct,
        "group" => ConversationKind::Group,
        other => return Err(backend(format!("corrupt conversation row: kind {other:?}"))),
    };
    Ok(Conversation {
        id: ConversationId(row.get(0)),
        kind,
        title: row.get(2),
        created_by: UserId(row.get(3)),
        created_at: row.get(4),
    })
}

/// A member from `user_id, role, joined_at`.
fn member(row: &Row) -> StoreResult<Member> {
    Ok(Member { user_id: UserId(row.get(0)), role: role(row.get(1))?, joined_at: row.get(2) })
}

async fn insert_conversation(client: &impl GenericClient, c: &Conversation) -> StoreResult<()> {
    client
        .execute_typed(
            &format!("INSERT INTO conversations ({CONVERSATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"),
            &[
                (&c.id.0, Type::UUID),
                (&kind_text(c.kind), Type::TEXT),
                (&c.title, Type::TEXT),
                (&c.created_by.0, Type::UUID),
                (&c.created_at, Type::INT8),
            ],
        )
        .await
        .map_err(pg)?;
    Ok(())
}

async fn insert_members(client: &impl GenericClient, id: ConversationId, members: &[Member]) -> StoreResult<()> {
    let users: Vec<uuid::Uuid> = members.iter().map(|m| m.user_id.0).collect();
    let roles: Vec<&str> = members.iter().map(|m| role_text(m.role)).collect();
    let joined: Vec<i64> = members.iter().map(|m| m.joined_at).collect();
    client
        .execute_typed(
            "INSERT INTO members (conversation_id, user_id, role, joined_at)
             SELECT $1, u, r, j FROM unnest($2::uuid[], $3::text[], $4::bigint[]) AS m(u, r, j)",
            &[(&id.0, Type::UUID), (&users, Type::UUID_ARRAY), (&roles, Type::TEXT_ARRAY), (&joined, Type::INT8_ARRAY)],
        )
        .await
        .map_err(pg)?;
    Ok(())
}

/// Serialises membership changes of one conversation (the member count check of `add_member`) across
/// connections and nodes, for the rest of the transaction.
async fn lock_conversation(client: &impl GenericClient, id: ConversationId) -> StoreResult<()> {
    client
        .execute_typed("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))", &[(&id.0, Type::UUID)])
        .await
        .map_err(pg)?;
    Ok(())
}

#[async_trait]
impl ConversationStore for PostgresDb {
    async fn create_group(&self, conversation: &Conversation, members: &[Member]) -> StoreResult<()> {
        self.pools
            .write("insert", "conversations", async |client| {
                let txn = client.transaction().await.map_err(pg)?;
                insert_conversation(&*txn, conversation).await?;
                insert_members(&*txn, conversation.id, members).await?;
                txn.commit().await.map_err(pg)
            })
            .await
    }

    async fn get_or_create_direct(&self, candidate: &Conversation, a: UserId, b: UserId) -> StoreResult<Conversation> {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        self.pools
            .write("upsert", "direct_pairs", async |client| {
                let txn = client.transaction().await.map_err(pg)?;
                // The pair's row decides: of two concurrent calls, the second waits for the first's commit and
                // then finds its conversation.
                let claimed = txn
                    .execute_typed(
                        "INSERT INTO direct_pairs (low, high, conversation_id) VALUES ($1, $2, $3)
                         ON CONFLICT (low, high) DO NOTHING",
                        &[(&low.0, Type::UUID), (&high.0, Type::UUID), (&candidate.id.0, Type::UUID)],
                    )
                    .await
                    .map_err(pg)?;
                if claimed == 0 {
                    let row = txn
                        .query_typed_one(
                            &format!(
                                "SELECT {CONVERSATION_COLUMNS} FROM conversations
                                  WHERE id = (SELECT conversation_id FROM direct_pairs WHERE low = $1 AND high = $2)"
                            ),
                            &[(&low.0, Type::UUID), (&high.0, Type::UUID)],
                        )
                        .await
                        .map_err(|e| backend(format!("a direct pair points to a missing conversation: {e}")))?;
                    return conversation(&row);
                }
                insert_conversation(&*txn, candidate).await?;
                let members: Vec<Member> = [a, b]
                    .into_iter()
                    .map(|user_id| Member { user_id, role: Role::Member, joined_at: candidate.created_at })
                    .collect();
                insert_members(&*txn, candidate.id, &members).await?;
                txn.commit().await.map_err(pg)?;
                Ok(candidate.clone())
            })
            .await
    }

    /// Fresh: a conversation just created is used at once (its first message, its members' reads).
    async fn conversation(&self, id: ConversationId) -> StoreResult<Option<Conversation>> {
        self.pools
            .read("select", "conversations", Freshness::Fresh, |client| async move {
                let row = client
                    .query_typed_opt(
                        &format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1"),
                        &[(&id.0, Type::UUID)],
                    )
                    .await
                    .map_err(pg)?;
                row.as_ref().map(conversation).transpose()
            })
            .await
    }

    async fn set_title(&self, id: ConversationId, title: &str) -> StoreResult<()> {
        self.pools
            .write("update", "conversations", async |client| {
                client
                    .execute_typed(
                        "UPDATE conversations SET title = $2 WHERE id = $1",
                        &[(&id.0, Type::UUID), (&title, Type::TEXT)],
                    )
                    .await
                    .map_err(pg)
            })
            .await
            .map(|_| ())
    }

    /// Fresh: who may read and who receives a message is decided by it.
    async fn members(&self, id: ConversationId) -> StoreResult<Vec<Member>> {
        self.pools
            .read("range", "members", Freshness::Fresh, |client| async move {
                let rows = client
                    .query_typed(
                        "SELECT user_id, role, joined_at FROM members WHERE conversation_id = $1
                          ORDER BY joined_at, user_id",
                        &[(&id.0, Type::UUID)],
                    )
                    .await
                    .map_err(pg)?;
                rows.iter().map(member).collect()
            })
            .await
    }

    /// Fresh: every authorisation check of a conversation asks it.
    async fn member(&self, id: ConversationId, user: UserId) -> StoreResult<Option<Member>> {
        self.pools
            .read("select", "members", Freshness::Fresh, |client| async move {
                let row = client
                    .query_typed_opt(
                        "SELECT user_id, role, joined_at FROM members WHERE conversation_id = $1 AND user_id = $2",
                        &[(&id.0, Type::UUID), (&user.0, Type::UUID)],
                    )
                    .await
                    .map_err(pg)?;
                row.as_ref().map(member).transpose()
            })
            .await
    }

    async fn add_member(&self, id: ConversationId, member: &Member, max_members: usize) -> StoreResult<()> {
        let max = i64::try_from(max_members).unwrap_or(i64::MAX);
        self.pools
            .write("insert", "members", async |client| {
                let txn = client.transaction().await.map_err(pg)?;
                lock_conversation(&*txn, id).await?;
                let row = txn
                    .query_typed_one(
                        "SELECT count(*), count(*) FILTER (WHERE user_id = $2) FROM members WHERE conversation_id = $1",
                        &[(&id.0, Type::UUID), (&member.user_id.0, Type::UUID)],
                    )
                    .await
                    .map_err(pg)?;
                let (count, already): (i64, i64) = (row.get(0), row.get(1));
                if already > 0 {
                    return Err(StoreError::Conflict("already a member".into()));
                }
                if count >= max {
                    return Err(StoreError::LimitExceeded(format!("at most {max_members} members")));
                }
                insert_members(&*txn, id, std::slice::from_ref(member)).await?;
                txn.commit().await.map_err(pg)
            })
            .await
    }

    async fn remove_member(&self, id: ConversationId, user: UserId) -> StoreResult<bool> {
        let removed = self
            .pools
            .write("delete", "members", async |client| {
                client
                    .execute_typed(
                        "DELETE FROM members WHERE conversation_id = $1 AND user_id = $2",
                        &[(&id.0, Type::UUID), (&user.0, Type::UUID)],
                    )
                    .await
                    .map_err(pg)
            })
            .await?;
        Ok(removed == 1)
    }

    async fn set_role(&self, id: ConversationId, user: UserId, role: Role) -> StoreResult<bool> {
        let changed = self
            .pools
            .write("update", "members", async |client| {
                client
                    .execute_typed(
                        "UPDATE members SET role = $3 WHERE conversation_id = $1 AND user_id = $2",
                        &[(&id.0, Type::UUID), (&user.0, Type::UUID), (&role_text(role), Type::TEXT)],
                    )
                    .await
                    .map_err(pg)
            })
            .await?;
        Ok(changed == 1)
    }

    /// May lag: the conversation list; what a member may do is checked with `member`, which is fresh.
    async fn memberships(&self, user: UserId) -> StoreResult<Vec<(ConversationId, Member)>> {
        self.pools
            .read("range", "memberships", Freshness::MayLag, |client| async move {
                let rows = client
                    .query_typed(
                        "SELECT user_id, role, joined_at, conversation_id FROM members WHERE user_id = $1
                          ORDER BY conversation_id",
                        &[(&user.0, Type::UUID)],
                    )
                    .await
                    .map_err(pg)?;
                rows.iter().map(|row| Ok((ConversationId(row.get(3)), member(row)?))).collect()
            })
            .await
    }
}
