//! Sharely.ai knowledge metadata client. Auth is two-step: the API key buys
//! an access token (`generate-access-key-token`), which every call carries
//! as a bearer token; the token is cached and bought again once when a call
//! answers 401. Sharely merges metadata, so a key kbsync set before and no
//! longer maps is removed explicitly (`removeMetadataKeys`).

use reqwest::{Method, Response, StatusCode, Url};
use serde::Deserialize;
use serde_json::{json, Value as Json};

use super::SharelyConfig;
use crate::metadata::Metadata;
use crate::secret::Secret;
use crate::sink::http::{network_error, ErrorAnswer, Transport};
use crate::sink::{ErrorClass, SinkError};

pub struct SharelyClient {
    transport: Transport,
    cfg: SharelyConfig,
    key: Secret,
    token: tokio::sync::Mutex<Option<Secret>>,
}

impl SharelyClient {
    pub fn new(cfg: &SharelyConfig, key: Secret) -> Result<Self, SinkError> {
        Ok(SharelyClient {
            transport: Transport::new(&cfg.calls)?,
            cfg: cfg.clone(),
            key,
            token: tokio::sync::Mutex::new(None),
        })
    }

    pub fn requests_sent(&self) -> u64 {
        self.transport.requests_sent()
    }

    fn url(&self, tail: &str) -> Url {
        self.cfg
            .base_url
            .join(tail)
            .expect("ids were validated to hold no '/'")
    }

    /// The cached access token, or a new one.
    async fn token(&self) -> Result<Secret, SinkError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        #[derive(Deserialize)]
        struct Token {
            token: String,
        }
        let url = self.url(&format!(
            "workspaces/{}/generate-access-key-token",
            self.cfg.workspace_id
        ));
        let resp = self
            .transport
            .send(
                self.transport
                    .http()
                    .post(url)
                    .header("x-api-key", self.key.expose())
                    .json(&json!({})),
            )
            .await?;
        if !resp.status().is_success() {
            let mut e = classify(resp).await;
            if matches!(e.status, Some(401) | Some(403)) {
                e.class = ErrorClass::Fatal;
                e.message = format!(
                    "the API key was refused when asking for an access token: {}",
                    e.message
                );
            }
            return Err(e);
        }
        let bytes = resp.bytes().await.map_err(network_error)?;
        let t: Token = serde_json::from_slice(&bytes).map_err(|e| {
            SinkError::local(
                ErrorClass::Transient,
                "bad_response",
                format!("unexpected token response from Sharely: {e}"),
            )
        })?;
        let t = Secret::new(t.token);
        *slot = Some(t.clone());
        Ok(t)
    }

    /// Forgets `used` if it is still the cached token (another call may
    /// already have bought a new one).
    async fn drop_token(&self, used: &Secret) {
        let mut slot = self.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.expose() == used.expose()) {
            *slot = None;
        }
    }

    /// `PUT /v1/workspaces/{ws}/knowledge/{id}/metadata`, retried on
    /// transient failures.
    pub async fn update_metadata(
        &self,
        knowledge_id: &str,
        metadata: &Metadata,
        remove: &[String],
    ) -> Result<(), SinkError> {
        let mut body = json!({
            "type": self.cfg.knowledge_type,
            "metadata": metadata,
        });
        if !remove.is_empty() {
            body["removeMetadataKeys"] = json!(remove);
        }
        let url = self.url(&format!(
            "v1/workspaces/{}/knowledge/{knowledge_id}/metadata",
            self.cfg.workspace_id
        ));
        self.transport
            .retrying("update_metadata", None, || async {
                self.authorized(Method::PUT, url.clone(), &body).await
            })
            .await
            .map(|_| ())
    }

    /// One call with the access token; a 401 buys a new token once.
    async fn authorized(
        &self,
        method: Method,
        url: Url,
        body: &Json,
    ) -> Result<Response, SinkError> {
        for fresh in [false, true] {
            let token = self.token().await?;
            let resp = self
                .transport
                .send(
                    self.transport
                        .http()
                        .request(method.clone(), url.clone())
                        .bearer_auth(token.expose())
                        .header("organizationid", &self.cfg.organization_id)
                        .json(body),
                )
                .await?;
            if resp.status().is_success() {
                return Ok(resp);
            }
            if resp.status() == StatusCode::UNAUTHORIZED && !fresh {
                tracing::info!("access token refused (expired?); getting a new one");
                self.drop_token(&token).await;
                continue;
            }
            let mut e = classify(resp).await;
            if e.status == Some(401) {
                e.class = ErrorClass::Fatal;
            }
            return Err(e);
        }
        unreachable!("the loop returns on its second round")
    }
}

async fn classify(resp: Response) -> SinkError {
    let answer = ErrorAnswer::read(resp).await;
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
