//! Open WebUI's knowledge API (`/api/v1`), as a real 0.12.4 server
//! answers it (../shared/specs/openwebui/NOTES.md): an upload answers 200
//! at once and is processed in the background, so its outcome is only
//! known by polling; "not found" and "no access" come back as 400, 401,
//! 403 or 404 depending on the endpoint, so answers are classified by the
//! route and the detail text, never by the code alone.

use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::Deserialize;
use serde_json::{json, Map, Value as Json};

use super::OpenWebUiConfig;
use crate::secret::Secret;
use crate::sink::http::{sensitive, surely_not_applied, ErrorAnswer, Transport};
use crate::sink::paging::Pages;
use crate::sink::{ErrorClass, SinkError};

/// Files asked for per listing page (an admin's key gets them; any other
/// gets the server's 30, and the paging follows what came).
const PAGE: usize = 100;
/// The fewest files a page holds but the last: the listing's bound is
/// counted in these.
const SMALLEST_PAGE: usize = 30;

/// The detail the server gives for anything it does not find.
const NOT_FOUND: &str = "could not find what you're looking for";
/// The server's refusal of a knowledge base the key's user may not use.
const NO_ACCESS: &str = "do not have permission";
/// Open WebUI refuses a second file with the same extracted text in one
/// knowledge base.
const DUPLICATE: &str = "Duplicate content detected";

/// The upload answer of a server whose database was busy: no file was
/// made.
const UPLOAD_ERROR: &str = "Error uploading file";

/// Codes of the answers kbsync acts on.
pub const GONE: &str = "gone";
pub const DUPLICATE_CONTENT: &str = "duplicate_content";
/// An upload the server failed to store: safe to send again.
const BUSY: &str = "upload_not_stored";

/// Which kind of route answered: the same code means different things.
#[derive(Clone, Copy)]
enum Route {
    /// `knowledge/{id}/…`: not found or no access is about the target.
    Knowledge,
    /// `files/{id}…`: not found means that file is gone.
    File,
    /// `knowledge/{id}/file/add|remove`: not found means the file (the
    /// knowledge base was checked when the job was bound to it).
    Link,
}

