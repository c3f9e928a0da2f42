//! Sources produce the observed state of a job's items: a folder, or web
//! pages, each kind in its own folder. The pass sees them through
//! `seam::Source`, the config and the service through `seam::SourceConfig`;
//! `registry.rs` is the one list of kinds.

mod content;
pub mod fence;
pub mod folder;
pub mod front_matter;
pub mod git;
mod listed;
mod push;
pub mod registry;
mod remote;
pub mod s3;
pub mod scope;
mod seam;
mod slices;
mod stamp;
mod triage;
mod trigger;
pub mod web;
pub mod webdav;

pub use content::{Content, Downloaded, FolderContent};
pub use fence::OwnFiles;
pub use listed::Listed;
pub use push::{repository, Push};
pub use scope::Scope;
pub use seam::{ScanInput, Scanned, Slices, Source, SourceConfig, Survey};
pub use slices::{sliced, ReadChanged, Trust};
pub use stamp::{unchanged, Recorded, Stamped};
pub use trigger::{Trigger, WatchSpec};

use crate::metadata::Metadata;

/// One item as seen now.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Path relative to the root, `/`-separated, valid UTF-8.
    pub key: String,
    pub size: u64,
    pub mtime_ns: i64,
    /// Which file this is, beyond its name: see `folder::identity`. 0 when
    /// unknown (web pages).
    pub identity: i64,
    /// BLAKE3 of the content, hex.
    pub hash: String,
    /// Flat front matter of Markdown files, when present.
    pub front_matter: Option<Metadata>,
    /// True when the content was read this scan (its stat moved).
    pub rehashed: bool,
    /// The modification time is so close to the scan that a write in the
    /// same timestamp tick could follow unseen: the next scan must hash
    /// the file again rather than trust size and mtime (git's "racily
    /// clean" entries).
    pub racy: bool,
    /// Web pages: the server's validators (ETag, Last-Modified) as JSON.
    pub validator: Option<String>,
}

/// What the previous scan saw of an item; lets an unchanged file skip hashing.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownFacts {
    pub size: u64,
    pub mtime_ns: i64,
    /// 0 when not recorded (web pages, rows from before it was kept).
    pub identity: i64,
    pub hash: String,
    pub front_matter: Option<Metadata>,
    /// Recorded as racy: size and mtime prove nothing, hash again.
    pub racy: bool,
    pub validator: Option<String>,
}

impl KnownFacts {
    /// The item as recorded, seen again unchanged under `key` (a page
    /// answered 304, an object whose stamp did not move).
    pub fn observed_again(&self, key: String) -> Observed {
        Observed {
            key,
            size: self.size,
            mtime_ns: self.mtime_ns,
            identity: 0,
            hash: self.hash.clone(),
            front_matter: self.front_matter.clone(),
            rehashed: false,
            racy: false,
            validator: self.validator.clone(),
        }
    }
}

/// An entry that could not be mirrored this time, and why. Never dropped
/// silently: it is logged, counted and makes the pass report failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct ScanResult {
    /// Sorted by key.
    pub items: Vec<Observed>,
    pub skipped: Vec<Skipped>,
    /// Keys, folder prefixes ending in `/`, or `""` for everything: entries
    /// that exist but could not be read, so what the cache knows of them
    /// must not be taken for deleted.
    pub protected: Vec<String>,
    pub hashed_files: usize,
    pub hashed_bytes: u64,
    /// Entries left out of `items` as settled and unchanged (see `triage`).
    pub unchanged: usize,
}

impl ScanResult {
    pub fn is_protected(&self, key: &str) -> bool {
        is_protected(&self.protected, key)
    }
}

/// `key` in composed Unicode (NFC): how its document is named upstream,
/// so two keys equal in this form are one item.
pub fn composed(key: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    key.nfc().collect()
}

/// `key` is one of `protected`, or below one of its folder prefixes.
pub fn is_protected(protected: &[String], key: &str) -> bool {
    protected
        .iter()
        .any(|p| p.is_empty() || key == p || (p.ends_with('/') && key.starts_with(p.as_str())))
}

/// Wall-clock time in nanoseconds since the Unix epoch, as mtimes are kept.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
