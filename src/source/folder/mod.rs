//! Folder source: a parallel walk (the `ignore` crate, so ignore files work
//! as in git) that stats every file and hashes only those whose size or
//! modification time moved since the last scan.

mod config;
mod seam;

pub use config::{FolderConfig, RawFolder};

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use ignore::{WalkBuilder, WalkState};

use super::fence::Fence;
use super::scope::key_under;
use super::{front_matter, Listed, Observed, Recorded, ScanResult, Scope, Skipped, Stamped};

/// Timestamp granularity to allow for: about a jiffy on Linux local file
/// systems, 1 s on some network shares, 2 s on FAT.
const RACY_WINDOW_NS: i64 = 2_000_000_000;

enum Found {
    File(Stat),
    Skipped(Skipped, Option<String>),
}

/// A regular file as the walk's stat saw it. Kept small: a full walk of a
/// large tree holds one per file.
pub struct Stat {
    pub key: Box<str>,
    pub size: u64,
    pub mtime_ns: i64,
    pub identity: i64,
}

/// A file's stamp: size, mtime and identity. (Whether one recorded too
/// close to its scan is trusted is the folder's racy rule, recorded with
/// the read: see `read_one`.)
impl Stamped for Stat {
    fn key(&self) -> &str {
        &self.key
    }

    fn stamped_as(&self, recorded: &impl Recorded) -> bool {
        recorded.size() == Some(self.size)
            && recorded.mtime_ns() == Some(self.mtime_ns)
            && recorded.identity() == Some(self.identity)
    }
}

/// Which file a path names, beyond its size and mtime: device, inode and
/// ctime, hashed into one number. An edit that restores size and mtime
/// (`touch -r`, `cp -p`, `rsync -t`, unpacking an archive) still changes
/// the ctime (the kernel sets it on every change and no call can set it
/// back) or the inode (a new file renamed into place): git's rule. A
/// chmod changes it too, which costs a read, never an upload.
pub fn identity(meta: &std::fs::Metadata) -> i64 {
    use std::os::unix::fs::MetadataExt;
    // Mixed, not hashed cryptographically: it runs for every file of every
    // walk, and only has to differ when one of its parts does.
    let mut h = splitmix(meta.dev());
    for part in [meta.ino(), meta.ctime() as u64, meta.ctime_nsec() as u64] {
        h = splitmix(h ^ part);
    }
    // 0 means "not known".
    (h | 1) as i64
}

/// The splitmix64 finalizer: every input bit moves about half the output.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The walk's result: what exists, before anything is read.
pub struct Walked {
    pub listed: Listed<Stat>,
    /// When the walk began: files modified after this minus the racy
    /// window are hashed again next time.
    pub started_ns: i64,
}

/// What one walker thread found; handed over when the thread is done.
#[derive(Default)]
struct Findings {
    files: Vec<Stat>,
    skipped: Vec<(Skipped, Option<String>)>,
}

/// One walker thread's visitor: collects locally (no channel, no lock per
/// file) and sorts its share before handing it over, so the sorting runs
/// on every walker thread.
struct Visitor<'a> {
    cfg: &'a FolderConfig,
    fence: &'a Fence,
    found: Findings,
    done: &'a Mutex<Vec<Findings>>,
}

impl ignore::ParallelVisitor for Visitor<'_> {
    fn visit(&mut self, entry: Result<ignore::DirEntry, ignore::Error>) -> WalkState {
        let (found, next) = match entry {
            Ok(entry) => visit(self.cfg, self.fence, &entry),
            Err(err) => (Some(walk_error(&self.cfg.root, err)), WalkState::Continue),
        };
        match found {
            Some(Found::File(stat)) => self.found.files.push(stat),
            Some(Found::Skipped(s, protect)) => self.found.skipped.push((s, protect)),
            None => {}
        }
        next
    }
}

impl Drop for Visitor<'_> {
    fn drop(&mut self) {
        let mut found = std::mem::take(&mut self.found);
        found.files.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        if let Ok(mut done) = self.done.lock() {
            done.push(found);
        }
    }
}

struct Visitors<'a> {
    cfg: &'a FolderConfig,
    fence: &'a Fence,
    done: &'a Mutex<Vec<Findings>>,
}

impl<'s> ignore::ParallelVisitorBuilder<'s> for Visitors<'s> {
    fn build(&mut self) -> Box<dyn ignore::ParallelVisitor + 's> {
        Box::new(Visitor {
            cfg: self.cfg,
            fence: self.fence,
            found: Findings::default(),
            done: self.done,
        })
    }
}

