//! Triage of a folder walk against the cache, before anything is read:
//! a file whose cached row is settled (see `state::settled`) and still has
//! the recorded size and mtime needs neither reading nor planning, so it is
//! dropped here; everything else (new, changed, unsettled, gone) goes on
//! to hashing and the planner with its cached row.
//!
//! The walk is sorted and the cache is read in key order, so the two are
//! merged without a map of either; scoped reads (out of order) fall back
//! to a binary search of the walk.

use std::collections::HashMap;

use super::folder::Walked;
use super::Scope;
use crate::state::{CachedItem, State, StateError};

pub struct Triage {
    /// The walk without the settled files.
    pub walked: Walked,
    /// The cached rows still to plan (changed, unsettled, gone).
    pub cached: HashMap<String, CachedItem>,
    /// Files dropped as settled and unchanged.
    pub unchanged: usize,
}

pub fn triage(
    state: &State,
    job: &str,
    scope: &Scope,
    trust_settled: bool,
    mut walked: Walked,
) -> Result<Triage, StateError> {
    let files = &walked.files;
    let mut keep = vec![true; files.len()];
    let mut cached = HashMap::new();
    let mut unchanged = 0;
    let mut next = 0;
    state.each_cached(job, scope, trust_settled, |row| {
        let key = row.key();
        let at = if files.get(next).is_some_and(|f| &*f.key == key) {
            Some(next)
        } else {
            files.binary_search_by(|f| (*f.key).cmp(key)).ok()
        };
        match at {
            Some(i) => {
                next = i + 1;
                if row.settled_as(&files[i]) {
                    keep[i] = false;
                    unchanged += 1;
                    return Ok(());
                }
            }
            None if row.settled_absent() => return Ok(()),
            None => {}
        }
        let item = row.item()?;
        cached.insert(item.key.clone(), item);
        Ok(())
    })?;
    walked.retain_files(&keep);
    Ok(Triage {
        walked,
        cached,
        unchanged,
    })
}
