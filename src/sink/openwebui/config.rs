//! The `[sync.openwebui]` section.

use reqwest::Url;
use serde::Deserialize;
use toml::Spanned;

use crate::config::section::{key_fields, raw_calls, Calls, Section};
use crate::config::ConfigError;
use crate::secret::SecretSource;

/// An Open WebUI knowledge base: files are uploaded into it, each
/// carrying its path and its metadata, replaced by a new upload when they
/// change and removed under `delete_policy = "delete"`.
#[derive(Debug, Clone)]
pub struct OpenWebUiConfig {
    /// The server's root (`https://chat.example.com/`); calls go to
    /// `api/v1/…` under it.
    pub base_url: Url,
    pub knowledge_id: String,
    pub api_key: SecretSource,
    /// Extensions uploaded; other files are skipped before any request
    /// (the server answers 200 to an image, then fails processing it).
    pub allowed_extensions: Vec<String>,
    /// Uploads in flight at once: the server starts processing each at
    /// once, with no queue of its own.
    pub concurrency: usize,
    /// How long one file may take to process before the upload is left
    /// to a later pass.
    pub processing_timeout: std::time::Duration,
    pub calls: Calls,
    pub places: crate::sink::Places,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOpenWebUi {
    base_url: Spanned<String>,
    knowledge_id: Spanned<String>,
    api_key: Option<Spanned<toml::Value>>,
    api_key_env: Option<Spanned<String>>,
    api_key_file: Option<Spanned<String>>,
    api_key_credential: Option<Spanned<String>>,
    #[serde(default)]
    allow_insecure_http: bool,
    allowed_extensions: Option<Spanned<Vec<String>>>,
    concurrency: Option<Spanned<i64>>,
    processing_timeout_secs: Option<Spanned<i64>>,
    timeout_secs: Option<Spanned<i64>>,
    max_retries: Option<Spanned<i64>>,
    retry_min_delay_ms: Option<Spanned<i64>>,
    retry_max_delay_secs: Option<Spanned<i64>>,
    max_retry_wait_secs: Option<Spanned<i64>>,
    requests_per_minute: Option<Spanned<i64>>,
}

/// Text and office documents, which Open WebUI's default loaders extract
/// text from. Images fail processing ("not supported"), and other binaries
/// would be indexed as garbage.
pub const DEFAULT_EXTENSIONS: &[&str] = &[
    "md", "markdown", "mdx", "txt", "rst", "html", "htm", "csv", "json", "xml", "yaml", "yml",
    "pdf", "docx", "pptx", "xlsx", "epub",
];

/// Upload metadata keys the server acts on or overwrites (`name` and
/// `source` become the file name in every chunk), the ones it drops, and
/// kbsync's own: a mapping onto any of them is refused at load.
pub const RESERVED_FIELDS: &[&str] = &[
    "knowledge_id",
    "directory_id",
    "file_hash",
    "channel_id",
    "name",
    "source",
    "content",
    "pages",
    "tables",
    "paragraphs",
    "sections",
    "figures",
    "documents",
    "keyvaluepairs",
    "styles",
    "languages",
    super::PATH_FIELD,
];

pub fn validate(s: &Section, raw: RawOpenWebUi) -> Result<OpenWebUiConfig, ConfigError> {
    let (api_key, credential) = s.secret(key_fields!(raw.api_key))?;
    let base_url = s.url(&raw.base_url, raw.allow_insecure_http)?;
    let knowledge_id = s.id(
        &raw.knowledge_id,
        "knowledge_id",
        "expected the knowledge base's id (a UUID, from its URL in Open WebUI: /workspace/knowledge/<id>)",
    )?;
    let timeout = s.int(
        &raw.processing_timeout_secs,
        "processing_timeout_secs",
        1..=86_400,
        600,
    )?;
    Ok(OpenWebUiConfig {
        calls: s.calls(raw_calls!(raw), 120)?,
        allowed_extensions: s.extensions(
            "allowed_extensions",
            &raw.allowed_extensions,
            DEFAULT_EXTENSIONS,
        )?,
        concurrency: s.int(&raw.concurrency, "concurrency", 1..=32, 4)? as usize,
        processing_timeout: std::time::Duration::from_secs(timeout as u64),
        places: s.places(&raw.knowledge_id, "knowledge_id", credential),
        base_url,
        knowledge_id,
        api_key,
    })
}
