//! Where a push reads the bytes it uploads: the folder itself, or the pages
//! a web poll downloaded. Either way a failure here is transient: whatever
//! happened since the scan (a file removed, renamed, its permissions
//! changed; a page not fetched) the next scan sees.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;

use super::fence::{Fence, Refused};
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
}

impl Content for FolderContent {
    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes, SinkError>> {
        async move {
            let path = self.root.join(key);
            let (fence, at) = (self.fence.clone(), path.clone());
            let read = tokio::task::spawn_blocking(move || {
                let mut bytes = Vec::new();
                let mut file = fence.open(&at)?;
                file.read_to_end(&mut bytes).map_err(Refused::Io)?;
                Ok(bytes)
            })
            .await
            .unwrap_or_else(|e| Err(Refused::Io(std::io::Error::other(e))));
            match read {
                Ok(b) => Ok(Bytes::from(b)),
                Err(Refused::Fenced(why)) => Err(SinkError::local(
                    ErrorClass::Transient,
                    "fenced",
                    format!(
                        "{} was not uploaded: {why}; the next scan reports it",
                        path.display()
                    ),
                )),
                Err(Refused::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(SinkError::local(
                        ErrorClass::Transient,
                        "vanished",
                        format!(
                            "{} disappeared before its upload; the next scan sees it gone",
                            path.display()
                        ),
                    ))
                }
                Err(Refused::Io(e)) => Err(SinkError::local(
                    ErrorClass::Transient,
                    "unreadable",
                    format!("cannot read {}: {e}", path.display()),
                )),
            }
        }
        .boxed()
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
