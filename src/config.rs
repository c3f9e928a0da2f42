//! TOML configuration → typed, validated jobs.
//!
//! Every error a user can cause names the file, the line and column, and the
//! key, and is raised before anything is scanned or sent. Unknown keys are
//! rejected so that a typo does not silently fall back to a default.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{GlobSet, GlobSetBuilder};
use reqwest::Url;
use serde::Deserialize;
use toml::Spanned;

use crate::metadata::{Fact, FieldMapping, FieldSource, FieldType};
use crate::secret::SecretSource;
use crate::target::Capabilities;

/// Dify's default upload limit (UPLOAD_FILE_SIZE_LIMIT) is 15 MB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 15 * 1024 * 1024;
const DEFAULT_IGNORE_FILE: &str = ".kbsyncignore";
/// Metadata names Dify reserves for its built-in fields.
const DIFY_BUILT_IN_FIELDS: &[&str] = &[
    "document_name",
    "uploader",
    "upload_date",
    "last_update_date",
    "source",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeletePolicy {
    Delete,
    #[default]
    Disable,
    Archive,
    /// Leave the upstream item as it is; only forget it locally.
    Keep,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub state_path: PathBuf,
    pub daemon: DaemonConfig,
    pub jobs: Vec<JobConfig>,
}

impl Config {
    pub fn job_names(&self) -> Vec<String> {
        self.jobs.iter().map(|j| j.name.clone()).collect()
    }
}

/// How the long-running service batches and paces its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Quiet time after the last file event before a batch is pushed.
    pub debounce: Duration,
    /// A batch is pushed at the latest this long after its first event,
    /// even if events keep coming.
    pub max_delay: Duration,
    /// Interval of full reconciles; `None` disables them.
    pub full_reconcile: Option<Duration>,
    /// How long shutdown waits for in-flight upstream calls.
    pub shutdown_timeout: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            debounce: Duration::from_millis(1000),
            max_delay: Duration::from_secs(10),
            full_reconcile: Some(Duration::from_secs(3600)),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct JobConfig {
    pub name: String,
    pub delete_policy: DeletePolicy,
    pub source: SourceConfig,
    pub target: TargetConfig,
    pub metadata: Vec<FieldMapping>,
}

/// Where a job's items come from: exactly one per job.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    Folder(FolderConfig),
    Web(WebConfig),
}

impl JobConfig {
    pub fn folder(&self) -> Option<&FolderConfig> {
        match &self.source {
            SourceConfig::Folder(f) => Some(f),
            SourceConfig::Web(_) => None,
        }
    }

    pub fn max_file_size(&self) -> u64 {
        match &self.source {
            SourceConfig::Folder(f) => f.max_file_size,
            SourceConfig::Web(w) => w.max_file_size,
        }
    }
}

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
}

#[derive(Debug, Clone)]
pub struct FolderConfig {
    pub root: PathBuf,
    /// Empty means "everything".
    pub include: Option<GlobSet>,
    pub exclude: Option<GlobSet>,
    pub ignore_file: Option<String>,
    pub respect_gitignore: bool,
    pub include_hidden: bool,
    pub follow_symlinks: bool,
    pub max_file_size: u64,
}

#[derive(Debug, Clone)]
pub enum TargetConfig {
    Dify(DifyConfig),
    Sharely(SharelyConfig),
    Pai(PaiConfig),
}

impl TargetConfig {
    pub fn capabilities(&self) -> Capabilities {
        match self {
            TargetConfig::Dify(_) => crate::target::dify::CAPABILITIES,
            TargetConfig::Sharely(_) => crate::target::sharely::CAPABILITIES,
            TargetConfig::Pai(_) => crate::target::pai::CAPABILITIES,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            TargetConfig::Dify(_) => "dify",
            TargetConfig::Sharely(_) => "sharely",
            TargetConfig::Pai(_) => "pai",
        }
    }
}

/// Alibaba Cloud PAI dataset file metadata (AIWorkSpace API 2021-02-04).
/// kbsync does not upload to OSS/NAS: a file is expected at
/// `uri_base + key`, and kbsync keeps that record's metadata.
#[derive(Debug, Clone)]
pub struct PaiConfig {
    pub endpoint: Url,
    pub workspace_id: String,
    pub dataset_id: String,
    pub dataset_version: String,
    /// `oss://bucket/prefix/` or `nas://fsid/prefix/`, ending in `/`.
    pub uri_base: String,
    pub access_key_id: SecretSource,
    pub access_key_secret: SecretSource,
    pub batch_size: usize,
    pub timeout: Duration,
    pub retry: RetryConfig,
    pub requests_per_minute: Option<u32>,
}

