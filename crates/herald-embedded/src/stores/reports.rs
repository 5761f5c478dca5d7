use super::{decode, encode};
use crate::db::{EmbeddedDb, backend};
use crate::tables::{Id, MAX_ID, MIN_ID, REPORTS, REPORTS_BY_STATE, REPORTS_OPEN};
use async_trait::async_trait;
use herald_core::store::{ReportStore, StoreResult, open_report_key};
use herald_proto::{Report, ReportId, ReportResolution, ReportState};
use redb::{ReadableTable, WriteTransaction};

fn state_key(state: ReportState) -> u8 {
    match state {
        ReportState::Open => 0,
        ReportState::Resolved => 1,
    }
}

fn get_report(table: &impl ReadableTable<Id, &'static [u8]>, id: Id) -> StoreResult<Option<Report>> {
    table.get(id).map_err(backend)?.map(|v| decode(v.value())).transpose()
}

fn put_report(txn: &WriteTransaction, report: &Report) -> StoreResult<()> {
    txn.open_table(REPORTS)
        .map_err(backend)?
        .insert(report.id.to_bytes(), encode(report)?.as_slice())
        .map_err(backend)?;
    Ok(())
}

/// Reports are rare and are not on any hot path: each write is a durable redb commit of its own.
#[async_trait]
impl ReportStore for EmbeddedDb {
    async fn create_report(&self, report: &Report) -> StoreResult<(Report, bool)> {
        let report = report.clone();
        self.write("insert", "reports", true, move |txn| {
            let key = open_report_key(report.reporter, &report.target);
            let mut open = txn.open_table(REPORTS_OPEN).map_err(backend)?;
            if let Some(existing) = open.get(key.as_str()).map_err(backend)?.map(|v| v.value())
                && let Some(existing) = get_report(&txn.open_table(REPORTS).map_err(backend)?, existing)?
            {
                return Ok((existing, false));
            }
            let id = report.id.to_bytes();
            if report.state == ReportState::Open {
                open.insert(key.as_str(), id).map_err(backend)?;
            }
            put_report(txn, &report)?;
            txn.open_table(REPORTS_BY_STATE)
                .map_err(backend)?
                .insert((state_key(report.state), id), ())
                .map_err(backend)?;
            Ok((report, true))
        })
        .await
    }

    async fn report(&self, id: ReportId) -> StoreResult<Option<Report>> {
        self.read("select", "reports", |txn| get_report(&txn.open_table(REPORTS).map_err(backend)?, id.to_bytes()))
    }

    async fn reports(
        &self,
        state: Option<ReportState>,
        before: Option<ReportId>,
        limit: usize,
    ) -> StoreResult<Vec<Report>> {
        let before = before.map_or(MAX_ID, ReportId::to_bytes);
        self.read("range", "reports", |txn| {
            let reports = txn.open_table(REPORTS).map_err(backend)?;
            let mut out = Vec::new();
            match state {
                Some(state) => {
                    let index = txn.open_table(REPORTS_BY_STATE).map_err(backend)?;
                    let key = state_key(state);
                    for entry in index.range((key, MIN_ID)..(key, before)).map_err(backend)?.rev().take(limit) {
                        if let Some(report) = get_report(&reports, entry.map_err(backend)?.0.value().1)? {
                            out.push(report);
                        }
                    }
                }
                None => {
                    for entry in reports.range(MIN_ID..before).map_err(backend)?.rev().take(limit) {
                        out.push(decode(entry.map_err(backend)?.1.value())?);
                    }
                }
            }
            Ok(out)
        })
    }

    async fn resolve_report(&self, id: ReportId, resolution: &ReportResolution) -> StoreResult<Option<Report>> {
        let resolution = resolution.clone();
        self.write("update", "reports", true, move |txn| {
            let Some(mut report) = get_report(&txn.open_table(REPORTS).map_err(backend)?, id.to_bytes())? else {
                return Ok(None);
            };
            if report.state == ReportState::Resolved {
                return Ok(Some(report));
            }
            let mut index = txn.open_table(REPORTS_BY_STATE).map_err(backend)?;
            index.remove((state_key(ReportState::Open), id.to_bytes())).map_err(backend)?;
            index.insert((state_key(ReportState::Resolved), id.to_bytes()), ()).map_err(backend)?;
            let key = open_report_key(report.reporter, &report.target);
            let mut open = txn.open_table(REPORTS_OPEN).map_err(backend)?;
            if open.get(key.as_str()).map_err(backend)?.is_some_and(|v| v.value() == id.to_bytes()) {
                open.remove(key.as_str()).map_err(backend)?;
            }
            report.state = ReportState::Resolved;
            report.resolution = Some(resolution);
            put_report(txn, &report)?;
            Ok(Some(report))
        })
        .await
    }
}
