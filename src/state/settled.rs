//! Settled items: rows a full evaluation found in sync with the upstream,
//! under the job's plan fingerprint (its mapping, delete policy, target
//! capabilities, bindings). While such a row's entry keeps its stamp (a
//! file's size, mtime and identity; see `source::stamp`), the pass neither
//! reads nor plans it: a no-op pass over a large tree costs a walk and one
//! ordered read of the cache. Every write to a row clears its flag (see
//! the `settled = 0` in each UPDATE), and a new fingerprint clears them
//! all.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};

use super::items::{cached_item, col, scope_filter, select_items};
use super::{CachedItem, State, StateError};
use crate::source::{Recorded, Scope, Stamped};

/// One cached row, read lazily: comparing an entry with it touches only
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
            .get_ref(col::KEY)
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
        self.trust_settled && self.int(col::SETTLED) == Some(1)
    }

    /// Settled, present, and recorded with this very stamp (and not
    /// racy): nothing to read, nothing to plan.
    pub fn settled_as(&self, entry: &impl Stamped) -> bool {
        self.settled() && self.int(col::PRESENT) == Some(1) && crate::source::unchanged(entry, self)
    }

    /// Settled and gone from the source (already disabled, archived or
    /// kept, as the delete policy wants).
    pub fn settled_absent(&self) -> bool {
        self.settled() && self.int(col::PRESENT) == Some(0)
    }

    pub fn item(&self) -> Result<CachedItem, StateError> {
        cached_item(self.row).map_err(|e| super::sqlite_err(self.path, e))
    }
}

/// The row's stamp columns, each read only when the kind compares it.
impl Recorded for CacheRow<'_> {
    fn size(&self) -> Option<u64> {
        self.int(col::SIZE).map(|v| v as u64)
    }

    fn mtime_ns(&self) -> Option<i64> {
        self.int(col::MTIME_NS)
    }

    fn identity(&self) -> Option<i64> {
        self.int(col::IDENTITY)
    }

    fn tag(&self) -> Option<&str> {
        self.row
            .get_ref(col::VALIDATOR)
            .ok()
            .and_then(|v| v.as_str_or_null().ok().flatten())
    }

    fn racy(&self) -> bool {
        self.int(col::RACY) != Some(0)
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
        let recorded: Option<String> = self.read(|c| {
            c.prepare_cached("SELECT plan_fingerprint FROM jobs WHERE job = ?1")?
                .query_row([job], |r| r.get(0))
                .optional()
                .map(Option::flatten)
        })?;
        if recorded.as_deref() == Some(fingerprint) {
            return Ok(true);
        }
        if !write {
            return Ok(false);
        }
        self.write(|tx| {
            tx.execute(
                "UPDATE items SET settled = 0 WHERE job = ?1 AND settled = 1",
                [job],
            )?;
            tx.execute(
                "UPDATE jobs SET plan_fingerprint = ?2 WHERE job = ?1",
                params![job, fingerprint],
            )
        })?;
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
        let (filter, queries) = scope_filter(scope);
        let sql = format!("{}{filter} ORDER BY key", select_items());
        let mut stmt = self.read(|c| c.prepare_cached(&sql))?;
        for extra in queries {
            let mut params: Vec<&dyn rusqlite::ToSql> = vec![&job];
            params.extend(extra);
            visit(&mut stmt, &params)?;
        }
        Ok(())
    }

    /// The current rows of `keys`, looked up one by one (in key order
    /// they share the index pages they walk).
    pub fn load_keys<'k>(
        &self,
        job: &str,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<HashMap<String, CachedItem>, StateError> {
        self.read(|c| {
            let keys = keys.into_iter();
            let mut out = HashMap::with_capacity(keys.size_hint().0);
            let mut stmt = c.prepare_cached(&format!("{} AND key = ?2", select_items()))?;
            for key in keys {
                if let Some(item) = stmt.query_row(params![job, key], cached_item).optional()? {
                    out.insert(item.key.clone(), item);
                }
            }
            Ok(out)
        })
    }

    /// Flags `keys` settled: the pass evaluated them and found nothing to do.
    pub fn mark_settled(&mut self, job: &str, keys: &[&str]) -> Result<(), StateError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut stmt =
                tx.prepare_cached("UPDATE items SET settled = 1 WHERE job = ?1 AND key = ?2")?;
            for key in keys {
                stmt.execute(params![job, key])?;
            }
            Ok(())
        })
    }

    /// Unix seconds of the job's last pass that read every file.
    pub fn rehashed_at(&self, job: &str) -> Result<Option<i64>, StateError> {
        self.read(|c| {
            c.query_row("SELECT rehashed_at FROM jobs WHERE job = ?1", [job], |r| {
                r.get(0)
            })
            .optional()
            .map(Option::flatten)
        })
    }

    pub fn mark_rehashed(&self, job: &str) -> Result<(), StateError> {
        self.read(|c| {
            c.execute(
                "UPDATE jobs SET rehashed_at = ?2 WHERE job = ?1",
                params![job, super::now_secs()],
            )
            .map(drop)
        })
    }
}
