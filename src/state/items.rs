//! The item cache (what each job last observed of every item and what it
//! last pushed upstream), the job's binding to its upstream, metadata field
//! ids and the run log.

use std::collections::HashMap;

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension, ToSql};

use super::outbox::StepKind;
use super::{State, StateError};
use crate::metadata::{FieldType, Metadata};
use crate::source::{KnownFacts, Observed, Scope};

/// Upstream status of a document as kbsync last set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoteStatus {
    Enabled,
    Disabled,
    Archived,
}

impl RemoteStatus {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            RemoteStatus::Enabled => "enabled",
            RemoteStatus::Disabled => "disabled",
            RemoteStatus::Archived => "archived",
        }
    }

    pub(super) fn parse(s: &str) -> RemoteStatus {
        match s {
            "disabled" => RemoteStatus::Disabled,
            "archived" => RemoteStatus::Archived,
            _ => RemoteStatus::Enabled,
        }
    }
}

/// Everything the cache holds about one item of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedItem {
    pub key: String,
    pub present: bool,
    pub facts: Option<KnownFacts>,
    pub doc_id: Option<String>,
    pub doc_name: Option<String>,
    pub pushed_hash: Option<String>,
    pub pushed_meta: Option<Metadata>,
    pub status: RemoteStatus,
    pub indexing_batch: Option<String>,
}

columns!(pub(super) mod col {
    KEY = "key",
    PRESENT = "present",
    SIZE = "size",
    MTIME_NS = "mtime_ns",
    HASH = "hash",
    FRONT_MATTER = "front_matter",
    DOC_ID = "doc_id",
    DOC_NAME = "doc_name",
    PUSHED_HASH = "pushed_hash",
    PUSHED_META = "pushed_meta",
    STATUS = "status",
    INDEXING_BATCH = "indexing_batch",
    RACY = "racy",
    VALIDATOR = "validator",
    SETTLED = "settled",
    IDENTITY = "identity",
});

/// The rows of one job, with the columns `cached_item` reads.
pub(super) fn select_items() -> String {
    format!("SELECT {} FROM items WHERE job = ?1", col::LIST)
}

/// `key` is `?2` or below it: '0' sorts right after '/', so [p/, p0) is
/// exactly the subtree.
// One index range, [p, p + '0'), then the exact test: an OR of two ranges
// made SQLite scan every row of the job per path (1,000 scoped paths in a
// 30,000-row job took seconds).
const IN_SUBTREE: &str = "(key >= ?2 AND key < ?2 || '0' AND (key = ?2 OR key >= ?2 || '/'))";

/// The keys of `scope` as a condition to add after `job = ?1`, with the
/// further parameters of each query to run: one for everything or a range
/// of it, one per path otherwise (a slice of paths: each path's subtree
/// within the range).
pub(super) fn scope_filter(scope: &Scope) -> (String, Vec<Vec<&dyn ToSql>>) {
    match scope {
        Scope::All => (String::new(), vec![Vec::new()]),
        Scope::Range {
            from,
            until,
            within: None,
        } => (
            " AND key >= ?2 AND (?3 IS NULL OR key < ?3)".into(),
            vec![vec![from as &dyn ToSql, until]],
        ),
        Scope::Range {
            from,
            until,
            within: Some(paths),
        } => (
            format!(" AND {IN_SUBTREE} AND key >= ?3 AND (?4 IS NULL OR key < ?4)"),
            paths
                .iter()
                .map(|p| vec![p as &dyn ToSql, from, until])
                .collect(),
        ),
        Scope::Paths(paths) => (
            format!(" AND {IN_SUBTREE}"),
            paths.iter().map(|p| vec![p as &dyn ToSql]).collect(),
        ),
    }
}

