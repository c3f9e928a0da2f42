//! The `[sync.web]` section: the pages to poll, and how.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use toml::Spanned;

use crate::config::locate::{bounded, Locator};
use crate::config::size::size_limit;
use crate::config::ConfigError;

/// HTTP(S) documents polled with conditional GETs.
#[derive(Debug, Clone)]
pub struct WebConfig {
    pub urls: Vec<Url>,
    /// A sitemap (or sitemap index) whose `<loc>` URLs join `urls`.
    pub sitemap: Option<Url>,
    pub poll_interval: Duration,
    pub max_file_size: u64,
    pub timeout: Duration,
    pub concurrency: usize,
    /// Hosts besides those of `urls` and `sitemap` that pages may come from.
    pub allow_hosts: Vec<String>,
    /// Fetch from loopback, private and link-local addresses even when no
    /// configured URL is on one (an intranet site by name).
    pub allow_private_addresses: bool,
    /// A sitemap larger than this is refused (the protocol's own limit is
    /// 50 MB uncompressed).
    pub max_sitemap_size: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeb {
    #[serde(default)]
    urls: Vec<Spanned<String>>,
    sitemap: Option<Spanned<String>>,
    poll_interval_secs: Option<Spanned<i64>>,
    max_file_size: Option<Spanned<toml::Value>>,
    timeout_secs: Option<Spanned<i64>>,
    concurrency: Option<Spanned<i64>>,
    #[serde(default)]
    allow_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    allow_private_addresses: bool,
    max_sitemap_size: Option<Spanned<toml::Value>>,
}

pub fn validate(
    loc: &Locator,
    index: usize,
    raw: Spanned<RawWeb>,
) -> Result<WebConfig, ConfigError> {
    let span = raw.span();
    let raw = raw.into_inner();
    let key = |k: &str| format!("sync[{index}].web.{k}");
    let url = |s: &Spanned<String>, k: &str| -> Result<Url, ConfigError> {
        let u = Url::parse(s.get_ref())
            .map_err(|e| loc.error(s.span(), &key(k), format!("not a URL: {e}")))?;
        if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
            return Err(loc.error(s.span(), &key(k), "expected an http(s):// URL"));
        }
        Ok(u)
    };
    let mut urls = Vec::new();
    for u in &raw.urls {
        urls.push(url(u, "urls")?);
    }
    let sitemap = raw
        .sitemap
        .as_ref()
        .map(|s| url(s, "sitemap"))
        .transpose()?;
    if urls.is_empty() && sitemap.is_none() {
        return Err(loc.error(
            span,
            &key("urls"),
            "list at least one URL in `urls`, or a `sitemap`",
        ));
    }
    let int = |v: &Option<Spanned<i64>>, name: &str, lo: i64, hi: i64, default: i64| {
        bounded(loc, v, &key(name), lo, hi, default)
    };
    Ok(WebConfig {
        urls,
        sitemap,
        poll_interval: Duration::from_secs(int(
            &raw.poll_interval_secs,
            "poll_interval_secs",
            1,
            30 * 86_400,
            900,
        )? as u64),
        max_file_size: size_limit(loc, &key("max_file_size"), &raw.max_file_size)?,
        timeout: Duration::from_secs(int(&raw.timeout_secs, "timeout_secs", 1, 3600, 60)? as u64),
        concurrency: int(&raw.concurrency, "concurrency", 1, 64, 4)? as usize,
        allow_hosts: raw
            .allow_hosts
            .iter()
            .map(|h| {
                let host = h.get_ref().trim().to_ascii_lowercase();
                if host.is_empty() || host.contains(['/', ':', ' ']) {
                    Err(loc.error(
                        h.span(),
                        &key("allow_hosts"),
                        "expected host names such as \"docs.example.com\" (no scheme, port or path)",
                    ))
                } else {
                    Ok(host)
                }
            })
            .collect::<Result<_, _>>()?,
        allow_private_addresses: raw.allow_private_addresses,
        max_sitemap_size: match &raw.max_sitemap_size {
            None => 50 * 1024 * 1024,
            some => size_limit(loc, &key("max_sitemap_size"), some)?,
        },
    })
}
