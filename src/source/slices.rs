//! A pass over a source that lists (key, stamp) in key order, handed out a
//! slice of keys at a time: the listing without what triage dropped, and
//! the cached rows still to plan, cut in key order. In each slice an entry
//! whose stamp is the one last read keeps what was read then; only the
//! others are read, by the kind (`ReadChanged`), and only when the slice
//! is asked for. A kind gets triage, slices, the protection of what it
//! could not list and the settled skip from `sliced`, and writes none of
//! them.

use std::collections::{BTreeMap, HashMap};

use futures::future::BoxFuture;
use futures::FutureExt;

use super::listed::Listed;
use super::stamp::{unchanged, Stamped};
use super::triage::triage;
use super::{
    is_protected, Content, Observed, ScanInput, ScanResult, Scanned, Scope, Skipped, Slices, Survey,
};
use crate::state::{CachedItem, StateError};

/// How a kind reads the entries of a slice that its stamps cannot vouch
/// for (new, changed, or every one on a deep pass).
pub trait ReadChanged: Send + Sync + 'static {
    type Entry: Stamped;

    /// Reads `entries` (in key order): an item for each, or skipped and
    /// protected where one could not be read.
    fn read(&self, entries: Vec<Self::Entry>) -> BoxFuture<'static, ScanResult>;

    /// Where a push reads the bytes of what this source found.
    fn content(&self) -> Box<dyn Content + Send + Sync>;
}

/// How a pass looks at the listing: trusting the settled flags (the job's
/// plan fingerprint is the recorded one), and reading every entry whatever
/// its stamp (`deep`).
#[derive(Debug, Clone, Copy)]
pub struct Trust {
    pub settled: bool,
    pub deep: bool,
}

/// The pass `input` asks for over what a kind listed: what the sink
/// refuses is left out, triage drops what the cache vouches for, and the
/// rest is read a slice at a time by `reader`.
pub fn sliced<R: ReadChanged>(
    input: &ScanInput,
    trust: Trust,
    mut listed: Listed<R::Entry>,
    reader: R,
) -> Result<Survey, StateError> {
    listed.refuse(input.refuses);
    let t = triage(
        input.state,
        input.job,
        input.scope,
        trust.settled && !trust.deep,
        &mut listed,
    )?;
    Ok(Survey::Sliced(Box::new(StampedSlices {
        reader,
        scope: input.scope.clone(),
        entries: std::mem::take(&mut listed.entries).into_iter(),
        skipped: listed.skipped,
        protected: listed.protected,
        cached: t.cached.into_iter().collect(),
        from: Some(String::new()),
        deep: trust.deep,
        unchanged: t.unchanged,
        rehashed: trust.deep && input.scope.is_all() && input.record_fingerprint,
        read: None,
    })))
}

/// A pass over a listing (all of it, or the paths the watcher reported),
/// cut into slices of keys in order. A scoped pass is sliced too: one new
/// subtree may hold a million entries.
struct StampedSlices<R: ReadChanged> {
    reader: R,
    /// The pass's scope; each slice is a key range of it.
    scope: Scope,
    entries: std::vec::IntoIter<R::Entry>,
    /// What the listing left out: reported with the first slice.
    skipped: Vec<Skipped>,
    /// What it could not list: protected in every slice.
    protected: Vec<String>,
    cached: BTreeMap<String, CachedItem>,
    /// Where the next slice starts; `None` once the last was handed out.
    from: Option<String>,
    deep: bool,
    unchanged: usize,
    /// Reading every entry was due: recorded once every slice was read.
    rehashed: bool,
    /// The progress counter's count of read entries when this pass began,
    /// and the entries read since, once the whole pass's count was given
    /// to it (at the first slice, after respellings paired).
    read: Option<(u64, u64)>,
}

impl<R: ReadChanged> Slices for StampedSlices<R> {
    /// The cached rows the listing no longer finds (and could read where
    /// they were).
    fn gone(&self) -> HashMap<String, CachedItem> {
        let entries = self.entries.as_slice();
        self.cached
            .values()
            .filter(|c| {
                entries.binary_search_by(|e| e.key().cmp(&c.key)).is_err()
                    && !is_protected(&self.protected, &c.key)
            })
            .map(|c| (c.key.clone(), c.clone()))
            .collect()
    }

