//! The Dify pusher: carries out a plan in phases that respect Dify's
//! rules — restore status before updating content (Dify only updates
//! available documents), upload with bounded concurrency with the batched
//! metadata sent beside it (`metadata.rs`), then batched status changes,
//! deletions. State is written after each confirmed step, so an
//! interrupted pass resumes where it was.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{FutureExt, StreamExt};

mod metadata;

use super::client::{gone, not_ready, DifyClient, NotReady, RemoteDoc};
use super::indexing;
use super::{DifyConfig, DifySink};
use crate::config::JobConfig;
use crate::plan::{Op, Plan, StatusAction};
use crate::sink::bisect::send_in_batches;
use crate::sink::verbs::{self, Status, Stored};
use crate::sink::{
    record_failure, ErrorClass, Failure, Outcome, PushContext, PushError, SinkError,
};
use crate::source::Content;
use crate::state::{CachedItem, RemoteStatus, State, StepKind};
use metadata::{Fields, MetaQueue};

pub(super) struct Pusher<'a> {
    job: &'a JobConfig,
    sink: &'a DifySink,
    dify: &'a DifyConfig,
    client: &'a DifyClient,
    state: &'a mut State,
    cached: &'a HashMap<String, CachedItem>,
    stop: &'a AtomicBool,
    suspects: &'a HashSet<String>,
    audited: bool,
    content: &'a (dyn Content + Send + Sync),
}

/// Why a document whose indexing failed is deleted, for the log.
const RECREATED: &str = "to create it again";
const RETIRED: &str = "as its file is retired";

/// Up to this many unconfirmed creates are looked up one by one; more
/// than that, and one listing of the whole dataset is cheaper.
const LOOKUP_LIMIT: usize = 20;

struct Upload<'p> {
    key: &'p str,
    /// Known document to update; `None` to create (or adopt).
    doc_id: Option<&'p str>,
}

/// One upload's key and operation, for what it ends with.
struct Attempt<'k> {
    key: &'k str,
    op: &'static str,
}

impl Attempt<'_> {
    fn failure(&self, error: SinkError) -> Failure {
        Failure {
            key: self.key.to_owned(),
            op: self.op,
            error,
        }
    }

    fn failed(&self, error: SinkError) -> Uploaded {
        Uploaded::Failed(self.failure(error))
    }

    /// Refused before anything was sent (unreadable, too large).
    fn not_sent(&self, error: SinkError) -> Uploaded {
        Uploaded::NotSent {
            key: self.key.to_owned(),
            failure: Some(self.failure(error)),
        }
    }

    /// A document adopted as the key's, whose content could not be sent.
    fn adopted_only(&self, doc_id: &str, name: &str, error: SinkError) -> Uploaded {
        Uploaded::AdoptedOnly {
            doc_id: doc_id.to_owned(),
            name: name.to_owned(),
            failure: self.failure(error),
        }
    }
}

/// What becomes of a document found under a new file's name.
enum Taken {
    /// Removed (its indexing failed): the file is created anew.
    Replace,
    /// Adopted: its content is updated.
    Update(String),
    /// The upload ends here (adopted as it is, or failed).
    Ended(Uploaded),
}

enum Uploaded {
    Done(Done),
    Failed(Failure),
    /// A document was adopted but could not take the content yet (still
    /// indexing, not available): its id is kept, so the next pass updates
    /// it instead of looking for it again.
    AdoptedOnly {
        doc_id: String,
        name: String,
        failure: Failure,
    },
    /// Nothing was sent for `key`: shutdown came first (no failure), or
    /// its file could not be read or was too large.
    NotSent {
        key: String,
        failure: Option<Failure>,
    },
}

/// A document that took its content.
struct Done {
    key: String,
    id: String,
    name: String,
    hash: String,
    /// Dify's indexing batch, when the upload started one.
    batch: Option<String>,
    adopted: bool,
    created: bool,
}

impl<'a> Pusher<'a> {
    pub fn new(ctx: PushContext<'a>, sink: &'a DifySink) -> Self {
        Pusher {
            job: ctx.job,
            sink,
            dify: &sink.cfg,
            client: &sink.client,
            state: ctx.state,
            cached: ctx.cached,
            stop: ctx.stop,
            suspects: ctx.suspects,
            audited: ctx.audited,
            content: ctx.content,
        }
    }

