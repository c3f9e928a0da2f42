//! What the upstream clients share: one transport (the HTTP client, the
//! rate limiter, a request count, retries with backoff that honour
//! `Retry-After`, the secrets it sends) and reading an answer's body: an
//! error answer (status, `Retry-After`, body) before each sink classifies
//! it by its own rules, or a JSON answer. Every body is read here, and
//! loses the transport's secrets before anything is parsed from it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use backon::ExponentialBuilder;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::Value as Json;

use super::rate::RateLimiter;
use super::redact::Redactor;
use super::{ErrorClass, SinkError};
use crate::config::section::{Calls, RetryConfig};
use crate::http_date::parse_retry_after;
use crate::secret::Secret;

/// A sink's way to its upstream: every request waits for its rate slot and
/// is counted; a retried call backs off as configured, waits at least what
/// `Retry-After` asked, and on "slow down" pauses every request of the
/// sink, not only the refused one.
pub struct Transport {
    /// The upstream's name in metrics: dify, pai, sharely.
    upstream: &'static str,
    /// Its name in messages: Dify, PAI, Sharely.
    http: reqwest::Client,
    retry: RetryConfig,
    requests: AtomicU64,
    limiter: Option<RateLimiter>,
    breaker: Breaker,
    /// The secrets this transport sends: no body it reads keeps them.
    redactor: Redactor,
    /// The job it serves, the `job` label of its metrics; set once the
    /// job's sink is connected.
    job: std::sync::OnceLock<String>,
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

    fn record(&self, upstream: &str, down: bool) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !down {
            if s.until.is_some() {
                tracing::info!(upstream = %upstream, "the upstream answers again after its rest");
            }
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
                upstream = %upstream,
                rest_secs = s.rest.as_secs(),
                "the upstream looks down ({TRIP_AFTER} answers in a row were no answer or 502/503/504): it rests, no request is sent to it for rest_secs"
            );
        }
    }
}

impl Transport {
    /// A transport for `upstream`, sending the credentials `secrets`.
    pub fn new(
        upstream: &'static str,
        calls: &Calls,
        secrets: &[&Secret],
    ) -> Result<Transport, SinkError> {
        Ok(Transport {
            upstream,
            http: client(calls.timeout)?,
            retry: calls.retry,
            requests: AtomicU64::new(0),
            limiter: calls.requests_per_minute.map(RateLimiter::per_minute),
            breaker: Breaker::default(),
            redactor: Redactor::new(secrets),
            job: std::sync::OnceLock::new(),
        })
    }

    /// Labels this transport's metrics with `job`.
    pub fn serve_job(&self, job: &str) {
        let _ = self.job.set(job.to_owned());
    }

    /// A call retried outside the transport's own loop (a sink's wait
    /// for an upstream lock), counted with the transport's retries.
    pub fn count_retry(&self) {
        crate::monitor::retry(self.upstream, self.job());
    }

    fn job(&self) -> &str {
        self.job.get().map_or("", String::as_str)
    }

    /// A secret this transport sends from now on (an access token): no
    /// answer read later shows it.
    pub fn conceal(&self, token: &Secret) {
        self.redactor.add(token);
    }

    /// An error answer, read whole, without this transport's secrets nor
    /// any bearer token.
    pub async fn error_answer(&self, resp: Response) -> ErrorAnswer {
        ErrorAnswer::read(resp, &self.redactor).await
    }

