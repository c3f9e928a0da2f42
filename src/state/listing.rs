//! An upstream listing held in a temporary table of the state file's
//! connection while the audit compares it with the items. A dataset of a
//! million documents then costs the audit disk pages (SQLite's temporary
//! file, gone when the table is dropped), not a million records in memory.
//! The table lives in SQLite's `temp` schema, which is writable even when
//! the state file is open read-only (`kbsync check`).

use std::collections::HashSet;

use rusqlite::{params, OptionalExtension, Row};

use super::{RemoteStatus, State, StateError};
use crate::sink::Listed;

/// What the audit compares of one tracked item.
pub struct Tracked {
    pub key: String,
    pub present: bool,
    pub doc_id: Option<String>,
    pub status: RemoteStatus,
}

/// The listing of one audit; dropped with it.
pub struct Listing<'s> {
    state: &'s State,
}

impl State {
    /// An empty listing (one at a time: a new one replaces the last).
    pub fn new_listing(&self) -> Result<Listing<'_>, StateError> {
        self.read(|c| {
            c.execute_batch(
                "DROP TABLE IF EXISTS temp.listed;
                 CREATE TEMP TABLE listed (
                     id TEXT NOT NULL,
                     name TEXT NOT NULL,
                     standing TEXT,
                     state TEXT,
                     error TEXT,
                     carries TEXT,
                     claimed INTEGER NOT NULL DEFAULT 0
                 );",
            )
        })?;
        Ok(Listing { state: self })
    }
}

fn listed(r: &Row) -> rusqlite::Result<Listed> {
    Ok(Listed {
        id: r.get(0)?,
        name: r.get(1)?,
        standing: r
            .get::<_, Option<String>>(2)?
            .map(|s| RemoteStatus::parse(&s)),
        state: r.get(3)?,
        error: r.get(4)?,
        carries: r.get(5)?,
    })
}

const COLUMNS: &str = "id, name, standing, state, error, carries";

impl Listing<'_> {
    /// Adds one page, as it came.
    pub fn add(&self, page: &[Listed]) -> Result<(), StateError> {
        self.state.write(|tx| {
            let mut insert = tx.prepare_cached(
                "INSERT INTO temp.listed (id, name, standing, state, error, carries) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for l in page {
                insert.execute(params![
                    l.id,
                    l.name,
                    l.standing.map(|s| s.as_str()),
                    l.state,
                    l.error,
                    l.carries
                ])?;
            }
            Ok(())
        })
    }

    /// Indexes the listing once every page is in (an index built from a
    /// sort costs far less than one kept up to date through a million
    /// inserts), and keeps a record listed twice (pages shift while
    /// documents are created) once, as first listed.
    pub fn loaded(&self) -> Result<(), StateError> {
        self.state.write(|tx| {
            tx.execute_batch(
                "CREATE INDEX temp.listed_id ON listed (id);
                 DELETE FROM temp.listed WHERE EXISTS (
                     SELECT 1 FROM temp.listed AS first
                     WHERE first.id = listed.id AND first.rowid < listed.rowid);
                 CREATE INDEX temp.listed_name ON listed (name);",
            )
        })
    }

    /// Every item of `job`, in key order, with the listed record its
    /// document id names (one join, not a lookup per item).
    pub fn each_tracked(
        &self,
        job: &str,
        mut f: impl FnMut(Tracked, Option<Listed>) -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        let mut stmt = self.state.read(|c| {
            c.prepare(
                "SELECT l.id, l.name, l.standing, l.state, l.error, l.carries, i.key, i.present, i.doc_id, i.status
                 FROM main.items i LEFT JOIN temp.listed l ON l.id = i.doc_id
                 WHERE i.job = ?1 ORDER BY i.key",
            )
        })?;
        let err = |e| self.state.err(e);
        let mut rows = stmt.query([job]).map_err(err)?;
        while let Some(r) = rows.next().map_err(err)? {
            let item = Tracked {
                key: r.get(6).map_err(err)?,
                present: r.get::<_, i64>(7).map_err(err)? != 0,
                doc_id: r.get(8).map_err(err)?,
                status: RemoteStatus::parse(&r.get::<_, String>(9).map_err(err)?),
            };
            let record = match r.get::<_, Option<String>>(0).map_err(err)? {
                Some(_) => Some(listed(r).map_err(err)?),
                None => None,
            };
            f(item, record)?;
        }
        Ok(())
    }

    /// Records listed.
    pub fn count(&self) -> Result<usize, StateError> {
        self.state.read(|c| {
            c.query_row("SELECT count(*) FROM temp.listed", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as usize)
        })
    }

    /// The records under `name`, in the order they were listed.
    pub fn by_name(&self, name: &str) -> Result<Vec<Listed>, StateError> {
        self.state.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM temp.listed WHERE name = ?1 ORDER BY rowid"
            ))?
            .query_map([name], listed)?
            .collect()
        })
    }

    /// Names under which more than one record is listed: the only ones
    /// that can hold a duplicate of a record listed under its own name.
    pub fn shared_names(&self) -> Result<HashSet<String>, StateError> {
        self.state.read(|c| {
            c.prepare("SELECT name FROM temp.listed GROUP BY name HAVING count(*) > 1")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
    }

    /// Marks as owned every listed record that `job`'s items name.
    pub fn claim_tracked(&self, job: &str) -> Result<(), StateError> {
        self.state.write(|tx| {
            tx.execute(
                "UPDATE temp.listed SET claimed = 1
                 WHERE id IN (SELECT doc_id FROM main.items WHERE job = ?1 AND doc_id IS NOT NULL)",
                [job],
            )
            .map(drop)
        })
    }

    /// Marks record `id` as owned; false when it already was (or is not
    /// listed).
    pub fn claim(&self, id: &str) -> Result<bool, StateError> {
        self.state.write(|tx| {
            tx.execute(
                "UPDATE temp.listed SET claimed = 1 WHERE id = ?1 AND claimed = 0",
                [id],
            )
            .map(|n| n > 0)
        })
    }

    /// Keeps the records no item claimed, by name, for the rest of the
    /// pass (`State::take_unclaimed`): files new to the state file whose
    /// names the upstream already lists (a state file restored from a
    /// backup) adopt them instead of creating them again.
    pub fn keep_unclaimed(&self) -> Result<(), StateError> {
        self.state.write(|tx| {
            tx.execute_batch(
                "DROP TABLE IF EXISTS temp.unclaimed;
                 CREATE TEMP TABLE unclaimed AS
                     SELECT id, name, standing, state, error, carries FROM temp.listed WHERE claimed = 0;
                 CREATE INDEX temp.unclaimed_name ON unclaimed (name);",
            )
        })
    }
}

impl State {
    /// The first unclaimed record listed under `name` (see
    /// `Listing::keep_unclaimed`), taken so no other key adopts it.
    pub fn take_unclaimed(&self, name: &str) -> Result<Option<Listed>, StateError> {
        self.write(|tx| {
            let found = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM temp.unclaimed WHERE name = ?1 ORDER BY rowid LIMIT 1"
                ))?
                .query_row([name], listed)
                .optional()?;
            if let Some(l) = &found {
                tx.execute("DELETE FROM temp.unclaimed WHERE id = ?1", [&l.id])?;
            }
            Ok(found)
        })
    }

    /// Ends what `keep_unclaimed` kept: the pass is over.
    pub fn drop_unclaimed(&self) -> Result<(), StateError> {
        self.read(|c| c.execute_batch("DROP TABLE IF EXISTS temp.unclaimed"))
    }
}

