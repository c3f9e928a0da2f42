//! The OpenDAL operator for a section: rooted at the prefix, signing with
//! the configured key pair (or not at all, for a public bucket), and
//! never reading credentials from anywhere else (no `AWS_*` variables,
//! profile files or instance metadata).

use std::sync::Arc;
use std::time::Duration;

use opendal::raw::{Access, HttpClient};
use opendal::services::S3;
use opendal::Operator;

use super::config::S3Config;
use crate::sink::redact::Redactor;

/// A server that takes longer to accept a connection, or pauses longer
/// within an answer, has failed this request (a listing then protects
/// everything, a GET its object).
const CONNECT_WITHIN: Duration = Duration::from_secs(15);
const READ_WITHIN: Duration = Duration::from_secs(120);

/// The operator, and what keeps its secrets out of messages.
#[derive(Clone)]
pub struct Client {
    pub op: Operator,
    /// Sends the GETs OpenDAL signs (see `object::get`).
    pub http: reqwest::Client,
    /// The key pair, as an S3 error body may repeat it (the access key id
    /// it refused).
    pub redact: Arc<Redactor>,
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
    let http = one_client(&op).map_err(|e| format!("s3://{}: {e}", cfg.bucket))?;
    Ok(Client {
        op,
        http,
        redact: Arc::new(redact),
    })
}

/// The HTTP client `op` lists with from now on, and its kind's GETs go
/// through: one client, and none waits forever on a server that stopped
/// answering.
pub(crate) fn one_client(op: &Operator) -> reqwest::Result<reqwest::Client> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_WITHIN)
        .read_timeout(READ_WITHIN)
        .user_agent(concat!("kbsync/", env!("CARGO_PKG_VERSION")))
        .build()?;
    op.inner()
        .info()
        .update_http_client(|_| HttpClient::with(http.clone()));
    Ok(http)
}
