//! Waiting for Dify to finish indexing an upload, for the calls that Dify
//! refuses on a document that is still indexing (status changes, updates).
//! A wait can last minutes while the pass shows no progress, so it is
//! logged: at info when it starts and ends, at debug with its cause.

use std::time::{Duration, Instant};

use super::client::{DifyClient, IndexingEntry};
use crate::sink::{ErrorClass, SinkError};

/// Waits until Dify is done indexing upload `batch` (at most `limit`).
/// `call` (e.g. "update of a.md") is what Dify refused with `refused`.
pub async fn wait(
    client: &DifyClient,
    batch: &str,
    limit: Duration,
    call: &str,
    refused: &SinkError,
) -> Result<(), SinkError> {
    tracing::debug!(%batch, %call, %refused, "Dify refused a call on a document it may still be indexing");
    let started = Instant::now();
    let mut waiting = false;
    let mut pause = Duration::from_millis(250);
    loop {
        let entries = match client.indexing_status(batch).await {
            // An unknown batch (expired upstream) means nothing is pending.
            Err(e) if e.status == Some(404) => return Ok(()),
            other => other?,
        };
        if let Some(failed) = entries.iter().find(|e| e.indexing_status == "error") {
            return Err(SinkError::local(
                ErrorClass::Permanent,
                "indexing_error",
                failed
                    .error
                    .clone()
                    .unwrap_or_else(|| "Dify could not index the document".into()),
            ));
        }
        let pending = entries.iter().filter(|e| !done(e)).count();
        if pending == 0 {
            if waiting {
                let waited_secs = format!("{:.1}", started.elapsed().as_secs_f64());
                tracing::info!(%batch, %waited_secs, "Dify indexed {}", documents(entries.len()));
            }
            return Ok(());
        }
        if !waiting {
            tracing::info!(%batch, %call, "waiting for Dify to index {}", documents(pending));
            waiting = true;
        }
        if started.elapsed() + pause > limit {
            let waited_secs = format!("{:.1}", started.elapsed().as_secs_f64());
            tracing::info!(%batch, %waited_secs, "Dify is still indexing {}: left to a later pass", documents(pending));
            return Err(SinkError::local(
                ErrorClass::Transient,
                "indexing_timeout",
                format!(
                    "still indexing after {}s (indexing_wait_secs)",
                    limit.as_secs()
                ),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// Indexing states in which Dify takes no update of the document.
pub fn busy(state: &str) -> bool {
    matches!(
        state,
        "waiting" | "parsing" | "cleaning" | "splitting" | "indexing"
    )
}

/// Waits until document `doc_id`, listed under `name`, is no longer busy
/// indexing, for a document whose upload batch is not known (one adopted
/// after a crash): its state is read from the listing.
pub async fn wait_document(
    client: &DifyClient,
    name: &str,
    doc_id: &str,
    limit: Duration,
) -> Result<(), SinkError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(250);
    tracing::info!(document = %doc_id, "waiting for Dify to index 1 document (its upload batch is not known: polling the document)");
    loop {
        let state = match client.find_by_name(name).await? {
            Some(d) if d.id == doc_id => d.indexing_status,
            // Gone or renamed meanwhile: the call that follows says how.
            _ => return Ok(()),
        };
        if !state.as_deref().is_some_and(busy) {
            tracing::info!(document = %doc_id, secs = started.elapsed().as_secs(), "Dify is done indexing the document");
            return Ok(());
        }
        if started.elapsed() + pause > limit {
            return Err(SinkError::local(
                ErrorClass::Transient,
                "indexing",
                format!(
                    "the document is still {} upstream after {}s (indexing_wait_secs); it is updated once Dify is done",
                    state.unwrap_or_default(),
                    limit.as_secs()
                ),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

fn done(entry: &IndexingEntry) -> bool {
    matches!(entry.indexing_status.as_str(), "completed" | "paused")
}

fn documents(n: usize) -> String {
    if n == 1 {
        "1 document".to_owned()
    } else {
        format!("{n} documents")
    }
}

/// How long Dify may refuse a document's status change after the last one:
/// the index task that an enable or disable queues holds a Redis lock
/// (`document_<id>_indexing`) with a 600 s expiry, lifted when the task
/// ends. On an idle worker that takes under a second; behind a queue of
/// uploads, or for a document archived while queued, the full 600 s.
pub const STATUS_LOCK: Duration = Duration::from_secs(600);

/// Pauses before a status change refused as "being indexed" is sent
/// again within a pass, as multiples of the call backoff's first delay
/// (`retry_min_delay_ms`): 2, 5 and 10 s by default, 17 s in all. Dify
/// 1.13.3 lifted the lock about 1.8 s after a disable on an idle worker
/// and about 12 s behind a queue; three tries a second apart all met it,
/// and the item then waited out the whole 600 s.
const LOCK_PAUSES: [u32; 3] = [4, 10, 20];

/// The lock pauses of one status phase, shared by all its batches: a
/// lock that outlasts them outlasts the pass, and the next batch or half
/// batch it holds up is not waited on again (see `locked`).
pub struct LockWaits {
    base: Duration,
    used: std::sync::atomic::AtomicUsize,
}

impl LockWaits {
    pub fn new(base: Duration) -> LockWaits {
        LockWaits {
            base,
            used: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The next pause, or `None` when the phase has used them all.
    pub fn next(&self) -> Option<Duration> {
        let i = self.used.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LOCK_PAUSES.get(i).map(|&times| self.base * times)
    }
}

/// A status change still refused as "being indexed": retried once, after
/// the lock's expiry counted from the last status change kbsync made
/// (`changed`, unix seconds), or from now when that is not the holder.
pub fn locked(mut refused: SinkError, changed: Option<i64>) -> SinkError {
    let now = crate::state::unix_now();
    let lock = STATUS_LOCK.as_secs() as i64;
    let clears = changed
        .map(|at| at + lock)
        .filter(|at| *at > now)
        .unwrap_or(now + lock);
    // A few seconds past it: the lock's own clock started after our call.
    let retry_at = clears + 5;
    refused.retry_after = Some(Duration::from_secs((retry_at - now).max(1) as u64));
    refused.message = format!(
        "{}: Dify locks a document for up to 10 minutes after a status change while it re-indexes; retried after {}",
        refused.message,
        crate::metadata::format_rfc3339(retry_at)
    );
    refused
}
