//! File-system watching with inotify, feeding touched paths into
//! [`Pending`]. The watcher only says *where* to look; what changed is
//! decided by re-scanning those paths, so a lost or reordered event can at
//! worst delay a change, never corrupt one.
//!
//! It talks to inotify directly (the `inotify` crate, which `notify` wraps
//! on Linux) because it must choose what to ask the kernel for:
//! - no IN_OPEN or IN_CLOSE_NOWRITE: kbsync's own reads (a full pass opens
//!   every folder and hashes files) must not flood the event queue;
//! - a watch per folder that the scan would enter, and only those: hidden,
//!   ignored and excluded folders (a `node_modules`) get none, and a
//!   symlink to a folder is followed only with `follow_symlinks`, and only
//!   when the folder is inside the root;
//! - the root itself and its parent: a root moved, deleted or replaced
//!   (`mv new root`, a symlink swapped with `ln -sfn`) is noticed and the
//!   job re-armed on what is there now.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::Notify;

use super::pending::Pending;
use crate::config::Config;
use crate::source::fence::{Fence, Resolved};
use crate::source::scope::key_under;
use crate::source::{Trigger, WatchSpec};

/// What the watcher task and the daemon loop share.
#[derive(Default)]
pub struct Shared {
    pub pending: Mutex<Pending>,
    /// Woken on every change to `pending`.
    pub wake: Notify,
}

impl Shared {
    pub fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Events on folders kbsync mirrors. Reads are not among them.
const FOLDER_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MODIFY)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::ATTRIB)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::ONLYDIR);

/// On a root's parent: only the root's own name coming and going matters.
const PARENT_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ONLYDIR);

/// One watched job's root as it was armed.
struct Root {
    job: String,
    spec: WatchSpec,
    /// The file (device, inode) the root path led to: when it leads to
    /// another, the root was replaced.
    armed_on: Option<(u64, u64)>,
}

/// A watched folder: which job, and its path under the configured root.
#[derive(Clone)]
enum Watched {
    Folder {
        root: usize,
        path: PathBuf,
    },
    /// The parent of root `root`, for its name.
    Parent {
        root: usize,
    },
}

struct Table {
    roots: Vec<Root>,
    wds: HashMap<WatchDescriptor, Watched>,
    avoid: Vec<PathBuf>,
}

/// The running watcher; dropping it stops the task and every watch.
pub struct Watcher {
    table: Arc<Mutex<Table>>,
    watches: Watches,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching every folder job's root. Problems (no inotify, watch
/// limit reached) are logged and leave the affected jobs on periodic full
/// reconciles; they do not stop the service.
pub fn start(config: &Config, avoid: &[PathBuf], shared: Arc<Shared>) -> Option<Watcher> {
    let inotify = match Inotify::init() {
        Ok(i) => i,
        Err(e) => {
            tracing::error!("cannot watch folders ({e}); changes are picked up by the periodic full reconcile only");
            return None;
        }
    };
    let watches = inotify.watches();
    let roots = config
        .jobs
        .iter()
        .filter_map(|j| match j.source.trigger() {
            Trigger::Watch(spec) => Some(Root {
                job: j.name.clone(),
                spec,
                armed_on: None,
            }),
            Trigger::Poll(_) | Trigger::PassesOnly => None,
        })
        .collect();
    let table = Arc::new(Mutex::new(Table {
        roots,
        wds: HashMap::new(),
        avoid: avoid.to_vec(),
    }));
    let stream = match inotify.into_event_stream(vec![0u8; 64 * 1024]) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot read file events ({e}); changes are picked up by the periodic full reconcile only");
            return None;
        }
    };
    let task = {
        let (table, shared, mut watches) = (table.clone(), shared.clone(), watches.clone());
        tokio::spawn(async move {
            let mut stream = stream;
            while let Some(event) = stream.next().await {
                let now = Instant::now();
                let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
                match event {
                    Ok(e) => on_event(
                        &mut t,
                        &mut watches,
                        &shared,
                        e.wd,
                        e.mask,
                        e.name.as_deref(),
                        now,
                    ),
                    Err(e) => {
                        tracing::warn!("reading file events failed ({e}); rescanning everything");
                        let mut pending = shared.pending();
                        for r in &t.roots {
                            pending.rescan(&r.job, now);
                        }
                    }
                }
                drop(t);
                shared.wake.notify_one();
            }
        })
    };
    let w = Watcher {
        table,
        watches,
        shared,
        task,
    };
    let count = w.table.lock().map(|t| t.roots.len()).unwrap_or(0);
    for i in 0..count {
        w.arm(i);
    }
    Some(w)
}

