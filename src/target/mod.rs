//! Upstream targets. Each target states what it can do and turns the
//! upstream's answers into typed errors that say whether to retry.

pub mod acs3;
pub mod dify;
pub mod dify_name;
pub mod http;
pub mod http_date;
pub mod pai;
pub mod rate;
pub mod sharely;

use std::fmt;
use std::time::Duration;

/// How to react to a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Network trouble, 5xx, 429, rate limits: retry with backoff.
    Transient,
    /// The request itself is refused (400, 413, 415, …): report it for the
    /// item, do not retry in this pass.
    Permanent,
    /// Nothing else in this job can succeed (bad key, missing dataset, API
    /// access disabled): stop the job's pass with a clear message.
    Fatal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError {
    pub class: ErrorClass,
    pub status: Option<u16>,
    /// The upstream's error code (`file_too_large`, `invalid_param`…), or a
    /// local one (`network`, `bad_response`).
    pub code: String,
    pub message: String,
    pub retry_after: Option<Duration>,
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "HTTP {s} {}: {}", self.code, self.message),
            None => write!(f, "{}: {}", self.code, self.message),
        }
    }
}

impl std::error::Error for TargetError {}

impl TargetError {
    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }

    /// The upstream said "too many requests": 429, or Dify's rate-limit 403.
    pub fn is_rate_limit(&self) -> bool {
        self.status == Some(429)
            || (self.status == Some(403) && self.message.to_lowercase().contains("rate limit"))
    }

    pub fn local(class: ErrorClass, code: &str, message: impl Into<String>) -> Self {
        TargetError {
            class,
            status: None,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }
}

/// What an upstream supports. The config is checked against it at load
/// time and the planner plans nothing a target cannot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Uploads, updates and creates documents from content.
    pub content: bool,
    /// Several items' metadata per call (else one call per item).
    pub batch_metadata: bool,
    /// Enable / disable / archive.
    pub status: bool,
    pub delete: bool,
    /// Without content: an item with no upstream record gets one (looked up,
    /// else created) by the pusher; otherwise it must be mapped in config.
    pub create_records: bool,
}
