//! One poll of a repository, through the generic seam: fetch (first, in
//! `unavailable`, so that a remote that cannot be read or a ref that
//! vanished makes the job unavailable before anything else is done), then
//! either nothing (the ref stands where the last converged pass left it)
//! or the tree listed as (path, blob id) and handed to `source::sliced`,
//! which reads only the blobs whose id is not the one recorded.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use gix::ObjectId;
use serde::{Deserialize, Serialize};

use super::config::{Auth, GitConfig};
use super::repo::{self, EntryKind, Fetched, TreeEntry};
use crate::secret::Secret;
use crate::sink::redact::Redactor;
use crate::sink::{ErrorClass, SinkError};
use crate::source::{
    front_matter, sliced, Content, Listed, Observed, ReadChanged, Recorded, ScanInput, ScanResult,
    Scanned, Scope, Skipped, Source, Stamped, Survey, Trust,
};
use crate::state::StateError;

/// The kind's `Source`, with the cache opened and the token read.
pub fn open(cfg: &GitConfig) -> Result<Box<dyn Source>, String> {
    let token = match &cfg.auth {
        Auth::Token { token, .. } => Some(
            token
                .load()
                .map_err(|e| format!("{e} ({})", cfg.places.credential))?,
        ),
        _ => None,
    };
    let redact = Arc::new(match &token {
        Some(t) => Redactor::new(&[t]),
        None => Redactor::new(&[]),
    });
    let repo = Arc::new(repo::cache(cfg)?);
    let listing_settings = blake3::hash(
        format!(
            "{:?}",
            (
                &cfg.follow,
                &cfg.path,
                cfg.filter.patterns(),
                cfg.max_file_size,
                &cfg.web_url
            )
        )
        .as_bytes(),
    )
    .to_hex()[..16]
        .to_owned();
    Ok(Box::new(GitSource {
        listing_settings,
        cfg: Arc::new(cfg.clone()),
        token,
        redact,
        repo,
        fetched: Mutex::default(),
    }))
}

struct GitSource {
    cfg: Arc<GitConfig>,
    /// A digest of the settings a listing depends on, recorded with the
    /// commit: a commit listed under other settings proves nothing.
    listing_settings: String,
    token: Option<Secret>,
    redact: Arc<Redactor>,
    repo: Arc<gix::ThreadSafeRepository>,
    /// What `unavailable` fetched, for the survey that follows it.
    fetched: Mutex<Option<Fetched>>,
}

impl GitSource {
    /// Fetches the followed ref; `Err` says why the job is unavailable,
    /// naming the setting and where it is.
    async fn fetch(&self) -> Result<Fetched, String> {
        let (repo, cfg) = (self.repo.clone(), self.cfg.clone());
        let token = self.token.as_ref().map(|t| t.expose().to_owned());
        let done = tokio::task::spawn_blocking(move || {
            let repo = repo.to_thread_local();
            let fetched = repo::fetch(&repo, &cfg, token.as_deref(), &AtomicBool::new(false))?;
            // A folder that is not in the tree is a mistyped `path` or one
            // moved away: never an emptied folder. Looked up, not walked:
            // a poll whose ref did not move reads no tree.
            repo::folder_tree(&repo, fetched.commit, &cfg.path).map(|_| fetched)
        })
        .await
        .unwrap_or_else(|e| Err(format!("the fetch stopped: {e}")));
        done.map_err(|why| {
            let place = if why.starts_with("the remote has no") {
                &self.cfg.places.follow
            } else if why.starts_with("the folder") {
                &self.cfg.places.path
            } else if why.contains("HTTP 401") {
                &self.cfg.places.credential
            } else {
                &self.cfg.places.url
            };
            let why: String = why
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect();
            self.redact.text(&format!(
                "{} ({}) cannot be read: {why} ({place}); nothing is taken for deleted",
                self.cfg.url,
                self.cfg.follow.shown()
            ))
        })
    }

