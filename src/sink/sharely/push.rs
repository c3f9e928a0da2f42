//! Metadata onto Sharely knowledge items: one call per item (the API has no
//! batch call) with bounded concurrency. Both modes use it: metadata only,
//! onto the items the config maps, and after uploads.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;

use super::client::{check_values, SharelyClient};
use crate::metadata::Metadata;
use crate::plan::{Op, Plan};
use crate::sink::{metadata_ops, record_failure, ErrorClass, Outcome, PushContext, PushError};
use crate::state::{CachedItem, State};

/// One item's metadata and the id it goes to.
pub struct MetaUpdate<'p> {
    pub key: &'p str,
    pub id: String,
    pub metadata: &'p Metadata,
}

/// Metadata-only mode: the plan holds metadata changes onto mapped items.
pub async fn push(
    ctx: PushContext<'_>,
    client: &SharelyClient,
    concurrency: usize,
    plan: &Plan,
) -> Result<Outcome, PushError> {
    let job = ctx.job.name.as_str();
    let mut out = Outcome::default();
    let updates: Vec<MetaUpdate> = metadata_ops(plan)
        .filter_map(|(key, id, metadata)| {
            let id = id?.clone();
            Some(MetaUpdate { key, id, metadata })
        })
        .collect();
    let sender = Sender {
        job,
        client,
        cached: ctx.cached,
        stop: ctx.stop,
        concurrency,
        uploaded: None,
    };
    sender.send(ctx.state, &updates, &mut out).await?;
    if out.fatal.is_none() && !ctx.stop.load(Ordering::SeqCst) {
        for op in &plan.ops {
            if let Op::Forget { key } = op {
                ctx.state.forget(job, key)?;
                out.forgotten += 1;
            }
        }
    }
    Ok(out)
}

pub struct Sender<'a> {
    pub job: &'a str,
    pub client: &'a SharelyClient,
    pub cached: &'a HashMap<String, CachedItem>,
    pub stop: &'a AtomicBool,
    pub concurrency: usize,
    /// Set when kbsync uploads (to the keys the config maps, which are not
    /// uploads): an uploaded item gone upstream (404) is uploaded again by
    /// the next pass rather than reported.
    pub uploaded: Option<&'a BTreeMap<String, String>>,
}

impl Sender<'_> {
    /// Sends each update, recording each one confirmed.
    pub async fn send(
        &self,
        state: &mut State,
        updates: &[MetaUpdate<'_>],
        out: &mut Outcome,
    ) -> Result<(), PushError> {
        if updates.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = updates.iter().map(|u| u.id.as_str()).collect();
        self.client.learn_kinds(&ids).await;
        let calls = updates.iter().map(|u| async move {
            if self.stop.load(Ordering::SeqCst) {
                return (u, None);
            }
            // Sharely merges: keys set before on this item and no longer
            // mapped are removed explicitly. Keys kbsync never set are not
            // its business.
            let before = self
                .cached
                .get(u.key)
                .filter(|c| c.doc_id.as_deref() == Some(u.id.as_str()))
                .and_then(|c| c.pushed_meta.as_ref());
            let remove: Vec<String> = before
                .map(|b| {
                    b.keys()
                        .filter(|k| !u.metadata.contains_key(k))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let r = match check_values(u.metadata) {
                Ok(()) => {
                    self.client
                        .update_metadata(&u.id, u.metadata, &remove)
                        .await
                }
                Err(e) => Err(e),
            };
            (u, Some(r))
        });
        let mut stream = futures::stream::iter(calls).buffer_unordered(self.concurrency);
        while let Some((u, r)) = stream.next().await {
            match r {
                None => out.interrupted = true,
                Some(Ok(())) => {
                    state.record_doc_id(self.job, u.key, &u.id, u.key)?;
                    state.record_metadata(self.job, &[(u.key, u.metadata)])?;
                    out.metadata += 1;
                }
                Some(Err(mut e)) => {
                    let upload = self.uploaded.is_some_and(|m| !m.contains_key(u.key));
                    if upload && e.status == Some(404) {
                        state.clear_doc_id(self.job, u.key)?;
                        e.class = ErrorClass::Transient;
                        e.message = format!(
                            "{}; the item is gone from Sharely, and the next pass uploads the file again",
                            e.message
                        );
                    }
                    let fatal = e.class == ErrorClass::Fatal;
                    record_failure(state, out, self.job, u.key, "metadata", e.clone())?;
                    if fatal {
                        out.fatal = Some(e);
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}
