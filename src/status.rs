//! `kbsync status`: what the state file says about each job. It opens the
//! file read-only, so it works beside a running service (WAL readers do not
//! block the writer).

use std::io::Write;
use std::path::Path;

use crate::metadata::format_rfc3339;
use crate::state::{FailedItem, JobSummary, State};

/// Reads the summaries; `None` when kbsync has never run with this state
/// file.
pub fn read(state_path: &Path, only: &[String]) -> anyhow::Result<Option<Vec<JobSummary>>> {
    if !state_path.exists() {
        return Ok(None);
    }
    let state = State::open_read_only(state_path)?;
    let mut all = state.summaries()?;
    if !only.is_empty() {
        all.retain(|s| only.contains(&s.job));
    }
    Ok(Some(all))
}

pub fn print(out: &mut impl Write, summaries: &[JobSummary]) -> std::io::Result<()> {
    for s in summaries {
        writeln!(
            out,
            "{}{}",
            s.job,
            s.target
                .as_deref()
                .map(|t| format!(" → {t}"))
                .unwrap_or_default()
        )?;
        writeln!(
            out,
            "  items: {} tracked, {} in sync, {} pending upload, {} pending removal, {} failed",
            s.tracked,
            s.in_sync,
            s.pending_upload,
            s.pending_removal,
            s.failed.len()
        )?;
        writeln!(
            out,
            "  outbox: {} step(s) queued, {} retrying, {} parked",
            s.queued,
            s.retrying.len(),
            s.failed.len()
        )?;
        match &s.last_success {
            Some(t) => writeln!(out, "  last successful sync: {}", format_rfc3339(*t))?,
            None => writeln!(out, "  last successful sync: never")?,
        }
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
                "  failed {} {} {} (since {}; retried when the file changes, or `kbsync retry`)",
                f.op,
                f.key,
                problem(f),
                f.since.map(format_rfc3339).unwrap_or_default()
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

fn problem(f: &FailedItem) -> String {
    match f.status {
        Some(s) => format!("[HTTP {s} {}] {}", f.code, f.message),
        None => format!("[{}] {}", f.code, f.message),
    }
}
