//! A bucket's listing: every object below the prefix as (key, stamp), in
//! key order, from plain ListObjectsV2 pages (1,000 objects a request, no
//! HEAD). A listing that stops part-way says so: absent keys then prove
//! nothing.

use futures::TryStreamExt;
use opendal::{ErrorKind, Operator};
use serde::{Deserialize, Serialize};

use super::config::S3Config;
use crate::source::remote::{Bound, Ended, MAX_LISTED};

/// What the listing says of an object: when any part moves, the object
/// is read again; while none does, it costs no GET.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// As the server lists it, quotes kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    pub size: u64,
    /// RFC 3339, as precise as the listing gives it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// Where versioning is on and the listing names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Stamp {
    /// The modification time in nanoseconds, as item rows keep it.
    pub fn mtime_ns(&self) -> i64 {
        self.last_modified
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map_or(0, |t| t.as_nanosecond() as i64)
    }
}

/// One object below the prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The object's path below the prefix.
    pub key: String,
    pub stamp: Stamp,
}

/// A bucket's objects in key order, and why the listing ended early.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<Entry>,
    pub failure: Option<Failure>,
}

/// Why a listing is not the whole bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The bucket is missing, or the credentials may not list it.
    Unavailable(String),
    /// It stopped part-way (a server error, a broken page, the network).
    Stopped(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Unavailable(m) | Failure::Stopped(m) => m,
        }
    }
}

/// Lists every object below the operator's root (recursively: a WebDAV
/// share folder by folder), within `bound`. Folder markers (keys ending in
/// `/`) are no objects; `failed` says what an error means for this kind,
/// and `label` names the store in messages.
pub async fn list(
    op: &Operator,
    bound: &Bound,
    label: &str,
    failed: impl Fn(&opendal::Error) -> Failure,
) -> Listing {
    let mut listing = Listing::default();
    bound.begin();
    let mut named = 0;
    let listed = async {
        let mut lister = op.lister_with("").recursive(true).await?;
        while let Some(entry) = lister.try_next().await? {
            named += 1;
            if named > MAX_LISTED {
                bound.too_many();
                break;
            }
            let meta = entry.metadata();
            if meta.is_dir() || entry.path().ends_with('/') || entry.path().is_empty() {
                continue;
            }
            listing.entries.push(Entry {
                key: entry.path().to_owned(),
                stamp: Stamp {
                    etag: meta.etag().map(str::to_owned),
                    size: meta.content_length(),
                    last_modified: meta.last_modified().map(|t| t.to_string()),
                    version: meta.version().map(str::to_owned),
                },
            });
        }
        Ok::<_, opendal::Error>(())
    }
    .await;
    listing.failure = ended(label, listed.err(), bound.ended(), failed);
    // ListObjectsV2 lists in key order; a server that does not (a folder
    // by folder walk) must not cost a wrong merge.
    if !listing.entries.is_sorted_by(|a, b| a.key < b.key) {
        listing.entries.sort_by(|a, b| a.key.cmp(&b.key));
        listing.entries.dedup_by(|a, b| a.key == b.key);
    }
    listing
}

/// Why a listing is not the whole store, if it is not: its bound first,
/// then a page the server refused after the first (the listing stopped
/// part-way, whatever the answer says of the credentials), then what the
/// error (or the first page's refusal, which OpenDAL may have taken for an
/// empty folder) means for the kind.
fn ended(
    label: &str,
    error: Option<opendal::Error>,
    ended: Option<Ended>,
    failed: impl Fn(&opendal::Error) -> Failure,
) -> Option<Failure> {
    let part_way = |what: String| {
        Failure::Stopped(format!(
            "listing {label} stopped part-way ({what}); nothing is taken for deleted until a listing completes"
        ))
    };
    match (ended, error) {
        (Some(Ended::Endless(why)), _) => Some(Failure::Stopped(format!(
            "listing {label} does not end: {why}; it was stopped there and nothing is taken for deleted until a listing completes"
        ))),
        (Some(Ended::Refused { page, status, first: false }), e) => Some(part_way(match e {
            Some(e) => format!("{page} answered HTTP {status}: {}", short(&e)),
            None => format!("{page} answered HTTP {status}"),
        })),
        (_, Some(e)) => Some(failed(&e)),
        (Some(Ended::Refused { status, .. }), None) => {
            let kind = match status {
                404 => ErrorKind::NotFound,
                401 | 403 => ErrorKind::PermissionDenied,
                _ => ErrorKind::Unexpected,
            };
            Some(failed(&opendal::Error::new(kind, format!("status: {status}"))))
        }
        (None, None) => None,
    }
}

/// What a failed bucket listing means, in words that name the setting to
/// look at (never a credential's value: OpenDAL's errors carry none).
pub fn bucket_failure(cfg: &S3Config, e: &opendal::Error) -> Failure {
    let at = format!("s3://{}/{}", cfg.bucket, cfg.prefix);
    match e.kind() {
        // OpenDAL gives S3's NoSuchBucket as ConfigInvalid.
        ErrorKind::NotFound | ErrorKind::ConfigInvalid => Failure::Unavailable(format!(
            "bucket {:?} was not found at the endpoint ({}); nothing is taken for deleted",
            cfg.bucket, cfg.places.bucket
        )),
        ErrorKind::PermissionDenied => Failure::Unavailable(format!(
            "listing {at} was refused (403: wrong or unauthorised credentials, {}); nothing is taken for deleted",
            cfg.places.credential
        )),
        _ => Failure::Stopped(format!(
            "listing {at} stopped part-way ({}); nothing is taken for deleted until a listing completes",
            short(e)
        )),
    }
}

/// An OpenDAL error in one line: its kind and message, without the
/// request and answer it carries as context.
pub fn short(e: &opendal::Error) -> String {
    let message: String = e.message().chars().take(300).collect();
    format!(
        "{}: {}",
        e.kind(),
        message.lines().next().unwrap_or_default()
    )
}
