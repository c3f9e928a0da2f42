//! The outbox: every upstream step a pass planned and has not yet seen
//! confirmed. A row is written before the step's call and deleted in the
//! same transaction that records the step's result in `items`, so after a
//! crash the file says exactly which steps may be half done.
//!
//! Rows are keyed by (job, key, kind): one content step, one metadata
//! step, one status step or one delete per item. The fingerprint says what
//! the step would make true (content hash, metadata values, action); a row
//! whose fingerprint changes is a new step, so its failure history resets —
//! that is how "retry a permanent failure only when the source changed" is
//! decided. Only `started_at` survives such a change: a create that may
//! have been applied stays suspect until its document is found or ruled out.

use std::collections::HashMap;
use std::time::Duration;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, OptionalExtension};

use super::items::scope_filter;
use super::{now_secs, State, StateError};
use crate::source::Scope;

/// What a step does to an item upstream: one of each per item at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StepKind {
    /// Create, adopt or update the content.
    Content,
    Metadata,
    /// Enable, disable, archive, un-archive.
    Status,
    Delete,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Content => "content",
            StepKind::Metadata => "metadata",
            StepKind::Status => "status",
            StepKind::Delete => "delete",
        }
    }

    fn parse(s: &str) -> Option<StepKind> {
        Some(match s {
            "content" => StepKind::Content,
            "metadata" => StepKind::Metadata,
            "status" => StepKind::Status,
            "delete" => StepKind::Delete,
            _ => return None,
        })
    }

    /// The kind of step an op name (`create`, `enable`, …) belongs to.
    pub fn of_op(op: &str) -> StepKind {
        match op {
            "create" | "update" => StepKind::Content,
            "metadata" => StepKind::Metadata,
            "delete" => StepKind::Delete,
            _ => StepKind::Status,
        }
    }
}

impl ToSql for StepKind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(self.as_str().into())
    }
}

impl FromSql for StepKind {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        StepKind::parse(text)
            .ok_or_else(|| FromSqlError::Other(format!("unknown step kind {text:?}").into()))
    }
}

/// An outbox row's identity.
pub type StepId = (String, StepKind);

/// One planned step, as the outbox stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued<'a> {
    pub key: &'a str,
    pub kind: StepKind,
    pub op: &'static str,
    pub fingerprint: String,
}

/// What the outbox remembers of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub key: String,
    pub kind: StepKind,
    pub op: String,
    pub fingerprint: String,
    /// Refused for good: not tried again until the fingerprint changes or
    /// `kbsync retry`.
    pub failed: bool,
    pub attempts: u32,
    /// A non-idempotent call (create) was sent and not confirmed.
    pub started: bool,
    /// Unix seconds before which a transient failure is not retried.
    pub next_attempt_at: i64,
    pub error: Option<RowError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub status: Option<u16>,
    pub code: String,
    pub message: String,
}

/// How a failed step is to be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setback {
    /// Retried by a later pass after a backoff (at least `retry_after`).
    Transient { retry_after: Option<Duration> },
    /// Not retried until the item changes or `kbsync retry`.
    Permanent,
}

/// First cross-pass retry delay, doubled per attempt up to `MAX_BACKOFF`.
const FIRST_BACKOFF_SECS: i64 = 30;
const MAX_BACKOFF_SECS: i64 = 900;

/// The delay before attempt `attempts + 1`, with ±20 % jitter from `seed`
/// (so items that failed together do not come back together).
pub fn backoff_secs(attempts: u32, retry_after: Option<Duration>, seed: u64) -> i64 {
    let exp = FIRST_BACKOFF_SECS
        .saturating_mul(1 << attempts.saturating_sub(1).min(10))
        .min(MAX_BACKOFF_SECS);
    let spread = exp / 5;
    let jitter = if spread > 0 {
        (seed % (2 * spread as u64 + 1)) as i64 - spread
    } else {
        0
    };
    let floor = retry_after.map_or(0, |d| d.as_secs() as i64);
    (exp + jitter).max(floor).min(MAX_BACKOFF_SECS.max(floor))
}

