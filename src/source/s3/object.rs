//! One object read: a single GET whose answer gives the bytes (never more
//! than `max_file_size`) and the facts the listing lacks (content type,
//! user metadata), and what the state file records of it.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use opendal::Operator;
use serde::{Deserialize, Serialize};

use super::listing::{short, Stamp};

/// What an item row keeps of an object (its `validator`): the listing's
/// stamp, which decides whether the object is read again, and the facts
/// the metadata mapping may name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    #[serde(flatten)]
    pub stamp: Stamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    pub bucket: String,
    /// `x-amz-meta-*` without the prefix, names in lower case.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

impl Recorded {
    pub fn parse(validator: Option<&str>) -> Option<Recorded> {
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

/// Reads `key` (below the operator's root) in one GET; an object over
/// `max` bytes is refused as soon as that is known.
pub async fn get(op: &Operator, key: &str, max: u64) -> Result<Object, String> {
    let failed = |e: opendal::Error| format!("cannot read: {}", short(&e));
    let reader = op.reader(key).await.map_err(failed)?;
    let mut stream = reader.into_bytes_stream(..).await.map_err(failed)?;
    let answered = stream.metadata().await.ok();
    let announced = answered.as_ref().map_or(0, |m| m.content_length());
    if announced > max {
        return Err(format!(
            "{announced} bytes is over max_file_size ({max} bytes)"
        ));
    }
    let mut body = BytesMut::with_capacity(announced as usize);
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| format!("download failed: {e}"))?
    {
        if (body.len() + chunk.len()) as u64 > max {
            return Err(format!("over max_file_size ({max} bytes)"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Object {
        body: body.freeze(),
        content_type: answered
            .as_ref()
            .and_then(|m| m.content_type().map(str::to_owned)),
        meta: answered
            .as_ref()
            .and_then(|m| m.user_metadata())
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect()
            })
            .unwrap_or_default(),
    })
}
