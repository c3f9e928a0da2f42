//! Dify Knowledge API client: one method per endpoint kbsync uses, each
//! retried on transient failures with exponential backoff and jitter
//! (`backon`), honouring `Retry-After`.

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::DifyConfig;
use crate::metadata::FieldType;
use crate::plan::StatusAction;
use crate::secret::Secret;
use crate::sink::http::{ErrorAnswer, Transport, Waits, UNREACHABLE};
use crate::sink::paging::Pages;
use crate::sink::{ErrorClass, SinkError};

/// Dify's list endpoint caps `limit` at 100.
const PAGE_SIZE: usize = 100;

#[derive(Debug, Clone, Deserialize)]
pub struct RemoteDoc {
    pub id: String,
    pub name: String,
    /// waiting, parsing, cleaning, splitting, indexing, paused, error,
    /// completed.
    #[serde(default)]
    pub indexing_status: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub archived: bool,
    /// Why indexing ended in `error` ("Could not detect encoding for …").
    #[serde(default)]
    pub error: Option<String>,
}

fn yes() -> bool {
    true
}

/// A page of the dataset's documents, as a listing or a search by name
/// answers.
#[derive(Deserialize)]
struct Page {
    data: Vec<RemoteDoc>,
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    total: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RemoteField {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct IndexingEntry {
    pub indexing_status: String,
    #[serde(default)]
    pub error: Option<String>,
}

/// One document's entry in a batch metadata update.
pub struct MetadataUpdate<'a> {
    pub doc_id: &'a str,
    /// (field id, field name, value)
    pub values: Vec<(&'a str, &'a str, &'a Json)>,
}

pub struct DifyClient {
    transport: Transport,
    base: Url,
    dataset: String,
    key: Secret,
    /// Whether the server has `PATCH …/documents/{doc}`: unknown until an
    /// update asked. Dify before the route existed (1.13) answers 405, and
    /// updates then use `update-by-file`.
    patch_route: tokio::sync::OnceCell<bool>,
    /// Held by the update that asks: updates sent side by side wait for its
    /// answer instead of each sending the PATCH.
    probing: tokio::sync::Mutex<()>,
}

impl DifyClient {
    pub fn new(cfg: &DifyConfig, key: Secret) -> Result<Self, SinkError> {
        Ok(DifyClient {
            transport: Transport::new("dify", &cfg.calls, &[&key])?,
            base: cfg.base_url.clone(),
            dataset: cfg.dataset_id.clone(),
            patch_route: tokio::sync::OnceCell::new(),
            probing: tokio::sync::Mutex::new(()),
            key,
        })
    }

    /// The waits of a call the executor's hooks retry themselves.
    pub fn waits<'c>(&'c self, call: &'c str) -> Waits<'c> {
        self.transport.waits(call, None)
    }

    /// The transport the client's calls go through (request count, rest).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    fn url(&self, tail: &str) -> Url {
        // The dataset id was validated to hold no '/', and tails are fixed.
        self.base
            .join(&format!("datasets/{}/{tail}", self.dataset))
            .expect("dataset paths are valid relative URLs")
    }

    fn request(&self, method: Method, tail: &str) -> RequestBuilder {
        self.transport
            .http()
            .request(method, self.url(tail))
            .bearer_auth(self.key.expose())
    }

    /// Sends the request built by `build` (rebuilt for every attempt, as a
    /// multipart body cannot be replayed), retrying transient failures.
    async fn call<F>(&self, what: &'static str, build: F) -> Result<Response, SinkError>
    where
        F: Fn() -> RequestBuilder,
    {
        // A document that is not ready is waited for by the content hooks (on its
        // indexing batch, or across passes), not by re-sending blindly.
        self.transport
            .retrying_when(
                what,
                None,
                |e| e.is_transient() && not_ready(e).is_none(),
                || async { self.once(what, build()).await },
            )
            .await
    }

    async fn once(&self, what: &'static str, req: RequestBuilder) -> Result<Response, SinkError> {
        let resp = self.transport.send(what, req).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(classify(self.transport.error_answer(resp).await))
    }

    async fn json<T: for<'de> Deserialize<'de>>(&self, resp: Response) -> Result<T, SinkError> {
        self.transport.json(resp, "response body from Dify").await
    }

    /// One page of the dataset's documents, whether more may follow, and
    /// the total Dify reported. Dify's `has_more` is only "this page is
    /// full", so `total` decides when it is there: a dataset of exactly
    /// 100 documents is one request.
    async fn list_documents_page(
        &self,
        page: u64,
    ) -> Result<(Vec<RemoteDoc>, bool, Option<u64>), SinkError> {
        let resp = self
            .call("list_documents", || {
                self.request(Method::GET, "documents")
                    .query(&[("page", page.to_string()), ("limit", PAGE_SIZE.to_string())])
            })
            .await?;
        let p: Page = self.json(resp).await?;
        let more = match p.total {
            Some(total) => page * (PAGE_SIZE as u64) < total && !p.data.is_empty(),
            None => p.has_more,
        };
        Ok((p.data, more, p.total))
    }

    /// Every document of the dataset, following pagination. Documents
    /// created meanwhile shift the pages (newest first): each is kept once.
    pub async fn list_documents(&self) -> Result<Vec<RemoteDoc>, SinkError> {
        let mut all: Vec<RemoteDoc> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        self.each_documents_page(|docs| {
            all.extend(docs.into_iter().filter(|d| seen.insert(d.id.clone())));
            Ok(())
        })
        .await?;
        Ok(all)
    }

    /// Every page of the dataset's documents, handed to `each` as it comes
    /// (a document may come twice when creates shift the pages).
    pub async fn each_documents_page(
        &self,
        mut each: impl FnMut(Vec<RemoteDoc>) -> Result<(), SinkError>,
    ) -> Result<(), SinkError> {
        let mut pages = Pages::new("Dify", "list_documents", PAGE_SIZE);
        for page in 1.. {
            let (docs, more, total) = self.list_documents_page(page).await?;
            pages.took(docs.iter().map(|d| d.id.as_str()), total)?;
            let empty = docs.is_empty();
            each(docs)?;
            if !more || empty {
                break;
            }
            pages.more()?;
        }
        Ok(())
    }

    fn file_form(
        name: &str,
        bytes: &bytes::Bytes,
        data: Option<&Json>,
    ) -> reqwest::multipart::Form {
        let part = reqwest::multipart::Part::stream_with_length(bytes.clone(), bytes.len() as u64)
            .file_name(name.to_owned())
            .mime_str(crate::sink::mime_for(name))
            .expect("static MIME types parse");
        let mut form = reqwest::multipart::Form::new().part("file", part);
        if let Some(d) = data {
            form = form.text("data", d.to_string());
        }
        form
    }

    /// `POST /datasets/{id}/document/create-by-file`, made idempotent:
    /// creating is the one call whose blind replay would leave a duplicate
    /// when the first attempt was applied but its answer lost (5xx after
    /// commit, dropped connection). Before each retry the document is
    /// looked up by name; if it is there now, it is ours.
    pub async fn create_by_file(
        &self,
        name: &str,
        bytes: &bytes::Bytes,
        data: &Json,
    ) -> Result<(RemoteDoc, Option<String>), SinkError> {
        let url = self
            .base
            .join(&format!(
                "datasets/{}/document/create-by-file",
                self.dataset
            ))
            .expect("valid path");
        let mut waits = self.transport.waits("create_by_file", None);
        loop {
            let req = self
                .transport
                .http()
                .post(url.clone())
                .bearer_auth(self.key.expose())
                .multipart(Self::file_form(name, bytes, Some(data)));
            let mut err = match self.once("create_by_file", req).await {
                Ok(resp) => {
                    crate::monitor::uploaded("dify", bytes.len());
                    return self.doc_and_batch(resp).await;
                }
                // Not sent (the upstream rests): nothing to look up or wait for.
                Err(e) if e.code == UNREACHABLE => return Err(e),
                Err(mut e) if !e.is_transient() => {
                    if e.status == Some(400) && e.message.is_empty() {
                        e.message = "Dify refused the file without a reason: on create that means a file type the server does not take, or a file over its upload limit (UPLOAD_FILE_SIZE_LIMIT, 15 MB by default)".into();
                    }
                    return Err(e);
                }
                Err(e) => e,
            };
            let Some(delay) = waits.next(&mut err) else {
                return Err(err);
            };
            tokio::time::sleep(delay).await;
            if may_have_been_applied(&err) {
                if let Some(doc) = self.find_by_name(name).await? {
                    tracing::info!(document = %doc.id, "the failed create had been applied; adopting it");
                    return Ok((doc, None));
                }
                // No answer at all (a timeout, a connection lost): the
                // server may still be working on it, and a lookup now
                // proves nothing. Not sent again in this pass: the next
                // one looks the name up first (the step stays "started").
                if matches!(err.code.as_str(), "timeout" | "network") {
                    return Err(SinkError::local(
                        ErrorClass::Transient,
                        "unconfirmed",
                        format!("the create got no answer ({}); it may still be applied upstream, so it is looked up by name on the next pass instead of being sent again", err.message),
                    ));
                }
            }
        }
    }

    /// The document named exactly `name`, if any (Dify's keyword filter is
    /// a substring match, so the exact name is checked here).
    pub async fn find_by_name(&self, name: &str) -> Result<Option<RemoteDoc>, SinkError> {
        let mut pages = Pages::new("Dify", "find_document", PAGE_SIZE);
        for page in 1.. {
            let resp = self
                .call("find_document", || {
                    self.request(Method::GET, "documents").query(&[
                        ("page", page.to_string()),
                        ("limit", PAGE_SIZE.to_string()),
                        ("keyword", name.to_owned()),
                    ])
                })
                .await?;
            let p: Page = self.json(resp).await?;
            if let Some(d) = p.data.iter().find(|d| d.name == name) {
                return Ok(Some(d.clone()));
            }
            pages.took(p.data.iter().map(|d| d.id.as_str()), p.total)?;
            if !p.has_more || p.data.is_empty() {
                break;
            }
            pages.more()?;
        }
        Ok(None)
    }

    /// Replaces a document's file: `PATCH /datasets/{id}/documents/{doc}`,
    /// the canonical route of newer Dify, or its deprecated alias `POST
    /// …/documents/{doc}/update-by-file` on servers that answer the PATCH
    /// with 405 (asked once for the client's life: updates sent side by
    /// side wait for the first one's answer). Both take the same multipart
    /// body and answer `{document, batch}`.
    pub async fn update_by_file(
        &self,
        doc_id: &str,
        name: &str,
        bytes: &bytes::Bytes,
    ) -> Result<(RemoteDoc, Option<String>), SinkError> {
        let resp = match self.patch_route.get() {
            Some(&patch) => self.send_update(patch, doc_id, name, bytes).await?,
            None => {
                let _asking = self.probing.lock().await;
                match self.patch_route.get() {
                    Some(&patch) => self.send_update(patch, doc_id, name, bytes).await?,
                    None => self.probe_update(doc_id, name, bytes).await?,
                }
            }
        };
        crate::monitor::uploaded("dify", bytes.len());
        self.doc_and_batch(resp).await
    }

    /// The first update: through the PATCH route, and through the alias if
    /// the server has no such route. Any other answer came from the route;
    /// no answer at all says nothing, so the next update asks again.
    async fn probe_update(
        &self,
        doc_id: &str,
        name: &str,
        bytes: &bytes::Bytes,
    ) -> Result<Response, SinkError> {
        match self.send_update(true, doc_id, name, bytes).await {
            Err(e) if e.status == Some(405) => {
                tracing::info!(
                    "this Dify has no PATCH route for documents; updating through update-by-file"
                );
                let _ = self.patch_route.set(false);
                self.send_update(false, doc_id, name, bytes).await
            }
            Err(e) if e.status.is_none() => Err(e),
            answered => {
                let _ = self.patch_route.set(true);
                answered
            }
        }
    }

    /// One update, by `PATCH …/documents/{doc}` or by the alias.
    async fn send_update(
        &self,
        patch: bool,
        doc_id: &str,
        name: &str,
        bytes: &bytes::Bytes,
    ) -> Result<Response, SinkError> {
        let (what, method, tail) = if patch {
            (
                "update_document",
                Method::PATCH,
                format!("documents/{doc_id}"),
            )
        } else {
            (
                "update_by_file",
                Method::POST,
                format!("documents/{doc_id}/update-by-file"),
            )
        };
        self.call(what, || {
            self.request(method.clone(), &tail)
                .multipart(Self::file_form(name, bytes, None))
        })
        .await
    }

    async fn doc_and_batch(
        &self,
        resp: Response,
    ) -> Result<(RemoteDoc, Option<String>), SinkError> {
        #[derive(Deserialize)]
        struct Created {
            document: RemoteDoc,
            #[serde(default)]
            batch: Option<String>,
        }
        let c: Created = self.json(resp).await?;
        Ok((c.document, c.batch))
    }

    /// `DELETE /datasets/{id}/documents/{doc}`
    pub async fn delete_document(&self, doc_id: &str) -> Result<(), SinkError> {
        let tail = format!("documents/{doc_id}");
        self.call("delete_document", || self.request(Method::DELETE, &tail))
            .await?;
        Ok(())
    }

    /// `GET /datasets/{id}/metadata`
    pub async fn list_fields(&self) -> Result<Vec<RemoteField>, SinkError> {
        #[derive(Deserialize)]
        struct Fields {
            doc_metadata: Vec<RemoteField>,
        }
        let resp = self
            .call("list_metadata_fields", || {
                self.request(Method::GET, "metadata")
            })
            .await?;
        Ok(self.json::<Fields>(resp).await?.doc_metadata)
    }

    /// `POST /datasets/{id}/metadata`
    pub async fn create_field(
        &self,
        name: &str,
        kind: FieldType,
    ) -> Result<RemoteField, SinkError> {
        let body = json!({ "type": kind.to_string(), "name": name });
        let resp = self
            .call("create_metadata_field", || {
                self.request(Method::POST, "metadata").json(&body)
            })
            .await;
        match resp {
            Ok(resp) => self.json(resp).await,
            // An earlier attempt was applied but its answer lost (or another
            // writer made it meanwhile): the field is there, use it.
            Err(e) if e.status == Some(400) && e.message.contains("already exists") => {
                let fields = self.list_fields().await?;
                fields
                    .into_iter()
                    .find(|f| f.name == name && f.kind == kind.to_string())
                    .ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    /// `POST /datasets/{id}/documents/metadata`, replacing each listed
    /// document's custom metadata with the values given (kbsync mirrors).
    pub async fn update_metadata(&self, updates: &[MetadataUpdate<'_>]) -> Result<(), SinkError> {
        let operation_data: Vec<Json> = updates
            .iter()
            .map(|u| {
                json!({
                    "document_id": u.doc_id,
                    "metadata_list": u.values.iter().map(|(id, name, value)| json!({
                        "id": id, "name": name, "value": value
                    })).collect::<Vec<_>>(),
                    "partial_update": false,
                })
            })
            .collect();
        let body = json!({ "operation_data": operation_data });
        self.call("update_document_metadata", || {
            self.request(Method::POST, "documents/metadata").json(&body)
        })
        .await?;
        Ok(())
    }

    /// `PATCH /datasets/{id}/documents/status/{action}`
    pub async fn set_status(
        &self,
        action: StatusAction,
        doc_ids: &[&str],
    ) -> Result<(), SinkError> {
        let tail = format!("documents/status/{}", action.as_str());
        let body = json!({ "document_ids": doc_ids });
        self.call("update_document_status", || {
            self.request(Method::PATCH, &tail).json(&body)
        })
        .await?;
        Ok(())
    }

    /// `GET /datasets/{id}/documents/{batch}/indexing-status`
    pub async fn indexing_status(&self, batch: &str) -> Result<Vec<IndexingEntry>, SinkError> {
        #[derive(Deserialize)]
        struct Status {
            data: Vec<IndexingEntry>,
        }
        let tail = format!("documents/{batch}/indexing-status");
        let resp = self
            .call("indexing_status", || self.request(Method::GET, &tail))
            .await?;
        Ok(self.json::<Status>(resp).await?.data)
    }
}

/// Whether a failed request may still have taken effect upstream.
fn may_have_been_applied(e: &SinkError) -> bool {
    match e.status {
        Some(s) => s >= 500,
        None => e.code != "connect",
    }
}

fn classify(answer: ErrorAnswer) -> SinkError {
    let status = answer.status;
    let retry_after = answer.retry_after;
    let code = answer
        .field(&["code"])
        .unwrap_or_else(|| answer.reason_code());
    let message = answer.field(&["message"]).unwrap_or_else(|| answer.text());
    let lower = message.to_lowercase();
    let (class, retry_after) = match status {
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => {
            (ErrorClass::Transient, retry_after)
        }
        s if s.is_server_error() => (ErrorClass::Transient, retry_after),
        // Dify signals its knowledge rate limit with a 403, not a 429, and
        // without Retry-After: the exponential backoff paces the retries.
        StatusCode::FORBIDDEN if lower.contains("rate limit") => {
            (ErrorClass::Transient, retry_after)
        }
        // Dify's metadata lock: another metadata operation on the same
        // document is still running ("…please wait a moment").
        StatusCode::BAD_REQUEST if lower.contains("operation is running") => {
            (ErrorClass::Transient, retry_after)
        }
        // A document that is indexing, flagged "being indexed" by an
        // enable/disable, or not available yet: a wait, never a refusal.
        StatusCode::BAD_REQUEST if not_ready_message(&lower).is_some() => {
            (ErrorClass::Transient, retry_after)
        }
        StatusCode::FORBIDDEN if lower.contains("api access is not enabled") => {
            (ErrorClass::Fatal, None)
        }
        StatusCode::UNAUTHORIZED => (ErrorClass::Fatal, None),
        StatusCode::NOT_FOUND if lower.contains("dataset not found") => (ErrorClass::Fatal, None),
        _ => (ErrorClass::Permanent, None),
    };
    SinkError {
        class,
        status: Some(status.as_u16()),
        code,
        message,
        retry_after,
    }
}

/// Why Dify refused a call on a document that exists but is not in a state
/// to take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// "Document is not available": indexing, queuing, errored, disabled
    /// or archived (only available documents can be updated).
    Unavailable,
    /// "Document: … is not completed.": a disable of one still indexing.
    NotCompleted,
    /// "… is being indexed, please try again later": the index task that
    /// an enable or disable started is still running (up to 10 minutes).
    BeingIndexed,
}

fn not_ready_message(lower: &str) -> Option<NotReady> {
    if lower.contains("being indexed") {
        Some(NotReady::BeingIndexed)
    } else if lower.contains("is not completed") {
        Some(NotReady::NotCompleted)
    } else if lower.contains("not available") {
        Some(NotReady::Unavailable)
    } else {
        None
    }
}

/// The document state a refusal speaks of, if any.
pub fn not_ready(e: &SinkError) -> Option<NotReady> {
    if e.status != Some(400) {
        return None;
    }
    not_ready_message(&e.message.to_lowercase())
}

/// Whether a refusal says the document itself does not exist: 404, or the
/// 400 "Document not found." of batch metadata.
pub fn gone(e: &SinkError) -> bool {
    match e.status {
        Some(404) => !e.message.to_lowercase().contains("dataset"),
        Some(400) => e.message.to_lowercase().contains("document not found"),
        _ => false,
    }
}
