//! Sharely.ai knowledge client. Auth is two-step: the API key buys an
//! access token (`generate-access-key-token`), which every call carries as
//! a bearer token. The token is kept until a few minutes before it expires
//! (`token.rs`), and bought again once when a call answers 401 anyway.
//! Sharely merges metadata, so a key kbsync set before and no longer maps
//! is removed explicitly (`removeMetadataKeys`); and the metadata call must
//! name the item's real `type`, which is read from Sharely and remembered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use reqwest::multipart::{Form, Part};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::token;
use super::SharelyConfig;
use crate::metadata::Metadata;
use crate::secret::Secret;
use crate::sink::http::{sensitive, surely_not_applied, ErrorAnswer, Transport};
use crate::sink::paging::Pages;
use crate::sink::{ErrorClass, SinkError};

/// Items per listing page: the API's maximum.
const PAGE: usize = 1000;

/// A knowledge item as list, get and upload show it.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawKnowledge")]
pub struct Knowledge {
    pub id: String,
    pub title: Option<String>,
    pub kind: Option<String>,
    pub status: Option<String>,
    pub metadata: Option<Json>,
}

/// The upload answer names the id twice (`id`, `knowledgeId`); either will
/// do.
#[derive(Deserialize)]
struct RawKnowledge {
    id: Option<String>,
    #[serde(rename = "knowledgeId")]
    knowledge_id: Option<String>,
    title: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    status: Option<String>,
    metadata: Option<Json>,
}

impl TryFrom<RawKnowledge> for Knowledge {
    type Error = &'static str;

    fn try_from(r: RawKnowledge) -> Result<Self, Self::Error> {
        Ok(Knowledge {
            id: r.id.or(r.knowledge_id).ok_or("an item without an id")?,
            title: r.title,
            kind: r.kind,
            status: r.status,
            metadata: r.metadata,
        })
    }
}

impl Knowledge {
    /// The name kbsync knows the item by: its title, else the file name it
    /// was uploaded from.
    pub fn name(&self) -> Option<&str> {
        self.title.as_deref().or_else(|| {
            self.metadata
                .as_ref()
                .and_then(|m| m.get("filename"))
                .and_then(Json::as_str)
        })
    }
}

struct Token {
    secret: Secret,
    renew_at: Instant,
}

pub struct SharelyClient {
    transport: Transport,
    cfg: SharelyConfig,
    key: Secret,
    token: tokio::sync::Mutex<Option<Token>>,
    /// Item id → its `type`, as Sharely last showed it.
    kinds: Mutex<HashMap<String, String>>,
}

impl SharelyClient {
    pub fn new(cfg: &SharelyConfig, key: Secret) -> Result<Self, SinkError> {
        Ok(SharelyClient {
            transport: Transport::new("sharely", &cfg.calls, &[&key])?,
            cfg: cfg.clone(),
            key,
            token: tokio::sync::Mutex::new(None),
            kinds: Mutex::new(HashMap::new()),
        })
    }

