//! The OpenDAL operator for a section: rooted at the prefix, signing with
//! the configured key pair (or not at all, for a public bucket), and
//! never reading credentials from anywhere else (no `AWS_*` variables,
//! profile files or instance metadata).

use std::sync::Arc;

use opendal::services::S3;
use opendal::{Buffer, Operator};

use super::config::S3Config;
use crate::sink::redact::Redactor;
use crate::source::remote::{one_client, Bound, MAX_LISTED};

/// Objects on a ListObjectsV2 page: the most a server gives, and what it
/// gives unless asked for fewer.
const PAGE: u64 = 1000;

/// The operator, and what keeps its secrets out of messages and its
/// listing within bounds.
#[derive(Clone)]
pub struct Client {
    pub op: Operator,
    /// Sends the GETs OpenDAL signs (see `object::get`).
    pub http: reqwest::Client,
    /// The key pair, as an S3 error body may repeat it (the access key id
    /// it refused).
    pub redact: Arc<Redactor>,
    pub bound: Bound,
}

pub fn connect(cfg: &S3Config) -> Result<Client, String> {
    let mut builder = S3::default()
        .bucket(&cfg.bucket)
        .root(&format!("/{}", cfg.prefix))
        .region(&cfg.region)
        .disable_config_load()
        .disable_ec2_metadata();
    if let Some(endpoint) = &cfg.endpoint {
        builder = builder.endpoint(endpoint.as_str().trim_end_matches('/'));
    }
    if !cfg.path_style {
        builder = builder.enable_virtual_host_style();
    }
    let mut redact = Redactor::new(&[]);
    match &cfg.credentials {
        None => builder = builder.skip_signature(),
        Some(c) => {
            let load = |s: &crate::secret::SecretSource| {
                s.load()
                    .map_err(|e| format!("{e} ({})", cfg.places.credential))
            };
            let (id, key) = (load(&c.access_key_id)?, load(&c.secret_access_key)?);
            builder = builder
                .access_key_id(id.expose())
                .secret_access_key(key.expose());
            redact = Redactor::new(&[&id, &key]);
        }
    }
    let op = Operator::new(builder)
        .map_err(|e| format!("s3://{}: {}", cfg.bucket, super::listing::short(&e)))?
        .finish();
    let bound = Bound::new(MAX_LISTED.div_ceil(PAGE), page);
    let http = one_client(&op, &bound).map_err(|e| format!("s3://{}: {e}", cfg.bucket))?;
    Ok(Client {
        op,
        http,
        redact: Arc::new(redact),
        bound,
    })
}

/// A ListObjectsV2 request, named by the continuation token it asks with.
fn page(req: &hyper::Request<Buffer>) -> Option<String> {
    let query = req.uri().query()?;
    let mut pairs = url::form_urlencoded::parse(query.as_bytes());
    if req.method() != "GET" || !pairs.any(|(k, v)| k == "list-type" && v == "2") {
        return None;
    }
    let token = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "continuation-token")
        .map(|(_, v)| v.chars().take(80).collect::<String>());
    Some(match token {
        Some(t) => format!("the page after continuation token {t:?}"),
        None => "the first page".to_owned(),
    })
}
