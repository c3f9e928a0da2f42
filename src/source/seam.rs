//! What the pass asks of a source, whatever it is: scan the part a scope
//! selects, against the cache, and say where the bytes to upload come
//! from. A folder walks and stats everything, then reads only what the
//! cache cannot vouch for; a web job fetches its pages with conditional
//! GETs and is always polled whole.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::fence::{Fence, OwnFiles};
use super::triage::triage;
use super::{folder, web, Content, Downloaded, FolderContent, KnownFacts, ScanResult, Scope};
use crate::config::{FolderConfig, SourceConfig, WebConfig};
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

pub trait Source: Send + Sync {
    /// The scope a pass asked for, as this source can serve it.
    fn scope(&self, asked: &Scope) -> Scope;

    /// Whether items found in sync after a push are flagged settled, so
    /// later scans can skip them without reading (see `triage`).
    fn settles(&self) -> bool;

    /// Why the source cannot be scanned at all (it looks unmounted): the
    /// job then does nothing.
    fn unavailable(&self) -> Option<String> {
        None
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
    Folder(Box<FolderSlices>),
}

/// A pass over a folder (all of it, or the paths the watcher reported):
/// the walk without the settled files, and the cached rows still to plan,
/// cut into slices of keys in order. A scoped pass is sliced too: one new
/// subtree may hold a million files.
pub struct FolderSlices {
    cfg: FolderConfig,
    /// What the walk kept out; every upload is held to it again.
    fence: Arc<Fence>,
    /// The pass's scope; each slice is a key range of it.
    scope: Scope,
    files: std::vec::IntoIter<folder::Stat>,
    /// Skipped and protected entries, and when the walk began.
    rest: folder::Walked,
    cached: BTreeMap<String, CachedItem>,
    /// Where the next slice starts; `None` once the last was handed out.
    from: Option<String>,
    deep: bool,
    stop: Arc<AtomicBool>,
    unchanged: usize,
    /// Reading every file was due: recorded once every slice was read.
    rehashed: bool,
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
            Survey::Folder(f) => {
                let files = f.files.as_slice();
                f.cached
                    .values()
                    .filter(|c| {
                        files.binary_search_by(|s| (*s.key).cmp(&c.key)).is_err()
                            && !super::is_protected(f.rest.protected(), &c.key)
                    })
                    .map(|c| (c.key.clone(), c.clone()))
                    .collect()
            }
        }
    }

    /// Pairs each cached item the scan no longer finds with a new key
    /// that is the same path spelled otherwise (composed or decomposed
    /// Unicode, as a copy from macOS gives): one document name upstream,
    /// so one item. The cached row moves to the new key, which the pass
    /// then plans as a change of that item rather than a create beside a
    /// retirement of the same document. Returns the (old, new) pairs for
    /// the state file.
    pub fn pair_respellings(&mut self) -> Vec<(String, String)> {
        let Survey::Folder(f) = self else {
            return Vec::new();
        };
        // Only non-ASCII keys can be respelled: few, even in a large tree.
        let new: HashMap<String, &str> = f
            .files
            .as_slice()
            .iter()
            .filter(|s| !s.key.is_ascii() && !f.cached.contains_key(&*s.key))
            .map(|s| (super::composed(&s.key), &*s.key))
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
            .filter(|c| !super::is_protected(f.rest.protected(), &c.key))
            .filter_map(|c| {
                Some((
                    c.key.clone(),
                    new.get(&super::composed(&c.key))?.to_string(),
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

    /// Reading every file was due and every slice was read whole.
    pub fn rehashed(&self) -> bool {
        matches!(self, Survey::Folder(f) if f.rehashed)
    }

    /// The next slice: its scope (a key range, or the pass's own scope)
    /// and what was found in it; `None` when every slice was handed out.
    pub async fn next(&mut self, size: usize) -> Option<(Scope, Scanned)> {
        let f = match self {
            Survey::Whole(whole) => return whole.take().map(|w| *w),
            Survey::Folder(f) => f,
        };
        let from = f.from.take()?;
        let walked = folder::Walked::take_front(&mut f.files, size.max(1), &mut f.rest);
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
            folder::read_changed(&cfg, walked, &known, deep, &stop)
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

impl SourceConfig {
    /// The source this section describes, ready to scan.
    pub fn open(&self) -> Result<Box<dyn Source>, String> {
        Ok(match self {
            SourceConfig::Folder(cfg) => Box::new(FolderSource { cfg: cfg.clone() }),
            SourceConfig::Web(cfg) => Box::new(WebSource {
                client: web::client(cfg).map_err(|e| e.to_string())?,
                cfg: cfg.clone(),
            }),
        })
    }
}

struct FolderSource {
    cfg: FolderConfig,
}

impl FolderSource {
    /// Whether a full pass should read every file: `rehash_interval`
    /// passed since the last pass that did.
    fn rehash_due(&self, state: &State, job: &str, scope: &Scope) -> Result<bool, StateError> {
        let Some(every) = self.cfg.rehash_interval else {
            return Ok(false);
        };
        if !scope.is_all() {
            return Ok(false);
        }
        let now = crate::state::unix_now();
        Ok(match state.rehashed_at(job)? {
            Some(at) => now - at >= every.as_secs() as i64,
            None => {
                // The first pass reads what it must anyway: start counting.
                state.mark_rehashed(job)?;
                false
            }
        })
    }
}

impl Source for FolderSource {
    fn scope(&self, asked: &Scope) -> Scope {
        asked.clone()
    }

    fn settles(&self) -> bool {
        true
    }

    fn unavailable(&self) -> Option<String> {
        self.cfg.unmounted()
    }

    fn survey<'a>(&'a self, input: ScanInput<'a>) -> BoxFuture<'a, Result<Survey, StateError>> {
        async move {
            // The walk (stat only) runs while the cache is read: neither
            // needs the other until files are compared.
            let walking = {
                let (cfg, own, scope) = (self.cfg.clone(), input.own.clone(), input.scope.clone());
                tokio::task::spawn_blocking(move || {
                    let fence = Fence::new(&cfg.root, own.resolve());
                    let walked = folder::walk(&cfg, &fence, &scope);
                    (walked, Arc::new(fence))
                })
            };
            let trust = input.state.plan_fingerprint(
                input.job,
                input.fingerprint,
                input.record_fingerprint,
            )?;
            let deep = input.checksum || self.rehash_due(input.state, input.job, input.scope)?;
            if deep {
                tracing::info!("reading every file (checksum pass)");
            }
            let (mut walked, fence) = walking.await.expect("the walk thread does not panic");
            walked.refuse(input.refuses);
            let t = triage(input.state, input.job, input.scope, trust && !deep, walked)?;
            let rehashed = deep && input.scope.is_all() && input.record_fingerprint;
            let mut rest = t.walked;
            let files = std::mem::take(&mut rest.files).into_iter();
            let slices = FolderSlices {
                cfg: self.cfg.clone(),
                fence,
                scope: input.scope.clone(),
                files,
                rest,
                cached: t.cached.into_iter().collect(),
                from: Some(String::new()),
                deep,
                stop: input.stop.clone(),
                unchanged: t.unchanged,
                rehashed,
            };
            Ok(Survey::Folder(Box::new(slices)))
        }
        .boxed()
    }
}

struct WebSource {
    cfg: WebConfig,
    client: reqwest::Client,
}

impl Source for WebSource {
    fn scope(&self, _asked: &Scope) -> Scope {
        Scope::All
    }

    /// A web job re-plans every page it fetched.
    fn settles(&self) -> bool {
        false
    }

    fn survey<'a>(&'a self, input: ScanInput<'a>) -> BoxFuture<'a, Result<Survey, StateError>> {
        async move {
            let cached = input.state.load_items_in(input.job, input.scope)?;
            let known = known_facts(&cached);
            let in_sync: HashSet<String> = cached
                .values()
                .filter(|c| {
                    c.present && c.facts.as_ref().map(|f| &f.hash) == c.pushed_hash.as_ref()
                })
                .map(|c| c.key.clone())
                .collect();
            let fetched = web::scan(&self.client, &self.cfg, &known, &in_sync, input.refuses).await;
            let scanned = Scanned {
                scan: fetched.scan,
                cached,
                content: Box::new(Downloaded(fetched.bodies)),
            };
            Ok(Survey::Whole(Some(Box::new((
                input.scope.clone(),
                scanned,
            )))))
        }
        .boxed()
    }
}

fn known_facts(cached: &HashMap<String, CachedItem>) -> HashMap<String, KnownFacts> {
    cached
        .iter()
        .filter_map(|(k, c)| c.facts.clone().map(|f| (k.clone(), f)))
        .collect()
}