    pub async fn run(&mut self, plan: &Plan) -> Result<Outcome, PushError> {
        let mut out = Outcome::default();
        // Keys whose earlier step failed: later steps for them would act on
        // a document in the wrong state.
        let mut blocked: HashSet<String> = HashSet::new();

        let restore = status_ops(plan, true);
        if self.statuses(&restore, &mut out, &mut blocked).await? || self.stopping(&mut out) {
            return Ok(out);
        }

        let uploads: Vec<Upload> = plan
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::Create { key, .. } => Some(Upload { key, doc_id: None }),
                Op::UpdateContent { key, doc_id, .. } => Some(Upload {
                    key,
                    doc_id: Some(doc_id),
                }),
                _ => None,
            })
            .filter(|u| !blocked.contains(u.key))
            .collect();
        let mut meta = MetaQueue::new(plan, &uploads, &blocked, self.cached);
        let Some(fields) = self.fields(&meta, &mut out).await else {
            return Ok(out);
        };
        self.uploads(&uploads, &mut meta, &fields, &mut out, &mut blocked)
            .await?;
        if out.fatal.is_some() || self.stopping(&mut out) {
            return Ok(out);
        }
        if self.flush_metadata(&mut meta, &fields, &mut out).await? || self.stopping(&mut out) {
            return Ok(out);
        }

        let retire = status_ops(plan, false);
        if self.statuses(&retire, &mut out, &mut blocked).await? || self.stopping(&mut out) {
            return Ok(out);
        }

        let deletes = plan.deletes();
        self.deletes(&deletes, &mut out).await?;
        if self.stopping(&mut out) {
            return Ok(out);
        }

        for op in &plan.ops {
            if let Op::Forget { key } = op {
                if self.suspects.contains(key) {
                    if let Err(e) = self.remove_orphan(key).await {
                        let fatal = e.class == ErrorClass::Fatal;
                        // Recorded on the unconfirmed create's own row, so
                        // its backoff grows while the lookup keeps failing.
                        self.fail(&mut out, key, "create", e.clone())?;
                        if fatal {
                            out.fatal = Some(e);
                            return Ok(out);
                        }
                        continue;
                    }
                }
                self.state.forget(&self.job.name, key)?;
                out.forgotten += 1;
            }
        }
        Ok(out)
    }

    /// An item that vanished while its create was unconfirmed: if the
    /// create was applied after all, that document mirrors nothing now.
    async fn remove_orphan(&self, key: &str) -> Result<(), SinkError> {
        let name = self.dify.document_name(key);
        let found = if self.audited {
            // In the audit's listing, among the records no item claimed.
            self.state
                .take_unclaimed(&name)
                .map_err(|e| SinkError::local(ErrorClass::Fatal, "state", e.to_string()))?
                .map(|l| l.id)
        } else {
            self.client.find_by_name(&name).await?.map(|d| d.id)
        };
        if let Some(id) = found {
            tracing::info!(%key, document = %id, "removing the document of an unconfirmed create whose file is gone");
            match self.client.delete_document(&id).await {
                Err(e) if e.status != Some(404) => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    fn stopping(&self, out: &mut Outcome) -> bool {
        if self.stop.load(Ordering::SeqCst) {
            out.interrupted = true;
        }
        out.interrupted
    }

    fn fail(
        &self,
        out: &mut Outcome,
        key: &str,
        op: &'static str,
        mut error: SinkError,
    ) -> Result<(), PushError> {
        // A document deleted upstream (by hand): its id means nothing now.
        // Forgotten, so the next pass creates it again; never parked.
        if gone(&error) && op != "delete" {
            self.state.clear_doc_id(&self.job.name, key)?;
            error.class = ErrorClass::Transient;
            error.message = format!(
                "{} (the document is gone upstream; the next pass creates it again)",
                error.message
            );
        }
        record_failure(self.state, out, &self.job.name, key, op, error)
    }

    /// Batched status changes, grouped by action. Returns true on a fatal error.
    async fn statuses(
        &mut self,
        ops: &[(&str, &str, StatusAction)],
        out: &mut Outcome,
        blocked: &mut HashSet<String>,
    ) -> Result<bool, PushError> {
        let mut by_action: BTreeMap<StatusAction, Vec<(&str, &str)>> = BTreeMap::new();
        for (key, doc, action) in ops {
            // Dify refuses to disable a document whose indexing failed
            // ("not completed"); one the audit found errored is removed
            // outright, without the refusal first.
            if *action == StatusAction::Disable && self.failed_upstream(key) {
                self.remove_errored_item(key, doc, out, blocked).await?;
                continue;
            }
            by_action.entry(*action).or_default().push((key, doc));
        }
        for (action, items) in by_action {
            let sink = self.sink;
            let client = self.client;
            let pending = self.pending_batches();
            let wait_limit = self.dify.indexing_wait;
            let lock_waits = indexing::LockWaits::new(self.dify.calls.retry.min_delay);
            let lock_waits = &lock_waits;
            let r = send_in_batches(&items, self.dify.batch_size, |chunk| {
                let ids: Vec<&str> = chunk.iter().map(|(_, d)| *d).collect();
                let pending = &pending;
                async move {
                    // Dify refuses status changes while a document indexes
                    // an upload (wait on its batch) or while the index task
                    // of an earlier enable/disable runs ("being indexed":
                    // a lock that an idle worker lifts in under a second and
                    // that can stand 10 minutes; waits of some seconds,
                    // then the retry is timed after it, see `locked`).
                    let mut waits = client.waits("set_status");
                    let mut batches_waited = false;
                    loop {
                        let mut e = match Status::set(sink, action, &ids).await {
                            Err(e) if not_ready(&e).is_some() => e,
                            r => return r,
                        };
                        // The whole batch waits: the documents a retire
                        // and revive locked were changed together.
                        if not_ready(&e) == Some(NotReady::BeingIndexed) {
                            match lock_waits.next() {
                                Some(pause) => {
                                    tracing::debug!(action = action.as_str(), pause_secs = pause.as_secs_f64(), "status change locked upstream while Dify re-indexes; waiting");
                                    tokio::time::sleep(pause).await;
                                    continue;
                                }
                                None => return Err(e),
                            }
                        }
                        let batches: Vec<&str> = chunk
                            .iter()
                            .filter_map(|(key, _)| pending.get(*key).copied())
                            .collect();
                        if !batches_waited && !batches.is_empty() {
                            for batch in batches {
                                indexing::wait(client, batch, wait_limit, action.as_str(), &e)
                                    .await?;
                            }
                            batches_waited = true;
                            continue;
                        }
                        // Several documents: let the batch be halved, so the
                        // one that is busy waits alone and the rest go.
                        if chunk.len() > 1 {
                            return Err(e);
                        }
                        match waits.next(&mut e) {
                            Some(pause) => tokio::time::sleep(pause).await,
                            None => return Err(e),
                        }
                    }
                }
                .boxed_local()
            })
            .await;
            let keys: Vec<&str> = r.applied.iter().map(|&i| items[i].0).collect();
            self.state
                .record_status(&self.job.name, &keys, action.resulting_status())?;
            *out.status.entry(action.as_str()).or_default() += keys.len();
            for (i, e) in r.failed {
                let (key, doc) = items[i];
                self.status_failed(action, key, doc, e, out, blocked)
                    .await?;
            }
            if r.fatal.is_some() {
                out.fatal = r.fatal;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A status change Dify refused for `key` (document `doc`).
    async fn status_failed(
        &self,
        action: StatusAction,
        key: &str,
        doc: &str,
        e: SinkError,
        out: &mut Outcome,
        blocked: &mut HashSet<String>,
    ) -> Result<(), PushError> {
        // A disable of a document whose indexing failed is refused for
        // good ("not completed"); it mirrors nothing anyway, so retiring it
        // means deleting it.
        let errored = e.code == "indexing_error"
            || (not_ready(&e) == Some(NotReady::NotCompleted) && self.errored(key, doc).await);
        if action == StatusAction::Disable
            && errored
            && self.remove_errored(doc, RETIRED).await.is_ok()
        {
            self.state.forget(&self.job.name, key)?;
            out.deleted += 1;
            return Ok(());
        }
        blocked.insert(key.to_owned());
        let e = match not_ready(&e) {
            Some(NotReady::BeingIndexed) => {
                let changed = self.state.status_changed_at(&self.job.name, key)?;
                indexing::locked(e, changed)
            }
            _ => e,
        };
        self.fail(out, key, action.as_str(), e)
    }

    /// Retires `key`, whose document `doc` failed to index, by deleting
    /// it: such a document can be neither disabled nor updated, and it
    /// mirrors nothing.
    async fn remove_errored_item(
        &self,
        key: &str,
        doc: &str,
        out: &mut Outcome,
        blocked: &mut HashSet<String>,
    ) -> Result<(), PushError> {
        match self.remove_errored(doc, RETIRED).await {
            Err(e) => {
                blocked.insert(key.to_owned());
                self.fail(out, key, StatusAction::Disable.as_str(), e)
            }
            Ok(()) => {
                self.state.forget(&self.job.name, key)?;
                out.deleted += 1;
                Ok(())
            }
        }
    }

    /// Upload batches Dify may still be indexing, per key.
    fn pending_batches(&self) -> HashMap<&str, &str> {
        self.cached
            .values()
            .filter_map(|c| Some((c.key.as_str(), c.indexing_batch.as_deref()?)))
            .collect()
    }

    /// Creates and updates, several at a time, with each full batch of
    /// metadata sent as soon as its documents are uploaded (one metadata
    /// call at a time, beside the uploads).
    async fn uploads<'p>(
        &self,
        uploads: &[Upload<'p>],
        meta: &mut MetaQueue<'p>,
        fields: &Fields,
        out: &mut Outcome,
        blocked: &mut HashSet<String>,
    ) -> Result<(), PushError> {
        if uploads.is_empty() {
            return Ok(());
        }
        // The first time a job creates documents, learn what the dataset
        // already holds, so that documents from a lost state file (or made
        // by hand with the same names) are adopted rather than duplicated.
        // Later, only creates that may have been applied without an answer
        // need a look: one by one, or by one listing when there are many.
        let creates: Vec<&Upload> = uploads.iter().filter(|u| u.doc_id.is_none()).collect();
        let existing = self.existing(&creates, out, blocked).await?;
        if out.fatal.is_some() {
            return Ok(());
        }

        let ready: Vec<&Upload> = uploads
            .iter()
            .filter(|u| !blocked.contains(u.key))
            .collect();
        // Read before this pass marks its own sends.
        let sent = self.sent_before(&creates)?;
        let blind: Vec<&str> = ready
            .iter()
            .filter(|u| {
                u.doc_id.is_none()
                    && !existing
                        .as_ref()
                        .is_some_and(|all| all.contains_key(&self.dify.document_name(u.key)))
            })
            .map(|u| u.key)
            .collect();
        self.state
            .steps_started(&self.job.name, &blind, StepKind::Content)?;
        crate::progress::UPLOADING.add(ready.len());
        let jobs = ready
            .into_iter()
            .map(|u| self.upload_one(u, existing.as_ref(), sent.get(u.key).map(String::as_str)));
        let mut stream = futures::stream::iter(jobs).buffer_unordered(self.dify.upload_concurrency);
        let size = self.dify.batch_size;
        let mut sending = None;
        loop {
            if sending.is_none() && out.fatal.is_none() {
                if let (Some(batch), Ok(())) = (self.due(meta, fields, size, out)?, fields) {
                    sending = Some(Box::pin(metadata::send(self.sink, batch)));
                }
            }
            let result = tokio::select! {
                (ops, r) = async { sending.as_mut().expect("guarded").await }, if sending.is_some() => {
                    sending = None;
                    if self.settle_metadata(&ops, r, out)? {
                        break;
                    }
                    continue;
                }
                next = stream.next() => match next {
                    Some(result) => result,
                    None => break,
                },
            };
            crate::progress::UPLOADING.one_done();
            if self.uploaded(result, meta, out, blocked)? {
                break;
            }
        }
        // A batch still in flight is waited for, so what it applied is
        // recorded even when the uploads stopped.
        if let Some(sending) = sending {
            let (ops, r) = sending.await;
            self.settle_metadata(&ops, r, out)?;
        }
        Ok(())
    }

    /// Records one upload's result; true when the uploads must stop (a
    /// fatal answer).
    fn uploaded(
        &self,
        result: Uploaded,
        meta: &mut MetaQueue<'_>,
        out: &mut Outcome,
        blocked: &mut HashSet<String>,
    ) -> Result<bool, PushError> {
        match result {
            Uploaded::Done(d) => {
                self.state.record_content(
                    &self.job.name,
                    &d.key,
                    &d.id,
                    &d.name,
                    &d.hash,
                    d.batch.as_deref(),
                )?;
                if d.adopted {
                    out.adopted += 1;
                } else if d.created {
                    out.created += 1;
                } else {
                    out.updated += 1;
                }
                meta.uploaded(&d.key, &d.id);
            }
            Uploaded::NotSent { key, failure } => {
                // Marked started with the phase; a create never sent
                // must not send the next pass looking for it.
                if !self.suspects.contains(&key) {
                    self.state
                        .step_not_sent(&self.job.name, &key, StepKind::Content)?;
                }
                if let Some(Failure { key, op, error }) = failure {
                    meta.dropped(&key);
                    blocked.insert(key.clone());
                    self.fail(out, &key, op, error)?;
                }
            }
            Uploaded::AdoptedOnly {
                doc_id,
                name,
                failure,
            } => {
                self.state
                    .record_doc_id(&self.job.name, &failure.key, &doc_id, &name)?;
                meta.dropped(&failure.key);
                blocked.insert(failure.key.clone());
                let Failure { key, op, error } = failure;
                self.fail(out, &key, op, error)?;
            }
            Uploaded::Failed(f) => {
                if f.error.class == ErrorClass::Fatal {
                    out.fatal = Some(f.error.clone());
                }
                meta.dropped(&f.key);
                blocked.insert(f.key.clone());
                let Failure { key, op, error } = f;
                self.fail(out, &key, op, error)?;
                return Ok(out.fatal.is_some());
            }
        }
        Ok(false)
    }

    /// The dataset's documents by name, when creates need them: the first
    /// time a job creates documents (so documents from a lost state file,
    /// or made by hand with the same names, are adopted rather than
    /// duplicated), or when more creates may have been applied without an
    /// answer than are looked up one by one. A listing that fails holds
    /// the creates back (creating blind could duplicate documents).
    async fn existing(
        &self,
        creates: &[&Upload<'_>],
        out: &mut Outcome,
        blocked: &mut HashSet<String>,
    ) -> Result<Option<HashMap<String, RemoteDoc>>, PushError> {
        let unconfirmed = creates
            .iter()
            .filter(|u| self.suspects.contains(u.key))
            .count();
        // After this pass's audit, its listing was the look.
        let list_all = !creates.is_empty()
            && !self.audited
            && (!self.state.listed(&self.job.name)? || unconfirmed > LOOKUP_LIMIT);
        if !list_all {
            return Ok(None);
        }
        match self.client.list_documents().await {
            Ok(docs) => {
                self.state.mark_listed(&self.job.name)?;
                Ok(Some(
                    docs.into_iter().map(|d| (d.name.clone(), d)).collect(),
                ))
            }
            Err(e) if e.class == ErrorClass::Fatal => {
                out.fatal = Some(e);
                Ok(None)
            }
            Err(e) => {
                for u in creates {
                    blocked.insert(u.key.to_owned());
                    self.fail(out, u.key, "create", e.clone())?;
                }
                Ok(None)
            }
        }
    }

    /// What each unconfirmed create sent: a document found under its name
    /// holds those bytes.
    fn sent_before<'u>(
        &self,
        creates: &[&Upload<'u>],
    ) -> Result<HashMap<&'u str, String>, PushError> {
        let mut sent = HashMap::new();
        for u in creates.iter().filter(|u| self.suspects.contains(u.key)) {
            if let Some(hash) = self.state.sent_content(&self.job.name, u.key)? {
                sent.insert(u.key, hash);
            }
        }
        Ok(sent)
    }

    /// `sent`: the content hash of this key's unconfirmed create, if any.
    async fn upload_one(
        &self,
        u: &Upload<'_>,
        existing: Option<&HashMap<String, RemoteDoc>>,
        sent: Option<&str>,
    ) -> Uploaded {
        if self.stop.load(Ordering::SeqCst) {
            return Uploaded::NotSent {
                key: u.key.to_owned(),
                failure: None,
            };
        }
        let at = Attempt {
            key: u.key,
            op: if u.doc_id.is_some() {
                "update"
            } else {
                "create"
            },
        };
        let bytes = match self.read_for_upload(u.key).await {
            Ok(b) => b,
            Err(e) => return at.not_sent(e),
        };
        // What is recorded as pushed is what was sent, even if the file
        // changed since the scan; the next scan then sees the difference.
        let hash = crate::source::folder::hash_bytes(&bytes);
        let name = self.dify.document_name(u.key);
        let found = match (u.doc_id, existing) {
            (Some(_), _) => None,
            (None, Some(all)) => all.get(&name).cloned(),
            (None, None) if self.suspects.contains(u.key) && !self.audited => {
                match self.client.find_by_name(&name).await {
                    Ok(doc) => doc,
                    Err(e) => return at.failed(e),
                }
            }
            (None, None) => None,
        };
        let (doc_id, adopted) = match (u.doc_id, found) {
            (Some(id), _) => (Some(id.to_owned()), false),
            // Marked started with the whole phase, in `uploads`.
            (None, None) => (None, false),
            (None, Some(doc)) => match self.take_found(&at, doc, &name, &hash, sent).await {
                Taken::Replace => (None, false),
                Taken::Update(id) => (Some(id), true),
                Taken::Ended(uploaded) => return uploaded,
            },
        };
        match self
            .send(&at, doc_id.as_deref(), adopted, &name, &bytes)
            .await
        {
            Ok((stored, created)) => Uploaded::Done(Done {
                key: u.key.to_owned(),
                id: stored.id,
                name,
                hash,
                batch: stored.batch,
                adopted,
                created,
            }),
            Err(ended) => ended,
        }
    }

    /// The file's bytes, if they may be sent.
    async fn read_for_upload(&self, key: &str) -> Result<bytes::Bytes, SinkError> {
        let bytes = self.content.read(key).await?;
        if bytes.len() as u64 > self.job.max_file_size() {
            return Err(SinkError::local(
                ErrorClass::Permanent,
                "too_large",
                format!("{} bytes is over max_file_size", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    /// A document found under the name of a file kbsync has no document
    /// for: replaced when its indexing failed, taken as the create's
    /// result when it holds what an unconfirmed create sent, else adopted
    /// and updated once Dify is done indexing it.
    async fn take_found(
        &self,
        at: &Attempt<'_>,
        doc: RemoteDoc,
        name: &str,
        hash: &str,
        sent: Option<&str>,
    ) -> Taken {
        // A document whose indexing failed cannot be updated: replaced.
        if doc.indexing_status.as_deref() == Some("error") {
            return match self.remove_errored(&doc.id, RECREATED).await {
                Ok(()) => Taken::Replace,
                Err(e) => Taken::Ended(at.failed(e)),
            };
        }
        // The unconfirmed create's own document, holding these bytes
        // (Dify would refuse them again while it is queued): no wait.
        if sent == Some(hash) {
            if let Err(e) = self.make_available(&doc).await {
                return Taken::Ended(at.failed(e));
            }
            tracing::info!(key = %at.key, document = %doc.id, "the create sent before an interruption was applied: adopted with its content");
            return Taken::Ended(Uploaded::Done(Done {
                key: at.key.to_owned(),
                id: doc.id,
                name: name.to_owned(),
                hash: hash.to_owned(),
                batch: None,
                adopted: true,
                created: false,
            }));
        }
        if let Err(e) = self.wait_if_indexing(&doc, name).await {
            // Past the wait: keep its id and come back.
            return Taken::Ended(at.adopted_only(&doc.id, name, e));
        }
        if let Err(e) = self.make_available(&doc).await {
            return Taken::Ended(at.failed(e));
        }
        Taken::Update(doc.id)
    }

    /// Still indexing (created before a crash, say): Dify takes no update
    /// until it is done, so wait for it (up to `indexing_wait_secs`).
    async fn wait_if_indexing(&self, doc: &RemoteDoc, name: &str) -> Result<(), SinkError> {
        if !doc.indexing_status.as_deref().is_some_and(indexing::busy) {
            return Ok(());
        }
        indexing::wait_document(self.client, name, &doc.id, self.dify.indexing_wait).await
    }

    /// Sends the content: an update of `doc_id`, or a create. The document
    /// and its upload batch, and whether it was created; `Err` is the
    /// upload's result when it ended otherwise.
    async fn send(
        &self,
        at: &Attempt<'_>,
        doc_id: Option<&str>,
        adopted: bool,
        name: &str,
        bytes: &bytes::Bytes,
    ) -> Result<(Stored, bool), Uploaded> {
        let create = || async {
            verbs::Content::create(self.sink, at.key, bytes)
                .await
                .map(|r| (r, true))
        };
        let result = match doc_id {
            None => create().await,
            // The audit found its indexing failed: Dify would refuse the
            // update ("not available") yet keep the uploaded file.
            Some(id) if self.failed_upstream(at.key) => {
                self.remove_errored(id, RECREATED)
                    .await
                    .map_err(|e| at.failed(e))?;
                self.mark_started(at.key).map_err(|e| at.failed(e))?;
                create().await
            }
            Some(id) => match self.update(at.key, id, name, bytes).await {
                // Deleted upstream behind our back, or its indexing failed
                // (it can take no update): create it anew.
                Err(e) if gone(&e) || e.code == "indexing_error" => {
                    if e.code == "indexing_error" {
                        self.remove_errored(id, RECREATED)
                            .await
                            .map_err(|e| at.failed(e))?;
                    }
                    self.mark_started(at.key).map_err(|e| at.failed(e))?;
                    create().await
                }
                // Adopted but not ready for the content: keep its id.
                Err(e) if adopted => return Err(at.adopted_only(id, name, e)),
                other => other.map(|r| (r, false)),
            },
        };
        result.map_err(|e| at.failed(e))
    }

    /// Records that a create for `key` is about to be sent: until its
    /// answer is recorded, it may be applied upstream without our knowing.
    fn mark_started(&self, key: &str) -> Result<(), SinkError> {
        self.state
            .steps_started(&self.job.name, &[key], StepKind::Content)
            .map_err(|e| SinkError::local(ErrorClass::Fatal, "state", e.to_string()))
    }

    /// Whether the audit found that `key`'s document failed to index (a
    /// state file that cannot say is taken as no).
    fn failed_upstream(&self, key: &str) -> bool {
        self.state
            .failed_upstream(&self.job.name, key)
            .unwrap_or(false)
    }

    /// Whether `key`'s document `doc_id` is one whose indexing failed.
    async fn errored(&self, key: &str, doc_id: &str) -> bool {
        matches!(
            self.client.find_by_name(&self.dify.document_name(key)).await,
            Ok(Some(d)) if d.id == doc_id && d.indexing_status.as_deref() == Some("error")
        )
    }

    /// A document whose indexing ended in `error` can be neither updated
    /// nor disabled: it is deleted (`why`: to create it again from the
    /// file, or because its file is retired).
    async fn remove_errored(&self, doc_id: &str, why: &str) -> Result<(), SinkError> {
        tracing::info!(document = %doc_id, "deleting a document whose indexing failed, {why}");
        match self.client.delete_document(doc_id).await {
            Err(e) if !gone(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// update-by-file. Dify refuses it ("not available") while the previous
    /// upload is still indexing (then wait for that batch), and for a
    /// document disabled or archived behind our back (a status change
    /// applied whose answer was lost, or a hand edit: then make it
    /// available). Either way one more try; otherwise the refusal stays a
    /// transient failure for a later pass.
    async fn update(
        &self,
        key: &str,
        doc_id: &str,
        name: &str,
        bytes: &bytes::Bytes,
    ) -> Result<Stored, SinkError> {
        let e = match verbs::Content::replace(self.sink, key, doc_id, bytes).await {
            Err(e) if not_ready(&e) == Some(NotReady::Unavailable) => e,
            other => return other,
        };
        if let Some(batch) = self
            .cached
            .get(key)
            .and_then(|c| c.indexing_batch.as_deref())
        {
            indexing::wait(
                self.client,
                batch,
                self.dify.indexing_wait,
                &format!("update of {key}"),
                &e,
            )
            .await?;
        }
        match self.client.find_by_name(name).await? {
            Some(doc) if doc.id == doc_id && (doc.archived || !doc.enabled) => {
                tracing::info!(%key, document = %doc_id, "the document is not available upstream (disabled or archived); restoring it before the update");
                self.make_available(&doc).await?;
            }
            // Indexing an upload whose batch is not known here (a document
            // adopted after a crash): wait on the document itself.
            Some(doc)
                if doc.id == doc_id
                    && doc.indexing_status.as_deref().is_some_and(indexing::busy) =>
            {
                tracing::debug!(%key, document = %doc_id, refused = %e, "Dify refused an update of a document it is still indexing");
                indexing::wait_document(self.client, name, doc_id, self.dify.indexing_wait).await?;
            }
            _ => {}
        }
        verbs::Content::replace(self.sink, key, doc_id, bytes).await
    }

    /// An adopted document may be archived or disabled; Dify only updates
    /// available ones.
    async fn make_available(&self, doc: &RemoteDoc) -> Result<(), SinkError> {
        if doc.archived {
            self.client
                .set_status(StatusAction::UnArchive, &[&doc.id])
                .await?;
        }
        if !doc.enabled {
            self.client
                .set_status(StatusAction::Enable, &[&doc.id])
                .await?;
        }
        Ok(())
    }

    async fn deletes(&mut self, ops: &[(&str, &str)], out: &mut Outcome) -> Result<(), PushError> {
        let Some(refused) = self.unarchive_for_delete(ops, out).await? else {
            return Ok(());
        };
        let ops: Vec<(&str, &str)> = ops
            .iter()
            .filter(|(k, _)| !refused.contains(k))
            .copied()
            .collect();
        let job = &self.job.name;
        crate::execute::deletes(self.sink, job, self.state, self.stop, &ops, out).await
    }

    /// Dify refuses to delete an archived document (403
    /// `archived_document_immutable`): those the state file records as
    /// archived are un-archived first, `batch_size` per call. Returns the
    /// keys whose un-archive was refused (recorded as failed deletes), or
    /// `None` after a fatal error.
    async fn unarchive_for_delete<'k>(
        &mut self,
        ops: &[(&'k str, &'k str)],
        out: &mut Outcome,
    ) -> Result<Option<HashSet<&'k str>>, PushError> {
        let archived: Vec<(&str, &str)> = ops
            .iter()
            .filter(|(key, _)| {
                self.cached
                    .get(*key)
                    .is_some_and(|c| c.status == RemoteStatus::Archived)
            })
            .copied()
            .collect();
        let mut refused = HashSet::new();
        if archived.is_empty() || self.stop.load(Ordering::SeqCst) {
            return Ok(Some(refused));
        }
        let client = self.client;
        let r = send_in_batches(&archived, self.dify.batch_size, |chunk| {
            let ids: Vec<&str> = chunk.iter().map(|(_, d)| *d).collect();
            async move { client.set_status(StatusAction::UnArchive, &ids).await }.boxed_local()
        })
        .await;
        let keys: Vec<&str> = r.applied.iter().map(|&i| archived[i].0).collect();
        self.state.record_status(
            &self.job.name,
            &keys,
            StatusAction::UnArchive.resulting_status(),
        )?;
        for (i, e) in r.failed {
            refused.insert(archived[i].0);
            self.fail(out, archived[i].0, "delete", e)?;
        }
        if r.fatal.is_some() {
            out.fatal = r.fatal;
            return Ok(None);
        }
        Ok(Some(refused))
    }
}

/// The plan's status changes that bring documents back (`restoring`), or
/// those that retire them.
fn status_ops(plan: &Plan, restoring: bool) -> Vec<(&str, &str, StatusAction)> {
    plan.ops
        .iter()
        .filter_map(|op| match op {
            Op::SetStatus {
                key,
                doc_id,
                action,
            } if action.restores() == restoring => Some((key.as_str(), doc_id.as_str(), *action)),
            _ => None,
        })
        .collect()
}
