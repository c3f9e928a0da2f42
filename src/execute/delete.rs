//! The delete phase: the records of vanished files (`delete_policy =
//! "delete"`) deleted through the sink's Delete verb, and forgotten in the
//! state file once the upstream confirmed each.

use std::sync::atomic::{AtomicBool, Ordering};

use futures::{FutureExt, StreamExt};

use super::batches::{send_answered, stopped};
use crate::sink::verbs::Delete;
use crate::sink::{record_failure, Outcome, PushError};
use crate::state::State;

/// Deletes `items` (key, record id): in the verb's batches, as many calls
/// in flight as it takes, a batch refused whole halved until the refused
/// record stands alone. Shutdown sends nothing more; a fatal answer stops
/// the phase.
pub async fn deletes(
    verb: &dyn Delete,
    job: &str,
    state: &State,
    stop: &AtomicBool,
    items: &[(&str, &str)],
    out: &mut Outcome,
) -> Result<(), PushError> {
    let size = verb.batch_size().max(1);
    let calls = items.chunks(size).map(|chunk| async move {
        if stop.load(Ordering::SeqCst) {
            return (chunk, None);
        }
        let sent = send_answered(
            chunk,
            |(key, _)| key,
            |part| {
                async move {
                    let ids: Vec<&str> = part.iter().map(|(_, id)| *id).collect();
                    verb.delete(&ids).await
                }
                .boxed_local()
            },
        );
        (chunk, Some(sent.await))
    });
    let mut calls = futures::stream::iter(calls).buffer_unordered(verb.concurrency().max(1));
    while let Some((chunk, sent)) = calls.next().await {
        let Some((r, mut answers)) = sent else {
            out.interrupted = true;
            continue;
        };
        for &i in &r.applied {
            let key = chunk[i].0;
            match answers.remove(key) {
                Some(Err(refused)) => {
                    record_failure(state, out, job, key, "delete", refused.error)?
                }
                _ => {
                    state.forget(job, key)?;
                    out.deleted += 1;
                    out.did(key, "delete");
                }
            }
        }
        for (i, e) in &r.failed {
            record_failure(state, out, job, chunk[*i].0, "delete", e.clone())?;
        }
        if let Some(e) = r.fatal.clone() {
            // The records the fatal answer stopped: theirs, too.
            for i in stopped(&r, chunk.len()) {
                record_failure(state, out, job, chunk[i].0, "delete", e.clone())?;
            }
            out.fatal = Some(e);
            break;
        }
    }
    Ok(())
}
