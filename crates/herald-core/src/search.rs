//! Full-text search over the messages a user can read: the conversations they belong to now (a member who
//! left or was removed loses the results of that conversation as they lose its history). The backend's index
//! says which messages hold the words; each is then read as it is now and checked again, so an edit or a
//! deletion newer than the index never shows.

use crate::auth::Principal;
use crate::conversations::Conversations;
use crate::store::{SearchRequest, Stores};
use crate::{CoreError, CoreResult};
use herald_proto::{ConversationId, SearchPage, SearchQuery, SearchResult};
use std::sync::Arc;

mod snippet;
mod words;

pub use snippet::snippet;
pub use words::{indexed_words, matches_all, words};

/// Words a query may have: each one is a clause the index must intersect.
const MAX_TERMS: usize = 16;
/// How deep results may be paged: past this, a query should be narrowed, not scrolled.
const MAX_OFFSET: u32 = 1_000;

pub struct Search {
    stores: Stores,
    conversations: Arc<Conversations>,
}

impl Search {
    pub fn new(stores: Stores, conversations: Arc<Conversations>) -> Self {
        Self { stores, conversations }
    }

    pub async fn search(&self, principal: Principal, q: SearchQuery) -> CoreResult<SearchPage> {
        let mut terms = words(&q.q);
        terms.sort();
        terms.dedup();
        if terms.is_empty() {
            return Err(CoreError::invalid("the query has no words to search for"));
        }
        if terms.len() > MAX_TERMS {
            return Err(CoreError::invalid(format!("a query has at most {MAX_TERMS} words")));
        }
        let offset = q.offset.unwrap_or(0);
        if offset > MAX_OFFSET {
            return Err(CoreError::invalid(format!("offset is at most {MAX_OFFSET}: narrow the query instead")));
        }
        let limit = self.conversations.page_size(q.limit)?;
        let conversations: Vec<ConversationId> = match q.conversation {
            Some(id) => {
                self.conversations.require_member(principal, id).await?;
                vec![id]
            }
            None => {
                self.stores.conversations.memberships(principal.user).await?.into_iter().map(|(id, _)| id).collect()
            }
        };
        if conversations.is_empty() {
            return Ok(SearchPage { results: Vec::new(), next: None });
        }
        // One more than the page, to know whether there is a next one.
        let request =
            SearchRequest { terms: &terms, conversations: &conversations, offset: offset as usize, limit: limit + 1 };
        let mut hits = self.stores.search.search(&request).await?;
        let more = hits.len() > limit;
        hits.truncate(limit);
        let mut results = Vec::with_capacity(hits.len());
        for hit in hits {
            let Some(message) = self.stores.messages.message(hit.conversation, hit.seq).await? else { continue };
            if message.deleted || message.system.is_some() || !matches_all(&message.body, &terms) {
                continue;
            }
            let snippet = snippet(&message.body, &terms);
            results.push(SearchResult { message, snippet });
        }
        let next = more.then(|| offset + limit as u32);
        Ok(SearchPage { results, next })
    }
}
