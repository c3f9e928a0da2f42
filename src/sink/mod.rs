//! Sinks: the upstreams kbsync mirrors into. Each lives in its own folder
//! (`dify/`, `pai/`, `sharely/`) with its config section, its client and
//! its verbs (`verbs.rs`), and its hooks where it takes content; the
//! executor (`execute::push`) carries a plan out through them. What they
//! share stays here: the HTTP transport (`http.rs`: client, rate limit,
//! retries, reading an answer within a cap), bounds on listings that page
//! (`paging.rs`), bisection of refused batches, the outcome of a push,
//! and the typed errors that say whether to retry.
//!
//! A `[sync.X]` table becomes a `SinkConfig` in `registry.rs`, the only
//! place that names every upstream; the pass sees nothing but the traits.

pub mod bisect;
pub mod dify;
pub mod http;
pub mod openwebui;
mod outcome;
pub mod paging;
pub mod pai;
pub mod rate;
pub mod redact;
pub mod registry;
pub mod sharely;
pub mod verbs;

pub use outcome::{record_failure, Failure, Outcome, PushError};

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;

use futures::future::LocalBoxFuture;

use crate::config::JobConfig;
use crate::metadata::Metadata;
pub use crate::model::Capabilities;
use crate::plan::{Op, Plan};
use crate::secret::SecretSource;
use crate::state::{CachedItem, RemoteStatus, State};
use std::fmt;
use std::time::Duration;

