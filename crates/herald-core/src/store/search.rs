//! The search seam: which messages hold a query's words. Each backend keeps its own index of the words
//! [`crate::search::indexed_words`] gives each message, fed by its own `MessageStore::commit`, so both answer
//! the same question the same way.

use super::StoreResult;
use async_trait::async_trait;
use herald_proto::ConversationId;

/// A query as a backend sees it: words already cut and lowercased by [`crate::search::words`].
#[derive(Clone, Copy, Debug)]
pub struct SearchRequest<'a> {
    /// Every one of them must start a word of the message (a prefix match: `meet` finds "meeting").
    pub terms: &'a [String],
    /// Only messages of these conversations: the ones the caller may read.
    pub conversations: &'a [ConversationId],
    /// Results to skip, best first.
    pub offset: usize,
    pub limit: usize,
}

/// A message that matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchHit {
    pub conversation: ConversationId,
    pub seq: u64,
}

#[async_trait]
pub trait SearchStore: Send + Sync + 'static {
    /// The matching messages, best first (more of the query's words, and rarer ones, rank higher; the newest first
    /// among equals). A message committed by `MessageStore::commit` is found within a second of the commit
    /// (PostgreSQL: at once; the embedded index: at its next refresh); an edit replaces the message's words, and a
    /// deleted message and a notice have none.
    async fn search(&self, request: &SearchRequest<'_>) -> StoreResult<Vec<SearchHit>>;
}