impl Drop for Listing<'_> {
    fn drop(&mut self) {
        // Gives the temporary file's pages back; a failure here leaves a
        // table the next listing replaces.
        let _ = self
            .state
            .read(|c| c.execute_batch("DROP TABLE IF EXISTS temp.listed"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, name: &str) -> Listed {
        Listed {
            id: id.into(),
            name: name.into(),
            standing: Some(RemoteStatus::Disabled),
            state: Some("completed".into()),
            error: None,
            carries: None,
        }
    }

    #[test]
    fn a_listing_keeps_each_record_once_and_finds_it_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(&dir.path().join("s.db")).unwrap();
        let listing = state.new_listing().unwrap();
        listing.add(&[rec("a", "x.md"), rec("b", "y.md")]).unwrap();
        // Shifted pages list "b" again, under a later name: the first stays.
        listing.add(&[rec("b", "z.md"), rec("c", "x.md")]).unwrap();
        listing.loaded().unwrap();
        assert_eq!(listing.count().unwrap(), 3);
        assert_eq!(listing.by_name("y.md").unwrap(), [rec("b", "y.md")]);
        assert_eq!(listing.by_name("z.md").unwrap(), []);
        let ids: Vec<String> = listing
            .by_name("x.md")
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(
            listing.shared_names().unwrap(),
            HashSet::from(["x.md".to_owned()])
        );
        assert!(listing.claim("c").unwrap());
        assert!(!listing.claim("c").unwrap(), "claimed once");
        assert!(listing.claim("a").unwrap(), "only the record named");
        drop(listing);
        // A new listing starts empty.
        assert_eq!(state.new_listing().unwrap().count().unwrap(), 0);
    }

    #[test]
    fn a_read_only_state_file_can_hold_a_listing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(State::open(&path).unwrap());
        let state = State::open_read_only(&path).unwrap();
        let listing = state.new_listing().unwrap();
        listing.add(&[rec("a", "x.md")]).unwrap();
        listing.loaded().unwrap();
        assert_eq!(listing.count().unwrap(), 1);
    }
}
