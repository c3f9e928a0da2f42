//! The `[sync.folder]` section: a root, what of it to mirror, and how.

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{GlobSet, GlobSetBuilder};
use serde::Deserialize;
use toml::Spanned;

use crate::config::locate::{bounded, Locator};
use crate::config::size::size_limit;
use crate::config::{ConfigError, Roots};

const DEFAULT_IGNORE_FILE: &str = ".kbsyncignore";

#[derive(Debug, Clone)]
pub struct FolderConfig {
    pub root: PathBuf,
    /// A file that must exist in the root (Syncthing's `.stfolder` idea):
    /// without it the root is taken for an unmounted share, and the job
    /// does nothing.
    pub require_marker: Option<String>,
    /// Full passes read every file again when this long has passed since
    /// the last that did (a deep verify); `None`: never.
    pub rehash_interval: Option<Duration>,
    /// Empty means "everything".
    pub include: Option<GlobSet>,
    pub exclude: Option<GlobSet>,
    pub ignore_file: Option<String>,
    pub respect_gitignore: bool,
    pub include_hidden: bool,
    pub follow_symlinks: bool,
    pub max_file_size: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFolder {
    root: Spanned<String>,
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    ignore_file: Option<String>,
    #[serde(default)]
    respect_gitignore: bool,
    #[serde(default)]
    include_hidden: bool,
    #[serde(default)]
    follow_symlinks: bool,
    max_file_size: Option<Spanned<toml::Value>>,
    require_marker: Option<Spanned<String>>,
    rehash_interval_secs: Option<Spanned<i64>>,
}

pub fn validate(
    loc: &Locator,
    base: &Path,
    roots: Roots,
    index: usize,
    raw: RawFolder,
) -> Result<FolderConfig, ConfigError> {
    let key = |k: &str| format!("sync[{index}].folder.{k}");
    let root_span = raw.root.span();
    let root = base.join(raw.root.get_ref());
    if roots == Roots::MustExist && !root.is_dir() {
        return Err(loc.error(
            root_span,
            &key("root"),
            format!("{} is not a readable folder", root.display()),
        ));
    }
    // Canonical up to its last part, so walked paths compare equal to the
    // state file's path; a root that is itself a symlink (`current ->
    // releases/v2`) stays one, so that it is resolved again at every pass
    // and a swapped link is followed.
    let canonical = match (root.parent(), root.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
            parent.canonicalize().map(|p| p.join(name))
        }
        _ => root.canonicalize(),
    };
    let root = match canonical {
        Ok(root) => root,
        // The folder above a missing root may be gone too (a share mounted
        // deeper): the path as written stands for it.
        Err(_) if roots == Roots::MayBeMissing => std::path::absolute(&root).unwrap_or(root),
        Err(e) => {
            return Err(loc.error(root_span, &key("root"), format!("{}: {e}", root.display())))
        }
    };
    let include = glob_set(loc, &key("include"), &raw.include)?;
    let exclude = glob_set(loc, &key("exclude"), &raw.exclude)?;
    let max_file_size = size_limit(loc, &key("max_file_size"), &raw.max_file_size)?;
    let ignore_file = match raw.ignore_file {
        None => Some(DEFAULT_IGNORE_FILE.to_owned()),
        Some(s) if s.is_empty() => None,
        Some(s) => Some(s),
    };
    let require_marker = match &raw.require_marker {
        None => None,
        Some(m) => {
            let name = m.get_ref().trim();
            let plain = !name.is_empty()
                && !name.starts_with('/')
                && name.split('/').all(|p| !p.is_empty() && p != "..");
            if !plain {
                return Err(loc.error(
                    m.span(),
                    &key("require_marker"),
                    "expected a file name relative to the root, e.g. \".kbsync-root\"",
                ));
            }
            Some(name.to_owned())
        }
    };
    let rehash = bounded(
        loc,
        &raw.rehash_interval_secs,
        &key("rehash_interval_secs"),
        0,
        365 * 86_400,
        0,
    )?;
    Ok(FolderConfig {
        root,
        require_marker,
        rehash_interval: (rehash > 0).then(|| Duration::from_secs(rehash as u64)),
        include,
        exclude,
        ignore_file,
        respect_gitignore: raw.respect_gitignore,
        include_hidden: raw.include_hidden,
        follow_symlinks: raw.follow_symlinks,
        max_file_size,
    })
}

impl FolderConfig {
    /// Why the root cannot be scanned now: it is missing (an unmounted
    /// share, a folder moved away), not a folder, or lacks its
    /// `require_marker`. An unmounted share looks exactly like an emptied
    /// folder, so the job then does nothing.
    pub fn unmounted(&self) -> Option<String> {
        let root = self.root.display();
        match std::fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Some(format!("root {root} is not a folder")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Some(format!("root {root} is missing (unmounted?)"))
            }
            Err(e) => return Some(format!("root {root} cannot be read: {e}")),
        }
        let marker = self.require_marker.as_ref()?;
        (!self.root.join(marker).is_file()).then(|| {
            format!(
                "root {root} has no {marker}, so the share looks unmounted (require_marker; create the file once the share is there)"
            )
        })
    }
}

/// Patterns per `include` or `exclude` list. Each becomes part of one
/// automaton: 600,000 took 3.6 GB before globset gave up ("error building
/// NFA"), while a real tree needs a few dozen (a folder's `/**` covers
/// everything below it, and `{a,b}` joins alternatives).
pub const MAX_GLOBS: usize = 10_000;

fn glob_set(
    loc: &Locator,
    key: &str,
    globs: &[Spanned<String>],
) -> Result<Option<GlobSet>, ConfigError> {
    if globs.is_empty() {
        return Ok(None);
    }
    if let Some(first_over) = globs.get(MAX_GLOBS) {
        return Err(loc.error(
            first_over.span(),
            key,
            format!(
                "{} patterns; at most {MAX_GLOBS} per list: cover a folder with `dir/**`, join alternatives with `{{a,b}}`, or list paths in an ignore file (ignore_file)",
                globs.len()
            ),
        ));
    }
    let mut builder = GlobSetBuilder::new();
    for g in globs {
        let glob = globset::GlobBuilder::new(g.get_ref())
            .literal_separator(true)
            .build()
            .map_err(|e| loc.error(g.span(), key, format!("bad glob: {e}")))?;
        builder.add(glob);
    }
    // Patterns valid one by one can still be too large together (globset
    // caps its automaton at 10 MiB).
    builder.build().map(Some).map_err(|e| {
        loc.error(
            globs[0].span(),
            key,
            format!(
                "{} cannot be compiled ({e}): use fewer or simpler patterns, or an ignore file (ignore_file)",
                match globs.len() {
                    1 => "the pattern".to_owned(),
                    n => format!("these {n} patterns together"),
                }
            ),
        )
    })
}
