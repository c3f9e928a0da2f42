//! Settled items: rows a full evaluation found in sync with the upstream,
//! under the job's plan fingerprint (its mapping, delete policy, target
//! capabilities, bindings). While such a row's file keeps its size and
//! mtime, the pass neither reads nor plans it: a no-op pass over a large
//! tree costs a walk and one ordered read of the cache. Every write to a
//! row clears its flag (see the `settled = 0` in each UPDATE), and a new
//! fingerprint clears them all.

use rusqlite::params;

use super::{cached_item, CachedItem, State, StateError, COLUMNS, IN_SUBTREE};
use crate::source::Scope;

/// One cached row, read lazily: comparing a file with it touches only
/// the few columns that decide whether it is settled.
pub struct CacheRow<'r> {
    row: &'r rusqlite::Row<'r>,
    path: &'r std::path::Path,
    /// False when the settled flags cannot be trusted (a dry run under a
    /// fingerprint that differs from the recorded one).
    trust_settled: bool,
}

impl CacheRow<'_> {
    pub fn key(&self) -> &str {
        self.row
            .get_ref(0)
            .ok()
            .and_then(|v| v.as_str().ok())
            .unwrap_or_default()
    }

    fn int(&self, i: usize) -> Option<i64> {
        self.row
            .get_ref(i)
            .ok()
            .and_then(|v| v.as_i64_or_null().ok().flatten())
    }

    fn settled(&self) -> bool {
        self.trust_settled && self.int(14) == Some(1)
    }

    /// Settled, present, and recorded with this very size and mtime (and
    /// not racy): nothing to read, nothing to plan.
    pub fn settled_as(&self, size: u64, mtime_ns: i64) -> bool {
        self.settled()
            && self.int(1) == Some(1)
            && self.int(12) == Some(0)
            && self.int(2) == Some(size as i64)
            && self.int(3) == Some(mtime_ns)
    }

    /// Settled and gone from the source (already disabled, archived or
    /// kept, as the delete policy wants).
    pub fn settled_absent(&self) -> bool {
        self.settled() && self.int(1) == Some(0)
    }

    pub fn item(&self) -> Result<CachedItem, StateError> {
        cached_item(self.row).map_err(|e| super::sqlite_err(self.path, e))
    }
}

impl State {
    /// Records `fingerprint` as the job's plan fingerprint; when it differs
    /// from the recorded one, every settled flag of the job is cleared
    /// (when `write`) or distrusted (a dry run). Returns whether the flags
    /// can be trusted.
    pub fn plan_fingerprint(
        &mut self,
        job: &str,
        fingerprint: &str,
        write: bool,
    ) -> Result<bool, StateError> {
        let recorded: Option<String> = self
            .conn
            .prepare_cached("SELECT plan_fingerprint FROM jobs WHERE job = ?1")
            .and_then(|mut s| {
                let mut rows = s.query([job])?;
                Ok(match rows.next()? {
                    Some(r) => r.get(0)?,
                    None => None,
                })
            })
            .map_err(|e| self.err(e))?;
        if recorded.as_deref() == Some(fingerprint) {
            return Ok(true);
        }
        if !write {
            return Ok(false);
        }
        let tx = self
            .conn
            .transaction()
            .map_err(|e| super::sqlite_err(&self.path, e))?;
        tx.execute(
            "UPDATE items SET settled = 0 WHERE job = ?1 AND settled = 1",
            [job],
        )
        .map_err(|e| super::sqlite_err(&self.path, e))?;
        tx.execute(
            "UPDATE jobs SET plan_fingerprint = ?2 WHERE job = ?1",
            params![job, fingerprint],
        )
        .map_err(|e| super::sqlite_err(&self.path, e))?;
        tx.commit().map_err(|e| super::sqlite_err(&self.path, e))?;
        Ok(true)
    }

    /// Calls `f` with every cached row of `job` inside `scope`, streaming
    /// (a whole job is read in key order without holding it in memory).
    pub fn each_cached(
        &self,
        job: &str,
        scope: &Scope,
        trust_settled: bool,
        mut f: impl FnMut(&CacheRow) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let mut visit = |stmt: &mut rusqlite::Statement, params: &[&dyn rusqlite::ToSql]| {
            let mut rows = stmt.query(params).map_err(|e| self.err(e))?;
            while let Some(row) = rows.next().map_err(|e| self.err(e))? {
                f(&CacheRow {
                    row,
                    path: &self.path,
                    trust_settled,
                })?;
            }
            Ok::<(), StateError>(())
        };
        if scope.is_all() {
            let mut stmt = self
                .conn
                .prepare_cached(&format!("{COLUMNS} ORDER BY key"))
                .map_err(|e| self.err(e))?;
            return visit(&mut stmt, &[&job]);
        }
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{COLUMNS} AND {IN_SUBTREE}"))
            .map_err(|e| self.err(e))?;
        for path in scope.paths() {
            visit(&mut stmt, &[&job, &path])?;
        }
        Ok(())
    }

    /// The current rows of `keys`, looked up one by one (in key order
    /// they share the index pages they walk).
    pub fn load_keys<'k>(
        &self,
        job: &str,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<std::collections::HashMap<String, CachedItem>, StateError> {
        let keys = keys.into_iter();
        let mut out = std::collections::HashMap::with_capacity(keys.size_hint().0);
        let mut stmt = self
            .conn
            .prepare_cached(&format!("{COLUMNS} AND key = ?2"))
            .map_err(|e| self.err(e))?;
        for key in keys {
            let mut rows = stmt.query(params![job, key]).map_err(|e| self.err(e))?;
            if let Some(row) = rows.next().map_err(|e| self.err(e))? {
                let item = cached_item(row).map_err(|e| self.err(e))?;
                out.insert(item.key.clone(), item);
            }
        }
        Ok(out)
    }

    /// Flags `keys` settled: the pass evaluated them and found nothing to do.
    pub fn mark_settled(&mut self, job: &str, keys: &[&str]) -> Result<(), StateError> {
        if keys.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction()
            .map_err(|e| super::sqlite_err(&self.path, e))?;
        {
            let mut stmt = tx
                .prepare_cached("UPDATE items SET settled = 1 WHERE job = ?1 AND key = ?2")
                .map_err(|e| super::sqlite_err(&self.path, e))?;
            for key in keys {
                stmt.execute(params![job, key])
                    .map_err(|e| super::sqlite_err(&self.path, e))?;
            }
        }
        tx.commit().map_err(|e| super::sqlite_err(&self.path, e))
    }
}
