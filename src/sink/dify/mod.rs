//! Dify's Knowledge API: documents uploaded from content, metadata set in
//! batches, status changed in batches, deletes. The first sink, and the
//! only one with every capability.

mod client;
mod config;
mod hooks;
mod indexing;
mod name;
mod verbs;

pub use config::{validate, DifyConfig, RawDify, BUILT_IN_FIELDS};
pub use name::document_name;

use futures::future::LocalBoxFuture;
use futures::FutureExt;

use crate::secret::SecretSource;
use crate::sink::http::Transport;
use crate::sink::{Capabilities, Listed, Sink, SinkConfig, SinkError};
use crate::state::RemoteStatus;
use client::{DifyClient, RemoteDoc};

pub const CAPABILITIES: Capabilities = Capabilities {
    content: true,
    batch_metadata: true,
    status: true,
    delete: true,
    create_records: false,
    metadata_with_content: false,
};

impl SinkConfig for DifyConfig {
    fn kind(&self) -> &'static str {
        "dify"
    }

    fn places(&self) -> &crate::sink::Places {
        &self.places
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn identity(&self) -> String {
        let (place, prefix, _) = self.namespace().expect("dify names documents");
        if prefix.is_empty() {
            place
        } else {
            format!("{place} names {prefix}")
        }
    }

    fn namespace(&self) -> Option<(String, String, &'static str)> {
        Some((
            format!("dify {}datasets/{}", self.base_url, self.dataset_id),
            self.name_prefix.clone(),
            "name_prefix",
        ))
    }

    fn refuses_item(&self, key: &str) -> Option<String> {
        let ext = crate::sink::extension(key);
        let taken = self.allowed_extensions.contains(&ext) || self.as_text(key);
        (!taken).then(|| {
            format!(
                "Dify does not take {} files (allowed_extensions: {}); add the extension there if your Dify does (an ETL such as Unstructured), list it in send_as_text if it is text, or exclude the file",
                crate::sink::file_type(&ext),
                self.allowed_extensions.join(", ")
            )
        })
    }

    fn refuses_field(&self, name: &str) -> Option<String> {
        BUILT_IN_FIELDS.contains(&name).then(|| {
            format!(
                "{name:?} is one of Dify's built-in metadata fields ({}); choose another name",
                BUILT_IN_FIELDS.join(", ")
            )
        })
    }

    fn credentials(&self) -> Vec<(&'static str, &SecretSource)> {
        vec![("api_key", &self.api_key)]
    }

    fn connect(&self) -> Result<Box<dyn Sink>, String> {
        let key = self.api_key.load().map_err(|e| e.to_string())?;
        let client = DifyClient::new(self, key).map_err(|e| e.to_string())?;
        Ok(Box::new(DifySink {
            cfg: self.clone(),
            client,
            fields: Default::default(),
        }))
    }
}

/// The part of an owner mark (`kbsync_owner_<prefix>_<mirror>`) that two
/// mirrors of the same documents share.
fn owner_scope(mark: &str) -> &str {
    mark.rfind('_').map_or(mark, |i| &mark[..=i])
}

struct DifySink {
    cfg: DifyConfig,
    client: DifyClient,
    /// Field name → id of the fields the last `prepare` readied.
    fields: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Sink for DifySink {
    fn transport(&self) -> &Transport {
        self.client.transport()
    }

    fn claim<'a>(&'a self, mark: &'a str) -> LocalBoxFuture<'a, Result<Option<String>, SinkError>> {
        // A metadata field of the dataset, named after the mirror: one
        // list call, and one create the first time.
        async move {
            let fields = self.client.list_fields().await?;
            let scope = owner_scope(mark);
            if let Some(other) = fields
                .iter()
                .find(|f| f.name != mark && f.name.starts_with(scope))
            {
                return Ok(Some(other.name.clone()));
            }
            if !fields.iter().any(|f| f.name == mark) {
                self.client
                    .create_field(mark, crate::metadata::FieldType::String)
                    .await?;
            }
            Ok(None)
        }
        .boxed_local()
    }

    fn check_target(&self) -> LocalBoxFuture<'_, Result<(), SinkError>> {
        // The dataset's metadata fields: one small call that Dify answers
        // 404 for an unknown dataset and 401 for a refused key.
        async move { self.client.list_fields().await.map(drop) }.boxed_local()
    }

    fn list(&self) -> LocalBoxFuture<'_, Result<Option<Vec<Listed>>, SinkError>> {
        async move {
            let docs = self.client.list_documents().await?;
            Ok(Some(docs.into_iter().map(listed).collect()))
        }
        .boxed_local()
    }

    fn list_pages<'a>(
        &'a self,
        each: &'a mut (dyn FnMut(Vec<Listed>) -> Result<(), SinkError> + 'a),
    ) -> LocalBoxFuture<'a, Result<bool, SinkError>> {
        async move {
            self.client
                .each_documents_page(|docs| each(docs.into_iter().map(listed).collect()))
                .await?;
            Ok(true)
        }
        .boxed_local()
    }

    fn find<'a>(&'a self, key: &'a str) -> LocalBoxFuture<'a, Result<Option<Listed>, SinkError>> {
        async move {
            let doc = self
                .client
                .find_by_name(&self.cfg.document_name(key))
                .await?;
            Ok(doc.map(listed))
        }
        .boxed_local()
    }

    fn record_name(&self, key: &str) -> String {
        self.cfg.document_name(key)
    }

    fn verbs(&self) -> crate::sink::verbs::Verbs<'_> {
        crate::sink::verbs::Verbs {
            metadata: self,
            content: Some(self),
            records: None,
            status: Some(self),
            delete: Some(self),
        }
    }
}

fn listed(d: RemoteDoc) -> Listed {
    Listed {
        standing: Some(if d.archived {
            RemoteStatus::Archived
        } else if d.enabled {
            RemoteStatus::Enabled
        } else {
            RemoteStatus::Disabled
        }),
        state: d.indexing_status,
        error: d.error,
        carries: None,
        id: d.id,
        name: d.name,
    }
}
