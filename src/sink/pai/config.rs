//! The `[sync.pai]` section.

use reqwest::Url;
use serde::Deserialize;
use toml::Spanned;

use crate::config::section::{key_fields, raw_calls, Calls, Section};
use crate::config::ConfigError;
use crate::secret::SecretSource;

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
    /// Timeout, retries, rate.
    pub calls: Calls,
    pub places: crate::sink::Places,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPai {
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
    max_retry_wait_secs: Option<Spanned<i64>>,
    requests_per_minute: Option<Spanned<i64>>,
}

pub fn validate(s: &Section, raw: RawPai) -> Result<PaiConfig, ConfigError> {
    let (access_key_id, credential) = s.secret(key_fields!(
        raw.access_key_id,
        access_key_id_env,
        access_key_id_file,
        access_key_id_credential
    ))?;
    let (access_key_secret, _) = s.secret(key_fields!(
        raw.access_key_secret,
        access_key_secret_env,
        access_key_secret_file,
        access_key_secret_credential
    ))?;
    let endpoint = s.url(&endpoint(s, &raw)?, raw.allow_insecure_http)?;
    let workspace_id = id(s, &raw.workspace_id, "workspace_id")?;
    let dataset_id = id(s, &raw.dataset_id, "dataset_id")?;
    let dataset_version = match &raw.dataset_version {
        Some(v) => id(s, v, "dataset_version")?,
        None => "v1".to_owned(),
    };
    let uri_base = raw.uri_base.get_ref().trim().to_owned();
    let scheme_ok = ["oss://", "nas://"]
        .iter()
        .any(|p| uri_base.len() > p.len() && uri_base.starts_with(p));
    if !scheme_ok || !uri_base.ends_with('/') {
        return Err(s.error(
            raw.uri_base.span(),
            "uri_base",
            "expected the dataset location the folder corresponds to, as oss://bucket/prefix/ or nas://filesystem-id/prefix/ (ending in '/')",
        ));
    }
    Ok(PaiConfig {
        calls: s.calls(raw_calls!(raw), 60)?,
        batch_size: s.int(&raw.batch_size, "batch_size", 1..=1000, 100)? as usize,
        places: s.places(&raw.dataset_id, "dataset_id", credential),
        endpoint,
        workspace_id,
        dataset_id,
        dataset_version,
        uri_base,
        access_key_id,
        access_key_secret,
    })
}

/// The API's URL as the section sets it: `endpoint`, or the host of
/// `region`. Its errors name `base_url`, as every sink's URL errors do.
fn endpoint(s: &Section, raw: &RawPai) -> Result<Spanned<String>, ConfigError> {
    match (&raw.endpoint, &raw.region) {
        (Some(e), _) => Ok(e.clone()),
        (None, Some(r)) => {
            let region = r.get_ref().trim();
            let valid = !region.is_empty()
                && region
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid {
                return Err(s.error(
                    r.span(),
                    "region",
                    "expected a region id such as \"cn-hangzhou\"",
                ));
            }
            Ok(Spanned::new(
                r.span(),
                format!("https://{}", endpoint_host(region)),
            ))
        }
        (None, None) => {
            Err(s.table_error("region", "set region (e.g. \"cn-hangzhou\") or endpoint"))
        }
    }
}

/// An id of the setting `name`. Ids go into the signed path: anything
/// RFC 3986 would escape is refused rather than risk a path signed one way
/// and sent another.
fn id(s: &Section, v: &Spanned<String>, name: &str) -> Result<String, ConfigError> {
    let id = s.id(v, name, "expected an id")?;
    if id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
    {
        Ok(id)
    } else {
        Err(s.error(
            v.span(),
            name,
            "expected an id of letters, digits, '-', '_', '.' or '~' (as PAI's ids are)",
        ))
    }
}