/// Sharely.ai knowledge metadata. Its public API documents no upload, list
/// or delete, so kbsync mirrors metadata only, onto knowledge items the
/// config names.
#[derive(Debug, Clone)]
pub struct SharelyConfig {
    pub base_url: Url,
    pub workspace_id: String,
    pub organization_id: String,
    pub api_key: SecretSource,
    /// The knowledge items' `type` (FILE, URL, …): it must match the item.
    pub knowledge_type: String,
    /// Local key → knowledge id.
    pub knowledge: BTreeMap<String, String>,
    pub concurrency: usize,
    pub timeout: Duration,
    pub retry: RetryConfig,
    pub requests_per_minute: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct DifyConfig {
    pub base_url: Url,
    pub dataset_id: String,
    pub api_key: SecretSource,
    pub batch_size: usize,
    pub upload_concurrency: usize,
    pub timeout: Duration,
    pub retry: RetryConfig,
    /// The `data` part of create-by-file: indexing technique, process rule…
    pub create_data: serde_json::Value,
    pub indexing_wait: Duration,
    /// Requests per minute this job may send; `None`: no limit.
    pub requests_per_minute: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
pub struct RetryConfig {
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 6,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state: Option<RawState>,
    daemon: Option<RawDaemon>,
    #[serde(default)]
    sync: Vec<RawJob>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    debounce_ms: Option<Spanned<i64>>,
    max_delay_ms: Option<Spanned<i64>>,
    full_reconcile_secs: Option<Spanned<i64>>,
    shutdown_timeout_secs: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    delete_policy: Option<Spanned<DeletePolicy>>,
    folder: Option<Spanned<RawFolder>>,
    web: Option<Spanned<RawWeb>>,
    dify: Option<Spanned<RawDify>>,
    sharely: Option<Spanned<RawSharely>>,
    pai: Option<Spanned<RawPai>>,
    #[serde(default)]
    metadata: BTreeMap<Spanned<String>, Spanned<RawField>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFolder {
    root: Spanned<String>,
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    ignore_file: Option<String>,
    #[serde(default)]
    respect_gitignore: bool,
    #[serde(default)]
    include_hidden: bool,
    #[serde(default)]
    follow_symlinks: bool,
    max_file_size: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeb {
    #[serde(default)]
    urls: Vec<Spanned<String>>,
    sitemap: Option<Spanned<String>>,
    poll_interval_secs: Option<Spanned<i64>>,
    max_file_size: Option<Spanned<toml::Value>>,
    timeout_secs: Option<Spanned<i64>>,
    concurrency: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDify {
    base_url: Spanned<String>,
    dataset_id: Spanned<String>,
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
    indexing_wait_secs: Option<Spanned<i64>>,
    requests_per_minute: Option<Spanned<i64>>,
    create_data: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSharely {
    #[serde(default = "sharely_default_url")]
    base_url: Spanned<String>,
    workspace_id: Spanned<String>,
    organization_id: Spanned<String>,
    api_key: Option<Spanned<toml::Value>>,
    api_key_env: Option<Spanned<String>>,
    api_key_file: Option<Spanned<String>>,
    api_key_credential: Option<Spanned<String>>,
    #[serde(default)]
    allow_insecure_http: bool,
    knowledge_type: Option<Spanned<String>>,
    #[serde(default)]
    knowledge: BTreeMap<String, Spanned<String>>,
    concurrency: Option<Spanned<i64>>,
    timeout_secs: Option<Spanned<i64>>,
    max_retries: Option<Spanned<i64>>,
    retry_min_delay_ms: Option<Spanned<i64>>,
    retry_max_delay_secs: Option<Spanned<i64>>,
    requests_per_minute: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPai {
    region: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
    workspace_id: Spanned<String>,
    dataset_id: Spanned<String>,
    dataset_version: Option<Spanned<String>>,
    uri_base: Spanned<String>,
    access_key_id: Option<Spanned<toml::Value>>,
    access_key_id_env: Option<Spanned<String>>,
    access_key_id_file: Option<Spanned<String>>,
    access_key_id_credential: Option<Spanned<String>>,
    access_key_secret: Option<Spanned<toml::Value>>,
    access_key_secret_env: Option<Spanned<String>>,
    access_key_secret_file: Option<Spanned<String>>,
    access_key_secret_credential: Option<Spanned<String>>,
    #[serde(default)]
    allow_insecure_http: bool,
    batch_size: Option<Spanned<i64>>,
    timeout_secs: Option<Spanned<i64>>,
    max_retries: Option<Spanned<i64>>,
    retry_min_delay_ms: Option<Spanned<i64>>,
    retry_max_delay_secs: Option<Spanned<i64>>,
    requests_per_minute: Option<Spanned<i64>>,
}

fn sharely_default_url() -> Spanned<String> {
    Spanned::new(0..0, "https://api.sharely.ai".to_owned())
}

/// Sharely's knowledge types, as its API names them.
const SHARELY_TYPES: &[&str] = &[
    "URL",
    "FILE",
    "LINK",
    "STRING",
    "WEBSITE",
    "ELASTICSEARCH_INDEX",
];
/// Fields Sharely's metadata endpoint refuses to set.
const SHARELY_RESERVED_FIELDS: &[&str] = &["title", "language"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    value: Option<toml::Value>,
    path_segment: Option<i64>,
    fact: Option<Fact>,
    front_matter: Option<String>,
    #[serde(rename = "type")]
    kind: Option<FieldType>,
}

/// Turns byte spans into "line:column" and carries the file name, so each
/// validation step can say exactly where the problem is.
struct Locator<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Locator<'_> {
    fn error(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            column,
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn parse_error(&self, err: toml::de::Error) -> ConfigError {
        let span = err.span().unwrap_or(0..0);
        // toml does not report the key path, but the span points at the
        // offending key or value: show the start of that line as the key.
        let line_start = self.text[..span.start.min(self.text.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let line_text = self.text[line_start..].lines().next().unwrap_or("");
        let key = line_text
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(|c| c == '[' || c == ']');
        let key = if key.is_empty() { "(document)" } else { key };
        self.error(span, key, err.message().trim().to_owned())
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates `text` as if read from `path`; relative paths in
    /// it are resolved against the config file's folder, so the service does
    /// not depend on its working directory.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let loc = Locator { path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| loc.parse_error(e))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));

        if raw.sync.is_empty() {
            return Err(loc.error(0..0, "sync", "no [[sync]] job is defined"));
        }
        let state_path = match raw.state.and_then(|s| s.path) {
            Some(p) => base.join(p.get_ref()),
            None => match std::env::var_os("STATE_DIRECTORY") {
                // systemd's StateDirectory= may list several, colon-separated.
                Some(dirs) => {
                    let first = dirs
                        .to_string_lossy()
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    PathBuf::from(first).join("kbsync.db")
                }
                None => base.join("kbsync.db"),
            },
        };

        let daemon = match raw.daemon {
            Some(d) => validate_daemon(&loc, d)?,
            None => DaemonConfig::default(),
        };

        let mut names = HashSet::new();
        let mut jobs = Vec::new();
        for (i, job) in raw.sync.into_iter().enumerate() {
            let job = validate_job(&loc, base, i, job)?;
            jobs.push(job);
        }
        for (job, span) in &jobs {
            if !names.insert(job.name.clone()) {
                return Err(loc.error(
                    span.clone(),
                    "name",
                    format!("job name {:?} is used twice; each [[sync]] needs its own name, it keys the state", job.name),
                ));
            }
        }
        Ok(Config {
            path: path.to_owned(),
            state_path,
            daemon,
            jobs: jobs.into_iter().map(|(j, _)| j).collect(),
        })
    }
}

type Span = std::ops::Range<usize>;

/// An optional integer key within `lo..=hi`, else `default`.
fn bounded(
    loc: &Locator,
    value: &Option<Spanned<i64>>,
    key: &str,
    lo: i64,
    hi: i64,
    default: i64,
) -> Result<i64, ConfigError> {
    match value {
        None => Ok(default),
        Some(s) if (lo..=hi).contains(s.get_ref()) => Ok(*s.get_ref()),
        Some(s) => Err(loc.error(s.span(), key, format!("must be between {lo} and {hi}"))),
    }
}

fn validate_daemon(loc: &Locator, raw: RawDaemon) -> Result<DaemonConfig, ConfigError> {
    let ms = |v: i64| Duration::from_millis(v as u64);
    let secs = |v: i64| Duration::from_secs(v as u64);
    let debounce = bounded(
        loc,
        &raw.debounce_ms,
        "daemon.debounce_ms",
        0,
        600_000,
        1000,
    )?;
    let max_delay = bounded(
        loc,
        &raw.max_delay_ms,
        "daemon.max_delay_ms",
        0,
        3_600_000,
        (debounce * 10).max(10_000),
    )?;
    if max_delay < debounce {
        let span = raw.max_delay_ms.as_ref().map_or(0..0, |s| s.span());
        return Err(loc.error(
            span,
            "daemon.max_delay_ms",
            format!("must be at least debounce_ms ({debounce})"),
        ));
    }
    let full = bounded(
        loc,
        &raw.full_reconcile_secs,
        "daemon.full_reconcile_secs",
        0,
        30 * 86_400,
        3600,
    )?;
    Ok(DaemonConfig {
        debounce: ms(debounce),
        max_delay: ms(max_delay),
        full_reconcile: (full > 0).then(|| secs(full)),
        shutdown_timeout: secs(bounded(
            loc,
            &raw.shutdown_timeout_secs,
            "daemon.shutdown_timeout_secs",
            1,
            3600,
            30,
        )?),
    })
}

fn validate_job(
    loc: &Locator,
    base: &Path,
    index: usize,
    raw: RawJob,
) -> Result<(JobConfig, Span), ConfigError> {
    let name_span = raw.name.span();
    let name = raw.name.into_inner();
    let key = |k: &str| format!("sync[{index}].{k}");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(loc.error(
            name_span,
            &key("name"),
            "a job name must be non-empty and use only letters, digits, '-', '_' and '.'",
        ));
    }
    let raw_policy_span = raw.delete_policy.as_ref().map(|p| p.span());
    let source = match (raw.folder, raw.web) {
        (Some(folder), None) => {
            SourceConfig::Folder(validate_folder(loc, base, index, folder.into_inner())?)
        }
        (None, Some(web)) => SourceConfig::Web(validate_web(loc, index, web)?),
        (Some(_), Some(web)) => {
            return Err(loc.error(
                web.span(),
                &key("web"),
                format!("job {name:?} has both [sync.folder] and [sync.web]; a job has one source, so make a second [[sync]] job"),
            ))
        }
        (None, None) => {
            return Err(loc.error(
                name_span.clone(),
                &key("folder"),
                format!("job {name:?} has no source: add a [sync.folder] or [sync.web] table"),
            ))
        }
    };
    let targets = [
        raw.dify.as_ref().map(|t| t.span()),
        raw.sharely.as_ref().map(|t| t.span()),
        raw.pai.as_ref().map(|t| t.span()),
    ];
    if let Some(second) = targets.iter().flatten().nth(1) {
        return Err(loc.error(
            second.clone(),
            &key("dify"),
            format!("job {name:?} has more than one target; a job has one, so make another [[sync]] job"),
        ));
    }
    let target = if let Some(dify) = raw.dify {
        TargetConfig::Dify(validate_dify(loc, base, index, dify)?)
    } else if let Some(sharely) = raw.sharely {
        TargetConfig::Sharely(validate_sharely(loc, base, index, sharely)?)
    } else if let Some(pai) = raw.pai {
        TargetConfig::Pai(validate_pai(loc, base, index, pai)?)
    } else {
        return Err(loc.error(
            name_span.clone(),
            &key("dify"),
            format!(
                "job {name:?} has no target: add a [sync.dify], [sync.pai] or [sync.sharely] table"
            ),
        ));
    };
    let caps = target.capabilities();
    let delete_policy = match raw.delete_policy {
        Some(p) => p.into_inner(),
        // Without status changes, keeping is the only reversible choice:
        // deleting stays something to ask for.
        None if !caps.status => DeletePolicy::Keep,
        None => DeletePolicy::default(),
    };
    let unsupported = match delete_policy {
        DeletePolicy::Delete => !caps.delete,
        DeletePolicy::Disable | DeletePolicy::Archive => !caps.status,
        DeletePolicy::Keep => false,
    };
    if unsupported {
        let at = raw_policy_span.unwrap_or_else(|| name_span.clone());
        return Err(loc.error(
            at,
            &key("delete_policy"),
            format!(
                "the {} target cannot {} items (its API offers no such call); use delete_policy = \"keep\"",
                target.kind(),
                match delete_policy {
                    DeletePolicy::Delete => "delete",
                    DeletePolicy::Disable => "disable",
                    _ => "archive",
                }
            ),
        ));
    }
    if matches!(source, SourceConfig::Web(_)) && !caps.content {
        return Err(loc.error(
            name_span.clone(),
            &key("web"),
            format!("the {} target cannot take content, so there is nothing to mirror web pages into; use a [sync.folder] source mapped to existing items", target.kind()),
        ));
    }

    let mut metadata = Vec::new();
    for (field_name, spec) in raw.metadata {
        let span = field_name.span();
        let field_name = field_name.into_inner();
        let field_key = key(&format!("metadata.{field_name}"));
        if field_name.is_empty() || field_name.chars().count() > 255 {
            return Err(loc.error(
                span,
                &field_key,
                "a metadata field name must be 1 to 255 characters",
            ));
        }
        if matches!(target, TargetConfig::Sharely(_))
            && SHARELY_RESERVED_FIELDS.contains(&field_name.to_lowercase().as_str())
        {
            return Err(loc.error(
                span,
                &field_key,
                format!("{field_name:?} is reserved by Sharely ({}) and cannot be set through metadata; choose another name", SHARELY_RESERVED_FIELDS.join(", ")),
            ));
        }
        if matches!(target, TargetConfig::Dify(_))
            && DIFY_BUILT_IN_FIELDS.contains(&field_name.as_str())
        {
            return Err(loc.error(
                span,
                &field_key,
                format!("{field_name:?} is one of Dify's built-in metadata fields ({}); choose another name", DIFY_BUILT_IN_FIELDS.join(", ")),
            ));
        }
        metadata.push(validate_field(loc, &field_key, field_name, spec)?);
    }

    Ok((
        JobConfig {
            name,
            delete_policy,
            source,
            target,
            metadata,
        },
        name_span,
    ))
}

fn validate_field(
    loc: &Locator,
    key: &str,
    name: String,
    spec: Spanned<RawField>,
) -> Result<FieldMapping, ConfigError> {
    let span = spec.span();
    let raw = spec.into_inner();
    let mut sources = Vec::new();
    if let Some(v) = raw.value {
        sources.push(static_source(loc, span.clone(), key, v)?);
    }
    if let Some(i) = raw.path_segment {
        sources.push(FieldSource::PathSegment(i));
    }
    if let Some(f) = raw.fact {
        sources.push(FieldSource::Fact(f));
    }
    if let Some(k) = raw.front_matter {
        sources.push(FieldSource::FrontMatter(k));
    }
    if sources.len() != 1 {
        return Err(loc.error(
            span,
            key,
            "a metadata field needs exactly one of `value`, `path_segment`, `fact` or `front_matter`",
        ));
    }
    let source = sources.remove(0);
    let kind = raw.kind.unwrap_or_else(|| source.natural_type());
    if let FieldSource::Static(v) = &source {
        if crate::metadata::coerce(v, kind).is_none() {
            return Err(loc.error(
                span,
                key,
                format!("static value {v} cannot be used as a {kind} field"),
            ));
        }
    }
    Ok(FieldMapping { name, source, kind })
}

fn static_source(
    loc: &Locator,
    span: Span,
    key: &str,
    v: toml::Value,
) -> Result<FieldSource, ConfigError> {
    let json = match v {
        toml::Value::String(s) => serde_json::Value::String(s),
        toml::Value::Integer(i) => serde_json::Value::from(i),
        toml::Value::Float(f) => serde_json::Value::from(f),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        other => {
            return Err(loc.error(
                span,
                key,
                format!(
                    "a static metadata value must be a string, number or date, not {}",
                    other.type_str()
                ),
            ))
        }
    };
    Ok(FieldSource::Static(json))
}

fn validate_folder(
    loc: &Locator,
    base: &Path,
    index: usize,
    raw: RawFolder,
) -> Result<FolderConfig, ConfigError> {
    let key = |k: &str| format!("sync[{index}].folder.{k}");
    let root_span = raw.root.span();
    let root = base.join(raw.root.get_ref());
    if !root.is_dir() {
        return Err(loc.error(
            root_span,
            &key("root"),
            format!("{} is not a readable folder", root.display()),
        ));
    }
    // Canonical, so walked paths compare equal to the state file's path.
    let root = root.canonicalize().map_err(|e| {
        loc.error(
            root_span.clone(),
            &key("root"),
            format!("{}: {e}", root.display()),
        )
    })?;
    let include = glob_set(loc, &key("include"), &raw.include)?;
    let exclude = glob_set(loc, &key("exclude"), &raw.exclude)?;
    let max_file_size = size_limit(loc, &key("max_file_size"), &raw.max_file_size)?;
    let ignore_file = match raw.ignore_file {
        None => Some(DEFAULT_IGNORE_FILE.to_owned()),
        Some(s) if s.is_empty() => None,
        Some(s) => Some(s),
    };
    Ok(FolderConfig {
        root,
        include,
        exclude,
        ignore_file,
        respect_gitignore: raw.respect_gitignore,
        include_hidden: raw.include_hidden,
        follow_symlinks: raw.follow_symlinks,
        max_file_size,
    })
}

fn size_limit(
    loc: &Locator,
    key: &str,
    v: &Option<Spanned<toml::Value>>,
) -> Result<u64, ConfigError> {
    match v {
        None => Ok(DEFAULT_MAX_FILE_SIZE),
        Some(v) => parse_size(v.get_ref()).ok_or_else(|| {
            loc.error(
                v.span(),
                key,
                "expected a positive size in bytes, or a string such as \"15MB\" or \"512KiB\"",
            )
        }),
    }
}

fn validate_web(
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
    })
}

fn glob_set(
    loc: &Locator,
    key: &str,
    globs: &[Spanned<String>],
) -> Result<Option<GlobSet>, ConfigError> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for g in globs {
        let glob = globset::GlobBuilder::new(g.get_ref())
            .literal_separator(true)
            .build()
            .map_err(|e| loc.error(g.span(), key, format!("bad glob: {e}")))?;
        builder.add(glob);
    }
    builder
        .build()
        .map(Some)
        .map_err(|e| loc.error(globs[0].span(), key, e.to_string()))
}

/// Accepts `1048576`, `"15MB"`, `"512 KiB"`, `"1G"`; decimal and binary units.
pub fn parse_size(v: &toml::Value) -> Option<u64> {
    match v {
        toml::Value::Integer(i) if *i > 0 => Some(*i as u64),
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: u64 = num.parse().ok()?;
            let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "k" | "kb" => 1_000,
                "kib" => 1 << 10,
                "m" | "mb" => 1_000_000,
                "mib" => 1 << 20,
                "g" | "gb" => 1_000_000_000,
                "gib" => 1 << 30,
                _ => return None,
            };
            n.checked_mul(mult).filter(|&b| b > 0)
        }
        _ => None,
    }
}

fn validate_dify(
    loc: &Locator,
    base: &Path,
    index: usize,
    raw: Spanned<RawDify>,
) -> Result<DifyConfig, ConfigError> {
    let table_span = raw.span();
    let raw = raw.into_inner();
    let key = |k: &str| format!("sync[{index}].dify.{k}");

    let api_key = key_source(
        loc,
        base,
        &key,
        table_span.clone(),
        KeyFields {
            name: "api_key",
            inline: &raw.api_key,
            env: &raw.api_key_env,
            file: &raw.api_key_file,
            credential: &raw.api_key_credential,
        },
    )?;
    let base_url = https_url(loc, &key, &raw.base_url, raw.allow_insecure_http)?;

    let dataset_id = plain_id(
        loc,
        &key("dataset_id"),
        &raw.dataset_id,
        "expected the knowledge base (dataset) id, e.g. the UUID in its URL",
    )?;

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
            requests_per_minute: &raw.requests_per_minute,
        },
        120,
    )?;
    let create_data = match raw.create_data {
        Some(t) => serde_json::to_value(t)
            .map_err(|e| loc.error(table_span.clone(), &key("create_data"), e.to_string()))?,
        None => serde_json::json!({
            "indexing_technique": "high_quality",
            "process_rule": { "mode": "automatic" }
        }),
    };
    Ok(DifyConfig {
        base_url,
        dataset_id,
        api_key,
        batch_size: int(&raw.batch_size, "batch_size", 1, 1000, 100)? as usize,
        upload_concurrency: int(&raw.upload_concurrency, "upload_concurrency", 1, 64, 4)? as usize,
        timeout: calls.timeout,
        retry: calls.retry,
        create_data,
        indexing_wait: Duration::from_secs(int(
            &raw.indexing_wait_secs,
            "indexing_wait_secs",
            0,
            86_400,
            600,
        )? as u64),
        requests_per_minute: calls.requests_per_minute,
    })
}

struct KeyFields<'a> {
    /// The settings' stem: `api_key` → `api_key_env`, `api_key_file`, …
    name: &'a str,
    inline: &'a Option<Spanned<toml::Value>>,
    env: &'a Option<Spanned<String>>,
    file: &'a Option<Spanned<String>>,
    credential: &'a Option<Spanned<String>>,
}