pub(super) fn cached_item(r: &rusqlite::Row) -> rusqlite::Result<CachedItem> {
    let size: Option<i64> = r.get(col::SIZE)?;
    let mtime: Option<i64> = r.get(col::MTIME_NS)?;
    let hash: Option<String> = r.get(col::HASH)?;
    let fm: Option<String> = r.get(col::FRONT_MATTER)?;
    let facts = match (size, mtime, hash) {
        (Some(size), Some(mtime_ns), Some(hash)) => Some(KnownFacts {
            size: size as u64,
            mtime_ns,
            identity: r.get::<_, Option<i64>>(col::IDENTITY)?.unwrap_or(0),
            hash,
            front_matter: fm.and_then(|t| serde_json::from_str(&t).ok()),
            racy: r.get::<_, i64>(col::RACY)? != 0,
            validator: r.get(col::VALIDATOR)?,
        }),
        _ => None,
    };
    let meta: Option<String> = r.get(col::PUSHED_META)?;
    Ok(CachedItem {
        key: r.get(col::KEY)?,
        present: r.get::<_, i64>(col::PRESENT)? != 0,
        facts,
        doc_id: r.get(col::DOC_ID)?,
        doc_name: r.get(col::DOC_NAME)?,
        pushed_hash: r.get(col::PUSHED_HASH)?,
        pushed_meta: meta.and_then(|t| serde_json::from_str(&t).ok()),
        status: RemoteStatus::parse(&r.get::<_, String>(col::STATUS)?),
        indexing_batch: r.get(col::INDEXING_BATCH)?,
    })
}

impl State {
    /// Records which upstream a job mirrors into. When it changed (another
    /// dataset, another server), the upstream ids in the cache mean nothing
    /// there: they are dropped so the next push recreates or adopts.
    /// Returns true when the target changed.
    /// The target `job` is bound to, if any.
    pub fn bound_target(&self, job: &str) -> Result<Option<String>, StateError> {
        self.read(|c| {
            c.query_row("SELECT target FROM jobs WHERE job = ?1", [job], |r| {
                r.get(0)
            })
            .optional()
        })
    }

    pub fn bind_target(&mut self, job: &str, target: &str) -> Result<bool, StateError> {
        self.write(|tx| {
            let old: Option<String> = tx
                .query_row("SELECT target FROM jobs WHERE job = ?1", [job], |r| {
                    r.get(0)
                })
                .optional()?;
            let changed = old.as_deref().is_some_and(|o| o != target);
            if changed {
                tx.execute(
                    "UPDATE items SET doc_id = NULL, doc_name = NULL, pushed_hash = NULL, pushed_meta = NULL,
                            status = 'enabled', indexing_batch = NULL, settled = 0 WHERE job = ?1",
                    [job],
                )?;
                tx.execute("DELETE FROM items WHERE job = ?1 AND present = 0", [job])?;
                tx.execute("DELETE FROM fields WHERE job = ?1", [job])?;
                // The new target is listed before anything is created in it,
                // so what it already holds is adopted, not duplicated.
                tx.execute("UPDATE jobs SET listed_at = NULL WHERE job = ?1", [job])?;
                tx.execute("DELETE FROM outbox WHERE job = ?1", [job])?;
            }
            tx.execute(
                "INSERT INTO jobs (job, target) VALUES (?1, ?2)
                 ON CONFLICT(job) DO UPDATE SET target = excluded.target",
                params![job, target],
            )?;
            Ok(changed)
        })
    }

    pub fn load_items(&self, job: &str) -> Result<HashMap<String, CachedItem>, StateError> {
        self.load_items_in(job, &Scope::All)
    }

    /// The cached items `scope` covers: a scoped pass reads only the rows
    /// of the paths it looks at (primary-key range scans), not the whole job.
    pub fn load_items_in(
        &self,
        job: &str,
        scope: &Scope,
    ) -> Result<HashMap<String, CachedItem>, StateError> {
        let mut out = HashMap::new();
        self.each_cached(job, scope, false, |row| {
            let item = row.item()?;
            out.insert(item.key.clone(), item);
            Ok(())
        })?;
        Ok(out)
    }

