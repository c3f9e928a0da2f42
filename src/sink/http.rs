//! What the upstream clients share: one transport (the HTTP client, the
//! rate limiter, a request count, retries with backoff that honour
//! `Retry-After`) and reading an error answer (status, `Retry-After`, body)
//! before each sink classifies it by its own rules.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value as Json;

use super::rate::RateLimiter;
use super::{ErrorClass, SinkError};
use crate::config::section::{Calls, RetryConfig};
use crate::http_date::parse_retry_after;

/// A sink's way to its upstream: every request waits for its rate slot and
/// is counted; a retried call backs off as configured, waits at least what
/// `Retry-After` asked, and on "slow down" pauses every request of the
/// sink, not only the refused one.
pub struct Transport {
    /// The upstream's name in metrics: dify, pai, sharely.
    upstream: &'static str,
    http: reqwest::Client,
    retry: RetryConfig,
    requests: AtomicU64,
    limiter: Option<RateLimiter>,
    breaker: Breaker,
}

/// The error code of a call not sent because the upstream is resting.
pub const UNREACHABLE: &str = "unreachable";

/// After this many answers in a row that say the upstream is down (no
/// connection, a timeout, 502/503/504), calls are not sent for a while:
/// during an outage a pass of 30,000 items must cost a few requests and a
/// few log lines, not 30,000 × retries of each.
const TRIP_AFTER: u32 = 10;
const REST_MIN: Duration = Duration::from_secs(30);
const REST_MAX: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Breaker {
    state: std::sync::Mutex<BreakerState>,
}

#[derive(Default)]
struct BreakerState {
    failures: u32,
    rest: Duration,
    until: Option<std::time::Instant>,
}

impl Breaker {
    /// When the upstream rests until, if it does.
    fn resting(&self) -> Option<std::time::Instant> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.until.filter(|u| *u > std::time::Instant::now())
    }

    fn record(&self, down: bool) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !down {
            *s = BreakerState::default();
            return;
        }
        if s.until.is_some_and(|u| u > std::time::Instant::now()) {
            // Calls that were in flight when it tripped: already counted.
            return;
        }
        s.failures += 1;
        if s.failures >= TRIP_AFTER {
            s.rest = if s.rest.is_zero() {
                REST_MIN
            } else {
                (s.rest * 2).min(REST_MAX)
            };
            s.until = Some(std::time::Instant::now() + s.rest);
            // After the rest, one more "down" answer is enough to rest
            // again (longer); one good answer clears it all.
            s.failures = TRIP_AFTER - 1;
            tracing::warn!(
                rest_secs = s.rest.as_secs(),
                "the upstream looks down ({TRIP_AFTER} answers in a row were no answer or 502/503/504): no request is sent for a while"
            );
        }
    }
}

