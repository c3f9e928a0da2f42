//! Web source: configured URLs (and a sitemap's) fetched with conditional
//! GETs. An unchanged page costs one `304 Not Modified`; a changed one is
//! downloaded and hashed; `404`/`410` means it is gone. Any other failure
//! protects the page's upstream copy until a later poll succeeds.

mod config;
mod reach;
mod seam;

pub use config::{RawWeb, WebConfig};

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use super::{front_matter, KnownFacts, Observed, ScanResult, Skipped};
use crate::sink::http::read_body;
use reach::Reach;

/// A scan of a web job: what was observed, and the bodies downloaded for
/// the pages that changed (the executor uploads from these).
#[derive(Debug, Default)]
pub struct Fetched {
    pub scan: ScanResult,
    pub bodies: HashMap<String, Bytes>,
}

/// What a server said about its copy, for the next conditional GET.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Validator {
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
}

pub fn client(cfg: &WebConfig) -> reqwest::Result<reqwest::Client> {
    let reach = Reach::of(cfg);
    reqwest::Client::builder()
        .redirect(reach.redirects())
        .dns_resolver(reach.resolver())
        .timeout(cfg.timeout)
        .user_agent(concat!("kbsync/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The item key for `url`: host and path, always ending in a file
/// extension (Dify derives the document type from it): `…/` becomes
/// `…/index.html`, an extension-less page gets `.html`. A query string is
/// kept, before the extension.
pub fn key_of(url: &Url) -> String {
    let mut host = url.host_str().unwrap_or("").to_owned();
    if let Some(port) = url.port() {
        host.push_str(&format!(":{port}"));
    }
    let mut path = url.path().to_owned();
    if path.ends_with('/') {
        path.push_str("index.html");
    }
    let last = path.rsplit('/').next().unwrap_or("");
    let (stem, ext) = match last.rfind('.') {
        Some(i) if i > 0 => (&path[..path.len() - (last.len() - i)], &last[i..]),
        _ => (path.as_str(), ".html"),
    };
    match url.query() {
        Some(q) => format!("{host}{stem}?{q}{ext}"),
        None => format!("{host}{stem}{ext}"),
    }
}

/// Fetches every page. `known` is the cache's view; `in_sync` the keys
/// whose cached content is what the target has, the only ones for which a
/// `304` may stand in for the body; `refuses` says why the sink would
/// refuse a page's key.
pub async fn scan(
    client: &reqwest::Client,
    cfg: &WebConfig,
    known: &HashMap<String, KnownFacts>,
    in_sync: &HashSet<String>,
    refuses: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Fetched {
    let mut out = Fetched::default();
    let reach = Reach::of(cfg);
    let urls = listed_urls(client, cfg, &reach, &mut out.scan).await;
    let urls = reachable(urls, &reach, refuses, &mut out.scan);
    let pages = one_per_key(urls, &mut out.scan);
    let fetches = pages.into_iter().map(|(key, url)| {
        let cached = known.get(&key).filter(|_| in_sync.contains(&key));
        async move {
            let r = fetch(client, cfg, &url, &key, cached).await;
            (key, url, r)
        }
    });
    let mut stream = futures::stream::iter(fetches).buffer_unordered(cfg.concurrency);
    while let Some((key, url, r)) = stream.next().await {
        out.record(known, key, &url, r);
    }
    out.scan.items.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    out.scan.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The configured URLs and the sitemap's. A sitemap that cannot be read
/// (or lists no page) is reported, and protects every page: without it,
/// absent pages prove nothing.
async fn listed_urls(
    client: &reqwest::Client,
    cfg: &WebConfig,
    reach: &Reach,
    scan: &mut ScanResult,
) -> Vec<Url> {
    let mut urls = cfg.urls.clone();
    let Some(sitemap) = &cfg.sitemap else {
        return urls;
    };
    let listed = match sitemap_urls(client, cfg, reach, sitemap).await {
        Ok(found) if found.is_empty() => Err(
            "the sitemap lists no page (no <loc>): a broken site looks like that, so no page is taken for gone".to_owned(),
        ),
        other => other,
    };
    match listed {
        Ok(found) => urls.extend(found),
        Err(reason) => {
            scan.protected.push(String::new());
            scan.skipped.push(Skipped {
                path: sitemap.to_string(),
                reason,
            });
        }
    }
    urls
}

/// The URLs that may be fetched. Off-limits pages are reported, never
/// fetched (not even by a dry run), and protected: a page mirrored before
/// its host was allowed is not retired for not being read. A page the sink
/// would refuse (its type) is not fetched either.
fn reachable(
    mut urls: Vec<Url>,
    reach: &Reach,
    refuses: &(dyn Fn(&str) -> Option<String> + Sync),
    scan: &mut ScanResult,
) -> Vec<Url> {
    urls.retain(
        |url| match reach.refuses(url).or_else(|| refuses(&key_of(url))) {
            None => true,
            Some(reason) => {
                scan.protected.push(key_of(url));
                scan.skipped.push(Skipped {
                    path: url.to_string(),
                    reason,
                });
                false
            }
        },
    );
    urls
}

/// Each page under its key, once: a second URL that maps to the same
/// document name is reported and left out.
fn one_per_key(urls: Vec<Url>, scan: &mut ScanResult) -> Vec<(String, Url)> {
    let mut seen = HashMap::new();
    let mut pages = Vec::new();
    for url in urls {
        let key = key_of(&url);
        match seen.get(&key) {
            Some(first) if first == &url => {}
            Some(first) => scan.skipped.push(Skipped {
                path: url.to_string(),
                reason: format!("maps to the same document name as {first}; listed once"),
            }),
            None => {
                seen.insert(key.clone(), url.clone());
                pages.push((key, url));
            }
        }
    }
    pages
}

impl Fetched {
    /// What one fetch found: the cached facts again (`304`), nothing (gone),
    /// the new page and its body, or a failure that protects the page.
    fn record(
        &mut self,
        known: &HashMap<String, KnownFacts>,
        key: String,
        url: &Url,
        fetched: Result<Page, String>,
    ) {
        match fetched {
            Ok(Page::Unchanged) => {
                let again = known[&key].observed_again(key);
                self.scan.items.push(again);
            }
            Ok(Page::Gone(status)) => {
                tracing::info!(%url, %status, "page gone");
            }
            Ok(Page::Body(mut item, body)) => {
                if let Some(k) = known.get(&key).filter(|k| k.hash == item.hash) {
                    // Same bytes: keep the time they were first seen.
                    item.mtime_ns = item.mtime_ns.min(k.mtime_ns);
                }
                self.scan.hashed_files += 1;
                self.scan.hashed_bytes += item.size;
                self.bodies.insert(key, body);
                self.scan.items.push(item);
            }
            Err(reason) => {
                tracing::warn!(%url, %reason, "skipped");
                self.scan.protected.push(key);
                self.scan.skipped.push(Skipped {
                    path: url.to_string(),
                    reason,
                });
            }
        }
    }
}

enum Page {
    Unchanged,
    Gone(StatusCode),
    Body(Observed, Bytes),
}

async fn fetch(
    client: &reqwest::Client,
    cfg: &WebConfig,
    url: &Url,
    key: &str,
    cached: Option<&KnownFacts>,
) -> Result<Page, String> {
    let mut req = client.get(url.clone());
    if let Some(v) = cached
        .and_then(|k| k.validator.as_deref())
        .and_then(|v| serde_json::from_str::<Validator>(v).ok())
    {
        if let Some(etag) = &v.etag {
            req = req.header(IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &v.last_modified {
            req = req.header(IF_MODIFIED_SINCE, lm);
        }
    }
    let mut resp = req.send().await.map_err(|e| {
        format!(
            "cannot fetch: {}",
            crate::sink::http::network_error(e).message
        )
    })?;
    let status = resp.status();
    if status == StatusCode::NOT_MODIFIED && cached.is_some() {
        return Ok(Page::Unchanged);
    }
    if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
        return Ok(Page::Gone(status));
    }
    if !status.is_success() {
        return Err(format!("HTTP {status}; kept as it was, retried next poll"));
    }
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let validator = Validator {
        etag: header(ETAG),
        last_modified: header(LAST_MODIFIED),
    };
    let announced = resp.content_length();
    let body = read_body(&mut resp, cfg.max_file_size)
        .await
        .map_err(|e| format!("download failed: {e}"))?
        .ok_or_else(|| match announced {
            Some(n) => format!(
                "{n} bytes is over max_file_size ({} bytes)",
                cfg.max_file_size
            ),
            None => format!("over max_file_size ({} bytes)", cfg.max_file_size),
        })?;
    let mtime_ns = validator
        .last_modified
        .as_deref()
        .and_then(crate::http_date::unix_seconds)
        .map(|s| s * 1_000_000_000)
        .unwrap_or_else(super::now_ns);
    let item = Observed {
        key: key.to_owned(),
        size: body.len() as u64,
        mtime_ns,
        identity: 0,
        hash: super::folder::hash_bytes(&body),
        front_matter: if front_matter::is_markdown(key) {
            front_matter::read(key, &body[..body.len().min(front_matter::HEAD_BYTES)])
        } else {
            None
        },
        rehashed: true,
        racy: false,
        validator: (validator != Validator::default())
            .then(|| serde_json::to_string(&validator).unwrap_or_default()),
    };
    Ok(Page::Body(item, Bytes::from(body)))
}

/// How deep sitemap indexes are followed (an index of indexes is legal in
/// practice, if not in the protocol); deeper ones are an error.
const SITEMAP_DEPTH: usize = 4;

/// The page URLs of a sitemap. Indexes are followed (each sitemap once, on
/// the job's hosts only), and their entries are never taken for pages.
async fn sitemap_urls(
    client: &reqwest::Client,
    cfg: &WebConfig,
    reach: &Reach,
    sitemap: &Url,
) -> Result<Vec<Url>, String> {
    let mut pages = Vec::new();
    let mut seen: HashSet<Url> = HashSet::new();
    let mut level = vec![sitemap.clone()];
    for depth in 0.. {
        if level.is_empty() {
            break;
        }
        if depth > SITEMAP_DEPTH {
            return Err(format!(
                "sitemap indexes nest deeper than {SITEMAP_DEPTH} levels under {sitemap}"
            ));
        }
        let mut next = Vec::new();
        for url in level {
            if !seen.insert(url.clone()) {
                continue;
            }
            if let Some(why) = reach.refuses(&url) {
                return Err(format!("sitemap {url}: {why}"));
            }
            let text = get_text(client, &url, cfg.max_sitemap_size).await?;
            let (index, locs) = parse_locs(&text).map_err(|e| format!("sitemap {url}: {e}"))?;
            if index {
                next.extend(locs);
            } else {
                pages.extend(locs);
            }
        }
        level = next;
    }
    Ok(pages)
}

/// A sitemap's text, refused past `limit` bytes (checked as it arrives).
async fn get_text(client: &reqwest::Client, url: &Url, limit: u64) -> Result<String, String> {
    let mut resp = client.get(url.clone()).send().await.map_err(|e| {
        format!(
            "cannot fetch sitemap {url}: {}",
            crate::sink::http::network_error(e).message
        )
    })?;
    if !resp.status().is_success() {
        return Err(format!("sitemap {url}: HTTP {}", resp.status()));
    }
    let body = read_body(&mut resp, limit)
        .await
        .map_err(|e| format!("sitemap {url}: {e}"))?
        .ok_or_else(|| format!("sitemap {url} is larger than max_sitemap_size ({limit} bytes)"))?;
    // Valid UTF-8 (as XML nearly always is) becomes text without a copy.
    Ok(String::from_utf8(body)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// The sitemap protocol's namespace (a sitemap without one is read too).
const SITEMAP_NS: &str = "http://www.sitemaps.org/schemas/sitemap/0.9";

/// What one sitemap lists: pages, or (an index) more sitemaps.
#[derive(Debug, PartialEq)]
struct Listing {
    index: bool,
    locs: Vec<String>,
}

/// The `<loc>` of each `<url>` of a `<urlset>`, or of each `<sitemap>` of a
/// `<sitemapindex>`; elements of other namespaces (`<image:loc>`) are not
/// entries.
fn listing(text: &str) -> Result<Listing, String> {
    let found = crate::xml::texts(text, SITEMAP_NS, usize::MAX, |path| {
        let names: Vec<_> = path
            .iter()
            .map(|e| e.ours.then_some(e.name.as_str()))
            .collect();
        matches!(
            names[..],
            [Some("urlset"), Some("url"), Some("loc")]
                | [Some("sitemapindex"), Some("sitemap"), Some("loc")]
        )
    })?;
    let index = match found.root {
        Some(root) if root.ours && root.name == "sitemapindex" => true,
        Some(root) if root.ours && root.name == "urlset" => false,
        root => {
            return Err(format!(
                "<{}> is neither a <urlset> nor a <sitemapindex>",
                root.map(|r| r.name).unwrap_or_default()
            ))
        }
    };
    Ok(Listing {
        index,
        locs: found.texts,
    })
}

/// Whether the sitemap is an index, and the http(s) URLs it lists.
fn parse_locs(text: &str) -> Result<(bool, Vec<Url>), String> {
    let Listing { index, locs } = listing(text)?;
    let urls = locs
        .into_iter()
        .map(|l| Url::parse(&l).map_err(|e| format!("bad <loc> {l:?}: {e}")))
        .filter(|u| {
            u.as_ref()
                .map_or(true, |u| matches!(u.scheme(), "http" | "https"))
        })
        .collect::<Result<_, _>>()?;
    Ok((index, urls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(u: &str) -> String {
        key_of(&Url::parse(u).unwrap())
    }

    #[test]
    fn keys_are_host_and_path_with_an_extension() {
        assert_eq!(key("https://ex.com/docs/a.md"), "ex.com/docs/a.md");
        assert_eq!(key("https://ex.com/docs/"), "ex.com/docs/index.html");
        assert_eq!(key("https://ex.com"), "ex.com/index.html");
        assert_eq!(key("https://ex.com/guide"), "ex.com/guide.html");
        assert_eq!(key("http://ex.com:8080/a.pdf"), "ex.com:8080/a.pdf");
        assert_eq!(key("https://ex.com/p?id=3"), "ex.com/p?id=3.html");
        assert_eq!(key("https://ex.com/f.txt?v=2"), "ex.com/f?v=2.txt");
        assert_eq!(key("https://ex.com/.well-known"), "ex.com/.well-known.html");
    }

    #[test]
    fn sitemap_locs_with_entities_and_cdata() {
        let xml = r#"<?xml version="1.0"?><urlset>
            <url><loc> https://ex.com/a?x=1&amp;y=2 </loc></url>
            <url><loc><![CDATA[https://ex.com/b]]></loc></url>
        </urlset>"#;
        assert_eq!(locs(xml), ["https://ex.com/a?x=1&y=2", "https://ex.com/b"]);
    }

    #[test]
    fn sitemap_indexes_with_prefixes_and_what_is_no_sitemap() {
        let index = r#"<s:sitemapindex xmlns:s="http://www.sitemaps.org/schemas/sitemap/0.9">
            <s:sitemap><s:loc>https://ex.com/a.xml</s:loc><s:lastmod>2026-01-01</s:lastmod></s:sitemap>
        </s:sitemapindex>"#;
        let found = listing(index).unwrap();
        assert!(found.index);
        assert_eq!(found.locs, ["https://ex.com/a.xml"]);
        // Entities of the server's own making are refused with their DTD:
        // a billion laughs never expands.
        let bomb = format!(
            "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"lol\">{}]><urlset><url><loc>&j;</loc></url></urlset>",
            (b'b'..=b'j')
                .map(|c| format!("<!ENTITY {} \"{}\">", c as char, format!("&{};", (c - 1) as char).repeat(10)))
                .collect::<String>()
        );
        assert!(
            listing(&bomb).unwrap_err().contains("DTD"),
            "{:?}",
            listing(&bomb)
        );
        assert!(listing("<html><body>moved</body></html>")
            .unwrap_err()
            .contains("<html>"));
        assert!(listing("<urlset><url><loc>x</url>").is_err());
        assert!(parse_locs("<urlset><url><loc>not a url</loc></url></urlset>").is_err());
    }

    fn locs(xml: &str) -> Vec<String> {
        let listing = listing(xml).unwrap();
        assert!(!listing.index);
        listing.locs
    }

    #[test]
    fn sitemap_locs_with_prefixes_spaces_and_extensions() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
            <sm:urlset xmlns:sm="http://www.sitemaps.org/schemas/sitemap/0.9"
                       xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">
              <sm:url><sm:loc>https://ex.com/a?x=1&amp;y=2</sm:loc>
                <image:image><image:loc>https://ex.com/a.png</image:loc></image:image>
              </sm:url>
              <sm:url><sm:loc >https://ex.com/b&#47;c</sm:loc ></sm:url>
            </sm:urlset>"#;
        assert_eq!(
            locs(xml),
            ["https://ex.com/a?x=1&y=2", "https://ex.com/b/c"]
        );
    }
}
