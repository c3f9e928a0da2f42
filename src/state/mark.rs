//! A source's mark: what a polled source was last listed whole at (a git
//! commit). When the source still stands at its mark and a pass that
//! began after that listing converged, with nothing since left unsettled,
//! queued or skipped, the upstream matches the source as it is now: the
//! next poll need not list it again.

use rusqlite::{params, OptionalExtension};

use super::{State, StateError};

impl State {
    /// Records that `job`'s source was listed whole at `mark`, `files`
    /// found, after the runs logged so far (a pass that began before
    /// cannot vouch for it).
    pub fn record_source_mark(&self, job: &str, mark: &str, files: u64) -> Result<(), StateError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE jobs SET source_mark = ?2, source_mark_files = ?3,
                     source_mark_run = (SELECT COALESCE(MAX(id), 0) FROM runs)
                 WHERE job = ?1",
                params![job, mark, files as i64],
            )
            .map(drop)
        })
    }

    /// Whether `job` converged with its source at `mark`: the mark is the
    /// one recorded, the last run logged since that listing converged, and
    /// no item has been touched since (an audit's repair clears the flag
    /// of what it found), nothing waits in the outbox and nothing was
    /// skipped. Then, how many files the listing at the mark found (a mark
    /// recorded before kbsync counted them vouches for nothing: the next
    /// poll lists once).
    pub fn converged_at_mark(&self, job: &str, mark: &str) -> Result<Option<u64>, StateError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT CASE WHEN j.source_mark = ?2
                    AND COALESCE((SELECT r.converged FROM runs r
                                  WHERE r.job = ?1 AND r.id > j.source_mark_run
                                  ORDER BY r.id DESC LIMIT 1), 0) = 1
                    AND NOT EXISTS (SELECT 1 FROM items i
                                    WHERE i.job = ?1 AND i.present = 1 AND i.settled = 0)
                    AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.job = ?1)
                    AND NOT EXISTS (SELECT 1 FROM skipped s WHERE s.job = ?1)
                 THEN j.source_mark_files END
                 FROM jobs j WHERE j.job = ?1",
            )?
            .query_row(params![job, mark], |r| r.get::<_, Option<i64>>(0))
            .optional()
            .map(|v| v.flatten().map(|n| n.max(0) as u64))
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::state::State;

    /// The mark vouches only for passes logged after it, that converged,
    /// and only while nothing was touched since.
    #[test]
    fn a_mark_vouches_only_for_a_converged_pass_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = State::open(&dir.path().join("kbsync.db")).unwrap();
        s.bind_target("j", "t").unwrap();
        s.record_source_mark("j", "c1", 3).unwrap();
        let at = |s: &State, mark| s.converged_at_mark("j", mark).unwrap();
        assert_eq!(at(&s, "c1"), None, "no pass yet");
        s.record_run("j", 0, (false, false), "failed", &Default::default())
            .unwrap();
        assert_eq!(at(&s, "c1"), None, "the pass failed");
        s.record_run("j", 0, (true, true), "converged", &Default::default())
            .unwrap();
        assert_eq!(at(&s, "c1"), Some(3), "the files listed at the mark");
        assert_eq!(at(&s, "c2"), None, "another commit");
        // A pass that listed c2 and was killed logs no run: the converged
        // run before it vouches for c1 only.
        s.record_source_mark("j", "c2", 4).unwrap();
        assert_eq!(at(&s, "c2"), None);
        s.record_run("j", 0, (true, true), "converged", &Default::default())
            .unwrap();
        assert_eq!(at(&s, "c2"), Some(4));
        s.record_skipped(
            "j",
            &crate::source::Scope::All,
            &[crate::source::Skipped {
                path: "a.md".into(),
                reason: "too large".into(),
            }],
        )
        .unwrap();
        assert_eq!(at(&s, "c2"), None, "a file is skipped");
        let _ = &mut s;
    }
}