/// A file as the listing, the upload and `GET /files/{id}` show it.
#[derive(Debug, Clone, Deserialize)]
pub struct FileRecord {
    pub id: String,
    /// The SHA-256 of the extracted text, once processed.
    #[serde(default)]
    pub hash: Option<String>,
    #[serde(default)]
    pub meta: Option<FileMeta>,
    #[serde(default)]
    pub data: Option<FileData>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct FileMeta {
    /// The upload's metadata, kept as it was sent.
    #[serde(default)]
    pub data: Option<Map<String, Json>>,
    /// The knowledge base the file is linked to (else `file-<id>`).
    #[serde(default)]
    pub collection_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct FileData {
    /// Why processing failed.
    #[serde(default)]
    pub error: Option<String>,
}

impl FileRecord {
    /// The upload metadata field `name`, when it is a string.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.meta.as_ref()?.data.as_ref()?.get(name)?.as_str()
    }
}

/// Where one file's processing ended.
pub enum Processed {
    Completed,
    /// With the server's reason (`data.error`).
    Failed(String),
}

pub struct OpenWebUiClient {
    transport: Transport,
    cfg: OpenWebUiConfig,
    key: Secret,
}

impl OpenWebUiClient {
    pub fn new(cfg: &OpenWebUiConfig, key: Secret) -> Result<Self, SinkError> {
        Ok(OpenWebUiClient {
            transport: Transport::new("openwebui", &cfg.calls, &[&key])?,
            cfg: cfg.clone(),
            key,
        })
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    fn url(&self, tail: &str) -> Url {
        self.cfg
            .base_url
            .join(&format!("api/v1/{tail}"))
            .expect("ids were validated to hold no '/'")
    }

    fn kb_url(&self, tail: &str) -> Url {
        self.url(&format!("knowledge/{}{tail}", self.cfg.knowledge_id))
    }

    /// One attempt, with the key; an error answer classified for `route`.
    async fn call(
        &self,
        op: &'static str,
        route: Route,
        method: Method,
        url: Url,
        body: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, SinkError> {
        let req = self.transport.http().request(method, url).header(
            reqwest::header::AUTHORIZATION,
            sensitive(&format!("Bearer {}", self.key.expose())),
        );
        let resp = self.transport.send(op, body(req)).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(classify(self.transport.error_answer(resp).await, route))
    }

    /// `call`, retried while it fails transiently.
    async fn retried(
        &self,
        op: &'static str,
        route: Route,
        method: Method,
        url: Url,
        body: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, SinkError> {
        self.transport
            .retrying(op, None, || {
                self.call(op, route, method.clone(), url.clone(), &body)
            })
            .await
    }

    /// `GET knowledge/{id}`: the knowledge base exists, the key reaches
    /// it, and its user may write to it. A key that may not write has its
    /// uploads completed but never linked, silently: refused here instead.
    pub async fn check(&self) -> Result<(), SinkError> {
        #[derive(Deserialize)]
        struct Kb {
            #[serde(default)]
            write_access: Option<bool>,
        }
        let resp = self
            .retried(
                "get_knowledge",
                Route::Knowledge,
                Method::GET,
                self.kb_url(""),
                |r| r,
            )
            .await?;
        let kb: Kb = self
            .transport
            .json(resp, "knowledge base from Open WebUI")
            .await?;
        if kb.write_access == Some(false) {
            return Err(SinkError::local(
                ErrorClass::Fatal,
                "no_write_access",
                format!(
                    "the API key's user can read knowledge base {} but not write to it: give that user (or a group of it) both read and write access to the knowledge base",
                    self.cfg.knowledge_id
                ),
            ));
        }
        Ok(())
    }

    /// The knowledge base's files a page at a time (oldest first, so that
    /// files added meanwhile come last), handed to `each`. `query` keeps
    /// those whose file name holds it. A page of none, or the total
    /// reached, ends the listing.
    pub async fn files(
        &self,
        query: Option<&str>,
        each: &mut dyn FnMut(Vec<FileRecord>) -> Result<(), SinkError>,
    ) -> Result<(), SinkError> {
        #[derive(Deserialize)]
        struct Page {
            items: Vec<FileRecord>,
            #[serde(default)]
            total: Option<u64>,
        }
        let mut pages = Pages::new("Open WebUI", "list_files", SMALLEST_PAGE);
        let mut seen = 0u64;
        for page in 1.. {
            let mut url = self.kb_url("/files");
            url.query_pairs_mut()
                .append_pair("page", &page.to_string())
                .append_pair("limit", &PAGE.to_string())
                .append_pair("order_by", "created_at")
                .append_pair("direction", "asc");
            if let Some(q) = query {
                url.query_pairs_mut().append_pair("query", q);
            }
            let resp = self
                .retried("list_files", Route::Knowledge, Method::GET, url, |r| r)
                .await?;
            let got: Page = self
                .transport
                .json(resp, "file listing from Open WebUI")
                .await?;
            pages.took(got.items.iter().map(|f| f.id.as_str()), got.total)?;
            let n = got.items.len() as u64;
            seen += n;
            each(got.items)?;
            if n == 0 || got.total.is_some_and(|t| seen >= t) {
                return Ok(());
            }
            pages.more()?;
        }
        unreachable!("pages are bounded")
    }

    /// `GET knowledge/{id}/files/pending`: files uploaded to be linked
    /// to the knowledge base that the server is still processing (not in
    /// the listing until it links them).
    pub async fn pending(&self) -> Result<Vec<FileRecord>, SinkError> {
        let resp = self
            .retried(
                "list_pending",
                Route::Knowledge,
                Method::GET,
                self.kb_url("/files/pending"),
                |r| r,
            )
            .await?;
        self.transport
            .json(resp, "pending files from Open WebUI")
            .await
    }

    /// `POST files/`: the file, with `metadata` (which names the knowledge
    /// base to link it to once processed, or none). Sent once when the
    /// answer may have been lost after the server took it: the caller
    /// marked the step started, so the next pass looks before sending
    /// again.
    pub async fn upload(
        &self,
        file_name: &str,
        bytes: &bytes::Bytes,
        metadata: &Json,
    ) -> Result<FileRecord, SinkError> {
        let form = || {
            let part = Part::stream(reqwest::Body::from(bytes.clone()))
                .file_name(file_name.to_owned())
                .mime_str(crate::sink::mime_for(file_name))
                .expect("a valid MIME type");
            Form::new()
                .part("file", part)
                .text("metadata", metadata.to_string())
        };
        let url = self.url("files/");
        let resp = self
            .transport
            .retrying_when("upload_file", None, not_applied, || async {
                self.call("upload_file", Route::File, Method::POST, url.clone(), |r| {
                    r.multipart(form())
                })
                .await
            })
            .await?;
        crate::monitor::uploaded("openwebui", bytes.len());
        self.transport
            .json(resp, "upload answer from Open WebUI")
            .await
    }

    /// `GET files/{id}`; `None` when the server does not know it.
    pub async fn file(&self, id: &str) -> Result<Option<FileRecord>, SinkError> {
        let url = self.url(&format!("files/{id}"));
        match self
            .retried("get_file", Route::File, Method::GET, url, |r| r)
            .await
        {
            Ok(resp) => Ok(Some(
                self.transport.json(resp, "file from Open WebUI").await?,
            )),
            Err(e) if e.code == GONE => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits for the server to process file `id`: polls its status, from
    /// the configured shortest retry delay doubling up to 5 s, for at most
    /// `processing_timeout_secs`.
    pub async fn processed(&self, id: &str) -> Result<Processed, SinkError> {
        #[derive(Deserialize)]
        struct Status {
            status: String,
        }
        let url = self.url(&format!("files/{id}/process/status"));
        let began = Instant::now();
        let mut delay = self.cfg.calls.retry.min_delay.max(Duration::from_millis(1));
        loop {
            let resp = self
                .retried(
                    "process_status",
                    Route::File,
                    Method::GET,
                    url.clone(),
                    |r| r,
                )
                .await?;
            let s: Status = self
                .transport
                .json(resp, "processing status from Open WebUI")
                .await?;
            match s.status.as_str() {
                "completed" => return Ok(Processed::Completed),
                "failed" => {
                    let why = self
                        .file(id)
                        .await?
                        .and_then(|f| f.data?.error)
                        .unwrap_or_else(|| "no reason given".to_owned());
                    return Ok(Processed::Failed(why));
                }
                _ => {}
            }
            if began.elapsed() + delay > self.cfg.processing_timeout {
                return Err(SinkError::local(
                    ErrorClass::Transient,
                    "processing",
                    format!(
                        "Open WebUI was still processing file {id} after {} s (processing_timeout_secs); a later pass takes it up",
                        self.cfg.processing_timeout.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// `DELETE files/{id}`: the file, its link and its chunks. One already
    /// gone is what was wanted.
    pub async fn delete_file(&self, id: &str) -> Result<(), SinkError> {
        let url = self.url(&format!("files/{id}"));
        match self
            .retried("delete_file", Route::File, Method::DELETE, url, |r| r)
            .await
        {
            Err(e) if e.code != GONE => Err(e),
            _ => Ok(()),
        }
    }

    /// `POST knowledge/{id}/sync/cleanup`: unlinks `ids` from the knowledge
    /// base and deletes each file no other knowledge base links. Ids it
    /// does not hold are skipped by the server.
    pub async fn cleanup(&self, ids: &[&str]) -> Result<(), SinkError> {
        let body = json!({ "file_ids": ids, "dir_ids": [] });
        let url = self.kb_url("/sync/cleanup");
        self.post("cleanup", Route::Knowledge, url, &body).await
    }

    /// `POST knowledge/{id}/file/add`: links a processed file.
    pub async fn add(&self, id: &str) -> Result<(), SinkError> {
        let url = self.kb_url("/file/add");
        self.post("add_file", Route::Link, url, &json!({ "file_id": id }))
            .await
    }

    /// `POST knowledge/{id}/file/remove?delete_file=false`: unlinks a
    /// file and keeps it.
    pub async fn unlink(&self, id: &str) -> Result<(), SinkError> {
        let mut url = self.kb_url("/file/remove");
        url.query_pairs_mut().append_pair("delete_file", "false");
        self.post("remove_file", Route::Link, url, &json!({ "file_id": id }))
            .await
    }

    /// A JSON body posted, retried while it fails transiently; the
    /// answer's body is not needed (`file/add` answers the whole
    /// knowledge base).
    async fn post(
        &self,
        op: &'static str,
        route: Route,
        url: Url,
        body: &Json,
    ) -> Result<(), SinkError> {
        self.retried(op, route, Method::POST, url, |r| r.json(body))
            .await
            .map(drop)
    }
}

/// Failures after which the server surely did not take the upload: those
/// of any upstream, and its answer that it could not store the file.
fn not_applied(e: &SinkError) -> bool {
    surely_not_applied(e) || e.code == BUSY
}

fn classify(answer: ErrorAnswer, route: Route) -> SinkError {
    let status = answer.status.as_u16();
    let retry_after = answer.retry_after;
    let detail = answer.field(&["detail"]).unwrap_or_else(|| answer.text());
    let not_found = detail.contains(NOT_FOUND);
    let (class, code) = match (status, route) {
        (401, _) => (ErrorClass::Fatal, "unauthorized"),
        (429, _) => (ErrorClass::Transient, "rate_limited"),
        (s, _) if s >= 500 => (ErrorClass::Transient, "server_error"),
        _ if detail.contains(DUPLICATE) => (ErrorClass::Permanent, DUPLICATE_CONTENT),
        (400, Route::File) if detail.contains(UPLOAD_ERROR) => (ErrorClass::Transient, BUSY),
        // The key works, but API keys or this route are switched off for
        // it, or its user may not use the knowledge base.
        (403, _) => (ErrorClass::Fatal, "forbidden"),
        (400 | 404, Route::Knowledge) if not_found => (ErrorClass::Fatal, "not_found"),
        (400 | 404, Route::Link) if not_found => (ErrorClass::Permanent, GONE),
        (400, Route::Knowledge | Route::Link) if detail.contains(NO_ACCESS) => {
            (ErrorClass::Fatal, "forbidden")
        }
        (404, Route::File) => (ErrorClass::Permanent, GONE),
        (413, _) => (ErrorClass::Permanent, "too_large"),
        _ => (ErrorClass::Permanent, "refused"),
    };
    SinkError {
        class,
        status: Some(status),
        code: code.to_owned(),
        message: detail,
        retry_after: if class == ErrorClass::Transient {
            retry_after
        } else {
            None
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, detail: &str) -> ErrorAnswer {
        ErrorAnswer::for_test(status, &json!({ "detail": detail }).to_string())
    }

    #[test]
    fn not_found_means_the_target_on_a_knowledge_route_and_gone_on_a_file_route() {
        let missing = "We could not find what you're looking for :/";
        let kb = classify(answer(400, missing), Route::Knowledge);
        assert_eq!(
            (kb.class, kb.code.as_str()),
            (ErrorClass::Fatal, "not_found")
        );
        let file = classify(answer(404, missing), Route::File);
        assert_eq!(
            (file.class, file.code.as_str()),
            (ErrorClass::Permanent, GONE)
        );
        let dup = classify(
            answer(
                400,
                "400: Duplicate content detected. Please provide unique content to proceed.",
            ),
            Route::Knowledge,
        );
        assert_eq!(dup.code, DUPLICATE_CONTENT);
        let busy = classify(answer(503, "down"), Route::File);
        assert!(busy.is_transient());
        // Observed with 50 uploads at once: the database was locked and
        // no file was made, so the upload is sent again.
        let locked = classify(answer(400, "[ERROR: Error uploading file]"), Route::File);
        assert!(locked.is_transient() && not_applied(&locked));
    }
}
