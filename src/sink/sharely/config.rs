//! The `[sync.sharely]` section.

use std::collections::BTreeMap;

use reqwest::Url;
use serde::Deserialize;
use toml::Spanned;

use crate::config::section::{key_fields, raw_calls, Calls, Section};
use crate::config::ConfigError;
use crate::secret::SecretSource;

/// Sharely.ai knowledge. With `upload` (the default) files are uploaded
/// as FILE knowledge items titled by their path, mapped back by listing,
/// replaced when they change and deleted under `delete_policy = "delete"`.
/// Without it, kbsync only sets metadata on items the config names.
#[derive(Debug, Clone)]
pub struct SharelyConfig {
    pub base_url: Url,
    pub workspace_id: String,
    pub organization_id: String,
    pub api_key: SecretSource,
    /// Upload files (else metadata only, onto mapped items).
    pub upload: bool,
    /// Extensions uploaded; other files are skipped before any request.
    pub allowed_extensions: Vec<String>,
    /// The items' `type` as the config states it; `None`: read from
    /// Sharely (the metadata call must name the item's real type).
    pub knowledge_type: Option<String>,
    /// Local key → knowledge id: items that are the user's own. kbsync sets
    /// their metadata and never uploads over them or deletes them.
    pub knowledge: BTreeMap<String, String>,
    pub concurrency: usize,
    /// Timeout, retries, rate.
    pub calls: Calls,
    pub places: crate::sink::Places,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSharely {
    #[serde(default = "default_url")]
    base_url: Spanned<String>,
    workspace_id: Spanned<String>,
    organization_id: Spanned<String>,
    api_key: Option<Spanned<toml::Value>>,
    api_key_env: Option<Spanned<String>>,
    api_key_file: Option<Spanned<String>>,
    api_key_credential: Option<Spanned<String>>,
    #[serde(default)]
    allow_insecure_http: bool,
    upload: Option<Spanned<bool>>,
    allowed_extensions: Option<Spanned<Vec<String>>>,
    knowledge_type: Option<Spanned<String>>,
    #[serde(default)]
    knowledge: BTreeMap<String, Spanned<String>>,
    concurrency: Option<Spanned<i64>>,
    timeout_secs: Option<Spanned<i64>>,
    max_retries: Option<Spanned<i64>>,
    retry_min_delay_ms: Option<Spanned<i64>>,
    retry_max_delay_secs: Option<Spanned<i64>>,
    max_retry_wait_secs: Option<Spanned<i64>>,
    requests_per_minute: Option<Spanned<i64>>,
}

fn default_url() -> Spanned<String> {
    Spanned::new(0..0, "https://api.sharely.ai".to_owned())
}

/// Sharely's knowledge types, as its API names them.
const TYPES: &[&str] = &[
    "URL",
    "FILE",
    "LINK",
    "STRING",
    "WEBSITE",
    "ELASTICSEARCH_INDEX",
];
/// The file types Sharely's upload takes (its API reference, "Upload
/// File": documents, spreadsheets, images, media, archives, JSON).
pub const DEFAULT_EXTENSIONS: &[&str] = &[
    "pdf", "doc", "docx", "txt", "md", "xls", "xlsx", "csv", "jpg", "jpeg", "png", "gif", "webp",
    "mp4", "mp3", "wav", "zip", "json",
];
/// Fields Sharely's metadata endpoint refuses to set.
pub const RESERVED_FIELDS: &[&str] = &["title", "language"];

pub fn validate(s: &Section, raw: RawSharely) -> Result<SharelyConfig, ConfigError> {
    let (api_key, credential) = s.secret(key_fields!(raw.api_key))?;
    let base_url = s.url(&raw.base_url, raw.allow_insecure_http)?;
    let id = |v: &Spanned<String>, name: &str| s.id(v, name, "expected an id (a UUID)");
    let workspace_id = id(&raw.workspace_id, "workspace_id")?;
    let organization_id = id(&raw.organization_id, "organization_id")?;
    let knowledge_type = match &raw.knowledge_type {
        None => None,
        Some(t) if TYPES.contains(&t.get_ref().as_str()) => Some(t.get_ref().clone()),
        Some(t) => {
            return Err(s.error(
                t.span(),
                "knowledge_type",
                format!("expected one of {}", TYPES.join(", ")),
            ))
        }
    };
    Ok(SharelyConfig {
        knowledge: knowledge(s, &raw.knowledge)?,
        calls: s.calls(raw_calls!(raw), 60)?,
        allowed_extensions: s.extensions(
            "allowed_extensions",
            &raw.allowed_extensions,
            DEFAULT_EXTENSIONS,
        )?,
        concurrency: s.int(&raw.concurrency, "concurrency", 1..=64, 4)? as usize,
        places: s.places(&raw.workspace_id, "workspace_id", credential),
        upload: raw.upload.is_none_or(Spanned::into_inner),
        base_url,
        workspace_id,
        organization_id,
        api_key,
        knowledge_type,
    })
}

/// `[sync.sharely.knowledge]`: a path relative to the root → the id of the
/// user's own item.
fn knowledge(
    s: &Section,
    raw: &BTreeMap<String, Spanned<String>>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut knowledge = BTreeMap::new();
    for (path, kid) in raw {
        let item = format!("knowledge.{path:?}");
        let kid_t = s.id(kid, &item, "expected a knowledge id (a UUID)")?;
        let path = path.trim_start_matches("./").to_owned();
        if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p == "..") {
            return Err(s.error(
                kid.span(),
                &item,
                "expected a path relative to the folder's root, e.g. \"guides/intro.md\"",
            ));
        }
        knowledge.insert(path, kid_t);
    }
    Ok(knowledge)
}
