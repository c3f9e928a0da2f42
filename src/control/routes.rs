//! The control API's routes, served beside `/metrics`:
//!
//! - `GET /jobs`, `GET /jobs/{name}`: status as `kbsync status --json`;
//! - `GET /jobs/{name}/runs?limit=N`: the last passes, newest first;
//! - `POST /jobs/{name}/sync[?path=a/b][&wait=true]`: a pass now;
//! - `POST /jobs/{name}/pause`, `/resume`;
//! - `POST /hooks/github`, `/hooks/gitlab`: push webhooks.
//!
//! Every POST to `/jobs` needs the bearer token; a webhook carries its
//! host's signature instead.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::hooks::{self, Hook, HookError};
use super::live::{Control, Order};
use crate::source::Scope;

/// A webhook body larger than this is refused: GitHub caps its payloads
/// at 25 MB, but a push event that names the refs is far smaller.
const HOOK_BODY_LIMIT: usize = 5 << 20;

/// The run history's default and largest page.
const RUNS_DEFAULT: usize = 20;
const RUNS_MAX: usize = 1000;

pub type Answer = Response<Full<Bytes>>;

/// Whether this route is the control API's.
pub fn serves(path: &str) -> bool {
    path == "/jobs" || path.starts_with("/jobs/") || path.starts_with("/hooks/")
}

pub async fn answer(control: &Control, req: Request<Incoming>, peer: SocketAddr) -> Answer {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let segments: Vec<String> = path.trim_matches('/').split('/').map(decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    if segments.first() == Some(&"hooks") {
        return match (&method, segments.as_slice()) {
            (&Method::POST, ["hooks", host @ ("github" | "gitlab")]) => {
                hook(control, host, req, peer).await
            }
            _ => not_found(),
        };
    }
    if method == Method::POST {
        let token = control
            .secrets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .token
            .clone();
        if let Err(why) = super::auth::check(req.headers(), token.as_ref()) {
            return refuse(&method, &path, peer, why);
        }
    }
    match (&method, segments.as_slice()) {
        (&Method::GET | &Method::HEAD, ["jobs"]) => jobs(control, None).await,
        (&Method::GET | &Method::HEAD, ["jobs", job]) => jobs(control, Some(job)).await,
        (&Method::GET | &Method::HEAD, ["jobs", job, "runs"]) => runs(control, job, &query).await,
        (&Method::POST, ["jobs", job, "sync"]) => sync(control, job, &query).await,
        (&Method::POST, ["jobs", job, "pause"]) => pause(control, job, true).await,
        (&Method::POST, ["jobs", job, "resume"]) => pause(control, job, false).await,
        (_, ["jobs", ..]) => json_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "GET /jobs, /jobs/{name}, /jobs/{name}/runs; POST /jobs/{name}/sync, /pause, /resume"}),
        ),
        _ => not_found(),
    }
}

/// A refusal, logged with who asked and for what, never with what they sent.
pub fn refuse(method: &Method, path: &str, peer: SocketAddr, why: super::auth::Refused) -> Answer {
    tracing::warn!(%peer, %method, path, "control API: refused: {}", why.message());
    let mut resp = json_reply(StatusCode::UNAUTHORIZED, json!({"error": why.message()}));
    resp.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Bearer"),
    );
    resp
}

async fn jobs(control: &Control, only: Option<&str>) -> Answer {
    if let Some(job) = only {
        if let Some(resp) = unknown(control, job) {
            return resp;
        }
    }
    let names: Vec<String> = match only {
        Some(job) => vec![job.to_owned()],
        None => control.job_names(),
    };
    let summaries = match read_state(control, |s| s.summaries()).await {
        Ok(s) => s.unwrap_or_default(),
        Err(resp) => return resp,
    };
    let list: Vec<Value> = names
        .iter()
        .map(|name| {
            let mut v = match summaries.iter().find(|s| &s.job == name) {
                Some(s) => serde_json::to_value(s).unwrap_or(Value::Null),
                // In the config, not yet in the state file.
                None => json!({"job": name, "last_run": null}),
            };
            v["paused_since"] = json!(control.paused_since(name));
            v["source_problem"] = json!(control.source_problem(name));
            v
        })
        .collect();
    match only {
        Some(_) => json_reply(
            StatusCode::OK,
            list.into_iter().next().unwrap_or(Value::Null),
        ),
        None => json_reply(StatusCode::OK, Value::Array(list)),
    }
}

