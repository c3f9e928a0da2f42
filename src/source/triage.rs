//! Triage of what a source listed against the cache, before anything is
//! read: an entry whose cached row is settled (see `state::settled`) and
//! still has the recorded stamp needs neither reading nor planning, so it
//! is dropped here; everything else (new, changed, unsettled, gone) goes
//! on to reading and the planner with its cached row.
//!
//! The listing is sorted and the cache is read in key order, so the two
//! are merged without a map of either; scoped reads (out of order) fall
//! back to a binary search of the listing.

use std::collections::HashMap;

use super::listed::Listed;
use super::stamp::Stamped;
use super::Scope;
use crate::state::{CachedItem, State, StateError};

pub struct Triage {
    /// The cached rows still to plan (changed, unsettled, gone).
    pub cached: HashMap<String, CachedItem>,
    /// Entries dropped from the listing as settled and unchanged.
    pub unchanged: usize,
}

/// Drops from `listed` the entries the cache vouches for (settled, with
/// the same stamp); returns the cached rows of the rest and of what the
/// listing no longer finds.
pub fn triage<E: Stamped>(
    state: &State,
    job: &str,
    scope: &Scope,
    trust_settled: bool,
    listed: &mut Listed<E>,
) -> Result<Triage, StateError> {
    let entries = &listed.entries;
    let mut keep = vec![true; entries.len()];
    let mut cached = HashMap::new();
    let mut unchanged = 0;
    let mut next = 0;
    state.each_cached(job, scope, trust_settled, |row| {
        let key = row.key();
        let at = if entries.get(next).is_some_and(|e| e.key() == key) {
            Some(next)
        } else {
            entries.binary_search_by(|e| e.key().cmp(key)).ok()
        };
        match at {
            Some(i) => {
                next = i + 1;
                if row.settled_as(&entries[i]) {
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
    listed.retain(&keep);
    Ok(Triage { cached, unchanged })
}
