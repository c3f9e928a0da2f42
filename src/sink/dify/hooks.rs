//! Where Dify differs under the executor's content path
//! (`execute::with_content`): documents index after an upload, and Dify
//! refuses what it cannot do meanwhile. An update waits for indexing and
//! restores a document disabled or archived behind kbsync's back; a
//! status batch waits on the "being indexed" lock (one `LockWaits` per
//! action) and on the upload batches it names; a document whose indexing
//! failed takes neither update nor disable, so it is deleted; a document
//! found under a new file's name is adopted, as it is when it holds what
//! an unconfirmed create sent.

use futures::future::LocalBoxFuture;
use futures::FutureExt;

use super::client::{gone, not_ready, NotReady};
use super::{indexing, DifySink};
use crate::plan::StatusAction;
use crate::sink::verbs::{
    Call, ContentHooks, Found, Refusal, Replace, Status, StatusItem, StatusPhase, StatusRefused,
    Stored, Taken,
};
use crate::sink::{Listed, SinkError};
use crate::state::RemoteStatus;

/// Up to this many unconfirmed creates are looked up one by one; more
/// than that, and one listing of the whole dataset is cheaper.
const LOOKUP_LIMIT: usize = 20;

impl ContentHooks for DifySink {
    fn lookups(&self) -> usize {
        LOOKUP_LIMIT
    }

    /// An update replaces the document's file in place.
    fn uploads_create(&self) -> bool {
        false
    }

    fn take_found<'a>(&'a self, found: Found<'a>) -> LocalBoxFuture<'a, Taken> {
        self.take_found(found).boxed_local()
    }

    fn gone(&self, e: &SinkError) -> bool {
        gone(e)
    }

    fn errored(&self, e: &SinkError) -> bool {
        e.code == "indexing_error"
    }

    fn status_phase(&self, action: StatusAction) -> Box<dyn StatusPhase + '_> {
        Box::new(Statuses {
            sink: self,
            action,
            lock_waits: indexing::LockWaits::new(self.cfg.calls.retry.min_delay),
        })
    }

    fn status_refused<'a>(&'a self, r: Refusal<'a>) -> LocalBoxFuture<'a, StatusRefused> {
        async move {
            let Refusal {
                action,
                item,
                error: e,
                changed_at,
            } = r;
            // A disable of a document whose indexing failed is refused for
            // good ("not completed"); it mirrors nothing anyway, so
            // retiring it means deleting it.
            let errored = e.code == "indexing_error"
                || (not_ready(&e) == Some(NotReady::NotCompleted)
                    && self.errored(item.key, item.id).await);
            if action == StatusAction::Disable && errored {
                return StatusRefused::Errored(e);
            }
            StatusRefused::Failed(match not_ready(&e) {
                Some(NotReady::BeingIndexed) => indexing::locked(e, changed_at),
                _ => e,
            })
        }
        .boxed_local()
    }
}

impl DifySink {
    /// A document found under the name of a file kbsync has no document
    /// for: replaced when its indexing failed, taken as the create's
    /// result when it holds what an unconfirmed create sent, else adopted
    /// and updated once Dify is done indexing it. A known document keeps
    /// the file's content; others under its name are the audit's.
    async fn take_found(&self, found: Found<'_>) -> Taken {
        if let Some(id) = found.known {
            return Taken::Update {
                id: id.to_owned(),
                adopted: false,
                stale: Vec::new(),
            };
        }
        // As one name → document map of the listing keeps it: the last.
        let Some(doc) = found.records.last() else {
            return Taken::Create;
        };
        // A document whose indexing failed cannot be updated: replaced.
        if doc.state.as_deref() == Some("error") {
            return match self.remove_errored(&doc.id).await {
                Ok(()) => Taken::Create,
                Err(e) => Taken::Failed(e),
            };
        }
        // The unconfirmed create's own document, holding these bytes
        // (Dify would refuse them again while it is queued): no wait.
        if found.sent == Some(found.hash) {
            if let Err(e) = self.make_available(doc).await {
                return Taken::Failed(e);
            }
            return Taken::Holds(Stored {
                id: doc.id.clone(),
                name: doc.name.clone(),
                batch: None,
            });
        }
        if let Err(error) = self.wait_if_indexing(doc).await {
            // Past the wait: keep its id and come back.
            let id = doc.id.clone();
            return Taken::Waits { id, error };
        }
        if let Err(e) = self.make_available(doc).await {
            return Taken::Failed(e);
        }
        Taken::Update {
            id: doc.id.clone(),
            adopted: true,
            stale: Vec::new(),
        }
    }