impl Transport {
    pub fn new(upstream: &'static str, calls: &Calls) -> Result<Transport, SinkError> {
        Ok(Transport {
            upstream,
            http: client(calls.timeout)?,
            retry: calls.retry,
            requests: AtomicU64::new(0),
            limiter: calls.requests_per_minute.map(RateLimiter::per_minute),
            breaker: Breaker::default(),
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Until when calls are not sent (the upstream looked down).
    pub fn resting_until(&self) -> Option<std::time::Instant> {
        self.breaker.resting()
    }

    /// HTTP requests sent so far, retries included.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// One attempt at `op`: waits for a rate slot, counts it, sends. A
    /// failure to get an answer is transient.
    pub async fn send(&self, op: &'static str, req: RequestBuilder) -> Result<Response, SinkError> {
        if let Some(until) = self.breaker.resting() {
            let left = until.saturating_duration_since(std::time::Instant::now());
            return Err(SinkError {
                // The step waits at least until requests resume.
                retry_after: Some(left),
                ..SinkError::local(
                    ErrorClass::Transient,
                    UNREACHABLE,
                    format!("not sent: the upstream looks down (no answer, or 502/503/504, {TRIP_AFTER} times in a row); requests resume in {} s", left.as_secs()),
                )
            });
        }
        if let Some(limiter) = &self.limiter {
            limiter.acquire().await;
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let sent = req.send().await.map_err(network_error);
        crate::monitor::request(
            self.upstream,
            op,
            sent.as_ref().ok().map(|r| r.status().as_u16()),
        );
        let down = match &sent {
            Ok(resp) => matches!(resp.status().as_u16(), 502..=504),
            Err(_) => true,
        };
        self.breaker.record(down);
        sent
    }

    /// Runs `attempt` until it succeeds or fails for good, with up to
    /// `max_retries` retries (the configured number when `None`).
    pub async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        max_retries: Option<usize>,
        attempt: F,
    ) -> Result<T, SinkError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SinkError>>,
    {
        self.retrying_when(what, max_retries, SinkError::is_transient, attempt)
            .await
    }

    /// As `retrying`, but retries only the failures `when` picks (a sink
    /// that waits for some transient states by other means).
    pub async fn retrying_when<T, F, Fut>(
        &self,
        what: &str,
        max_retries: Option<usize>,
        when: impl FnMut(&SinkError) -> bool,
        attempt: F,
    ) -> Result<T, SinkError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SinkError>>,
    {
        let times = max_retries.unwrap_or(self.retry.max_retries);
        let mut when = when;
        attempt
            .retry(backoff(&self.retry).with_max_times(times))
            // Not while the upstream rests: the pass moves on, and the
            // outbox tries again after its backoff.
            .when(move |e: &SinkError| e.code != UNREACHABLE && when(e))
            .adjust(|e: &SinkError, planned| planned.map(|d| e.retry_after.unwrap_or(d)))
            .notify(|e: &SinkError, after: Duration| self.slow_down(what, e, after))
            .await
    }

    /// The configured backoff's delays, for a call that retries by hand
    /// (one that must look before it sends again).
    pub fn delays(&self) -> impl Iterator<Item = Duration> {
        use backon::BackoffBuilder;
        backoff(&self.retry).build()
    }

    /// Logs a retry; when the upstream asked to slow down, every request
    /// of this sink waits, not just this one.
    pub fn slow_down(&self, what: &str, e: &SinkError, after: Duration) {
        // Per call, so debug: the pass sums up what failed in the end.
        tracing::debug!(call = what, error = %e, retry_in_ms = after.as_millis() as u64, "transient failure, retrying");
        crate::monitor::retry(self.upstream);
        if e.is_rate_limit() {
            crate::monitor::rate_limit_pause(self.upstream);
            if let Some(limiter) = &self.limiter {
                limiter.pause(after);
            }
        }
    }
}

/// No answer came back. reqwest's message may include the URL (never a
/// key, which travels in a header); that is useful and safe to show.
pub fn network_error(e: reqwest::Error) -> SinkError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    // A failed connect never reached the server; anything later may have.
    let code = if e.is_connect() {
        "connect"
    } else if e.is_timeout() {
        "timeout"
    } else {
        "network"
    };
    SinkError::local(ErrorClass::Transient, code, message)
}

/// A credential header's value, marked sensitive: hyper and reqwest keep
/// it out of debug output and HTTP/2 header compression tables.
pub fn sensitive(value: &str) -> reqwest::header::HeaderValue {
    let mut v = reqwest::header::HeaderValue::from_str(value)
        .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

/// A Retry-After beyond this is treated as this: a pass should not hang.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(900);

fn client(timeout: Duration) -> Result<reqwest::Client, SinkError> {
    reqwest::Client::builder()
        .redirect(same_origin_redirects())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(15))
        .user_agent(concat!("kbsync/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| SinkError::local(ErrorClass::Fatal, "client", e.to_string()))
}

/// Redirects are followed only to the same scheme, host and port, at most
/// five: reqwest strips Authorization and cookies on a cross-host redirect
/// but not other credential headers (Sharely's `x-api-key`, PAI's signed
/// headers), and an API that moved is a config matter.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same = attempt
            .previous()
            .last()
            .is_some_and(|prev| prev.origin() == attempt.url().origin());
        if same && attempt.previous().len() <= 5 {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// Exponential backoff with jitter, as configured for the sink.
fn backoff(retry: &RetryConfig) -> ExponentialBuilder {
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
    pub headers: reqwest::header::HeaderMap,
    body: bytes::Bytes,
    json: Option<Json>,
}

impl ErrorAnswer {
    pub async fn read(resp: Response) -> ErrorAnswer {
        let status = resp.status();
        let headers = resp.headers().clone();
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
            headers,
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

    /// The text of the first element named `tag` (any namespace or prefix)
    /// of an XML body: some gateways answer errors in XML.
    pub fn xml_field(&self, tag: &str) -> Option<String> {
        let text = std::str::from_utf8(&self.body).ok()?;
        let is_tag = |path: &[crate::xml::Element]| path.last().is_some_and(|e| e.name == tag);
        let found = crate::xml::texts(text, "", 1, is_tag).ok()?;
        found.texts.into_iter().next()
    }

    /// The status' reason phrase as a code: `service_unavailable`.
    pub fn reason_code(&self) -> String {
        self.status
            .canonical_reason()
            .unwrap_or("error")
            .to_lowercase()
            .replace(' ', "_")
    }

    /// The body's start, for answers without a JSON message; for a
    /// redirect not followed, where it pointed.
    pub fn text(&self) -> String {
        if self.status.is_redirection() {
            let to = self
                .headers
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| reqwest::Url::parse(l).ok())
                .map_or_else(
                    || "elsewhere".to_owned(),
                    |u| u.origin().ascii_serialization(),
                );
            return format!("redirected to {to}; kbsync follows redirects only within the same host (its credentials must not go elsewhere): set the base URL to where the API answers");
        }
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(200)
            .collect::<String>()
            .trim()
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(body: &str) -> ErrorAnswer {
        let resp = http::Response::builder()
            .status(400)
            .header("content-type", "application/xml")
            .body(body.to_owned())
            .unwrap();
        ErrorAnswer::read(Response::from(resp)).await
    }

    #[tokio::test]
    async fn xml_error_fields_are_read_as_xml() {
        let a = answer(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<acs:Error xmlns:acs="http://acs.aliyun.com/error">
  <acs:RequestId>R1</acs:RequestId>
  <acs:Code >InvalidParameter</acs:Code >
  <acs:Message><![CDATA[Name <b>]]> &amp; size &lt; 10</acs:Message>
</acs:Error>"#,
        )
        .await;
        assert_eq!(a.xml_field("Code").as_deref(), Some("InvalidParameter"));
        assert_eq!(
            a.xml_field("Message").as_deref(),
            Some("Name <b> & size < 10")
        );
        assert_eq!(a.xml_field("HostId"), None);
        assert_eq!(answer("not xml <Code>x").await.xml_field("Code"), None);
    }
}
