//! Carrying work out through a sink's verbs (`sink::verbs`): what every
//! upstream does the same way lives here once, the sinks only answer
//! calls.

mod batches;
mod delete;
mod metadata;
mod retire;

pub use delete::deletes;
pub use metadata::{create_records, set_metadata, MetaItem, Phase};
pub use retire::retire;