    /// A document whose indexing ended in `error` cannot be updated: it is
    /// deleted, to be created again from the file.
    async fn remove_errored(&self, id: &str) -> Result<(), SinkError> {
        tracing::info!(document = %id, "deleting a document whose indexing failed, to create it again");
        match self.client.delete_document(id).await {
            Err(e) if !gone(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Still indexing (created before a crash, say): Dify takes no update
    /// until it is done, so wait for it (up to `indexing_wait_secs`).
    async fn wait_if_indexing(&self, doc: &Listed) -> Result<(), SinkError> {
        if !doc.state.as_deref().is_some_and(indexing::busy) {
            return Ok(());
        }
        indexing::wait_document(&self.client, &doc.name, &doc.id, self.cfg.indexing_wait).await
    }

    /// Whether `key`'s document `doc_id` is one whose indexing failed.
    async fn errored(&self, key: &str, doc_id: &str) -> bool {
        matches!(
            self.client.find_by_name(&self.cfg.document_name(key)).await,
            Ok(Some(d)) if d.id == doc_id && d.indexing_status.as_deref() == Some("error")
        )
    }

    /// An adopted document may be archived or disabled; Dify only updates
    /// available ones. (A listing names an archived document archived,
    /// whether or not it is also disabled: an update it then refuses
    /// enables it, in `replace_when_ready`.)
    async fn make_available(&self, doc: &Listed) -> Result<(), SinkError> {
        let action = match doc.standing {
            Some(RemoteStatus::Archived) => StatusAction::UnArchive,
            Some(RemoteStatus::Disabled) => StatusAction::Enable,
            _ => return Ok(()),
        };
        self.client.set_status(action, &[&doc.id]).await
    }

    /// A document as Dify lists it, made available.
    async fn restore(&self, doc: &super::client::RemoteDoc) -> Result<(), SinkError> {
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

    /// The update (`Content::replace`). Dify refuses it ("not available")
    /// while the previous upload is still indexing (then wait for that
    /// batch), and for a document disabled or archived behind our back (a
    /// status change applied whose answer was lost, or a hand edit: then
    /// make it available). Either way one more try; otherwise the refusal
    /// stays a transient failure for a later pass.
    pub(super) async fn replace_when_ready(&self, r: Replace<'_>) -> Result<Stored, SinkError> {
        let e = match self.update_by_file(r.key, r.id, r.bytes).await {
            Err(e) if not_ready(&e) == Some(NotReady::Unavailable) => e,
            other => return other,
        };
        if let Some(batch) = r.pending {
            let call = format!("update of {}", r.key);
            indexing::wait(&self.client, batch, self.cfg.indexing_wait, &call, &e).await?;
        }
        let name = self.cfg.document_name(r.key);
        match self.client.find_by_name(&name).await? {
            Some(doc) if doc.id == r.id && (doc.archived || !doc.enabled) => {
                tracing::info!(key = %r.key, document = %r.id, "the document is not available upstream (disabled or archived); restoring it before the update");
                self.restore(&doc).await?;
            }
            // Indexing an upload whose batch is not known here (a document
            // adopted after a crash): wait on the document itself.
            Some(doc)
                if doc.id == r.id && doc.indexing_status.as_deref().is_some_and(indexing::busy) =>
            {
                tracing::debug!(key = %r.key, document = %r.id, refused = %e, "Dify refused an update of a document it is still indexing");
                let limit = self.cfg.indexing_wait;
                indexing::wait_document(&self.client, &name, r.id, limit).await?;
            }
            _ => {}
        }
        self.update_by_file(r.key, r.id, r.bytes).await
    }
}

/// One status action's batches: they share the pauses Dify's "being
/// indexed" lock allows a pass (`LockWaits`).
struct Statuses<'a> {
    sink: &'a DifySink,
    action: StatusAction,
    lock_waits: indexing::LockWaits,
}

impl StatusPhase for Statuses<'_> {
    /// Dify refuses status changes while a document indexes an upload
    /// (wait on its batch) or while the index task of an earlier
    /// enable/disable runs ("being indexed": a lock that an idle worker
    /// lifts in under a second and that can stand 10 minutes; waits of
    /// some seconds, then the retry is timed after it, see `locked`).
    fn set<'a>(&'a self, batch: &'a [StatusItem<'a>]) -> Call<'a, ()> {
        async move {
            let (action, client) = (self.action, &self.sink.client);
            let ids: Vec<&str> = batch.iter().map(|i| i.id).collect();
            let mut waits = client.waits("set_status");
            let mut batches_waited = false;
            loop {
                let mut e = match Status::set(self.sink, action, &ids).await {
                    Err(e) if not_ready(&e).is_some() => e,
                    r => return r,
                };
                // The whole batch waits: the documents a retire and revive
                // locked were changed together.
                if not_ready(&e) == Some(NotReady::BeingIndexed) {
                    let Some(pause) = self.lock_waits.next() else {
                        return Err(e);
                    };
                    // A retry like the transport's own: counted with them.
                    crate::sink::Sink::transport(self.sink).count_retry();
                    tracing::debug!(
                        action = action.as_str(),
                        pause_secs = pause.as_secs_f64(),
                        "status change locked upstream while Dify re-indexes; waiting"
                    );
                    tokio::time::sleep(pause).await;
                    continue;
                }
                let pending: Vec<&str> = batch.iter().filter_map(|i| i.pending).collect();
                if !batches_waited && !pending.is_empty() {
                    let limit = self.sink.cfg.indexing_wait;
                    for b in pending {
                        indexing::wait(client, b, limit, action.as_str(), &e).await?;
                    }
                    batches_waited = true;
                    continue;
                }
                // Several documents: let the batch be halved, so the one
                // that is busy waits alone and the rest go.
                if batch.len() > 1 {
                    return Err(e);
                }
                match waits.next(&mut e) {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => return Err(e),
                }
            }
        }
        .boxed_local()
    }
}
