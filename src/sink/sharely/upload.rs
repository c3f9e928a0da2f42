//! Pushing files to Sharely. Its API can upload a file as a new knowledge
//! item and delete an item, but not replace an item's file: a changed file
//! is uploaded as a new item first, and the old item deleted after, so the
//! knowledge base never lacks the document. Items are titled by the file's
//! path, which is how a listing maps them back.
//!
//! An upload whose answer was lost may have made an item. Its step is
//! marked started before it is sent; the next pass lists the workspace and
//! deletes every item under the file's title that is not the one recorded,
//! before it uploads again. Items the config maps by hand are the user's:
//! they get metadata, and are never uploaded over or deleted.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

use futures::StreamExt;

use super::client::{Knowledge, SharelyClient};
use super::{SharelyConfig, SharelySink};
use crate::execute::replaced_but_kept;
use crate::execute::{set_metadata, MetaItem, Phase};
use crate::plan::{Op, Plan};
use crate::sink::verbs::Content;
use crate::sink::{
    metadata_ops, record_failure, ErrorClass, Failure, Outcome, PushContext, PushError, SinkError,
};
use crate::state::{CachedItem, StepKind};

/// Items by title.
type Titles = HashMap<String, Vec<Knowledge>>;

enum Uploaded<'p> {
    Done {
        key: &'p str,
        id: String,
        hash: String,
        /// It replaced items found by title, not one kbsync recorded.
        adopted: bool,
        created: bool,
    },
    Failed(Failure),
    NotSent {
        key: &'p str,
        failure: Option<Failure>,
    },
}

pub(super) async fn push(
    ctx: PushContext<'_>,
    sink: &SharelySink,
    plan: &Plan,
) -> Result<Outcome, PushError> {
    let mut push = Push {
        ctx,
        sink,
        client: &sink.client,
        cfg: &sink.cfg,
        plan,
        out: Outcome::default(),
    };
    let uploads = content_uploads(plan);
    let ControlFlow::Continue(titles) = push.map_titles(&uploads).await? else {
        return Ok(push.out);
    };
    let done = push.upload(&uploads, titles.as_ref()).await?;
    if push.halted() {
        return Ok(push.out);
    }
    push.send_metadata(&done).await?;
    if push.halted() {
        return Ok(push.out);
    }
    let deletes = plan.deletes();
    let job = push.ctx.job.name.as_str();
    let (state, stop) = (&*push.ctx.state, push.ctx.stop);
    crate::execute::deletes(sink, job, state, stop, &deletes, &mut push.out).await?;
    if push.halted() {
        return Ok(push.out);
    }
    push.forget_gone(titles.as_ref()).await?;
    Ok(push.out)
}

/// The plan's content steps: each key, and the item it replaces (none for
/// a create). Keys the config maps never come here as content (the
/// planner only sets their metadata).
fn content_uploads(plan: &Plan) -> Vec<(&str, Option<&str>)> {
    plan.ops
        .iter()
        .filter_map(|op| match op {
            Op::Create { key, .. } => Some((key.as_str(), None)),
            Op::UpdateContent { key, doc_id, .. } => Some((key.as_str(), Some(doc_id.as_str()))),
            _ => None,
        })
        .collect()
}

/// What the uploads left for the metadata phase.
#[derive(Default)]
struct Uploads<'p> {
    /// The id each uploaded key ended with.
    ids: HashMap<&'p str, String>,
    /// Keys whose upload failed: their metadata waits for their content.
    blocked: HashSet<String>,
    /// Keys uploaded as a new item in place of an old one.
    replaced: Vec<&'p str>,
}

/// One push: its inputs and the outcome it builds, phase by phase.
struct Push<'a, 'c> {
    ctx: PushContext<'c>,
    sink: &'a SharelySink,
    client: &'a SharelyClient,
    cfg: &'a SharelyConfig,
    plan: &'a Plan,
    out: Outcome,
}

