//! User administration: the server's admins suspend an account (every session of it closed at once, no new
//! logins) and lift the suspension, delete an account, and look an account up with its suspension and sessions.

use crate::{DeviceInfo, Millis, UserId, UserProfile};
use serde::{Deserialize, Serialize};

/// Why and since when an account is suspended, and by whom.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Suspension {
    pub at: Millis,
    /// The admin who suspended the account.
    pub by: UserId,
    /// The admin's reason, shown to admins only (may be empty).
    pub reason: String,
}

/// `POST /api/v1/admin/users/{user_id}/suspend`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SuspendUser {
    #[serde(default)]
    pub reason: String,
}

/// An account as the admins see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminUser {
    pub user: UserProfile,
    /// Set while the account is suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspension: Option<Suspension>,
    /// Its logged-in devices (none while suspended).
    pub devices: Vec<DeviceInfo>,
}

/// The answer to `DELETE /api/v1/admin/users/{user_id}`: the account as it is now (erased), and what was done
/// to its conversations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeletedUser {
    pub user: UserProfile,
    /// Groups it left (its direct conversations stay, for the other side's sake).
    pub groups_left: u32,
    /// Its messages deleted (when the server removes a deleted account's messages; else 0).
    pub messages_removed: u64,
}
