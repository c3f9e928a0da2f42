//! Batched metadata, sent alongside the uploads. A document's metadata
//! waits only for its own upload (which names the document, perhaps a new
//! one), so a batch goes out as soon as enough updates are ready while
//! the other uploads keep every upload slot busy: against a server where
//! each upload takes a while, a metadata phase after all uploads would
//! leave those slots idle.

use std::collections::{HashMap, HashSet};

use futures::FutureExt;

use super::{Pusher, Upload};
use crate::metadata::Metadata;
use crate::plan::{Op, Plan};
use crate::sink::bisect::{send_in_batches, BatchResult};
use crate::sink::dify::DifySink;
use crate::sink::verbs::{MetaSet, Prepare, SetMetadata};
use crate::sink::{ErrorClass, Outcome, PushError, SinkError};
use crate::state::CachedItem;

/// (key, document id, metadata) of one update.
pub(super) type MetaOp<'p> = (&'p str, String, &'p Metadata);

/// Whether the fields are ready; or why they could not be had, so that
/// each update fails with that error as it comes due.
pub(super) type Fields = Result<(), SinkError>;

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

    /// Every mapping the updates may send, for the fields they need.
    fn all(&self) -> impl Iterator<Item = &'p Metadata> + '_ {
        let ready = self.ready.iter().map(|(_, _, m)| *m);
        let after = self.after_upload.values().copied();
        let repush = self.repush.values().map(|(_, m)| *m);
        ready.chain(after).chain(repush)
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

/// Sends `ops` in batches (halving a refused batch down to the document
/// refused); gives them back with what was applied.
pub(super) async fn send<'o>(
    sink: &DifySink,
    ops: Vec<MetaOp<'o>>,
) -> (Vec<MetaOp<'o>>, BatchResult) {
    let r = send_in_batches(&ops, sink.batch_size(), |chunk| {
        async move {
            let sets: Vec<MetaSet> = chunk
                .iter()
                .map(|(key, id, values)| MetaSet {
                    key,
                    id,
                    values,
                    before: None,
                    facts: None,
                })
                .collect();
            // Dify takes or refuses a batch whole: no answer per document.
            sink.set(&sets).await.map(drop)
        }
        .boxed_local()
    })
    .await;
    (ops, r)
}

impl<'a> Pusher<'a> {
    /// The fields the queued updates need, created where missing. `None`
    /// when a fatal error (kept in `out`) stops the pass.
    pub(super) async fn fields(&self, queue: &MetaQueue<'_>, out: &mut Outcome) -> Option<Fields> {
        if queue.all().next().is_none() {
            return Some(Ok(()));
        }
        let wanted: Vec<(Option<&str>, &Metadata)> = queue.all().map(|m| (None, m)).collect();
        let p = Prepare {
            job: self.job,
            state: self.state,
            wanted: &wanted,
        };
        match self.sink.prepare(p).await {
            Err(e) if e.class == ErrorClass::Fatal => {
                out.fatal = Some(e);
                None
            }
            other => Some(other),
        }
    }

    /// The next batch to send while uploads run, if a full one is ready.
    /// With no fields to send, the ready updates fail now.
    pub(super) fn due<'p>(
        &self,
        queue: &mut MetaQueue<'p>,
        fields: &Fields,
        size: usize,
        out: &mut Outcome,
    ) -> Result<Option<Vec<MetaOp<'p>>>, PushError> {
        match fields {
            Ok(_) => Ok(queue.full_batch(size)),
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
        fields: &Fields,
        out: &mut Outcome,
    ) -> Result<bool, PushError> {
        if let Err(e) = fields {
            self.fail_ready(queue, e, out)?;
            return Ok(false);
        }
        let rest = std::mem::take(&mut queue.ready);
        if rest.is_empty() {
            return Ok(false);
        }
        let (ops, r) = send(self.sink, rest).await;
        self.settle_metadata(&ops, r, out)
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

    /// Records what a metadata send applied and what it failed. Returns
    /// true on a fatal error.
    pub(super) fn settle_metadata(
        &self,
        ops: &[MetaOp<'_>],
        r: BatchResult,
        out: &mut Outcome,
    ) -> Result<bool, PushError> {
        let done: Vec<(&str, &Metadata)> =
            r.applied.iter().map(|&i| (ops[i].0, ops[i].2)).collect();
        self.state.record_metadata(&self.job.name, &done)?;
        out.metadata += done.len();
        if !r.failed.is_empty() {
            // A field removed upstream by hand makes the batch fail; re-read
            // the fields next time.
            self.state.forget_fields(&self.job.name)?;
        }
        for (i, e) in r.failed {
            self.fail(out, ops[i].0, "metadata", e)?;
        }
        if r.fatal.is_some() {
            out.fatal = r.fatal;
            return Ok(true);
        }
        Ok(false)
    }
}
