//! The one HTTP client an OpenDAL kind lists and reads with: none waits
//! forever on a server that stopped answering, no redirect is followed,
//! and every listing request goes past the listing's `Bound`.

use std::time::Duration;

use opendal::raw::{Access, HttpBody, HttpClient, HttpFetch};
use opendal::{Buffer, ErrorKind, Operator};

use super::Bound;

/// A server that takes longer to accept a connection, or pauses longer
/// within an answer, has failed this request (a listing then protects
/// everything, a GET its object).
const CONNECT_WITHIN: Duration = Duration::from_secs(15);
const READ_WITHIN: Duration = Duration::from_secs(120);

/// The client `op` lists with from now on (each listing request counted
/// by `bound`), returned for the kind's own requests.
pub(crate) fn one_client(op: &Operator, bound: &Bound) -> reqwest::Result<reqwest::Client> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_WITHIN)
        .read_timeout(READ_WITHIN)
        .user_agent(concat!("kbsync/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let bounded = Bounded {
        http: http.clone(),
        bound: bound.clone(),
    };
    op.inner()
        .info()
        .update_http_client(|_| HttpClient::with(bounded));
    Ok(http)
}

/// The client as OpenDAL sends through it.
struct Bounded {
    http: reqwest::Client,
    bound: Bound,
}

impl HttpFetch for Bounded {
    async fn fetch(
        &self,
        req: hyper::Request<Buffer>,
    ) -> opendal::Result<hyper::Response<HttpBody>> {
        let page = self
            .bound
            .ask(&req)
            .map_err(|why| opendal::Error::new(ErrorKind::Unexpected, why))?;
        let resp = self.http.fetch(req).await?;
        if let Some(page) = page {
            self.bound.answered(page, resp.status().as_u16());
        }
        Ok(resp)
    }
}