/// A walk from `start` (the root, or a folder under it) that enters exactly
/// the folders a scan enters: hidden ones only with `include_hidden`,
/// symlinks only with `follow_symlinks`, never one the ignore files or an
/// `exclude` pattern leave out as a whole. The folder watcher arms watches
/// from it, so what is not scanned is not watched either.
pub fn walk_builder(cfg: &FolderConfig, start: &Path) -> WalkBuilder {
    let mut builder = WalkBuilder::new(start);
    builder
        .hidden(!cfg.include_hidden)
        .follow_links(cfg.follow_symlinks)
        .ignore(false)
        .git_global(false)
        .git_ignore(cfg.respect_gitignore)
        .git_exclude(cfg.respect_gitignore)
        .require_git(false)
        .parents(cfg.respect_gitignore);
    if let Some(name) = &cfg.ignore_file {
        builder.add_custom_ignore_filename(name);
    }
    let root = cfg.root.clone();
    let excluded = cfg.exclude.clone();
    builder.filter_entry(move |entry| {
        entry.depth() == 0
            || !entry.file_type().is_some_and(|t| t.is_dir())
            || !excludes_dir(
                excluded.as_ref(),
                &key_under(&root, entry.path()).unwrap_or_default(),
            )
    });
    builder
}

/// Whether `exclude` leaves out everything under folder `key` (such as
/// `node_modules/**`): then the folder is not entered at all. Probed with
/// a child and a grandchild, so `docs/*` (children only) does not count.
fn excludes_dir(exclude: Option<&globset::GlobSet>, key: &str) -> bool {
    let Some(set) = exclude else { return false };
    !key.is_empty()
        && set.is_match(format!("{key}/\u{7f}"))
        && set.is_match(format!("{key}/\u{7f}/\u{7f}"))
}

/// Walks the part of `cfg.root` that `scope` selects and stats, in
/// parallel, without reading any file; `read_changed` then reads what
/// differs from the cache. What `fence` keeps out (links leading outside
/// the root, kbsync's own files) is reported as skipped.
///
/// A scoped walk still goes down from the root, pruning every folder that
/// does not lead to a scoped path, so the ignore files on the way apply
/// exactly as in a full scan.
pub fn walk(cfg: &FolderConfig, fence: &Fence, scope: &Scope) -> Walked {
    let started_ns = super::now_ns();
    let mut builder = walk_builder(cfg, &cfg.root);
    builder.threads(threads());
    if !scope.is_all() {
        let scope = Arc::new(scope.clone());
        let root = cfg.root.clone();
        let excluded = cfg.exclude.clone();
        builder.filter_entry(move |entry| {
            if entry.depth() == 0 {
                return true;
            }
            let key = key_under(&root, entry.path()).unwrap_or_default();
            if entry.file_type().is_some_and(|t| t.is_dir()) {
                scope.enters(&key) && !excludes_dir(excluded.as_ref(), &key)
            } else {
                scope.covers(&key)
            }
        });
    }

    let done = Mutex::new(Vec::new());
    builder.build_parallel().visit(&mut Visitors {
        cfg,
        fence,
        done: &done,
    });
    let mut listed = Listed::default();
    for found in done.into_inner().unwrap_or_default() {
        // Appending moves no key: a large vector grows in place.
        listed.entries.extend(found.files);
        for (s, protect) in found.skipped {
            listed.protected.extend(protect);
            listed.skipped.push(s);
        }
    }
    // The stable sort finds the threads' sorted runs and only merges them.
    listed.entries.sort_by(|a: &Stat, b| a.key.cmp(&b.key));
    listed.drop_unicode_twins();
    Walked { listed, started_ns }
}

/// Reads and hashes `to_read` (files the cache could not vouch for),
/// several at a time; `walk_started_ns` tells which were modified too
/// close to the walk to be trusted next time.
pub fn read_changed(
    cfg: &FolderConfig,
    to_read: Vec<Stat>,
    walk_started_ns: i64,
    stop: &AtomicBool,
) -> ScanResult {
    let mut result = ScanResult::default();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let read: std::sync::Mutex<Vec<Hashed>> = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads().min(to_read.len()) {
            scope.spawn(|| {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(stat) = to_read.get(i) else { break };
                    mine.push(read_one(cfg, stat, walk_started_ns, stop));
                    crate::progress::READING.one_done();
                }
                read.lock().expect("no panics while held").extend(mine);
            });
        }
    });
    for r in read.into_inner().expect("no panics while held") {
        match r {
            Hashed::Item(item) => {
                result.hashed_files += 1;
                result.hashed_bytes += item.size;
                result.items.push(item);
            }
            Hashed::Skipped(s, protect) => {
                result.protected.push(protect);
                result.skipped.push(s);
            }
        }
    }
    result
}