    /// A JSON answer, without this transport's secrets: what a parse
    /// error quotes of it is safe to show. `what` says what was expected,
    /// from whom ("response body from Dify").
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        resp: Response,
        what: &str,
    ) -> Result<T, SinkError> {
        let body = self.redactor.body(capped(resp, what).await?.into());
        self.decode(&body, what)
    }

    /// A JSON answer that hands out a credential (an access token), read
    /// as it came: a server may hand out a token it gave before, which is
    /// a known secret by then. Only a parse error's text loses the
    /// secrets.
    pub async fn json_with_credential<T: serde::de::DeserializeOwned>(
        &self,
        resp: Response,
        what: &str,
    ) -> Result<T, SinkError> {
        let body = capped(resp, what).await?;
        self.decode(&body, what)
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        body: &[u8],
        what: &str,
    ) -> Result<T, SinkError> {
        serde_json::from_slice(body).map_err(|e| {
            SinkError::local(
                ErrorClass::Transient,
                "bad_response",
                self.redactor.text(&format!("unexpected {what}: {e}")),
            )
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
            (self.upstream, self.job()),
            op,
            sent.as_ref().ok().map(|r| r.status().as_u16()),
        );
        let down = match &sent {
            Ok(resp) => matches!(resp.status().as_u16(), 502..=504),
            Err(_) => true,
        };
        self.breaker.record(self.upstream, down);
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
        mut when: impl FnMut(&SinkError) -> bool,
        mut attempt: F,
    ) -> Result<T, SinkError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SinkError>>,
    {
        let mut waits = self.waits(what, max_retries);
        loop {
            let mut e = match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            // Not while the upstream rests: the pass moves on, and the
            // outbox tries again after its backoff.
            if e.code == UNREACHABLE || !when(&e) {
                return Err(e);
            }
            match waits.next(&mut e) {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(e),
            }
        }
    }

    /// The waits of one call that retries, with up to `max_retries`
    /// retries (the configured number when `None`); for a call that
    /// retries by hand (one that must look before it sends again).
    pub fn waits<'t>(&'t self, call: &'t str, max_retries: Option<usize>) -> Waits<'t> {
        use backon::BackoffBuilder;
        Waits {
            transport: self,
            call,
            delays: backoff(&self.retry)
                .with_max_times(max_retries.unwrap_or(self.retry.max_retries))
                .build(),
            waited: Duration::ZERO,
        }
    }

    /// Logs a wait and counts the retry; when the upstream asked to slow
    /// down, every request of this sink waits, not just this one.
    fn slow_down(&self, what: &str, e: &SinkError, wait: Duration) {
        // A long wait holds the pass: it is said, with why. Short ones are
        // the backoff's usual steps, and the pass sums up what failed.
        if wait >= NOTABLE_WAIT {
            tracing::info!(upstream = %self.upstream, call = %what, wait_secs = %secs(wait), why = %why(e), "waiting before trying again");
        } else {
            tracing::debug!(upstream = %self.upstream, call = %what, wait_secs = %secs(wait), why = %why(e), "waiting before trying again");
        }
        crate::monitor::retry(self.upstream, self.job());
        if e.is_rate_limit() {
            crate::monitor::rate_limit_pause(self.upstream, self.job());
            if let Some(limiter) = &self.limiter {
                limiter.pause(wait);
            }
        }
    }
}

/// A wait at least this long is logged at info.
const NOTABLE_WAIT: Duration = Duration::from_secs(2);

/// What one call may still wait between its attempts: the backoff's next
/// delay, or what the upstream asked for (`Retry-After`), as long as the
/// retries last and the waits add up to no more than `max_retry_wait`.
pub struct Waits<'t> {
    transport: &'t Transport,
    call: &'t str,
    delays: backon::ExponentialBackoff,
    waited: Duration,
}

impl Waits<'_> {
    /// How long to wait before trying again after `e`; `None` when the
    /// call gives up: its retries are used, or the wait would take it past
    /// its budget (then `e` says so).
    pub fn next(&mut self, e: &mut SinkError) -> Option<Duration> {
        // Each wait spends one retry, whoever set its length.
        let planned = self.delays.next()?;
        let wait = e.retry_after.unwrap_or(planned);
        let budget = self.transport.retry.max_wait;
        if self.waited + wait > budget {
            let asked = if e.retry_after.is_some() {
                "the upstream asked to wait"
            } else {
                "the next backoff is"
            };
            let why = format!(
                "gave up: waited {} s in all, and {asked} {} s more, beyond max_retry_wait_secs = {}",
                secs(self.waited),
                secs(wait),
                budget.as_secs()
            );
            tracing::info!(upstream = %self.transport.upstream, call = %self.call, error = %e, "{why}; the step is tried again later");
            e.message = format!("{} ({why})", e.message);
            return None;
        }
        self.waited += wait;
        self.transport.slow_down(self.call, e, wait);
        Some(wait)
    }
}

/// Seconds as a person reads them: `2`, `0.5`.
fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{:.1}", d.as_secs_f64())
    }
}

/// Why a call waits: the failure, and whether the upstream set the wait.
fn why(e: &SinkError) -> String {
    match e.retry_after {
        Some(_) => format!("{e} (the upstream asked for the wait: Retry-After)"),
        None => e.to_string(),
    }
}

/// A JSON answer's body, read chunk by chunk up to `JSON_CAP`. More than
/// that is no answer of these APIs (a Dify page of 100 documents is about
/// 100 KB) and would cost its size in memory, twice: the call fails for
/// good (the same request would get the same answer), and the rest of the
/// body is never read.
async fn capped(mut resp: Response, what: &str) -> Result<Vec<u8>, SinkError> {
    match read_body(&mut resp, JSON_CAP).await.map_err(network_error)? {
        Some(bytes) => Ok(bytes),
        None => Err(SinkError::local(
            ErrorClass::Permanent,
            "answer_too_large",
            format!(
                "the {what} exceeds {} MiB, the most kbsync reads of an answer; the server (or a proxy in front of it, or a base URL that is not the API) sent far more than the API ever answers: not retried",
                JSON_CAP >> 20
            ),
        )),
    }
}

/// The most of a JSON answer that is read (see `Transport::json`).
pub const JSON_CAP: u64 = 16 << 20;

/// The most of an error answer that is read: its code and message come
/// first, and a longer body is cut there, not refused.
pub const ERROR_CAP: u64 = 64 << 10;

