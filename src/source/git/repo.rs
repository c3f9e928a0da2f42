//! The repository, through gitoxide in-process: a bare cache fetched into
//! (the followed ref only, no tags, into kbsync's own ref), the tree of
//! the fetched commit listed as (path, blob id), and blobs read from the
//! object database. No working tree and no `git` program. Every call
//! here blocks: the source runs them on tokio's blocking threads.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use gix::bstr::ByteSlice;
use gix::ObjectId;

use super::config::{Auth, GitConfig};

/// The commit a fetch found for the followed ref.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub commit: ObjectId,
    /// Unix seconds of the commit.
    pub time: i64,
    pub author: String,
}

/// One entry of the listed tree, below the job's folder.
#[derive(Debug, Clone)]
pub struct TreeEntry {
    pub key: String,
    pub blob: ObjectId,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    /// A symbolic link: its target is text in the repository, never
    /// followed.
    Link,
    /// A submodule: a commit of another repository.
    Submodule,
}

/// Opens the cache, making it when missing. A cache that cannot be
/// opened holds nothing that is not upstream: it is made anew.
pub fn cache(cfg: &GitConfig) -> Result<gix::ThreadSafeRepository, String> {
    let options = || {
        let mut overrides = vec![
            // The cache is kbsync's own: no hooks, no reflogs, no gc.
            "core.logAllRefUpdates=false".to_owned(),
            "gc.auto=0".to_owned(),
            "committer.name=kbsync".to_owned(),
            "committer.email=kbsync@localhost".to_owned(),
        ];
        if let Auth::SshKey(key) = &cfg.auth {
            overrides.push(format!(
                "core.sshCommand=ssh -i '{}' -o IdentitiesOnly=yes -o BatchMode=yes",
                key.display()
            ));
        }
        gix::open::Options::isolated().config_overrides(overrides)
    };
    match gix::ThreadSafeRepository::open_opts(&cfg.cache, options()) {
        Ok(repo) => return Ok(repo),
        Err(e) if cfg.cache.exists() => {
            tracing::warn!(cache = %cfg.cache.display(), error = %e, "the git cache cannot be opened: making it anew");
            std::fs::remove_dir_all(&cfg.cache)
                .map_err(|e| format!("{}: {e}", cfg.cache.display()))?;
        }
        Err(_) => {}
    }
    make(&cfg.cache)?;
    gix::ThreadSafeRepository::open_opts(&cfg.cache, options())
        .map_err(|e| format!("the git cache {}: {e}", cfg.cache.display()))
}

fn make(path: &Path) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    gix::ThreadSafeRepository::init(
        path,
        gix::create::Kind::Bare,
        gix::create::Options::default(),
    )
    .map(drop)
    .map_err(|e| format!("the git cache {}: {e}", path.display()))
}

/// Fetches the followed ref into the cache and peels it to its commit.
/// `Err`: the remote could not be reached or read, or does not have the
/// ref (a branch deleted is never an empty tree).
pub fn fetch(
    repo: &gix::Repository,
    cfg: &GitConfig,
    token: Option<&str>,
    stop: &AtomicBool,
) -> Result<Fetched, String> {
    let (remote_ref, local_ref) = (cfg.follow.remote(), cfg.follow.local());
    let spec = format!("+{remote_ref}:{local_ref}");
    let remote = repo
        .remote_at(cfg.url.as_str())
        .and_then(|r| r.with_refspecs([spec.as_str()], gix::remote::Direction::Fetch))
        .map_err(chain)?
        .with_fetch_tags(gix::remote::fetch::Tags::None);
    let mut connection = remote
        .connect(gix::remote::Direction::Fetch)
        .map_err(chain)?;
    // Only the configured token is ever offered: never a helper, and
    // never a prompt (a service has no terminal to ask on).
    let login = match (token, &cfg.auth) {
        (Some(token), Auth::Token { username, .. }) => Some((username.clone(), token.to_owned())),
        _ => None,
    };
    {
        connection.set_credentials(move |action| {
            Ok(match (action, &login) {
                (gix::credentials::helper::Action::Get(ctx), Some((username, password))) => {
                    Some(gix::credentials::protocol::Outcome {
                        credentials: gix::sec::identity::Credentials::UsernamePassword {
                            username: username.clone(),
                            password: password.clone(),
                            oauth_refresh_token: None,
                        },
                        next: ctx.into(),
                    })
                }
                _ => None,
            })
        });
    }
    let outcome = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| {
            let why = chain(e);
            gone(&why, cfg).unwrap_or(why)
        })?
        .receive(gix::progress::Discard, stop)
        .map_err(|e| {
            let why = chain(e);
            gone(&why, cfg).unwrap_or(why)
        })?;
    let advertised = outcome
        .ref_map
        .mappings
        .iter()
        .find_map(|m| m.remote.as_id().map(ObjectId::from))
        .ok_or_else(|| format!("the remote has no {}", cfg.follow.shown()))?;
    let commit = repo
        .find_object(advertised)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| format!("{} does not lead to a commit: {e}", cfg.follow.shown()))?;
    let time = commit.time().map(|t| t.seconds).unwrap_or(0);
    let author = commit
        .author()
        .map(|a| a.name.to_str_lossy().into_owned())
        .unwrap_or_default();
    Ok(Fetched {
        commit: commit.id,
        time,
        author,
    })
}

