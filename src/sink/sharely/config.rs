//! The `[sync.sharely]` section.

use std::collections::BTreeMap;
use std::path::Path;

use reqwest::Url;
use serde::Deserialize;
use toml::Spanned;

use crate::config::locate::{bounded, Locator};
use crate::config::section::{
    calls, extensions, https_url, key_place, key_source, plain_id, Calls, KeyFields, RawCalls,
};
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

pub fn validate(
    loc: &Locator,
    base: &Path,
    index: usize,
    raw: Spanned<RawSharely>,
) -> Result<SharelyConfig, ConfigError> {
    let table_span = raw.span();
    let raw = raw.into_inner();
    let key = |k: &str| format!("sync[{index}].sharely.{k}");
    let fields = KeyFields {
        name: "api_key",
        inline: &raw.api_key,
        env: &raw.api_key_env,
        file: &raw.api_key_file,
        credential: &raw.api_key_credential,
    };
    let credential_place = key_place(loc, &key, table_span.clone(), &fields);
    let api_key = key_source(loc, base, &key, table_span.clone(), fields)?;
    let base_url = https_url(loc, &key, &raw.base_url, raw.allow_insecure_http)?;
    let id =
        |v: &Spanned<String>, name: &str| plain_id(loc, &key(name), v, "expected an id (a UUID)");
    let workspace_id = id(&raw.workspace_id, "workspace_id")?;
    let organization_id = id(&raw.organization_id, "organization_id")?;
    let knowledge_type = match &raw.knowledge_type {
        None => None,
        Some(t) if TYPES.contains(&t.get_ref().as_str()) => Some(t.get_ref().clone()),
        Some(t) => {
            return Err(loc.error(
                t.span(),
                &key("knowledge_type"),
                format!("expected one of {}", TYPES.join(", ")),
            ))
        }
    };
    let mut knowledge = BTreeMap::new();
    for (path, kid) in &raw.knowledge {
        let item_key = key(&format!("knowledge.{path:?}"));
        let kid_t = plain_id(loc, &item_key, kid, "expected a knowledge id (a UUID)")?;
        let path = path.trim_start_matches("./").to_owned();
        if path.is_empty() || path.starts_with('/') || path.split('/').any(|p| p == "..") {
            return Err(loc.error(
                kid.span(),
                &item_key,
                "expected a path relative to the folder's root, e.g. \"guides/intro.md\"",
            ));
        }
        knowledge.insert(path, kid_t);
    }
    let int = |v: &Option<Spanned<i64>>, name: &str, lo: i64, hi: i64, default: i64| {
        bounded(loc, v, &key(name), lo, hi, default)
    };
    let calls = calls(
        loc,
        &key,
        RawCalls {
            timeout_secs: &raw.timeout_secs,
            max_retries: &raw.max_retries,
            retry_min_delay_ms: &raw.retry_min_delay_ms,
            retry_max_delay_secs: &raw.retry_max_delay_secs,
            max_retry_wait_secs: &raw.max_retry_wait_secs,
            requests_per_minute: &raw.requests_per_minute,
        },
        60,
    )?;
    let allowed_extensions = match &raw.allowed_extensions {
        None => DEFAULT_EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
        Some(list) => extensions(loc, &key("allowed_extensions"), list)?,
    };
    let places = crate::sink::Places {
        target: loc.place(raw.workspace_id.span(), &key("workspace_id")),
        credential: credential_place,
    };
    Ok(SharelyConfig {
        places,
        base_url,
        workspace_id,
        organization_id,
        api_key,
        upload: raw.upload.is_none_or(Spanned::into_inner),
        allowed_extensions,
        knowledge_type,
        knowledge,
        concurrency: int(&raw.concurrency, "concurrency", 1, 64, 4)? as usize,
        calls,
    })
}