    fn fetched(&self) -> std::sync::MutexGuard<'_, Option<Fetched>> {
        self.fetched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tree of `at` below the job's folder.
    async fn list(&self, at: ObjectId) -> Result<Vec<TreeEntry>, String> {
        let (repo, folder) = (self.repo.clone(), self.cfg.path.clone());
        tokio::task::spawn_blocking(move || repo::list(&repo.to_thread_local(), at, &folder))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
    }
}

impl Source for GitSource {
    /// A commit is read whole.
    fn scope(&self, _asked: &Scope) -> Scope {
        Scope::All
    }

    /// A file found in sync is skipped while its blob id holds.
    fn settles(&self) -> bool {
        true
    }

    fn unavailable(&self) -> BoxFuture<'_, Option<String>> {
        async move {
            match self.fetch().await {
                Ok(fetched) => {
                    *self.fetched() = Some(fetched);
                    None
                }
                Err(why) => Some(why),
            }
        }
        .boxed()
    }

    fn survey<'a>(&'a self, input: ScanInput<'a>) -> BoxFuture<'a, Result<Survey, StateError>> {
        async move {
            let taken = self.fetched().take();
            let fetched = match taken {
                Some(f) => f,
                None => match self.fetch().await {
                    Ok(f) => f,
                    Err(why) => return Ok(unlisted(&input, why, self.nothing())),
                },
            };
            let commit = fetched.commit.to_string();
            // What a listing at this commit depends on besides the commit:
            // other settings list (or stamp) other entries.
            let mark = format!("{commit} {}", self.listing_settings);
            let settled =
                input
                    .state
                    .plan_fingerprint(input.job, input.fingerprint, input.record_fingerprint)?;
            if settled && !input.checksum {
                if let Some(files) = input.state.converged_at_mark(input.job, &mark)? {
                    tracing::debug!(job = input.job, %commit, "the ref did not move since the last converged pass");
                    return Ok(still(files, self.nothing()));
                }
            }
            let entries = match self.list(fetched.commit).await {
                Ok(entries) => entries,
                Err(why) => {
                    let why = self.redact.text(&format!("{}: {why}", self.cfg.url));
                    return Ok(unlisted(&input, why, self.nothing()));
                }
            };
            let listed = listed(&self.cfg, entries);
            if input.record_fingerprint {
                let files = listed.entries.len() as u64;
                input.state.record_source_mark(input.job, &mark, files)?;
            }
            let reader = BlobReader {
                repo: self.repo.clone(),
                facts: Arc::new(Facts::of(&self.cfg, &fetched)),
                max: self.cfg.max_file_size,
                redact: self.redact.clone(),
                at: Some(Arc::new((fetched.commit, self.cfg.path.clone()))),
                bodies: Arc::default(),
            };
            let trust = Trust {
                settled,
                deep: input.checksum,
            };
            sliced(&input, trust, listed, reader)
        }
        .boxed()
    }
}

impl GitSource {
    /// Content for a poll that lists nothing: it has nothing to upload.
    fn nothing(&self) -> Box<dyn Content + Send + Sync> {
        Box::new(Blobs {
            repo: self.repo.clone(),
            at: None,
            bodies: HashMap::new(),
            max: self.cfg.max_file_size,
        })
    }
}

/// A poll whose ref stands where the last converged pass left it: the
/// tree is not listed, the `files` the listing at that commit found all
/// stand, nothing is planned.
fn still(files: u64, content: Box<dyn Content + Send + Sync>) -> Survey {
    Survey::Whole(Some(Box::new((
        Scope::All,
        Scanned {
            scan: ScanResult {
                unchanged: files as usize,
                ..ScanResult::default()
            },
            cached: HashMap::new(),
            content,
        },
    ))))
}

