//! Alibaba Cloud PAI (AIWorkSpace, API 2021-02-04): the metadata records of
//! a dataset's files. Every request is signed with signature V3
//! (`acs3.rs`). A record is identified by its file's URI; kbsync lists the
//! dataset once to learn the record ids, creates records for files the
//! dataset does not know yet, and keeps their `MetaAttributes` equal to
//! the mapped metadata. Batch answers are HTTP 200 even when some records
//! failed: `Status: false` plus `FailedDetails`, which are read per file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::acs3;
use super::PaiConfig;
use crate::secret::Secret;
use crate::sink::http::{ErrorAnswer, Transport};
use crate::sink::paging::Pages;
use crate::sink::{ErrorClass, SinkError};

pub const API_VERSION: &str = "2021-02-04";
const PAGE_SIZE: usize = 100;
/// Records per DeleteDatasetFileMetas. No limit is documented; the ids go
/// in the query, and 50 of 64 characters keep the URL near 3.5 KB, well
/// under the 8 KB request lines that gateways commonly take.
pub const DELETE_BATCH: usize = 50;

/// One record's answer in a batch.
#[derive(Debug, Clone, Deserialize)]
pub struct Detail {
    #[serde(rename = "DatasetFileMetaId", default)]
    pub id: Option<String>,
    #[serde(rename = "Uri", default)]
    pub uri: Option<String>,
    #[serde(rename = "Result", default)]
    pub result: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct BatchAnswer {
    #[serde(rename = "FailedDetails", default)]
    pub failed: Vec<Detail>,
    #[serde(rename = "SucceedDetails", default)]
    pub succeeded: Vec<Detail>,
}

impl BatchAnswer {
    /// The records a delete refused, with why: one already gone ("Not
    /// Found") is what was wanted.
    pub fn refused_deletes(self) -> impl Iterator<Item = (String, String)> {
        self.failed
            .into_iter()
            .filter_map(|d| Some((d.id?, d.result.unwrap_or_else(|| "refused".into()))))
            .filter(|(_, result)| !result.eq_ignore_ascii_case("not found"))
    }
}

pub struct PaiClient {
    transport: Transport,
    cfg: PaiConfig,
    key_id: Secret,
    secret: Secret,
}

impl PaiClient {
    pub fn new(cfg: &PaiConfig, key_id: Secret, secret: Secret) -> Result<Self, SinkError> {
        Ok(PaiClient {
            // The secret is never sent (it signs), but kept out all the same.
            transport: Transport::new("pai", &cfg.calls, &[&key_id, &secret])?,
            cfg: cfg.clone(),
            key_id,
            secret,
        })
    }

    /// The transport the client's calls go through (request count, rest).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn uri_of(&self, key: &str) -> String {
        format!("{}{key}", self.cfg.uri_base)
    }

    fn path(&self) -> String {
        format!("/api/v1/datasets/{}/datasetfilemetas", self.cfg.dataset_id)
    }

