//! Sharely.ai knowledge. With `upload` (the default) files become FILE
//! items titled by their path (the Content verb and its hooks in
//! `verbs.rs`); without it, kbsync only sets metadata on the items the
//! config maps. The executor carries out both. Sharely has no
//! enable/disable/archive and no batch call.

mod client;
mod config;
mod token;
mod verbs;

pub use client::check_values;
pub use config::{validate, RawSharely, SharelyConfig, DEFAULT_EXTENSIONS, RESERVED_FIELDS};

use futures::future::LocalBoxFuture;
use futures::FutureExt;

use crate::secret::SecretSource;
use crate::sink::http::Transport;
use crate::sink::verbs::{Content, Delete, Verbs};
use crate::sink::{no_place_for_a_mark, Capabilities, Listed, Sink, SinkConfig, SinkError};
use client::SharelyClient;

/// Uploads, metadata and deletes, one item per call; no status.
pub const UPLOADING: Capabilities = Capabilities {
    content: true,
    batch_metadata: false,
    status: false,
    delete: true,
    create_records: false,
    metadata_with_content: false,
};

/// Metadata onto mapped items only.
pub const METADATA_ONLY: Capabilities = Capabilities {
    content: false,
    batch_metadata: false,
    status: false,
    delete: false,
    create_records: false,
    metadata_with_content: false,
};

impl SinkConfig for SharelyConfig {
    fn kind(&self) -> &'static str {
        "sharely"
    }

    fn places(&self) -> &crate::sink::Places {
        &self.places
    }

    fn capabilities(&self) -> Capabilities {
        if self.upload {
            UPLOADING
        } else {
            METADATA_ONLY
        }
    }

    fn identity(&self) -> String {
        format!("sharely {}workspaces/{}", self.base_url, self.workspace_id)
    }

    /// Uploaded items are titled by their path alone: two uploading jobs
    /// into one workspace could take each other's items.
    fn namespace(&self) -> Option<(String, String, &'static str)> {
        self.upload
            .then(|| (self.identity(), String::new(), "workspace_id"))
    }

    fn refuses_item(&self, key: &str) -> Option<String> {
        if !self.upload || self.knowledge.contains_key(key) {
            return None;
        }
        let ext = crate::sink::extension(key);
        (!self.allowed_extensions.contains(&ext)).then(|| {
            format!(
                "Sharely's upload does not take {} files (allowed_extensions: {}); add the extension there if yours does, or exclude the file",
                crate::sink::file_type(&ext),
                self.allowed_extensions.join(", ")
            )
        })
    }

    fn bound(&self, key: &str) -> Option<String> {
        self.knowledge.get(key).cloned()
    }

    fn plan_inputs(&self) -> String {
        format!("{:?}", self.knowledge)
    }

    fn unbound_reason(&self) -> String {
        "no upstream item to attach its metadata to: map it under [sync.sharely.knowledge], or let kbsync upload the files (upload = true)".to_owned()
    }

    fn refuses_field(&self, name: &str) -> Option<String> {
        RESERVED_FIELDS.contains(&name.to_lowercase().as_str()).then(|| {
            format!(
                "{name:?} is reserved by Sharely ({}) and cannot be set through metadata; choose another name",
                RESERVED_FIELDS.join(", ")
            )
        })
    }

    fn credentials(&self) -> Vec<(&'static str, &SecretSource)> {
        vec![("api_key", &self.api_key)]
    }

    fn connect(&self) -> Result<Box<dyn Sink>, String> {
        let key = self.api_key.load().map_err(|e| e.to_string())?;
        let client = SharelyClient::new(self, key).map_err(|e| e.to_string())?;
        Ok(Box::new(SharelySink {
            cfg: self.clone(),
            client,
        }))
    }
}

struct SharelySink {
    cfg: SharelyConfig,
    client: SharelyClient,
}

impl SharelySink {
    /// kbsync's own items (not those the config maps), for the audit.
    async fn listed(&self) -> Result<Vec<Listed>, SinkError> {
        let mapped: std::collections::HashSet<&String> = self.cfg.knowledge.values().collect();
        Ok(self
            .client
            .list()
            .await?
            .into_iter()
            .filter(|k| !mapped.contains(&k.id))
            .filter_map(|k| {
                Some(Listed {
                    name: k.name()?.to_owned(),
                    state: k.status.as_deref().map(processing_state),
                    error: None,
                    carries: None,
                    id: k.id,
                    standing: None,
                })
            })
            .collect())
    }
}

/// Sharely's item status in the audit's words: a failed one is `error`.
fn processing_state(status: &str) -> String {
    match status.to_ascii_uppercase().as_str() {
        "FAILED" | "ERROR" => "error".to_owned(),
        other => other.to_ascii_lowercase(),
    }
}

impl Sink for SharelySink {
    fn transport(&self) -> &Transport {
        self.client.transport()
    }

    fn claim<'a>(&'a self, _: &'a str) -> LocalBoxFuture<'a, Result<Option<String>, SinkError>> {
        no_place_for_a_mark()
    }

    fn check_target(&self) -> LocalBoxFuture<'_, Result<(), SinkError>> {
        async move { self.client.check().await }.boxed_local()
    }

    fn list(&self) -> LocalBoxFuture<'_, Result<Option<Vec<Listed>>, SinkError>> {
        async move {
            if !self.cfg.upload {
                return Ok(None);
            }
            self.listed().await.map(Some)
        }
        .boxed_local()
    }

    /// By title, in a fresh listing (the API's title search matches parts
    /// of titles, and pages by 50).
    fn find<'a>(&'a self, key: &'a str) -> LocalBoxFuture<'a, Result<Option<Listed>, SinkError>> {
        async move {
            if !self.cfg.upload {
                // Items are named in the config, never looked up by name
                // (and without a listing the audit does not run).
                return Err(SinkError::unsupported(
                    "Sharely items mapped in the config (upload = false) are not looked up by name",
                ));
            }
            Ok(self.listed().await?.into_iter().find(|l| l.name == key))
        }
        .boxed_local()
    }

    /// Content and deletes only for the items kbsync uploads: those the
    /// config maps are the user's own.
    fn verbs(&self) -> Verbs<'_> {
        Verbs {
            metadata: self,
            content: self.cfg.upload.then_some(self as &dyn Content),
            records: None,
            status: None,
            delete: self.cfg.upload.then_some(self as &dyn Delete),
        }
    }
}