async fn runs(control: &Control, job: &str, query: &str) -> Answer {
    if let Some(resp) = unknown(control, job) {
        return resp;
    }
    let limit = match param(query, "limit") {
        None => RUNS_DEFAULT,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if (1..=RUNS_MAX).contains(&n) => n,
            _ => {
                return json_reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": format!("limit must be a number from 1 to {RUNS_MAX}")}),
                )
            }
        },
    };
    let job_name = job.to_owned();
    match read_state(control, move |s| s.runs(&job_name, limit)).await {
        Ok(runs) => json_reply(StatusCode::OK, json!(runs.unwrap_or_default())),
        Err(resp) => resp,
    }
}

async fn sync(control: &Control, job: &str, query: &str) -> Answer {
    if let Some(resp) = unknown(control, job) {
        return resp;
    }
    if control.is_paused(job) {
        return json_reply(
            StatusCode::CONFLICT,
            json!({"error": format!("job {job:?} is paused: resume it first (POST /jobs/{job}/resume)")}),
        );
    }
    let scope = match param(query, "path") {
        None => Scope::All,
        Some(path) => match subtree(&path) {
            Some(scope) => scope,
            None => {
                return json_reply(
                    StatusCode::BAD_REQUEST,
                    json!({"error": format!("path {path:?} is not a relative path inside the job's source (no leading /, no ..)")}),
                )
            }
        },
    };
    let wait = matches!(param(query, "wait").as_deref(), Some("true" | "1" | "yes"));
    let mut finished = control.subscribe();
    let after = control.passes_started();
    tracing::info!(%job, scope = %describe(&scope), "control API: a pass was asked for");
    if !control.order(Order::Pass {
        job: job.to_owned(),
        scope: scope.clone(),
    }) {
        return stopping();
    }
    if !wait {
        return json_reply(
            StatusCode::ACCEPTED,
            json!({"job": job, "queued": describe(&scope)}),
        );
    }
    loop {
        match finished.recv().await {
            Ok(f) if f.job == job && f.seq > after && answers(&f.scope, &scope) => {
                return json_reply(StatusCode::OK, f.run);
            }
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return stopping(),
        }
    }
}

/// Whether a pass over `ran` looked at everything `asked` covers.
fn answers(ran: &Scope, asked: &Scope) -> bool {
    ran.is_all() || (!asked.is_all() && asked.paths().all(|p| ran.covers(p)))
}

async fn pause(control: &Control, job: &str, pause: bool) -> Answer {
    if let Some(resp) = unknown(control, job) {
        return resp;
    }
    let path = control.state_path.clone();
    let name = job.to_owned();
    // Kept in the state file, so a pause outlives a restart and `kbsync
    // status` shows it.
    let written = tokio::task::spawn_blocking(move || {
        let state = crate::state::State::open_held(&path)?;
        if pause {
            state.pause(&name)?;
        } else {
            state.resume(&name)?;
        }
        Ok::<_, crate::state::StateError>(state.paused()?.get(&name).copied())
    })
    .await;
    let since = match written {
        Ok(Ok(since)) => since,
        Ok(Err(e)) => return server_error(format!("cannot record it in the state file: {e}")),
        Err(e) => return server_error(format!("recording it failed: {e}")),
    };
    control.set_paused(job, since);
    crate::monitor::paused(job, since.is_some());
    if pause {
        tracing::info!(%job, "control API: paused; a pass running now finishes first");
    } else {
        tracing::info!(%job, "control API: resumed; a full pass catches up");
        if !control.order(Order::Resumed {
            job: job.to_owned(),
        }) {
            return stopping();
        }
    }
    json_reply(
        StatusCode::OK,
        json!({"job": job, "paused": since.is_some(), "paused_since": since}),
    )
}

