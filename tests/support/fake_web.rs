//! A small in-process web server for the web source: pages with ETag and
//! Last-Modified, conditional GETs answered with 304, a generated sitemap,
//! and pages that can be made to vanish (404/410) or fail.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

#[derive(Debug, Clone)]
pub struct Page {
    pub body: String,
    pub etag: String,
    pub last_modified: String,
    pub content_type: String,
}

/// An answer given as it is: status, headers, body.
pub type Canned = (u16, Vec<(String, String)>, String);

#[derive(Default)]
pub struct Site {
    pub pages: BTreeMap<String, Page>,
    /// path → status to answer instead (404, 410, 503…).
    pub status: BTreeMap<String, u16>,
    /// Paths listed in /sitemap.xml.
    pub sitemap: Vec<String>,
    /// path → an answer given as it is: (status, headers, body), for
    /// redirects and hand-written sitemaps.
    pub custom: BTreeMap<String, Canned>,
    /// (path, status) of every request answered.
    pub log: Vec<(String, u16)>,
    version: u64,
}

impl Site {
    /// Sets a page's body; a new body gets a new ETag.
    pub fn put(&mut self, path: &str, body: &str, content_type: &str) {
        self.version += 1;
        self.pages.insert(
            path.into(),
            Page {
                body: body.into(),
                etag: format!("\"v{}\"", self.version),
                // 1–9 November 2026, 10:00, each with its own weekday.
                last_modified: httpdate::fmt_http_date(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs(
                            1_793_527_200 + 86_400 * (self.version % 9),
                        ),
                ),
                content_type: content_type.into(),
            },
        );
    }

    pub fn count(&self, status: u16) -> usize {
        self.log.iter().filter(|(_, s)| *s == status).count()
    }
}

pub struct FakeWeb {
    pub addr: SocketAddr,
    pub site: Arc<Mutex<Site>>,
}

impl FakeWeb {
    pub async fn start() -> FakeWeb {
        let site = Arc::new(Mutex::new(Site::default()));
        let addr = super::serve::serve(site.clone(), |s, req| async move {
            Ok::<_, std::convert::Infallible>(answer(&s, req))
        })
        .await;
        FakeWeb { addr, site }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn site(&self) -> std::sync::MutexGuard<'_, Site> {
        self.site.lock().unwrap()
    }
}

fn answer(site: &Mutex<Site>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut site = site.lock().unwrap();
    let path = req.uri().path().to_owned();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, resp) = if let Some((status, headers, body)) = site.custom.get(&path) {
        let mut r = Response::builder().status(*status);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        (
            *status,
            r.body(Full::new(Bytes::from(body.clone()))).unwrap(),
        )
    } else if let Some(&status) = site.status.get(&path) {
        (status, simple(status, "nope"))
    } else if path == "/sitemap.xml" {
        let host = header("host").unwrap_or_default();
        let locs: String = site
            .sitemap
            .iter()
            .map(|p| format!("<url><loc>http://{host}{p}</loc></url>"))
            .collect();
        let body = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</urlset>"#
        );
        (200, simple(200, &body))
    } else if let Some(page) = site.pages.get(&path) {
        let fresh = header("if-none-match").as_deref() == Some(page.etag.as_str())
            || (header("if-none-match").is_none()
                && header("if-modified-since").as_deref() == Some(page.last_modified.as_str()));
        if fresh {
            (304, simple(304, ""))
        } else {
            let r = Response::builder()
                .status(200)
                .header("content-type", &page.content_type)
                .header("etag", &page.etag)
                .header("last-modified", &page.last_modified)
                .body(Full::new(Bytes::from(page.body.clone())))
                .unwrap();
            (200, r)
        }
    } else {
        (404, simple(404, "not found"))
    };
    site.log.push((path, status));
    resp
}

fn simple(status: u16, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}
