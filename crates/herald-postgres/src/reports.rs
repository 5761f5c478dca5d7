//! Reports of messages and users: one row each, the report as JSON beside its state and open key.

use crate::PostgresDb;
use crate::db::{Freshness, backend, pg};
use async_trait::async_trait;
use herald_core::store::{ReportStore, StoreError, StoreResult, open_report_key};
use herald_proto::{Report, ReportId, ReportResolution, ReportState};
use tokio_postgres::Row;
use tokio_postgres::types::Type;

fn state_name(state: ReportState) -> &'static str {
    match state {
        ReportState::Open => "open",
        ReportState::Resolved => "resolved",
    }
}

fn report(row: &Row) -> StoreResult<Report> {
    serde_json::from_str(row.get(0)).map_err(|e| backend(format!("corrupt report row: {e}")))
}

#[async_trait]
impl ReportStore for PostgresDb {
    async fn create_report(&self, new: &Report) -> StoreResult<(Report, bool)> {
        let record = serde_json::to_string(new).map_err(backend)?;
        let key = open_report_key(new.reporter, &new.target);
        let state = state_name(new.state);
        self.pools
            .write("insert", "reports", async |client| {
                let txn = client.transaction().await.map_err(pg)?;
                let inserted = txn
                    .execute_typed(
                        "INSERT INTO reports (id, state, open_key, record) VALUES ($1, $2, $3, $4::jsonb)
                         ON CONFLICT (open_key) WHERE state = 'open' DO NOTHING",
                        &[(&new.id.0, Type::UUID), (&state, Type::TEXT), (&key, Type::TEXT), (&record, Type::TEXT)],
                    )
                    .await
                    .map_err(pg)?;
                let answer = if inserted == 1 {
                    (new.clone(), true)
                } else {
                    let row = txn
                        .query_typed_opt(
                            "SELECT record::text FROM reports WHERE open_key = $1 AND state = 'open'",
                            &[(&key, Type::TEXT)],
                        )
                        .await
                        .map_err(pg)?
                        // The open report it met was resolved in between: nothing was written, so a retry is safe.
                        .ok_or_else(|| StoreError::Conflict("the open report of this target changed; retry".into()))?;
                    (report(&row)?, false)
                };
                txn.commit().await.map_err(pg)?;
                Ok(answer)
            })
            .await
    }

    async fn report(&self, id: ReportId) -> StoreResult<Option<Report>> {
        self.pools
            .read("select", "reports", Freshness::Fresh, |client| async move {
                let row = client
                    .query_typed_opt("SELECT record::text FROM reports WHERE id = $1", &[(&id.0, Type::UUID)])
                    .await
                    .map_err(pg)?;
                row.as_ref().map(report).transpose()
            })
            .await
    }

    async fn reports(
        &self,
        state: Option<ReportState>,
        before: Option<ReportId>,
        limit: usize,
    ) -> StoreResult<Vec<Report>> {
        let state = state.map(state_name);
        let before = before.map(|id| id.0);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.pools
            .read("range", "reports", Freshness::Fresh, |client| async move {
                let rows = client
                    .query_typed(
                        "SELECT record::text FROM reports
                         WHERE ($1::text IS NULL OR state = $1) AND ($2::uuid IS NULL OR id < $2)
                         ORDER BY id DESC LIMIT $3",
                        &[(&state, Type::TEXT), (&before, Type::UUID), (&limit, Type::INT8)],
                    )
                    .await
                    .map_err(pg)?;
                rows.iter().map(report).collect()
            })
            .await
    }

    async fn resolve_report(&self, id: ReportId, resolution: &ReportResolution) -> StoreResult<Option<Report>> {
        let resolution = serde_json::to_string(resolution).map_err(backend)?;
        self.pools
            .write("update", "reports", async |client| {
                let txn = client.transaction().await.map_err(pg)?;
                let updated = txn
                    .query_typed_opt(
                        "UPDATE reports SET state = 'resolved',
                                record = record || jsonb_build_object('state', 'resolved', 'resolution', $2::jsonb)
                         WHERE id = $1 AND state = 'open' RETURNING record::text",
                        &[(&id.0, Type::UUID), (&resolution, Type::TEXT)],
                    )
                    .await
                    .map_err(pg)?;
                let row = match updated {
                    Some(row) => Some(row),
                    None => txn
                        .query_typed_opt("SELECT record::text FROM reports WHERE id = $1", &[(&id.0, Type::UUID)])
                        .await
                        .map_err(pg)?,
                };
                txn.commit().await.map_err(pg)?;
                row.as_ref().map(report).transpose()
            })
            .await
    }
}
