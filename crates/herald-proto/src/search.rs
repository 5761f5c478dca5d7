//! Full-text search over the messages the caller can read.

use crate::{ConversationId, Message};
use serde::{Deserialize, Serialize};

/// `GET /api/v1/search?q=&conversation=&offset=&limit=`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// The words to find. A message matches when every word of the query starts one of its words (so `meet`
    /// finds "meeting"); case and punctuation do not matter.
    pub q: String,
    /// Search one conversation only (the caller must be a member); every conversation the caller belongs
    /// to when absent.
    pub conversation: Option<ConversationId>,
    /// Results to skip: the `next` of the previous page.
    pub offset: Option<u32>,
    pub limit: Option<u32>,
}

/// One page of results, best first.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchPage {
    pub results: Vec<SearchResult>,
    /// The `offset` of the next page; absent when there is none.
    pub next: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchResult {
    /// The message as it is now.
    pub message: Message,
    /// A part of the body around the first match, cut in pieces: the pieces that matched a word of the query
    /// have `hit` set. Plain text, for the client to mark up as it likes.
    pub snippet: Vec<SnippetPart>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnippetPart {
    pub text: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hit: bool,
}
