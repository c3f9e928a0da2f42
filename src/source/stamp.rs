//! An entry's stamp: what a source kind learns of an entry without reading
//! it, and records beside what it read, so that a later pass tells whether
//! the entry is still the one it read. A file: size, mtime and identity
//! (device, inode, ctime); an object in a bucket: ETag, size, last-modified
//! and version id; a git blob: its id. Triage, the slices and the settled
//! skip compare stamps through these traits only, whatever the kind.
//!
//! A stamp is kept in the item's stamp columns: `size`, `mtime_ns`,
//! `identity`, and `validator`, a text opaque to all but the kind (a web
//! page's validators, an ETag and version id, a blob id). Each kind gives
//! them its own meaning and leaves unused ones empty.

use super::KnownFacts;

/// A stamp as recorded: a cached row's stamp columns, or the facts of the
/// last read.
pub trait Recorded {
    fn size(&self) -> Option<u64>;
    fn mtime_ns(&self) -> Option<i64>;
    /// 0 or `None` when not recorded.
    fn identity(&self) -> Option<i64>;
    /// The kind's opaque part (the `validator` column).
    fn tag(&self) -> Option<&str>;
    /// Recorded so close to the entry's last change that an equal stamp
    /// proves nothing (see `Observed::racy`): the entry is read again.
    fn racy(&self) -> bool;
}

/// An entry a source found before reading anything: its key, and a stamp
/// to compare with what was recorded. A listing holds one per entry, so
/// implementations stay small.
pub trait Stamped: Send + 'static {
    fn key(&self) -> &str;

    /// Whether `recorded` is this entry's stamp: the entry is then the
    /// very one read when it was recorded.
    fn stamped_as(&self, recorded: &impl Recorded) -> bool;
}

/// `entry` is the one `recorded` was taken from, and nothing says the
/// stamp could have missed a change: it need not be read again.
pub fn unchanged(entry: &impl Stamped, recorded: &impl Recorded) -> bool {
    !recorded.racy() && entry.stamped_as(recorded)
}

impl Recorded for KnownFacts {
    fn size(&self) -> Option<u64> {
        Some(self.size)
    }

    fn mtime_ns(&self) -> Option<i64> {
        Some(self.mtime_ns)
    }

    fn identity(&self) -> Option<i64> {
        Some(self.identity)
    }

    fn tag(&self) -> Option<&str> {
        self.validator.as_deref()
    }

    fn racy(&self) -> bool {
        self.racy
    }
}
