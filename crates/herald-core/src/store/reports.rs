//! Reports of messages and users, for the server's admins (see `herald_proto::reports`).

use super::StoreResult;
use async_trait::async_trait;
use herald_proto::{Report, ReportId, ReportResolution, ReportState, ReportTarget, UserId};

#[async_trait]
pub trait ReportStore: Send + Sync + 'static {
    /// Stores a new report, unless its reporter already has an open report of the same target: then that
    /// one is returned and nothing is written (so a double tap, or a retry, files one report). Returns the
    /// report that is stored and whether it is `report`.
    async fn create_report(&self, report: &Report) -> StoreResult<(Report, bool)>;
    async fn report(&self, id: ReportId) -> StoreResult<Option<Report>>;
    /// Up to `limit` reports older than `before` (all when `None`), newest first, in `state` when given.
    async fn reports(
        &self,
        state: Option<ReportState>,
        before: Option<ReportId>,
        limit: usize,
    ) -> StoreResult<Vec<Report>>;
    /// Resolves an open report; returns it as it now is, or `None` when there is no such report. A report
    /// already resolved keeps its first resolution (and is returned unchanged).
    async fn resolve_report(&self, id: ReportId, resolution: &ReportResolution) -> StoreResult<Option<Report>>;
}

/// The key under which a reporter's open report of a target is unique.
pub fn open_report_key(reporter: UserId, target: &ReportTarget) -> String {
    match target {
        ReportTarget::Message { conversation_id, seq } => format!("{reporter}/message/{conversation_id}/{seq}"),
        ReportTarget::User { user_id } => format!("{reporter}/user/{user_id}"),
    }
}