impl Watcher {
    /// At each full pass: a root whose path now leads to another folder
    /// (moved away and replaced, or a symlink pointed elsewhere) is watched
    /// anew. Returns the jobs re-armed.
    pub fn check_roots(&self) -> Vec<String> {
        let count = self.table.lock().map(|t| t.roots.len()).unwrap_or(0);
        let mut rearmed = Vec::new();
        for i in 0..count {
            let (job, armed_on, now_on) = {
                let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
                let r = &t.roots[i];
                (r.job.clone(), r.armed_on, identity(&r.spec.root))
            };
            if armed_on != now_on {
                tracing::warn!(%job, "the folder's root was replaced; watching the new one");
                self.arm(i);
                rearmed.push(job);
            }
        }
        rearmed
    }

    /// Watches in use, for `status` and the logs.
    pub fn watch_count(&self) -> usize {
        self.table.lock().map(|t| t.wds.len()).unwrap_or(0)
    }

    /// (Re)arms root `i`: drops its watches, then watches its parent and
    /// every folder the scan would enter.
    fn arm(&self, i: usize) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut watches = self.watches.clone();
        unwatch(
            &mut t,
            &mut watches,
            |w| matches!(w, Watched::Folder { root, .. } | Watched::Parent { root } if *root == i),
        );
        let root_path = t.roots[i].spec.root.clone();
        let job = t.roots[i].job.clone();
        t.roots[i].armed_on = identity(&root_path);
        if let Some(parent) = root_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(wd) = watches.add(parent, PARENT_MASK) {
                t.wds.insert(wd, Watched::Parent { root: i });
            }
        }
        if t.roots[i].armed_on.is_none() {
            tracing::warn!(%job, root = %root_path.display(), "the folder's root is missing; it is watched for once it is back");
            return;
        }
        warn_if_network(&job, &root_path);
        let added = add_tree(&mut t, &mut watches, i, &root_path);
        tracing::info!(%job, root = %root_path.display(), watches = added, "watching");
        self.shared.pending().rescan(&job, Instant::now());
    }
}

/// Watches `dir` and the folders under it that the scan would enter.
/// Returns how many watches were added.
fn add_tree(t: &mut Table, watches: &mut Watches, root: usize, dir: &Path) -> usize {
    let spec = t.roots[root].spec.clone();
    let job = t.roots[root].job.clone();
    let mut added = 0;
    // A followed link to a folder outside the root is not entered by the
    // scan: neither it nor anything under it is watched.
    let fence = Fence::new(&spec.root, Resolved::default());
    let mut outside: Vec<PathBuf> = Vec::new();
    for entry in spec.walk_from(dir).build() {
        let Ok(entry) = entry else { continue };
        // The start may be a symlink to a folder (a root such as
        // `current -> releases/v2`): watched as the folder it leads to.
        let is_dir = entry.file_type().is_some_and(|ft| ft.is_dir())
            || (entry.depth() == 0 && entry.path().is_dir());
        if !is_dir || outside.iter().any(|o| entry.path().starts_with(o)) {
            continue;
        }
        if entry.depth() > 0 && entry.path_is_symlink() && fence.link_target(entry.path()).is_err()
        {
            outside.push(entry.path().to_owned());
            continue;
        }
        match watches.add(entry.path(), FOLDER_MASK) {
            Ok(wd) => {
                t.wds.insert(
                    wd,
                    Watched::Folder {
                        root,
                        path: entry.path().to_owned(),
                    },
                );
                added += 1;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                tracing::error!(%job, "the inotify watch limit is reached, so some folders are not watched: changes there are only picked up by the periodic full reconcile. Raise the limit with `sysctl fs.inotify.max_user_watches=1048576` (persist it in /etc/sysctl.d/)");
                break;
            }
            // Gone between the walk and the watch, or unreadable: the scan
            // reports what matters.
            Err(_) => {}
        }
    }
    added
}

/// Removes the watches `which` picks, from the kernel and the table.
fn unwatch(t: &mut Table, watches: &mut Watches, which: impl Fn(&Watched) -> bool) {
    let gone: Vec<WatchDescriptor> = t
        .wds
        .iter()
        .filter(|(_, w)| which(w))
        .map(|(wd, _)| wd.clone())
        .collect();
    for wd in gone {
        t.wds.remove(&wd);
        // Already gone when its folder was deleted: nothing to undo.
        let _ = watches.remove(wd);
    }
}