/// A body of at most `cap` bytes, read chunk by chunk; `None` when it is
/// longer (as its Content-Length announces, then nothing is read, or as
/// it arrives). The rest is never read: dropping the response closes the
/// connection.
pub async fn read_body(resp: &mut Response, cap: u64) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if resp.content_length().is_some_and(|n| n > cap) {
        return Ok(None);
    }
    let (bytes, more) = first_bytes(resp, cap).await?;
    Ok((!more).then_some(bytes))
}

/// The first `cap` bytes of a body (at most), and whether more followed.
async fn first_bytes(resp: &mut Response, cap: u64) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let announced = resp.content_length().and_then(|n| usize::try_from(n).ok());
    let mut bytes = Vec::with_capacity(announced.unwrap_or(0).min(cap));
    while let Some(chunk) = resp.chunk().await? {
        let room = cap - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok((bytes, true));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, false))
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

pub use crate::config::section::MAX_RETRY_AFTER;

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

/// Failures after which the upstream surely did not take a request: no
/// connection, or an explicit "slow down". A 5xx or a timeout may come
/// after it was applied, so a create that made a record is sent again
/// only on these.
pub fn surely_not_applied(e: &SinkError) -> bool {
    e.is_transient() && (e.code == "connect" || e.is_rate_limit())
}

/// An error answer, read whole (through `Transport::error_answer`), its
/// body already without secrets.
pub struct ErrorAnswer {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
    json: Option<Json>,
}

impl ErrorAnswer {
    async fn read(mut resp: Response, redactor: &Redactor) -> ErrorAnswer {
        let status = resp.status();
        let headers = resp.headers().clone();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
            .map(|d| d.min(MAX_RETRY_AFTER));
        // Read on every retry: a long body costs its cap, not its size.
        let body = first_bytes(&mut resp, ERROR_CAP)
            .await
            .map(|(bytes, _)| bytes)
            .unwrap_or_default();
        let body = redactor.error_body(body.into()).to_vec();
        let json = serde_json::from_slice(&body).ok();
        ErrorAnswer {
            status,
            retry_after,
            headers,
            body,
            json,
        }
    }

    /// An answer of `status` with `body`, for the sinks' classification
    /// tests.
    #[cfg(test)]
    pub fn for_test(status: u16, body: &str) -> ErrorAnswer {
        ErrorAnswer {
            status: StatusCode::from_u16(status).expect("a status code"),
            retry_after: None,
            headers: reqwest::header::HeaderMap::new(),
            body: body.as_bytes().to_vec(),
            json: serde_json::from_str(body).ok(),
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

    fn transport(max_retries: usize, max_wait_secs: u64) -> Transport {
        let calls = Calls {
            timeout: Duration::from_secs(5),
            retry: RetryConfig {
                max_retries,
                min_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
                max_wait: Duration::from_secs(max_wait_secs),
            },
            requests_per_minute: None,
        };
        Transport::new("dify", &calls, &[]).unwrap()
    }

    /// A call the upstream always asks to wait `secs`: how many attempts
    /// it made, how long it took, and the error it ended with.
    async fn always_asked_to_wait(t: &Transport, secs: u64) -> (u32, Duration, SinkError) {
        let attempts = std::cell::Cell::new(0);
        let started = tokio::time::Instant::now();
        let e = t
            .retrying("list_documents", None, || async {
                attempts.set(attempts.get() + 1);
                Err::<(), _>(SinkError {
                    status: Some(429),
                    retry_after: Some(Duration::from_secs(secs)),
                    ..SinkError::local(ErrorClass::Transient, "too_many_requests", "slow down")
                })
            })
            .await
            .unwrap_err();
        (attempts.get(), started.elapsed(), e)
    }

    #[tokio::test(start_paused = true)]
    async fn the_waits_of_one_call_stay_within_its_budget() {
        // 10 s asked each time, 25 s allowed: two waits, then it gives up.
        let (attempts, took, e) = always_asked_to_wait(&transport(6, 25), 10).await;
        assert_eq!((attempts, took), (3, Duration::from_secs(20)));
        assert!(
            e.message.contains("waited 20 s in all")
                && e.message.contains("max_retry_wait_secs = 25"),
            "{e}"
        );
        // The retries run out first when the budget is large.
        let (attempts, took, _) = always_asked_to_wait(&transport(2, 900), 10).await;
        assert_eq!((attempts, took), (3, Duration::from_secs(20)));
        // A wait longer than the whole budget is never begun.
        let (attempts, took, _) = always_asked_to_wait(&transport(6, 25), 900).await;
        assert_eq!((attempts, took), (1, Duration::ZERO));
    }

    async fn answer(body: &str) -> ErrorAnswer {
        let resp = http::Response::builder()
            .status(400)
            .header("content-type", "application/xml")
            .body(body.to_owned())
            .unwrap();
        ErrorAnswer::read(Response::from(resp), &Redactor::new(&[])).await
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
