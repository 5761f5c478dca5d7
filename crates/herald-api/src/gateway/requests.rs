//! What each client frame does. Every frame is authorised by the core services exactly as the REST
//! endpoints are (membership, roles, rate limits); a refusal is an `error` frame and changes nothing.

use crate::AppState;
use herald_core::CoreError;
use herald_core::auth::Principal;
use herald_proto::{ClientFrame, ConversationId, ErrorCode, SendMessage, ServerFrame, UpdateCursor};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Most users one presence query may ask about.
const MAX_PRESENCE_QUERY: usize = 500;

pub type Pending = Pin<Box<dyn Future<Output = Option<ServerFrame>> + Send>>;

/// What the connection does with a frame.
pub enum Action {
    /// Answer at once.
    Reply(Box<ServerFrame>),
    /// Answer when the future completes (it runs alongside others, up to the in-flight limit).
    Later(Pending),
    /// Resume the feed after this position.
    Sync(u64),
    Nothing,
}

pub fn error_frame(id: Option<String>, e: &CoreError) -> ServerFrame {
    let (message, retry_after_ms) = match e {
        CoreError::Internal(detail) => {
            tracing::error!(error = %detail, "internal error in a gateway request");
            ("internal error".to_owned(), None)
        }
        CoreError::RateLimited { .. } | CoreError::Overloaded { .. } => (e.to_string(), e.retry_after_ms()),
        CoreError::Client { message, .. } => (message.clone(), None),
    };
    ServerFrame::Error { id, code: e.code(), message, retry_after_ms }
}

pub fn bad_frame(message: impl Into<String>) -> ServerFrame {
    ServerFrame::Error { id: None, code: ErrorCode::BadRequest, message: message.into(), retry_after_ms: None }
}

fn later<F>(id: Option<String>, f: F) -> Action
where
    F: Future<Output = Result<Option<ServerFrame>, CoreError>> + Send + 'static,
{
    Action::Later(Box::pin(async move {
        match f.await {
            Ok(frame) => frame,
            Err(e) => Some(error_frame(id, &e)),
        }
    }))
}

pub fn handle(state: &AppState, me: Principal, frame: ClientFrame) -> Action {
    let services = state.services.clone();
    match frame {
        ClientFrame::Auth { .. } => Action::Reply(Box::new(bad_frame("already authenticated"))),
        ClientFrame::Sync { since } => Action::Sync(since),
        ClientFrame::Ping { id } => Action::Reply(Box::new(ServerFrame::Pong { id })),
        ClientFrame::Send { id, conversation_id, client_msg_id, body, reply_to, thread_root, attachments } => {
            later(id.clone(), async move {
                let ack = services
                    .messaging
                    .send(me, conversation_id, SendMessage { client_msg_id, body, reply_to, thread_root, attachments })
                    .await?;
                Ok(Some(ServerFrame::Ack {
                    id,
                    conversation_id: ack.conversation_id,
                    client_msg_id: ack.client_msg_id,
                    seq: ack.seq,
                    message_id: ack.message_id,
                    sent_at: ack.sent_at,
                    duplicate: ack.duplicate,
                }))
            })
        }
        ClientFrame::Edit { id, conversation_id, seq, body } => later(id.clone(), async move {
            let message = services.messaging.edit(me, conversation_id, seq, body).await?;
            Ok(Some(ServerFrame::Result { id, message }))
        }),
        ClientFrame::Delete { id, conversation_id, seq } => later(id.clone(), async move {
            let message = services.messaging.delete(me, conversation_id, seq).await?;
            Ok(Some(ServerFrame::Result { id, message }))
        }),
        ClientFrame::React { id, conversation_id, seq, emoji, add } => later(id.clone(), async move {
            let message = services.messaging.react(me, conversation_id, seq, emoji, add).await?;
            Ok(Some(ServerFrame::Result { id, message }))
        }),
        ClientFrame::Delivered { id, conversation_id, seq } => {
            cursor(services, me, id, conversation_id, UpdateCursor { delivered: Some(seq), read: None })
        }
        ClientFrame::Read { id, conversation_id, seq } => {
            cursor(services, me, id, conversation_id, UpdateCursor { delivered: None, read: Some(seq) })
        }
        ClientFrame::Typing { conversation_id, active } => {
            let hub = state.hub.clone();
            later(None, async move {
                services.conversations.require_member(me, conversation_id).await?;
                services.messaging.rate_limiter().check(me.user)?;
                hub.typing(me.user, conversation_id, active).await?;
                Ok(None)
            })
        }
        ClientFrame::Presence { status } => {
            if status == herald_proto::PresenceStatus::Offline {
                return Action::Reply(Box::new(bad_frame(
                    "status must be online or away; close the connection to go offline",
                )));
            }
            state.hub.set_status(me.user, status);
            Action::Nothing
        }
        ClientFrame::PresenceQuery { id, user_ids } => {
            if user_ids.len() > MAX_PRESENCE_QUERY {
                let e = CoreError::invalid(format!("ask for at most {MAX_PRESENCE_QUERY} users at a time"));
                return Action::Reply(Box::new(error_frame(id, &e)));
            }
            if let Err(e) = services.messaging.rate_limiter().check(me.user) {
                return Action::Reply(Box::new(error_frame(id, &e)));
            }
            let hub = state.hub.clone();
            later(id.clone(), async move {
                Ok(Some(ServerFrame::Presence { id, users: hub.presence_of(me.user, &user_ids).await? }))
            })
        }
    }
}

fn cursor(
    services: Arc<herald_core::Services>,
    me: Principal,
    id: Option<String>,
    conversation: ConversationId,
    update: UpdateCursor,
) -> Action {
    later(id.clone(), async move {
        let cursor = services.messaging.update_cursor(me, conversation, update).await?;
        Ok(Some(ServerFrame::Cursor { id, cursor }))
    })
}