impl<'a> Push<'a, '_> {
    fn job(&self) -> &str {
        self.ctx.job.name.as_str()
    }

    fn stopping(&self) -> bool {
        self.ctx.stop.load(Ordering::SeqCst)
    }

    /// Whether the push ends here: a fatal error, or shutdown.
    fn halted(&mut self) -> bool {
        let stopping = self.stopping();
        self.out.interrupted |= stopping;
        self.out.fatal.is_some() || stopping
    }

    /// A listing maps titles to items: the first time the job creates, and
    /// whenever an earlier upload may have made an item unbeknown. Breaks
    /// when that listing fails, the uploads recorded as failed.
    async fn map_titles(
        &mut self,
        uploads: &[(&str, Option<&str>)],
    ) -> Result<ControlFlow<(), Option<Titles>>, PushError> {
        let creates = uploads.iter().any(|(_, old)| old.is_none());
        let suspects = self.ctx.suspects;
        let suspect = uploads.iter().any(|(k, _)| suspects.contains(*k))
            || self
                .plan
                .ops
                .iter()
                .any(|op| matches!(op, Op::Forget { key } if suspects.contains(key)));
        if !((creates && !self.ctx.state.listed(self.job())?) || suspect) {
            return Ok(ControlFlow::Continue(None));
        }
        match self.client.list().await {
            Ok(items) => {
                self.ctx.state.mark_listed(self.job())?;
                Ok(ControlFlow::Continue(Some(self.titles(items))))
            }
            Err(e) => {
                // Uploading blind could duplicate items: wait for a listing.
                let job = self.ctx.job.name.as_str();
                for (key, _) in uploads {
                    record_failure(self.ctx.state, &mut self.out, job, key, "create", e.clone())?;
                }
                if e.class == ErrorClass::Fatal {
                    self.out.fatal = Some(e);
                }
                Ok(ControlFlow::Break(()))
            }
        }
    }

    /// The listed items by title, but for those the config maps by hand.
    fn titles(&self, items: Vec<Knowledge>) -> Titles {
        let mapped: HashSet<&str> = self.cfg.knowledge.values().map(String::as_str).collect();
        let mut titles = Titles::new();
        for item in items
            .into_iter()
            .filter(|i| !mapped.contains(i.id.as_str()))
        {
            if let Some(name) = item.name() {
                titles.entry(name.to_owned()).or_default().push(item);
            }
        }
        titles
    }

    /// Uploads every file (`concurrency` at a time), each marked started
    /// before it is sent, and records what each upload ended with.
    async fn upload(
        &mut self,
        uploads: &[(&'a str, Option<&'a str>)],
        titles: Option<&Titles>,
    ) -> Result<Uploads<'a>, PushError> {
        let keys: Vec<&str> = uploads.iter().map(|(k, _)| *k).collect();
        self.ctx
            .state
            .steps_started(self.job(), &keys, StepKind::Content)?;
        crate::progress::UPLOADING.add(uploads.len());
        let uploader = Uploader {
            ctx: &self.ctx,
            sink: self.sink,
            titles,
        };
        let results: Vec<Uploaded<'a>> = futures::stream::iter(uploads.iter().map(|(key, old)| {
            let one = uploader.upload_one(key, *old);
            async move {
                let r = one.await;
                crate::progress::UPLOADING.one_done();
                r
            }
        }))
        .buffer_unordered(Content::concurrency(self.sink))
        .collect()
        .await;
        let mut done = Uploads::default();
        for r in results {
            self.record(r, &mut done)?;
        }
        Ok(done)
    }

    /// Records one upload's result in the state file and the outcome.
    fn record(&mut self, r: Uploaded<'a>, done: &mut Uploads<'a>) -> Result<(), PushError> {
        let job = self.ctx.job.name.as_str();
        let state = &*self.ctx.state;
        match r {
            Uploaded::Done {
                key,
                id,
                hash,
                adopted,
                created,
            } => {
                state.record_content(job, key, &id, key, &hash, None)?;
                if adopted {
                    self.out.adopted += 1;
                } else if created {
                    self.out.created += 1;
                } else {
                    self.out.updated += 1;
                }
                if !created {
                    done.replaced.push(key);
                }
                done.ids.insert(key, id);
            }
            Uploaded::Failed(f) => {
                if f.error.class == ErrorClass::Fatal {
                    self.out.fatal = Some(f.error.clone());
                }
                done.blocked.insert(f.key.clone());
                record_failure(state, &mut self.out, job, &f.key, f.op, f.error)?;
            }
            Uploaded::NotSent { key, failure } => {
                // Marked started with the others, never sent: the next
                // pass need not look for it.
                if !self.ctx.suspects.contains(key) {
                    state.step_not_sent(job, key, StepKind::Content)?;
                }
                match failure {
                    Some(f) => {
                        done.blocked.insert(f.key.clone());
                        record_failure(state, &mut self.out, job, &f.key, f.op, f.error)?;
                    }
                    None => self.out.interrupted = true,
                }
            }
        }
        Ok(())
    }

    /// Metadata, to the id each upload ended with.
    async fn send_metadata(&mut self, done: &Uploads<'a>) -> Result<(), PushError> {
        let items = metadata_items(self.plan, self.ctx.cached, done);
        let at = Phase {
            job: self.ctx.job,
            state: self.ctx.state,
            cached: self.ctx.cached,
            stop: self.ctx.stop,
            gone: &|_| false,
            binds: true,
        };
        set_metadata(self.sink, &at, &items, &mut self.out).await
    }

    /// Forgets the keys the plan forgets. One gone while its upload was
    /// unconfirmed first loses the items listed under its title: an item
    /// the upload made would mirror nothing now. Stops at a fatal error.
    async fn forget_gone(&mut self, titles: Option<&Titles>) -> Result<(), PushError> {
        let job = self.ctx.job.name.as_str();
        for op in &self.plan.ops {
            let Op::Forget { key } = op else { continue };
            let orphans: Vec<&Knowledge> = match (titles, self.ctx.suspects.contains(key)) {
                (Some(t), true) => t.get(key.as_str()).into_iter().flatten().collect(),
                _ => Vec::new(),
            };
            match self.delete_orphans(key, orphans).await {
                Some(e) => {
                    let fatal = e.class == ErrorClass::Fatal;
                    record_failure(self.ctx.state, &mut self.out, job, key, "create", e.clone())?;
                    if fatal {
                        self.out.fatal = Some(e);
                        return Ok(());
                    }
                }
                None => {
                    self.ctx.state.forget(job, key)?;
                    self.out.forgotten += 1;
                }
            }
        }
        Ok(())
    }

    /// Deletes the given items of a gone key; the first error ends it.
    async fn delete_orphans(&self, key: &str, orphans: Vec<&Knowledge>) -> Option<SinkError> {
        for item in orphans {
            tracing::info!(%key, item = %item.id, "deleting the item of an unconfirmed upload whose file is gone");
            if let Err(e) = self.client.delete(&item.id).await {
                return Some(e);
            }
        }
        None
    }
}