async fn hook(control: &Control, host: &str, req: Request<Incoming>, peer: SocketAddr) -> Answer {
    let secret = {
        let secrets = control.secrets.read().unwrap_or_else(|p| p.into_inner());
        match host {
            "github" => secrets.github.clone(),
            _ => secrets.gitlab.clone(),
        }
    };
    // Without a secret to check it against, no delivery is taken.
    let Some(secret) = secret else {
        return not_found();
    };
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, HOOK_BODY_LIMIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return json_reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": format!("the body could not be read within {HOOK_BODY_LIMIT} bytes: {e}")}),
            )
        }
    };
    let read = match host {
        "github" => hooks::github(&parts.headers, &body, &secret),
        _ => hooks::gitlab(&parts.headers, &body, &secret),
    };
    let push = match read {
        Ok(Hook::Push(push)) => push,
        Ok(Hook::Other(event)) => {
            return json_reply(StatusCode::OK, json!({"ignored": event, "triggered": []}))
        }
        Err(HookError::Unauthorized(why)) => {
            tracing::warn!(%peer, host, "webhook refused: {why}");
            return json_reply(StatusCode::UNAUTHORIZED, json!({"error": why}));
        }
        Err(HookError::Malformed(why)) => {
            return json_reply(StatusCode::BAD_REQUEST, json!({"error": why}))
        }
    };
    let (paused, triggered): (Vec<String>, Vec<String>) = control
        .pushed(&push)
        .into_iter()
        .partition(|job| control.is_paused(job));
    for job in &triggered {
        tracing::info!(%job, git_ref = %push.git_ref, "{host} webhook: a push moved the job's ref");
        if !control.order(Order::Pass {
            job: job.clone(),
            scope: Scope::All,
        }) {
            return stopping();
        }
    }
    let status = if triggered.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    json_reply(
        status,
        json!({"ref": push.git_ref, "triggered": triggered, "paused": paused}),
    )
}

/// A 404 naming the jobs there are, when `job` is not one.
fn unknown(control: &Control, job: &str) -> Option<Answer> {
    if control.has_job(job) {
        return None;
    }
    Some(json_reply(
        StatusCode::NOT_FOUND,
        json!({"error": format!("no job named {job:?}"), "jobs": control.job_names()}),
    ))
}

/// Reads the state file beside the service (read-only); `None` before
/// the first pass made it.
async fn read_state<T, F>(control: &Control, read: F) -> Result<Option<T>, Answer>
where
    T: Send + 'static,
    F: FnOnce(&crate::state::State) -> Result<T, crate::state::StateError> + Send + 'static,
{
    let path = control.state_path.clone();
    let done = tokio::task::spawn_blocking(move || {
        if !path.exists() {
            return Ok(None);
        }
        let state = crate::state::State::open_read_only(&path)?;
        read(&state).map(Some)
    })
    .await;
    match done {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(server_error(format!("cannot read the state file: {e}"))),
        Err(e) => Err(server_error(format!("reading the state file failed: {e}"))),
    }
}

/// The scope of the subtree `path` names, when it is one.
fn subtree(path: &str) -> Option<Scope> {
    let trimmed = path.trim_end_matches('/');
    let fine = !trimmed.is_empty()
        && !trimmed.starts_with('/')
        && !trimmed.contains('\0')
        && trimmed
            .split('/')
            .all(|c| !c.is_empty() && c != ".." && c != ".");
    if !fine {
        return None;
    }
    Scope::of([trimmed])
}

fn describe(scope: &Scope) -> String {
    if scope.is_all() {
        "all".to_owned()
    } else {
        scope.paths().collect::<Vec<_>>().join(", ")
    }
}

/// The value of `name` in a query string, percent-decoded.
fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

/// Percent-decoding (and `+` as a space, in a query).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn not_found() -> Answer {
    json_reply(
        StatusCode::NOT_FOUND,
        json!({"error": "not found; served here: /metrics, /healthz, /readyz, /jobs, /hooks/github, /hooks/gitlab (the last two only with their secret configured)"}),
    )
}

fn stopping() -> Answer {
    json_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "the service is stopping"}),
    )
}

fn server_error(message: String) -> Answer {
    tracing::error!("control API: {message}");
    json_reply(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": message}))
}

fn json_reply(status: StatusCode, body: Value) -> Answer {
    let mut text = serde_json::to_string_pretty(&body).unwrap_or_default();
    text.push('\n');
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_paths_are_decoded_and_only_subtrees_are_taken() {
        assert_eq!(
            param("limit=5&path=a%2Fb+c", "path").as_deref(),
            Some("a/b c")
        );
        assert_eq!(param("limit=5", "path"), None);
        assert_eq!(decode("100%"), "100%");
        assert!(subtree("guides/intro").is_some());
        assert!(subtree("guides/").is_some());
        for bad in ["", "/etc", "a/../b", "..", "a//b", "./a"] {
            assert!(subtree(bad).is_none(), "{bad}");
        }
        let asked = subtree("a/b").unwrap();
        assert!(answers(&Scope::All, &asked));
        assert!(answers(&subtree("a").unwrap(), &asked));
        assert!(!answers(&subtree("c").unwrap(), &asked));
        assert!(!answers(&asked, &Scope::All));
    }
}
