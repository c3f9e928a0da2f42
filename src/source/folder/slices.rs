//! A pass over a folder, handed out a slice of keys at a time: the walk
//! (without the settled files) and the cached rows still to plan, cut in
//! key order, each slice read (what changed is hashed) only when asked for.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::config::FolderConfig;
use crate::source::fence::Fence;
use crate::source::seam::known_facts;
use crate::source::{FolderContent, Scanned, Scope, Slices};
use crate::state::CachedItem;

/// A pass over a folder (all of it, or the paths the watcher reported):
/// the walk without the settled files, and the cached rows still to plan,
/// cut into slices of keys in order. A scoped pass is sliced too: one new
/// subtree may hold a million files.
pub struct FolderSlices {
    pub(super) cfg: FolderConfig,
    /// What the walk kept out; every upload is held to it again.
    pub(super) fence: Arc<Fence>,
    /// The pass's scope; each slice is a key range of it.
    pub(super) scope: Scope,
    pub(super) files: std::vec::IntoIter<super::Stat>,
    /// Skipped and protected entries, and when the walk began.
    pub(super) rest: super::Walked,
    pub(super) cached: BTreeMap<String, CachedItem>,
    /// Where the next slice starts; `None` once the last was handed out.
    pub(super) from: Option<String>,
    pub(super) deep: bool,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) unchanged: usize,
    /// Reading every file was due: recorded once every slice was read.
    pub(super) rehashed: bool,
}

impl Slices for FolderSlices {
    /// The cached rows the walk no longer finds (and could read where
    /// they were).
    fn gone(&self) -> HashMap<String, CachedItem> {
        let f = self;
        let files = f.files.as_slice();
        f.cached
            .values()
            .filter(|c| {
                files.binary_search_by(|s| (*s.key).cmp(&c.key)).is_err()
                    && !crate::source::is_protected(f.rest.protected(), &c.key)
            })
            .map(|c| (c.key.clone(), c.clone()))
            .collect()
    }

    /// Pairs each cached item the scan no longer finds with a new key
    /// that is the same path spelled otherwise (composed or decomposed
    /// Unicode, as a copy from macOS gives): one document name upstream,
    /// so one item. The cached row moves to the new key, which the pass
    /// then plans as a change of that item rather than a create beside a
    /// retirement of the same document. Returns the (old, new) pairs for
    /// the state file.
    fn pair_respellings(&mut self) -> Vec<(String, String)> {
        let f = self;
        // Only non-ASCII keys can be respelled: few, even in a large tree.
        let new: HashMap<String, &str> = f
            .files
            .as_slice()
            .iter()
            .filter(|s| !s.key.is_ascii() && !f.cached.contains_key(&*s.key))
            .map(|s| (crate::source::composed(&s.key), &*s.key))
            .collect();
        if new.is_empty() {
            return Vec::new();
        }
        let files = f.files.as_slice();
        let pairs: Vec<(String, String)> = f
            .cached
            .values()
            .filter(|c| !c.key.is_ascii() && c.present)
            .filter(|c| files.binary_search_by(|s| (*s.key).cmp(&c.key)).is_err())
            .filter(|c| !crate::source::is_protected(f.rest.protected(), &c.key))
            .filter_map(|c| {
                Some((
                    c.key.clone(),
                    new.get(&crate::source::composed(&c.key))?.to_string(),
                ))
            })
            .collect();
        for (old, new) in &pairs {
            if let Some(mut row) = f.cached.remove(old) {
                row.key.clone_from(new);
                f.cached.insert(new.clone(), row);
            }
        }
        pairs
    }

    fn rehashed(&self) -> bool {
        self.rehashed
    }

    /// The next slice: a key range of the pass's scope, with what was
    /// found in it (what changed is read now).
    fn next(&mut self, size: usize) -> BoxFuture<'_, Option<(Scope, Scanned)>> {
        self.read_next(size).boxed()
    }
}

impl FolderSlices {
    async fn read_next(&mut self, size: usize) -> Option<(Scope, Scanned)> {
        let f = self;
        let from = f.from.take()?;
        let walked = super::Walked::take_front(&mut f.files, size.max(1), &mut f.rest);
        let until = f.files.as_slice().first().map(|s| s.key.to_string());
        let mine = match &until {
            Some(u) => {
                let rest = f.cached.split_off(u.as_str());
                std::mem::replace(&mut f.cached, rest)
            }
            None => std::mem::take(&mut f.cached),
        };
        f.from.clone_from(&until);
        let cached: HashMap<String, CachedItem> = mine.into_iter().collect();
        let known = known_facts(&cached);
        let (cfg, deep, stop) = (f.cfg.clone(), f.deep, f.stop.clone());
        let mut scan = tokio::task::spawn_blocking(move || {
            super::read_changed(&cfg, walked, &known, deep, &stop)
        })
        .await
        .expect("the hashing threads do not panic");
        // Counted once, with the first slice.
        scan.unchanged = std::mem::take(&mut f.unchanged);
        let scanned = Scanned {
            scan,
            cached,
            content: Box::new(FolderContent {
                root: f.cfg.root.clone(),
                fence: f.fence.clone(),
                max_file_size: f.cfg.max_file_size,
            }),
        };
        Some((f.scope.slice(from, until), scanned))
    }
}
