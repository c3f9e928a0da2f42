//! Pushing to a target that takes no content (Sharely): the plan holds only
//! metadata changes onto existing upstream items, sent one item per call
//! (the API has no batch call) with bounded concurrency.

use std::sync::atomic::Ordering;

use futures::StreamExt;

use super::client::{check_values, SharelyClient};
use crate::metadata::Metadata;
use crate::plan::{Op, Plan};
use crate::sink::{record_failure, ErrorClass, Outcome, PushContext, PushError};

pub async fn push(
    ctx: PushContext<'_>,
    client: &SharelyClient,
    concurrency: usize,
    plan: &Plan,
) -> Result<Outcome, PushError> {
    let (job, state, cached, stop) = (ctx.job.name.as_str(), ctx.state, ctx.cached, ctx.stop);
    let mut out = Outcome::default();
    let updates: Vec<(&str, &str, &Metadata)> = plan
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::SetMetadata {
                key,
                doc_id: Some(id),
                metadata,
            } => Some((key.as_str(), id.as_str(), metadata)),
            _ => None,
        })
        .collect();
    let calls = updates.iter().map(|&(key, id, metadata)| async move {
        if stop.load(Ordering::SeqCst) {
            return (key, id, metadata, None);
        }
        // Sharely merges: keys set before and no longer mapped are removed
        // explicitly. Keys kbsync never set are not its business.
        let before = cached
            .get(key)
            .filter(|c| c.doc_id.as_deref() == Some(id))
            .and_then(|c| c.pushed_meta.as_ref());
        let remove: Vec<String> = before
            .map(|b| {
                b.keys()
                    .filter(|k| !metadata.contains_key(k))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let r = match check_values(metadata) {
            Ok(()) => client.update_metadata(id, metadata, &remove).await,
            Err(e) => Err(e),
        };
        (key, id, metadata, Some(r))
    });
    let mut stream = futures::stream::iter(calls).buffer_unordered(concurrency);
    while let Some((key, id, metadata, r)) = stream.next().await {
        match r {
            None => out.interrupted = true,
            Some(Ok(())) => {
                state.record_doc_id(job, key, id, key)?;
                state.record_metadata(job, &[(key, metadata)])?;
                out.metadata += 1;
            }
            Some(Err(e)) => {
                let fatal = e.class == ErrorClass::Fatal;
                record_failure(state, &mut out, job, key, "metadata", e.clone())?;
                if fatal {
                    out.fatal = Some(e);
                    break;
                }
            }
        }
    }
    if out.fatal.is_none() && !stop.load(Ordering::SeqCst) {
        for op in &plan.ops {
            if let Op::Forget { key } = op {
                state.forget(job, key)?;
                out.forgotten += 1;
            }
        }
    }
    Ok(out)
}
