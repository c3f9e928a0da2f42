//! The metadata phase: values set onto existing records through the
//! sink's SetMetadata verb, and records created with their values through
//! its Records verb; each confirmed answer recorded in the state file.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{FutureExt, StreamExt};

use super::batches::{send_answered, stopped, ByKey};
use crate::config::JobConfig;
use crate::metadata::Metadata as Values;
use crate::sink::bisect::BatchResult;
use crate::sink::verbs::{MetaSet, NewRecord, Prepare, Records, Refused, SetMetadata};
use crate::sink::{record_failure, ErrorClass, Outcome, PushError, SinkError};
use crate::source::KnownFacts;
use crate::state::{CachedItem, State};

/// What a phase works with.
pub struct Phase<'a> {
    pub job: &'a JobConfig,
    pub state: &'a State,
    /// The rows the plan was made from.
    pub cached: &'a HashMap<String, CachedItem>,
    pub stop: &'a AtomicBool,
    /// Whether a refusal says the record is gone upstream
    /// (`ContentHooks::gone`; a sink without content says so per item).
    pub gone: &'a dyn Fn(&SinkError) -> bool,
    /// Whether a metadata answer binds its record to the key (records
    /// made without content); an upload binds its own.
    pub binds: bool,
}

/// One item's values, and the record they go to (none: to create).
pub struct MetaItem<'a> {
    pub key: &'a str,
    pub id: Option<String>,
    pub values: &'a Values,
    /// The file as this pass recorded it.
    pub facts: Option<KnownFacts>,
}

impl Phase<'_> {
    fn job(&self) -> &str {
        &self.job.name
    }

    /// What kbsync last set on record `id` of `key` (none after a new
    /// record: it starts without any).
    fn before(&self, key: &str, id: &str) -> Option<&Values> {
        self.cached
            .get(key)
            .filter(|c| c.doc_id.as_deref() == Some(id))
            .and_then(|c| c.pushed_meta.as_ref())
    }

    /// Records `key`'s values set on record `id`.
    fn done(&self, key: &str, id: &str, values: &Values) -> Result<(), PushError> {
        let known = self.cached.get(key).and_then(|c| c.doc_id.as_deref());
        if self.binds && known != Some(id) {
            self.state.record_doc_id(self.job(), key, id, key)?;
        }
        self.state.record_metadata(self.job(), &[(key, values)])?;
        Ok(())
    }

    /// A step of `key` that failed. A record gone upstream (deleted by
    /// hand) is forgotten, so the next pass creates it again; never parked.
    pub fn fail(
        &self,
        out: &mut Outcome,
        key: &str,
        op: &'static str,
        mut error: SinkError,
    ) -> Result<(), PushError> {
        if op != "delete" && (self.gone)(&error) {
            self.state.clear_doc_id(self.job(), key)?;
            error.class = ErrorClass::Transient;
            error.message = format!(
                "{} (the record is gone upstream; the next pass creates it again)",
                error.message
            );
        }
        record_failure(self.state, out, self.job(), key, op, error)
    }

    /// A refusal of `key`'s values; a record gone upstream is forgotten,
    /// so the next pass finds or creates it again.
    fn refused(&self, out: &mut Outcome, key: &str, r: Refused) -> Result<(), PushError> {
        if r.gone {
            self.state.clear_doc_id(self.job(), key)?;
        }
        self.fail(out, key, "metadata", r.error)
    }

    /// What a batch did not apply: its failures, and the items a fatal
    /// answer stopped. True when the phase stops.
    fn unapplied(
        &self,
        out: &mut Outcome,
        keys: &[&str],
        r: &BatchResult,
    ) -> Result<bool, PushError> {
        if !r.failed.is_empty() {
            // What `prepare` learnt may be stale (a field removed upstream
            // by hand fails the batch): learnt again next time.
            self.state.forget_fields(self.job())?;
        }
        for (i, e) in &r.failed {
            self.fail(out, keys[*i], "metadata", e.clone())?;
        }
        let Some(e) = r.fatal.clone() else {
            return Ok(false);
        };
        for i in stopped(r, keys.len()) {
            self.fail(out, keys[i], "metadata", e.clone())?;
        }
        out.fatal = Some(e);
        Ok(true)
    }

    /// What kbsync last set on record `id` of `key`, for a `MetaSet`.
    pub fn set_of<'m>(&'m self, key: &'m str, id: &'m str, values: &'m Values) -> MetaSet<'m> {
        MetaSet {
            key,
            id,
            values,
            before: self.before(key, id),
            facts: None,
        }
    }

    /// Records what one batch's call did: each applied item's answer,
    /// its failures. True when the phase stops (a fatal answer).
    pub fn settle(
        &self,
        out: &mut Outcome,
        chunk: &[MetaSet<'_>],
        (r, answers): (BatchResult, ByKey<()>),
    ) -> Result<bool, PushError> {
        let keys: Vec<&str> = chunk.iter().map(|m| m.key).collect();
        for (i, answer) in applied(&r, &keys, answers) {
            let m = &chunk[i];
            match answer {
                Ok(()) => {
                    self.done(m.key, m.id, m.values)?;
                    out.metadata += 1;
                    out.did(m.key, "metadata");
                }
                Err(refused) => self.refused(out, m.key, refused)?,
            }
        }
        self.unapplied(out, &keys, &r)
    }
}