/// Every entry of `commit`'s tree below `folder` (`""` or ending in `/`),
/// keyed by its path below it, in key order. `Err` when the folder is not
/// in the tree.
pub fn list(
    repo: &gix::Repository,
    commit: ObjectId,
    folder: &str,
) -> Result<Vec<TreeEntry>, String> {
    list_within(repo, commit, folder, MAX_ENTRIES)
}

/// `list`, refused past `max` entries (trees and files).
fn list_within(
    repo: &gix::Repository,
    commit: ObjectId,
    folder: &str,
    max: usize,
) -> Result<Vec<TreeEntry>, String> {
    let tree = folder_tree(repo, commit, folder)?;
    let mut capped = Capped {
        recorder: gix::traverse::tree::Recorder::default(),
        left: max,
        over: false,
    };
    let walked = tree.traverse().breadthfirst(&mut capped);
    if capped.over {
        return Err(format!(
            "the tree holds more than {max} entries, more than kbsync lists"
        ));
    }
    walked.map_err(chain)?;
    let mut entries: Vec<TreeEntry> = capped
        .recorder
        .records
        .into_iter()
        .filter_map(|r| {
            let kind = if r.mode.is_blob() {
                EntryKind::File
            } else if r.mode.is_link() {
                EntryKind::Link
            } else if r.mode.is_commit() {
                EntryKind::Submodule
            } else {
                return None;
            };
            Some(TreeEntry {
                key: r.filepath.to_str_lossy().into_owned(),
                blob: r.oid,
                kind,
            })
        })
        .collect();
    entries.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    Ok(entries)
}

/// The most entries a listed tree may hold, as for a bucket's listing: a
/// repository beyond it (a hostile one, made to exhaust memory) is not
/// listed, and its job protects every record.
const MAX_ENTRIES: usize = 10_000_000;

/// A recorder that stops the walk past `left` more entries.
struct Capped {
    recorder: gix::traverse::tree::Recorder,
    left: usize,
    over: bool,
}

impl Capped {
    fn took(&mut self) -> gix::traverse::tree::visit::Action {
        if self.left == 0 {
            self.over = true;
            return std::ops::ControlFlow::Break(());
        }
        self.left -= 1;
        std::ops::ControlFlow::Continue(true)
    }
}

impl gix::traverse::tree::Visit for Capped {
    fn pop_back_tracked_path_and_set_current(&mut self) {
        self.recorder.pop_back_tracked_path_and_set_current();
    }
    fn pop_front_tracked_path_and_set_current(&mut self) {
        self.recorder.pop_front_tracked_path_and_set_current();
    }
    fn push_back_tracked_path_component(&mut self, component: &gix::bstr::BStr) {
        self.recorder.push_back_tracked_path_component(component);
    }
    fn push_path_component(&mut self, component: &gix::bstr::BStr) {
        self.recorder.push_path_component(component);
    }
    fn pop_path_component(&mut self) {
        self.recorder.pop_path_component();
    }
    fn visit_tree(
        &mut self,
        entry: &gix::objs::tree::EntryRef<'_>,
    ) -> gix::traverse::tree::visit::Action {
        match self.took() {
            std::ops::ControlFlow::Continue(_) => self.recorder.visit_tree(entry),
            stop => stop,
        }
    }
    fn visit_nontree(
        &mut self,
        entry: &gix::objs::tree::EntryRef<'_>,
    ) -> gix::traverse::tree::visit::Action {
        match self.took() {
            std::ops::ControlFlow::Continue(_) => self.recorder.visit_nontree(entry),
            stop => stop,
        }
    }
}

