//! One poll of a bucket: the listing merged with what the state file
//! recorded. An object whose stamp did not move is observed as recorded
//! (no GET); one whose stamp moved is read once and hashed, and only the
//! bytes that differ from what the target holds are kept for the push.

use std::collections::HashMap;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use opendal::Operator;

use super::config::Filter;
use super::listing::{Failure, Listed, Listing};
use super::object::{Object, Recorded};
use crate::sink::{ErrorClass, SinkError};
use crate::source::{
    front_matter, Content, KnownFacts, Observed, ScanInput, ScanResult, Scanned, Skipped, Survey,
};
use crate::state::{CachedItem, StateError};

/// GETs in flight at once.
const READS: usize = 8;

/// A poll's findings and the bodies to upload.
#[derive(Default)]
pub struct Polled {
    pub scan: ScanResult,
    pub bodies: HashMap<String, Bytes>,
}

/// How a kind reads one object (or file) in one request.
pub trait Fetch: Sync {
    fn get<'a>(&'a self, key: &'a str, max: u64) -> BoxFuture<'a, Result<Object, String>>;
}

/// What is polled: how messages name it, the bucket (where there is
/// one), which keys are mirrored and how large they may be.
pub struct Place<'a> {
    pub label: String,
    pub bucket: Option<&'a str>,
    pub filter: &'a Filter,
    pub max_file_size: u64,
}

/// What the pass asks of the poll besides the listing.
pub struct Against<'a> {
    pub cached: &'a HashMap<String, CachedItem>,
    /// Read every object, trusting no stamp (`--checksum`).
    pub checksum: bool,
    pub refuses: &'a (dyn Fn(&str) -> Option<String> + Send + Sync),
}

pub async fn poll(
    fetch: &dyn Fetch,
    cfg: &Place<'_>,
    listing: Listing,
    with: Against<'_>,
) -> Polled {
    let mut out = Polled::default();
    if let Some(failure) = &listing.failure {
        protect_all(&mut out.scan, cfg, failure);
    }
    let mut to_read = Vec::new();
    for listed in listing.entries {
        if !cfg.filter.selects(&listed.key) {
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
        let read = fetch.get(&listed.key, cfg.max_file_size).await;
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
fn protect_all(scan: &mut ScanResult, cfg: &Place, failure: &Failure) {
    tracing::warn!(source = %cfg.label, "{}", failure.message());
    scan.protected.push(String::new());
    scan.skipped.push(Skipped {
        path: cfg.label.clone(),
        reason: failure.message().to_owned(),
    });
}

/// Why an object is not read: too large, or of a type the sink refuses.
fn refused(
    cfg: &Place,
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
        cfg: &Place,
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
            bucket: cfg.bucket.map(str::to_owned),
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

/// A whole poll as the pass takes it, for a kind whose items an
/// OpenDAL listing names: the cached rows, the listing (`failed` says
/// what its error means) merged with them, and the bodies to upload, as
/// one slice. `scrub` cleans what the report repeats of a server's words.
pub async fn survey<F: Fetch + Clone + Send + 'static>(
    input: ScanInput<'_>,
    op: &Operator,
    failed: impl Fn(&opendal::Error) -> Failure,
    fetch: &F,
    place: Place<'_>,
    scrub: impl Fn(&str) -> String,
) -> Result<Survey, StateError> {
    let cached = input.state.load_items_in(input.job, input.scope)?;
    let listing = super::listing::list(op, failed).await;
    let against = Against {
        cached: &cached,
        checksum: input.checksum,
        refuses: input.refuses,
    };
    let max = place.max_file_size;
    let mut polled = poll(fetch, &place, listing, against).await;
    for s in &mut polled.scan.skipped {
        s.reason = scrub(&s.reason);
    }
    let content = Box::new(Bodies {
        fetch: fetch.clone(),
        bodies: polled.bodies,
        max,
    });
    let scanned = Scanned {
        scan: polled.scan,
        cached,
        content,
    };
    Ok(Survey::Whole(Some(Box::new((
        input.scope.clone(),
        scanned,
    )))))
}

/// What a push uploads: the bytes this poll read, or (an upload owed from
/// an earlier poll, whose object did not move since) one GET now.
pub struct Bodies<F> {
    pub fetch: F,
    pub bodies: HashMap<String, Bytes>,
    pub max: u64,
}

impl<F: Fetch> Content for Bodies<F> {
    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes, SinkError>> {
        async move {
            if let Some(body) = self.bodies.get(key) {
                return Ok(body.clone());
            }
            self.fetch
                .get(key, self.max)
                .await
                .map(|o| o.body)
                .map_err(|reason| {
                    SinkError::local(
                        ErrorClass::Transient,
                        "unreadable",
                        format!("{key}: {reason}; the next poll reads it again"),
                    )
                })
        }
        .boxed()
    }
}
