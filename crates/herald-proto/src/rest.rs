//! Request and response bodies of the REST API (`/api/v1`). `docs/api.md` describes the endpoints.

use crate::{
    Conversation, ConversationSummary, DeviceId, DeviceInfo, Direction, Member, Message, Millis, Role, UserId,
    UserProfile,
};
use serde::{Deserialize, Serialize};

/// `POST /api/v1/accounts` and `POST /api/v1/sessions`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// A label for the device this login creates ("laptop", "phone").
    #[serde(default)]
    pub device_name: Option<String>,
}

/// What a successful registration, login or refresh returns.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Session {
    pub user: UserProfile,
    pub device_id: DeviceId,
    /// A short-lived JWT for `Authorization: Bearer`.
    pub access_token: String,
    pub access_expires_at: Millis,
    /// Single-use: each refresh returns a new one, and reusing an old one revokes the device.
    pub refresh_token: String,
}

/// `POST /api/v1/sessions/refresh`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// `GET /api/v1/me`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Me {
    pub user: UserProfile,
    pub device_id: DeviceId,
    pub devices: Vec<DeviceInfo>,
    /// Whether the user is one of the server's admins (`auth.admins`), who may use the admin endpoints.
    #[serde(default)]
    pub admin: bool,
}

/// `POST /api/v1/conversations`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CreateConversation {
    /// Returns the existing direct conversation with that user if there is one.
    Direct { user_id: UserId },
    Group {
        title: String,
        #[serde(default)]
        members: Vec<UserId>,
    },
}

/// `GET /api/v1/conversations/{id}` and the answer to creating one.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationDetails {
    pub conversation: Conversation,
    pub members: Vec<Member>,
    pub last_seq: u64,
}

/// `PATCH /api/v1/conversations/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateConversation {
    pub title: String,
}

/// `POST /api/v1/conversations/{id}/members`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub user_id: UserId,
}

/// `PATCH /api/v1/conversations/{id}/members/{user_id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    pub role: Role,
}

/// `GET /api/v1/conversations?limit=&cursor=`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConversationPage {
    pub conversations: Vec<ConversationSummary>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /api/v1/conversations/{id}/messages`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// Chosen by the client, unique per sender and conversation: a retry with the same id is answered with
    /// the original result.
    pub client_msg_id: String,
    pub body: String,
    #[serde(default)]
    pub reply_to: Option<u64>,
    /// Sends the message as a reply in the thread of this root message (a message of the conversation that is
    /// not itself a thread reply, nor a notice, nor deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_root: Option<u64>,
    /// Ready uploads the sender may see (its own, or ones attached where it is a member), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<crate::MediaId>,
}

/// `PATCH /api/v1/conversations/{id}/messages/{seq}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EditMessage {
    pub body: String,
}

/// `GET /api/v1/conversations?limit=&cursor=`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ConversationListQuery {
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /api/v1/users?username=`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct FindUserQuery {
    pub username: Option<String>,
}

/// The query of a signed media URL, `GET /media/{id}/{variant}?exp=&sig=`: when it expires (Unix seconds)
/// and its signature.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams), into_params(parameter_in = Query))]
pub struct SignedUrlQuery {
    pub exp: u64,
    pub sig: String,
}

/// `GET /api/v1/conversations/{id}/messages?from=&dir=&limit=`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// First seq to return (inclusive). Defaults to 1 going forward and to the newest going backward.
    pub from: Option<u64>,
    #[serde(default)]
    pub dir: Direction,
    pub limit: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryPage {
    pub messages: Vec<Message>,
    /// The `from` of the next page in the same direction; absent when there is nothing further.
    pub next: Option<u64>,
    pub last_seq: u64,
}

/// `PUT /api/v1/conversations/{id}/cursor`: advance this device's positions. Positions only move forward.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateCursor {
    pub delivered: Option<u64>,
    pub read: Option<u64>,
}

/// `PUT /api/v1/conversations/{id}/threads/{root}/read`: this user has read the thread up to reply `read`.
/// The position only moves forward.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpdateThreadRead {
    pub read: u64,
}

/// One entry of `GET /api/v1/blocks`: a user the caller blocks, and since when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockedUser {
    pub user_id: UserId,
    pub since: Millis,
}