    /// A signed request: a fresh date and nonce per attempt.
    fn signed(
        &self,
        method: &Method,
        action: &str,
        query: &[(String, String)],
        body: Option<&Json>,
    ) -> reqwest::RequestBuilder {
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let hashed = acs3::sha256_hex(payload.as_bytes());
        let host = match (self.cfg.endpoint.host_str(), self.cfg.endpoint.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => String::new(),
        };
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host),
            ("x-acs-action".into(), action.into()),
            ("x-acs-version".into(), API_VERSION.into()),
            ("x-acs-date".into(), acs_date(SystemTime::now())),
            ("x-acs-signature-nonce".into(), nonce()),
            ("x-acs-content-sha256".into(), hashed.clone()),
        ];
        if body.is_some() {
            headers.push(("content-type".into(), "application/json".into()));
        }
        let path = self.path();
        let (canonical, signed) =
            acs3::canonical_request(method.as_str(), &path, query, &headers, &hashed);
        let authorization = acs3::authorization(
            self.key_id.expose(),
            self.secret.expose(),
            &canonical,
            &signed,
        );
        let mut url: Url = self.cfg.endpoint.clone();
        url.set_path(&path);
        url.set_query(None);
        if !query.is_empty() {
            url.set_query(Some(&acs3::canonical_query(query)));
        }
        let mut req = self.transport.http().request(method.clone(), url);
        for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
            req = req.header(k, v);
        }
        req = req.header(
            "authorization",
            crate::sink::http::sensitive(&authorization),
        );
        if body.is_some() {
            req = req.body(payload);
        }
        req
    }

    async fn call(
        &self,
        method: Method,
        action: &'static str,
        query: Vec<(String, String)>,
        body: Option<Json>,
    ) -> Result<Json, SinkError> {
        // A create is not idempotent: it gets one attempt, and a failure
        // leaves it to the next pass, which lists the dataset first.
        let retries = (action == "CreateDatasetFileMetas").then_some(0);
        self.transport
            .retrying(action, retries, || async {
                let resp = self
                    .transport
                    .send(action, self.signed(&method, action, &query, body.as_ref()))
                    .await?;
                if !resp.status().is_success() {
                    return Err(classify(self.transport.error_answer(resp).await));
                }
                self.transport
                    .json::<Json>(resp, "response body from PAI")
                    .await
            })
            .await
    }

    /// One ListDatasetFileMetas of one record: proves the workspace,
    /// dataset and AccessKey before a job is bound to them.
    pub async fn check(&self) -> Result<(), SinkError> {
        let mut query = self.scope();
        query.push(("MaxResults".to_owned(), "1".to_owned()));
        self.call(Method::GET, "ListDatasetFileMetas", query, None)
            .await
            .map(drop)
    }

    /// ListDatasetFileMetas, every page: (URI, record id).
    pub async fn list(&self) -> Result<Vec<(String, String)>, SinkError> {
        self.list_where(None).await
    }

    /// The record under `uri`, looked up by a listing filtered on its file
    /// name. The API's `QueryFileName` matches parts of names, so the
    /// answer is a superset: only the exact URI counts.
    pub async fn find(&self, uri: &str) -> Result<Option<String>, SinkError> {
        let name = uri.rsplit('/').next().unwrap_or(uri);
        let records = self.list_where(Some(("QueryFileName", name))).await?;
        Ok(records
            .into_iter()
            .find(|(u, _)| u == uri)
            .map(|(_, id)| id))
    }

    /// ListDatasetFileMetas with an optional filter, every page.
    async fn list_where(
        &self,
        filter: Option<(&str, &str)>,
    ) -> Result<Vec<(String, String)>, SinkError> {
        #[derive(Deserialize)]
        struct Record {
            #[serde(rename = "DatasetFileMetaId")]
            id: String,
            #[serde(rename = "Uri")]
            uri: String,
        }
        #[derive(Deserialize)]
        struct Page {
            #[serde(rename = "DatasetFileMetas", default)]
            records: Vec<Record>,
            #[serde(rename = "NextToken", default)]
            next: Option<String>,
            #[serde(rename = "TotalCount", default)]
            total: Option<u64>,
        }
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = Pages::new("PAI", "ListDatasetFileMetas", PAGE_SIZE);
        loop {
            let mut query = self.scope();
            query.push(("MaxResults".to_owned(), PAGE_SIZE.to_string()));
            if let Some((k, v)) = filter {
                query.push((k.to_owned(), v.to_owned()));
            }
            if let Some(t) = &token {
                query.push(("NextToken".to_owned(), t.clone()));
            }
            let v = self
                .call(Method::GET, "ListDatasetFileMetas", query, None)
                .await?;
            let page: Page = parse(v, "ListDatasetFileMetas")?;
            pages.took(page.records.iter().map(|r| r.id.as_str()), page.total)?;
            let empty = page.records.is_empty();
            out.extend(page.records.into_iter().map(|r| (r.uri, r.id)));
            match page.next.filter(|t| !t.is_empty()) {
                Some(t) if !empty => token = Some(t),
                _ => break,
            }
            pages.more()?;
        }
        Ok(out)
    }

    /// The query parameters every call on the dataset carries.
    fn scope(&self) -> Vec<(String, String)> {
        vec![
            (
                "DatasetVersion".to_owned(),
                self.cfg.dataset_version.clone(),
            ),
            ("WorkspaceId".to_owned(), self.cfg.workspace_id.clone()),
        ]
    }

    /// CreateDatasetFileMetas (POST) or UpdateDatasetFileMetas (PUT).
    pub async fn batch(&self, create: bool, records: Vec<Json>) -> Result<BatchAnswer, SinkError> {
        let (method, action) = if create {
            (Method::POST, "CreateDatasetFileMetas")
        } else {
            (Method::PUT, "UpdateDatasetFileMetas")
        };
        let body = json!({
            "WorkspaceId": self.cfg.workspace_id,
            "DatasetVersion": self.cfg.dataset_version,
            "DatasetFileMetas": records,
        });
        let v = self.call(method, action, Vec::new(), Some(body)).await?;
        parse(v, action)
    }
}

