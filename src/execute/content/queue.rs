//! Metadata sent alongside the uploads. A record's metadata waits only
//! for its own upload (which names the record, perhaps a new one), so a
//! batch goes out as soon as enough updates are ready while the other
//! uploads keep every upload slot busy: against a server where each
//! upload takes a while, a metadata phase after all uploads would leave
//! those slots idle.

use std::collections::{HashMap, HashSet};

use super::upload::Upload;
use super::Push;
use crate::execute::batches::ByKey;
use crate::execute::metadata::{send_batch, send_sets};
use crate::metadata::Metadata;
use crate::plan::{Op, Plan};
use crate::sink::bisect::BatchResult;
use crate::sink::verbs::{MetaSet, Prepare};
use crate::sink::{ErrorClass, Outcome, PushError, SinkError};
use crate::state::CachedItem;

/// (key, document id, metadata) of one update.
pub(super) type MetaOp<'p> = (&'p str, String, &'p Metadata);

/// Whether `SetMetadata::prepare` readied the upstream; or why not, so
/// that each update fails with that error as it comes due.
pub(super) type Prepared = Result<(), SinkError>;

/// The pass's metadata updates, in the order they become sendable.
pub(super) struct MetaQueue<'p> {
    /// Updates whose document is known.
    ready: Vec<MetaOp<'p>>,
    /// Updates of keys being uploaded: the upload says which document.
    after_upload: HashMap<&'p str, &'p Metadata>,
    /// Keys being uploaded onto a known document (old id, metadata pushed
    /// to it): if the upload ends with another document (the old one was
    /// gone or had failed indexing), that metadata goes to the new one,
    /// which starts without any.
    repush: HashMap<&'p str, (&'p str, &'p Metadata)>,
}

impl<'p> MetaQueue<'p> {
    pub fn new(
        plan: &'p Plan,
        uploads: &[Upload<'p>],
        blocked: &HashSet<String>,
        cached: &'p HashMap<String, CachedItem>,
    ) -> Self {
        let uploading: HashSet<&str> = uploads.iter().map(|u| u.key).collect();
        let mut queue = MetaQueue {
            ready: Vec::new(),
            after_upload: HashMap::new(),
            repush: HashMap::new(),
        };
        for op in &plan.ops {
            let Op::SetMetadata {
                key,
                doc_id,
                metadata,
            } = op
            else {
                continue;
            };
            if blocked.contains(key) {
                continue;
            }
            if uploading.contains(key.as_str()) {
                queue.after_upload.insert(key, metadata);
            } else if let Some(id) = doc_id {
                queue.ready.push((key, id.clone(), metadata));
            }
        }
        for u in uploads {
            let Some(old) = u.doc_id else { continue };
            if queue.after_upload.contains_key(u.key) {
                continue;
            }
            if let Some(pushed) = cached.get(u.key).and_then(|c| c.pushed_meta.as_ref()) {
                if !pushed.is_empty() {
                    queue.repush.insert(u.key, (old, pushed));
                }
            }
        }
        queue
    }

    /// Every mapping the updates may send, with its record when known
    /// (an upload names the others' records).
    fn wanted(&self) -> Vec<(Option<&str>, &'p Metadata)> {
        let ready = self.ready.iter().map(|(_, id, m)| (Some(id.as_str()), *m));
        let after = self.after_upload.values().map(|m| (None, *m));
        let repush = self.repush.values().map(|(_, m)| (None, *m));
        ready.chain(after).chain(repush).collect()
    }

    /// `key`'s upload ended with document `id`.
    pub fn uploaded(&mut self, key: &str, id: &str) {
        if let Some((key, meta)) = self.after_upload.remove_entry(key) {
            self.ready.push((key, id.to_owned(), meta));
        } else if let Some((key, (old, pushed))) = self.repush.remove_entry(key) {
            if old != id {
                self.ready.push((key, id.to_owned(), pushed));
            }
        }
    }

    /// The metadata `key`'s upload carries, for an upstream that takes
    /// it only with the content: the plan's, else what the record held.
    pub fn carried_by_upload(&self, key: &str) -> Option<&'p Metadata> {
        self.after_upload
            .get(key)
            .copied()
            .or_else(|| self.repush.get(key).map(|(_, m)| *m))
    }

