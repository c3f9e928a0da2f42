//! Folder source: a parallel walk (the `ignore` crate, so ignore files work
//! as in git) that stats every file and hashes only those whose size or
//! modification time moved since the last scan.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::UNIX_EPOCH;

use ignore::{WalkBuilder, WalkState};

use super::scope::key_under;
use super::{front_matter, KnownFacts, Observed, ScanResult, Scope, Skipped};
use crate::config::FolderConfig;

/// Timestamp granularity to allow for: about a jiffy on Linux local file
/// systems, 1 s on some network shares, 2 s on FAT.
const RACY_WINDOW_NS: i64 = 2_000_000_000;

enum Found {
    Item(Observed),
    Skipped(Skipped, Option<String>),
}

/// Scans the part of `cfg.root` that `scope` selects. `known` holds what the
/// cache saw last time; `avoid` lists files never to mirror (the state
/// database, when it lives inside the root).
///
/// A scoped scan still walks down from the root, pruning every folder that
/// does not lead to a scoped path, so the ignore files on the way apply
/// exactly as in a full scan.
pub fn scan(
    cfg: &FolderConfig,
    known: &HashMap<String, KnownFacts>,
    avoid: &[PathBuf],
    scope: &Scope,
) -> ScanResult {
    let scan_start_ns = super::now_ns();
    let mut builder = WalkBuilder::new(&cfg.root);
    builder
        .hidden(!cfg.include_hidden)
        .follow_links(cfg.follow_symlinks)
        .ignore(false)
        .git_global(false)
        .git_ignore(cfg.respect_gitignore)
        .git_exclude(cfg.respect_gitignore)
        .require_git(false)
        .parents(cfg.respect_gitignore)
        .threads(std::thread::available_parallelism().map_or(2, |n| n.get()));
    if let Some(name) = &cfg.ignore_file {
        builder.add_custom_ignore_filename(name);
    }
    if !scope.is_all() {
        let scope = Arc::new(scope.clone());
        let root = cfg.root.clone();
        builder.filter_entry(move |entry| {
            if entry.depth() == 0 {
                return true;
            }
            let key = key_under(&root, entry.path()).unwrap_or_default();
            if entry.file_type().is_some_and(|t| t.is_dir()) {
                scope.enters(&key)
            } else {
                scope.covers(&key)
            }
        });
    }

    let (tx, rx) = mpsc::channel::<Found>();
    let root = cfg.root.clone();
    builder.build_parallel().run(|| {
        let tx = tx.clone();
        let root = root.clone();
        Box::new(move |entry| {
            if let Some(found) = visit(cfg, &root, known, avoid, scan_start_ns, entry) {
                // The receiver outlives the walk; a send cannot fail.
                let _ = tx.send(found);
            }
            WalkState::Continue
        })
    });
    drop(tx);

    let mut result = ScanResult::default();
    for found in rx {
        match found {
            Found::Item(item) => {
                if item.rehashed {
                    result.hashed_files += 1;
                    result.hashed_bytes += item.size;
                }
                result.items.push(item);
            }
            Found::Skipped(s, protect) => {
                tracing::warn!(path = %s.path, reason = %s.reason, "skipped");
                if let Some(p) = protect {
                    result.protected.push(p);
                }
                result.skipped.push(s);
            }
        }
    }
    result.items.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    result.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    result
}

fn visit(
    cfg: &FolderConfig,
    root: &Path,
    known: &HashMap<String, KnownFacts>,
    avoid: &[PathBuf],
    scan_start_ns: i64,
    entry: Result<ignore::DirEntry, ignore::Error>,
) -> Option<Found> {
    let entry = match entry {
        Ok(e) => e,
        Err(err) => return Some(walk_error(root, err)),
    };
    let path = entry.path();
    let file_type = entry.file_type()?;
    if file_type.is_dir() {
        return None;
    }
    let key = match key_of(root, path) {
        Ok(k) => k,
        Err(reason) => {
            return Some(Found::Skipped(
                Skipped {
                    path: path.display().to_string(),
                    reason,
                },
                None,
            ))
        }
    };
    if !matches(cfg, &key) || avoid.iter().any(|a| a == path) {
        return None;
    }
    if file_type.is_symlink() {
        // Only reached when links are not followed.
        tracing::debug!(%key, "symbolic link not followed");
        return None;
    }
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
    let mtime_ns = mtime_ns_of(&meta);
    if let Some(k) = known.get(&key) {
        if k.size == size && k.mtime_ns == mtime_ns && !k.racy {
            return Some(Found::Item(Observed {
                key,
                size,
                mtime_ns,
                hash: k.hash.clone(),
                front_matter: k.front_matter.clone(),
                rehashed: false,
                racy: false,
                validator: None,
            }));
        }
    }
    Some(match hash_file(path, front_matter::is_markdown(&key)) {
        Ok((hash, read, head)) => {
            // A file written while we read it would pair one version's size
            // with another's hash: leave it for the next scan instead.
            let after = std::fs::metadata(path).ok();
            if read != size
                || after.as_ref().map(|m| (m.len(), mtime_ns_of(m))) != Some((size, mtime_ns))
            {
                skip(
                    &key,
                    "changed while being read; will be picked up by the next scan".into(),
                )
            } else {
                Found::Item(Observed {
                    key,
                    size,
                    mtime_ns,
                    hash,
                    front_matter: head.as_deref().and_then(front_matter::parse),
                    rehashed: true,
                    racy: mtime_ns > scan_start_ns - RACY_WINDOW_NS,
                    validator: None,
                })
            }
        }
        Err(e) => skip(&key, format!("cannot read: {e}")),
    })
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

/// BLAKE3 of the file, the number of bytes read, and for Markdown the head
/// for front matter parsing.
fn hash_file(path: &Path, keep_head: bool) -> std::io::Result<(String, u64, Option<Vec<u8>>)> {
    let mut file = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut head: Option<Vec<u8>> = keep_head.then(Vec::new);
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(h) = head.as_mut() {
            let room = front_matter::HEAD_BYTES.saturating_sub(h.len());
            h.extend_from_slice(&buf[..n.min(room)]);
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher.finalize().to_hex().to_string(), total, head))
}

/// Hash of an in-memory buffer, the same function the scan uses.
pub fn hash_bytes(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}