/// How to react to a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Network trouble, 5xx, 429, rate limits: retry with backoff.
    Transient,
    /// The request itself is refused (400, 413, 415, …): report it for the
    /// item, do not retry in this pass.
    Permanent,
    /// Nothing else in this job can succeed (bad key, missing dataset, API
    /// access disabled): stop the job's pass with a clear message.
    Fatal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkError {
    pub class: ErrorClass,
    pub status: Option<u16>,
    /// The upstream's error code (`file_too_large`, `invalid_param`…), or a
    /// local one (`network`, `bad_response`).
    pub code: String,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "HTTP {s} {}: {}", self.code, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

impl std::error::Error for SinkError {}

/// The code of `SinkError::unsupported`.
const UNSUPPORTED: &str = "unsupported";

impl SinkError {
    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }

    /// The upstream said "too many requests": 429, or Dify's rate-limit 403.
    pub fn is_rate_limit(&self) -> bool {
        self.status == Some(429)
            || (self.status == Some(403) && self.message.to_lowercase().contains("rate limit"))
    }

    /// The sink cannot do this at all (its API has no such call, or the
    /// records are not kbsync's): nothing was sent, and nothing is to be
    /// taken as done. `why` says so to the user.
    pub fn unsupported(why: impl Into<String>) -> Self {
        SinkError::local(ErrorClass::Permanent, UNSUPPORTED, why)
    }

    /// Whether this says the upstream cannot do it at all (`unsupported`).
    pub fn is_unsupported(&self) -> bool {
        self.status.is_none() && self.code == UNSUPPORTED
    }

    pub fn local(class: ErrorClass, code: &str, message: impl Into<String>) -> Self {
        SinkError {
            class,
            status: None,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }
}

/// Where the config names the target and its credential: an upstream's
/// refusal of either is reported at that setting (file:line:column, key).
#[derive(Debug, Clone, Default)]
pub struct Places {
    pub target: String,
    pub credential: String,
}

impl Places {
    /// The setting a refusal of the target speaks of: 401 and 403 (and a
    /// signature or access key refused, which Alibaba Cloud answers 400)
    /// the credential; anything else (404: no such target) the target.
    pub fn of(&self, e: &SinkError) -> &str {
        let key_refused = ["Signature", "AccessKey"]
            .iter()
            .any(|c| e.code.contains(c));
        match e.status {
            Some(401 | 403) => &self.credential,
            _ if key_refused => &self.credential,
            _ => &self.target,
        }
    }
}

/// A validated `[sync.X]` section: everything the pass needs to know about
/// an upstream before talking to it. Built by `registry::validate`.
/// `Any`, so code that knows which sink it configured (benches) can
/// downcast it.
pub trait SinkConfig: std::any::Any + std::fmt::Debug + Send + Sync {
    /// The section's name (`dify`, `pai`, …), for messages.
    fn kind(&self) -> &'static str;

    fn capabilities(&self) -> Capabilities;

    /// Where the job's records live. When it changes, the upstream ids the
    /// state file holds for the job mean nothing any more.
    fn identity(&self) -> String;

    /// Where records live and the prefix of their names there, with the
    /// setting that sets it: two jobs whose records could take each
    /// other's names (same place, one prefix starting the other) are
    /// refused at load. `None`: records are named in the config itself.
    fn namespace(&self) -> Option<(String, String, &'static str)> {
        None
    }

    /// The upstream record the config itself binds `key` to (an id table in
    /// the section), if any.
    fn bound(&self, _key: &str) -> Option<String> {
        None
    }

    /// What else in the section changes the plan (bindings): part of the
    /// plan fingerprint that decides whether settled items stay trusted.
    fn plan_inputs(&self) -> String {
        String::new()
    }

    /// Why an item with no upstream record is skipped, for sinks that can
    /// neither take content nor create records.
    fn unbound_reason(&self) -> String {
        format!("no {} record to attach its metadata to", self.kind())
    }

    /// Why the upstream would refuse the item outright (a file type it does
    /// not take): it is reported as skipped, never sent.
    fn refuses_item(&self, _key: &str) -> Option<String> {
        None
    }

    /// A metadata field name the upstream refuses to set, and why.
    fn refuses_field(&self, _name: &str) -> Option<String> {
        None
    }

    /// Where the target and the credential are set.
    fn places(&self) -> &Places;
    /// Where each credential of the section comes from, with its
    /// settings' stem (`api_key` for `api_key_file`, …): the files among
    /// them are kbsync's own, never mirrored by any job.
    fn credentials(&self) -> Vec<(&'static str, &SecretSource)>;

    /// Loads the credentials and builds the client. The sink keeps its own
    /// config, so a client is never paired with another upstream's section.
    /// The error says what is wrong with the credentials or the client,
    /// never a secret.
    fn connect(&self) -> Result<Box<dyn Sink>, String>;
}

/// An upstream record as a listing shows it, for the audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    /// The name the sink gives a key's record (`Sink::record_name`).
    pub name: String,
    /// `None` for sinks without status.
    pub standing: Option<RemoteStatus>,
    /// The upstream's processing state (Dify's `indexing_status`).
    pub state: Option<String>,
    /// Why the upstream's processing failed, as it says (Dify's `error`).
    pub error: Option<String>,
    /// The metadata the record holds (JSON), where it holds only what its
    /// upload carried (Open WebUI): a record adopted as an unconfirmed
    /// upload's own keeps it, rather than being uploaded again to carry
    /// it. `None` elsewhere.
    pub carries: Option<String>,
}

/// A connected upstream. One per job, kept across passes (a key rotated on
/// disk is read again on reload).
pub trait Sink: Send + Sync {
    /// The transport every call of the sink goes through.
    fn transport(&self) -> &http::Transport;

    /// HTTP requests sent so far, retries included.
    fn requests_sent(&self) -> u64 {
        self.transport().requests_sent()
    }

    /// Until when no request is sent because the upstream looked down.
    fn resting_until(&self) -> Option<std::time::Instant> {
        self.transport().resting_until()
    }

    /// Marks the target as this mirror's and says which other mirror's
    /// mark it already holds, if any: two kbsync instances (two state
    /// files) mirroring into one target under one name prefix would undo
    /// each other's work on every pass. `mark` is unique to a state file,
    /// a job and its name prefix. Sinks with no place for a mark answer
    /// `Ok(None)` and say so in the README.
    fn claim<'a>(&'a self, mark: &'a str) -> LocalBoxFuture<'a, Result<Option<String>, SinkError>>;

    /// One cheap call that proves the target exists and the credential
    /// reaches it, before a job is bound to a new target: a refusal here
    /// is a config error, and the binding the job had stays.
    fn check_target(&self) -> LocalBoxFuture<'_, Result<(), SinkError>>;

    /// Everything the upstream holds for the job (the audit), or `None`
    /// when its API cannot list. A listing that fails part way is an error:
    /// the audit never acts on half a listing.
    fn list(&self) -> LocalBoxFuture<'_, Result<Option<Vec<Listed>>, SinkError>> {
        futures::FutureExt::boxed_local(async { Ok(None) })
    }

    /// The same listing handed to `each` a page at a time, so that a
    /// dataset of a million records is never held whole; false when the
    /// API cannot list. An error from `each` stops the listing.
    fn list_pages<'a>(
        &'a self,
        each: &'a mut (dyn FnMut(Vec<Listed>) -> Result<(), SinkError> + 'a),
    ) -> LocalBoxFuture<'a, Result<bool, SinkError>> {
        futures::FutureExt::boxed_local(async move {
            match self.list().await? {
                Some(all) => each(all).map(|()| true),
                None => Ok(false),
            }
        })
    }

    /// Looks up the record of `key` by name: the audit checks a record
    /// that a listing missed before it takes it for gone. `Ok(None)` only
    /// when the upstream said it has none; a sink that cannot look answers
    /// `SinkError::unsupported`. No default: "not there" unasked would
    /// make the audit upload again what exists.
    fn find<'a>(&'a self, key: &'a str) -> LocalBoxFuture<'a, Result<Option<Listed>, SinkError>>;

    /// What the upstream can do, verb by verb: its capabilities are
    /// these verbs (`Verbs::capabilities`).
    fn verbs(&self) -> verbs::Verbs<'_>;

    /// The name `key`'s record has upstream.
    fn record_name(&self, key: &str) -> String {
        key.to_owned()
    }
}

