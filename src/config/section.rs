//! What every upstream section shares: where its secret comes from (never
//! inline), its base URL (https, or plain http to loopback or when
//! allowed), ids that go into URL paths, and the call settings (timeout,
//! retries, rate). Each sink validates its own section through a
//! `Section`, which reads these settings alike for all.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use reqwest::Url;
use toml::Spanned;

use super::locate::{bounded, Locator, Span};
use super::ConfigError;
use crate::secret::SecretSource;
use crate::sink::Places;

/// A sink section being validated: where it stands in the file, how its
/// keys are spelled in errors (`sync[N].KIND.key`), and the readers of the
/// settings every section has.
pub struct Section<'a> {
    loc: &'a Locator<'a>,
    /// Relative paths in the section resolve against it.
    base: &'a Path,
    /// `sync[N].KIND`.
    prefix: String,
    /// The whole table: a setting that is missing is reported there.
    span: Span,
}

/// The four settings of one secret, `api_key` → `api_key`, `api_key_env`,
/// `api_key_file`, `api_key_credential`.
pub struct KeyFields<'a> {
    /// The settings' stem: `api_key` → `api_key_env`, `api_key_file`, …
    pub name: &'a str,
    pub inline: &'a Option<Spanned<toml::Value>>,
    pub env: &'a Option<Spanned<String>>,
    pub file: &'a Option<Spanned<String>>,
    pub credential: &'a Option<Spanned<String>>,
}

/// `KeyFields` of a raw section's fields `stem`, `stem_env`, … (`api_key`
/// alone names the usual four).
macro_rules! key_fields {
    ($raw:ident . api_key) => {
        $crate::config::section::key_fields!(
            $raw.api_key,
            api_key_env,
            api_key_file,
            api_key_credential
        )
    };
    ($raw:ident . $stem:ident, $env:ident, $file:ident, $credential:ident) => {
        $crate::config::section::KeyFields {
            name: stringify!($stem),
            inline: &$raw.$stem,
            env: &$raw.$env,
            file: &$raw.$file,
            credential: &$raw.$credential,
        }
    };
}
pub(crate) use key_fields;

/// The call settings of a raw section: every sink spells them alike.
macro_rules! raw_calls {
    ($raw:ident) => {
        $crate::config::section::RawCalls {
            timeout_secs: &$raw.timeout_secs,
            max_retries: &$raw.max_retries,
            retry_min_delay_ms: &$raw.retry_min_delay_ms,
            retry_max_delay_secs: &$raw.retry_max_delay_secs,
            max_retry_wait_secs: &$raw.max_retry_wait_secs,
            requests_per_minute: &$raw.requests_per_minute,
        }
    };
}
pub(crate) use raw_calls;

impl<'a> Section<'a> {
    /// The section `[sync.KIND]` of job number `index`, spanning `span`.
    pub fn new(loc: &'a Locator<'a>, base: &'a Path, index: usize, kind: &str, span: Span) -> Self {
        Section {
            loc,
            base,
            prefix: format!("sync[{index}].{kind}"),
            span,
        }
    }

    /// A section outside the jobs, spelled `prefix` in errors
    /// (`daemon.notify`).
    pub fn named(loc: &'a Locator<'a>, base: &'a Path, prefix: &str, span: Span) -> Self {
        Section {
            loc,
            base,
            prefix: prefix.to_owned(),
            span,
        }
    }

