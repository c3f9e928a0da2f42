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
use std::sync::atomic::Ordering;

use futures::StreamExt;

use super::client::{Knowledge, SharelyClient};
use super::push::{MetaUpdate, Sender};
use super::SharelyConfig;
use crate::plan::{Op, Plan};
use crate::sink::{
    record_failure, ErrorClass, Failure, Outcome, PushContext, PushError, SinkError,
};
use crate::state::StepKind;

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

pub async fn push(
    ctx: PushContext<'_>,
    client: &SharelyClient,
    cfg: &SharelyConfig,
    plan: &Plan,
) -> Result<Outcome, PushError> {
    let job = ctx.job.name.as_str();
    let stop = ctx.stop;
    let mut out = Outcome::default();
    let mapped: HashSet<&str> = cfg.knowledge.values().map(String::as_str).collect();

    // Keys the config maps never come here as content (the planner only
    // sets their metadata).
    let mut ids: HashMap<&str, String> = HashMap::new();
    let uploads: Vec<(&str, Option<&str>)> = plan
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Create { key, .. } => Some((key.as_str(), None)),
            Op::UpdateContent { key, doc_id, .. } => Some((key.as_str(), Some(doc_id.as_str()))),
            _ => None,
        })
        .collect();

    // A listing maps titles to items: the first time the job creates, and
    // whenever an earlier upload may have made an item unbeknown.
    let creates = uploads.iter().any(|(_, old)| old.is_none());
    let suspect = uploads.iter().any(|(k, _)| ctx.suspects.contains(*k))
        || plan
            .ops
            .iter()
            .any(|op| matches!(op, Op::Forget { key } if ctx.suspects.contains(key)));
    let mut titles: Option<Titles> = None;
    if (creates && !ctx.state.listed(job)?) || suspect {
        match client.list().await {
            Ok(items) => {
                ctx.state.mark_listed(job)?;
                let mut t = Titles::new();
                for item in items
                    .into_iter()
                    .filter(|i| !mapped.contains(i.id.as_str()))
                {
                    if let Some(name) = item.name() {
                        t.entry(name.to_owned()).or_default().push(item);
                    }
                }
                titles = Some(t);
            }
            Err(e) => {
                // Uploading blind could duplicate items: wait for a listing.
                for (key, _) in &uploads {
                    record_failure(ctx.state, &mut out, job, key, "create", e.clone())?;
                }
                if e.class == ErrorClass::Fatal {
                    out.fatal = Some(e);
                }
                return Ok(out);
            }
        }
    }

    let uploader = Uploader {
        ctx: &ctx,
        client,
        titles: titles.as_ref(),
    };
    let keys: Vec<&str> = uploads.iter().map(|(k, _)| *k).collect();
    ctx.state.steps_started(job, &keys, StepKind::Content)?;
    let mut blocked: HashSet<String> = HashSet::new();
    let mut replaced: Vec<&str> = Vec::new();
    crate::progress::UPLOADING.add(uploads.len());
    let results: Vec<Uploaded<'_>> = futures::stream::iter(uploads.iter().map(|(key, old)| {
        let one = uploader.upload_one(key, *old);
        async move {
            let r = one.await;
            crate::progress::UPLOADING.one_done();
            r
        }
    }))
    .buffer_unordered(cfg.concurrency)
    .collect()
    .await;
    for r in results {
        match r {
            Uploaded::Done {
                key,
                id,
                hash,
                adopted,
                created,
            } => {
                ctx.state.record_content(job, key, &id, key, &hash, None)?;
                if adopted {
                    out.adopted += 1;
                } else if created {
                    out.created += 1;
                } else {
                    out.updated += 1;
                }
                if !created {
                    replaced.push(key);
                }
                ids.insert(key, id);
            }
            Uploaded::Failed(f) => {
                if f.error.class == ErrorClass::Fatal {
                    out.fatal = Some(f.error.clone());
                }
                blocked.insert(f.key.clone());
                record_failure(ctx.state, &mut out, job, &f.key, f.op, f.error)?;
            }
            Uploaded::NotSent { key, failure } => {
                // Marked started with the others, never sent: the next
                // pass need not look for it.
                if !ctx.suspects.contains(key) {
                    ctx.state.step_not_sent(job, key, StepKind::Content)?;
                }
                match failure {
                    Some(f) => {
                        blocked.insert(f.key.clone());
                        record_failure(ctx.state, &mut out, job, &f.key, f.op, f.error)?;
                    }
                    None => out.interrupted = true,
                }
            }
        }
    }
    if out.fatal.is_some() || stop.load(Ordering::SeqCst) {
        out.interrupted |= stop.load(Ordering::SeqCst);
        return Ok(out);
    }

    // Metadata: to the id the upload ended with. A replacing item starts
    // with none, so what the old one had goes to it too.
    let mut meta: Vec<MetaUpdate> = plan
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::SetMetadata {
                key,
                doc_id,
                metadata,
            } if !blocked.contains(key) => Some(MetaUpdate {
                key,
                id: ids.get(key.as_str()).cloned().or_else(|| doc_id.clone())?,
                metadata,
            }),
            _ => None,
        })
        .collect();
    for key in replaced {
        if meta.iter().any(|m| m.key == key) {
            continue;
        }
        if let Some(pushed) = ctx.cached.get(key).and_then(|c| c.pushed_meta.as_ref()) {
            if !pushed.is_empty() {
                meta.push(MetaUpdate {
                    key,
                    id: ids[key].clone(),
                    metadata: pushed,
                });
            }
        }
    }
    let sender = Sender {
        job,
        client,
        cached: ctx.cached,
        stop,
        concurrency: cfg.concurrency,
        uploaded: Some(&cfg.knowledge),
    };
    sender.send(ctx.state, &meta, &mut out).await?;
    if out.fatal.is_some() || stop.load(Ordering::SeqCst) {
        out.interrupted |= stop.load(Ordering::SeqCst);
        return Ok(out);
    }

    // Items of vanished files (delete_policy = "delete").
    for (key, id) in plan.deletes() {
        if stop.load(Ordering::SeqCst) {
            out.interrupted = true;
            return Ok(out);
        }
        match client.delete(id).await {
            Ok(()) => {
                ctx.state.forget(job, key)?;
                out.deleted += 1;
            }
            Err(e) => {
                let fatal = e.class == ErrorClass::Fatal;
                record_failure(ctx.state, &mut out, job, key, "delete", e.clone())?;
                if fatal {
                    out.fatal = Some(e);
                    return Ok(out);
                }
            }
        }
    }

    for op in &plan.ops {
        let Op::Forget { key } = op else { continue };
        // Gone while its upload was unconfirmed: an item the upload made
        // would mirror nothing now.
        let orphans: Vec<&Knowledge> = match (&titles, ctx.suspects.contains(key)) {
            (Some(t), true) => t.get(key.as_str()).into_iter().flatten().collect(),
            _ => Vec::new(),
        };
        let mut failed = None;
        for item in orphans {
            tracing::info!(%key, item = %item.id, "deleting the item of an unconfirmed upload whose file is gone");
            if let Err(e) = client.delete(&item.id).await {
                failed = Some(e);
                break;
            }
        }
        match failed {
            Some(e) => {
                let fatal = e.class == ErrorClass::Fatal;
                record_failure(ctx.state, &mut out, job, key, "create", e.clone())?;
                if fatal {
                    out.fatal = Some(e);
                    return Ok(out);
                }
            }
            None => {
                ctx.state.forget(job, key)?;
                out.forgotten += 1;
            }
        }
    }
    Ok(out)
}

struct Uploader<'a, 'c> {
    ctx: &'a PushContext<'c>,
    client: &'a SharelyClient,
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

        let file_name = key.rsplit('/').next().unwrap_or(key);
        let item = match self.client.upload(key, file_name, &bytes).await {
            Ok(item) => item,
            Err(e) => return failed(e),
        };
        for id in stale {
            if let Err(e) = self.client.delete(id).await {
                // The new item stays; the step stays started, so the next
                // pass finds both under the title and sorts them out.
                return failed(SinkError {
                    message: format!(
                        "uploaded as item {}, but the item it replaces ({id}) could not be deleted: {}",
                        item.id, e.message
                    ),
                    ..e
                });
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
