//! Carrying work out through a sink's verbs (`sink::verbs`): what every
//! upstream does the same way lives here once, the sinks only answer
//! calls.

mod batches;
mod content;
mod delete;
mod metadata;
mod retire;
mod without_content;

pub use content::replaced_but_kept;
pub use delete::deletes;
pub use metadata::{create_records, set_metadata, MetaItem, Phase};
pub use retire::retire;
pub use without_content::without_content;

use crate::plan::{Op, Plan};
use crate::sink::{Outcome, PushContext, PushError, Sink};
use crate::state::{State, StateError};

/// Carries out `plan` (what the outbox did not hold back) through `sink`'s
/// verbs, recording each confirmed step in the state file as it goes: the
/// content path where the sink takes content, else `without_content`.
/// The future is not `Send`: it writes through the state file's
/// connection, and the pass runs on one task.
pub async fn push(
    sink: &dyn Sink,
    ctx: PushContext<'_>,
    plan: &Plan,
) -> Result<Outcome, PushError> {
    match sink.verbs().content {
        Some(content) => content::with_content(sink, content, ctx, plan).await,
        None => without_content(sink, ctx, plan).await,
    }
}

/// Forgets the keys the plan forgets (items that vanished before any
/// record was made for them): local bookkeeping only.
pub fn forget(state: &State, job: &str, plan: &Plan, out: &mut Outcome) -> Result<(), StateError> {
    for op in &plan.ops {
        if let Op::Forget { key } = op {
            state.forget(job, key)?;
            out.forgotten += 1;
            out.did(key, "forget");
        }
    }
    Ok(())
}
