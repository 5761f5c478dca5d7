//! Reports: a user tells the server's admins about a message they can read or about another user; the
//! admins (the usernames of `auth.admins`) list the reports and resolve them.
//!
//! A report of a message keeps the message as the reporter saw it, so editing or deleting it afterwards
//! does not take the evidence away; only what the reporter could read is ever copied (a member's report of a
//! conversation they belong to). A reporter has one open report per target (a second is answered with the
//! first) and files at most [`REPORT_BURST`] at once, then one a minute.

use crate::admins::Admins;
use crate::auth::Principal;
use crate::conversations::Conversations;
use crate::limits::UserRateLimiter;
use crate::store::Stores;
use crate::{CoreError, CoreResult, now_millis};
use governor::Quota;
use herald_proto::{
    CreateReport, Report, ReportId, ReportListQuery, ReportPage, ReportResolution, ReportTarget, ReportedMessage,
    ResolveReport,
};
use std::num::NonZeroU32;
use std::sync::Arc;

/// Longest comment of a reporter or note of an admin, in characters.
pub const MAX_REPORT_TEXT_CHARS: usize = 2000;
/// Reports a user may file at once; then one a minute.
pub const REPORT_BURST: u32 = 10;
/// Largest page of reports.
const MAX_REPORT_PAGE: usize = 200;
const DEFAULT_REPORT_PAGE: usize = 50;

pub struct Reports {
    stores: Stores,
    conversations: Arc<Conversations>,
    admins: Arc<Admins>,
    rate: UserRateLimiter,
}

impl Reports {
    pub fn new(stores: Stores, conversations: Arc<Conversations>, admins: Arc<Admins>) -> Self {
        let burst = NonZeroU32::new(REPORT_BURST).unwrap_or(NonZeroU32::MIN);
        Self {
            stores,
            conversations,
            admins,
            rate: UserRateLimiter::new(
                Quota::per_minute(NonZeroU32::MIN).allow_burst(burst),
                "report_rate_buckets",
                100_000,
            ),
        }
    }

    /// Files a report. Returns it and whether it is new (`false`: the caller's open report of the same
    /// target, unchanged).
    pub async fn create(&self, principal: Principal, req: CreateReport) -> CoreResult<(Report, bool)> {
        check_text(&req.comment, "comment")?;
        let message = match &req.target {
            ReportTarget::Message { conversation_id, seq } => {
                self.conversations.require_member(principal, *conversation_id).await?;
                let message = self
                    .stores
                    .messages
                    .message(*conversation_id, *seq)
                    .await?
                    .filter(|m| !m.deleted)
                    .ok_or_else(|| CoreError::not_found("no such message"))?;
                if message.system.is_some() {
                    return Err(CoreError::invalid("a notice of the server cannot be reported"));
                }
                if message.sender == principal.user {
                    return Err(CoreError::invalid("you cannot report your own message"));
                }
                Some(ReportedMessage {
                    sender: message.sender,
                    body: message.body,
                    sent_at: message.sent_at,
                    edited_at: message.edited_at,
                    attachments: message.attachments,
                })
            }
            ReportTarget::User { user_id } => {
                if *user_id == principal.user {
                    return Err(CoreError::invalid("you cannot report yourself"));
                }
                self.stores.users.user(*user_id).await?.ok_or_else(|| CoreError::not_found("no such user"))?;
                None
            }
        };
        self.rate.check(principal.user)?;
        let report = Report {
            id: ReportId::new(),
            reporter: principal.user,
            target: req.target,
            reason: req.reason,
            comment: req.comment,
            created_at: now_millis(),
            message,
            state: Default::default(),
            resolution: None,
        };
        let (stored, created) = self.stores.reports.create_report(&report).await?;
        if created {
            metrics::counter!("reports_total", "reason" => stored.reason.as_str()).increment(1);
        }
        Ok((stored, created))
    }

    /// Reports, newest first (admins only).
    pub async fn list(&self, principal: Principal, q: ReportListQuery) -> CoreResult<ReportPage> {
        self.admins.require(principal).await?;
        let limit = match q.limit {
            None => DEFAULT_REPORT_PAGE,
            Some(n) if (1..=MAX_REPORT_PAGE as u32).contains(&n) => n as usize,
            Some(_) => return Err(CoreError::invalid(format!("limit must be 1 to {MAX_REPORT_PAGE}"))),
        };
        // One more than asked, to know whether an older page follows.
        let mut reports = self.stores.reports.reports(q.state, q.before, limit + 1).await?;
        let next_before = if reports.len() > limit {
            reports.truncate(limit);
            reports.last().map(|r| r.id)
        } else {
            None
        };
        Ok(ReportPage { reports, next_before })
    }

    /// One report (admins only).
    pub async fn get(&self, principal: Principal, id: ReportId) -> CoreResult<Report> {
        self.admins.require(principal).await?;
        self.stores.reports.report(id).await?.ok_or_else(|| CoreError::not_found("no such report"))
    }

    /// Resolves a report (admins only). Resolving a resolved report changes nothing and answers `conflict`.
    pub async fn resolve(&self, principal: Principal, id: ReportId, req: ResolveReport) -> CoreResult<Report> {
        self.admins.require(principal).await?;
        check_text(&req.note, "note")?;
        let resolution = ReportResolution { resolved_by: principal.user, resolved_at: now_millis(), note: req.note };
        let report = self
            .stores
            .reports
            .resolve_report(id, &resolution)
            .await?
            .ok_or_else(|| CoreError::not_found("no such report"))?;
        if report.resolution.as_ref() != Some(&resolution) {
            return Err(CoreError::conflict("the report is already resolved"));
        }
        Ok(report)
    }

    /// The per-user report limit (its buckets are counted and shrunk with the others').
    pub fn rate_limiter(&self) -> &UserRateLimiter {
        &self.rate
    }
}

fn check_text(text: &str, what: &str) -> CoreResult<()> {
    if text.chars().count() > MAX_REPORT_TEXT_CHARS {
        return Err(CoreError::invalid(format!("the {what} is longer than {MAX_REPORT_TEXT_CHARS} characters")));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(CoreError::invalid(format!("the {what} holds control characters")));
    }
    Ok(())
}
