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

pub async fn serve<W, F, Fut, E>(world: Arc<Mutex<W>>, handle: F) -> SocketAddr
where
    W: Send + 'static,
    F: Fn(Arc<Mutex<W>>, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Full<Bytes>>, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
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
