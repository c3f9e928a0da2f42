//! What the upstream clients share: the HTTP client they are built on, the
//! backoff they retry with, and reading an error answer (status,
//! `Retry-After`, body) before each target classifies it by its own rules.

use std::time::{Duration, SystemTime};

use backon::ExponentialBuilder;
use reqwest::{Response, StatusCode};
use serde_json::Value as Json;

use super::http_date::parse_retry_after;
use super::{ErrorClass, TargetError};
use crate::config::RetryConfig;

/// A Retry-After beyond this is treated as this: a pass should not hang.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(900);

pub fn client(timeout: Duration) -> Result<reqwest::Client, TargetError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(15))
        .user_agent(concat!("kbsync/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| TargetError::local(ErrorClass::Fatal, "client", e.to_string()))
}

/// Exponential backoff with jitter, as configured for the target.
pub fn backoff(retry: &RetryConfig) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(retry.min_delay)
        .with_max_delay(retry.max_delay)
        .with_max_times(retry.max_retries)
}

/// An error answer, read whole.
pub struct ErrorAnswer {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    body: bytes::Bytes,
    json: Option<Json>,
}

impl ErrorAnswer {
    pub async fn read(resp: Response) -> ErrorAnswer {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
            .map(|d| d.min(MAX_RETRY_AFTER));
        let body = resp.bytes().await.unwrap_or_default();
        let json = serde_json::from_slice(&body).ok();
        ErrorAnswer {
            status,
            retry_after,
            body,
            json,
        }
    }

    /// The first of `fields` the JSON body holds as a string.
    pub fn field(&self, fields: &[&str]) -> Option<String> {
        let obj = self.json.as_ref()?.as_object()?;
        fields
            .iter()
            .find_map(|f| obj.get(*f)?.as_str().map(str::to_owned))
    }

    /// The status' reason phrase as a code: `service_unavailable`.
    pub fn reason_code(&self) -> String {
        self.status
            .canonical_reason()
            .unwrap_or("error")
            .to_lowercase()
            .replace(' ', "_")
    }

    /// The body's start, for answers without a JSON message.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(200)
            .collect::<String>()
            .trim()
            .to_owned()
    }
}
