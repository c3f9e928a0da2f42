//! The local state file (SQLite, WAL): what each job last observed of every
//! item and what it last pushed upstream. It is what makes an unchanged tree
//! cost nothing: the planner diffs against it.
//!
//! Never holds a credential: only keys, facts, upstream ids and metadata.

/// Declares a table's columns once, in the order a SELECT lists them:
/// `$m::LIST` is the comma-separated list and `$m::NAME` the position of
/// each, so readers never count columns by hand.
macro_rules! columns {
    ($vis:vis mod $m:ident { $first:ident = $first_col:literal $(, $konst:ident = $col:literal)* $(,)? }) => {
        #[allow(dead_code)]
        $vis mod $m {
            pub const LIST: &str = concat!($first_col $(, ", ", $col)*);
            pub const $first: usize = 0;
            columns!(@next $first; $($konst)*);
        }
    };
    (@next $prev:ident; $konst:ident $($rest:ident)*) => {
        pub const $konst: usize = $prev + 1;
        columns!(@next $konst; $($rest)*);
    };
    (@next $prev:ident;) => {};
}

mod items;
mod listing;
mod lock;
mod mark;
mod outbox;
mod runs;
mod schema;
mod settled;
mod skipped;
mod summary;

pub use items::{CachedItem, RemoteStatus};
pub use listing::{Listing, Tracked};
pub use lock::{lock_path, StateLock};
pub use outbox::{OutboxRow, Queued, RowError, Setback, StepKind};
pub use runs::{RunDetail, RunSummary};
pub use settled::CacheRow;
pub use skipped::SkippedItem;
pub use summary::{FailedItem, JobSummary};

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, Transaction};

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
    #[error("state file {path} has schema version {found} and this kbsync knows {known}, while the running kbsync holds it; stop the service, or use the kbsync it runs")]
    HeldSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("state file {path} {detail}{MOVE_ASIDE}")]
    Malformed { path: PathBuf, detail: String },
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

    /// Opens a state file another kbsync holds (the service, for `kbsync
    /// retry`): its schema is not changed under the holder, so it must be
    /// the one this kbsync knows.
    pub fn open_held(path: &Path) -> Result<State, StateError> {
        let conn = Connection::open(path).map_err(|e| sqlite_err(path, e))?;
        let state = State {
            conn,
            path: path.to_owned(),
        };
        state.configure(true)?;
        let found = state.user_version()?;
        let known = schema::MIGRATIONS.len() as i64;
        if found != known {
            return Err(StateError::HeldSchema {
                path: path.to_owned(),
                found,
                known,
            });
        }
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
        let state = State::open_reader(path)?;
        let version = state.user_version()?;
        let known = schema::MIGRATIONS.len() as i64;
        if version > known {
            return Err(StateError::TooNew {
                path: path.to_owned(),
                found: version,
                known,
            });
        }
        if version < known {
            // Written by an older kbsync: upgraded in a copy in memory, so
            // that a dry run or `status` can read it without writing to it
            // (the next real pass upgrades the file itself).
            let mut conn = Connection::open_in_memory().map_err(|e| sqlite_err(path, e))?;
            conn.restore(
                rusqlite::MAIN_DB,
                path,
                None::<fn(rusqlite::backup::Progress)>,
            )
            .map_err(|e| sqlite_err(path, e))?;
            let mut copy = State {
                conn,
                path: path.to_owned(),
            };
            copy.migrate()?;
            return Ok(copy);
        }
        Ok(state)
    }

    /// Opens an existing file read-only. SQLite reads a WAL file through
    /// its `-shm` index, which it creates beside the file when missing:
    /// in a folder the reader may not write (the service's, for an
    /// operator; a read-only mount) that fails. With no log beside it the
    /// file holds every committed row, so it is then read as immutable
    /// (no index, no locks) instead.
    fn open_reader(path: &Path) -> Result<State, StateError> {
        let open = |uri: &str, extra: OpenFlags| -> Result<State, StateError> {
            let conn = Connection::open_with_flags(uri, OpenFlags::SQLITE_OPEN_READ_ONLY | extra)
                .map_err(|e| sqlite_err(path, e))?;
            let state = State {
                conn,
                path: path.to_owned(),
            };
            state.configure(true)?;
            Ok(state)
        };
        let plain = path.to_string_lossy();
        match open(&plain, OpenFlags::empty()) {
            Err(StateError::Sqlite { source, .. })
                if matches!(
                    source.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen)
                ) && !has_log(path) =>
            {
                open(
                    &format!("{}?immutable=1", file_uri(path)),
                    OpenFlags::SQLITE_OPEN_URI,
                )
            }
            opened => opened,
        }
    }

    /// Refuses a file that is not what its schema version says: another
    /// program's database, or tables of another shape (a failed copy, a
    /// hand edit). Read before anything is written to it, so such a file
    /// gets the same advice as one SQLite cannot read at all, and is left
    /// as it was.
    fn check_shape(&self) -> Result<(), StateError> {
        let version = self.user_version()?;
        let found = self.read(schema::shape)?;
        let malformed = |detail: String| StateError::Malformed {
            path: self.path.clone(),
            detail,
        };
        if version == 0 {
            return match found.keys().next() {
                None => Ok(()),
                Some(table) => Err(malformed(format!(
                    "holds a table {table:?} but no kbsync schema version"
                ))),
            };
        }
        let Some(expected) = schema::shape_at(version) else {
            // Newer than this kbsync: refused as such by the caller.
            return Ok(());
        };
        for (table, columns) in expected {
            let Some(has) = found.get(&table) else {
                return Err(malformed(format!(
                    "has no table {table:?} (schema version {version})"
                )));
            };
            let lacking: Vec<&str> = columns
                .iter()
                .filter(|c| !has.contains(*c))
                .map(String::as_str)
                .collect();
            if !lacking.is_empty() {
                return Err(malformed(format!(
                    "has a table {table:?} without the column(s) {} (schema version {version})",
                    lacking.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// `read_only`: this connection writes nothing to the file's settings
    /// (a reader, or a writer beside the service that holds the file).
    fn configure(&self, read_only: bool) -> Result<(), StateError> {
        self.read(|c| c.busy_timeout(Duration::from_secs(10)))?;
        // Fails early and clearly on a file that is not a database, or not
        // kbsync's, before anything is written to it.
        self.check_shape()?;
        if !read_only {
            // WAL lets `kbsync status` read while a sync writes; NORMAL is
            // durable across process crashes, which is what matters here.
            self.read(|c| {
                c.pragma_update(None, "journal_mode", "WAL")?;
                c.pragma_update(None, "synchronous", "NORMAL")
            })?;
        }
        Ok(())
    }

    fn user_version(&self) -> Result<i64, StateError> {
        self.read(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0)))
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
            self.write(|tx| {
                tx.execute_batch(step)?;
                tx.pragma_update(None, "user_version", (i + 1) as i64)
            })?;
        }
        Ok(())
    }

    /// As `write`, but the commit is on disk when it returns, power loss
    /// included (`synchronous=FULL` for this one commit): for the marks
    /// that guard creates, whose loss would mean a duplicate upload. The
    /// rest stays NORMAL, durable across process crashes, which costs no
    /// fsync per commit.
    fn durable_write<T>(
        &self,
        f: impl FnOnce(&Transaction) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        self.read(|c| c.pragma_update(None, "synchronous", "FULL"))?;
        let result = self.write(f);
        self.read(|c| c.pragma_update(None, "synchronous", "NORMAL"))?;
        result
    }

    /// Copies the write-ahead log into the database and empties the log
    /// file. SQLite's own checkpoints never shrink it; a service that
    /// writes for months would otherwise keep a log as large as its
    /// busiest hour. Returns the pages the log held.
    pub fn checkpoint(&self) -> Result<i64, StateError> {
        self.read(|c| {
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                r.get::<_, i64>(1)
            })
        })
    }

    fn err(&self, e: rusqlite::Error) -> StateError {
        sqlite_err(&self.path, e)
    }

    /// Runs `f` on the connection; an SQLite error comes back naming the
    /// state file, with a hint for the common causes.
    fn read<'c, T>(
        &'c self,
        f: impl FnOnce(&'c Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        f(&self.conn).map_err(|e| self.err(e))
    }

    /// Runs `f` in one transaction, committed when `f` succeeds and rolled
    /// back when it fails.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        self.read(|c| {
            // Unchecked: the connection is not shared, and a `&self` writer
            // lets the pushers record results while they hold the state.
            let tx = c.unchecked_transaction()?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })
    }
}

