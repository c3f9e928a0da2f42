//! A recording proxy in front of a real S3 (or WebDAV) server: it forwards every
//! request as it came (the Host header kept, so signatures still match),
//! logs what was asked (a listing, an object GET, …), and can make the
//! server look hostile: a listing page answered 500, (for unsigned
//! requests) pages of a few keys, so a small bucket lists in many pages,
//! an S3 listing that never ends, a WebDAV folder refused or listed twice,
//! or error answers that repeat the request's credentials.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};

/// What one request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    List,
    Get,
    Head,
    Other,
}

#[derive(Default)]
pub struct Proxied {
    upstream: String,
    pub log: Vec<(Asked, String)>,
    /// Listing requests answered normally before each further one gets a
    /// 500 (`Some(1)`: the second page fails).
    pub fail_lists_after: Option<usize>,
    /// `max-keys` forced on unsigned listings.
    pub page_size: Option<u32>,
    /// A WebDAV server behind: PROPFIND lists, every GET reads a file.
    pub dav: bool,
    /// Requests of this kind are answered with this status and a body
    /// that repeats their credentials (see `echo`).
    pub echo: Option<(Asked, u16)>,
    /// S3 listings are answered here, without end: every page is empty,
    /// says it is truncated and names a continuation token that cycles
    /// (`t1`, `t0`, `t1`, …).
    pub endless: bool,
    /// A PROPFIND of a path ending so is answered with this status.
    pub refuse_folder: Option<(String, u16)>,
    /// A PROPFIND answer naming a folder ending so names it twice.
    pub twice: Option<String>,
    lists: usize,
}

pub struct S3Proxy {
    world: Arc<Mutex<Proxied>>,
    addr: SocketAddr,
}

impl S3Proxy {
    pub async fn start(upstream: &str) -> S3Proxy {
        let world = Arc::new(Mutex::new(Proxied {
            upstream: upstream.to_owned(),
            ..Proxied::default()
        }));
        let addr = super::serve::serve(world.clone(), forward).await;
        S3Proxy { world, addr }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, Proxied> {
        self.world.lock().unwrap()
    }

    /// Requests of kind `what` so far.
    pub fn count(&self, what: Asked) -> usize {
        self.world().log.iter().filter(|(a, _)| *a == what).count()
    }
}

fn asked(req: &Request<Incoming>, dav: bool) -> Asked {
    let path = req.uri().path().trim_start_matches('/');
    let key = path.split_once('/').map_or("", |(_, k)| k);
    match (req.method().as_str(), key.is_empty() && !dav) {
        ("PROPFIND", _) => Asked::List,
        ("GET", true) => Asked::List,
        ("GET", false) => Asked::Get,
        ("HEAD", _) => Asked::Head,
        _ => Asked::Other,
    }
}

/// The query with `max-keys` set to `size`.
fn with_page_size(query: &str, size: u32) -> String {
    let mut parts: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("max-keys="))
        .map(str::to_owned)
        .collect();
    parts.push(format!("max-keys={size}"));
    parts.join("&")
}

async fn forward(
    world: Arc<Mutex<Proxied>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let what = asked(&req, world.lock().unwrap().dav);
    let signed = req.headers().contains_key("authorization");
    let mut query = req.uri().query().unwrap_or("").to_owned();
    let (upstream, fail) = {
        let mut w = world.lock().unwrap();
        w.log.push((what, req.uri().to_string()));
        let mut fail = false;
        if what == Asked::List {
            w.lists += 1;
            fail = w.fail_lists_after.is_some_and(|n| w.lists > n);
            if let (Some(size), false) = (w.page_size, signed) {
                query = with_page_size(&query, size);
            }
        }
        (w.upstream.clone(), fail)
    };
    if let Some(answer) = hostile(&world, what, &req) {
        return Ok(answer);
    }
    if fail {
        return Ok(Response::builder()
            .status(500)
            .body(Full::new(Bytes::from_static(
                b"<Error><Code>InternalError</Code><Message>injected</Message></Error>",
            )))
            .unwrap());
    }
    let url = match query.as_str() {
        "" => format!("{upstream}{}", req.uri().path()),
        q => format!("{upstream}{}?{q}", req.uri().path()),
    };
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in req.headers() {
        headers.append(k.clone(), v.clone());
    }
    let body = req.into_body().collect().await?.to_bytes();
    let answer = reqwest::Client::new()
        .request(method, url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .expect("the server behind the proxy answers");
    let mut out = Response::builder().status(answer.status().as_u16());
    for (k, v) in answer.headers() {
        if k != "transfer-encoding" && k != "content-length" && k != "connection" {
            out = out.header(k.as_str(), v.as_bytes());
        }
    }
    let mut bytes = answer.bytes().await.unwrap_or_default();
    if let (Some(folder), Asked::List) = (world.lock().unwrap().twice.clone(), what) {
        bytes = named_twice(&bytes, &folder);
    }
    Ok(out.body(Full::new(bytes)).unwrap())
}

/// The answer the proxy makes up instead of forwarding, if any.
fn hostile(
    world: &Mutex<Proxied>,
    what: Asked,
    req: &Request<Incoming>,
) -> Option<Response<Full<Bytes>>> {
    let w = world.lock().unwrap();
    let path = req.uri().path();
    let answer = |status: u16, body: String| {
        Some(
            Response::builder()
                .status(status)
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
    };
    match w.echo {
        Some((asked, status)) if asked == what => return answer(status, echo(req)),
        _ => {}
    }
    if let Some((folder, status)) = &w.refuse_folder {
        if req.method() == "PROPFIND" && path.ends_with(folder.as_str()) {
            return answer(*status, String::new());
        }
    }
    if w.endless && what == Asked::List && !w.dav {
        return answer(200, endless_page(w.lists));
    }
    None
}

/// An error body that repeats the request's credentials as a debug page
/// may: the authorization header as sent, JSON-escaped and URL-encoded,
/// and a Basic one decoded (`user:password`), all on its first line.
fn echo(req: &Request<Incoming>) -> String {
    use base64::Engine;
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let decoded = auth
        .strip_prefix("Basic ")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let link: String = url::form_urlencoded::byte_serialize(auth.as_bytes()).collect();
    format!(
        "refused a request carrying authorization: {auth}; as JSON {}; back to /signin?was={link}; that is {decoded}",
        serde_json::json!({ "authorization": auth, "login": decoded })
    )
}

/// Page `n` of a listing that never ends.
fn endless_page(n: usize) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>docs</Name><Prefix></Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated><NextContinuationToken>t{}</NextContinuationToken></ListBucketResult>"#,
        n % 2
    )
}

/// A PROPFIND answer with the `<response>` of the folder whose href ends
/// in `folder` given twice.
fn named_twice(body: &[u8], folder: &str) -> Bytes {
    let text = String::from_utf8_lossy(body);
    let (open, close) = ("<D:response>", "</D:response>");
    let twice = text.match_indices(open).find_map(|(at, _)| {
        let response = &text[at..at + text[at..].find(close)? + close.len()];
        let href = response
            .split("<D:href>")
            .nth(1)?
            .split("</D:href>")
            .next()?;
        href.ends_with(folder).then_some(response)
    });
    match twice {
        Some(r) => Bytes::from(text.replacen(r, &format!("{r}{r}"), 1)),
        None => Bytes::copy_from_slice(body),
    }
}