    /// Pairs each cached item the listing no longer finds with a new key
    /// that is the same name spelled otherwise (composed or decomposed
    /// Unicode, as a copy from macOS gives): one document name upstream,
    /// so one item. The cached row moves to the new key, which the pass
    /// then plans as a change of that item rather than a create beside a
    /// retirement of the same document. Returns the (old, new) pairs for
    /// the state file.
    fn pair_respellings(&mut self) -> Vec<(String, String)> {
        let entries = self.entries.as_slice();
        // Only non-ASCII keys can be respelled: few, even in a large tree.
        let new: HashMap<String, &str> = entries
            .iter()
            .filter(|e| !e.key().is_ascii() && !self.cached.contains_key(e.key()))
            .map(|e| (super::composed(e.key()), e.key()))
            .collect();
        if new.is_empty() {
            return Vec::new();
        }
        let pairs: Vec<(String, String)> = self
            .cached
            .values()
            .filter(|c| !c.key.is_ascii() && c.present)
            .filter(|c| entries.binary_search_by(|e| e.key().cmp(&c.key)).is_err())
            .filter(|c| !is_protected(&self.protected, &c.key))
            .filter_map(|c| {
                Some((
                    c.key.clone(),
                    new.get(&super::composed(&c.key))?.to_string(),
                ))
            })
            .collect();
        for (old, new) in &pairs {
            if let Some(mut row) = self.cached.remove(old) {
                row.key.clone_from(new);
                self.cached.insert(new.clone(), row);
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

impl<R: ReadChanged> StampedSlices<R> {
    async fn read_next(&mut self, size: usize) -> Option<(Scope, Scanned)> {
        let from = self.from.take()?;
        let (base, read) = match self.read {
            Some(read) => read,
            None => {
                let entries = self.entries.as_slice().iter();
                let n = entries.filter(|e| self.must_read(e, self.cached.get(e.key())));
                crate::progress::READING.add(n.count());
                (crate::progress::READING.get().0, 0)
            }
        };
        let entries: Vec<R::Entry> = self.entries.by_ref().take(size.max(1)).collect();
        let until = self.entries.as_slice().first().map(|e| e.key().to_owned());
        let mine = match &until {
            Some(u) => {
                let rest = self.cached.split_off(u.as_str());
                std::mem::replace(&mut self.cached, rest)
            }
            None => std::mem::take(&mut self.cached),
        };
        self.from.clone_from(&until);
        let cached: HashMap<String, CachedItem> = mine.into_iter().collect();
        let (known, to_read) = self.vouched_for(entries, &cached);
        let read = read + to_read.len() as u64;
        self.read = Some((base, read));
        let mut scan = self.reader.read(to_read).await;
        crate::progress::READING.reach(base + read);
        scan.items.extend(known);
        // Reported once, with the first slice; protected in every one.
        scan.skipped.append(&mut self.skipped);
        scan.protected.extend(self.protected.iter().cloned());
        for s in &scan.skipped {
            tracing::warn!(path = %s.path, reason = %s.reason, "skipped");
        }
        scan.items.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        scan.skipped.sort_by(|a, b| a.path.cmp(&b.path));
        // Counted once, with the first slice.
        scan.unchanged = std::mem::take(&mut self.unchanged);
        let scanned = Scanned {
            scan,
            cached,
            content: self.reader.content(),
        };
        Some((self.scope.slice(from, until), scanned))
    }

    /// Splits a slice's entries into the items whose stamp is the one last
    /// read (what was read then stands; not on a deep pass) and those to
    /// read.
    fn vouched_for(
        &self,
        entries: Vec<R::Entry>,
        cached: &HashMap<String, CachedItem>,
    ) -> (Vec<Observed>, Vec<R::Entry>) {
        let mut known = Vec::new();
        let mut to_read = Vec::new();
        for entry in entries {
            let row = cached.get(entry.key());
            match row.and_then(|c| c.facts.as_ref()) {
                Some(k) if !self.must_read(&entry, row) => known.push(Observed {
                    key: entry.key().to_owned(),
                    size: k.size,
                    mtime_ns: k.mtime_ns,
                    identity: k.identity,
                    hash: k.hash.clone(),
                    front_matter: k.front_matter.clone(),
                    rehashed: false,
                    racy: false,
                    validator: k.validator.clone(),
                }),
                _ => to_read.push(entry),
            }
        }
        (known, to_read)
    }

    /// Whether `entry` is read: a deep pass reads all; otherwise those
    /// without a row, or whose stamp is not the one last read.
    fn must_read(&self, entry: &R::Entry, row: Option<&CachedItem>) -> bool {
        match row.and_then(|c| c.facts.as_ref()) {
            Some(k) => self.deep || !unchanged(entry, k),
            None => true,
        }
    }
}