columns!(mod col {
    KEY = "key",
    KIND = "kind",
    OP = "op",
    FINGERPRINT = "fingerprint",
    FAILED = "failed",
    ATTEMPTS = "attempts",
    STARTED_AT = "started_at",
    NEXT_ATTEMPT_AT = "next_attempt_at",
    ERROR_STATUS = "error_status",
    ERROR_CODE = "error_code",
    ERROR_MESSAGE = "error_message",
});

fn select_rows() -> String {
    format!("SELECT {} FROM outbox WHERE job = ?1", col::LIST)
}

fn outbox_row(r: &rusqlite::Row) -> rusqlite::Result<OutboxRow> {
    let code: Option<String> = r.get(col::ERROR_CODE)?;
    Ok(OutboxRow {
        key: r.get(col::KEY)?,
        kind: r.get(col::KIND)?,
        op: r.get(col::OP)?,
        fingerprint: r.get(col::FINGERPRINT)?,
        failed: r.get::<_, i64>(col::FAILED)? != 0,
        attempts: r.get::<_, i64>(col::ATTEMPTS)?.max(0) as u32,
        started: r.get::<_, Option<i64>>(col::STARTED_AT)?.is_some(),
        next_attempt_at: r.get(col::NEXT_ATTEMPT_AT)?,
        error: match code {
            Some(code) => Some(RowError {
                status: r
                    .get::<_, Option<i64>>(col::ERROR_STATUS)?
                    .map(|s| s as u16),
                code,
                message: r
                    .get::<_, Option<String>>(col::ERROR_MESSAGE)?
                    .unwrap_or_default(),
            }),
            None => None,
        },
    })
}

fn rows_in(
    conn: &rusqlite::Connection,
    job: &str,
    scope: &Scope,
) -> rusqlite::Result<HashMap<StepId, OutboxRow>> {
    let mut rows = HashMap::new();
    let (filter, queries) = scope_filter(scope);
    let mut stmt = conn.prepare_cached(&format!("{}{filter}", select_rows()))?;
    for extra in queries {
        let mut params: Vec<&dyn ToSql> = vec![&job];
        params.extend(extra);
        for r in stmt.query_map(&*params, outbox_row)? {
            let r = r?;
            rows.insert((r.key.clone(), r.kind), r);
        }
    }
    Ok(rows)
}

