//! The `[sync.s3]` section: a bucket (and a prefix in it), where it is
//! served, the credentials that read it, and what of it to mirror.

use std::time::Duration;

use globset::{GlobSet, GlobSetBuilder};
use reqwest::Url;
use serde::Deserialize;
use toml::Spanned;

use crate::config::section::{key_fields, Section};
use crate::config::size::size_limit;
use crate::config::ConfigError;
use crate::secret::SecretSource;
use crate::source::registry::At;

/// An S3 bucket (or S3-compatible: MinIO, R2, Ceph, SeaweedFS), polled.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Keys are the objects' paths below it; it ends in `/` (or is empty).
    pub prefix: String,
    pub region: String,
    /// `None`: AWS's own endpoint for the region.
    pub endpoint: Option<Url>,
    /// `https://host/bucket/key` rather than `https://bucket.host/key`.
    pub path_style: bool,
    /// `None`: anonymous (a public bucket), requests are not signed.
    pub credentials: Option<Credentials>,
    pub poll_interval: Duration,
    pub filter: Filter,
    pub max_file_size: u64,
    /// Where the settings are, for messages about what the server said.
    pub places: Places,
}

/// Where the two halves of a key pair come from (never the values).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key_id: SecretSource,
    pub secret_access_key: SecretSource,
}

/// "file:line:column: `key`" of the settings a server's refusal is about.
#[derive(Debug, Clone)]
pub struct Places {
    pub bucket: String,
    /// The access key setting, or `anonymous`.
    pub credential: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3 {
    bucket: Spanned<String>,
    #[serde(default)]
    prefix: String,
    region: Option<String>,
    endpoint: Option<Spanned<String>>,
    path_style: Option<bool>,
    #[serde(default)]
    allow_insecure_http: bool,
    access_key_id: Option<Spanned<toml::Value>>,
    access_key_id_env: Option<Spanned<String>>,
    access_key_id_file: Option<Spanned<String>>,
    access_key_id_credential: Option<Spanned<String>>,
    secret_access_key: Option<Spanned<toml::Value>>,
    secret_access_key_env: Option<Spanned<String>>,
    secret_access_key_file: Option<Spanned<String>>,
    secret_access_key_credential: Option<Spanned<String>>,
    anonymous: Option<Spanned<bool>>,
    poll_interval_secs: Option<Spanned<i64>>,
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    max_file_size: Option<Spanned<toml::Value>>,
}

pub fn validate(at: &At, raw: Spanned<RawS3>) -> Result<S3Config, ConfigError> {
    let s = Section::new(at.loc, at.base, at.index, "s3", raw.span());
    let raw = raw.into_inner();
    let bucket = bucket_name(&s, &raw.bucket)?;
    let (credentials, credential) = credentials(&s, &raw)?;
    let places = s.places(&raw.bucket, "bucket", credential);
    let endpoint = raw
        .endpoint
        .as_ref()
        .map(|e| s.url_named(e, "endpoint", raw.allow_insecure_http))
        .transpose()?;
    Ok(S3Config {
        bucket,
        prefix: prefix(&raw.prefix),
        region: raw.region.unwrap_or_else(|| "us-east-1".to_owned()),
        path_style: raw.path_style.unwrap_or(endpoint.is_some()),
        endpoint,
        credentials,
        poll_interval: Duration::from_secs(s.int(
            &raw.poll_interval_secs,
            "poll_interval_secs",
            1..=30 * 86_400,
            300,
        )? as u64),
        filter: Filter::read(&s, &raw.include, &raw.exclude)?,
        max_file_size: size_limit(at.loc, &s.key("max_file_size"), &raw.max_file_size)?,
        places: Places {
            bucket: places.target,
            credential: places.credential,
        },
    })
}

/// The `include` and `exclude` globs of a remote source, on its keys.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    /// The patterns as written: what the filter is, for a digest of the
    /// settings a listing depends on (a `GlobSet` does not say).
    patterns: String,
}

impl Filter {
    pub fn read(
        s: &Section,
        include: &[Spanned<String>],
        exclude: &[Spanned<String>],
    ) -> Result<Filter, ConfigError> {
        fn written(list: &[Spanned<String>]) -> Vec<&str> {
            list.iter().map(|g| g.get_ref().as_str()).collect()
        }
        Ok(Filter {
            include: globs(s, "include", include)?,
            exclude: globs(s, "exclude", exclude)?,
            patterns: format!("{:?} {:?}", written(include), written(exclude)),
        })
    }

    /// The include and exclude patterns as written.
    pub fn patterns(&self) -> &str {
        &self.patterns
    }

    /// Whether the key is one to mirror.
    pub fn selects(&self, key: &str) -> bool {
        !self.exclude.as_ref().is_some_and(|x| x.is_match(key))
            && self.include.as_ref().is_none_or(|i| i.is_match(key))
    }
}

/// A bucket name as S3 spells them: no `/`, nothing blank.
fn bucket_name(s: &Section, v: &Spanned<String>) -> Result<String, ConfigError> {
    let name = v.get_ref().trim();
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !plain {
        return Err(s.error(
            v.span(),
            "bucket",
            "expected a bucket name (letters, digits, `-`, `.`, `_`); put a path below it in `prefix`",
        ));
    }
    Ok(name.to_owned())
}