    /// Saves observed facts (one transaction) and marks `absent` keys as gone
    /// from the source. Only changed rows are passed in, so a no-op scan
    /// writes nothing.
    pub fn save_scan(
        &mut self,
        job: &str,
        changed: &[&Observed],
        absent: &[&str],
    ) -> Result<(), StateError> {
        if changed.is_empty() && absent.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut up = tx.prepare_cached(
                "INSERT INTO items (job, key, present, size, mtime_ns, hash, front_matter, racy, validator, identity)
                 VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT(job, key) DO UPDATE SET present = 1, size = excluded.size,
                    mtime_ns = excluded.mtime_ns, hash = excluded.hash,
                    front_matter = excluded.front_matter, racy = excluded.racy,
                    validator = excluded.validator, identity = excluded.identity, settled = 0",
            )?;
            for o in changed {
                let fm = o
                    .front_matter
                    .as_ref()
                    .map(|m| serde_json::to_string(m).unwrap_or_default());
                up.execute(params![
                    job,
                    o.key,
                    o.size as i64,
                    o.mtime_ns,
                    o.hash,
                    fm,
                    o.racy as i64,
                    o.validator,
                    o.identity
                ])?;
            }
            let mut gone = tx.prepare_cached(
                "UPDATE items SET present = 0, settled = 0 WHERE job = ?1 AND key = ?2",
            )?;
            for key in absent {
                gone.execute(params![job, key])?;
            }
            Ok(())
        })
    }

    /// Content now upstream as `doc_id` (created, adopted or updated). A
    /// different document than before has none of the old one's metadata.
    pub fn record_content(
        &self,
        job: &str,
        key: &str,
        doc_id: &str,
        doc_name: &str,
        hash: &str,
        batch: Option<&str>,
    ) -> Result<(), StateError> {
        self.write(|tx| {
            tx.prepare_cached(
                "UPDATE items SET doc_id = ?3, doc_name = ?4, pushed_hash = ?5, indexing_batch = ?6,
                        pushed_meta = CASE WHEN doc_id IS ?3 THEN pushed_meta ELSE NULL END,
                        status = 'enabled', settled = 0,
                        error_code = NULL, error_message = NULL, error_at = NULL
                 WHERE job = ?1 AND key = ?2",
            )?
            .execute(params![job, key, doc_id, doc_name, hash, batch])?;
            // Adopting or updating may also have restored the document.
            tx.prepare_cached(
                "DELETE FROM outbox WHERE job = ?1 AND key = ?2 AND kind IN ('content', 'status')",
            )?
            .execute(params![job, key])?;
            Ok(())
        })
    }

    /// A document known upstream whose content is unknown (adopted, or the
    /// upload's outcome was lost): remembered so that it is not duplicated.
    pub fn record_doc_id(
        &self,
        job: &str,
        key: &str,
        doc_id: &str,
        doc_name: &str,
    ) -> Result<(), StateError> {
        self.read(|c| {
            c.execute(
                "UPDATE items SET doc_id = ?3, doc_name = ?4, settled = 0 WHERE job = ?1 AND key = ?2",
                params![job, key, doc_id, doc_name],
            )
            .map(drop)
        })
    }

    /// The upstream record of `key` is gone: forget its id and what was
    /// pushed to it, so the next pass finds or creates it again.
    pub fn clear_doc_id(&self, job: &str, key: &str) -> Result<(), StateError> {
        self.unset(
            job,
            key,
            "doc_id = NULL, doc_name = NULL, pushed_meta = NULL,
             error_code = NULL, error_message = NULL, error_at = NULL",
        )
    }

    pub fn record_metadata(&self, job: &str, done: &[(&str, &Metadata)]) -> Result<(), StateError> {
        let rows = done
            .iter()
            .map(|(key, meta)| (*key, serde_json::to_string(meta).unwrap_or_default()));
        self.record_done(
            job,
            "UPDATE items SET pushed_meta = ?3, settled = 0 WHERE job = ?1 AND key = ?2",
            StepKind::Metadata,
            rows.map(|(key, text)| (key, [Value::Text(text)])),
        )
    }

    pub fn record_status(
        &self,
        job: &str,
        keys: &[&str],
        status: RemoteStatus,
    ) -> Result<(), StateError> {
        let now = super::unix_now();
        let values = || [Value::Text(status.as_str().into()), Value::Integer(now)];
        self.record_done(
            job,
            "UPDATE items SET status = ?3, status_at = ?4, settled = 0 WHERE job = ?1 AND key = ?2",
            StepKind::Status,
            keys.iter().map(|key| (*key, values())),
        )
    }

    /// Records what one kind of step did for each key (`update`, with the
    /// job, the key and then the row's values), and drops the step from the
    /// outbox in the same transaction.
    fn record_done<'k, const N: usize>(
        &self,
        job: &str,
        update: &str,
        kind: StepKind,
        rows: impl Iterator<Item = (&'k str, [Value; N])>,
    ) -> Result<(), StateError> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(update)?;
            let mut done_step =
                tx.prepare_cached("DELETE FROM outbox WHERE job = ?1 AND key = ?2 AND kind = ?3")?;
            for (key, values) in rows {
                let head = [Value::Text(job.into()), Value::Text(key.into())];
                stmt.execute(params_from_iter(head.into_iter().chain(values)))?;
                done_step.execute(params![job, key, kind.as_str()])?;
            }
            Ok(())
        })
    }

    /// Jobs the state file holds rows for.
    pub fn jobs(&self) -> Result<Vec<String>, StateError> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT job FROM jobs UNION SELECT job FROM items UNION SELECT job FROM runs
                 UNION SELECT job FROM outbox UNION SELECT job FROM fields ORDER BY 1",
            )?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// `kbsync forget --job`: every row of a job, in one transaction.
    /// Returns how many items it tracked.
    pub fn forget_job(&self, job: &str) -> Result<usize, StateError> {
        self.write(|tx| {
            let items = tx.execute("DELETE FROM items WHERE job = ?1", params![job])?;
            for table in ["outbox", "runs", "fields", "jobs", "skipped"] {
                tx.execute(&format!("DELETE FROM {table} WHERE job = ?1"), params![job])?;
            }
            Ok(items)
        })
    }

    /// Drops an item from the cache (deleted upstream, or never pushed and
    /// gone locally).
    /// Moves `from`'s row (document, what was pushed, steps in flight) to
    /// `to`: the same item under another spelling of its path. `to` has
    /// no row of its own (it is new to the pass).
    pub fn rename_item(&self, job: &str, from: &str, to: &str) -> Result<(), StateError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE items SET key = ?3, settled = 0 WHERE job = ?1 AND key = ?2",
                params![job, from, to],
            )?;
            tx.execute(
                "UPDATE outbox SET key = ?3 WHERE job = ?1 AND key = ?2",
                params![job, from, to],
            )?;
            Ok(())
        })
    }

    pub fn forget(&self, job: &str, key: &str) -> Result<(), StateError> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM items WHERE job = ?1 AND key = ?2",
                params![job, key],
            )?;
            tx.execute(
                "DELETE FROM outbox WHERE job = ?1 AND key = ?2",
                params![job, key],
            )?;
            Ok(())
        })
    }

    pub fn fields(&self, job: &str) -> Result<HashMap<String, (String, FieldType)>, StateError> {
        self.read(|c| {
            let mut stmt =
                c.prepare("SELECT name, field_id, field_type FROM fields WHERE job = ?1")?;
            let rows = stmt.query_map([job], |r| {
                let kind = match r.get::<_, String>("field_type")?.as_str() {
                    "number" => FieldType::Number,
                    "time" => FieldType::Time,
                    _ => FieldType::String,
                };
                Ok((r.get("name")?, (r.get("field_id")?, kind)))
            })?;
            rows.collect()
        })
    }

    pub fn save_field(
        &self,
        job: &str,
        name: &str,
        id: &str,
        kind: FieldType,
    ) -> Result<(), StateError> {
        self.read(|c| {
            c.execute(
                "INSERT INTO fields (job, name, field_type, field_id) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(job, name) DO UPDATE SET field_type = excluded.field_type, field_id = excluded.field_id",
                params![job, name, kind.to_string(), id],
            )
            .map(drop)
        })
    }

    pub fn forget_fields(&self, job: &str) -> Result<(), StateError> {
        self.read(|c| {
            c.execute("DELETE FROM fields WHERE job = ?1", [job])
                .map(drop)
        })
    }

    /// Records the job holds upstream: what the delete guard measures a
    /// pass's retirements against.
    pub fn tracked_records(&self, job: &str) -> Result<u64, StateError> {
        self.read(|c| {
            c.query_row(
                "SELECT count(*) FROM items WHERE job = ?1 AND doc_id IS NOT NULL",
                [job],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| n.max(0) as u64)
    }

    /// `kbsync retry --allow-deletes`: the next full pass of each of `jobs`
    /// may retire beyond the delete guard.
    pub fn allow_deletes(&self, jobs: &[String]) -> Result<(), StateError> {
        self.write(|tx| {
            for job in jobs {
                // A job that never ran has no record to retire.
                tx.execute("UPDATE jobs SET deletes_allowed = 1 WHERE job = ?1", [job])?;
            }
            Ok(())
        })
    }

    /// Whether a full pass of `job` may go beyond the delete guard.
    pub fn deletes_allowed(&self, job: &str) -> Result<bool, StateError> {
        self.read(|c| {
            c.query_row(
                "SELECT deletes_allowed FROM jobs WHERE job = ?1",
                [job],
                |r| r.get::<_, i64>(0),
            )
            .optional()
        })
        .map(|v| v == Some(1))
    }

    /// Spends the allowance (a full pass used it).
    pub fn spend_delete_allowance(&self, job: &str) -> Result<(), StateError> {
        self.read(|c| {
            c.execute("UPDATE jobs SET deletes_allowed = 0 WHERE job = ?1", [job])
                .map(drop)
        })
    }

    /// The recorded upstream status of `key`, as an audit found it.
    pub fn set_status(&self, job: &str, key: &str, status: RemoteStatus) -> Result<(), StateError> {
        self.read(|c| {
            c.execute(
                "UPDATE items SET status = ?3, settled = 0 WHERE job = ?1 AND key = ?2",
                params![job, key, status.as_str()],
            )
            .map(drop)
        })
    }

    /// The content of `key`'s record is to be sent again (Dify names a
    /// document after the uploaded file: a renamed one gets its name back);
    /// its metadata stands.
    pub fn forget_pushed_hash(&self, job: &str, key: &str) -> Result<(), StateError> {
        self.unset(job, key, "pushed_hash = NULL")
    }

    /// What the audit found of records whose processing failed upstream,
    /// `(key, the upstream's reason)`, replacing what an earlier audit found:
    /// `status` shows these items failed, not in sync.
    pub fn record_upstream_errors(
        &self,
        job: &str,
        errors: &[(String, String)],
    ) -> Result<(), StateError> {
        let now = super::unix_now();
        let now_failing: std::collections::HashSet<&str> =
            errors.iter().map(|(key, _)| key.as_str()).collect();
        self.write(|tx| {
            // Those that failed before and no longer do (few: keyed reads).
            let before: Vec<String> = tx
                .prepare_cached("SELECT key FROM items WHERE job = ?1 AND error_code IS NOT NULL")?
                .query_map([job], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut clear = tx.prepare_cached(
                "UPDATE items SET error_code = NULL, error_message = NULL, error_at = NULL
                 WHERE job = ?1 AND key = ?2",
            )?;
            for key in before.iter().filter(|k| !now_failing.contains(k.as_str())) {
                clear.execute(params![job, key])?;
            }
            let mut set = tx.prepare_cached(
                "UPDATE items SET error_code = 'indexing_error', error_message = ?3,
                        error_at = coalesce(error_at, ?4)
                 WHERE job = ?1 AND key = ?2",
            )?;
            for (key, reason) in errors {
                set.execute(params![job, key, reason, now])?;
            }
            Ok(())
        })
    }

    /// Unix seconds of the last status change kbsync made to `key`'s record.
    pub fn status_changed_at(&self, job: &str, key: &str) -> Result<Option<i64>, StateError> {
        Ok(self.column(job, key, "status_at")?.flatten())
    }

    /// Whether the audit's finding that `key`'s record failed upstream still
    /// stands (new content, or a new record, clears it).
    pub fn failed_upstream(&self, job: &str, key: &str) -> Result<bool, StateError> {
        Ok(self
            .column(job, key, "error_code IS NOT NULL")?
            .unwrap_or(false))
    }

    /// Whether the state file has a row for `key`.
    pub fn tracks(&self, job: &str, key: &str) -> Result<bool, StateError> {
        Ok(self.column::<i64>(job, key, "1")?.is_some())
    }

    /// `what` of `key`'s row; `None` when there is no row.
    fn column<T: rusqlite::types::FromSql>(
        &self,
        job: &str,
        key: &str,
        what: &str,
    ) -> Result<Option<T>, StateError> {
        let sql = format!("SELECT {what} FROM items WHERE job = ?1 AND key = ?2");
        self.read(|c| {
            c.query_row(&sql, params![job, key], |r| r.get(0))
                .optional()
        })
    }

    /// What was pushed to `key`'s record is not known (an adopted record):
    /// its content and metadata are sent again.
    pub fn forget_pushed_content(&self, job: &str, key: &str) -> Result<(), StateError> {
        self.unset(job, key, "pushed_hash = NULL, pushed_meta = NULL")
    }

    /// Clears what `set` names of `key`'s row; the item is planned again.
    fn unset(&self, job: &str, key: &str, set: &str) -> Result<(), StateError> {
        let sql = format!("UPDATE items SET {set}, settled = 0 WHERE job = ?1 AND key = ?2");
        self.read(|c| c.execute(&sql, params![job, key]).map(drop))
    }
}
