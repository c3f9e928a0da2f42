//! The uploads: each file read within `max_file_size` and hashed as sent,
//! the records found under its name handed to the upstream's hooks
//! (`ContentHooks::take_found`), then a create or a replace, several at a
//! time, with the metadata batches that become due sent beside them.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use futures::StreamExt;

use super::lookup::Titles;
use super::queue::{self, MetaQueue, Prepared};
use super::{Push, RECREATED};
use crate::metadata::Metadata;
use crate::plan::{Op, Plan};
use crate::sink::verbs::{Found, New, Replace, Stored, Taken};
use crate::sink::{ErrorClass, Failure, Outcome, PushError, SinkError};
use crate::state::StepKind;

pub(super) struct Upload<'p> {
    pub key: &'p str,
    /// Known record to update; `None` to create (or adopt).
    pub doc_id: Option<&'p str>,
}

/// The plan's content steps, but for blocked keys.
pub(super) fn uploads<'p>(plan: &'p Plan, blocked: &HashSet<String>) -> Vec<Upload<'p>> {
    plan.ops
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
        .collect()
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

    /// A record adopted as the key's, whose content could not be sent.
    fn adopted_only(&self, doc_id: &str, name: &str, error: SinkError) -> Uploaded {
        Uploaded::AdoptedOnly {
            doc_id: doc_id.to_owned(),
            name: name.to_owned(),
            failure: self.failure(error),
        }
    }
}

enum Uploaded {
    Done(Done),
    Failed(Failure),
    /// A record was adopted but could not take the content yet (still
    /// processing, not available): its id is kept, so the next pass
    /// updates it instead of looking for it again.
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

/// A record that took its content.
struct Done {
    key: String,
    stored: Stored,
    hash: String,
    adopted: bool,
    created: bool,
}

/// What one upload sends: the record's name, the bytes, the metadata
/// they carry where they must, and whether the record holds them already.
#[derive(Clone, Copy)]
struct Sending<'s> {
    name: &'s str,
    bytes: &'s bytes::Bytes,
    values: Option<&'s Metadata>,
    unchanged: bool,
}

/// Where an upload's content goes, once the records found are taken.
struct Target {
    id: Option<String>,
    adopted: bool,
    stale: Vec<String>,
}

