//! One poll of a bucket: the listing merged with what the state file
//! recorded. An object whose stamp did not move is observed as recorded
//! (no GET); one whose stamp moved is read once and hashed, and only the
//! bytes that differ from what the target holds are kept for the push.

use std::collections::HashMap;

use bytes::Bytes;
use futures::StreamExt;

use super::client::Client;
use super::config::S3Config;
use super::listing::{Failure, Listed, Listing};
use super::object::{get, Object, Recorded};
use crate::source::{front_matter, KnownFacts, Observed, ScanResult, Skipped};
use crate::state::CachedItem;

/// GETs in flight at once.
const READS: usize = 8;

/// A poll's findings and the bodies to upload.
#[derive(Default)]
pub struct Polled {
    pub scan: ScanResult,
    pub bodies: HashMap<String, Bytes>,
}

/// What the pass asks of the poll besides the listing.
pub struct Against<'a> {
    pub cached: &'a HashMap<String, CachedItem>,
    /// Read every object, trusting no stamp (`--checksum`).
    pub checksum: bool,
    pub refuses: &'a (dyn Fn(&str) -> Option<String> + Send + Sync),
}

pub async fn poll(client: &Client, cfg: &S3Config, listing: Listing, with: Against<'_>) -> Polled {
    let mut out = Polled::default();
    if let Some(failure) = &listing.failure {
        protect_all(&mut out.scan, cfg, failure);
    }
    let mut to_read = Vec::new();
    for listed in listing.entries {
        if !cfg.selects(&listed.key) {
            continue;
        }
        if let Some(reason) = refused(cfg, &listed, with.refuses) {
            out.scan.protected.push(listed.key.clone());
            out.scan.skipped.push(Skipped {
                path: listed.key,
                reason,
            });
            continue;
        }
        match unmoved(with.cached.get(&listed.key), &listed).filter(|_| !with.checksum) {
            Some(known) => out.scan.items.push(known.observed_again(listed.key)),
            None => to_read.push(listed),
        }
    }
    let reads = to_read.into_iter().map(|listed| async move {
        let read = get(client, &listed.key, cfg.max_file_size).await;
        (listed, read)
    });
    let mut reads = futures::stream::iter(reads).buffer_unordered(READS);
    while let Some((listed, read)) = reads.next().await {
        out.read(cfg, with.cached, listed, read);
    }
    out.scan.items.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    out.scan.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// A listing that is not the whole bucket protects every record: absent
/// keys prove nothing.
fn protect_all(scan: &mut ScanResult, cfg: &S3Config, failure: &Failure) {
    tracing::warn!(bucket = %cfg.bucket, "{}", failure.message());
    scan.protected.push(String::new());
    scan.skipped.push(Skipped {
        path: format!("s3://{}/{}", cfg.bucket, cfg.prefix),
        reason: failure.message().to_owned(),
    });
}

/// Why an object is not read: too large, or of a type the sink refuses.
fn refused(
    cfg: &S3Config,
    listed: &Listed,
    refuses: &(dyn Fn(&str) -> Option<String> + Send + Sync),
) -> Option<String> {
    if listed.stamp.size > cfg.max_file_size {
        return Some(format!(
            "{} bytes is over max_file_size ({} bytes)",
            listed.stamp.size, cfg.max_file_size
        ));
    }
    refuses(&listed.key)
}

/// The recorded facts of an object whose stamp is the one recorded.
fn unmoved<'c>(cached: Option<&'c CachedItem>, listed: &Listed) -> Option<&'c KnownFacts> {
    let c = cached.filter(|c| c.present)?;
    let known = c.facts.as_ref()?;
    let recorded = Recorded::parse(known.validator.as_deref())?;
    (recorded.stamp == listed.stamp).then_some(known)
}

impl Polled {
    /// What one GET found: the object observed (its body kept when the
    /// target does not hold these bytes), or a failure that protects it.
    fn read(
        &mut self,
        cfg: &S3Config,
        cached: &HashMap<String, CachedItem>,
        listed: Listed,
        read: Result<Object, String>,
    ) {
        let object = match read {
            Ok(object) => object,
            Err(reason) => {
                tracing::warn!(key = %listed.key, %reason, "skipped");
                self.scan.protected.push(listed.key.clone());
                self.scan.skipped.push(Skipped {
                    path: listed.key,
                    reason,
                });
                return;
            }
        };
        let hash = crate::source::folder::hash_bytes(&object.body);
        let key = listed.key;
        let recorded = Recorded {
            stamp: listed.stamp,
            content_type: object.content_type,
            bucket: cfg.bucket.clone(),
            meta: object.meta,
        };
        self.scan.hashed_files += 1;
        self.scan.hashed_bytes += object.body.len() as u64;
        let pushed = cached.get(&key).and_then(|c| c.pushed_hash.as_ref());
        if pushed != Some(&hash) {
            self.bodies.insert(key.clone(), object.body.clone());
        }
        self.scan.items.push(Observed {
            size: object.body.len() as u64,
            mtime_ns: recorded.stamp.mtime_ns(),
            identity: 0,
            hash,
            front_matter: if front_matter::is_markdown(&key) {
                let head = &object.body[..object.body.len().min(front_matter::HEAD_BYTES)];
                front_matter::read(&key, head)
            } else {
                None
            },
            rehashed: true,
            racy: false,
            validator: Some(recorded.to_json()),
            key,
        });
    }
}