impl PaiClient {
    /// DeleteDatasetFileMetas of up to `DELETE_BATCH` records, their ids
    /// comma-separated in `DatasetFileMetaIds`: the API documents the
    /// parameter as a string, and its SDK joins the same parameter of
    /// ListDatasetFileMetas with commas. A server that took the list for
    /// one id would answer "Not Found" for an id not asked for: such an
    /// answer is an error, never taken for the records being gone.
    pub async fn delete(&self, ids: &[&str]) -> Result<BatchAnswer, SinkError> {
        let mut query = self.scope();
        query.push(("DatasetFileMetaIds".to_owned(), ids.join(",")));
        let v = self
            .call(Method::DELETE, "DeleteDatasetFileMetas", query, None)
            .await?;
        let answer: BatchAnswer = parse(v, "DeleteDatasetFileMetas")?;
        let stray = answer
            .failed
            .iter()
            .find(|d| d.id.as_deref().is_none_or(|id| !ids.contains(&id)));
        if let Some(d) = stray {
            return Err(SinkError::local(
                ErrorClass::Permanent,
                "bad_response",
                format!(
                    "DeleteDatasetFileMetas answered about record {:?}, which was not asked for ({} asked): the records are not taken for deleted",
                    d.id.as_deref().unwrap_or(""),
                    ids.len()
                ),
            ));
        }
        Ok(answer)
    }
}

/// An answer's JSON as `T`; a shape not expected is transient (a gateway's
/// page, say).
fn parse<T: serde::de::DeserializeOwned>(v: Json, action: &str) -> Result<T, SinkError> {
    serde_json::from_value(v).map_err(|e| {
        SinkError::local(
            ErrorClass::Transient,
            "bad_response",
            format!("unexpected {action} answer: {e}"),
        )
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ`, UTC.
pub fn acs_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    crate::metadata::format_rfc3339(secs)
}

/// Unique per request: time, process and a counter, hashed.
fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{now}-{}-{n}", std::process::id());
    blake3::hash(seed.as_bytes()).to_hex()[..32].to_owned()
}

fn classify(answer: ErrorAnswer) -> SinkError {
    let status = answer.status.as_u16();
    // Alibaba Cloud's throttling says how long to wait in milliseconds.
    let retry_after = answer
        .headers
        .get("x-acs-retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms).min(crate::sink::http::MAX_RETRY_AFTER))
        .or(answer.retry_after);
    // JSON as a rule; XML from some gateways.
    let code = answer
        .field(&["Code", "code"])
        .or_else(|| answer.xml_field("Code"))
        .unwrap_or_else(|| format!("http_{status}"));
    let message = answer
        .field(&["Message", "message"])
        .or_else(|| answer.xml_field("Message"))
        .unwrap_or_else(|| answer.text());
    let class = if status == 429 || status >= 500 || status == 408 || code.starts_with("Throttling")
    {
        ErrorClass::Transient
    } else if matches!(status, 401 | 403 | 404)
        || [
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "IncompleteSignature",
        ]
        .iter()
        .any(|c| code.starts_with(c))
    {
        // Bad AccessKey, signature, permission, or no such dataset /
        // workspace: nothing in this job can succeed.
        ErrorClass::Fatal
    } else {
        ErrorClass::Permanent
    };
    SinkError {
        class,
        status: Some(status),
        code,
        message,
        retry_after: (class == ErrorClass::Transient)
            .then_some(retry_after)
            .flatten(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn throttling_in_xml_with_x_acs_retry_after_is_read() {
        let answer = http_crate_response(
            429,
            &[("x-acs-retry-after", "1500"), ("content-type", "text/xml")],
            "<?xml version='1.0'?><Error><RequestId>R1</RequestId><Code>Throttling.User</Code><Message>Request was denied due to user flow control.</Message></Error>",
        );
        let calls = crate::config::Calls {
            timeout: Duration::from_secs(1),
            retry: crate::config::RetryConfig::default(),
            requests_per_minute: None,
        };
        let transport = Transport::new("pai", &calls, &[]).unwrap();
        let e = classify(transport.error_answer(answer).await);
        assert_eq!(e.class, ErrorClass::Transient);
        assert_eq!(e.code, "Throttling.User");
        assert_eq!(e.message, "Request was denied due to user flow control.");
        assert_eq!(e.retry_after, Some(Duration::from_millis(1500)));
    }

    fn http_crate_response(status: u16, headers: &[(&str, &str)], body: &str) -> reqwest::Response {
        let mut b = http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        reqwest::Response::from(b.body(body.to_owned()).unwrap())
    }

    #[test]
    fn dates_and_nonces_are_as_the_signature_needs() {
        let t = UNIX_EPOCH + Duration::from_secs(1_698_310_861);
        assert_eq!(acs_date(t), "2023-10-26T09:01:01Z");
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
