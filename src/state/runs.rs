//! The run log: one row per pass worth a line, with its counts, and the
//! jobs an operator paused. `status`, the control API's `/jobs` and
//! `/jobs/{name}/runs` read it.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{params, Connection, OptionalExtension};

use super::{now_secs, State, StateError};

/// Run-log rows kept per job.
const KEPT_RUNS: i64 = 1000;

/// What a pass did, in numbers: the run log's `detail`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunDetail {
    /// `all`, or the paths or range a scoped pass looked at.
    pub scope: String,
    pub duration_ms: u64,
    pub scanned: u64,
    /// Files read (hashed) because they changed or were new.
    pub read: u64,
    pub created: u64,
    pub adopted: u64,
    pub updated: u64,
    pub metadata: u64,
    /// Status changes by action (`disable`, `enable`, `archive`, …).
    pub status: BTreeMap<String, u64>,
    pub deleted: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Planned steps the outbox held back (failed before).
    pub held: u64,
    /// Upstream requests the pass sent.
    pub requests: u64,
    pub interrupted: bool,
    /// Why the job could not run (credential, source, fatal answer).
    pub error: Option<String>,
    /// Why the delete guard kept the pass from retiring anything.
    pub refused: Option<String>,
}

/// One pass of the run log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunSummary {
    pub started_at: i64,
    pub finished_at: i64,
    pub converged: bool,
    /// Nothing was left to retry (see `JobSummary::last_settled`).
    pub settled: bool,
    pub summary: String,
    /// The counts; `None` for passes logged by a kbsync before them.
    pub detail: Option<RunDetail>,
}

impl State {
    /// Adds a pass to the run log: whether it `converged`, and whether it
    /// `settled` (left nothing to retry).
    pub fn record_run(
        &self,
        job: &str,
        started_at: i64,
        (converged, settled): (bool, bool),
        summary: &str,
        detail: &RunDetail,
    ) -> Result<(), StateError> {
        let detail = serde_json::to_string(detail).expect("run details serialise");
        self.read(|c| {
            c.execute(
                "INSERT INTO runs (job, started_at, finished_at, converged, settled, summary, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![job, started_at, now_secs(), converged as i64, settled as i64, summary, detail],
            )?;
            // A daemon records a run per batch of changes: keep the log bounded.
            c.execute(
                "DELETE FROM runs WHERE job = ?1 AND id <= (
                     SELECT id FROM runs WHERE job = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![job, KEPT_RUNS],
            )?;
            Ok(())
        })
    }

    /// The job's last `limit` passes, newest first.
    pub fn runs(&self, job: &str, limit: usize) -> Result<Vec<RunSummary>, StateError> {
        self.read(|c| runs(c, job, limit))
    }

    /// Stops the service from running passes of `job` until `resume`; true
    /// when it was not paused yet.
    pub fn pause(&self, job: &str) -> Result<bool, StateError> {
        self.read(|c| {
            c.execute(
                "INSERT OR IGNORE INTO paused (job, since) VALUES (?1, ?2)",
                params![job, now_secs()],
            )
            .map(|n| n > 0)
        })
    }

    /// True when `job` was paused.
    pub fn resume(&self, job: &str) -> Result<bool, StateError> {
        self.read(|c| {
            c.execute("DELETE FROM paused WHERE job = ?1", [job])
                .map(|n| n > 0)
        })
    }

    /// When a pass of any job last converged (Unix seconds).
    pub fn last_success(&self) -> Result<Option<i64>, StateError> {
        self.read(|c| {
            c.query_row(
                "SELECT max(finished_at) FROM runs WHERE converged = 1",
                [],
                |r| r.get(0),
            )
        })
    }

    /// Paused jobs and since when (Unix seconds).
    pub fn paused(&self) -> Result<BTreeMap<String, i64>, StateError> {
        self.read(paused)
    }
}

pub(super) fn paused(c: &Connection) -> rusqlite::Result<BTreeMap<String, i64>> {
    // A state file of a kbsync before pausing (read, never migrated, by
    // `status`) has no paused job.
    if !columns(c, "paused")?.contains("job") {
        return Ok(BTreeMap::new());
    }
    c.prepare("SELECT job, since FROM paused")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

pub(super) fn runs(c: &Connection, job: &str, limit: usize) -> rusqlite::Result<Vec<RunSummary>> {
    let have = columns(c, "runs")?;
    // Columns a kbsync before them did not write: a converged pass settled
    // too, and old passes have no counts.
    let settled = if have.contains("settled") {
        "settled"
    } else {
        "converged"
    };
    let detail = if have.contains("detail") {
        "detail"
    } else {
        "NULL"
    };
    c.prepare(&format!(
        "SELECT started_at, finished_at, converged, {settled} AS settled, summary, {detail} AS detail
         FROM runs WHERE job = ?1 ORDER BY id DESC LIMIT ?2"
    ))?
    .query_map(params![job, limit as i64], |r| {
        Ok(RunSummary {
            started_at: r.get("started_at")?,
            finished_at: r.get("finished_at")?,
            converged: r.get::<_, i64>("converged")? != 0,
            settled: r.get::<_, i64>("settled")? != 0,
            summary: r.get("summary")?,
            detail: r
                .get::<_, Option<String>>("detail")?
                .and_then(|d| serde_json::from_str(&d).ok()),
        })
    })?
    .collect()
}

/// When the job's last pass converged, and when one last settled.
pub(super) fn last_good(c: &Connection, job: &str) -> rusqlite::Result<(Option<i64>, Option<i64>)> {
    let settled = if columns(c, "runs")?.contains("settled") {
        "settled"
    } else {
        "converged"
    };
    c.query_row(
        &format!(
            "SELECT max(CASE WHEN converged = 1 THEN finished_at END) AS success,
                    max(CASE WHEN {settled} = 1 THEN finished_at END) AS settled
             FROM runs WHERE job = ?1"
        ),
        [job],
        |r| Ok((r.get("success")?, r.get("settled")?)),
    )
    .optional()
    .map(Option::unwrap_or_default)
}

fn columns(c: &Connection, table: &str) -> rusqlite::Result<BTreeSet<String>> {
    c.prepare("SELECT name FROM pragma_table_info(?1)")?
        .query_map([table], |r| r.get(0))?
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_come_back_newest_first_with_their_counts_and_pauses_outlive_the_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let s = State::open(&path).unwrap();
        let mut detail = RunDetail {
            scope: "all".into(),
            created: 3,
            ..RunDetail::default()
        };
        s.record_run("j", 1, (true, true), "3 files, 3 created", &detail)
            .unwrap();
        detail.created = 0;
        detail.error = Some("source unreachable".into());
        s.record_run("j", 2, (false, false), "failed", &detail)
            .unwrap();
        let runs = s.runs("j", 10).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].started_at, 2);
        assert_eq!(
            runs[0].detail.as_ref().unwrap().error.as_deref(),
            Some("source unreachable")
        );
        assert_eq!(runs[1].detail.as_ref().unwrap().created, 3);
        assert_eq!(s.runs("j", 1).unwrap().len(), 1);

        assert!(s.pause("j").unwrap());
        assert!(!s.pause("j").unwrap(), "a second pause changes nothing");
        drop(s);
        let s = State::open(&path).unwrap();
        assert!(s.paused().unwrap().contains_key("j"));
        assert!(s.resume("j").unwrap());
        assert!(!s.resume("j").unwrap());
        assert!(s.paused().unwrap().is_empty());
    }
}
