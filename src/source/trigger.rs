//! What makes a job's passes run, besides the periodic full pass: each
//! source kind declares it, so the service schedules every kind alike and
//! never asks which one it holds.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ignore::WalkBuilder;

pub enum Trigger {
    /// File events under a root (inotify) name the paths to pass over.
    Watch(WatchSpec),
    /// A full pass every so often: nothing tells of a change.
    Poll(Duration),
    /// Only the periodic full passes, `--reconcile` and retries.
    PassesOnly,
}

/// What the watcher needs of a watched source: its root, and the walk
/// that enters exactly the folders a scan enters (so what is not scanned
/// is not watched either).
#[derive(Clone)]
pub struct WatchSpec {
    pub root: PathBuf,
    enters: Arc<dyn Fn(&Path) -> WalkBuilder + Send + Sync>,
}

impl WatchSpec {
    pub fn new(
        root: PathBuf,
        enters: impl Fn(&Path) -> WalkBuilder + Send + Sync + 'static,
    ) -> WatchSpec {
        WatchSpec {
            root,
            enters: Arc::new(enters),
        }
    }

    /// A walk from `start` (the root, or a folder under it) over the
    /// folders a scan enters.
    pub fn walk_from(&self, start: &Path) -> WalkBuilder {
        (self.enters)(start)
    }
}

impl fmt::Debug for WatchSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchSpec")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}
