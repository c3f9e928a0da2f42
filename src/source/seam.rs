//! What the pass asks of a source, whatever it is: scan the part a scope
//! selects, against the cache, and say where the bytes to upload come
//! from. A folder walks and stats everything, then reads only what the
//! cache cannot vouch for; a web job fetches its pages with conditional
//! GETs and is always polled whole.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::fence::OwnFiles;
use super::trigger::Trigger;
use super::{Content, KnownFacts, ScanResult, Scope};
use crate::model::Capabilities;
use crate::state::{CachedItem, State, StateError};

/// What a pass scans with.
pub struct ScanInput<'a> {
    pub job: &'a str,
    pub state: &'a mut State,
    pub scope: &'a Scope,
    /// Files never to mirror, wherever they are: kbsync's own.
    pub own: &'a OwnFiles,
    /// The job's plan fingerprint: settled rows are trusted only under the
    /// fingerprint they were settled with.
    pub fingerprint: &'a str,
    /// Record `fingerprint` as the job's (not on a dry run).
    pub record_fingerprint: bool,
    /// Read every file, trusting no size, mtime or settled flag.
    pub checksum: bool,
    /// Set on shutdown: reading stops between two chunks.
    pub stop: Arc<AtomicBool>,
    /// Why the sink would refuse an item outright (a file type it does not
    /// take): such an item is reported and protected, and never read.
    pub refuses: &'a (dyn Fn(&str) -> Option<String> + Send + Sync),
}

/// What a scan found, with the cached rows the plan is made against.
pub struct Scanned {
    pub scan: ScanResult,
    pub cached: HashMap<String, CachedItem>,
    pub content: Box<dyn Content + Send + Sync>,
}

/// A job's validated source section: what the rest of kbsync asks of a
/// source kind without naming it (each kind's folder under `src/source/`
/// implements it; `registry.rs` reads it).
pub trait SourceConfig: std::fmt::Debug + Send + Sync {
    /// The section's name in a `[[sync]]` job (`folder`, `web`).
    fn kind(&self) -> &'static str;

    /// The source this section describes, ready to scan.
    fn open(&self) -> Result<Box<dyn Source>, String>;

    /// What makes the service pass over the job, besides its periodic
    /// full passes.
    fn trigger(&self) -> Trigger;

    /// The largest item the source hands to a sink.
    fn max_file_size(&self) -> u64;

    /// Why the source cannot be looked at now (a folder whose root is
    /// missing or looks unmounted).
    fn unavailable(&self) -> Option<String> {
        None
    }

    /// Whether a push a git host announced (the control API's webhooks)
    /// moved what this job mirrors. Only a git job can say yes.
    fn pushed(&self, _push: &super::Push) -> bool {
        false
    }

    /// Why a target of these capabilities (named `target`) cannot mirror
    /// this source: the config is refused with this message.
    fn refuses_target(&self, _caps: Capabilities, _target: &str) -> Option<String> {
        None
    }
}

pub trait Source: Send + Sync {
    /// The scope a pass asked for, as this source can serve it.
    fn scope(&self, asked: &Scope) -> Scope;

    /// Whether items found in sync after a push are flagged settled, so
    /// later scans can skip them without reading (see `triage`).
    fn settles(&self) -> bool;

    /// Why the source cannot be scanned at all (a folder that looks
    /// unmounted, a bucket that is not there): the job then does nothing.
    fn unavailable(&self) -> BoxFuture<'_, Option<String>> {
        Box::pin(std::future::ready(None))
    }

    /// Scans what `input.scope` selects: whole, or (a full pass over a
    /// folder) walked and triaged now, and read a slice at a time as the
    /// pass asks for them.
    fn survey<'a>(&'a self, input: ScanInput<'a>) -> BoxFuture<'a, Result<Survey, StateError>>;
}

/// A scan, handed to the pass in slices of keys: a first sync of a
/// million files reads, plans and pushes a few thousand at a time and
/// never holds a million read items, plans or outbox rows at once.
pub enum Survey {
    /// Scanned in one go (a web job): the one slice.
    Whole(Option<Box<(Scope, Scanned)>>),
    /// Read a slice at a time, as the pass asks for them (a folder).
    Sliced(Box<dyn Slices>),
}

/// A scan that reads its items a slice of keys at a time: what it found
/// (walked, listed) is known before any slice is read.
pub trait Slices: Send {
    /// The cached rows of items the scan no longer finds (and could read
    /// where they were).
    fn gone(&self) -> HashMap<String, CachedItem>;

    /// Pairs each cached item the scan no longer finds with a new key that
    /// is the same name spelled otherwise; the cached row moves to the new
    /// key. Returns the (old, new) pairs for the state file.
    fn pair_respellings(&mut self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// Reading every item was due and every slice was read whole.
    fn rehashed(&self) -> bool {
        false
    }

    /// The next slice of at most `size` keys: its scope and what was found
    /// in it; `None` when every slice was handed out.
    fn next(&mut self, size: usize) -> BoxFuture<'_, Option<(Scope, Scanned)>>;
}

impl Survey {
    /// The cached rows of items the scan no longer finds (and could read
    /// where they were): what the pass will retire, known before any slice
    /// is read, so the delete guard judges the whole pass.
    pub fn gone(&self) -> HashMap<String, CachedItem> {
        match self {
            Survey::Whole(None) => HashMap::new(),
            Survey::Whole(Some(whole)) => {
                let s = &whole.1;
                s.cached
                    .values()
                    .filter(|c| {
                        s.scan
                            .items
                            .binary_search_by(|o| o.key.as_str().cmp(&c.key))
                            .is_err()
                            && !s.scan.is_protected(&c.key)
                    })
                    .map(|c| (c.key.clone(), c.clone()))
                    .collect()
            }
            Survey::Sliced(f) => f.gone(),
        }
    }

    /// Pairs each cached item the scan no longer finds with a new key
    /// that is the same path spelled otherwise (see
    /// `Slices::pair_respellings`); returns the (old, new) pairs for the
    /// state file.
    pub fn pair_respellings(&mut self) -> Vec<(String, String)> {
        match self {
            Survey::Whole(_) => Vec::new(),
            Survey::Sliced(f) => f.pair_respellings(),
        }
    }

    /// Reading every file was due and every slice was read whole.
    pub fn rehashed(&self) -> bool {
        matches!(self, Survey::Sliced(f) if f.rehashed())
    }

    /// The next slice: its scope (a key range, or the pass's own scope)
    /// and what was found in it; `None` when every slice was handed out.
    pub async fn next(&mut self, size: usize) -> Option<(Scope, Scanned)> {
        match self {
            Survey::Whole(whole) => whole.take().map(|w| *w),
            Survey::Sliced(f) => f.next(size).await,
        }
    }
}

/// The refusal of a target that takes no content, by a source whose items
/// (`what`) exist nowhere upstream until uploaded.
pub(super) fn needs_content(caps: Capabilities, target: &str, what: &str) -> Option<String> {
    (!caps.content).then(|| {
        format!("the {target} target cannot take content, so there is nothing to mirror {what} into; use a [sync.folder] source mapped to existing items")
    })
}

pub(super) fn known_facts(cached: &HashMap<String, CachedItem>) -> HashMap<String, KnownFacts> {
    cached
        .iter()
        .filter_map(|(k, c)| c.facts.clone().map(|f| (k.clone(), f)))
        .collect()
}
