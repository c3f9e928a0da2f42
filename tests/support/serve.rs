//! The accept loop the fake servers share: HTTP/1 on 127.0.0.1:0, one task
//! per connection, each request handed to `handle` with the shared world.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

pub async fn serve<W, F, Fut, E, B>(world: Arc<Mutex<W>>, handle: F) -> SocketAddr
where
    W: Send + 'static,
    F: Fn(Arc<Mutex<W>>, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let w = world.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(w.clone(), req));
                // A connection dropped on purpose (fault injection) ends
                // here with an error; expected.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A JSON answer with `status`.
pub fn json_reply(status: u16, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// How a gateway or proxy in front of an API may show an error: as JSON
/// (`{"code", "message"}`) or as an HTML page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EchoAs {
    Json,
    Html,
}

/// An error answer that repeats the request's credential headers, as some
/// proxies, gateways and debug pages do: the next `times` requests whose
/// path contains `path_contains` get it instead of the API's answer.
#[derive(Debug, Clone)]
pub struct Echo {
    pub path_contains: String,
    pub status: u16,
    pub shape: EchoAs,
    pub times: u32,
}

impl Echo {
    pub fn new(path_contains: &str, status: u16, shape: EchoAs, times: u32) -> Echo {
        Echo {
            path_contains: path_contains.into(),
            status,
            shape,
            times,
        }
    }
}

/// The echo the first matching rule of `rules` asks for, if any (it is
/// used up by one).
pub fn take_echo(
    rules: &mut [Echo],
    path: &str,
    headers: &hyper::HeaderMap,
) -> Option<Response<Full<Bytes>>> {
    let rule = rules
        .iter_mut()
        .find(|r| r.times > 0 && path.contains(&r.path_contains))?;
    rule.times -= 1;
    let credentials: Vec<String> = ["authorization", "x-api-key"]
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some(format!("{name}: {value}"))
        })
        .collect();
    let status = rule.status;
    Some(match rule.shape {
        EchoAs::Json => json_reply(
            status,
            serde_json::json!({
                "code": "gateway_rejected",
                "message": format!("request rejected; it carried {}", credentials.join("; ")),
                "status": status,
            }),
        ),
        // The first credential also goes URL-encoded, in a link back.
        EchoAs::Html => {
            let first = credentials.first().map_or("", |c| c.as_str());
            let link: String = url::form_urlencoded::byte_serialize(first.as_bytes()).collect();
            Response::builder()
                .status(status)
                .header("content-type", "text/html")
                .body(Full::new(Bytes::from(format!(
                    "<html><body><a href=\"/signin?was={link}\">sign in</a><pre>{}</pre><h1>{status} Error</h1></body></html>",
                    credentials.join("\n")
                ))))
                .unwrap()
        }
    })
}

/// A body of `size` bytes made as it is sent, 64 KiB at a time (a test
/// needs no gigabyte in memory to send one): `head`, then `fill` bytes,
/// then `tail`. `sent` counts what the server took from it, which is what
/// it wrote or was about to write when the client hung up. Without
/// `announce` it goes chunked, without a Content-Length.
pub struct Huge {
    parts: std::collections::VecDeque<Bytes>,
    fill_left: u64,
    fill: Bytes,
    size: u64,
    announce: bool,
    sent: Arc<std::sync::atomic::AtomicU64>,
}

impl Huge {
    pub fn new(
        head: &str,
        size: u64,
        tail: &str,
        announce: bool,
        sent: Arc<std::sync::atomic::AtomicU64>,
    ) -> Huge {
        let framing = (head.len() + tail.len()) as u64;
        Huge {
            parts: [Bytes::from(head.to_owned()), Bytes::from(tail.to_owned())].into(),
            fill_left: size.saturating_sub(framing),
            fill: Bytes::from(vec![b'x'; 64 * 1024]),
            size: size.max(framing),
            announce,
            sent,
        }
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.parts.len() == 2 {
            return self.parts.pop_front();
        }
        if self.fill_left > 0 {
            let n = self.fill_left.min(self.fill.len() as u64);
            self.fill_left -= n;
            return Some(self.fill.slice(..n as usize));
        }
        self.parts.pop_front()
    }
}

impl hyper::body::Body for Huge {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let chunk = self.next_chunk();
        if let Some(c) = &chunk {
            self.sent
                .fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        std::task::Poll::Ready(chunk.map(|c| Ok(hyper::body::Frame::data(c))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.announce {
            hyper::body::SizeHint::with_exact(self.size)
        } else {
            hyper::body::SizeHint::default()
        }
    }
}
