//! The server's admins: the usernames of `auth.admins`. They see and resolve reports and administer accounts.

use crate::auth::Principal;
use crate::store::UserStore;
use crate::{CoreError, CoreResult};
use herald_proto::UserId;
use std::collections::HashSet;
use std::sync::Arc;

pub struct Admins {
    users: Arc<dyn UserStore>,
    usernames: HashSet<String>,
}

impl Admins {
    pub fn new(users: Arc<dyn UserStore>, usernames: impl IntoIterator<Item = String>) -> Self {
        Self { users, usernames: usernames.into_iter().collect() }
    }

    /// Whether the username is one of the admins'.
    pub fn is_admin_name(&self, username: &str) -> bool {
        self.usernames.contains(username)
    }

    /// Whether the user is one of the server's admins.
    pub async fn is_admin(&self, user: UserId) -> CoreResult<bool> {
        if self.usernames.is_empty() {
            return Ok(false);
        }
        Ok(self.users.user(user).await?.is_some_and(|u| self.is_admin_name(&u.username)))
    }

    /// `forbidden` unless the caller is an admin.
    pub async fn require(&self, principal: Principal) -> CoreResult<()> {
        if self.is_admin(principal.user).await? {
            Ok(())
        } else {
            Err(CoreError::forbidden("only the server's admins may do this"))
        }
    }
}
