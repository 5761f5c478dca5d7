use crate::db::{EmbeddedDb, backend};
use async_trait::async_trait;
use herald_core::store::{SearchHit, SearchRequest, SearchStore, StoreResult};

#[async_trait]
impl SearchStore for EmbeddedDb {
    /// On the blocking pool: a query over a large index takes milliseconds of CPU, which must not hold up the
    /// runtime's other tasks.
    async fn search(&self, request: &SearchRequest<'_>) -> StoreResult<Vec<SearchHit>> {
        let index = self.search.index.clone();
        let (terms, conversations) = (request.terms.to_vec(), request.conversations.to_vec());
        let (offset, limit) = (request.offset, request.limit);
        let found = tokio::task::spawn_blocking(move || index.search(&terms, &conversations, offset, limit))
            .await
            .map_err(backend)?
            .map_err(backend)?;
        Ok(found.into_iter().map(|(conversation, seq)| SearchHit { conversation, seq }).collect())
    }
}
