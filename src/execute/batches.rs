//! Batches whose answers name each item: a batch the upstream took may
//! still refuse some of its items (PAI's `FailedDetails`, a delete that
//! found nothing to delete), and one refused whole is halved until the
//! refused item stands alone.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::LocalBoxFuture;

use crate::sink::bisect::{send_in_batches, BatchResult};
use crate::sink::verbs::{Answers, Refused};
use crate::sink::SinkError;

/// Each item's own answer, by its key, for the items of applied batches.
pub type ByKey<A> = HashMap<String, Result<A, Refused>>;

/// Sends `items` through `call` (halving what is refused whole); what
/// was applied, failed or stopped, and each applied item's answer.
pub async fn send_answered<'a, T, A, K, F>(
    items: &'a [T],
    key: K,
    call: F,
) -> (BatchResult, ByKey<A>)
where
    K: Fn(&T) -> &str,
    F: Fn(&'a [T]) -> LocalBoxFuture<'a, Result<Answers<A>, SinkError>>,
{
    let answers: Mutex<ByKey<A>> = Mutex::new(HashMap::new());
    let (answers_ref, key, call) = (&answers, &key, &call);
    let r = send_in_batches(items, items.len(), |part| async move {
        let answered = call(part).await?;
        let mut all = answers_ref.lock().expect("not poisoned");
        all.extend(part.iter().map(|t| key(t).to_owned()).zip(answered));
        Ok(())
    })
    .await;
    (r, answers.into_inner().expect("not poisoned"))
}

/// The items of a batch that a fatal answer stopped: neither applied nor
/// failed.
pub fn stopped(r: &BatchResult, len: usize) -> Vec<usize> {
    let mut answered = vec![false; len];
    for &i in r.applied.iter().chain(r.failed.iter().map(|(i, _)| i)) {
        answered[i] = true;
    }
    (0..len).filter(|&i| !answered[i]).collect()
}
