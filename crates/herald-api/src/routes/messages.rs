use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Auth, Json, Path, Query};
use axum::extract::State;
use axum::http::StatusCode;
use herald_proto::{
    ConversationId, CursorState, EditMessage, HistoryPage, HistoryQuery, Message, SendAck, SendMessage, ThreadState,
    UpdateCursor, UpdateThreadRead,
};

/// 201 for a new message, 200 for a retry answered with the original ack.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/messages",
    tag = "messages",
    params(("id" = ConversationId, Path, description = "the conversation")),
    request_body = SendMessage,
    responses((status = 201, description = "stored durably", body = SendAck), (status = 200, description = "a retry: the original ack, duplicate: true", body = SendAck))
)]
pub async fn send(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<ConversationId>,
    Json(body): Json<SendMessage>,
) -> ApiResult<(StatusCode, Json<SendAck>)> {
    let ack = s.services.messaging.send(p, id, body).await?;
    let status = if ack.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(ack)))
}

#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}/messages",
    tag = "messages",
    params(("id" = ConversationId, Path, description = "the conversation"), HistoryQuery),
    responses((status = 200, description = "done", body = HistoryPage))
)]
pub async fn history(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<ConversationId>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<HistoryPage>> {
    Ok(Json(s.services.messaging.history(p, id, q).await?))
}

#[utoipa::path(
    patch,
    path = "/api/v1/conversations/{id}/messages/{seq}",
    tag = "messages",
    params(("id" = ConversationId, Path, description = "the conversation"), ("seq" = u64, Path, description = "the message's seq")),
    request_body = EditMessage,
    responses((status = 200, description = "done", body = Message))
)]
pub async fn edit(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path((id, seq)): Path<(ConversationId, u64)>,
    Json(body): Json<EditMessage>,
) -> ApiResult<Json<Message>> {
    Ok(Json(s.services.messaging.edit(p, id, seq, body.body).await?))
}

/// Deletes for everyone: the message becomes a tombstone that keeps its seq.
#[utoipa::path(
    delete,
    path = "/api/v1/conversations/{id}/messages/{seq}",
    tag = "messages",
    params(("id" = ConversationId, Path, description = "the conversation"), ("seq" = u64, Path, description = "the message's seq")),
    responses((status = 200, description = "the tombstone", body = Message))
)]
pub async fn delete(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path((id, seq)): Path<(ConversationId, u64)>,
) -> ApiResult<Json<Message>> {
    Ok(Json(s.services.messaging.delete(p, id, seq).await?))
}

#[utoipa::path(
    put,
    path = "/api/v1/conversations/{id}/messages/{seq}/reactions/{emoji}",
    tag = "messages",
    params(("id" = ConversationId, Path, description = "the conversation"), ("seq" = u64, Path, description = "the message's seq"), ("emoji" = String, Path, description = "1 to 16 characters, no whitespace")),
    responses((status = 200, description = "done", body = Message))
)]
pub async fn react(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path((id, seq, emoji)): Path<(ConversationId, u64, String)>,
) -> ApiResult<Json<Message>> {
    Ok(Json(s.services.messaging.react(p, id, seq, emoji, true).await?))
}

#[utoipa::path(
    delete,
    path = "/api/v1/conversations/{id}/messages/{seq}/reactions/{emoji}",
    tag = "messages",
    params(("id" = ConversationId, Path, description = "the conversation"), ("seq" = u64, Path, description = "the message's seq"), ("emoji" = String, Path, description = "1 to 16 characters, no whitespace")),
    responses((status = 200, description = "done", body = Message))
)]
pub async fn unreact(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path((id, seq, emoji)): Path<(ConversationId, u64, String)>,
) -> ApiResult<Json<Message>> {
    Ok(Json(s.services.messaging.react(p, id, seq, emoji, false).await?))
}

#[utoipa::path(
    put,
    path = "/api/v1/conversations/{id}/cursor",
    tag = "messages",
    params(("id" = ConversationId, Path, description = "the conversation")),
    request_body = UpdateCursor,
    responses((status = 200, description = "done", body = CursorState))
)]
pub async fn update_cursor(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<ConversationId>,
    Json(body): Json<UpdateCursor>,
) -> ApiResult<Json<CursorState>> {
    Ok(Json(s.services.messaging.update_cursor(p, id, body).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}/cursor",
    tag = "messages",
    params(("id" = ConversationId, Path, description = "the conversation")),
    responses((status = 200, description = "done", body = CursorState))
)]
pub async fn cursor(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<ConversationId>,
) -> ApiResult<Json<CursorState>> {
    Ok(Json(s.services.messaging.cursor_state(p, id).await?))
}

/// A thread: its root, its reply count and the caller's own read position and unread count in it.
#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}/threads/{root}",
    tag = "threads",
    params(("id" = ConversationId, Path, description = "the conversation"), ("root" = u64, Path, description = "the seq of the thread's root")),
    responses((status = 200, description = "done", body = ThreadState))
)]
pub async fn thread(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path((id, root)): Path<(ConversationId, u64)>,
) -> ApiResult<Json<ThreadState>> {
    Ok(Json(s.services.messaging.thread(p, id, root).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}/threads/{root}/messages",
    tag = "threads",
    params(("id" = ConversationId, Path, description = "the conversation"), ("root" = u64, Path, description = "the seq of the thread's root"), HistoryQuery),
    responses((status = 200, description = "done", body = HistoryPage))
)]
pub async fn thread_replies(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path((id, root)): Path<(ConversationId, u64)>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Json<HistoryPage>> {
    Ok(Json(s.services.messaging.thread_replies(p, id, root, q).await?))
}

#[utoipa::path(
    put,
    path = "/api/v1/conversations/{id}/threads/{root}/read",
    tag = "threads",
    params(("id" = ConversationId, Path, description = "the conversation"), ("root" = u64, Path, description = "the seq of the thread's root")),
    request_body = UpdateThreadRead,
    responses((status = 200, description = "done", body = ThreadState))
)]
pub async fn mark_thread_read(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path((id, root)): Path<(ConversationId, u64)>,
    Json(body): Json<UpdateThreadRead>,
) -> ApiResult<Json<ThreadState>> {
    Ok(Json(s.services.messaging.mark_thread_read(p, id, root, body).await?))
}
