//! A plan carried out for a sink without content, through its verbs
//! alone: records bound by one listing (for a sink that creates records),
//! metadata set onto known records, records created for the rest, then
//! deletes and forgets. PAI and Sharely's mapped items go this way.

use std::sync::atomic::Ordering;

use super::{create_records, deletes, set_metadata, MetaItem, Phase};
use crate::plan::{Op, Plan};
use crate::sink::{
    metadata_ops, record_failure, ErrorClass, Outcome, PushContext, PushError, Sink, SinkError,
};
use crate::state::State;

pub async fn without_content(
    sink: &dyn Sink,
    ctx: PushContext<'_>,
    plan: &Plan,
) -> Result<Outcome, PushError> {
    let verbs = sink.verbs();
    let (job, state, stop) = (ctx.job.name.as_str(), &*ctx.state, ctx.stop);
    let mut out = Outcome::default();
    refuse_content(state, job, plan, &mut out)?;
    let mut items = metadata_items(job, state, plan)?;
    // Records kbsync does not know yet: one listing binds them by name.
    let unbound = items.iter().any(|i| i.id.is_none());
    if verbs.records.is_some() && unbound && !stop.load(Ordering::SeqCst) {
        bind_by_listing(sink, job, state, &mut out, &mut items).await?;
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
        gone: &|_| false,
        binds: true,
    };
    set_metadata(verbs.metadata, &at, &known, &mut out).await?;
    if let Some(records) = verbs.records {
        if !new.is_empty() && out.fatal.is_none() && !out.interrupted {
            create_records(records, &at, &new, &mut out).await?;
        }
    }
    let gone = plan.deletes();
    if let Some(delete) = verbs.delete {
        if !gone.is_empty() && out.fatal.is_none() && !stop.load(Ordering::SeqCst) {
            deletes(delete, job, state, stop, &gone, &mut out).await?;
        }
    }
    if out.fatal.is_none() && !out.interrupted && !stop.load(Ordering::SeqCst) {
        super::forget(state, job, plan, &mut out)?;
    }
    Ok(out)
}

/// Steps this path cannot take (the planner plans none for a sink
/// without content or status): failures, never dropped unsaid.
fn refuse_content(
    state: &State,
    job: &str,
    plan: &Plan,
    out: &mut Outcome,
) -> Result<(), PushError> {
    for op in &plan.ops {
        let step = match op {
            Op::Create { .. } => "create",
            Op::UpdateContent { .. } => "update",
            Op::SetStatus { action, .. } => action.as_str(),
            _ => continue,
        };
        let e = SinkError::unsupported(format!("this sink takes no {step} step"));
        record_failure(state, out, job, op.key(), step, e)?;
    }
    Ok(())
}

/// The plan's metadata steps, with the facts this pass recorded (the
/// scan's rows were read before it).
fn metadata_items<'p>(
    job: &str,
    state: &State,
    plan: &'p Plan,
) -> Result<Vec<MetaItem<'p>>, PushError> {
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

/// Binds the items without an id to the records a listing shows under
/// their names. Without a listing, they are failures of this pass and
/// leave `items`: creating blind could duplicate records.
async fn bind_by_listing(
    sink: &dyn Sink,
    job: &str,
    state: &State,
    out: &mut Outcome,
    items: &mut Vec<MetaItem<'_>>,
) -> Result<(), PushError> {
    let e = match sink.list().await {
        Ok(Some(records)) => {
            let by_name: std::collections::HashMap<String, String> =
                records.into_iter().map(|l| (l.name, l.id)).collect();
            for item in items.iter_mut().filter(|i| i.id.is_none()) {
                if let Some(id) = by_name.get(&sink.record_name(item.key)) {
                    state.record_doc_id(job, item.key, id, item.key)?;
                    item.id = Some(id.clone());
                }
            }
            return Ok(());
        }
        Ok(None) => SinkError::unsupported("the upstream cannot list its records to find them"),
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