pub fn unix_now() -> i64 {
    now_secs()
}

/// Whether a write-ahead log with content lies beside the state file.
fn has_log(path: &Path) -> bool {
    let mut log = path.as_os_str().to_owned();
    log.push("-wal");
    std::fs::metadata(PathBuf::from(log)).is_ok_and(|m| m.len() > 0)
}

/// `path` as an SQLite URI (`file:/a%20b/kbsync.db`), for URI parameters.
fn file_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut uri = String::from("file:");
    for &b in abs.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

/// What a state file that SQLite cannot read, or that is not shaped as
/// kbsync's, gets as advice.
const MOVE_ASIDE: &str = " (the file is not a kbsync state database or is corrupt; it was left untouched: move it aside to start afresh, which re-adopts upstream documents by name)";

fn sqlite_err(path: &Path, source: rusqlite::Error) -> StateError {
    let hint = match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            MOVE_ASIDE
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
    use crate::metadata::Metadata;
    use crate::source::{Observed, Scope};

    /// Whether `key`'s row is settled with facts (3, 7, 5), per `each_cached`.
    fn settled(state: &State, key: &str) -> bool {
        let mut found = false;
        state
            .each_cached("j", &Scope::All, true, |row| {
                if row.key() == key {
                    found = row.settled_as(&crate::source::folder::Stat {
                        key: key.into(),
                        size: 3,
                        mtime_ns: 7,
                        identity: 5,
                    });
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
            identity: 5,
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

    /// A state file left by an older kbsync: `status` and `--dry-run` read
    /// it (upgraded in memory), and the file itself is not touched.
    #[test]
    fn an_older_schema_is_read_without_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let old = schema::MIGRATIONS.len() - 2;
        {
            let c = Connection::open(&path).unwrap();
            for step in &schema::MIGRATIONS[..old] {
                c.execute_batch(step).unwrap();
            }
            c.pragma_update(None, "user_version", old as i64).unwrap();
            c.execute(
                "INSERT INTO items (job, key, present) VALUES ('j', 'a.md', 1)",
                [],
            )
            .unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let s = State::open_read_only(&path).unwrap();
        assert_eq!(s.user_version().unwrap(), schema::MIGRATIONS.len() as i64);
        assert!(s.load_items("j").unwrap().contains_key("a.md"));
        drop(s);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "the file is untouched"
        );

        // Newer than this kbsync: refused, saying so.
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = State::open_read_only(&path).err().unwrap().to_string();
        assert!(err.contains("newer than this kbsync"), "{err}");
    }

    #[test]
    fn a_durable_write_commits_with_synchronous_full_and_restores_normal() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(&dir.path().join("s.db")).unwrap();
        let level = |c: &Connection| -> i64 {
            c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap()
        };
        assert_eq!(level(&state.conn), 1, "NORMAL");
        let inside = state.durable_write(|tx| Ok(level(tx))).unwrap();
        assert_eq!(inside, 2, "FULL while the mark is written");
        assert_eq!(level(&state.conn), 1, "NORMAL again");
    }
}
