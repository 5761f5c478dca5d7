//! Full-text search on PostgreSQL: each message's words (the core's, see `herald_core::search`) in the
//! `search` tsvector column written by the commit, and prefix queries over it served by its GIN index.

use crate::PostgresDb;
use crate::db::{Freshness, big, pg, unsigned};
use async_trait::async_trait;
use herald_core::search::indexed_words;
use herald_core::store::{SearchHit, SearchRequest, SearchStore, StoreResult};
use herald_proto::{ConversationId, Message};
use tokio_postgres::types::Type;
use uuid::Uuid;

/// The highest position a tsvector records (PostgreSQL's limit); later words share it.
const MAX_POSITION: usize = 16_383;

/// The message's words as a tsvector literal (`'meet':1 'noon':2`), or `None` when it has none (deleted, a
/// notice, no text): the value of its `search` column.
pub(crate) fn tsvector(message: &Message) -> Option<String> {
    let words = indexed_words(message);
    if words.is_empty() {
        return None;
    }
    let lexemes: Vec<String> =
        words.iter().enumerate().map(|(i, w)| format!("{}:{}", quoted(w), (i + 1).min(MAX_POSITION))).collect();
    Some(lexemes.join(" "))
}

/// Every term as a prefix, all required: `'meet':* & 'noon':*`.
fn tsquery(terms: &[String]) -> String {
    terms.iter().map(|t| format!("{}:*", quoted(t))).collect::<Vec<_>>().join(" & ")
}

/// A lexeme in a tsvector or tsquery literal: quoted, its quotes doubled and backslashes escaped. (The core's
/// words are letters and digits only; this keeps the literal sound whatever they become.)
fn quoted(word: &str) -> String {
    format!("'{}'", word.replace('\\', "\\\\").replace('\'', "''"))
}

#[async_trait]
impl SearchStore for PostgresDb {
    /// May lag: a replica a moment behind finds a message a moment later.
    async fn search(&self, request: &SearchRequest<'_>) -> StoreResult<Vec<SearchHit>> {
        if request.terms.is_empty() || request.conversations.is_empty() || request.limit == 0 {
            return Ok(Vec::new());
        }
        let query = tsquery(request.terms);
        let conversations: Vec<Uuid> = request.conversations.iter().map(|c| c.0).collect();
        let offset = big(request.offset as u64);
        let limit = big(request.limit as u64);
        self.pools
            .read("search", "messages", Freshness::MayLag, |client| {
                let (query, conversations) = (query.clone(), conversations.clone());
                async move {
                    let rows = client
                        .query_typed(
                            "SELECT conversation_id, seq FROM messages
                          WHERE search @@ $1::tsquery AND conversation_id = ANY($2::uuid[])
                          ORDER BY ts_rank(search, $1::tsquery) DESC, sent_at DESC, seq DESC
                          OFFSET $3 LIMIT $4",
                            &[
                                (&query, Type::TEXT),
                                (&conversations, Type::UUID_ARRAY),
                                (&offset, Type::INT8),
                                (&limit, Type::INT8),
                            ],
                        )
                        .await
                        .map_err(pg)?;
                    Ok(rows
                        .iter()
                        .map(|r| SearchHit { conversation: ConversationId(r.get(0)), seq: unsigned(r.get(1)) })
                        .collect())
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_quote_every_lexeme() {
        assert_eq!(tsquery(&["meet".into(), "o'neil".into()]), "'meet':* & 'o''neil':*");
        assert_eq!(quoted("a\\b"), "'a\\\\b'");
    }
}
