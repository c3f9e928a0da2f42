//! Waiting for Dify to finish indexing an upload, for the calls that Dify
//! refuses on a document that is still indexing (status changes, updates).

use std::time::{Duration, Instant};

use super::client::DifyClient;
use crate::sink::{ErrorClass, SinkError};

pub async fn wait(client: &DifyClient, batch: &str, limit: Duration) -> Result<(), SinkError> {
    let started = Instant::now();
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
        if entries
            .iter()
            .all(|e| matches!(e.indexing_status.as_str(), "completed" | "paused"))
        {
            return Ok(());
        }
        if started.elapsed() + pause > limit {
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
