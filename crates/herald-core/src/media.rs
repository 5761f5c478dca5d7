//! Who may see an upload, and what a message carries when it attaches one. The pipeline itself lives in
//! `herald-media`; this is the rule both the REST API and the send path apply.

use crate::auth::Principal;
use crate::conversations::Conversations;
use crate::store::{MediaRecord, Stores};
use crate::{CoreError, CoreResult};
use herald_proto::{Attachment, MediaId, MediaState};

/// At most this many uploads per message.
pub const MAX_ATTACHMENTS: usize = 10;

/// The upload, if the caller may see it: its owner may, and so may every member of a conversation in
/// which a message attaches it. Everyone else is told it does not exist.
pub async fn visible_upload(
    stores: &Stores,
    conversations: &Conversations,
    principal: Principal,
    id: MediaId,
) -> CoreResult<MediaRecord> {
    let not_found = || CoreError::not_found("no such upload");
    let record = stores.media.media(id).await?.ok_or_else(not_found)?;
    if record.owner == principal.user {
        return Ok(record);
    }
    for conversation in stores.media.attached_in(id).await? {
        if conversations.require_member(principal, conversation).await.is_ok() {
            return Ok(record);
        }
    }
    Err(not_found())
}

/// Resolves the uploads a message attaches: each must be visible to the sender and ready. Returns their
/// snapshots in the given order.
pub async fn attachments(
    stores: &Stores,
    conversations: &Conversations,
    principal: Principal,
    ids: &[MediaId],
) -> CoreResult<Vec<Attachment>> {
    // The common send attaches nothing: no set, no store read.
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    if ids.len() > MAX_ATTACHMENTS {
        return Err(CoreError::invalid(format!("a message attaches at most {MAX_ATTACHMENTS} uploads")));
    }
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(ids.len());
    for &id in ids {
        if !seen.insert(id) {
            return Err(CoreError::invalid(format!("upload {id} is attached twice")));
        }
        let record = visible_upload(stores, conversations, principal, id).await?;
        if record.state != MediaState::Ready {
            return Err(CoreError::conflict(format!("upload {id} is not ready (it is {})", record.state.as_str())));
        }
        let hash = record.content_hash.as_deref().unwrap_or_default();
        let content = stores.media.content(hash).await?.ok_or_else(|| CoreError::conflict("the upload is gone"))?;
        out.push(Attachment {
            media_id: id,
            content_type: content.content_type,
            size: content.size,
            filename: record.filename,
            width: content.width,
            height: content.height,
        });
    }
    Ok(out)
}
