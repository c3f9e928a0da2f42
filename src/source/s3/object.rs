//! One object read: a single GET whose answer gives the bytes (never more
//! than `max_file_size`) and the facts the listing lacks (content type,
//! user metadata), and what the state file records of it.

use std::collections::BTreeMap;

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};

use super::client::Client;
use super::listing::{short, Stamp};
use crate::sink::http::{network_error, read_body};

/// What an item row keeps of an object (its `validator`): the listing's
/// stamp, which decides whether the object is read again, and the facts
/// the metadata mapping may name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    #[serde(flatten)]
    pub stamp: Stamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// `x-amz-meta-*` without the prefix, names in lower case.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

impl Kept {
    pub fn parse(validator: Option<&str>) -> Option<Kept> {
        serde_json::from_str(validator?).ok()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An object's bytes and what its answer said of it.
pub struct Object {
    pub body: Bytes,
    pub content_type: Option<String>,
    pub meta: BTreeMap<String, String>,
}

/// How long a signed GET stays valid: it is sent at once.
const SIGNED_FOR: Duration = Duration::from_secs(300);

impl super::scan::Fetch for Client {
    fn get<'a>(&'a self, key: &'a str, max: u64) -> BoxFuture<'a, Result<Object, String>> {
        get(self, key, max).boxed()
    }
}

/// Reads `key` (below the prefix) in one GET, signed by OpenDAL and sent
/// here, so that the answer's headers (OpenDAL's own read drops the user
/// metadata) come with the bytes; an object over `max` bytes is refused
/// as soon as that is known.
pub async fn get(client: &Client, key: &str, max: u64) -> Result<Object, String> {
    let signed = client
        .op
        .presign_read(key, SIGNED_FOR)
        .await
        .map_err(|e| format!("cannot sign the GET: {}", short(&e)))?;
    let mut resp = client
        .http
        .request(signed.method().clone(), signed.uri().to_string())
        .headers(signed.header().clone())
        .send()
        .await
        .map_err(|e| format!("cannot read: {}", network_error(e).message))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!(
            "GET answered HTTP {status}; kept as it was, read again next poll"
        ));
    }
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type");
    let meta = resp
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            let name = name.as_str().strip_prefix(USER_METADATA)?;
            Some((name.to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let announced = resp.content_length();
    let body = read_body(&mut resp, max)
        .await
        .map_err(|e| format!("download failed: {}", network_error(e).message))?
        .ok_or_else(|| match announced {
            Some(n) => format!("{n} bytes is over max_file_size ({max} bytes)"),
            None => format!("over max_file_size ({max} bytes)"),
        })?;
    Ok(Object {
        body: Bytes::from(body),
        content_type,
        meta,
    })
}

/// The header prefix of an object's user metadata (names come lower case).
const USER_METADATA: &str = "x-amz-meta-";