/// Where a target's secret comes from: exactly one of env, file,
/// credential; never inline.
fn key_source(
    loc: &Locator,
    base: &Path,
    key: &dyn Fn(&str) -> String,
    table_span: std::ops::Range<usize>,
    f: KeyFields,
) -> Result<SecretSource, ConfigError> {
    let n = f.name;
    if let Some(inline) = f.inline {
        return Err(loc.error(
            inline.span(),
            &key(n),
            format!("secrets are not accepted inline in the config file (it is readable by more than the service and ends up in backups); use {n}_env = \"VAR\", {n}_file = \"/path\" or {n}_credential = \"name\" (systemd LoadCredential=)"),
        ));
    }
    let mut sources = Vec::new();
    if let Some(v) = f.env {
        sources.push(SecretSource::Env(v.get_ref().clone()));
    }
    if let Some(v) = f.file {
        sources.push(SecretSource::File(base.join(v.get_ref())));
    }
    if let Some(v) = f.credential {
        sources.push(SecretSource::Credential(v.get_ref().clone()));
    }
    if sources.len() != 1 {
        return Err(loc.error(
            table_span,
            &key(&format!("{n}_env")),
            format!("set exactly one of {n}_env, {n}_file or {n}_credential"),
        ));
    }
    Ok(sources.remove(0))
}

