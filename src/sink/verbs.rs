//! What an upstream can do, one trait per verb. Every upstream lists,
//! finds (on `Sink`) and sets metadata; content, records, status and
//! delete are traits of their own that a sink implements only when its
//! API has the call. A sink's capabilities are read from the verbs it
//! hands out (`Verbs::capabilities`), so no sink can claim a verb it
//! lacks, and no verb has a default that answers "done" unasked.
//!
//! Each verb is one kind of call: the executor (`execute`) decides what
//! to send and when, and records the answers in the state file.

use bytes::Bytes;
use futures::future::LocalBoxFuture;
use futures::FutureExt;

use super::SinkError;
use crate::config::JobConfig;
use crate::metadata::Metadata as Values;
use crate::model::Capabilities;
use crate::plan::StatusAction;
use crate::source::KnownFacts;
use crate::state::State;

/// One upstream call's future.
pub type Call<'a, T> = LocalBoxFuture<'a, Result<T, SinkError>>;

/// What the upstream said about one item of a batch it took: the batch
/// went through, this item did not.
#[derive(Debug, Clone)]
pub struct Refused {
    pub error: SinkError,
    /// The record is gone upstream: its id means nothing any more, and
    /// the next pass finds or creates it again.
    pub gone: bool,
}

/// Each item's answer inside a batch the upstream took, in the batch's
/// order.
pub type Answers<T> = Vec<Result<T, Refused>>;

/// One item's metadata and the record it goes to.
pub struct MetaSet<'a> {
    pub key: &'a str,
    pub id: &'a str,
    pub values: &'a Values,
    /// What kbsync last set on this same record (upstreams that merge
    /// metadata remove what is no longer mapped).
    pub before: Option<&'a Values>,
    /// The file as the pass recorded it (size, mtime, content hash).
    pub facts: Option<&'a KnownFacts>,
}

/// What `SetMetadata::prepare` readies for.
#[derive(Clone, Copy)]
pub struct Prepare<'a> {
    pub job: &'a JobConfig,
    /// Where ids learnt before are kept (Dify's field ids).
    pub state: &'a State,
    /// Each item's record id when known, and its values.
    pub wanted: &'a [(Option<&'a str>, &'a Values)],
}

/// Sets metadata onto existing records. Every upstream has it.
pub trait SetMetadata {
    /// Whether the API sets several items' metadata in one call.
    fn batches(&self) -> bool;

    /// How many items one call takes (1 without `batches`; a batch size
    /// of 1 may be configured where it has them).
    fn batch_size(&self) -> usize;

    /// How many calls may be in flight at once.
    fn concurrency(&self) -> usize;

    /// Readies the upstream for the values about to be set (Dify: the
    /// dataset's fields, created where missing; Sharely: the items'
    /// types). `Err` fails every item of the pass with it.
    fn prepare<'a>(&'a self, p: Prepare<'a>) -> Call<'a, ()>;

    /// Sets one batch (at most `batch_size` items). `Err`: the call was
    /// refused as a whole (a batch is then halved to find the refused
    /// item).
    fn set<'a>(&'a self, batch: &'a [MetaSet<'a>]) -> Call<'a, Answers<()>>;
}

/// A record that took content.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: String,
    /// Its name upstream.
    pub name: String,
    /// The upstream's processing job for it, to wait on (Dify's batch).
    pub batch: Option<String>,
}

/// Uploads content as records. The executor (`execute::with_content`)
/// decides what to upload and when; the hooks (`ContentHooks`) say where
/// this upstream differs.
pub trait Content: ContentHooks {
    /// How many uploads may be in flight at once.
    fn concurrency(&self) -> usize;

    /// Whether the record's metadata can be given only with its content
    /// (then `New::values` and `Replace::values` carry it, and no
    /// `SetMetadata` call follows the upload).
    fn metadata_with_content(&self) -> bool;

    /// A new record holding `n.bytes`.
    fn create<'a>(&'a self, n: New<'a>) -> Call<'a, Stored>;

    /// `bytes` in place of record `id`'s content. The record that holds
    /// them may be a new one (Sharely uploads anew, then deletes `id`).
    /// `pending`: the upstream's processing job the record may still be
    /// in (`Stored::batch` of its last upload).
    fn replace<'a>(&'a self, r: Replace<'a>) -> Call<'a, Stored>;
}

/// What `Content::create` uploads.
#[derive(Clone, Copy)]
pub struct New<'a> {
    pub key: &'a str,
    pub bytes: &'a Bytes,
    /// The record's metadata, for an upstream that takes it only with
    /// the content (`Content::metadata_with_content`); else `None`.
    pub values: Option<&'a Values>,
}

/// What `Content::replace` replaces.
#[derive(Clone, Copy)]
pub struct Replace<'a> {
    pub key: &'a str,
    pub id: &'a str,
    pub bytes: &'a Bytes,
    pub pending: Option<&'a str>,
    /// As `New::values`.
    pub values: Option<&'a Values>,
    /// The record holds these bytes already: only the metadata changes.
    pub unchanged: bool,
}

impl<'a> Replace<'a> {
    /// The same content as a new record.
    pub fn as_new(&self) -> New<'a> {
        New {
            key: self.key,
            bytes: self.bytes,
            values: self.values,
        }
    }
}

/// The records found under the name of a key being uploaded (a lookup
/// after an unconfirmed create, or the listing of a first create).
pub struct Found<'a> {
    pub key: &'a str,
    /// The record kbsync knows for the key, if any.
    pub known: Option<&'a str>,
    pub records: Vec<super::Listed>,
    /// The content hash of what is about to be uploaded.
    pub hash: &'a str,
    /// What an unconfirmed create of this key sent, if one did.
    pub sent: Option<&'a str>,
}

