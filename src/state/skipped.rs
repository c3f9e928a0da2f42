//! The files a job's passes skipped, and why: a skipped file keeps the
//! job from converging, and `status` names it until it goes or is taken.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, ToSql};

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
    /// what this pass skipped there; skips outside it stand. Nothing is
    /// written when nothing changed: a no-op pass stays read-only.
    pub fn record_skipped(
        &self,
        job: &str,
        scope: &Scope,
        skipped: &[Skipped],
    ) -> Result<(), StateError> {
        let known = self.read(|c| skipped_in(c, job, scope))?;
        let now_listed: HashMap<&str, &str> = skipped
            .iter()
            .take(KEPT)
            .map(|s| (s.path.as_str(), s.reason.as_str()))
            .collect();
        let stale: Vec<&String> = known
            .keys()
            .filter(|k| !now_listed.contains_key(k.as_str()))
            .collect();
        let fresh: Vec<(&str, &str)> = now_listed
            .iter()
            .filter(|(k, r)| known.get(**k).map(String::as_str) != Some(**r))
            .map(|(k, r)| (*k, *r))
            .collect();
        if stale.is_empty() && fresh.is_empty() {
            return Ok(());
        }
        let now = now_secs();
        self.write(|tx| {
            let mut drop_row =
                tx.prepare_cached("DELETE FROM skipped WHERE job = ?1 AND key = ?2")?;
            for key in stale {
                drop_row.execute(params![job, key])?;
            }
            // A new reason starts a new `since`.
            let mut upsert = tx.prepare_cached(
                "INSERT OR REPLACE INTO skipped (job, key, reason, since) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (key, reason) in fresh {
                upsert.execute(params![job, key, reason, now])?;
            }
            Ok(())
        })
    }
}

/// The skips listed within `scope`, key → reason.
fn skipped_in(
    c: &Connection,
    job: &str,
    scope: &Scope,
) -> rusqlite::Result<HashMap<String, String>> {
    let (filter, binds) = scope_filter(scope);
    let mut stmt = c.prepare(&format!(
        "SELECT key, reason FROM skipped WHERE job = ?1{filter}"
    ))?;
    let mut out = HashMap::new();
    for b in &binds {
        let args: Vec<&dyn ToSql> = std::iter::once(&job as &dyn ToSql)
            .chain(b.iter().copied())
            .collect();
        let rows = stmt.query_map(args.as_slice(), |r| Ok((r.get(0)?, r.get(1)?)))?;
        for row in rows {
            let (key, reason) = row?;
            out.insert(key, reason);
        }
    }
    Ok(out)
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