/// An https URL, or plain http to loopback or when explicitly allowed. Its
/// path ends in `/`: joining relative paths onto ".../v1" would drop "v1"
/// otherwise.
fn https_url(
    loc: &Locator,
    key: &dyn Fn(&str) -> String,
    raw: &Spanned<String>,
    allow_insecure_http: bool,
) -> Result<Url, ConfigError> {
    let span = raw.span();
    let mut url = Url::parse(raw.get_ref())
        .map_err(|e| loc.error(span.clone(), &key("base_url"), format!("not a URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure_http || is_loopback(&url) => {}
        "http" => {
            return Err(loc.error(
                span,
                &key("base_url"),
                "plain http would send the API key in clear text; use https, or set allow_insecure_http = true if the network is trusted",
            ))
        }
        other => {
            return Err(loc.error(
                span,
                &key("base_url"),
                format!("unsupported scheme {other:?}; use https"),
            ))
        }
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

/// An upstream id: non-empty, and no `/` (it goes into URL paths).
fn plain_id(
    loc: &Locator,
    key: &str,
    v: &Spanned<String>,
    message: &str,
) -> Result<String, ConfigError> {
    let t = v.get_ref().trim();
    if t.is_empty() || t.contains('/') {
        Err(loc.error(v.span(), key, message))
    } else {
        Ok(t.to_owned())
    }
}

/// The call settings every target has.
struct RawCalls<'a> {
    timeout_secs: &'a Option<Spanned<i64>>,
    max_retries: &'a Option<Spanned<i64>>,
    retry_min_delay_ms: &'a Option<Spanned<i64>>,
    retry_max_delay_secs: &'a Option<Spanned<i64>>,
    requests_per_minute: &'a Option<Spanned<i64>>,
}

struct Calls {
    timeout: Duration,
    retry: RetryConfig,
    requests_per_minute: Option<u32>,
}

fn calls(
    loc: &Locator,
    key: &dyn Fn(&str) -> String,
    raw: RawCalls,
    default_timeout_secs: i64,
) -> Result<Calls, ConfigError> {
    let int = |v: &Option<Spanned<i64>>, name: &str, lo: i64, hi: i64, default: i64| {
        bounded(loc, v, &key(name), lo, hi, default)
    };
    let defaults = RetryConfig::default();
    Ok(Calls {
        timeout: Duration::from_secs(int(
            raw.timeout_secs,
            "timeout_secs",
            1,
            3600,
            default_timeout_secs,
        )? as u64),
        retry: RetryConfig {
            max_retries: int(
                raw.max_retries,
                "max_retries",
                0,
                100,
                defaults.max_retries as i64,
            )? as usize,
            min_delay: Duration::from_millis(int(
                raw.retry_min_delay_ms,
                "retry_min_delay_ms",
                1,
                600_000,
                defaults.min_delay.as_millis() as i64,
            )? as u64),
            max_delay: Duration::from_secs(int(
                raw.retry_max_delay_secs,
                "retry_max_delay_secs",
                1,
                3600,
                defaults.max_delay.as_secs() as i64,
            )? as u64),
        },
        requests_per_minute: match raw.requests_per_minute {
            None => None,
            v => Some(int(v, "requests_per_minute", 1, 1_000_000, 0)? as u32),
        },
    })
}

fn validate_sharely(
    loc: &Locator,
    base: &Path,
    index: usize,
    raw: Spanned<RawSharely>,
) -> Result<SharelyConfig, ConfigError> {
    let table_span = raw.span();
    let raw = raw.into_inner();
    let key = |k: &str| format!("sync[{index}].sharely.{k}");
    let api_key = key_source(
        loc,
        base,
        &key,
        table_span.clone(),
        KeyFields {
            name: "api_key",
            inline: &raw.api_key,
            env: &raw.api_key_env,
            file: &raw.api_key_file,
            credential: &raw.api_key_credential,
        },
    )?;
    let base_url = https_url(loc, &key, &raw.base_url, raw.allow_insecure_http)?;
    let id =
        |v: &Spanned<String>, name: &str| plain_id(loc, &key(name), v, "expected an id (a UUID)");
    let workspace_id = id(&raw.workspace_id, "workspace_id")?;
    let organization_id = id(&raw.organization_id, "organization_id")?;
    let knowledge_type = match &raw.knowledge_type {
        None => "FILE".to_owned(),
        Some(t) if SHARELY_TYPES.contains(&t.get_ref().as_str()) => t.get_ref().clone(),
        Some(t) => {
            return Err(loc.error(
                t.span(),
                &key("knowledge_type"),
                format!("expected one of {}", SHARELY_TYPES.join(", ")),
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
            requests_per_minute: &raw.requests_per_minute,
        },
        60,
    )?;
    Ok(SharelyConfig {
        base_url,
        workspace_id,
        organization_id,
        api_key,
        knowledge_type,
        knowledge,
        concurrency: int(&raw.concurrency, "concurrency", 1, 64, 4)? as usize,
        timeout: calls.timeout,
        retry: calls.retry,
        requests_per_minute: calls.requests_per_minute,
    })
}

fn validate_pai(
    loc: &Locator,
    base: &Path,
    index: usize,
    raw: Spanned<RawPai>,
) -> Result<PaiConfig, ConfigError> {
    let table_span = raw.span();
    let raw = raw.into_inner();
    let key = |k: &str| format!("sync[{index}].pai.{k}");
    let access_key_id = key_source(
        loc,
        base,
        &key,
        table_span.clone(),
        KeyFields {
            name: "access_key_id",
            inline: &raw.access_key_id,
            env: &raw.access_key_id_env,
            file: &raw.access_key_id_file,
            credential: &raw.access_key_id_credential,
        },
    )?;
    let access_key_secret = key_source(
        loc,
        base,
        &key,
        table_span.clone(),
        KeyFields {
            name: "access_key_secret",
            inline: &raw.access_key_secret,
            env: &raw.access_key_secret_env,
            file: &raw.access_key_secret_file,
            credential: &raw.access_key_secret_credential,
        },
    )?;
    let endpoint_text = match (&raw.endpoint, &raw.region) {
        (Some(e), _) => e.clone(),
        (None, Some(r)) => {
            let region = r.get_ref().trim();
            let valid = !region.is_empty()
                && region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid {
                return Err(loc.error(
                    r.span(),
                    &key("region"),
                    "expected a region id such as \"cn-hangzhou\"",
                ));
            }
            Spanned::new(
                r.span(),
                format!("https://aiworkspace.{region}.aliyuncs.com"),
            )
        }
        (None, None) => {
            return Err(loc.error(
                table_span,
                &key("region"),
                "set region (e.g. \"cn-hangzhou\") or endpoint",
            ))
        }
    };
    let endpoint = https_url(loc, &key, &endpoint_text, raw.allow_insecure_http)?;
    let id = |v: &Spanned<String>, name: &str| plain_id(loc, &key(name), v, "expected an id");
    let workspace_id = id(&raw.workspace_id, "workspace_id")?;
    let dataset_id = id(&raw.dataset_id, "dataset_id")?;
    let dataset_version = match &raw.dataset_version {
        Some(v) => id(v, "dataset_version")?,
        None => "v1".to_owned(),
    };
    let uri_base = raw.uri_base.get_ref().trim().to_owned();
    let scheme_ok = ["oss://", "nas://"]
        .iter()
        .any(|p| uri_base.len() > p.len() && uri_base.starts_with(p));
    if !scheme_ok || !uri_base.ends_with('/') {
        return Err(loc.error(
            raw.uri_base.span(),
            &key("uri_base"),
            "expected the dataset location the folder corresponds to, as oss://bucket/prefix/ or nas://filesystem-id/prefix/ (ending in '/')",
        ));
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
            requests_per_minute: &raw.requests_per_minute,
        },
        60,
    )?;
    Ok(PaiConfig {
        endpoint,
        workspace_id,
        dataset_id,
        dataset_version,
        uri_base,
        access_key_id,
        access_key_secret,
        batch_size: int(&raw.batch_size, "batch_size", 1, 1000, 100)? as usize,
        timeout: calls.timeout,
        retry: calls.retry,
        requests_per_minute: calls.requests_per_minute,
    })
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}
