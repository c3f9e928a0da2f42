//! Carrying work out through a sink's verbs (`sink::verbs`): what every
//! upstream does the same way lives here once, the sinks only answer
//! calls.

mod batches;
mod delete;
mod metadata;
mod retire;
mod without_content;

pub use delete::deletes;
pub use metadata::{create_records, set_metadata, MetaItem, Phase};
pub use retire::retire;
pub use without_content::without_content;

use crate::plan::{Op, Plan};
use crate::sink::Outcome;
use crate::state::{State, StateError};

/// Forgets the keys the plan forgets (items that vanished before any
/// record was made for them): local bookkeeping only.
pub fn forget(state: &State, job: &str, plan: &Plan, out: &mut Outcome) -> Result<(), StateError> {
    for op in &plan.ops {
        if let Op::Forget { key } = op {
            state.forget(job, key)?;
            out.forgotten += 1;
        }
    }
    Ok(())
}