/// A poll that could not list the tree: reported, and every record
/// protected.
fn unlisted(input: &ScanInput, why: String, content: Box<dyn Content + Send + Sync>) -> Survey {
    tracing::warn!(job = input.job, "{why}");
    Survey::Whole(Some(Box::new((
        Scope::All,
        Scanned {
            scan: ScanResult {
                skipped: vec![Skipped {
                    path: String::new(),
                    reason: why,
                }],
                protected: vec![String::new()],
                ..ScanResult::default()
            },
            cached: HashMap::new(),
            content,
        },
    ))))
}

/// One file of the tree as the seam takes it.
pub struct GitEntry {
    key: String,
    blob: ObjectId,
}

impl Stamped for GitEntry {
    fn key(&self) -> &str {
        &self.key
    }

    /// The row keeps the blob id in its `validator`, beside the facts.
    fn stamped_as(&self, recorded: &impl Recorded) -> bool {
        Kept::parse(recorded.tag())
            .and_then(|kept| ObjectId::from_hex(kept.blob.as_bytes()).ok())
            .is_some_and(|blob| blob == self.blob)
    }
}

/// The entries the job mirrors: links and submodules left out and reported (a link is never followed),
/// as are paths the filters leave out silently.
fn listed(cfg: &GitConfig, entries: Vec<TreeEntry>) -> Listed<GitEntry> {
    let mut listed = Listed::default();
    for entry in entries {
        if !cfg.filter.selects(&entry.key) {
            continue;
        }
        match entry.kind {
            EntryKind::File => {
                listed.entries.push(GitEntry {
                    key: entry.key,
                    blob: entry.blob,
                });
            }
            EntryKind::Link => listed.skip(
                &entry.key,
                "a symbolic link in the repository: never followed; exclude it to silence this"
                    .to_owned(),
            ),
            EntryKind::Submodule => listed.skip(
                &entry.key,
                "a submodule (another repository): not mirrored; exclude it to silence this"
                    .to_owned(),
            ),
        }
    }
    listed.drop_unicode_twins();
    listed
}

/// What a read of a blob records beside its hash (the row's `validator`):
/// its id, the stamp, and the facts the metadata mapping may name.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Kept {
    blob: String,
    commit: String,
    commit_time: i64,
    author: String,
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    web_url: Option<String>,
}

impl Kept {
    fn parse(tag: Option<&str>) -> Option<Kept> {
        serde_json::from_str(tag?).ok()
    }
}

/// The facts of the commit this poll read at.
struct Facts {
    commit: String,
    time: i64,
    author: String,
    git_ref: String,
    web_url: Option<String>,
    /// The job's folder in the repository, for `{path}`.
    folder: String,
}

impl Facts {
    fn of(cfg: &GitConfig, fetched: &Fetched) -> Facts {
        Facts {
            commit: fetched.commit.to_string(),
            time: fetched.time,
            author: fetched.author.clone(),
            git_ref: cfg.follow.remote(),
            web_url: cfg.web_url.clone(),
            folder: cfg.path.clone(),
        }
    }

    fn kept(&self, key: &str, blob: ObjectId) -> Kept {
        Kept {
            blob: blob.to_string(),
            commit: self.commit.clone(),
            commit_time: self.time,
            author: self.author.clone(),
            git_ref: self.git_ref.clone(),
            web_url: self.web_url.as_ref().map(|t| {
                t.replace("{commit}", &self.commit)
                    .replace("{path}", &format!("{}{key}", self.folder))
            }),
        }
    }
}

/// Reads a slice's changed blobs from the cache, hashed; the bytes wait
/// in `bodies` for that slice's push.
struct BlobReader {
    repo: Arc<gix::ThreadSafeRepository>,
    facts: Arc<Facts>,
    max: u64,
    redact: Arc<Redactor>,
    /// The commit listed and the job's folder: an upload owed from an
    /// earlier poll reads the blob its key has there now.
    at: Option<Arc<(ObjectId, String)>>,
    bodies: Arc<Mutex<HashMap<String, Bytes>>>,
}

impl ReadChanged for BlobReader {
    type Entry = GitEntry;