/// Sends one batch (halving it if refused whole).
pub async fn send_batch<'a>(
    verb: &dyn SetMetadata,
    chunk: &'a [MetaSet<'a>],
) -> (BatchResult, ByKey<()>) {
    send_answered(chunk, |m| m.key, |part| verb.set(part).boxed_local()).await
}

/// Sends `sets` in the verb's batches, as many in flight as it takes.
/// Shutdown sends nothing more; a fatal answer stops the phase.
pub async fn send_sets(
    verb: &dyn SetMetadata,
    at: &Phase<'_>,
    sets: &[MetaSet<'_>],
    out: &mut Outcome,
) -> Result<(), PushError> {
    let calls = sets
        .chunks(verb.batch_size().max(1))
        .map(|chunk| async move {
            if at.stop.load(Ordering::SeqCst) {
                return (chunk, None);
            }
            (chunk, Some(send_batch(verb, chunk).await))
        });
    let mut calls = futures::stream::iter(calls).buffer_unordered(verb.concurrency().max(1));
    while let Some((chunk, sent)) = calls.next().await {
        let Some(sent) = sent else {
            out.interrupted = true;
            continue;
        };
        if at.settle(out, chunk, sent)? {
            break;
        }
    }
    Ok(())
}

/// Sets each item's values onto its record (items without one are
/// skipped): `prepare` first, then the verb's batches, as many in flight
/// as it takes. Shutdown sends nothing more; a fatal answer stops the
/// phase.
pub async fn set_metadata(
    verb: &dyn SetMetadata,
    at: &Phase<'_>,
    items: &[MetaItem<'_>],
    out: &mut Outcome,
) -> Result<(), PushError> {
    let sets: Vec<MetaSet> = items
        .iter()
        .filter_map(|i| {
            let id = i.id.as_deref()?;
            Some(MetaSet {
                facts: i.facts.as_ref(),
                ..at.set_of(i.key, id, i.values)
            })
        })
        .collect();
    if sets.is_empty() {
        return Ok(());
    }
    let wanted: Vec<(Option<&str>, &Values)> =
        sets.iter().map(|m| (Some(m.id), m.values)).collect();
    let p = Prepare {
        job: at.job,
        state: at.state,
        wanted: &wanted,
    };
    if let Err(e) = verb.prepare(p).await {
        return fail_all(at, out, sets.iter().map(|m| m.key), e);
    }
    send_sets(verb, at, &sets, out).await
}

/// Creates a record with its values for each item, in the verb's batches,
/// one batch at a time. Each create is sent once: a batch whose answer
/// was lost is not sent again in this pass.
pub async fn create_records(
    verb: &dyn Records,
    at: &Phase<'_>,
    items: &[MetaItem<'_>],
    out: &mut Outcome,
) -> Result<(), PushError> {
    let records: Vec<NewRecord> = items
        .iter()
        .map(|i| NewRecord {
            key: i.key,
            values: i.values,
            facts: i.facts.as_ref(),
        })
        .collect();
    for chunk in records.chunks(verb.batch_size().max(1)) {
        if at.stop.load(Ordering::SeqCst) {
            out.interrupted = true;
            break;
        }
        let (r, answers) =
            send_answered(chunk, |n| n.key, |part| verb.create(part).boxed_local()).await;
        let keys: Vec<&str> = chunk.iter().map(|n| n.key).collect();
        for (i, answer) in applied(&r, &keys, answers) {
            let n = &chunk[i];
            match answer {
                Ok(id) => {
                    at.done(n.key, &id, n.values)?;
                    out.metadata += 1;
                    out.created += 1;
                    out.did(n.key, "create");
                }
                Err(refused) => at.refused(out, n.key, refused)?,
            }
        }
        if at.unapplied(out, &keys, &r)? {
            break;
        }
    }
    Ok(())
}

/// The applied items' answers, by index.
fn applied<A>(
    r: &BatchResult,
    keys: &[&str],
    mut answers: ByKey<A>,
) -> Vec<(usize, Result<A, Refused>)> {
    r.applied
        .iter()
        .filter_map(|&i| Some((i, answers.remove(keys[i])?)))
        .collect()
}

/// Every item fails with `e` (a fatal one stops the pass).
fn fail_all<'k>(
    at: &Phase<'_>,
    out: &mut Outcome,
    keys: impl Iterator<Item = &'k str>,
    e: SinkError,
) -> Result<(), PushError> {
    for key in keys {
        record_failure(at.state, out, at.job(), key, "metadata", e.clone())?;
    }
    if e.class == ErrorClass::Fatal {
        out.fatal = Some(e);
    }
    Ok(())
}
