//! What a source found before reading anything: its entries in key order,
//! each with its stamp, and what it could not list. Triage drops from it
//! what the cache vouches for; the slices read the rest a few keys at a
//! time.

use std::collections::HashMap;

use super::stamp::Stamped;
use super::Skipped;

pub struct Listed<E> {
    /// Sorted by key, each key once.
    pub entries: Vec<E>,
    /// Entries left out, and why: reported with the first slice.
    pub skipped: Vec<Skipped>,
    /// Keys, prefixes ending in `/`, or `""` for everything: entries that
    /// exist but could not be listed or read, so what the cache knows of
    /// them is never taken for deleted (see `ScanResult::protected`).
    pub protected: Vec<String>,
}

impl<E> Default for Listed<E> {
    fn default() -> Self {
        Listed {
            entries: Vec::new(),
            skipped: Vec::new(),
            protected: Vec::new(),
        }
    }
}

impl<E: Stamped> Listed<E> {
    /// Leaves out `key` with `reason`, and protects it: whatever was sent
    /// of it before stays.
    pub fn skip(&mut self, key: &str, reason: String) {
        self.skipped.push(Skipped {
            path: key.to_owned(),
            reason,
        });
        self.protected.push(key.to_owned());
    }

    /// Two entries whose names are one once Unicode-normalized (NFC), such
    /// as "é" typed on macOS (decomposed) and elsewhere (composed), would
    /// be one document upstream: the first by key is mirrored, the other
    /// reported and protected, never uploaded as a second copy.
    pub fn drop_unicode_twins(&mut self) {
        let mut first: HashMap<String, usize> = HashMap::new();
        let mut twins: Vec<(usize, String)> = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            // ASCII is its own normal form, and most keys are ASCII.
            if e.key().is_ascii() {
                continue;
            }
            let nfc = super::composed(e.key());
            let ascii_twin = nfc.is_ascii()
                && self
                    .entries
                    .binary_search_by(|g| g.key().cmp(nfc.as_str()))
                    .is_ok();
            if ascii_twin {
                twins.push((i, nfc));
                continue;
            }
            match first.entry(nfc) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    twins.push((i, self.entries[*e.get()].key().to_owned()))
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(i);
                }
            }
        }
        if twins.is_empty() {
            return;
        }
        let mut keep = vec![true; self.entries.len()];
        for (i, other) in twins {
            let key = self.entries[i].key().to_owned();
            self.skip(&key, format!("the same name as {other:?} once Unicode-normalized (NFC): both would be one document upstream; rename one of them"));
            keep[i] = false;
        }
        self.retain(&keep);
    }

    /// Takes out the entries `refuses` gives a reason for (a file type the
    /// sink does not take) before anything reads them: each is reported
    /// with that reason and protected, so what was sent of it before stays.
    pub fn refuse(&mut self, refuses: &dyn Fn(&str) -> Option<String>) {
        let mut keep = vec![true; self.entries.len()];
        let mut refused = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if let Some(reason) = refuses(e.key()) {
                refused.push((e.key().to_owned(), reason));
                keep[i] = false;
            }
        }
        for (key, reason) in refused {
            self.skip(&key, reason);
        }
        if keep.contains(&false) {
            self.retain(&keep);
        }
    }

    /// Keeps only the entries `keep` says yes to (by position).
    pub fn retain(&mut self, keep: &[bool]) {
        let mut i = 0;
        self.entries.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }
}