/// `docs`, `/docs/` → `docs/`: keys are what follows it.
fn prefix(raw: &str) -> String {
    let p = raw.trim().trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

/// A key pair, each half from env, file or credential, or `anonymous =
/// true`; with it, where the setting is that a refusal names.
fn credentials(s: &Section, raw: &RawS3) -> Result<(Option<Credentials>, String), ConfigError> {
    let keyed = raw.access_key_id.is_some()
        || raw.access_key_id_env.is_some()
        || raw.access_key_id_file.is_some()
        || raw.access_key_id_credential.is_some();
    match &raw.anonymous {
        Some(a) if *a.get_ref() => {
            if keyed {
                return Err(s.error(
                    a.span(),
                    "anonymous",
                    "anonymous = true reads a public bucket without credentials: remove the access key settings, or anonymous",
                ));
            }
            return Ok((None, format!("{} = true", s.key("anonymous"))));
        }
        _ if !keyed => {
            return Err(s.table_error(
                "access_key_id_env",
                "set access_key_id_env (or _file, _credential) and secret_access_key_env (or _file, _credential), or anonymous = true for a public bucket",
            ))
        }
        _ => {}
    }
    let (access_key_id, place) = s.secret(key_fields!(
        raw.access_key_id,
        access_key_id_env,
        access_key_id_file,
        access_key_id_credential
    ))?;
    let (secret_access_key, secret_place) = s.secret(key_fields!(
        raw.secret_access_key,
        secret_access_key_env,
        secret_access_key_file,
        secret_access_key_credential
    ))?;
    // S3 says which half it refused only in its error code: name both.
    Ok((
        Some(Credentials {
            access_key_id,
            secret_access_key,
        }),
        format!("{place} and {secret_place}"),
    ))
}

/// Patterns per `include` or `exclude` list, as a folder's lists allow.
const MAX_GLOBS: usize = 10_000;

/// One automaton per list, matched against keys below the prefix.
fn globs(
    s: &Section,
    name: &str,
    list: &[Spanned<String>],
) -> Result<Option<GlobSet>, ConfigError> {
    let Some(first) = list.first() else {
        return Ok(None);
    };
    if list.len() > MAX_GLOBS {
        return Err(s.error(
            list[MAX_GLOBS].span(),
            name,
            format!("{} patterns; at most {MAX_GLOBS} per list", list.len()),
        ));
    }
    let mut set = GlobSetBuilder::new();
    for g in list {
        set.add(
            globset::GlobBuilder::new(g.get_ref())
                .literal_separator(true)
                .build()
                .map_err(|e| s.error(g.span(), name, format!("bad glob: {e}")))?,
        );
    }
    set.build()
        .map(Some)
        .map_err(|e| s.error(first.span(), name, format!("cannot be compiled: {e}")))
}

#[cfg(test)]
mod tests {
    use crate::source::registry::testing;
    use crate::source::s3::S3Config;

    fn s3(section: &str) -> S3Config {
        testing::alone(section, super::validate)
    }

    fn refused(section: &str) -> String {
        testing::refused("s3", section)
    }

    #[test]
    fn a_section_with_a_key_pair_from_files() {
        let c = s3("bucket = \"docs\"\nprefix = \"/team/handbook\"\naccess_key_id_file = \"s3.id\"\nsecret_access_key_env = \"S3_SECRET\"\ninclude = [\"**/*.md\"]\nmax_file_size = \"1MB\"");
        assert_eq!(c.prefix, "team/handbook/");
        assert_eq!((c.region.as_str(), c.path_style), ("us-east-1", false));
        assert_eq!(c.poll_interval.as_secs(), 300);
        assert_eq!(c.max_file_size, 1_000_000);
        assert!(c.filter.selects("a/b.md") && !c.filter.selects("a/b.pdf"));
        assert_eq!(
            c.places.bucket,
            "/etc/kbsync/kbsync.toml:1:10: `sync[0].s3.bucket`"
        );
        assert_eq!(
            c.places.credential,
            "/etc/kbsync/kbsync.toml:3:22: `sync[0].s3.access_key_id_file` and /etc/kbsync/kbsync.toml:4:25: `sync[0].s3.secret_access_key_env`"
        );
    }

    #[test]
    fn an_endpoint_is_path_style_and_plain_http_only_on_loopback() {
        let c = s3("bucket = \"b\"\nanonymous = true\nendpoint = \"http://127.0.0.1:8333\"");
        assert!(c.path_style && c.credentials.is_none());
        let e = refused("bucket = \"b\"\nanonymous = true\nendpoint = \"http://minio.lan:9000\"");
        assert!(
            e.contains("sync[0].s3.endpoint") && e.contains("plain http"),
            "{e}"
        );
        s3("bucket = \"b\"\nanonymous = true\nendpoint = \"http://minio.lan:9000\"\nallow_insecure_http = true");
    }

    #[test]
    fn credentials_are_never_inline_and_never_missing() {
        let e =
            refused("bucket = \"b\"\naccess_key_id = \"AKIA0000\"\nsecret_access_key_env = \"S\"");
        assert!(
            e.contains("sync[0].s3.access_key_id") && e.contains("not accepted inline"),
            "{e}"
        );
        assert!(!e.contains("AKIA0000"), "{e}");
        let e = refused("bucket = \"b\"");
        assert!(e.contains("anonymous = true"), "{e}");
        let e = refused("bucket = \"b\"\nanonymous = true\naccess_key_id_env = \"A\"");
        assert!(e.contains("sync[0].s3.anonymous"), "{e}");
        let e = refused("bucket = \"b\"\naccess_key_id_env = \"A\"");
        assert!(e.contains("secret_access_key_env"), "{e}");
        let e = refused("bucket = \"docs/team\"\nanonymous = true");
        assert!(
            e.contains("sync[0].s3.bucket") && e.contains("prefix"),
            "{e}"
        );
    }
}