    /// The full name of the section's setting `name`, as errors spell it.
    pub fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }

    /// Where the setting `name` (at `span`) is: "file:line:column: `key`".
    pub fn place_of(&self, span: Span, name: &str) -> String {
        self.loc.place(span, &self.key(name))
    }

    /// The whole table's span.
    pub fn span(&self) -> Span {
        self.span.clone()
    }

    /// The folder relative paths resolve against.
    pub fn base(&self) -> &Path {
        self.base
    }

    /// An error about the setting `name`, at `span`.
    pub fn error(&self, span: Span, name: &str, message: impl Into<String>) -> ConfigError {
        self.loc.error(span, &self.key(name), message)
    }

    /// An error about the setting `name` that the table lacks or that has
    /// no place of its own.
    pub fn table_error(&self, name: &str, message: impl Into<String>) -> ConfigError {
        self.error(self.span.clone(), name, message)
    }

    /// The optional integer `name` within `range`, else `default`.
    pub fn int(
        &self,
        v: &Option<Spanned<i64>>,
        name: &str,
        range: RangeInclusive<i64>,
        default: i64,
    ) -> Result<i64, ConfigError> {
        let (lo, hi) = range.into_inner();
        bounded(self.loc, v, &self.key(name), lo, hi, default)
    }

    /// Where the setting `name` (at `v`) is, for errors found later.
    pub fn places(&self, v: &Spanned<String>, name: &str, credential: String) -> Places {
        Places {
            target: self.loc.place(v.span(), &self.key(name)),
            credential,
        }
    }

    /// Where a secret comes from: exactly one of env, file, credential;
    /// never inline. With it, where that setting is (see `key_place`), for
    /// errors an upstream's refusal of the key gives later.
    pub fn secret(&self, f: KeyFields) -> Result<(SecretSource, String), ConfigError> {
        let place = self.key_place(&f);
        Ok((self.key_source(f)?, place))
    }

    fn key_source(&self, f: KeyFields) -> Result<SecretSource, ConfigError> {
        let n = f.name;
        if let Some(inline) = f.inline {
            return Err(self.error(
                inline.span(),
                n,
                format!("secrets are not accepted inline in the config file (it is readable by more than the service and ends up in backups); use {n}_env = \"VAR\", {n}_file = \"/path\" or {n}_credential = \"name\" (systemd LoadCredential=)"),
            ));
        }
        let mut sources = Vec::new();
        if let Some(v) = f.env {
            let name = v.get_ref();
            let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                // Not echoed: what is not a name may be the key itself.
                return Err(self.error(
                    v.span(),
                    &format!("{n}_env"),
                    "expected the name of an environment variable (letters, digits and _, not starting with a digit) that holds the key",
                ));
            }
            sources.push(SecretSource::Env(name.clone()));
        }
        if let Some(v) = f.file {
            sources.push(SecretSource::File(self.base.join(v.get_ref())));
        }
        if let Some(v) = f.credential {
            sources.push(SecretSource::Credential(v.get_ref().clone()));
        }
        if sources.len() != 1 {
            return Err(self.table_error(
                &format!("{n}_env"),
                format!("set exactly one of {n}_env, {n}_file or {n}_credential"),
            ));
        }
        Ok(sources.remove(0))
    }

    /// Where the one key setting of `f` is.
    fn key_place(&self, f: &KeyFields) -> String {
        let n = f.name;
        [
            ("env", f.env),
            ("file", f.file),
            ("credential", f.credential),
        ]
        .into_iter()
        .find_map(|(suffix, v)| {
            v.as_ref().map(|v| {
                self.loc
                    .place(v.span(), &self.key(&format!("{n}_{suffix}")))
            })
        })
        .unwrap_or_else(|| self.loc.place(self.span.clone(), &self.key(n)))
    }

    /// An https URL, or plain http to loopback or when explicitly allowed.
    /// Its path ends in `/`: joining relative paths onto ".../v1" would
    /// drop "v1" otherwise. Errors name `base_url`.
    pub fn url(
        &self,
        raw: &Spanned<String>,
        allow_insecure_http: bool,
    ) -> Result<Url, ConfigError> {
        self.url_named(raw, "base_url", allow_insecure_http)
    }

    /// `url`'s rule for the setting `name` (a source's `endpoint`).
    pub fn url_named(
        &self,
        raw: &Spanned<String>,
        name: &str,
        allow_insecure_http: bool,
    ) -> Result<Url, ConfigError> {
        let span = raw.span();
        let mut url = Url::parse(raw.get_ref())
            .map_err(|e| self.error(span.clone(), name, format!("not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_insecure_http || is_loopback(&url) => {}
            "http" => {
                return Err(self.error(
                    span,
                    name,
                    "plain http would send the API key in clear text; use https, or set allow_insecure_http = true if the network is trusted",
                ))
            }
            other => {
                return Err(self.error(
                    span,
                    name,
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
    pub fn id(
        &self,
        v: &Spanned<String>,
        name: &str,
        message: &str,
    ) -> Result<String, ConfigError> {
        let t = v.get_ref().trim();
        if t.is_empty() || t.contains('/') {
            Err(self.error(v.span(), name, message))
        } else {
            Ok(t.to_owned())
        }
    }

    /// The call settings, with the sink's default timeout.
    pub fn calls(&self, raw: RawCalls, default_timeout_secs: i64) -> Result<Calls, ConfigError> {
        let int = |v: &Option<Spanned<i64>>, name: &str, lo: i64, hi: i64, default: i64| {
            self.int(v, name, lo..=hi, default)
        };
        let secs = |v: &Option<Spanned<i64>>, name: &str, hi: i64, default: Duration| {
            int(v, name, 1, hi, default.as_secs() as i64).map(|s| Duration::from_secs(s as u64))
        };
        let defaults = RetryConfig::default();
        Ok(Calls {
            timeout: secs(
                raw.timeout_secs,
                "timeout_secs",
                3600,
                Duration::from_secs(default_timeout_secs as u64),
            )?,
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
                max_delay: secs(
                    raw.retry_max_delay_secs,
                    "retry_max_delay_secs",
                    3600,
                    defaults.max_delay,
                )?,
                max_wait: secs(
                    raw.max_retry_wait_secs,
                    "max_retry_wait_secs",
                    86_400,
                    defaults.max_wait,
                )?,
            },
            requests_per_minute: match raw.requests_per_minute {
                None => None,
                v => Some(int(v, "requests_per_minute", 1, 1_000_000, 0)? as u32),
            },
        })
    }

    /// A list of file extensions (`["md", ".PDF"]` → `md`, `pdf`), or
    /// `default` when the setting `name` is absent.
    pub fn extensions(
        &self,
        name: &str,
        list: &Option<Spanned<Vec<String>>>,
        default: &[&str],
    ) -> Result<Vec<String>, ConfigError> {
        let Some(list) = list else {
            return Ok(default.iter().map(|e| (*e).to_owned()).collect());
        };
        let mut out = Vec::new();
        for e in list.get_ref() {
            let e = e.trim().trim_start_matches('.').to_ascii_lowercase();
            if e.is_empty() || !e.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(self.error(
                    list.span(),
                    name,
                    "expected extensions such as [\"md\", \"pdf\"] (letters and digits)",
                ));
            }
            out.push(e);
        }
        Ok(out)
    }
}

/// The call settings every target has.
pub struct RawCalls<'a> {
    pub timeout_secs: &'a Option<Spanned<i64>>,
    pub max_retries: &'a Option<Spanned<i64>>,
    pub retry_min_delay_ms: &'a Option<Spanned<i64>>,
    pub retry_max_delay_secs: &'a Option<Spanned<i64>>,
    pub max_retry_wait_secs: &'a Option<Spanned<i64>>,
    pub requests_per_minute: &'a Option<Spanned<i64>>,
}

/// How a sink calls its upstream.
#[derive(Debug, Clone, Copy)]
pub struct Calls {
    pub timeout: Duration,
    pub retry: RetryConfig,
    pub requests_per_minute: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
pub struct RetryConfig {
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// What one call may wait in all between its attempts (`Retry-After`
    /// included): past it the call fails transiently and the pass moves
    /// on, so a long `Retry-After` cannot hold a pass for `max_retries`
    /// times its length.
    pub max_wait: Duration,
}

/// A Retry-After beyond this is treated as this: a pass should not hang.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(900);

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 6,
            min_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            // One `Retry-After` at its cap.
            max_wait: MAX_RETRY_AFTER,
        }
    }
}

pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}
