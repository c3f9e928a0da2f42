//! Schema migrations, applied in order and recorded in `PRAGMA user_version`.
//! Append new steps; never edit a released one.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::Connection;

/// Tables and their columns.
pub type Shape = BTreeMap<String, BTreeSet<String>>;

/// The tables of a database and their columns (SQLite's own left out).
pub fn shape(c: &Connection) -> rusqlite::Result<Shape> {
    let tables: Vec<String> = c
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut shape = Shape::new();
    for table in tables {
        let columns = c
            .prepare("SELECT name FROM pragma_table_info(?1)")?
            .query_map([&table], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        shape.insert(table, columns);
    }
    Ok(shape)
}

/// The shape the migrations up to `version` give a new file; `None` for a
/// version this kbsync does not know.
pub fn shape_at(version: i64) -> Option<Shape> {
    let steps = MIGRATIONS.get(..usize::try_from(version).ok()?)?;
    let c = Connection::open_in_memory().expect("an in-memory database opens");
    for step in steps {
        c.execute_batch(step)
            .expect("the migrations apply to an empty database");
    }
    Some(shape(&c).expect("an in-memory database reads"))
}

pub const MIGRATIONS: &[&str] = &[
    // 1: item cache, metadata field ids, target identity per job, run log.
    r#"
    CREATE TABLE items (
        job            TEXT NOT NULL,
        key            TEXT NOT NULL,
        present        INTEGER NOT NULL DEFAULT 1,
        size           INTEGER,
        mtime_ns       INTEGER,
        hash           TEXT,
        front_matter   TEXT,
        doc_id         TEXT,
        doc_name       TEXT,
        pushed_hash    TEXT,
        pushed_meta    TEXT,
        status         TEXT NOT NULL DEFAULT 'enabled',
        indexing_batch TEXT,
        error_code     TEXT,
        error_message  TEXT,
        error_at       INTEGER,
        PRIMARY KEY (job, key)
    ) WITHOUT ROWID;
    CREATE TABLE fields (
        job        TEXT NOT NULL,
        name       TEXT NOT NULL,
        field_type TEXT NOT NULL,
        field_id   TEXT NOT NULL,
        PRIMARY KEY (job, name)
    ) WITHOUT ROWID;
    CREATE TABLE jobs (
        job    TEXT PRIMARY KEY,
        target TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        id          INTEGER PRIMARY KEY,
        job         TEXT NOT NULL,
        started_at  INTEGER NOT NULL,
        finished_at INTEGER NOT NULL,
        converged   INTEGER NOT NULL,
        summary     TEXT NOT NULL
    );
    "#,
    // 2: facts recorded too close to their scan to be trusted next time.
    "ALTER TABLE items ADD COLUMN racy INTEGER NOT NULL DEFAULT 0;",
    // 3: web pages' ETag / Last-Modified, for conditional GETs.
    "ALTER TABLE items ADD COLUMN validator TEXT;",
    // 4: the outbox: every upstream step planned and not yet confirmed, with
    // its retry bookkeeping. Per-item errors move here from `items`.
    r#"
    CREATE TABLE outbox (
        job             TEXT NOT NULL,
        key             TEXT NOT NULL,
        kind            TEXT NOT NULL,
        op              TEXT NOT NULL,
        fingerprint     TEXT NOT NULL,
        failed          INTEGER NOT NULL DEFAULT 0,
        attempts        INTEGER NOT NULL DEFAULT 0,
        started_at      INTEGER,
        next_attempt_at INTEGER NOT NULL DEFAULT 0,
        error_status    INTEGER,
        error_code      TEXT,
        error_message   TEXT,
        last_attempt_at INTEGER,
        queued_at       INTEGER NOT NULL,
        PRIMARY KEY (job, key, kind)
    ) WITHOUT ROWID;
    UPDATE items SET error_code = NULL, error_message = NULL, error_at = NULL;
    ALTER TABLE jobs ADD COLUMN listed_at INTEGER;
    "#,
    // 5: items a full evaluation found in sync, under the job's plan
    // fingerprint: an unchanged settled item is not planned again. Every
    // write to an item clears its flag.
    r#"
    ALTER TABLE items ADD COLUMN settled INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN plan_fingerprint TEXT;
    "#,
    // 6: `kbsync retry --allow-deletes` lets the next full pass of a job
    // go beyond the delete guard.
    r#"
    ALTER TABLE jobs ADD COLUMN deletes_allowed INTEGER NOT NULL DEFAULT 0;
    "#,
    // 7: which file a path named when it was read (device, inode, ctime
    // hashed): an edit that keeps size and mtime is still seen. And when a
    // job last read every file (`rehash_interval_secs`).
    r#"
    ALTER TABLE items ADD COLUMN identity INTEGER;
    ALTER TABLE jobs ADD COLUMN rehashed_at INTEGER;
    "#,
    // 8: the fingerprint a started step was sent with (the plan may move
    // the row's on before its answer is known): a create found upstream
    // after a crash is known to hold exactly those bytes.
    r#"
    ALTER TABLE outbox ADD COLUMN sent_fingerprint TEXT;
    "#,
    // 9: passes that left nothing to retry (what did not converge was
    // refused for good or skipped): a file the upstream never takes must
    // not freeze the job's last good moment. A converged pass is one too.
    r#"
    ALTER TABLE runs ADD COLUMN settled INTEGER NOT NULL DEFAULT 0;
    UPDATE runs SET settled = converged;
    "#,
    // 10: when a record's status was last changed: Dify refuses the next
    // change for up to 10 minutes after one, and the retry is timed by it.
    r#"
    ALTER TABLE items ADD COLUMN status_at INTEGER;
    "#,
    // 11: the files the last passes skipped (unreadable, too large, a type
    // the upstream does not take), so `status` can say which and why.
    r#"
    CREATE TABLE skipped (
        job    TEXT NOT NULL,
        key    TEXT NOT NULL,
        reason TEXT NOT NULL,
        since  INTEGER NOT NULL,
        PRIMARY KEY (job, key)
    ) WITHOUT ROWID;
    "#,
    // 12: what a polled source was last listed whole at (a git commit),
    // and the last run logged before that listing: a later run that
    // converged proves the upstream matches the source at that mark.
    r#"
    ALTER TABLE jobs ADD COLUMN source_mark TEXT;
    ALTER TABLE jobs ADD COLUMN source_mark_run INTEGER;
    CREATE INDEX items_unsettled ON items (job) WHERE present = 1 AND settled = 0;
    "#,
    // 13: how many files that listing found: a poll whose source still
    // stands at the mark reports them without counting every row.
    r#"
    ALTER TABLE jobs ADD COLUMN source_mark_files INTEGER;
    "#,
    // 14: a pass's counts as JSON (the control API's run history), and the
    // jobs an operator paused: a pause outlives a restart of the service.
    r#"
    ALTER TABLE runs ADD COLUMN detail TEXT;
    CREATE TABLE paused (
        job   TEXT PRIMARY KEY,
        since INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
];