/// What becomes of the records found under a key's name.
pub enum Taken {
    /// None is kept: the content goes to a new record.
    Create,
    /// The content goes to record `id` (`adopted`: one kbsync did not
    /// know), and the records `stale` are deleted once it is stored.
    Update {
        id: String,
        adopted: bool,
        stale: Vec<String>,
    },
    /// The record holds the content already (an unconfirmed create's
    /// own): adopted as it is.
    Holds(Stored),
    /// Adopted, but it cannot take the content yet: its id is kept and
    /// the upload fails for now.
    Waits {
        id: String,
        error: SinkError,
    },
    Failed(SinkError),
}

/// One item of a status batch.
pub struct StatusItem<'a> {
    pub key: &'a str,
    pub id: &'a str,
    /// The upstream's processing job the record may still be in.
    pub pending: Option<&'a str>,
}

/// One status action's batches, sharing the waits they may make.
pub trait StatusPhase {
    /// Applies the action to `batch` (at most `Status::batch_size`),
    /// waiting where the upstream asks to; `Err` refuses it whole.
    fn set<'a>(&'a self, batch: &'a [StatusItem<'a>]) -> Call<'a, ()>;
}

/// The status phase of an upstream whose records have no status: every
/// batch is refused as unsupported, saying so (`what`: "Sharely items").
pub struct NoStatus(pub &'static str);

impl StatusPhase for NoStatus {
    fn set<'a>(&'a self, _: &'a [StatusItem<'a>]) -> Call<'a, ()> {
        futures::future::ready(Err(SinkError::unsupported(format!(
            "{} have no status: they cannot be enabled, disabled or archived",
            self.0
        ))))
        .boxed_local()
    }
}

/// A status change the upstream refused for one record.
pub struct Refusal<'a> {
    pub action: StatusAction,
    pub item: &'a StatusItem<'a>,
    pub error: SinkError,
    /// Unix seconds of kbsync's last status change to the record.
    pub changed_at: Option<i64>,
}

/// What a status change refused for one record means.
pub enum StatusRefused {
    /// The record failed processing and takes no such change: it is
    /// retired by deleting it (`SinkError`: the refusal, should the
    /// delete fail too).
    Errored(SinkError),
    Failed(SinkError),
}

/// Where one content upstream differs from another. None has a default:
/// each upstream says what it does.
pub trait ContentHooks {
    /// Unconfirmed creates looked up one by one, up to this many; more
    /// are found by one listing (0: always a listing).
    fn lookups(&self) -> usize;

    /// Whether every upload makes a new record (a replace too): then
    /// every upload, not only a create, is marked started before it is
    /// sent.
    fn uploads_create(&self) -> bool;

    /// What becomes of the records found under a key's name.
    fn take_found<'a>(&'a self, found: Found<'a>) -> LocalBoxFuture<'a, Taken>;

    /// Whether `e` says the record is gone upstream (its id means nothing
    /// any more: the next pass creates it again).
    fn gone(&self, e: &SinkError) -> bool;

    /// Whether `e` says the record failed processing and takes no content
    /// until it is removed.
    fn errored(&self, e: &SinkError) -> bool;

    /// The batches of one status action.
    fn status_phase(&self, action: StatusAction) -> Box<dyn StatusPhase + '_>;

    /// What a status change refused for one record means.
    fn status_refused<'a>(&'a self, r: Refusal<'a>) -> LocalBoxFuture<'a, StatusRefused>;
}

/// A record to create with its metadata, without content (PAI: a record
/// of a file already in storage, by URI).
pub struct NewRecord<'a> {
    pub key: &'a str,
    pub values: &'a Values,
    pub facts: Option<&'a KnownFacts>,
}

/// Creates records by name, without content.
pub trait Records {
    fn batch_size(&self) -> usize;

    /// Creates one batch; each applied item answers its new record's id.
    /// Sent once per pass: a create is never replayed blind.
    fn create<'a>(&'a self, batch: &'a [NewRecord<'a>]) -> Call<'a, Answers<String>>;
}

/// Enables, disables, archives or un-archives records.
pub trait Status {
    fn batch_size(&self) -> usize;

    /// Applies `action` to every record of `ids` (at most `batch_size`);
    /// the upstream takes or refuses the batch whole.
    fn set<'a>(&'a self, action: StatusAction, ids: &'a [&'a str]) -> Call<'a, ()>;
}

/// Deletes records.
pub trait Delete {
    /// How many ids one call takes.
    fn batch_size(&self) -> usize;

    /// How many calls may be in flight at once.
    fn concurrency(&self) -> usize;

    /// Deletes `ids` (at most `batch_size`); a record already gone counts
    /// as deleted. `Err`: the call was refused as a whole.
    fn delete<'a>(&'a self, ids: &'a [&'a str]) -> Call<'a, Answers<()>>;
}

/// The verbs one connected sink has.
#[derive(Clone, Copy)]
pub struct Verbs<'a> {
    pub metadata: &'a dyn SetMetadata,
    pub content: Option<&'a dyn Content>,
    pub records: Option<&'a dyn Records>,
    pub status: Option<&'a dyn Status>,
    pub delete: Option<&'a dyn Delete>,
}

impl Verbs<'_> {
    /// What these verbs can do, in the planner's words.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            content: self.content.is_some(),
            batch_metadata: self.metadata.batches(),
            status: self.status.is_some(),
            delete: self.delete.is_some(),
            create_records: self.records.is_some(),
            metadata_with_content: self.content.is_some_and(|c| c.metadata_with_content()),
        }
    }
}
