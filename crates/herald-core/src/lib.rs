//! Herald's domain. It owns the seam traits of DESIGN.md (stores, the partitioned log, delivery, cache),
//! the services that the transports call (accounts, conversations, messaging) and the sequencer that
//! owns a log partition and assigns each conversation's dense `seq`.
//!
//! # Layout
//! - [`store`]: the store traits and the records only the server sees (password hashes, refresh hashes).
//! - [`log`]: the partitioned log seam; [`owners`] runs the partitions this node owns, [`sequencer`] is what
//!   processes their records.
//! - [`delivery`]: where applied operations go: the sender's waiting request now, connections later.
//! - [`accounts`], [`conversations`], [`messaging`]: the services, each checking who may do what.
//! - [`admins`], [`reports`], [`user_admin`]: the server's admins, users' reports, suspensions.
//! - [`media`]: who may see an upload and what a message attaching one carries.
//! - [`auth`], [`limits`], [`cache`]: tokens and passwords, limits and rate limits, the L1 cache.
//! - [`footprint`]: what each in-memory structure holds, against its bound, as gauges.
//! - [`search`]: full-text search over what a user can read (the index is the backends' `SearchStore`).
//! - [`ring`]: the consistent-hash ring that places partitions and users on nodes.
//! - [`peers`]: the other nodes of a cluster; [`presence_updates`]: presence changes offered to outside consumers.
//!
//! Nothing here knows a backend: `herald-embedded` (and later the cluster crates) implement the traits.

pub mod accounts;
pub mod admins;
pub mod admission;
pub mod auth;
pub mod blocks;
pub mod cache;
pub mod changes;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod conversations;
pub mod delivery;
mod error;
pub mod footprint;
pub mod forward;
pub mod hub;
pub mod limits;
pub mod log;
pub mod login_limits;
pub mod media;
pub mod messaging;
pub mod outbox;
pub mod owners;
pub mod peers;
pub mod presence_updates;
pub mod reports;
pub mod ring;
pub mod search;
pub mod sequencer;
pub mod store;
pub mod submit;
mod time;
pub mod user_admin;

pub use error::{CoreError, CoreResult};
pub use time::now_millis;

use std::sync::Arc;

/// Everything a transport needs, wired once by the server.
#[derive(Clone)]
pub struct Services {
    pub accounts: Arc<accounts::Accounts>,
    pub conversations: Arc<conversations::Conversations>,
    pub messaging: Arc<messaging::Messaging>,
    pub reports: Arc<reports::Reports>,
    pub user_admin: Arc<user_admin::UserAdmin>,
    pub blocks: Arc<blocks::Blocks>,
    pub search: Arc<search::Search>,
}

/// A mutex's guard, also after a panic elsewhere poisoned it (that panic is reported where it happened; one
/// failed task must not take every later user of the lock down with it).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