impl State {
    /// Makes the outbox of `job` within `scope` hold exactly `steps`: rows
    /// of steps no longer planned are dropped (the source moved on), new
    /// steps are added, and steps whose fingerprint changed start afresh.
    /// Returns the rows that carry a history (an error, or a create that
    /// may have been applied), by (key, kind).
    pub fn queue(
        &mut self,
        job: &str,
        scope: &Scope,
        steps: &[Queued<'_>],
    ) -> Result<HashMap<StepId, OutboxRow>, StateError> {
        let now = now_secs();
        let mut rows = self.write(|tx| {
            let mut rows = rows_in(tx, job, scope)?;
            let wanted: HashMap<(&str, StepKind), &Queued> =
                steps.iter().map(|s| ((s.key, s.kind), s)).collect();
            let mut drop_row =
                tx.prepare_cached("DELETE FROM outbox WHERE job = ?1 AND key = ?2 AND kind = ?3")?;
            // A create that may have been applied is kept until the pusher
            // has looked for its document.
            let moot: Vec<StepId> = rows
                .iter()
                .filter(|((key, kind), row)| {
                    let suspect = row.started && row.op == "create";
                    !(suspect || wanted.contains_key(&(key.as_str(), *kind)))
                })
                .map(|(id, _)| id.clone())
                .collect();
            for (key, kind) in moot {
                drop_row.execute(params![job, key, kind])?;
                rows.remove(&(key, kind));
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO outbox (job, key, kind, op, fingerprint, queued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(job, key, kind) DO UPDATE SET op = excluded.op,
                    fingerprint = excluded.fingerprint, failed = 0, attempts = 0,
                    next_attempt_at = 0, error_status = NULL, error_code = NULL,
                    error_message = NULL, queued_at = excluded.queued_at",
            )?;
            let mut rename = tx.prepare_cached(
                "UPDATE outbox SET op = ?4 WHERE job = ?1 AND key = ?2 AND kind = ?3",
            )?;
            for s in steps {
                let id = (s.key.to_owned(), s.kind);
                match rows.get_mut(&id) {
                    Some(row) if row.fingerprint == s.fingerprint => {
                        if row.op != s.op {
                            rename.execute(params![job, s.key, s.kind, s.op])?;
                            row.op = s.op.to_owned();
                        }
                    }
                    existing => {
                        insert.execute(params![job, s.key, s.kind, s.op, s.fingerprint, now])?;
                        let started = existing.is_some_and(|r| r.started);
                        rows.insert(
                            id.clone(),
                            OutboxRow {
                                key: id.0,
                                kind: id.1,
                                op: s.op.to_owned(),
                                fingerprint: s.fingerprint.clone(),
                                failed: false,
                                attempts: 0,
                                started,
                                next_attempt_at: 0,
                                error: None,
                            },
                        );
                    }
                }
            }
            Ok(rows)
        })?;
        // Only rows with a history matter to the caller (held steps,
        // unconfirmed creates); a first sync of many files would
        // otherwise hold a row per step in memory for the whole pass.
        rows.retain(|_, r| r.started || r.error.is_some());
        Ok(rows)
    }

    /// The outbox rows of `job` within `scope`, without changing anything
    /// (for `--dry-run`).
    pub fn outbox_in(
        &self,
        job: &str,
        scope: &Scope,
    ) -> Result<HashMap<StepId, OutboxRow>, StateError> {
        self.read(|c| rows_in(c, job, scope))
    }

    /// Marks non-idempotent steps as (about to be) sent, before sending
    /// them: one transaction for a whole phase, since a commit per upload
    /// would cost more than it saves (a crash at worst makes the next pass
    /// look up creates that were never sent).
    pub fn steps_started(
        &self,
        job: &str,
        keys: &[&str],
        kind: StepKind,
    ) -> Result<(), StateError> {
        // On disk before the creates go out: a mark lost to a power cut
        // would let the next pass create again, blind.
        self.durable_write(|tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE outbox SET started_at = ?4, sent_fingerprint = fingerprint
                 WHERE job = ?1 AND key = ?2 AND kind = ?3",
            )?;
            let now = now_secs();
            for key in keys {
                stmt.execute(params![job, key, kind, now])?;
            }
            Ok(())
        })
    }

    /// Takes back the mark of a step that was marked started with its
    /// phase but never sent (its file could not be read, or shutdown came
    /// first): nothing upstream can hold it, so nothing needs looking up.
    pub fn step_not_sent(&self, job: &str, key: &str, kind: StepKind) -> Result<(), StateError> {
        self.read(|c| {
            c.execute(
                "UPDATE outbox SET started_at = NULL, sent_fingerprint = NULL
                 WHERE job = ?1 AND key = ?2 AND kind = ?3",
                params![job, key, kind],
            )
            .map(drop)
        })
    }

    /// The content hash an unconfirmed create of `key` was sent with: a
    /// record found under its name afterwards holds those bytes. `None`
    /// when no create of it is unconfirmed.
    pub fn sent_content(&self, job: &str, key: &str) -> Result<Option<String>, StateError> {
        self.read(|c| {
            c.query_row(
                "SELECT sent_fingerprint FROM outbox
                 WHERE job = ?1 AND key = ?2 AND kind = ?3 AND op = 'create'
                   AND started_at IS NOT NULL",
                params![job, key, StepKind::Content],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten)
        })
    }

    /// Drops a step that needs no more work (done, or moot).
    pub fn step_done(&self, job: &str, key: &str, kind: StepKind) -> Result<(), StateError> {
        self.read(|c| {
            c.execute(
                "DELETE FROM outbox WHERE job = ?1 AND key = ?2 AND kind = ?3",
                params![job, key, kind],
            )
            .map(drop)
        })
    }

