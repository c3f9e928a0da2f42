//! Metadata-only mode: the plan holds metadata changes onto the items the
//! config maps, set one item per call (the API has no batch call) through
//! the executor's metadata phase.

use std::sync::atomic::Ordering;

use super::SharelySink;
use crate::execute::{set_metadata, MetaItem, Phase};
use crate::plan::{Op, Plan};
use crate::sink::{metadata_ops, Outcome, PushContext, PushError};

pub(super) async fn push(
    ctx: PushContext<'_>,
    sink: &SharelySink,
    plan: &Plan,
) -> Result<Outcome, PushError> {
    let job = ctx.job.name.as_str();
    let mut out = Outcome::default();
    let items: Vec<MetaItem> = metadata_ops(plan)
        .map(|(key, id, values)| MetaItem {
            key,
            id: id.cloned(),
            values,
            facts: None,
        })
        .collect();
    let at = Phase {
        job: ctx.job,
        state: ctx.state,
        cached: ctx.cached,
        stop: ctx.stop,
    };
    set_metadata(sink, &at, &items, &mut out).await?;
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
