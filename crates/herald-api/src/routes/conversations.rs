use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{Auth, Json, Path, Query};
use axum::extract::State;
use axum::http::StatusCode;
use herald_proto::{
    AddMember, ConversationDetails, ConversationId, ConversationListQuery, ConversationPage, CreateConversation,
    Member, UpdateConversation, UpdateMember, UserId,
};

/// 201 with a new conversation; 200 with the pair's existing direct conversation.
#[utoipa::path(
    post,
    path = "/api/v1/conversations",
    tag = "conversations",
    request_body = CreateConversation,
    responses((status = 201, description = "created", body = ConversationDetails), (status = 200, description = "the direct conversation that already existed", body = ConversationDetails))
)]
pub async fn create(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(body): Json<CreateConversation>,
) -> ApiResult<(StatusCode, Json<ConversationDetails>)> {
    let (details, created) = match body {
        CreateConversation::Direct { user_id } => s.services.conversations.create_direct(p, user_id).await?,
        CreateConversation::Group { title, members } => {
            (s.services.conversations.create_group(p, &title, members).await?, true)
        }
    };
    // The pair's existing direct conversation answers 200, like a replayed send.
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(details)))
}

#[utoipa::path(
    get,
    path = "/api/v1/conversations",
    tag = "conversations",
    params(ConversationListQuery),
    responses((status = 200, description = "done", body = ConversationPage))
)]
pub async fn list(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<ConversationListQuery>,
) -> ApiResult<Json<ConversationPage>> {
    Ok(Json(s.services.conversations.list(p, q.limit, q.cursor.as_deref()).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = ConversationId, Path, description = "the conversation")),
    responses((status = 200, description = "done", body = ConversationDetails))
)]
pub async fn details(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<ConversationId>,
) -> ApiResult<Json<ConversationDetails>> {
    Ok(Json(s.services.conversations.details(p, id).await?))
}

#[utoipa::path(
    patch,
    path = "/api/v1/conversations/{id}",
    tag = "conversations",
    params(("id" = ConversationId, Path, description = "the conversation")),
    request_body = UpdateConversation,
    responses((status = 200, description = "done", body = ConversationDetails))
)]
pub async fn rename(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<ConversationId>,
    Json(body): Json<UpdateConversation>,
) -> ApiResult<Json<ConversationDetails>> {
    Ok(Json(s.services.conversations.set_title(p, id, &body.title).await?))
}

#[utoipa::path(
    post,
    path = "/api/v1/conversations/{id}/members",
    tag = "conversations",
    params(("id" = ConversationId, Path, description = "the conversation")),
    request_body = AddMember,
    responses((status = 201, description = "created", body = Member))
)]
pub async fn add_member(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<ConversationId>,
    Json(body): Json<AddMember>,
) -> ApiResult<(StatusCode, Json<Member>)> {
    Ok((StatusCode::CREATED, Json(s.services.conversations.add_member(p, id, body.user_id).await?)))
}

/// Removes a member, or leaves when the user is the caller.
#[utoipa::path(
    delete,
    path = "/api/v1/conversations/{id}/members/{user_id}",
    tag = "conversations",
    params(("id" = ConversationId, Path, description = "the conversation"), ("user_id" = UserId, Path, description = "the user")),
    responses((status = 204, description = "done"))
)]
pub async fn remove_member(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path((id, user)): Path<(ConversationId, UserId)>,
) -> ApiResult<StatusCode> {
    s.services.conversations.remove_member(p, id, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    patch,
    path = "/api/v1/conversations/{id}/members/{user_id}",
    tag = "conversations",
    params(("id" = ConversationId, Path, description = "the conversation"), ("user_id" = UserId, Path, description = "the user")),
    request_body = UpdateMember,
    responses((status = 200, description = "done", body = Member))
)]
pub async fn set_role(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path((id, user)): Path<(ConversationId, UserId)>,
    Json(body): Json<UpdateMember>,
) -> ApiResult<Json<Member>> {
    Ok(Json(s.services.conversations.set_role(p, id, user, body.role).await?))
}