enum Hashed {
    Item(Observed),
    /// With the key to protect.
    Skipped(Skipped, String),
}

/// Reads and hashes one file the walk found.
fn read_one(cfg: &FolderConfig, stat: &Stat, walk_started_ns: i64, stop: &AtomicBool) -> Hashed {
    let path = cfg.root.join(&*stat.key);
    let skip = |reason: String| {
        Hashed::Skipped(
            Skipped {
                path: stat.key.to_string(),
                reason,
            },
            stat.key.to_string(),
        )
    };
    match hash_file(&path, stat.size, front_matter::is_markdown(&stat.key), stop) {
        Ok(FileRead { longer: true, .. }) => skip(format!(
            "holds more than the {} bytes its size says: still being written, or a special file (procfs, sysfs, FUSE) whose size is not its content; only that much is read, so it is left for the next scan",
            stat.size
        )),
        Ok(FileRead {
            hash,
            bytes: read,
            head,
            after,
            longer: false,
        }) => {
            // A file written while we read it (or replaced since the walk)
            // would pair one version's size with another's hash: leave it
            // for the next scan instead.
            if read != stat.size
                || after
                    .as_ref()
                    .map(|m| (m.len(), mtime_ns_of(m), identity(m)))
                    != Some((stat.size, stat.mtime_ns, stat.identity))
            {
                skip("changed while being read; will be picked up by the next scan".into())
            } else {
                Hashed::Item(Observed {
                    key: stat.key.to_string(),
                    size: stat.size,
                    mtime_ns: stat.mtime_ns,
                    identity: stat.identity,
                    hash,
                    front_matter: head
                        .as_deref()
                        .and_then(|head| front_matter::read(&stat.key, head)),
                    rehashed: true,
                    racy: stat.mtime_ns > walk_started_ns - RACY_WINDOW_NS,
                    validator: None,
                })
            }
        }
        Err(e) => skip(format!("cannot read: {e}")),
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// One entry of the walk: what it is, and whether to go into it (a
/// followed link to a folder outside the root is not entered).
fn visit(
    cfg: &FolderConfig,
    fence: &Fence,
    entry: &ignore::DirEntry,
) -> (Option<Found>, WalkState) {
    let Some(file_type) = entry.file_type() else {
        return (None, WalkState::Continue);
    };
    // With `follow_symlinks`, the type is the target's (the root itself
    // may be a link: it is followed wherever it points).
    let link = entry.path_is_symlink() && entry.depth() > 0;
    if file_type.is_dir() && !link {
        return (None, WalkState::Continue);
    }
    let key = match key_of(&cfg.root, entry.path()) {
        Ok(k) => k,
        Err(reason) => {
            let skipped = Skipped {
                path: entry.path().display().to_string(),
                reason,
            };
            return (Some(Found::Skipped(skipped, None)), WalkState::Continue);
        }
    };
    if file_type.is_dir() {
        return match fence.link_target(entry.path()) {
            Ok(_) => (None, WalkState::Continue),
            Err(reason) => (Some(fenced(&key, reason)), WalkState::Skip),
        };
    }
    let found = if matches(cfg, &key) {
        visit_file(cfg, fence, entry, key, link)
    } else {
        None
    };
    (found, WalkState::Continue)
}

/// A file (or a link, followed or not) the include and exclude patterns
/// select.
fn visit_file(
    cfg: &FolderConfig,
    fence: &Fence,
    entry: &ignore::DirEntry,
    key: String,
    link: bool,
) -> Option<Found> {
    let file_type = entry.file_type()?;
    if file_type.is_symlink() {
        // Only reached when links are not followed.
        tracing::debug!(%key, "symbolic link not followed");
        return None;
    }
    let target = if link {
        match fence.link_target(entry.path()) {
            Ok(target) => Some(target),
            Err(reason) => return Some(fenced(&key, reason)),
        }
    } else {
        None
    };
    if !file_type.is_file() {
        return Some(skip(
            &key,
            format!("not a regular file ({})", kind_of(&file_type)),
        ));
    }
    let meta = match entry.metadata() {
        Ok(m) => m,
        Err(e) => return Some(skip(&key, format!("cannot stat: {e}"))),
    };
    if let Some(reason) = fence.own(target.as_deref().unwrap_or(entry.path()), &meta) {
        return Some(fenced(&key, reason));
    }
    let size = meta.len();
    if size > cfg.max_file_size {
        return Some(skip(
            &key,
            format!(
                "{size} bytes is over max_file_size ({} bytes)",
                cfg.max_file_size
            ),
        ));
    }
    Some(Found::File(Stat {
        key: key.into_boxed_str(),
        size,
        mtime_ns: mtime_ns_of(&meta),
        identity: identity(&meta),
    }))
}

/// Kept out by the fence: reported, but not protected. Whatever was
/// mirrored of it before (through a link that now leads elsewhere, or by
/// an older kbsync) is retired like a deleted file's record.
fn fenced(key: &str, reason: String) -> Found {
    Found::Skipped(
        Skipped {
            path: key.to_owned(),
            reason,
        },
        None,
    )
}

fn skip(key: &str, reason: String) -> Found {
    Found::Skipped(
        Skipped {
            path: key.to_owned(),
            reason,
        },
        Some(key.to_owned()),
    )
}

fn walk_error(root: &Path, err: ignore::Error) -> Found {
    let path = error_path(&err);
    // An unreadable folder hides whatever is below it: protect that subtree
    // so its items are not taken for deleted. Without a path, protect all.
    let protect = match path.as_deref().map(|p| key_of(root, p)) {
        Some(Ok(k)) if !k.is_empty() => format!("{k}/"),
        _ => String::new(),
    };
    Found::Skipped(
        Skipped {
            path: path.map_or_else(|| root.display().to_string(), |p| p.display().to_string()),
            reason: err.to_string(),
        },
        Some(protect),
    )
}

fn error_path(err: &ignore::Error) -> Option<PathBuf> {
    match err {
        ignore::Error::WithPath { path, .. } => Some(path.clone()),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            error_path(err)
        }
        ignore::Error::Loop { child, .. } => Some(child.clone()),
        ignore::Error::Partial(errs) => errs.iter().find_map(error_path),
        _ => None,
    }
}

fn key_of(root: &Path, path: &Path) -> Result<String, String> {
    use std::os::unix::ffi::OsStrExt;
    // The walker joins names onto the root: its paths are the root's bytes,
    // a '/', and the relative part, already in key form.
    let fast = path
        .as_os_str()
        .as_bytes()
        .strip_prefix(root.as_os_str().as_bytes())
        .and_then(|rest| rest.strip_prefix(b"/"))
        .filter(|rest| !rest.is_empty() && !rest.ends_with(b"/"));
    if let Some(rest) = fast {
        if let Ok(key) = std::str::from_utf8(rest) {
            if !key.contains("//") && !key.split('/').any(|c| c == "." || c == "..") {
                return Ok(key.to_owned());
            }
        }
    }
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut key = String::new();
    for part in rel.components() {
        let s = part
            .as_os_str()
            .to_str()
            .ok_or_else(|| "file name is not valid UTF-8; rename it to mirror it".to_string())?;
        if !key.is_empty() {
            key.push('/');
        }
        key.push_str(s);
    }
    Ok(key)
}

fn matches(cfg: &FolderConfig, key: &str) -> bool {
    if let Some(exclude) = &cfg.exclude {
        if exclude.is_match(key) {
            return false;
        }
    }
    cfg.include.as_ref().is_none_or(|inc| inc.is_match(key))
}

fn kind_of(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

fn mtime_ns_of(meta: &std::fs::Metadata) -> i64 {
    match meta.modified() {
        Ok(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i64,
            Err(e) => -(e.duration().as_nanos() as i64),
        },
        Err(_) => 0,
    }
}

/// What reading a file gave.
struct FileRead {
    /// BLAKE3, hex.
    hash: String,
    bytes: u64,
    /// Markdown only: the head, for front matter.
    head: Option<Vec<u8>>,
    /// The open file's metadata once read (no second path lookup).
    after: Option<std::fs::Metadata>,
    /// It held more than the limit: `hash` is of a part only.
    longer: bool,
}

/// Reads and hashes at most `limit` bytes of a file (the size its stat
/// gave, itself within `max_file_size`), 64 KiB at a time; gives up
/// between two chunks once `stop` is set (shutdown), so a large file never
/// holds the exit.
fn hash_file(
    path: &Path,
    limit: u64,
    keep_head: bool,
    stop: &AtomicBool,
) -> std::io::Result<FileRead> {
    let mut file = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut head: Option<Vec<u8>> = keep_head.then(Vec::new);
    let (bytes, longer) = read_within(&mut file, limit, stop, |chunk| {
        if let Some(h) = head.as_mut() {
            let room = front_matter::HEAD_BYTES.saturating_sub(h.len());
            h.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        hasher.update(chunk);
    })?;
    Ok(FileRead {
        hash: hasher.finalize().to_hex().to_string(),
        bytes,
        head,
        after: file.metadata().ok(),
        longer,
    })
}

/// Hands `each` at most `limit` bytes of `file`, 64 KiB at a time, then
/// looks once more: whether the file holds more. A file of procfs, sysfs
/// or FUSE may say size 0 and never end (`/proc/self/pagemap`), and one
/// being appended to keeps growing, so the stat's size bounds every read.
/// Stops with `Interrupted` once `stop` is set.
pub fn read_within(
    file: &mut File,
    limit: u64,
    stop: &AtomicBool,
    mut each: impl FnMut(&[u8]),
) -> std::io::Result<(u64, bool)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "not read: kbsync is shutting down",
            ));
        }
        let left = limit - total;
        // Past the limit a whole buffer is asked for, as a file that reads
        // only in records (pagemap: 8 bytes) needs.
        let want = if left == 0 {
            buf.len()
        } else {
            buf.len().min(usize::try_from(left).unwrap_or(usize::MAX))
        };
        let n = match file.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok((total, false));
        }
        if left == 0 {
            return Ok((total, true));
        }
        each(&buf[..n]);
        total += n as u64;
    }
}

