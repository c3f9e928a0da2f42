//! Pushing to PAI: metadata records of dataset files, in batches. Items
//! without a known record are looked up in one listing of the dataset (by
//! URI) and, when absent, created with their metadata; known records are
//! updated. Both go through the executor's metadata phase (per-record
//! refusals inside a 200 answer are failures of those files only; a whole
//! batch refused is bisected).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::client::PaiClient;
use super::PaiSink;
use crate::execute::{create_records, set_metadata, MetaItem, Phase};
use crate::plan::{Op, Plan};
use crate::sink::{metadata_ops, record_failure, ErrorClass, Outcome, PushContext, PushError};
use crate::state::State;

pub async fn push(ctx: PushContext<'_>, sink: &PaiSink, plan: &Plan) -> Result<Outcome, PushError> {
    let (job, state, stop) = (ctx.job.name.as_str(), ctx.state, ctx.stop);
    let client = &sink.client;
    let mut out = Outcome::default();
    let mut items = items(job, state, plan)?;
    // Records kbsync does not know yet: one listing maps URIs to ids.
    if items.iter().any(|i| i.id.is_none()) && !stop.load(Ordering::SeqCst) {
        bind_by_listing(job, client, state, &mut out, &mut items).await?;
        if out.fatal.is_some() {
            return Ok(out);
        }
    }

    let (known, new): (Vec<MetaItem>, Vec<MetaItem>) =
        items.into_iter().partition(|i| i.id.is_some());
    let at = Phase {
        job: ctx.job,
        state,
        cached: ctx.cached,
        stop,
    };
    set_metadata(sink, &at, &known, &mut out).await?;
    if !new.is_empty() && out.fatal.is_none() && !out.interrupted {
        create_records(sink, &at, &new, &mut out).await?;
    }

    let deletes = plan.deletes();
    if !deletes.is_empty() && out.fatal.is_none() && !stop.load(Ordering::SeqCst) {
        crate::execute::deletes(sink, job, state, stop, &deletes, &mut out).await?;
    }

    if out.fatal.is_none() && !out.interrupted {
        for op in &plan.ops {
            if let Op::Forget { key } = op {
                state.forget(job, key)?;
                out.forgotten += 1;
            }
        }
    }
    Ok(out)
}

/// The plan's metadata steps, with the facts this pass recorded (the
/// scan's rows were read before it).
fn items<'p>(job: &str, state: &mut State, plan: &'p Plan) -> Result<Vec<MetaItem<'p>>, PushError> {
    let mut items: Vec<MetaItem> = metadata_ops(plan)
        .map(|(key, id, values)| MetaItem {
            key,
            id: id.cloned(),
            values,
            facts: None,
        })
        .collect();
    let mut rows = state.load_keys(job, items.iter().map(|i| i.key))?;
    for item in &mut items {
        item.facts = rows.remove(item.key).and_then(|c| c.facts);
    }
    Ok(items)
}

/// Binds the items without an id to the records a listing of the dataset
/// shows under their URIs. Without a listing, they are failures of this
/// pass and leave `items`: creating blind could duplicate records.
async fn bind_by_listing(
    job: &str,
    client: &PaiClient,
    state: &mut State,
    out: &mut Outcome,
    items: &mut Vec<MetaItem<'_>>,
) -> Result<(), PushError> {
    let e = match client.list().await {
        Ok(records) => {
            let by_uri: HashMap<String, String> = records.into_iter().collect();
            for item in items.iter_mut().filter(|i| i.id.is_none()) {
                if let Some(id) = by_uri.get(&client.uri_of(item.key)) {
                    state.record_doc_id(job, item.key, id, item.key)?;
                    item.id = Some(id.clone());
                }
            }
            return Ok(());
        }
        Err(e) => e,
    };
    for item in items.iter().filter(|i| i.id.is_none()) {
        record_failure(state, out, job, item.key, "metadata", e.clone())?;
    }
    if e.class == ErrorClass::Fatal {
        out.fatal = Some(e);
    } else {
        items.retain(|i| i.id.is_some());
    }
    Ok(())
}
