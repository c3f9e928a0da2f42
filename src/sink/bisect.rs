//! Batch calls that isolate bad items. A batch endpoint rejects the whole
//! request when one document in it is refused (Dify answers 400 for the
//! batch); halving the batch until the refused documents stand alone costs
//! O(bad · log n) extra calls and lets every good item through.

use crate::sink::{ErrorClass, SinkError};

pub struct BatchResult {
    /// Indices into the input that were applied.
    pub applied: Vec<usize>,
    /// Indices that failed, with the error that stopped them.
    pub failed: Vec<(usize, SinkError)>,
    /// Set when a fatal error stopped the work; nothing after it was sent.
    pub fatal: Option<SinkError>,
}

/// A refusal of what the batch holds, which halving can isolate: any
/// permanent one, and 4xx waits that name a document (Dify refuses a whole
/// batch when one document in it is still indexing or locked), but not a
/// rate limit or a timeout, which say nothing about the items.
fn refused_as_a_batch(e: &SinkError) -> bool {
    match e.class {
        ErrorClass::Permanent => true,
        ErrorClass::Transient => {
            matches!(e.status, Some(s) if (400..500).contains(&s) && s != 408 && s != 429)
                && !e.is_rate_limit()
        }
        ErrorClass::Fatal => false,
    }
}

pub async fn send_in_batches<'a, T, F, Fut>(
    items: &'a [T],
    batch_size: usize,
    send: F,
) -> BatchResult
where
    F: Fn(&'a [T]) -> Fut,
    Fut: std::future::Future<Output = Result<(), SinkError>>,
{
    let mut result = BatchResult {
        applied: Vec::new(),
        failed: Vec::new(),
        fatal: None,
    };
    // Ranges still to send, in order (a stack, so push right halves first).
    let mut pending: Vec<std::ops::Range<usize>> = (0..items.len())
        .step_by(batch_size.max(1))
        .map(|s| s..(s + batch_size).min(items.len()))
        .rev()
        .collect();
    while let Some(range) = pending.pop() {
        match send(&items[range.clone()]).await {
            Ok(()) => result.applied.extend(range),
            Err(e) if e.class == ErrorClass::Fatal => {
                result.fatal = Some(e);
                return result;
            }
            Err(e) if refused_as_a_batch(&e) && range.len() > 1 => {
                let mid = range.start + range.len() / 2;
                pending.push(mid..range.end);
                pending.push(range.start..mid);
            }
            Err(e) => result.failed.extend(range.map(|i| (i, e.clone()))),
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn refused() -> SinkError {
        SinkError {
            class: ErrorClass::Permanent,
            status: Some(400),
            code: "invalid_param".into(),
            message: "Document not found.".into(),
            retry_after: None,
        }
    }

    #[tokio::test]
    async fn isolates_the_bad_item() {
        let items: Vec<u32> = (0..10).collect();
        let calls = AtomicUsize::new(0);
        let r = send_in_batches(&items, 4, |chunk| {
            calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if chunk.contains(&6) {
                    Err(refused())
                } else {
                    Ok(())
                }
            })
        })
        .await;
        assert_eq!(
            r.failed.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![6]
        );
        let mut applied = r.applied.clone();
        applied.sort();
        assert_eq!(applied, vec![0, 1, 2, 3, 4, 5, 7, 8, 9]);
        // 3 batches, then [4..8] splits into [4..6] ok, [6..8] → [6] bad, [7] ok.
        assert_eq!(calls.load(Ordering::SeqCst), 7);
    }
}