    /// Records a failed attempt: a transient one is scheduled again after
    /// a backoff, a permanent one is parked until the item changes.
    pub fn step_failed(
        &self,
        job: &str,
        key: &str,
        kind: StepKind,
        setback: Setback,
        error: &RowError,
    ) -> Result<(), StateError> {
        let now = now_secs();
        self.read(|c| {
            let attempts: i64 = c
                .query_row(
                    "SELECT attempts FROM outbox WHERE job = ?1 AND key = ?2 AND kind = ?3",
                    params![job, key, kind],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0)
                + 1;
            let (failed, next) = match setback {
                Setback::Permanent => (1, 0),
                Setback::Transient { retry_after } => {
                    let seed = blake3::hash(format!("{job}\0{key}\0{attempts}").as_bytes());
                    let seed =
                        u64::from_le_bytes(seed.as_bytes()[..8].try_into().expect("8 bytes"));
                    (
                        0,
                        now + backoff_secs(attempts as u32, retry_after, seed ^ now as u64),
                    )
                }
            };
            c.execute(
                "UPDATE outbox SET failed = ?4, attempts = ?5, next_attempt_at = ?6,
                    error_status = ?7, error_code = ?8, error_message = ?9, last_attempt_at = ?10
                 WHERE job = ?1 AND key = ?2 AND kind = ?3",
                params![
                    job,
                    key,
                    kind,
                    failed,
                    attempts,
                    next,
                    error.status.map(i64::from),
                    error.code,
                    error.message,
                    now
                ],
            )
            .map(drop)
        })
    }

    /// `kbsync retry`: parked and backed-off steps of `job` (all jobs when
    /// `None`), limited to `keys` when given, become due now. Returns how
    /// many rows changed.
    pub fn retry_now(&self, job: Option<&str>, keys: &[String]) -> Result<usize, StateError> {
        let keys: Vec<Option<&str>> = if keys.is_empty() {
            vec![None]
        } else {
            keys.iter().map(|k| Some(k.as_str())).collect()
        };
        self.read(|c| {
            let mut n = 0;
            for key in keys {
                n += c.execute(
                    "UPDATE outbox SET failed = 0, next_attempt_at = 0
                     WHERE (?1 IS NULL OR job = ?1) AND (?2 IS NULL OR key = ?2)
                       AND (failed = 1 OR next_attempt_at > 0)",
                    params![job, key],
                )?;
            }
            Ok(n)
        })
    }

