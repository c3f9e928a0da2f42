//! The exit codes, in one place: the binary exits with them and the
//! manual page (`manual.rs`) lists them, so the two cannot disagree.

/// Every job converged: the upstream matches the source. The service
/// exits with it after a clean stop.
pub const CONVERGED: u8 = 0;
/// Some items failed or were skipped (each is named with its reason).
pub const NOT_CONVERGED: u8 = 1;
/// The run could not start: a bad config, an unusable state file, bad
/// arguments.
pub const COULD_NOT_START: u8 = 2;
/// The delete guard refused to retire what a pass would have retired
/// (`max_delete`; `--allow-deletes` overrides it).
pub const GUARD_REFUSED: u8 = 3;
/// The upstream refused the credentials, or the target (the dataset or
/// knowledge base) was not found.
pub const UPSTREAM_REFUSED: u8 = 4;
