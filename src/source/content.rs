//! Where a push reads the bytes it uploads: the folder itself, or the pages
//! a web poll downloaded. Either way a failure here is transient: whatever
//! happened since the scan (a file removed, renamed, its permissions
//! changed; a page not fetched) the next scan sees.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;

use super::fence::{Fence, Refused};
use super::folder::read_within;
use crate::sink::{ErrorClass, SinkError};

pub trait Content {
    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes, SinkError>>;
}

/// Files under a folder's root, read at upload time, within the fence the
/// scan found them in: a link or folder swapped since the scan for one
/// that leads elsewhere is not read.
pub struct FolderContent {
    pub root: PathBuf,
    pub fence: Arc<Fence>,
    /// The job's `max_file_size`: nothing larger is read, as in the scan.
    pub max_file_size: u64,
}

impl Content for FolderContent {
    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes, SinkError>> {
        let path = self.root.join(key);
        let max = self.max_file_size;
        let fence = self.fence.clone();
        async move {
            let read = tokio::task::spawn_blocking(move || read_file(&fence, &path, max)).await;
            read.unwrap_or_else(|e| {
                Err(SinkError::local(
                    ErrorClass::Transient,
                    "unreadable",
                    format!("reading {key} stopped: {e}"),
                ))
            })
        }
        .boxed()
    }
}

/// A file's bytes, as many as its size says and at most `max`: a file that
/// turns out longer (growing, or of procfs or sysfs) is not read on.
fn read_file(fence: &Fence, path: &Path, max: u64) -> Result<Bytes, SinkError> {
    let failed =
        |code: &str, message: String| Err(SinkError::local(ErrorClass::Transient, code, message));
    let mut file = match fence.open(path) {
        Ok(f) => f,
        Err(Refused::Fenced(why)) => {
            return failed(
                "fenced",
                format!(
                    "{} was not uploaded: {why}; the next scan reports it",
                    path.display()
                ),
            )
        }
        Err(Refused::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return failed(
                "vanished",
                format!(
                    "{} disappeared before its upload; the next scan sees it gone",
                    path.display()
                ),
            )
        }
        Err(Refused::Io(e)) => {
            return failed("unreadable", format!("cannot read {}: {e}", path.display()))
        }
    };
    let size = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return failed("unreadable", format!("cannot stat {}: {e}", path.display())),
    };
    if size > max {
        return failed(
            "changed",
            format!(
                "{} grew to {size} bytes since the scan, over max_file_size ({max} bytes); the next scan reports it",
                path.display()
            ),
        );
    }
    let mut bytes = Vec::with_capacity(size as usize);
    let never = AtomicBool::new(false);
    match read_within(&mut file, size, &never, |chunk| {
        bytes.extend_from_slice(chunk)
    }) {
        Ok((_, false)) => Ok(Bytes::from(bytes)),
        Ok((_, true)) => failed(
            "changed",
            format!(
                "{} holds more than the {size} bytes its size says (still being written, or a special file); the next scan reads it again",
                path.display()
            ),
        ),
        Err(e) => failed("unreadable", format!("cannot read {}: {e}", path.display())),
    }
}

/// The pages this poll downloaded, by key.
pub struct Downloaded(pub HashMap<String, Bytes>);

impl Content for Downloaded {
    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes, SinkError>> {
        let found = self.0.get(key).cloned().ok_or_else(|| {
            SinkError::local(
                ErrorClass::Transient,
                "not_downloaded",
                "the page was not downloaded by this poll; the next poll fetches it",
            )
        });
        futures::future::ready(found).boxed()
    }
}
