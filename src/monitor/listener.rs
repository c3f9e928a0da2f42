//! The HTTP listener behind `[daemon] metrics_listen`: `GET /metrics`
//! (Prometheus text format), `/healthz` and `/readyz` (200 or 503 with a
//! one-line reason per problem), and the control API (`control::routes`).
//! Beyond loopback every route asks for the API token.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use metrics_exporter_prometheus::PrometheusHandle;

use super::Health;
use crate::control::{self, Control};

/// A client that has not sent its request head within this is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serving until dropped.
pub struct Listener {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Served {
    metrics: PrometheusHandle,
    health: Arc<Health>,
    state_path: PathBuf,
    control: Arc<Control>,
    /// Listening beyond loopback: every route asks for the token.
    remote: bool,
    /// One scrape reads the state file at a time.
    reading: tokio::sync::Mutex<()>,
}

/// Binds `addr` and serves in the background. Fails when the address
/// cannot be bound (in use, not local), so the service does not start
/// without the monitoring it was asked for.
pub async fn serve(
    addr: SocketAddr,
    metrics: PrometheusHandle,
    health: Arc<Health>,
    control: Arc<Control>,
) -> anyhow::Result<Listener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (`daemon.metrics_listen`): {e}"))?;
    let addr = listener.local_addr()?;
    let served = Arc::new(Served {
        metrics,
        health,
        state_path: control.state_path.clone(),
        remote: !addr.ip().is_loopback(),
        control,
        reading: tokio::sync::Mutex::new(()),
    });
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, most likely: try again soon.
                    tracing::warn!("metrics listener: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let served = served.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let served = served.clone();
                    async move { Ok::<_, Infallible>(answer(&served, req, peer).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!("metrics listener: connection ended: {e}");
                }
            });
        }
    });
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz and the control API (/jobs)");
    Ok(Listener { addr, task })
}

async fn answer(
    served: &Served,
    req: Request<hyper::body::Incoming>,
    peer: std::net::SocketAddr,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    // A webhook carries its host's signature, not the API token.
    if !path.starts_with("/hooks/") {
        if let Err(why) = control::may_read(&served.control, req.headers(), served.remote) {
            return control::refuse(req.method(), &path, peer, why);
        }
    }
    if control::serves(&path) {
        return control::answer(&served.control, req, peer).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into(), TEXT);
    }
    match path.as_str() {
        "/metrics" => reply(StatusCode::OK, scrape(served).await, EXPOSITION),
        "/healthz" => health(served.health.healthz()),
        "/readyz" => {
            let control = &served.control;
            let ready = served.health.readyz_but(&|job| control.is_paused(job));
            health(with_paused(ready, control))
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "not found; served here: /metrics, /healthz, /readyz, /jobs\n".into(),
            TEXT,
        ),
    }
}

const TEXT: &str = "text/plain; charset=utf-8";
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

fn health((ok, why): (bool, String)) -> Response<Full<Bytes>> {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    reply(status, format!("{why}\n"), TEXT)
}

/// A paused job does not make the service unready (it was asked for),
/// but `/readyz` says so.
fn with_paused((ok, mut why): (bool, String), control: &Control) -> (bool, String) {
    for job in control.job_names() {
        if let Some(since) = control.paused_since(&job) {
            why.push_str(&format!(
                "\n{job}: paused since {}",
                crate::metadata::format_rfc3339(since)
            ));
        }
    }
    (ok, why)
}

fn reply(status: StatusCode, body: String, kind: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(kind),
    );
    resp
}

/// Item counts come from the state file (read-only, beside the service's
/// own connection); everything else was recorded as it happened.
async fn scrape(served: &Served) -> String {
    {
        let _one = served.reading.lock().await;
        let path = served.state_path.clone();
        let read = tokio::task::spawn_blocking(move || {
            crate::state::State::open_read_only(&path).and_then(|s| s.summaries())
        })
        .await;
        match read {
            Ok(Ok(summaries)) => super::items(&summaries),
            Ok(Err(e)) => tracing::warn!("metrics: cannot read the state file: {e}"),
            Err(e) => tracing::warn!("metrics: reading the state file failed: {e}"),
        }
    }
    served.metrics.run_upkeep();
    served.metrics.render()
}