/// Regions whose AIWorkSpace API is not at `aiworkspace.<region>.aliyuncs.com`,
/// as the official SDK's endpoint map has them (most use the central host).
const ENDPOINTS: &[(&str, &str)] = &[
    ("ap-northeast-2-pop", "aiworkspace.aliyuncs.com"),
    ("ap-southeast-2", "aiworkspace.aliyuncs.com"),
    (
        "ap-southeast-5",
        "aiworkspace-vpc.ap-southeast-5.aliyuncs.com",
    ),
    ("cn-beijing-finance-1", "aiworkspace.aliyuncs.com"),
    ("cn-beijing-finance-pop", "aiworkspace.aliyuncs.com"),
    ("cn-beijing-gov-1", "aiworkspace.aliyuncs.com"),
    ("cn-beijing-nu16-b01", "aiworkspace.aliyuncs.com"),
    ("cn-edge-1", "aiworkspace.aliyuncs.com"),
    ("cn-fujian", "aiworkspace.aliyuncs.com"),
    ("cn-haidian-cm12-c01", "aiworkspace.aliyuncs.com"),
    ("cn-hangzhou-bj-b01", "aiworkspace.aliyuncs.com"),
    ("cn-hangzhou-finance", "aiworkspace.aliyuncs.com"),
    ("cn-hangzhou-internal-prod-1", "aiworkspace.aliyuncs.com"),
    ("cn-hangzhou-internal-test-1", "aiworkspace.aliyuncs.com"),
    ("cn-hangzhou-internal-test-2", "aiworkspace.aliyuncs.com"),
    ("cn-hangzhou-internal-test-3", "aiworkspace.aliyuncs.com"),
    ("cn-hangzhou-test-306", "aiworkspace.aliyuncs.com"),
    ("cn-hongkong-finance-pop", "aiworkspace.aliyuncs.com"),
    ("cn-huhehaote", "aiworkspace.aliyuncs.com"),
    ("cn-huhehaote-nebula-1", "aiworkspace.aliyuncs.com"),
    ("cn-qingdao", "aiworkspace.aliyuncs.com"),
    ("cn-qingdao-nebula", "aiworkspace.aliyuncs.com"),
    ("cn-shanghai-et15-b01", "aiworkspace.aliyuncs.com"),
    ("cn-shanghai-et2-b01", "aiworkspace.aliyuncs.com"),
    ("cn-shanghai-inner", "aiworkspace.aliyuncs.com"),
    ("cn-shanghai-internal-test-1", "aiworkspace.aliyuncs.com"),
    ("cn-shenzhen-finance-1", "aiworkspace.aliyuncs.com"),
    ("cn-shenzhen-inner", "aiworkspace.aliyuncs.com"),
    ("cn-shenzhen-st4-d01", "aiworkspace.aliyuncs.com"),
    ("cn-shenzhen-su18-b01", "aiworkspace.aliyuncs.com"),
    ("cn-wuhan", "aiworkspace.aliyuncs.com"),
    ("cn-yushanfang", "aiworkspace.aliyuncs.com"),
    ("cn-zhangbei", "aiworkspace.aliyuncs.com"),
    ("cn-zhangbei-na61-b01", "aiworkspace.aliyuncs.com"),
    ("cn-zhangjiakou-na62-a01", "aiworkspace.aliyuncs.com"),
    ("cn-zhengzhou-nebula-1", "aiworkspace.aliyuncs.com"),
    ("eu-west-1", "aiworkspace.aliyuncs.com"),
    ("eu-west-1-oxs", "aiworkspace.aliyuncs.com"),
    ("me-east-1", "aiworkspace.aliyuncs.com"),
    ("rus-west-1-pop", "aiworkspace.aliyuncs.com"),
];

/// The API host of `region`.
pub fn endpoint_host(region: &str) -> String {
    ENDPOINTS
        .iter()
        .find(|(r, _)| *r == region)
        .map(|(_, host)| (*host).to_owned())
        .unwrap_or_else(|| format!("aiworkspace.{region}.aliyuncs.com"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_map_to_the_sdks_endpoints() {
        assert_eq!(
            endpoint_host("cn-hangzhou"),
            "aiworkspace.cn-hangzhou.aliyuncs.com"
        );
        assert_eq!(endpoint_host("cn-qingdao"), "aiworkspace.aliyuncs.com");
        assert_eq!(endpoint_host("eu-west-1"), "aiworkspace.aliyuncs.com");
        assert_eq!(
            endpoint_host("ap-southeast-5"),
            "aiworkspace-vpc.ap-southeast-5.aliyuncs.com"
        );
    }
}
