//! The files a job's passes skipped, and why: a skipped file keeps the
//! job from converging, and `status` names it until it goes or is taken.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension};

use super::items::scope_filter;
use super::{now_secs, State, StateError};
use crate::source::{Scope, Skipped};

/// Rows kept per job: a tree of a hundred thousand files of a type the
/// upstream does not take is said by its count and the first of them.
pub const KEPT: usize = 1000;

/// A file a pass skipped.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SkippedItem {
    pub key: String,
    pub reason: String,
    /// Unix seconds of the first pass that skipped it for this reason.
    pub since: i64,
}

impl State {
    /// Replaces what the state file says was skipped within `scope` with
    /// what this pass skipped there; skips outside it stand.
    pub fn record_skipped(
        &self,
        job: &str,
        scope: &Scope,
        skipped: &[Skipped],
    ) -> Result<(), StateError> {
        let now = now_secs();
        let keep: HashSet<&str> = skipped.iter().map(|s| s.path.as_str()).collect();
        let (filter, binds) = scope_filter(scope);
        self.write(|tx| {
            let mut stale = Vec::new();
            for b in &binds {
                let sql = format!("SELECT key FROM skipped WHERE job = ?1{filter}");
                let mut stmt = tx.prepare(&sql)?;
                let args: Vec<&dyn rusqlite::ToSql> = std::iter::once(&job as &dyn rusqlite::ToSql)
                    .chain(b.iter().copied())
                    .collect();
                let keys = stmt.query_map(args.as_slice(), |r| r.get::<_, String>(0))?;
                for key in keys {
                    let key = key?;
                    if !keep.contains(key.as_str()) {
                        stale.push(key);
                    }
                }
            }
            let mut drop_row =
                tx.prepare_cached("DELETE FROM skipped WHERE job = ?1 AND key = ?2")?;
            for key in stale {
                drop_row.execute(params![job, key])?;
            }
            let mut upsert = tx.prepare_cached(
                "INSERT INTO skipped (job, key, reason, since) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (job, key) DO UPDATE SET reason = excluded.reason,
                     since = CASE WHEN reason = excluded.reason THEN since ELSE excluded.since END",
            )?;
            for s in skipped.iter().take(KEPT) {
                upsert.execute(params![job, s.path, s.reason, now])?;
            }
            Ok(())
        })
    }
}

/// What the state file lists as skipped for `job`, by key (none from a
/// state file older than the list).
pub(super) fn skipped(c: &Connection, job: &str) -> rusqlite::Result<Vec<SkippedItem>> {
    let has: Option<i64> = c
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'skipped'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if has.is_none() {
        return Ok(Vec::new());
    }
    c.prepare("SELECT key, reason, since FROM skipped WHERE job = ?1 ORDER BY key")?
        .query_map([job], |r| {
            Ok(SkippedItem {
                key: r.get("key")?,
                reason: r.get("reason")?,
                since: r.get("since")?,
            })
        })?
        .collect()
}