    /// The transport the client's calls go through (request count, rest).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    fn url(&self, tail: &str) -> Url {
        self.cfg
            .base_url
            .join(tail)
            .expect("ids were validated to hold no '/'")
    }

    fn item_url(&self, tail: &str) -> Url {
        self.url(&format!(
            "v1/workspaces/{}/knowledge{tail}",
            self.cfg.workspace_id
        ))
    }

    /// The access token, bought again when it is near its end.
    async fn token(&self) -> Result<Secret, SinkError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(t.secret.clone());
        }
        #[derive(Deserialize)]
        struct Answer {
            token: String,
        }
        let url = self.url(&format!(
            "workspaces/{}/generate-access-key-token",
            self.cfg.workspace_id
        ));
        let resp = self
            .transport
            .send(
                "access_token",
                self.transport
                    .http()
                    .post(url)
                    .header("x-api-key", sensitive(self.key.expose()))
                    .json(&json!({})),
            )
            .await?;
        if !resp.status().is_success() {
            let mut e = classify(self.transport.error_answer(resp).await);
            if matches!(e.status, Some(401) | Some(403)) {
                e.class = ErrorClass::Fatal;
                e.message = format!(
                    "the API key was refused when asking for an access token: {}",
                    e.message
                );
            }
            return Err(e);
        }
        let answer: Answer = self
            .transport
            .json_with_credential(resp, "token response from Sharely")
            .await?;
        let usable = token::usable_for(&answer.token, crate::state::unix_now());
        if usable.is_zero() {
            tracing::warn!(
                "Sharely gave an access token that expires within {} minutes; it is bought again for every call",
                token::MARGIN.as_secs() / 60
            );
        }
        let secret = Secret::new(answer.token);
        self.transport.conceal(&secret);
        *slot = Some(Token {
            secret: secret.clone(),
            renew_at: Instant::now() + usable,
        });
        Ok(secret)
    }

    /// Forgets `used` if it is still the cached token (another call may
    /// already have bought a new one).
    async fn drop_token(&self, used: &Secret) {
        let mut slot = self.token.lock().await;
        if slot
            .as_ref()
            .is_some_and(|t| t.secret.expose() == used.expose())
        {
            *slot = None;
        }
    }

    /// One item of the listing: proves the workspace and the key before a
    /// job is bound to them.
    pub async fn check(&self) -> Result<(), SinkError> {
        let mut url = self.item_url("");
        url.query_pairs_mut()
            .append_pair("limit", "1")
            .append_pair("offset", "0");
        self.transport
            .retrying("list_knowledge", None, || async {
                self.authorized("list_knowledge", Method::GET, url.clone(), |r| r)
                    .await
            })
            .await
            .map(drop)
    }

    /// Every knowledge item of the workspace, page by page. A page shorter
    /// than asked for, or the `total` reached, ends the listing.
    pub async fn list(&self) -> Result<Vec<Knowledge>, SinkError> {
        #[derive(Deserialize)]
        struct Page {
            knowledge: Vec<Knowledge>,
            #[serde(default)]
            total: Option<u64>,
        }
        let mut all: Vec<Knowledge> = Vec::new();
        let mut pages = Pages::new("Sharely", "list_knowledge", PAGE);
        loop {
            let mut url = self.item_url("");
            url.query_pairs_mut()
                .append_pair("limit", &PAGE.to_string())
                .append_pair("offset", &all.len().to_string());
            let resp = self
                .transport
                .retrying("list_knowledge", None, || async {
                    self.authorized("list_knowledge", Method::GET, url.clone(), |r| r)
                        .await
                })
                .await?;
            let page: Page = self
                .transport
                .json(resp, "knowledge listing from Sharely")
                .await?;
            pages.took(page.knowledge.iter().map(|k| k.id.as_str()), page.total)?;
            let got = page.knowledge.len();
            all.extend(page.knowledge);
            if got < PAGE || page.total.is_some_and(|t| all.len() as u64 >= t) {
                break;
            }
            pages.more()?;
        }
        self.remember_kinds(&all);
        Ok(all)
    }

    /// One item; `None` when Sharely does not know it (404).
    pub async fn get(&self, id: &str) -> Result<Option<Knowledge>, SinkError> {
        let url = self.item_url(&format!("/{id}"));
        let resp = self
            .transport
            .retrying("get_knowledge", None, || async {
                self.authorized("get_knowledge", Method::GET, url.clone(), |r| r)
                    .await
            })
            .await;
        match resp {
            Ok(resp) => {
                let item: Knowledge = self
                    .transport
                    .json(resp, "knowledge item from Sharely")
                    .await?;
                self.remember_kinds(std::slice::from_ref(&item));
                Ok(Some(item))
            }
            Err(e) if e.status == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST …/knowledge/file`: a new FILE item titled `title`. Sent once
    /// when the answer may have been lost after the server got the file
    /// (a 5xx, a timeout): sending it again could make a second item. The
    /// caller marked the step started, so the next pass looks first.
    pub async fn upload(
        &self,
        title: &str,
        file_name: &str,
        bytes: &bytes::Bytes,
    ) -> Result<Knowledge, SinkError> {
        let url = self.item_url("/file");
        let form = || {
            let part = Part::stream(reqwest::Body::from(bytes.clone()))
                .file_name(file_name.to_owned())
                .mime_str(crate::sink::mime_for(file_name))
                .expect("a valid MIME type");
            Form::new()
                .part("file", part)
                .text("title", title.to_owned())
        };
        let resp = self
            .transport
            .retrying_when("upload_file", None, surely_not_applied, || async {
                self.authorized("upload_file", Method::POST, url.clone(), |r| {
                    r.multipart(form())
                })
                .await
            })
            .await?;
        crate::monitor::uploaded("sharely", bytes.len());
        let mut item: Knowledge = self
            .transport
            .json(resp, "upload answer from Sharely")
            .await?;
        // An upload makes a FILE item, whatever the answer leaves out.
        item.kind.get_or_insert_with(|| "FILE".to_owned());
        self.remember_kinds(std::slice::from_ref(&item));
        Ok(item)
    }

    /// `DELETE …/knowledge/{id}`. An item already gone is what was wanted.
    pub async fn delete(&self, id: &str) -> Result<(), SinkError> {
        let url = self.item_url(&format!("/{id}"));
        match self
            .transport
            .retrying("delete_knowledge", None, || async {
                self.authorized("delete_knowledge", Method::DELETE, url.clone(), |r| r)
                    .await
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The item's `type`: as configured, as Sharely showed it before, or
    /// read from it now.
    async fn kind_of(&self, id: &str) -> Result<String, SinkError> {
        if let Some(t) = &self.cfg.knowledge_type {
            return Ok(t.clone());
        }
        if let Some(t) = self.kinds.lock().expect("not poisoned").get(id) {
            return Ok(t.clone());
        }
        match self.get(id).await? {
            Some(Knowledge { kind: Some(t), .. }) => Ok(t),
            Some(_) => Err(SinkError::local(
                ErrorClass::Permanent,
                "bad_response",
                format!("Sharely shows knowledge item {id} without a type; set knowledge_type"),
            )),
            None => Err(SinkError {
                class: ErrorClass::Permanent,
                status: Some(404),
                code: "Not Found".into(),
                message: format!("knowledge item {id} does not exist in the workspace"),
                retry_after: None,
            }),
        }
    }

    /// Learns the types of `ids` by one listing when any is unknown, so
    /// that a pass over many mapped items does not read them one by one.
    pub async fn learn_kinds(&self, ids: &[&str]) {
        if self.cfg.knowledge_type.is_some() {
            return;
        }
        let unknown = {
            let kinds = self.kinds.lock().expect("not poisoned");
            ids.iter().any(|id| !kinds.contains_key(*id))
        };
        if unknown {
            // On failure each item is read on its own instead.
            if let Err(e) = self.list().await {
                tracing::debug!(error = %e, "listing to learn item types failed");
            }
        }
    }

    fn remember_kinds(&self, items: &[Knowledge]) {
        let mut kinds = self.kinds.lock().expect("not poisoned");
        for i in items {
            if let Some(t) = &i.kind {
                kinds.insert(i.id.clone(), t.clone());
            }
        }
    }

    /// `PUT /v1/workspaces/{ws}/knowledge/{id}/metadata`, retried on
    /// transient failures (an item still processing answers 403).
    pub async fn update_metadata(
        &self,
        knowledge_id: &str,
        metadata: &Metadata,
        remove: &[String],
    ) -> Result<(), SinkError> {
        let kind = self.kind_of(knowledge_id).await?;
        let mut body = json!({
            "type": kind,
            "metadata": metadata,
        });
        if !remove.is_empty() {
            body["removeMetadataKeys"] = json!(remove);
        }
        let url = self.item_url(&format!("/{knowledge_id}/metadata"));
        self.transport
            .retrying("update_metadata", None, || async {
                self.authorized("update_metadata", Method::PUT, url.clone(), |r| {
                    r.json(&body)
                })
                .await
            })
            .await
            .map(|_| ())
    }

    /// One call with the access token; a 401 buys a new token once.
    async fn authorized(
        &self,
        op: &'static str,
        method: Method,
        url: Url,
        body: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, SinkError> {
        for fresh in [false, true] {
            let token = self.token().await?;
            let req = self
                .transport
                .http()
                .request(method.clone(), url.clone())
                .header(
                    reqwest::header::AUTHORIZATION,
                    sensitive(&format!("Bearer {}", token.expose())),
                )
                .header("organizationid", &self.cfg.organization_id);
            let resp = self.transport.send(op, body(req)).await?;
            if resp.status().is_success() {
                return Ok(resp);
            }
            if resp.status() == StatusCode::UNAUTHORIZED && !fresh {
                tracing::info!("access token refused (expired?); getting a new one");
                self.drop_token(&token).await;
                continue;
            }
            let mut e = classify(self.transport.error_answer(resp).await);
            if e.status == Some(401) {
                e.class = ErrorClass::Fatal;
            }
            return Err(e);
        }
        unreachable!("the loop returns on its second round")
    }
}

fn classify(answer: ErrorAnswer) -> SinkError {
    let (status, retry_after) = (answer.status, answer.retry_after);
    let code = answer
        .field(&["error"])
        .unwrap_or_else(|| answer.reason_code());
    let message = answer.field(&["message"]).unwrap_or_else(|| answer.text());
    let class = match status.as_u16() {
        // The item is not COMPLETED yet: Sharely says to retry later.
        403 | 408 | 429 => ErrorClass::Transient,
        s if s >= 500 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    };
    SinkError {
        class,
        status: Some(status.as_u16()),
        code,
        message,
        retry_after: if class == ErrorClass::Transient {
            retry_after
        } else {
            None
        },
    }
}

/// Sharely takes strings and numbers only: anything else is refused here,
/// per item, before a request is made.
pub fn check_values(metadata: &Metadata) -> Result<(), SinkError> {
    for (name, value) in metadata {
        if !(value.is_string() || value.is_number()) {
            return Err(SinkError::local(
                ErrorClass::Permanent,
                "invalid_metadata",
                format!("field {name:?}: Sharely takes only strings and numbers, not {value}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_strings_and_numbers_pass() {
        let ok: Metadata = [("a".to_owned(), json!("x")), ("n".to_owned(), json!(2.5))]
            .into_iter()
            .collect();
        assert!(check_values(&ok).is_ok());
        for bad in [json!(true), json!(null), json!([1]), json!({"k": 1})] {
            let m: Metadata = [("f".to_owned(), bad.clone())].into_iter().collect();
            let e = check_values(&m).unwrap_err();
            assert_eq!(e.code, "invalid_metadata");
            assert_eq!(e.class, ErrorClass::Permanent);
            assert_eq!(
                e.message,
                format!("field \"f\": Sharely takes only strings and numbers, not {bad}")
            );
        }
    }
}
