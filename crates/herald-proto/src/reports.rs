//! Reports: a user tells the server's admins about a message or another user (spam, abuse, illegal content).
//! A report of a message keeps a copy of it as the reporter saw it, so an edit or a deletion afterwards does
//! not take the evidence away; admins list the reports and resolve them.

use crate::{Attachment, ConversationId, Millis, ReportId, UserId};
use serde::{Deserialize, Serialize};

/// What is reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReportTarget {
    /// A message the reporter can read.
    Message { conversation_id: ConversationId, seq: u64 },
    /// Another user.
    User { user_id: UserId },
}

/// Why it is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReportReason {
    Spam,
    Harassment,
    /// Content that is against the law (a legal notice may follow).
    Illegal,
    Other,
}

impl ReportReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportReason::Spam => "spam",
            ReportReason::Harassment => "harassment",
            ReportReason::Illegal => "illegal",
            ReportReason::Other => "other",
        }
    }
}

/// Whether an admin has dealt with the report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReportState {
    #[default]
    Open,
    Resolved,
}

/// The reported message as the reporter saw it when reporting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportedMessage {
    pub sender: UserId,
    pub body: String,
    pub sent_at: Millis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<Millis>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// An admin's decision on a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportResolution {
    pub resolved_by: UserId,
    pub resolved_at: Millis,
    /// What was done and why, for the other admins.
    #[serde(default)]
    pub note: String,
}

/// One report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Report {
    pub id: ReportId,
    pub reporter: UserId,
    pub target: ReportTarget,
    pub reason: ReportReason,
    /// The reporter's words, possibly empty.
    #[serde(default)]
    pub comment: String,
    pub created_at: Millis,
    /// For a report of a message: the message when it was reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<ReportedMessage>,
    #[serde(default)]
    pub state: ReportState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<ReportResolution>,
}

/// `POST /api/v1/reports`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateReport {
    pub target: ReportTarget,
    pub reason: ReportReason,
    #[serde(default)]
    pub comment: String,
}

/// `POST /api/v1/admin/reports/{id}/resolve`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResolveReport {
    #[serde(default)]
    pub note: String,
}

/// `GET /api/v1/admin/reports?state=&before=&limit=`: newest first.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ReportListQuery {
    /// Only reports in this state; all when absent.
    pub state: Option<ReportState>,
    /// The `next_before` of the previous page.
    pub before: Option<ReportId>,
    pub limit: Option<u32>,
}

/// A page of reports, newest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportPage {
    pub reports: Vec<Report>,
    /// Pass as `before` for the next (older) page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<ReportId>,
}