/// Hash of an in-memory buffer, the same function the scan uses.
pub fn hash_bytes(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    fn cfg(root: &Path) -> FolderConfig {
        FolderConfig {
            root: root.to_owned(),
            require_marker: None,
            rehash_interval: None,
            include: None,
            exclude: None,
            ignore_file: None,
            respect_gitignore: false,
            include_hidden: false,
            follow_symlinks: false,
            max_file_size: crate::config::DEFAULT_MAX_FILE_SIZE,
        }
    }

    /// Reads `key` under `root` as the scan does, with the walk's stat,
    /// within `deadline`; past it, the read is stopped and the test fails.
    fn read_with_deadline(root: &Path, key: &str, deadline: Duration) -> (Hashed, u64) {
        let meta = std::fs::metadata(root.join(key)).unwrap();
        let stat = Stat {
            key: key.into(),
            size: meta.len(),
            mtime_ns: mtime_ns_of(&meta),
            identity: identity(&meta),
        };
        let size = stat.size;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let (cfg, flag) = (cfg(root), stop.clone());
        std::thread::spawn(move || {
            let _ = tx.send(read_one(&cfg, &stat, 0, &flag));
        });
        let hashed = rx.recv_timeout(deadline).unwrap_or_else(|_| {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            panic!("reading {key} (stat size {size}) did not end within {deadline:?}")
        });
        (hashed, size)
    }

    #[test]
    fn a_proc_file_that_never_ends_is_read_no_further_than_its_size() {
        // pagemap says size 0 and reads on for the whole address space
        // (hundreds of GiB of a 64-bit process).
        let (hashed, size) =
            read_with_deadline(Path::new("/proc/self"), "pagemap", Duration::from_secs(10));
        assert_eq!(size, 0);
        match hashed {
            Hashed::Skipped(s, protect) => {
                assert_eq!(protect, "pagemap");
                assert!(
                    s.reason
                        .starts_with("holds more than the 0 bytes its size says"),
                    "{}",
                    s.reason
                );
            }
            Hashed::Item(i) => panic!("taken as an item: {i:?}"),
        }
    }

    #[test]
    fn a_proc_file_whose_size_is_not_its_content_is_left_out_not_hashed() {
        let (hashed, size) =
            read_with_deadline(Path::new("/proc/self"), "status", Duration::from_secs(10));
        assert_eq!(size, 0);
        assert!(
            matches!(&hashed, Hashed::Skipped(s, _) if s.reason.contains("special file (procfs, sysfs, FUSE)")),
            "{}",
            match hashed {
                Hashed::Skipped(s, _) => s.reason,
                Hashed::Item(i) => format!("{i:?}"),
            }
        );
    }

    #[test]
    fn read_within_hands_over_at_most_the_limit_and_says_whether_more_follows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grows.md");
        std::fs::write(&path, vec![b'a'; 200_000]).unwrap();
        let never = AtomicBool::new(false);
        for (limit, longer) in [(200_000, false), (150_000, true), (0, true)] {
            let mut got = 0usize;
            let mut file = File::open(&path).unwrap();
            let (n, more) = read_within(&mut file, limit, &never, |c| got += c.len()).unwrap();
            assert_eq!(
                (n, got as u64, more),
                (limit, limit, longer),
                "limit {limit}"
            );
        }
    }
}
