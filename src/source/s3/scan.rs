//! One poll of a bucket, through the generic seam: the listing as
//! `source::Listed` (each object stamped), triage and slices from
//! `source::sliced`, and `ObjectReader`, which GETs and hashes what a
//! slice's stamps cannot vouch for. An object whose stamp did not move
//! costs no GET; the bytes read are kept for that slice's push.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::config::Filter;
use super::listing::{Entry, Listing};
use super::object::{Kept, Object};
use crate::sink::redact::Redactor;
use crate::sink::{ErrorClass, SinkError};
use crate::source::{
    front_matter, sliced, Content, Listed, Observed, ReadChanged, Recorded, ScanInput, ScanResult,
    Skipped, Stamped, Survey, Trust,
};
use crate::state::StateError;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

/// GETs in flight at once.
const READS: usize = 8;

/// How a kind reads one object (or file) in one request.
pub trait Fetch: Sync {
    fn get<'a>(&'a self, key: &'a str, max: u64) -> BoxFuture<'a, Result<Object, String>>;
}

/// What is polled: how messages name it, the bucket (where there is
/// one), which keys are mirrored and how large they may be.
pub struct Place {
    pub label: String,
    pub bucket: Option<String>,
    pub filter: Filter,
    pub max_file_size: u64,
}

impl Stamped for Entry {
    fn key(&self) -> &str {
        &self.key
    }

    /// The row keeps the stamp as JSON in its `validator`: a row without
    /// one (or another kind's) is no stamp of this object.
    fn stamped_as(&self, recorded: &impl Recorded) -> bool {
        Kept::parse(recorded.tag()).is_some_and(|kept| kept.stamp == self.stamp)
    }
}

/// The listing as the seam takes it: the selected objects, those over
/// `max_file_size` left out (and protected), and a listing that is not
/// the whole bucket protecting every record, since absent keys then prove
/// nothing. `redact` cleans what the report repeats of a server's words.
fn listed(place: &Place, listing: Listing, redact: &Redactor) -> Listed<Entry> {
    let mut listed = Listed::default();
    if let Some(failure) = &listing.failure {
        let reason = redact.text(failure.message());
        tracing::warn!(source = %place.label, "{reason}");
        listed.protected.push(String::new());
        listed.skipped.push(Skipped {
            path: place.label.clone(),
            reason,
        });
    }
    for entry in listing.entries {
        if !place.filter.selects(&entry.key) {
            continue;
        }
        if entry.stamp.size > place.max_file_size {
            let reason = format!(
                "{} bytes is over max_file_size ({} bytes)",
                entry.stamp.size, place.max_file_size
            );
            listed.skip(&entry.key, reason);
            continue;
        }
        listed.entries.push(entry);
    }
    listed
}

/// Reads a slice's objects: one GET each, `READS` at a time, hashed; the
/// bodies wait in `bodies` for that slice's push.
struct ObjectReader<F> {
    fetch: F,
    bucket: Option<String>,
    max: u64,
    redact: Arc<Redactor>,
    /// The bytes of the slice last read, taken by its `content`.
    bodies: Arc<Mutex<HashMap<String, Bytes>>>,
}

impl<F: Fetch + Clone + Send + 'static> ReadChanged for ObjectReader<F> {
    type Entry = Entry;

    fn read(&self, entries: Vec<Entry>) -> BoxFuture<'static, ScanResult> {
        let (fetch, bucket, max) = (self.fetch.clone(), self.bucket.clone(), self.max);
        let (bodies, redact) = (self.bodies.clone(), self.redact.clone());
        async move {
            let fetch = &fetch;
            let reads = entries.into_iter().map(|entry| async move {
                let read = fetch.get(&entry.key, max).await;
                (entry, read)
            });
            let mut reads = futures::stream::iter(reads).buffer_unordered(READS);
            let mut scan = ScanResult::default();
            let mut read = HashMap::new();
            while let Some((entry, got)) = reads.next().await {
                match got {
                    Ok(object) => {
                        let observed = observe(&mut scan, bucket.as_deref(), entry, &object);
                        read.insert(observed.key.clone(), object.body);
                        scan.items.push(observed);
                    }
                    Err(reason) => {
                        let reason = redact.text(&reason);
                        tracing::warn!(key = %entry.key, %reason, "skipped");
                        scan.protected.push(entry.key.clone());
                        scan.skipped.push(Skipped {
                            path: entry.key,
                            reason,
                        });
                    }
                }
            }
            *bodies.lock().expect("no reader panics") = read;
            scan
        }
        .boxed()
    }

    fn content(&self) -> Box<dyn Content + Send + Sync> {
        Box::new(Bodies {
            fetch: self.fetch.clone(),
            bodies: std::mem::take(&mut *self.bodies.lock().expect("no reader panics")),
            max: self.max,
            redact: self.redact.clone(),
        })
    }
}

/// What one GET found: the object observed, its stamp and the facts the
/// metadata mapping may name kept in the row's `validator`.
fn observe(scan: &mut ScanResult, bucket: Option<&str>, entry: Entry, object: &Object) -> Observed {
    let hash = crate::source::folder::hash_bytes(&object.body);
    let key = entry.key;
    let kept = Kept {
        stamp: entry.stamp,
        content_type: object.content_type.clone(),
        bucket: bucket.map(str::to_owned),
        meta: object.meta.clone(),
    };
    scan.hashed_files += 1;
    scan.hashed_bytes += object.body.len() as u64;
    Observed {
        size: object.body.len() as u64,
        mtime_ns: kept.stamp.mtime_ns(),
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
        validator: Some(kept.to_json()),
        key,
    }
}

/// A whole poll as the pass takes it, for a kind whose items an OpenDAL
/// listing names: the listing, then `source::sliced` (triage against the
/// cached rows, the settled skip, slices read by `ObjectReader`).
/// `redact` cleans what the report repeats of a server's words.
pub async fn survey<F: Fetch + Clone + Send + 'static>(
    input: ScanInput<'_>,
    listing: Listing,
    fetch: &F,
    place: &Place,
    redact: &Arc<Redactor>,
) -> Result<Survey, StateError> {
    let settled =
        input
            .state
            .plan_fingerprint(input.job, input.fingerprint, input.record_fingerprint)?;
    let listed = listed(place, listing, redact);
    let reader = ObjectReader {
        fetch: fetch.clone(),
        bucket: place.bucket.clone(),
        max: place.max_file_size,
        redact: redact.clone(),
        bodies: Arc::default(),
    };
    let trust = Trust {
        settled,
        deep: input.checksum,
    };
    sliced(&input, trust, listed, reader)
}

/// What a push uploads: the bytes its slice read, or (an upload owed from
/// an earlier poll, whose object did not move since) one GET now.
pub struct Bodies<F> {
    pub fetch: F,
    pub bodies: HashMap<String, Bytes>,
    pub max: u64,
    pub redact: Arc<Redactor>,
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
                        format!(
                            "{key}: {}; the next poll reads it again",
                            self.redact.text(&reason)
                        ),
                    )
                })
        }
        .boxed()
    }
}
