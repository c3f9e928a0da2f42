//! The OpenDAL operator for a share, rooted at the configured folder, on
//! one HTTP client with timeouts; and a file read in one GET.

use std::sync::Arc;

use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use opendal::services::Webdav;
use opendal::{Buffer, ErrorKind, Operator};

use super::config::WebdavConfig;
use crate::secret::Secret;
use crate::sink::redact::Redactor;
use crate::source::remote::{one_client, Bound, MAX_LISTED};
use crate::source::s3::listing::{short, Failure};
use crate::source::s3::object::Object;
use crate::source::s3::scan::Fetch;

/// The operator, and what keeps the login out of messages and the
/// listing within bounds.
#[derive(Clone)]
pub struct Dav {
    pub op: Operator,
    /// The password, and the Basic credentials every request carries
    /// (base64 of `user:password`), as an error page may repeat them.
    pub redact: Arc<Redactor>,
    pub bound: Bound,
}

pub fn connect(cfg: &WebdavConfig) -> Result<Dav, String> {
    let url = &cfg.url;
    let origin = url.origin().ascii_serialization();
    let mut builder = Webdav::default()
        .endpoint(&origin)
        .root(url.path())
        .disable_create_dir(true);
    let mut redact = Redactor::new(&[]);
    if let Some(login) = &cfg.login {
        let password = login
            .password
            .load()
            .map_err(|e| format!("{e} ({})", cfg.login_place))?;
        builder = builder
            .username(&login.username)
            .password(password.expose());
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            login.username,
            password.expose()
        ));
        redact = Redactor::new(&[&password, &Secret::new(basic)]);
    }
    let op = Operator::new(builder)
        .map_err(|e| format!("{url}: {}", short(&e)))?
        .finish();
    // Each folder is an entry of its parent: the entries' ceiling bounds
    // the folders too.
    let bound = Bound::new(MAX_LISTED, folder);
    one_client(&op, &bound).map_err(|e| format!("{url}: {e}"))?;
    Ok(Dav {
        op,
        redact: Arc::new(redact),
        bound,
    })
}

/// A PROPFIND, named by the folder it lists.
fn folder(req: &hyper::Request<Buffer>) -> Option<String> {
    (req.method() == "PROPFIND").then(|| format!("the folder {}", req.uri().path()))
}

/// What a failed listing of the share means, naming the setting to check.
pub fn share_failure(cfg: &WebdavConfig, e: &opendal::Error) -> Failure {
    // OpenDAL gives a 401 as an unexpected answer, with its status.
    let refused = e.kind() == ErrorKind::PermissionDenied || e.to_string().contains("status: 401");
    match e.kind() {
        ErrorKind::NotFound => Failure::Unavailable(format!(
            "the folder {} was not found on the share ({}); nothing is taken for deleted",
            cfg.url, cfg.url_place
        )),
        _ if refused => Failure::Unavailable(format!(
            "listing {} was refused (wrong or unauthorised login, {}); nothing is taken for deleted",
            cfg.url, cfg.login_place
        )),
        _ => Failure::Stopped(format!(
            "listing {} stopped part-way ({}); nothing is taken for deleted until a listing completes",
            cfg.url,
            short(e)
        )),
    }
}

impl Fetch for Dav {
    /// One GET, read no further than `max` bytes.
    fn get<'a>(&'a self, key: &'a str, max: u64) -> BoxFuture<'a, Result<Object, String>> {
        async move {
            let failed = |e: opendal::Error| format!("cannot read: {}", short(&e));
            let reader = self.op.reader(key).await.map_err(failed)?;
            let mut stream = reader.into_bytes_stream(..).await.map_err(failed)?;
            // The GET is sent here: its refusal is no empty file.
            let answered = match stream.metadata().await {
                Ok(meta) => Some(meta),
                Err(e) if e.kind() == ErrorKind::Unsupported => None,
                Err(e) => return Err(failed(e)),
            };
            let mut body = BytesMut::new();
            while let Some(chunk) = stream
                .try_next()
                .await
                .map_err(|e| format!("download failed: {e}"))?
            {
                if (body.len() + chunk.len()) as u64 > max {
                    return Err(format!("over max_file_size ({max} bytes)"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Object {
                body: Bytes::from(body),
                content_type: answered.and_then(|m| m.content_type().map(str::to_owned)),
                meta: Default::default(),
            })
        }
        .boxed()
    }
}
