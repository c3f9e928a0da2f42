//! What a push did, and how a failed step is recorded: the same for every
//! sink.

use std::collections::BTreeMap;

use super::{ErrorClass, SinkError};
use crate::outbox;
use crate::state::{State, StateError, StepKind};

#[derive(Debug, Clone)]
pub struct Failure {
    pub key: String,
    pub op: &'static str,
    pub error: SinkError,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub created: usize,
    pub adopted: usize,
    pub updated: usize,
    pub metadata: usize,
    pub status: BTreeMap<&'static str, usize>,
    pub deleted: usize,
    pub forgotten: usize,
    pub failures: Vec<Failure>,
    /// A job-wide error that stopped the pass.
    pub fatal: Option<SinkError>,
    /// The pass was asked to stop before it finished.
    pub interrupted: bool,
    /// What was done, item by item (key, step), for `--reconcile --json`:
    /// the first `KEPT_DONE`, then only counted in `done_untold`, so a
    /// first sync of a million files does not hold a million keys.
    pub done: Vec<(String, &'static str)>,
    pub done_untold: usize,
}

/// How many items' results an `Outcome` lists.
pub const KEPT_DONE: usize = 10_000;

impl Outcome {
    /// Adds what a later slice of the same pass did.
    pub fn absorb(&mut self, other: Outcome) {
        self.created += other.created;
        self.adopted += other.adopted;
        self.updated += other.updated;
        self.metadata += other.metadata;
        for (action, n) in other.status {
            *self.status.entry(action).or_default() += n;
        }
        self.deleted += other.deleted;
        self.forgotten += other.forgotten;
        self.failures.extend(other.failures);
        self.fatal = self.fatal.take().or(other.fatal);
        self.interrupted |= other.interrupted;
        let room = KEPT_DONE.saturating_sub(self.done.len());
        self.done_untold += other.done_untold + other.done.len().saturating_sub(room);
        self.done.extend(other.done.into_iter().take(room));
    }

    /// `step` on `key` went through.
    pub fn did(&mut self, key: &str, step: &'static str) {
        if self.done.len() < KEPT_DONE {
            self.done.push((key.to_owned(), step));
        } else {
            self.done_untold += 1;
        }
    }

    pub fn converged(&self) -> bool {
        self.failures.is_empty() && self.fatal.is_none() && !self.interrupted
    }

    /// Every failure was a refusal for good: nothing is left to retry.
    pub fn settled(&self) -> bool {
        self.fatal.is_none()
            && !self.interrupted
            && self
                .failures
                .iter()
                .all(|f| f.error.class == ErrorClass::Permanent)
    }

    /// One line per kind of failure (step, status, code), with how many
    /// items it hit and the first of them: what an outage of 30,000 items
    /// logs instead of 30,000 lines.
    pub fn failure_summary(&self) -> Vec<String> {
        let mut kinds: BTreeMap<(&str, Option<u16>, &str), (usize, &Failure)> = BTreeMap::new();
        for f in &self.failures {
            kinds
                .entry((f.op, f.error.status, f.error.code.as_str()))
                .or_insert((0, f))
                .0 += 1;
        }
        kinds
            .into_values()
            .map(|(n, first)| {
                format!(
                    "{n} {} step(s) failed, {}; the first, {}: {}",
                    first.op,
                    if first.error.is_transient() {
                        "retried later"
                    } else {
                        "parked until the item changes"
                    },
                    first.key,
                    first.error
                )
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    State(#[from] StateError),
}

/// A step that failed: logged, written to the outbox (backed off or parked
/// by its class; a fatal error leaves the step queued as it was) and
/// reported in the outcome.
pub fn record_failure(
    state: &State,
    out: &mut Outcome,
    job: &str,
    key: &str,
    op: &'static str,
    error: SinkError,
) -> Result<(), PushError> {
    // Per item, so debug: `Outcome::failure_summary` gives one line per
    // kind of failure for the pass.
    tracing::debug!(%job, %key, op, error = %error, "failed");
    if let Some(setback) = outbox::setback(&error) {
        state.step_failed(
            job,
            key,
            StepKind::of_op(op),
            setback,
            &outbox::row_error(&error),
        )?;
    }
    out.failures.push(Failure {
        key: key.to_owned(),
        op,
        error,
    });
    Ok(())
}