impl Push<'_> {
    /// Creates and updates, `Content::concurrency` at a time, with each
    /// full batch of metadata sent as soon as its records are uploaded
    /// (one metadata call at a time, beside the uploads).
    pub(super) async fn uploads<'p>(
        &self,
        uploads: &[Upload<'p>],
        titles: Option<&Titles>,
        meta: &mut MetaQueue<'p>,
        prepared: &Prepared,
        out: &mut Outcome,
        blocked: &mut HashSet<String>,
    ) -> Result<(), PushError> {
        let ready: Vec<&Upload> = uploads
            .iter()
            .filter(|u| !blocked.contains(u.key))
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        // Read before this pass marks its own sends.
        let sent = self.sent_before(&ready)?;
        self.mark_blind(&ready, titles)?;
        crate::progress::UPLOADING.add(ready.len());
        let with_content = self.content.metadata_with_content();
        let carried: Vec<Option<&'p Metadata>> = ready
            .iter()
            .map(|u| {
                with_content
                    .then(|| meta.carried_by_upload(u.key))
                    .flatten()
            })
            .collect();
        let jobs = ready.into_iter().zip(carried).map(|(u, values)| {
            self.upload_one(u, titles, sent.get(u.key).map(String::as_str), values)
        });
        let mut stream =
            futures::stream::iter(jobs).buffer_unordered(self.content.concurrency().max(1));
        let mut sending = None;
        loop {
            if sending.is_none() && out.fatal.is_none() {
                if let (Some(batch), Ok(())) = (self.due(meta, prepared, out)?, prepared) {
                    sending = Some(Box::pin(queue::send(self, batch)));
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

    /// Marks started the uploads that may make a record unbeknown: every
    /// one where each upload makes a record, else the creates no listing
    /// found a record for.
    fn mark_blind(&self, ready: &[&Upload<'_>], titles: Option<&Titles>) -> Result<(), PushError> {
        let every = self.content.uploads_create();
        let listed =
            |key: &str| titles.is_some_and(|t| t.contains_key(&self.sink.record_name(key)));
        let blind: Vec<&str> = ready
            .iter()
            .filter(|u| every || (u.doc_id.is_none() && !listed(u.key)))
            .map(|u| u.key)
            .collect();
        self.state
            .steps_started(self.job_name(), &blind, StepKind::Content)?;
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
        let failure = match result {
            Uploaded::Done(d) => {
                let s = &d.stored;
                self.state.record_content(
                    self.job_name(),
                    &d.key,
                    &s.id,
                    &s.name,
                    &d.hash,
                    s.batch.as_deref(),
                )?;
                let step = if d.adopted {
                    out.adopted += 1;
                    "adopt"
                } else if d.created {
                    out.created += 1;
                    "create"
                } else {
                    out.updated += 1;
                    "update"
                };
                out.did(&d.key, step);
                if !self.content.metadata_with_content() {
                    meta.uploaded(&d.key, &s.id);
                } else if let Some((values, planned)) = meta.went_with_upload(&d.key) {
                    self.state
                        .record_metadata(self.job_name(), &[(d.key.as_str(), values)])?;
                    out.metadata += usize::from(planned);
                }
                return Ok(false);
            }
            Uploaded::NotSent { key, failure } => {
                // Marked started with the phase; a create never sent
                // must not send the next pass looking for it.
                if !self.suspects.contains(&key) {
                    self.state
                        .step_not_sent(self.job_name(), &key, StepKind::Content)?;
                }
                match failure {
                    Some(f) => f,
                    None => return Ok(false),
                }
            }
            Uploaded::AdoptedOnly {
                doc_id,
                name,
                failure,
            } => {
                self.state
                    .record_doc_id(self.job_name(), &failure.key, &doc_id, &name)?;
                failure
            }
            Uploaded::Failed(f) => {
                if f.error.class == ErrorClass::Fatal {
                    out.fatal = Some(f.error.clone());
                }
                f
            }
        };
        let Failure { key, op, error } = failure;
        meta.dropped(&key);
        blocked.insert(key.clone());
        self.fail(out, &key, op, error)?;
        Ok(out.fatal.is_some())
    }

    /// `sent`: the content hash of this key's unconfirmed create, if any;
    /// `values`: the metadata the upload carries, where it must.
    async fn upload_one(
        &self,
        u: &Upload<'_>,
        titles: Option<&Titles>,
        sent: Option<&str>,
        values: Option<&Metadata>,
    ) -> Uploaded {
        if self.stop.load(Ordering::SeqCst) {
            return Uploaded::NotSent {
                key: u.key.to_owned(),
                failure: None,
            };
        }
        let op = if u.doc_id.is_some() {
            "update"
        } else {
            "create"
        };
        let at = Attempt { key: u.key, op };
        let bytes = match self.read_for_upload(u.key).await {
            Ok(b) => b,
            Err(e) => return at.not_sent(e),
        };
        // What is recorded as pushed is what was sent, even if the file
        // changed since the scan; the next scan then sees the difference.
        let hash = crate::source::folder::hash_bytes(&bytes);
        let name = self.sink.record_name(u.key);
        let records = match self.records_of(u, titles).await {
            Ok(r) => r,
            Err(e) => return at.failed(e),
        };
        let target = if records.is_empty() {
            Target {
                id: u.doc_id.map(str::to_owned),
                adopted: false,
                stale: Vec::new(),
            }
        } else {
            let found = Found {
                key: u.key,
                known: u.doc_id,
                records,
                hash: &hash,
                sent,
            };
            match self.content.take_found(found).await {
                Taken::Create => Target {
                    id: None,
                    adopted: false,
                    stale: Vec::new(),
                },
                Taken::Update { id, adopted, stale } => Target {
                    id: Some(id),
                    adopted,
                    stale,
                },
                Taken::Holds(stored) => {
                    tracing::info!(key = %u.key, record = %stored.id, "the create sent before an interruption was applied: adopted with its content");
                    return Uploaded::Done(Done {
                        key: u.key.to_owned(),
                        stored,
                        hash,
                        adopted: true,
                        created: false,
                    });
                }
                Taken::Waits { id, error } => return at.adopted_only(&id, &name, error),
                Taken::Failed(e) => return at.failed(e),
            }
        };
        let sending = Sending {
            name: &name,
            bytes: &bytes,
            values,
            unchanged: self.holds(u.key, &hash),
        };
        let (stored, created) = match self.send(&at, &target, sending).await {
            Ok(sent) => sent,
            Err(ended) => return ended,
        };
        for old in &target.stale {
            if let Err(e) = self.delete_record(old).await {
                // The new record stays; the step stays started, so the
                // next pass finds both under the name and sorts them out.
                return at.failed(replaced_but_kept(&stored.id, old, e));
            }
        }
        Uploaded::Done(Done {
            key: u.key.to_owned(),
            stored,
            hash,
            adopted: target.adopted,
            created,
        })
    }

    /// Whether `key`'s record holds the content hashed `hash` already (an
    /// upload for its metadata alone).
    fn holds(&self, key: &str, hash: &str) -> bool {
        self.cached.get(key).and_then(|c| c.pushed_hash.as_deref()) == Some(hash)
    }

    /// The file's bytes, if they may be sent.
    async fn read_for_upload(&self, key: &str) -> Result<bytes::Bytes, SinkError> {
        let bytes = self.source.read(key).await?;
        if bytes.len() as u64 > self.job.max_file_size() {
            return Err(SinkError::local(
                ErrorClass::Permanent,
                "too_large",
                format!("{} bytes is over max_file_size", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    /// Sends the content: a replace of the target's record, or a create.
    /// The record, and whether it was created; `Err` is the upload's
    /// result when it ended otherwise.
    async fn send(
        &self,
        at: &Attempt<'_>,
        target: &Target,
        s: Sending<'_>,
    ) -> Result<(Stored, bool), Uploaded> {
        let Sending {
            name,
            bytes,
            values,
            unchanged,
        } = s;
        let new = New {
            key: at.key,
            bytes,
            values,
        };
        let create = || async { self.content.create(new).await.map(|r| (r, true)) };
        let result = match target.id.as_deref() {
            None => create().await,
            // The audit found its processing failed: the upstream would
            // refuse the update ("not available") yet keep the file.
            Some(id) if self.failed_upstream(at.key) => {
                self.remove_errored(id, RECREATED)
                    .await
                    .map_err(|e| at.failed(e))?;
                self.mark_started(at.key).map_err(|e| at.failed(e))?;
                create().await
            }
            Some(id) => {
                let pending = self
                    .cached
                    .get(at.key)
                    .and_then(|c| c.indexing_batch.as_deref());
                let r = Replace {
                    key: at.key,
                    id,
                    bytes,
                    pending,
                    values,
                    unchanged,
                };
                match self.content.replace(r).await {
                    // Deleted upstream behind our back, or its processing
                    // failed (it can take no update): created anew.
                    Err(e) if self.content.gone(&e) || self.content.errored(&e) => {
                        if self.content.errored(&e) {
                            self.remove_errored(id, RECREATED)
                                .await
                                .map_err(|e| at.failed(e))?;
                        }
                        self.mark_started(at.key).map_err(|e| at.failed(e))?;
                        create().await
                    }
                    // Adopted but not ready for the content: keep its id.
                    Err(e) if target.adopted => return Err(at.adopted_only(id, name, e)),
                    other => other.map(|r| (r, false)),
                }
            }
        };
        result.map_err(|e| at.failed(e))
    }

    /// Records that a create for `key` is about to be sent: until its
    /// answer is recorded, it may be applied upstream without our knowing.
    fn mark_started(&self, key: &str) -> Result<(), SinkError> {
        self.state
            .steps_started(self.job_name(), &[key], StepKind::Content)
            .map_err(|e| SinkError::local(ErrorClass::Fatal, "state", e.to_string()))
    }
}

/// An upload that went up as record `new`, while a record it replaces
/// (`old`) could not be deleted: the new record stays, and the step stays
/// started, so the next pass finds both under the name.
pub fn replaced_but_kept(new: &str, old: &str, e: SinkError) -> SinkError {
    SinkError {
        message: format!(
            "uploaded as item {new}, but the item it replaces ({old}) could not be deleted: {}",
            e.message
        ),
        ..e
    }
}