    /// When the earliest backed-off step of `job` is due (Unix seconds).
    /// Parked (permanent) failures are not counted: they wait for a change.
    /// Keys with a backed-off step due at `now`, at most `limit`.
    pub fn due_keys(&self, job: &str, now: i64, limit: usize) -> Result<Vec<String>, StateError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT DISTINCT key FROM outbox
                 WHERE job = ?1 AND failed = 0 AND attempts > 0 AND next_attempt_at <= ?2
                 LIMIT ?3",
            )?;
            let rows = stmt.query_map(rusqlite::params![job, now, limit as i64], |r| r.get(0))?;
            rows.collect()
        })
    }

    pub fn next_retry_at(&self, job: &str) -> Result<Option<i64>, StateError> {
        self.read(|c| {
            c.query_row(
                "SELECT min(next_attempt_at) FROM outbox
                 WHERE job = ?1 AND failed = 0 AND attempts > 0",
                [job],
                |r| r.get(0),
            )
        })
    }

    /// Whether the dataset of `job` was listed once in full (for adoption
    /// by name); later creates only look up what may have been applied.
    pub fn listed(&self, job: &str) -> Result<bool, StateError> {
        let at: Option<Option<i64>> = self.read(|c| {
            c.query_row("SELECT listed_at FROM jobs WHERE job = ?1", [job], |r| {
                r.get(0)
            })
            .optional()
        })?;
        Ok(at.flatten().is_some())
    }

    pub fn mark_listed(&self, job: &str) -> Result<(), StateError> {
        self.read(|c| {
            c.execute(
                "UPDATE jobs SET listed_at = ?2 WHERE job = ?1",
                params![job, now_secs()],
            )
            .map(drop)
        })
    }

    /// Every outbox row of `job`, for `status` and tests.
    pub fn outbox(&self, job: &str) -> Result<Vec<OutboxRow>, StateError> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!("{} ORDER BY key, kind", select_rows()))?;
            let rows = stmt.query_map([job], outbox_row)?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step<'a>(key: &'a str, fp: &str) -> Queued<'a> {
        Queued {
            key,
            kind: StepKind::Content,
            op: "create",
            fingerprint: fp.into(),
        }
    }

    fn err() -> RowError {
        RowError {
            status: Some(415),
            code: "unsupported_file_type".into(),
            message: "File type not allowed.".into(),
        }
    }

    #[test]
    fn backoff_doubles_is_capped_and_honours_retry_after() {
        assert_eq!(backoff_secs(1, None, 12), 30 - 6 + 12);
        let second: Vec<i64> = (0..50).map(|s| backoff_secs(2, None, s)).collect();
        assert!(second.iter().all(|d| (48..=72).contains(d)), "{second:?}");
        assert!((720..=900).contains(&backoff_secs(30, None, 7)));
        assert_eq!(backoff_secs(1, Some(Duration::from_secs(120)), 0), 120);
        assert_eq!(backoff_secs(1, Some(Duration::from_secs(5000)), 0), 5000);
    }

    #[test]
    fn queue_keeps_history_of_unchanged_steps_and_resets_changed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::open(&dir.path().join("s.db")).unwrap();
        let a = step("a.md", "h1");
        let b = step("b.md", "h2");
        s.queue("j", &Scope::All, &[a.clone(), b.clone()]).unwrap();
        s.step_failed("j", "a.md", StepKind::Content, Setback::Permanent, &err())
            .unwrap();
        s.step_failed(
            "j",
            "b.md",
            StepKind::Content,
            Setback::Transient { retry_after: None },
            &err(),
        )
        .unwrap();

        let rows = s.queue("j", &Scope::All, &[a.clone(), b.clone()]).unwrap();
        let ra = &rows[&("a.md".into(), StepKind::Content)];
        assert!(ra.failed && ra.attempts == 1 && ra.error == Some(err()));
        let rb = &rows[&("b.md".into(), StepKind::Content)];
        assert!(!rb.failed && rb.attempts == 1 && rb.next_attempt_at > now_secs());
        assert_eq!(s.next_retry_at("j").unwrap(), Some(rb.next_attempt_at));

        // a.md changed: a new step. b.md no longer planned: dropped.
        let rows = s.queue("j", &Scope::All, &[step("a.md", "h3")]).unwrap();
        assert!(rows.is_empty(), "a fresh step has no history to return");
        let stored = s.outbox("j").unwrap();
        assert_eq!(stored.len(), 1);
        let ra = &stored[0];
        assert!(ra.key == "a.md" && !ra.failed && ra.attempts == 0 && ra.error.is_none());
        assert_eq!(s.next_retry_at("j").unwrap(), None);
    }

    #[test]
    fn a_started_create_survives_until_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::open(&dir.path().join("s.db")).unwrap();
        s.queue("j", &Scope::All, &[step("a.md", "h1")]).unwrap();
        s.steps_started("j", &["a.md"], StepKind::Content).unwrap();
        // Content changed before the answer came: still suspect.
        let rows = s.queue("j", &Scope::All, &[step("a.md", "h2")]).unwrap();
        assert!(rows[&("a.md".into(), StepKind::Content)].started);
        // File gone: the row stays for the pusher to resolve.
        let rows = s.queue("j", &Scope::All, &[]).unwrap();
        assert!(rows[&("a.md".into(), StepKind::Content)].started);
        s.step_done("j", "a.md", StepKind::Content).unwrap();
        assert!(s.outbox("j").unwrap().is_empty());
    }

    #[test]
    fn scoped_queue_leaves_other_rows_alone_and_retry_now_unparks() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::open(&dir.path().join("s.db")).unwrap();
        s.queue(
            "j",
            &Scope::All,
            &[step("x/a.md", "1"), step("y/b.md", "2")],
        )
        .unwrap();
        s.step_failed("j", "y/b.md", StepKind::Content, Setback::Permanent, &err())
            .unwrap();
        let scope = Scope::of(["x".to_owned()]).unwrap();
        s.queue("j", &scope, &[]).unwrap();
        let left = s.outbox("j").unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].key, "y/b.md");
        assert_eq!(s.retry_now(Some("other"), &[]).unwrap(), 0);
        assert_eq!(s.retry_now(Some("j"), &[]).unwrap(), 1);
        assert!(!s.outbox("j").unwrap()[0].failed);
    }
}