/// Handles one inotify event.
fn on_event(
    t: &mut Table,
    watches: &mut Watches,
    shared: &Shared,
    wd: WatchDescriptor,
    mask: EventMask,
    name: Option<&OsStr>,
    now: Instant,
) {
    if mask.contains(EventMask::Q_OVERFLOW) {
        crate::monitor::inotify_overflow();
        tracing::warn!("the kernel dropped file events (its queue overflowed while files changed faster than they were read): rescanning everything; `sysctl fs.inotify.max_queued_events` sets the queue's length");
        let mut pending = shared.pending();
        for r in &t.roots {
            pending.rescan(&r.job, now);
        }
        return;
    }
    let Some(watched) = t.wds.get(&wd).cloned() else {
        return;
    };
    if mask.contains(EventMask::IGNORED) {
        t.wds.remove(&wd);
        return;
    }
    match watched {
        Watched::Parent { root } => {
            let r = &t.roots[root];
            if name.is_some_and(|n| Some(n) == r.spec.root.file_name()) {
                tracing::info!(job = %r.job, "the folder's root itself changed; it is checked at once");
                let job = r.job.clone();
                rearm_if_replaced(t, watches, shared, root, &job, now);
            }
        }
        Watched::Folder { root, path } => {
            let job = t.roots[root].job.clone();
            let root_path = t.roots[root].spec.root.clone();
            if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) {
                if path == root_path {
                    rearm_if_replaced(t, watches, shared, root, &job, now);
                }
                return;
            }
            let Some(name) = name else { return };
            let full = path.join(name);
            if t.avoid.contains(&full) {
                return;
            }
            let Some(key) = key_under(&root_path, &full) else {
                return;
            };
            if mask.contains(EventMask::ISDIR) {
                if mask.intersects(EventMask::MOVED_FROM | EventMask::DELETE) {
                    // Its watches now point at a folder elsewhere, or none.
                    unwatch(
                        t,
                        watches,
                        |w| matches!(w, Watched::Folder { path: p, .. } if p.starts_with(&full)),
                    );
                }
                if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
                    add_tree(t, watches, root, &full);
                }
            }
            shared.pending().touch(&job, key, now);
        }
    }
}

/// The root's path may lead somewhere else now: watch what is there, and
/// rescan the job either way.
fn rearm_if_replaced(
    t: &mut Table,
    watches: &mut Watches,
    shared: &Shared,
    root: usize,
    job: &str,
    now: Instant,
) {
    let path = t.roots[root].spec.root.clone();
    let now_on = identity(&path);
    if now_on != t.roots[root].armed_on {
        unwatch(
            t,
            watches,
            |w| matches!(w, Watched::Folder { root: r, .. } if *r == root),
        );
        t.roots[root].armed_on = now_on;
        if now_on.is_some() {
            let added = add_tree(t, watches, root, &path);
            tracing::warn!(%job, watches = added, "the folder's root was replaced; watching the new one");
        } else {
            tracing::warn!(%job, root = %path.display(), "the folder's root was moved or deleted; watching for its return");
        }
    }
    shared.pending().rescan(job, now);
}

/// The (device, inode) a path leads to, symlinks followed.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

/// inotify sees only changes made through this machine's kernel: on a
/// network share, edits made elsewhere go unseen until a full pass.
fn warn_if_network(job: &str, root: &Path) {
    if let Some(kind) = network_fs(root) {
        tracing::warn!(%job, root = %root.display(), "the root is on a network filesystem ({kind}): changes made on other machines are not seen by inotify, only by full passes (every [daemon] network_reconcile_secs)");
    }
}

/// The kind of network filesystem `path` is on, if it is on one.
pub fn network_fs(path: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    network_kind(st.f_type as u64)
}

/// Filesystem magic numbers (statfs(2)) of network filesystems.
fn network_kind(magic: u64) -> Option<&'static str> {
    match magic {
        0x6969 => Some("nfs"),
        0x517b => Some("smb"),
        0xff53_4d42 => Some("cifs"),
        0xfe53_4d42 => Some("smb2"),
        0x564c => Some("ncp"),
        0x7375_7245 => Some("coda"),
        0x6b41_4653 => Some("afs"),
        0x0102_1997 => Some("9p"),
        0x6573_5546 => Some("fuse"),
        0x0083_0906 => Some("glusterfs"),
        0x00c3_6400 => Some("ceph"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_not_asked_for() {
        // A full pass opens every folder and reads changed files: events
        // for that would fill the kernel's queue on large trees.
        for read in [WatchMask::OPEN, WatchMask::ACCESS, WatchMask::CLOSE_NOWRITE] {
            assert!(!FOLDER_MASK.intersects(read));
            assert!(!PARENT_MASK.intersects(read));
        }
    }

    #[test]
    fn network_filesystems_are_told_from_local_ones() {
        assert_eq!(network_kind(0x6969), Some("nfs"));
        assert_eq!(network_kind(0xff53_4d42), Some("cifs"));
        assert_eq!(network_kind(0xef53), None, "ext4");
        assert_eq!(network_kind(0x0102_1994), None, "tmpfs");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(network_fs(dir.path()), None);
    }
}
