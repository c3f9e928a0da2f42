//! The `[sync.dify]` section.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use toml::Spanned;

use crate::config::section::{key_fields, raw_calls, Calls, Section};
use crate::config::ConfigError;
use crate::secret::SecretSource;

/// What a default Dify takes (its DOCUMENT_EXTENSIONS with the built-in
/// extractor); a server with Unstructured takes more: widen the list then.
pub const DEFAULT_EXTENSIONS: &[&str] = &[
    "txt",
    "markdown",
    "md",
    "mdx",
    "pdf",
    "html",
    "htm",
    "xlsx",
    "xls",
    "docx",
    "csv",
    "vtt",
    "properties",
];

/// Metadata names Dify reserves for its built-in fields.
pub const BUILT_IN_FIELDS: &[&str] = &[
    "document_name",
    "uploader",
    "upload_date",
    "last_update_date",
    "source",
];

#[derive(Debug, Clone)]
pub struct DifyConfig {
    pub base_url: Url,
    pub dataset_id: String,
    /// Put before every key in document names, so that several jobs can
    /// share a dataset without taking each other's documents.
    pub name_prefix: String,
    /// File extensions (lower case, no dot) the server takes; other files
    /// are reported as skipped before any upload.
    pub allowed_extensions: Vec<String>,
    /// Extensions of text files sent as plain text: the document is named
    /// `<key>.txt`, which Dify takes.
    pub send_as_text: Vec<String>,
    pub api_key: SecretSource,
    pub batch_size: usize,
    pub upload_concurrency: usize,
    /// Timeout, retries, rate.
    pub calls: Calls,
    /// The `data` part of create-by-file: indexing technique, process rule…
    pub create_data: serde_json::Value,
    pub indexing_wait: Duration,
    pub places: crate::sink::Places,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDify {
    base_url: Spanned<String>,
    dataset_id: Spanned<String>,
    name_prefix: Option<Spanned<String>>,
    allowed_extensions: Option<Spanned<Vec<String>>>,
    send_as_text: Option<Spanned<Vec<String>>>,
    api_key: Option<Spanned<toml::Value>>,
    api_key_env: Option<Spanned<String>>,
    api_key_file: Option<Spanned<String>>,
    api_key_credential: Option<Spanned<String>>,
    #[serde(default)]
    allow_insecure_http: bool,
    batch_size: Option<Spanned<i64>>,
    upload_concurrency: Option<Spanned<i64>>,
    timeout_secs: Option<Spanned<i64>>,
    max_retries: Option<Spanned<i64>>,
    retry_min_delay_ms: Option<Spanned<i64>>,
    retry_max_delay_secs: Option<Spanned<i64>>,
    max_retry_wait_secs: Option<Spanned<i64>>,
    indexing_wait_secs: Option<Spanned<i64>>,
    requests_per_minute: Option<Spanned<i64>>,
    create_data: Option<toml::Table>,
}

pub fn validate(s: &Section, raw: RawDify) -> Result<DifyConfig, ConfigError> {
    let (api_key, credential) = s.secret(key_fields!(raw.api_key))?;
    let base_url = s.url(&raw.base_url, raw.allow_insecure_http)?;
    let dataset_id = s.id(
        &raw.dataset_id,
        "dataset_id",
        "expected the knowledge base (dataset) id, e.g. the UUID in its URL",
    )?;
    let calls = s.calls(raw_calls!(raw), 120)?;
    let create_data = match raw.create_data {
        Some(t) => {
            serde_json::to_value(t).map_err(|e| s.table_error("create_data", e.to_string()))?
        }
        None => serde_json::json!({
            "indexing_technique": "high_quality",
            "process_rule": { "mode": "automatic" }
        }),
    };
    let name_prefix = match &raw.name_prefix {
        None => String::new(),
        Some(p) if p.get_ref().trim().is_empty() || p.get_ref().chars().count() > 50 => {
            return Err(s.error(
                p.span(),
                "name_prefix",
                "expected a short prefix for this job's document names, e.g. \"handbook/\" (1 to 50 characters)",
            ))
        }
        Some(p) => p.get_ref().clone(),
    };
    // Checked in the order of the fields: the first problem is reported.
    Ok(DifyConfig {
        allowed_extensions: s.extensions(
            "allowed_extensions",
            &raw.allowed_extensions,
            DEFAULT_EXTENSIONS,
        )?,
        send_as_text: s.extensions("send_as_text", &raw.send_as_text, &[])?,
        batch_size: s.int(&raw.batch_size, "batch_size", 1..=1000, 100)? as usize,
        upload_concurrency: s.int(&raw.upload_concurrency, "upload_concurrency", 1..=64, 4)?
            as usize,
        indexing_wait: Duration::from_secs(s.int(
            &raw.indexing_wait_secs,
            "indexing_wait_secs",
            0..=86_400,
            600,
        )? as u64),
        places: s.places(&raw.dataset_id, "dataset_id", credential),
        api_key,
        base_url,
        dataset_id,
        calls,
        create_data,
        name_prefix,
    })
}

impl DifyConfig {
    /// The document name of `key` in this job's namespace; a file sent as
    /// text gets `.txt` after its own extension (`notes.rst.txt`).
    pub fn document_name(&self, key: &str) -> String {
        let suffix = if self.as_text(key) { ".txt" } else { "" };
        super::name::document_name(&format!("{}{key}{suffix}", self.name_prefix))
    }

    /// Whether `key` goes up as plain text (`send_as_text`).
    pub fn as_text(&self, key: &str) -> bool {
        let ext = crate::sink::extension(key);
        !self.allowed_extensions.contains(&ext) && self.send_as_text.contains(&ext)
    }
}