/// The plan's metadata steps: each key, the record it is bound to (if
/// any) and its metadata.
pub fn metadata_ops(plan: &Plan) -> impl Iterator<Item = (&str, Option<&String>, &Metadata)> {
    plan.ops.iter().filter_map(|op| match op {
        Op::SetMetadata {
            key,
            doc_id,
            metadata,
        } => Some((key.as_str(), doc_id.as_ref(), metadata)),
        _ => None,
    })
}

/// `Sink::claim` of a sink with no place for a mark that would not show
/// up among the records: two mirrors are not detected there (see README,
/// Limits).
pub fn no_place_for_a_mark<'a>() -> LocalBoxFuture<'a, Result<Option<String>, SinkError>> {
    futures::FutureExt::boxed_local(async { Ok(None) })
}

/// What a push works with besides the plan.
pub struct PushContext<'a> {
    pub job: &'a JobConfig,
    pub state: &'a mut State,
    /// The rows the plan was made from.
    pub cached: &'a HashMap<String, CachedItem>,
    /// Set on shutdown: start no new upstream call; what is not done stays
    /// pending in the state file for the next pass.
    pub stop: &'a AtomicBool,
    /// Keys whose create was sent in an earlier pass and never confirmed:
    /// the record may exist, so it is looked up before anything else.
    pub suspects: &'a HashSet<String>,
    /// The audit listed the upstream at this pass's start and adopted the
    /// records it found under the suspects' names: that listing was the
    /// pass's look for them, and none is looked up again.
    pub audited: bool,
    /// Reads an item's content from the job's source.
    pub content: &'a (dyn crate::source::Content + Send + Sync),
}

/// MIME type by extension: Dify decides by the extension anyway, but a
/// right Content-Type helps proxies and logs; PAI records it.
/// How a refusal names a file type the upstream does not take: `.pdf`,
/// or `extension-less`.
pub fn file_type(ext: &str) -> String {
    if ext.is_empty() {
        "extension-less".to_owned()
    } else {
        format!(".{ext}")
    }
}

pub fn mime_for(name: &str) -> &'static str {
    match extension(name).as_str() {
        "md" | "markdown" | "mdx" => "text/markdown",
        "txt" | "text" => "text/plain",
        "html" | "htm" => "text/html",
        "csv" => "text/csv",
        "json" => "application/json",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "doc" => "application/msword",
        "xls" => "application/vnd.ms-excel",
        "epub" => "application/epub+zip",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// The lower-case extension of a path's file name ("" when none).
pub fn extension(path: &str) -> String {
    path.rsplit('/')
        .next()
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_file_type_is_named_by_its_extension_or_its_lack() {
        assert_eq!(file_type(&extension("a/notes.PDF")), ".pdf");
        assert_eq!(file_type(&extension("a/Makefile")), "extension-less");
    }

    #[test]
    fn only_kbsync_itself_says_unsupported() {
        assert!(SinkError::unsupported("x").is_unsupported());
        // An upstream's own answer with that code is not "unsupported".
        let answered = SinkError {
            status: Some(400),
            ..SinkError::unsupported("x")
        };
        assert!(!answered.is_unsupported());
    }
}
