//! What `kbsync status` shows of each job: counts from the item cache,
//! the outbox's parked and retrying steps, and the run log.

use rusqlite::{Connection, OptionalExtension};

use super::{RunSummary, SkippedItem, State, StateError};

/// What `kbsync status` shows of one job.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobSummary {
    pub job: String,
    pub target: Option<String>,
    /// Items present in the source.
    pub tracked: u64,
    /// Present items whose current content is upstream, enabled, and not
    /// failed there.
    pub in_sync: u64,
    /// Present items whose current content is not upstream yet.
    pub pending_upload: u64,
    /// Present items whose content is upstream but disabled or archived
    /// there, waiting to be switched back on.
    pub pending_restore: u64,
    /// Items gone from the source whose document is still enabled upstream.
    pub pending_removal: u64,
    /// Steps refused for good, waiting for the item to change or `kbsync retry`.
    pub failed: Vec<FailedItem>,
    /// Steps that failed transiently, with their next attempt.
    pub retrying: Vec<FailedItem>,
    /// Files the passes skipped (unreadable, too large, a type the
    /// upstream does not take): the job cannot converge while they stand.
    pub skipped: Vec<SkippedItem>,
    /// Upstream steps planned and not yet confirmed (the outbox).
    pub queued: u64,
    pub last_run: Option<RunSummary>,
    /// Unix seconds of the last pass that converged.
    pub last_success: Option<i64>,
    /// Unix seconds of the last pass that left nothing to retry (only
    /// refusals for good and skipped files stood in its way); at or after
    /// `last_success`.
    pub last_settled: Option<i64>,
    /// Unix seconds since the job was paused (the control API's
    /// `/jobs/{name}/pause`); `None` when it runs.
    pub paused_since: Option<i64>,
}

/// A step the outbox could not complete: parked (permanent failure) or
/// waiting for its next attempt (transient).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FailedItem {
    pub key: String,
    pub op: String,
    /// The upstream's HTTP status, when it answered.
    pub status: Option<u16>,
    pub code: String,
    pub message: String,
    pub attempts: u32,
    /// Unix seconds of the last failed attempt.
    pub since: Option<i64>,
    /// Unix seconds of the next attempt; `None` when parked until the item
    /// changes or `kbsync retry`.
    pub next_attempt_at: Option<i64>,
}

impl State {
    /// One summary per job the state file knows, sorted by name.
    pub fn summaries(&self) -> Result<Vec<JobSummary>, StateError> {
        self.read(|c| {
            let jobs = job_names(c)?;
            jobs.into_iter().map(|job| summary(c, job)).collect()
        })
    }
}

fn job_names(c: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut jobs: Vec<String> = c
        .prepare("SELECT job FROM jobs UNION SELECT DISTINCT job FROM items ORDER BY 1")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    jobs.dedup();
    Ok(jobs)
}

fn summary(c: &Connection, job: String) -> rusqlite::Result<JobSummary> {
    let target = c
        .query_row("SELECT target FROM jobs WHERE job = ?1", [&job], |r| {
            r.get(0)
        })
        .optional()?;
    let (tracked, in_sync, pending_upload, pending_restore, pending_removal): (
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = c.query_row(
        "SELECT
                coalesce(sum(present = 1), 0) AS tracked,
                coalesce(sum(present = 1 AND pushed_hash = hash AND status = 'enabled'
                             AND error_code IS NULL), 0) AS in_sync,
                coalesce(sum(present = 1 AND (pushed_hash IS NULL OR pushed_hash != hash)), 0) AS pending_upload,
                coalesce(sum(present = 1 AND pushed_hash = hash AND status != 'enabled'), 0) AS pending_restore,
                coalesce(sum(present = 0 AND doc_id IS NOT NULL AND status = 'enabled'), 0) AS pending_removal
             FROM items WHERE job = ?1",
        [&job],
        |r| {
            Ok((
                r.get("tracked")?,
                r.get("in_sync")?,
                r.get("pending_upload")?,
                r.get("pending_restore")?,
                r.get("pending_removal")?,
            ))
        },
    )?;
    let (failed, retrying) = outbox_problems(c, &job)?;
    let queued: i64 = c.query_row("SELECT count(*) FROM outbox WHERE job = ?1", [&job], |r| {
        r.get(0)
    })?;
    let last_run = super::runs::runs(c, &job, 1)?.pop();
    let (last_success, last_settled) = super::runs::last_good(c, &job)?;
    let paused_since = super::runs::paused(c)?.get(&job).copied();
    let skipped = super::skipped::skipped(c, &job)?;
    Ok(JobSummary {
        job,
        target,
        tracked: tracked as u64,
        in_sync: in_sync as u64,
        pending_upload: pending_upload as u64,
        pending_restore: pending_restore as u64,
        pending_removal: pending_removal as u64,
        failed,
        retrying,
        skipped,
        queued: queued as u64,
        last_run,
        last_success,
        last_settled,
        paused_since,
    })
}

/// Steps refused for good (with the records the upstream failed to
/// process), and steps waiting for their next attempt.
fn outbox_problems(
    c: &Connection,
    job: &str,
) -> rusqlite::Result<(Vec<FailedItem>, Vec<FailedItem>)> {
    let problems: Vec<FailedItem> = c
        .prepare(
            "SELECT key, op, error_status, error_code, coalesce(error_message, '') AS error_message,
                attempts, last_attempt_at, failed, next_attempt_at
         FROM outbox WHERE job = ?1 AND error_code IS NOT NULL ORDER BY key, kind",
        )?
        .query_map([job], |r| {
            Ok(FailedItem {
                key: r.get("key")?,
                op: r.get("op")?,
                status: r.get::<_, Option<i64>>("error_status")?.map(|s| s as u16),
                code: r.get("error_code")?,
                message: r.get("error_message")?,
                attempts: r.get::<_, i64>("attempts")?.max(0) as u32,
                since: r.get("last_attempt_at")?,
                next_attempt_at: (r.get::<_, i64>("failed")? == 0)
                    .then(|| r.get("next_attempt_at"))
                    .transpose()?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let (mut failed, retrying): (Vec<_>, Vec<_>) = problems
        .into_iter()
        .partition(|p| p.next_attempt_at.is_none());
    failed.extend(failed_upstream(c, job)?);
    Ok((failed, retrying))
}

/// Present items whose upstream record failed to process (an audit read
/// the reason from the listing): nothing is retried until the file changes.
fn failed_upstream(c: &Connection, job: &str) -> rusqlite::Result<Vec<FailedItem>> {
    c.prepare(
        "SELECT key, error_code, coalesce(error_message, '') AS error_message, error_at
         FROM items WHERE job = ?1 AND present = 1 AND error_code IS NOT NULL ORDER BY key",
    )?
    .query_map([job], |r| {
        Ok(FailedItem {
            key: r.get("key")?,
            op: "index".into(),
            status: None,
            code: r.get("error_code")?,
            message: r.get("error_message")?,
            attempts: 0,
            since: r.get("error_at")?,
            next_attempt_at: None,
        })
    })?
    .collect()
}