    fn read(&self, entries: Vec<GitEntry>) -> BoxFuture<'static, ScanResult> {
        let (repo, facts, max) = (self.repo.clone(), self.facts.clone(), self.max);
        let (bodies, redact) = (self.bodies.clone(), self.redact.clone());
        async move {
            let read = tokio::task::spawn_blocking(move || {
                let repo = repo.to_thread_local();
                let mut scan = ScanResult::default();
                let mut read = HashMap::new();
                for entry in entries {
                    match repo::read(&repo, entry.blob, max) {
                        Ok(body) => {
                            let observed = observe(&mut scan, &facts, &entry, &body);
                            read.insert(entry.key, Bytes::from(body));
                            scan.items.push(observed);
                        }
                        Err(reason) => {
                            let reason = redact.text(&reason);
                            tracing::warn!(key = %entry.key, %reason, "skipped");
                            scan.protected.push(entry.key.clone());
                            scan.skipped.push(Skipped {
                                path: entry.key,
                                reason,
                            });
                        }
                    }
                }
                (scan, read)
            })
            .await;
            match read {
                Ok((scan, read)) => {
                    *bodies.lock().unwrap_or_else(|p| p.into_inner()) = read;
                    scan
                }
                Err(e) => ScanResult {
                    skipped: vec![Skipped {
                        path: String::new(),
                        reason: format!("reading the repository stopped: {e}"),
                    }],
                    protected: vec![String::new()],
                    ..ScanResult::default()
                },
            }
        }
        .boxed()
    }

    fn content(&self) -> Box<dyn Content + Send + Sync> {
        Box::new(Blobs {
            repo: self.repo.clone(),
            at: self.at.clone(),
            bodies: std::mem::take(&mut *self.bodies.lock().unwrap_or_else(|p| p.into_inner())),
            max: self.max,
        })
    }
}

/// What one read found: the file observed, with its blob and facts kept.
fn observe(scan: &mut ScanResult, facts: &Facts, entry: &GitEntry, body: &[u8]) -> Observed {
    scan.hashed_files += 1;
    scan.hashed_bytes += body.len() as u64;
    let kept = facts.kept(&entry.key, entry.blob);
    Observed {
        key: entry.key.clone(),
        size: body.len() as u64,
        mtime_ns: facts.time.saturating_mul(1_000_000_000),
        identity: 0,
        hash: crate::source::folder::hash_bytes(body),
        front_matter: front_matter::is_markdown(&entry.key)
            .then(|| {
                front_matter::read(
                    &entry.key,
                    &body[..body.len().min(front_matter::HEAD_BYTES)],
                )
            })
            .flatten(),
        rehashed: true,
        racy: false,
        validator: serde_json::to_string(&kept).ok(),
    }
}

/// What a push uploads: the bytes its slice read, or (an upload owed from
/// an earlier poll, whose blob did not move since) the blob read now.
struct Blobs {
    repo: Arc<gix::ThreadSafeRepository>,
    /// As `BlobReader::at`; `None` when the poll listed nothing.
    at: Option<Arc<(ObjectId, String)>>,
    bodies: HashMap<String, Bytes>,
    max: u64,
}

impl Content for Blobs {
    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes, SinkError>> {
        async move {
            if let Some(body) = self.bodies.get(key) {
                return Ok(body.clone());
            }
            let unreadable = |why: String| {
                SinkError::local(
                    ErrorClass::Transient,
                    "unreadable",
                    format!("{key}: {why}; the next poll reads it again"),
                )
            };
            let Some(at) = self.at.clone() else {
                return Err(unreadable("this poll listed no tree".to_owned()));
            };
            let (repo, max, key) = (self.repo.clone(), self.max, key.to_owned());
            tokio::task::spawn_blocking(move || {
                let repo = repo.to_thread_local();
                let blob = repo::find(&repo, at.0, &format!("{}{key}", at.1))?;
                repo::read(&repo, blob, max)
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
            .map(Bytes::from)
            .map_err(unreadable)
        }
        .boxed()
    }
}