    /// `key`'s upload carried its metadata (`carried_by_upload`): nothing
    /// is left to send for it. The values, and whether the plan asked
    /// for them (not only kept them).
    pub fn went_with_upload(&mut self, key: &str) -> Option<(&'p Metadata, bool)> {
        if let Some(m) = self.after_upload.remove(key) {
            return Some((m, true));
        }
        self.repush.remove(key).map(|(_, m)| (m, false))
    }

    /// `key`'s upload failed: its document is not in the state its
    /// metadata was planned for, so the update waits for a later pass.
    pub fn dropped(&mut self, key: &str) {
        self.after_upload.remove(key);
        self.repush.remove(key);
    }

    /// A full batch, when one is ready.
    fn full_batch(&mut self, size: usize) -> Option<Vec<MetaOp<'p>>> {
        (self.ready.len() >= size).then(|| self.ready.drain(..size).collect())
    }
}

/// Sends one batch; gives its updates back with what the call did.
pub(super) async fn send<'o>(
    push: &Push<'_>,
    ops: Vec<MetaOp<'o>>,
) -> (Vec<MetaOp<'o>>, (BatchResult, ByKey<()>)) {
    let at = push.phase();
    let sent = {
        let sets = sets_of(&at, &ops);
        send_batch(push.verbs.metadata, &sets).await
    };
    (ops, sent)
}

fn sets_of<'s>(at: &'s crate::execute::Phase<'_>, ops: &'s [MetaOp<'_>]) -> Vec<MetaSet<'s>> {
    ops.iter()
        .map(|(key, id, values)| at.set_of(key, id, values))
        .collect()
}

impl Push<'_> {
    /// Readies the upstream for the queued updates (Dify: the fields they
    /// need, created where missing). `None` when a fatal error (kept in
    /// `out`) stops the pass.
    pub(super) async fn prepare(
        &self,
        queue: &MetaQueue<'_>,
        out: &mut Outcome,
    ) -> Option<Prepared> {
        let wanted = queue.wanted();
        if wanted.is_empty() {
            return Some(Ok(()));
        }
        let p = Prepare {
            job: self.job,
            state: self.state,
            wanted: &wanted,
        };
        match self.verbs.metadata.prepare(p).await {
            Err(e) if e.class == ErrorClass::Fatal => {
                out.fatal = Some(e);
                None
            }
            other => Some(other),
        }
    }

    /// The next batch to send while uploads run, if a full one is ready.
    /// When the upstream could not be readied, the ready updates fail now.
    pub(super) fn due<'p>(
        &self,
        queue: &mut MetaQueue<'p>,
        prepared: &Prepared,
        out: &mut Outcome,
    ) -> Result<Option<Vec<MetaOp<'p>>>, PushError> {
        match prepared {
            Ok(()) => Ok(queue.full_batch(self.verbs.metadata.batch_size().max(1))),
            Err(e) => {
                self.fail_ready(queue, e, out)?;
                Ok(None)
            }
        }
    }

    /// Sends every update still queued, once the uploads are done.
    /// Returns true on a fatal error.
    pub(super) async fn flush_metadata(
        &self,
        queue: &mut MetaQueue<'_>,
        prepared: &Prepared,
        out: &mut Outcome,
    ) -> Result<bool, PushError> {
        if let Err(e) = prepared {
            self.fail_ready(queue, e, out)?;
            return Ok(false);
        }
        let rest = std::mem::take(&mut queue.ready);
        if rest.is_empty() {
            return Ok(false);
        }
        let at = self.phase();
        let sets = sets_of(&at, &rest);
        send_sets(self.verbs.metadata, &at, &sets, out).await?;
        Ok(out.fatal.is_some())
    }

    fn fail_ready(
        &self,
        queue: &mut MetaQueue<'_>,
        e: &SinkError,
        out: &mut Outcome,
    ) -> Result<(), PushError> {
        for (key, _, _) in queue.ready.drain(..) {
            self.fail(out, key, "metadata", e.clone())?;
        }
        Ok(())
    }

    /// Records what a batch sent beside the uploads did. Returns true on
    /// a fatal error.
    pub(super) fn settle_metadata(
        &self,
        ops: &[MetaOp<'_>],
        sent: (BatchResult, ByKey<()>),
        out: &mut Outcome,
    ) -> Result<bool, PushError> {
        let at = self.phase();
        let sets = sets_of(&at, ops);
        at.settle(out, &sets, sent)
    }
}