/// The tree of `folder` (`""` or ending in `/`) in `commit`: looked up
/// by path, one tree object per level, none walked. `Err` when the folder
/// is not in the tree.
pub fn folder_tree<'r>(
    repo: &'r gix::Repository,
    commit: ObjectId,
    folder: &str,
) -> Result<gix::Tree<'r>, String> {
    let commit = repo.find_commit(commit).map_err(chain)?;
    let tree = commit.tree().map_err(chain)?;
    if folder.is_empty() {
        return Ok(tree);
    }
    let below = folder.trim_end_matches('/');
    let entry = tree
        .lookup_entry_by_path(below)
        .map_err(chain)?
        .filter(|e| e.mode().is_tree())
        .ok_or_else(|| format!("the folder {below:?} is not in the tree"))?;
    entry.object().map_err(chain)?.peel_to_tree().map_err(chain)
}

/// The blob at `path` in `commit`'s tree.
pub fn find(repo: &gix::Repository, commit: ObjectId, path: &str) -> Result<ObjectId, String> {
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(chain)?;
    tree.lookup_entry_by_path(path)
        .map_err(chain)?
        .filter(|e| e.mode().is_blob())
        .map(|e| e.object_id())
        .ok_or_else(|| format!("{path} is not in the tree"))
}

/// A blob's bytes, refused past `max` bytes before it is inflated.
pub fn read(repo: &gix::Repository, blob: ObjectId, max: u64) -> Result<Vec<u8>, String> {
    let header = repo.find_header(blob).map_err(chain)?;
    if header.size() > max {
        return Err(format!(
            "{} bytes is over max_file_size ({max} bytes)",
            header.size()
        ));
    }
    let mut object = repo.find_blob(blob).map_err(chain)?;
    Ok(object.take_data())
}

/// An error with its causes, outermost first: gitoxide's outer messages
/// ("Transport handshake failed") say little without them.
fn chain(e: impl std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// The server lists only the refs the refspec asks for: none means the
/// branch or tag is gone (never an empty tree).
/// A login asked for and not given (HTTP 401) is said as such.
fn gone(why: &str, cfg: &GitConfig) -> Option<String> {
    if why.contains("None of the refspec") {
        return Some(format!("the remote has no {}", cfg.follow.shown()));
    }
    why.contains("No credentials were returned").then(|| {
        match cfg.auth {
            Auth::Token { .. } => "the server refused the token (HTTP 401)",
            _ => "the server asks for a login (HTTP 401): set token_env, token_file or token_credential (https only)",
        }
        .to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository made by `git` with `files` files in two folders.
    fn repository(files: usize) -> (tempfile::TempDir, ObjectId) {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(dir.path())
                .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        git(&["init", "-q"]);
        std::fs::create_dir(dir.path().join("d")).unwrap();
        for i in 0..files {
            let folder = if i % 2 == 0 { "" } else { "d/" };
            std::fs::write(dir.path().join(format!("{folder}f{i}.md")), i.to_string()).unwrap();
        }
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "files"]);
        let head = git(&["rev-parse", "HEAD"]);
        (dir, ObjectId::from_hex(head.trim().as_bytes()).unwrap())
    }

    /// A tree past the bound is not listed at all: the job then protects
    /// every record instead of holding a hostile tree in memory.
    #[test]
    fn a_tree_past_the_bound_is_refused_whole() {
        let (dir, commit) = repository(6);
        let repo = gix::open(dir.path()).unwrap();
        // 6 files and the folder `d`: 7 entries.
        let all = list_within(&repo, commit, "", 7).unwrap();
        assert_eq!(all.len(), 6);
        let e = list_within(&repo, commit, "", 6).unwrap_err();
        assert!(e.contains("more than 6 entries"), "{e}");
        assert_eq!(list_within(&repo, commit, "d/", 3).unwrap().len(), 3);
    }
}
