//! What a folder job may read: files inside its root (a symbolic link is
//! followed only where it lands inside the root), and never one of
//! kbsync's own files, whatever name leads to it. Anyone who can write
//! into a mirrored folder could otherwise have kbsync upload its own API
//! key (a link to the key file, a hard link to it, or a root that holds
//! it) and so hand out a key that reaches every knowledge base it opens.
//!
//! Own files are told by device and inode (a hard link or a link to one is
//! the same file) and, for one that did not exist yet when the pass began
//! (the state file's write-ahead log), by canonical path.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::secret::SecretSource;
use crate::state::lock_path;

/// kbsync's own files as the config names them: the config file, every
/// credential read from a file, the systemd credentials folder, the state
/// file and its companions.
#[derive(Debug, Clone, Default)]
pub struct OwnFiles {
    /// (path, what it is)
    files: Vec<(PathBuf, String)>,
    /// The state file and its companions: written by kbsync itself.
    written: Vec<PathBuf>,
    /// `$CREDENTIALS_DIRECTORY`: every file in it is a credential.
    credentials: Option<PathBuf>,
}

impl OwnFiles {
    pub fn of(config: &Config) -> OwnFiles {
        let mut files = vec![(config.path.clone(), "the config file".to_owned())];
        for job in &config.jobs {
            for (stem, source) in job.sink.credentials() {
                if let SecretSource::File(path) = source {
                    files.push((
                        path.clone(),
                        format!("the {stem}_file of job {:?}", job.name),
                    ));
                }
            }
        }
        let state = state_files(&config.state_path);
        let written = state.iter().map(|(p, _)| p.clone()).collect();
        files.extend(state.into_iter().map(|(p, what)| (p, what.to_owned())));
        OwnFiles {
            files,
            written,
            credentials: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
        }
    }

    /// The files kbsync writes (the state file and its companions): the
    /// folder watcher ignores their events.
    pub fn written(&self) -> &[PathBuf] {
        &self.written
    }

    /// The files as they are now. Resolved at every pass, so that a key
    /// file replaced since (a rotation) is known by its new inode.
    pub fn resolve(&self) -> Resolved {
        let mut r = Resolved::default();
        for (path, what) in &self.files {
            r.add(path, what);
        }
        let entries = self
            .credentials
            .iter()
            .flat_map(std::fs::read_dir)
            .flatten();
        for entry in entries.flatten() {
            r.add(&entry.path(), "a systemd credential");
        }
        r
    }
}

/// The state file and its companions, each with what it is; the folder
/// made canonical (the file itself may not exist yet).
fn state_files(path: &Path) -> Vec<(PathBuf, &'static str)> {
    let abs = canonical_folder(path);
    let with = |suffix: &str| {
        let mut s = abs.clone().into_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    vec![
        (with("-wal"), "the state file's write-ahead log"),
        (with("-shm"), "the state file's shared memory"),
        (with("-journal"), "the state file's journal"),
        (lock_path(&abs), "the state file's lock"),
        (abs, "the state file"),
    ]
}

/// `path` with its folder made canonical: where the file is or will be.
fn canonical_folder(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            dir.canonicalize()
                .map(|d| d.join(name))
                .unwrap_or_else(|_| path.to_owned())
        }
        _ => path.to_owned(),
    }
}

/// kbsync's own files as found on disk when a pass began.
#[derive(Debug, Default)]
pub struct Resolved {
    /// (device, inode) → what it is.
    by_id: HashMap<(u64, u64), String>,
    /// Canonical path → what it is.
    by_path: HashMap<PathBuf, String>,
    /// Their file names: only a file so named is looked up by path.
    names: HashSet<OsString>,
}

impl Resolved {
    fn add(&mut self, path: &Path, what: &str) {
        let canonical = canonical_folder(path);
        if let Ok(m) = std::fs::metadata(&canonical) {
            self.by_id
                .entry((m.dev(), m.ino()))
                .or_insert_with(|| what.to_owned());
        }
        if let Some(name) = canonical.file_name() {
            self.names.insert(name.to_owned());
        }
        self.by_path
            .entry(canonical)
            .or_insert_with(|| what.to_owned());
    }

    /// What own file `path` is (`meta`: its metadata, links followed).
    fn which(&self, path: &Path, meta: &Metadata) -> Option<&str> {
        if let Some(what) = self.by_id.get(&(meta.dev(), meta.ino())) {
            return Some(what);
        }
        // Made since the pass began (the state file's log): by path. A
        // name comparison first, so that other files cost no lookup.
        if !self.names.contains(path.file_name()?) {
            return None;
        }
        self.by_path
            .get(&path.canonicalize().ok()?)
            .map(String::as_str)
    }
}

/// One folder job's boundary for one pass: its root as it resolves now,
/// and kbsync's own files.
#[derive(Debug)]
pub struct Fence {
    root: PathBuf,
    own: Resolved,
}

/// Why a file is not opened for an upload.
#[derive(Debug)]
pub enum Refused {
    Io(std::io::Error),
    /// It leads outside the root, or to one of kbsync's own files.
    Fenced(String),
}

impl Fence {
    /// The fence around `root` (resolved now: a root that is a symbolic
    /// link is followed where it points at this pass).
    pub fn new(root: &Path, own: Resolved) -> Fence {
        Fence {
            root: root.canonicalize().unwrap_or_else(|_| root.to_owned()),
            own,
        }
    }

    /// Where the symbolic link `path` leads, when that is inside the root;
    /// otherwise why it is not followed.
    pub fn link_target(&self, path: &Path) -> Result<PathBuf, String> {
        let target = path
            .canonicalize()
            .map_err(|e| format!("cannot resolve the symbolic link: {e}"))?;
        if target.starts_with(&self.root) {
            Ok(target)
        } else {
            Err(format!(
                "symbolic link target outside the root: {}",
                target.display()
            ))
        }
    }

    /// Why the file at `path` (`meta`: its metadata, links followed) must
    /// never be read: it is one of kbsync's own.
    pub fn own(&self, path: &Path, meta: &Metadata) -> Option<String> {
        self.own.which(path, meta).map(|what| {
            format!(
                "kbsync's own file ({what}): never mirrored; move it out of the root or exclude it"
            )
        })
    }

    /// Opens `path` for an upload, checking again what the scan checked:
    /// a file, folder or link replaced since must not lead outside the
    /// root or to one of kbsync's own files. The opened file must be the
    /// one its canonical path names inside the root.
    pub fn open(&self, path: &Path) -> Result<File, Refused> {
        let file = File::open(path).map_err(Refused::Io)?;
        let opened = file.metadata().map_err(Refused::Io)?;
        let real = path.canonicalize().map_err(Refused::Io)?;
        if let Some(reason) = self.own(&real, &opened) {
            return Err(Refused::Fenced(reason));
        }
        let named = std::fs::metadata(&real).map_err(Refused::Io)?;
        if !real.starts_with(&self.root)
            || (named.dev(), named.ino()) != (opened.dev(), opened.ino())
        {
            return Err(Refused::Fenced(format!(
                "it now leads outside the root ({})",
                real.display()
            )));
        }
        Ok(file)
    }
}
