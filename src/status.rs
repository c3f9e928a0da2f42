//! `kbsync status`: what the state file says about each job, and whether
//! its source can be looked at now. It opens the file read-only, so it
//! works beside a running service (WAL readers do not block the writer)
//! and on a file the user may not write.

use std::io::Write;

use crate::config::Config;
use crate::metadata::format_rfc3339;
use crate::state::{FailedItem, JobSummary, State};

/// One job as `status` shows it.
#[derive(Debug, serde::Serialize)]
pub struct JobStatus {
    #[serde(flatten)]
    pub summary: JobSummary,
    /// Why the job's source cannot be looked at now (its root is missing
    /// or looks unmounted): its passes do nothing until it is back.
    pub source_problem: Option<String>,
}

/// Reads the summaries; `None` when kbsync has never run with this state
/// file.
pub fn read(config: &Config, only: &[String]) -> anyhow::Result<Option<Vec<JobStatus>>> {
    if !config.state_path.exists() {
        return Ok(None);
    }
    let state = State::open_read_only(&config.state_path)?;
    let mut all = state.summaries()?;
    if !only.is_empty() {
        all.retain(|s| only.contains(&s.job));
    }
    Ok(Some(
        all.into_iter()
            .map(|summary| JobStatus {
                source_problem: config
                    .jobs
                    .iter()
                    .find(|j| j.name == summary.job)
                    .and_then(|j| j.unmounted()),
                summary,
            })
            .collect(),
    ))
}

/// Each configured job whose source cannot be looked at now, and why.
pub fn unmounted(config: &Config) -> Vec<(&str, String)> {
    config
        .jobs
        .iter()
        .filter_map(|j| Some((j.name.as_str(), j.unmounted()?)))
        .collect()
}

pub fn print(out: &mut impl Write, jobs: &[JobStatus]) -> std::io::Result<()> {
    for job in jobs {
        let s = &job.summary;
        writeln!(
            out,
            "{}{}",
            s.job,
            s.target
                .as_deref()
                .map(|t| format!(" → {t}"))
                .unwrap_or_default()
        )?;
        if let Some(problem) = &job.source_problem {
            writeln!(
                out,
                "  source: {problem}: its passes scan and retire nothing until it is back"
            )?;
        }
        if let Some(since) = s.paused_since {
            writeln!(
                out,
                "  paused since {} (control API): the service runs no pass of it until POST /jobs/{}/resume",
                format_rfc3339(since),
                s.job
            )?;
        }
        writeln!(
            out,
            "  items: {} tracked, {} in sync, {} pending upload, {} pending restore, {} pending removal, {} failed, {} skipped",
            s.tracked,
            s.in_sync,
            s.pending_upload,
            s.pending_restore,
            s.pending_removal,
            s.failed.len(),
            s.skipped.len()
        )?;
        writeln!(
            out,
            "  outbox: {} step(s) queued, {} retrying, {} parked",
            s.queued,
            s.retrying.len(),
            s.failed.iter().filter(|f| !upstream_failure(f)).count()
        )?;
        let when = |t: Option<i64>| t.map_or_else(|| "never".to_owned(), format_rfc3339);
        writeln!(out, "  last successful sync: {}", when(s.last_success))?;
        writeln!(
            out,
            "  last pass that left nothing to retry: {}",
            when(s.last_settled)
        )?;
        if let Some(r) = &s.last_run {
            writeln!(
                out,
                "  last pass: {} {}",
                format_rfc3339(r.finished_at),
                r.summary
            )?;
        }
        for f in &s.failed {
            writeln!(
                out,
                "  failed {} {} {} (since {}; {})",
                f.op,
                f.key,
                problem(f),
                f.since.map(format_rfc3339).unwrap_or_default(),
                if upstream_failure(f) {
                    "replaced when the file changes"
                } else {
                    "retried when the file changes, or `kbsync retry`"
                }
            )?;
        }
        for k in &s.skipped {
            writeln!(
                out,
                "  skipped {}: {} (since {}; until it changes or goes)",
                k.key,
                k.reason,
                format_rfc3339(k.since)
            )?;
        }
        for f in &s.retrying {
            writeln!(
                out,
                "  retrying {} {} {} (attempt {} failed; next at {})",
                f.op,
                f.key,
                problem(f),
                f.attempts,
                f.next_attempt_at.map(format_rfc3339).unwrap_or_default()
            )?;
        }
    }
    Ok(())
}

/// A record the upstream failed to process (found by an audit), not a
/// step of the outbox.
fn upstream_failure(f: &FailedItem) -> bool {
    f.op == "index"
}

fn problem(f: &FailedItem) -> String {
    match f.status {
        Some(s) => format!("[HTTP {s} {}] {}", f.code, f.message),
        None => format!("[{}] {}", f.code, f.message),
    }
}