/// The metadata to send after the uploads: the plan's, to the id the
/// upload ended with (none for a key whose upload failed). A replacing
/// item starts with none, so what the old one had goes to it too.
fn metadata_items<'p>(
    plan: &'p Plan,
    cached: &'p HashMap<String, CachedItem>,
    done: &Uploads<'p>,
) -> Vec<MetaItem<'p>> {
    let mut meta: Vec<MetaItem> = metadata_ops(plan)
        .filter(|(key, ..)| !done.blocked.contains(*key))
        .filter_map(|(key, doc_id, values)| {
            let id = done.ids.get(key).or(doc_id).cloned()?;
            Some(MetaItem {
                key,
                id: Some(id),
                values,
                facts: None,
            })
        })
        .collect();
    for &key in &done.replaced {
        if meta.iter().any(|m| m.key == key) {
            continue;
        }
        if let Some(pushed) = cached.get(key).and_then(|c| c.pushed_meta.as_ref()) {
            if !pushed.is_empty() {
                meta.push(MetaItem {
                    key,
                    id: Some(done.ids[key].clone()),
                    values: pushed,
                    facts: None,
                });
            }
        }
    }
    meta
}

struct Uploader<'a, 'c> {
    ctx: &'a PushContext<'c>,
    sink: &'a SharelySink,
    titles: Option<&'a Titles>,
}

impl Uploader<'_, '_> {
    async fn upload_one<'p>(&self, key: &'p str, old: Option<&str>) -> Uploaded<'p> {
        if self.ctx.stop.load(Ordering::SeqCst) {
            return Uploaded::NotSent { key, failure: None };
        }
        let op = if old.is_some() { "update" } else { "create" };
        let failed = |error: SinkError| {
            Uploaded::Failed(Failure {
                key: key.to_owned(),
                op,
                error,
            })
        };
        let not_sent = |error: SinkError| Uploaded::NotSent {
            key,
            failure: Some(Failure {
                key: key.to_owned(),
                op,
                error,
            }),
        };
        let bytes = match self.ctx.content.read(key).await {
            Ok(b) => b,
            Err(e) => return not_sent(e),
        };
        if bytes.len() as u64 > self.ctx.job.max_file_size() {
            return not_sent(SinkError::local(
                ErrorClass::Permanent,
                "too_large",
                format!("{} bytes is over max_file_size", bytes.len()),
            ));
        }
        let hash = crate::source::folder::hash_bytes(&bytes);
        // Every item under this title but the new one goes once the new
        // one is up: the recorded one, and any an unconfirmed upload (or a
        // lost state file) left.
        let found: Vec<&str> = self
            .titles
            .and_then(|t| t.get(key))
            .into_iter()
            .flatten()
            .map(|i| i.id.as_str())
            .collect();
        let mut stale: Vec<&str> = old.into_iter().collect();
        stale.extend(found.iter().filter(|id| Some(**id) != old));
        let adopted = old.is_none() && !found.is_empty();

        // Uploaded anew, then every stale item deleted: what a replace
        // does, for all the items the title had.
        let item = match self.sink.create(key, &bytes).await {
            Ok(item) => item,
            Err(e) => return failed(e),
        };
        for id in stale {
            if let Err(e) = self.sink.client.delete(id).await {
                // The new item stays; the step stays started, so the next
                // pass finds both under the title and sorts them out.
                return failed(replaced_but_kept(&item.id, id, e));
            }
        }
        Uploaded::Done {
            key,
            id: item.id,
            hash,
            adopted,
            created: old.is_none() && !adopted,
        }
    }
}
