//! The local state file (SQLite, WAL): what each job last observed of every
//! item and what it last pushed upstream. It is what makes an unchanged tree
//! cost nothing: the planner diffs against it.
//!
//! Never holds a credential: only keys, facts, upstream ids and metadata.

mod lock;
mod outbox;
mod schema;
mod settled;

pub use lock::{lock_path, StateLock};
pub use outbox::{OutboxRow, Queued, RowError, Setback};
pub use settled::CacheRow;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::metadata::{FieldType, Metadata};
use crate::source::{KnownFacts, Observed, Scope};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}{hint}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
        hint: &'static str,
    },
    #[error("state file {path} has schema version {found}, newer than this kbsync understands ({known}); upgrade kbsync or point [state] path elsewhere")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("cannot create the folder for state file {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is in use by another kbsync ({holder}); stop it first, or give this configuration its own [state] path")]
    Busy { path: PathBuf, holder: String },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Upstream status of a document as kbsync last set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoteStatus {
    Enabled,
    Disabled,
    Archived,
}

impl RemoteStatus {
    fn as_str(self) -> &'static str {
        match self {
            RemoteStatus::Enabled => "enabled",
            RemoteStatus::Disabled => "disabled",
            RemoteStatus::Archived => "archived",
        }
    }

    fn parse(s: &str) -> RemoteStatus {
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

/// The columns `cached_item` reads, in its order.
const COLUMNS: &str = "SELECT key, present, size, mtime_ns, hash, front_matter, doc_id, doc_name,
        pushed_hash, pushed_meta, status, indexing_batch, racy, validator, settled
     FROM items WHERE job = ?1";

/// `key` is `?2` or below it: '0' sorts right after '/', so [p/, p0) is
/// exactly the subtree.
const IN_SUBTREE: &str = "(key = ?2 OR (key >= ?2 || '/' AND key < ?2 || '0'))";

/// Run-log rows kept per job.
const KEPT_RUNS: i64 = 1000;

pub struct State {
    conn: Connection,
    path: PathBuf,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl State {
    /// Opens (creating if needed) the state file and brings its schema up
    /// to date.
    pub fn open(path: &Path) -> Result<State, StateError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StateError::Folder {
                path: path.to_owned(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|e| sqlite_err(path, e))?;
        let mut state = State {
            conn,
            path: path.to_owned(),
        };
        state.configure(false)?;
        state.migrate()?;
        Ok(state)
    }

    /// For `--dry-run`: reads an existing state file without changing it, or
    /// starts from an empty in-memory state when there is none yet.
    pub fn open_read_only(path: &Path) -> Result<State, StateError> {
        if !path.exists() {
            let conn = Connection::open_in_memory().map_err(|e| sqlite_err(path, e))?;
            let mut state = State {
                conn,
                path: path.to_owned(),
            };
            state.migrate()?;
            return Ok(state);
        }
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| sqlite_err(path, e))?;
        let state = State {
            conn,
            path: path.to_owned(),
        };
        state.configure(true)?;
        let version = state.user_version()?;
        if version != schema::MIGRATIONS.len() as i64 {
            return Err(StateError::TooNew {
                path: path.to_owned(),
                found: version,
                known: schema::MIGRATIONS.len() as i64,
            });
        }
        Ok(state)
    }

    fn configure(&self, read_only: bool) -> Result<(), StateError> {
        let c = &self.conn;
        c.busy_timeout(Duration::from_secs(10))
            .map_err(|e| self.err(e))?;
        if !read_only {
            // WAL lets `kbsync status` read while a sync writes; NORMAL is
            // durable across process crashes, which is what matters here.
            c.pragma_update(None, "journal_mode", "WAL")
                .map_err(|e| self.err(e))?;
            c.pragma_update(None, "synchronous", "NORMAL")
                .map_err(|e| self.err(e))?;
        }
        // Fails early and clearly on a file that is not a database.
        c.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn user_version(&self) -> Result<i64, StateError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    fn migrate(&mut self) -> Result<(), StateError> {
        let current = self.user_version()?;
        let known = schema::MIGRATIONS.len() as i64;
        if current > known {
            return Err(StateError::TooNew {
                path: self.path.clone(),
                found: current,
                known,
            });
        }
        for (i, step) in schema::MIGRATIONS.iter().enumerate().skip(current as usize) {
            let tx = self
                .conn
                .transaction()
                .map_err(|e| sqlite_err(&self.path, e))?;
            tx.execute_batch(step)
                .map_err(|e| sqlite_err(&self.path, e))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(|e| sqlite_err(&self.path, e))?;
            tx.commit().map_err(|e| sqlite_err(&self.path, e))?;
        }
        Ok(())
    }

    fn err(&self, e: rusqlite::Error) -> StateError {
        sqlite_err(&self.path, e)
    }

    /// Records which upstream a job mirrors into. When it changed (another
    /// dataset, another server), the upstream ids in the cache mean nothing
    /// there: they are dropped so the next push recreates or adopts.
    /// Returns true when the target changed.
    pub fn bind_target(&mut self, job: &str, target: &str) -> Result<bool, StateError> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| sqlite_err(&self.path, e))?;
        let old: Option<String> = tx
            .query_row("SELECT target FROM jobs WHERE job = ?1", [job], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| sqlite_err(&self.path, e))?;
        let changed = old.as_deref().is_some_and(|o| o != target);
        if changed {
            tx.execute(
                "UPDATE items SET doc_id = NULL, doc_name = NULL, pushed_hash = NULL, pushed_meta = NULL,
                        status = 'enabled', indexing_batch = NULL, settled = 0 WHERE job = ?1",
                [job],
            )
            .map_err(|e| sqlite_err(&self.path, e))?;
            tx.execute("DELETE FROM items WHERE job = ?1 AND present = 0", [job])
                .map_err(|e| sqlite_err(&self.path, e))?;
            tx.execute("DELETE FROM fields WHERE job = ?1", [job])
                .map_err(|e| sqlite_err(&self.path, e))?;
        }
        tx.execute(
            "INSERT INTO jobs (job, target) VALUES (?1, ?2)
             ON CONFLICT(job) DO UPDATE SET target = excluded.target",
            params![job, target],
        )
        .map_err(|e| sqlite_err(&self.path, e))?;
        tx.commit().map_err(|e| sqlite_err(&self.path, e))?;
        Ok(changed)
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
        let tx = self
            .conn
            .transaction()
            .map_err(|e| sqlite_err(&self.path, e))?;
        {
            let mut up = tx
                .prepare_cached(
                    "INSERT INTO items (job, key, present, size, mtime_ns, hash, front_matter, racy, validator)
                     VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT(job, key) DO UPDATE SET present = 1, size = excluded.size,
                        mtime_ns = excluded.mtime_ns, hash = excluded.hash,
                        front_matter = excluded.front_matter, racy = excluded.racy,
                        validator = excluded.validator, settled = 0",
                )
                .map_err(|e| sqlite_err(&self.path, e))?;
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
                    o.validator
                ])
                .map_err(|e| sqlite_err(&self.path, e))?;
            }
            let mut gone = tx
                .prepare_cached(
                    "UPDATE items SET present = 0, settled = 0 WHERE job = ?1 AND key = ?2",
                )
                .map_err(|e| sqlite_err(&self.path, e))?;
            for key in absent {
                gone.execute(params![job, key])
                    .map_err(|e| sqlite_err(&self.path, e))?;
            }
        }
        tx.commit().map_err(|e| sqlite_err(&self.path, e))
    }

    /// Content now upstream as `doc_id` (created, adopted or updated).
    pub fn record_content(
        &self,
        job: &str,
        key: &str,
        doc_id: &str,
        doc_name: &str,
        hash: &str,
        batch: Option<&str>,
    ) -> Result<(), StateError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        tx.prepare_cached(
            "UPDATE items SET doc_id = ?3, doc_name = ?4, pushed_hash = ?5, indexing_batch = ?6,
                    status = 'enabled', settled = 0
             WHERE job = ?1 AND key = ?2",
        )
        .and_then(|mut s| s.execute(params![job, key, doc_id, doc_name, hash, batch]))
        .map_err(|e| self.err(e))?;
        // Adopting or updating may also have restored the document.
        tx.prepare_cached(
            "DELETE FROM outbox WHERE job = ?1 AND key = ?2 AND kind IN ('content', 'status')",
        )
        .and_then(|mut s| s.execute(params![job, key]))
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
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
        self.conn
            .execute(
                "UPDATE items SET doc_id = ?3, doc_name = ?4, settled = 0 WHERE job = ?1 AND key = ?2",
                params![job, key, doc_id, doc_name],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The upstream record of `key` is gone: forget its id and what was
    /// pushed to it, so the next pass finds or creates it again.
    pub fn clear_doc_id(&self, job: &str, key: &str) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE items SET doc_id = NULL, doc_name = NULL, pushed_meta = NULL, settled = 0 WHERE job = ?1 AND key = ?2",
                params![job, key],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn record_metadata(
        &mut self,
        job: &str,
        done: &[(&str, &Metadata)],
    ) -> Result<(), StateError> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| sqlite_err(&self.path, e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE items SET pushed_meta = ?3, settled = 0 WHERE job = ?1 AND key = ?2",
                )
                .map_err(|e| sqlite_err(&self.path, e))?;
            let mut done_step = tx
                .prepare_cached(
                    "DELETE FROM outbox WHERE job = ?1 AND key = ?2 AND kind = 'metadata'",
                )
                .map_err(|e| sqlite_err(&self.path, e))?;
            for (key, meta) in done {
                let text = serde_json::to_string(meta).unwrap_or_default();
                stmt.execute(params![job, key, text])
                    .map_err(|e| sqlite_err(&self.path, e))?;
                done_step
                    .execute(params![job, key])
                    .map_err(|e| sqlite_err(&self.path, e))?;
            }
        }
        tx.commit().map_err(|e| sqlite_err(&self.path, e))
    }

    pub fn record_status(
        &mut self,
        job: &str,
        keys: &[&str],
        status: RemoteStatus,
    ) -> Result<(), StateError> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| sqlite_err(&self.path, e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE items SET status = ?3, settled = 0 WHERE job = ?1 AND key = ?2",
                )
                .map_err(|e| sqlite_err(&self.path, e))?;
            let mut done_step = tx
                .prepare_cached(
                    "DELETE FROM outbox WHERE job = ?1 AND key = ?2 AND kind = 'status'",
                )
                .map_err(|e| sqlite_err(&self.path, e))?;
            for key in keys {
                stmt.execute(params![job, key, status.as_str()])
                    .map_err(|e| sqlite_err(&self.path, e))?;
                done_step
                    .execute(params![job, key])
                    .map_err(|e| sqlite_err(&self.path, e))?;
            }
        }
        tx.commit().map_err(|e| sqlite_err(&self.path, e))
    }

    /// Drops an item from the cache (deleted upstream, or never pushed and
    /// gone locally).
    pub fn forget(&self, job: &str, key: &str) -> Result<(), StateError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        tx.execute(
            "DELETE FROM items WHERE job = ?1 AND key = ?2",
            params![job, key],
        )
        .map_err(|e| self.err(e))?;
        tx.execute(
            "DELETE FROM outbox WHERE job = ?1 AND key = ?2",
            params![job, key],
        )
        .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    pub fn fields(&self, job: &str) -> Result<HashMap<String, (String, FieldType)>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name, field_id, field_type FROM fields WHERE job = ?1")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([job], |r| {
                let t: String = r.get(2)?;
                let kind = match t.as_str() {
                    "number" => FieldType::Number,
                    "time" => FieldType::Time,
                    _ => FieldType::String,
                };
                Ok((r.get::<_, String>(0)?, (r.get::<_, String>(1)?, kind)))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    pub fn save_field(
        &self,
        job: &str,
        name: &str,
        id: &str,
        kind: FieldType,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO fields (job, name, field_type, field_id) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(job, name) DO UPDATE SET field_type = excluded.field_type, field_id = excluded.field_id",
                params![job, name, kind.to_string(), id],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn forget_fields(&self, job: &str) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM fields WHERE job = ?1", [job])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn record_run(
        &self,
        job: &str,
        started_at: i64,
        converged: bool,
        summary: &str,
    ) -> Result<(), StateError> {
        self.conn
            .execute(
                "INSERT INTO runs (job, started_at, finished_at, converged, summary) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![job, started_at, now_secs(), converged as i64, summary],
            )
            .map_err(|e| self.err(e))?;
        // A daemon records a run per batch of changes: keep the log bounded.
        self.conn
            .execute(
                "DELETE FROM runs WHERE job = ?1 AND id <= (
                     SELECT id FROM runs WHERE job = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![job, KEPT_RUNS],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// What `kbsync status` shows of one job.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct JobSummary {
    pub job: String,
    pub target: Option<String>,
    /// Items present in the source.
    pub tracked: u64,
    /// Present items whose current content is upstream.
    pub in_sync: u64,
    /// Present items whose current content is not upstream yet.
    pub pending_upload: u64,
    /// Items gone from the source whose document is still enabled upstream.
    pub pending_removal: u64,
    /// Steps refused for good, waiting for the item to change or `kbsync retry`.
    pub failed: Vec<FailedItem>,
    /// Steps that failed transiently, with their next attempt.
    pub retrying: Vec<FailedItem>,
    /// Upstream steps planned and not yet confirmed (the outbox).
    pub queued: u64,
    pub last_run: Option<RunSummary>,
    /// Unix seconds of the last pass that converged.
    pub last_success: Option<i64>,
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

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunSummary {
    pub finished_at: i64,
    pub converged: bool,
    pub summary: String,
}

impl State {
    /// One summary per job the state file knows, sorted by name.
    pub fn summaries(&self) -> Result<Vec<JobSummary>, StateError> {
        let q = |sql: &str| self.conn.prepare(sql).map_err(|e| self.err(e));
        let mut jobs: Vec<String> =
            q("SELECT job FROM jobs UNION SELECT DISTINCT job FROM items ORDER BY 1")?
                .query_map([], |r| r.get(0))
                .map_err(|e| self.err(e))?
                .collect::<Result<_, _>>()
                .map_err(|e| self.err(e))?;
        jobs.dedup();
        let mut out = Vec::new();
        for job in jobs {
            let target = self
                .conn
                .query_row("SELECT target FROM jobs WHERE job = ?1", [&job], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(|e| self.err(e))?;
            let (tracked, in_sync, pending_upload, pending_removal): (i64, i64, i64, i64) = self
                .conn
                .query_row(
                    "SELECT
                        coalesce(sum(present = 1), 0),
                        coalesce(sum(present = 1 AND pushed_hash = hash), 0),
                        coalesce(sum(present = 1 AND (pushed_hash IS NULL OR pushed_hash != hash)), 0),
                        coalesce(sum(present = 0 AND doc_id IS NOT NULL AND status = 'enabled'), 0)
                     FROM items WHERE job = ?1",
                    [&job],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .map_err(|e| self.err(e))?;
            let problems: Vec<FailedItem> = q(
                "SELECT key, op, error_status, error_code, coalesce(error_message, ''), attempts,
                        last_attempt_at, failed, next_attempt_at
                 FROM outbox WHERE job = ?1 AND error_code IS NOT NULL ORDER BY key, kind",
            )?
            .query_map([&job], |r| {
                Ok(FailedItem {
                    key: r.get(0)?,
                    op: r.get(1)?,
                    status: r.get::<_, Option<i64>>(2)?.map(|s| s as u16),
                    code: r.get(3)?,
                    message: r.get(4)?,
                    attempts: r.get::<_, i64>(5)?.max(0) as u32,
                    since: r.get(6)?,
                    next_attempt_at: (r.get::<_, i64>(7)? == 0).then(|| r.get(8)).transpose()?,
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
            let (failed, retrying) = problems
                .into_iter()
                .partition(|p| p.next_attempt_at.is_none());
            let queued: i64 = self
                .conn
                .query_row("SELECT count(*) FROM outbox WHERE job = ?1", [&job], |r| {
                    r.get(0)
                })
                .map_err(|e| self.err(e))?;
            let last_run = self
                .conn
                .query_row(
                    "SELECT finished_at, converged, summary FROM runs WHERE job = ?1 ORDER BY id DESC LIMIT 1",
                    [&job],
                    |r| {
                        Ok(RunSummary {
                            finished_at: r.get(0)?,
                            converged: r.get::<_, i64>(1)? != 0,
                            summary: r.get(2)?,
                        })
                    },
                )
                .optional()
                .map_err(|e| self.err(e))?;
            let last_success = self
                .conn
                .query_row(
                    "SELECT max(finished_at) FROM runs WHERE job = ?1 AND converged = 1",
                    [&job],
                    |r| r.get(0),
                )
                .map_err(|e| self.err(e))?;
            out.push(JobSummary {
                job,
                target,
                tracked: tracked as u64,
                in_sync: in_sync as u64,
                pending_upload: pending_upload as u64,
                pending_removal: pending_removal as u64,
                failed,
                retrying,
                queued: queued as u64,
                last_run,
                last_success,
            });
        }
        Ok(out)
    }
}

fn cached_item(r: &rusqlite::Row) -> rusqlite::Result<CachedItem> {
    let size: Option<i64> = r.get(2)?;
    let mtime: Option<i64> = r.get(3)?;
    let hash: Option<String> = r.get(4)?;
    let fm: Option<String> = r.get(5)?;
    let facts = match (size, mtime, hash) {
        (Some(size), Some(mtime_ns), Some(hash)) => Some(KnownFacts {
            size: size as u64,
            mtime_ns,
            hash,
            front_matter: fm.and_then(|t| serde_json::from_str(&t).ok()),
            racy: r.get::<_, i64>(12)? != 0,
            validator: r.get(13)?,
        }),
        _ => None,
    };
    let meta: Option<String> = r.get(9)?;
    Ok(CachedItem {
        key: r.get(0)?,
        present: r.get::<_, i64>(1)? != 0,
        facts,
        doc_id: r.get(6)?,
        doc_name: r.get(7)?,
        pushed_hash: r.get(8)?,
        pushed_meta: meta.and_then(|t| serde_json::from_str(&t).ok()),
        status: RemoteStatus::parse(&r.get::<_, String>(10)?),
        indexing_batch: r.get(11)?,
    })
}

pub fn unix_now() -> i64 {
    now_secs()
}

fn sqlite_err(path: &Path, source: rusqlite::Error) -> StateError {
    let hint = match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => {
            " (the file is not a kbsync state database or is corrupt; it was left untouched: move it aside to start afresh, which re-adopts upstream documents by name)"
        }
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
            " (another process holds the state file; is another kbsync running on it?)"
        }
        Some(rusqlite::ErrorCode::ReadOnly) | Some(rusqlite::ErrorCode::CannotOpen) => {
            " (check the path and its permissions)"
        }
        _ => "",
    };
    StateError::Sqlite {
        path: path.to_owned(),
        source,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `key`'s row is settled with facts (3, 7), per `each_cached`.
    fn settled(state: &State, key: &str) -> bool {
        let mut found = false;
        state
            .each_cached("j", &Scope::All, true, |row| {
                if row.key() == key {
                    found = row.settled_as(3, 7);
                }
                Ok(())
            })
            .unwrap();
        found
    }

    #[test]
    fn every_write_to_an_item_clears_its_settled_flag() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::open(&dir.path().join("s.db")).unwrap();
        state.bind_target("j", "t").unwrap();
        assert!(state.plan_fingerprint("j", "fp1", true).unwrap());
        let a = observed("a", "h1");
        state.save_scan("j", &[&a], &[]).unwrap();
        let meta: Metadata = [("k".to_string(), serde_json::json!(1))].into();
        type Write<'a> = Box<dyn Fn(&mut State) + 'a>;
        let writes: Vec<(&str, Write)> = vec![
            (
                "save_scan",
                Box::new(|s| s.save_scan("j", &[&a], &[]).unwrap()),
            ),
            (
                "record_content",
                Box::new(|s| {
                    s.record_content("j", "a", "d1", "a.md", "h1", None)
                        .unwrap()
                }),
            ),
            (
                "record_doc_id",
                Box::new(|s| s.record_doc_id("j", "a", "d1", "a.md").unwrap()),
            ),
            (
                "record_metadata",
                Box::new(|s| s.record_metadata("j", &[("a", &meta)]).unwrap()),
            ),
            (
                "record_status",
                Box::new(|s| s.record_status("j", &["a"], RemoteStatus::Enabled).unwrap()),
            ),
            (
                "clear_doc_id",
                Box::new(|s| s.clear_doc_id("j", "a").unwrap()),
            ),
            (
                "bind_target",
                Box::new(|s| {
                    s.bind_target("j", "other").unwrap();
                    s.bind_target("j", "t").unwrap();
                }),
            ),
        ];
        for (name, write) in &writes {
            state.mark_settled("j", &["a"]).unwrap();
            assert!(settled(&state, "a"), "marked before {name}");
            write(&mut state);
            assert!(!settled(&state, "a"), "{name} must clear the settled flag");
        }
        // Gone from the source: cleared too.
        state.mark_settled("j", &["a"]).unwrap();
        state.save_scan("j", &[], &["a"]).unwrap();
        let mut absent_settled = None;
        state
            .each_cached("j", &Scope::All, true, |row| {
                absent_settled = Some(row.settled_absent());
                Ok(())
            })
            .unwrap();
        assert_eq!(absent_settled, Some(false));
        // A new plan fingerprint clears every flag; a dry run only distrusts.
        state.save_scan("j", &[&a], &[]).unwrap();
        state.mark_settled("j", &["a"]).unwrap();
        assert!(!state.plan_fingerprint("j", "fp2", false).unwrap());
        assert!(settled(&state, "a"), "a dry run writes nothing");
        assert!(state.plan_fingerprint("j", "fp2", true).unwrap());
        assert!(!settled(&state, "a"));
    }

    fn observed(key: &str, hash: &str) -> Observed {
        Observed {
            key: key.into(),
            size: 3,
            mtime_ns: 7,
            hash: hash.into(),
            front_matter: None,
            rehashed: true,
            racy: false,
            validator: None,
        }
    }

    #[test]
    fn migrates_once_and_keeps_data_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/state.db");
        {
            let mut s = State::open(&path).unwrap();
            s.save_scan("j", &[&observed("a.md", "h1")], &[]).unwrap();
            s.record_content("j", "a.md", "doc-1", "a.md", "h1", Some("b1"))
                .unwrap();
        }
        let s = State::open(&path).unwrap();
        assert_eq!(s.user_version().unwrap(), schema::MIGRATIONS.len() as i64);
        let items = s.load_items("j").unwrap();
        let a = &items["a.md"];
        assert_eq!(a.doc_id.as_deref(), Some("doc-1"));
        assert_eq!(a.pushed_hash.as_deref(), Some("h1"));
        assert_eq!(a.facts.as_ref().unwrap().hash, "h1");
        assert!(s.load_items("other").unwrap().is_empty());
    }

    #[test]
    fn changed_target_drops_upstream_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::open(&dir.path().join("s.db")).unwrap();
        assert!(!s.bind_target("j", "dify A").unwrap());
        s.save_scan("j", &[&observed("a.md", "h1")], &[]).unwrap();
        s.record_content("j", "a.md", "doc-1", "a.md", "h1", None)
            .unwrap();
        assert!(!s.bind_target("j", "dify A").unwrap());
        assert!(s.bind_target("j", "dify B").unwrap());
        let a = &s.load_items("j").unwrap()["a.md"];
        assert_eq!(a.doc_id, None);
        assert!(a.facts.is_some(), "local facts stay: no need to re-hash");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        std::fs::write(&path, b"this is not sqlite, just some user file....................................................................").unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = State::open(&path).err().expect("must fail").to_string();
        assert!(err.contains("not a kbsync state database"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        let err = State::open(&path).err().expect("must fail").to_string();
        assert!(err.contains("newer"), "{err}");
    }
}
