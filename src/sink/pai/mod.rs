//! Alibaba Cloud PAI (AIWorkSpace, API 2021-02-04): the metadata records of
//! a dataset's files, signed with ACS3-HMAC-SHA256. kbsync does not put
//! files into OSS/NAS: a file is expected at `uri_base + key`, and kbsync
//! keeps that record's metadata (creating the record when it is missing).

pub mod acs3;
mod client;
mod config;
mod verbs;

pub use client::{acs_date, API_VERSION};
pub use config::{validate, PaiConfig, RawPai};

use futures::future::LocalBoxFuture;
use futures::FutureExt;

use crate::secret::SecretSource;
use crate::sink::http::Transport;
use crate::sink::{no_place_for_a_mark, Capabilities, Listed, Sink, SinkConfig, SinkError};
use client::PaiClient;

/// Metadata records only. Records can be deleted (DeleteDatasetFileMetas),
/// not disabled.
pub const CAPABILITIES: Capabilities = Capabilities {
    content: false,
    batch_metadata: true,
    status: false,
    delete: true,
    create_records: true,
    metadata_with_content: false,
};

impl SinkConfig for PaiConfig {
    fn kind(&self) -> &'static str {
        "pai"
    }

    fn places(&self) -> &crate::sink::Places {
        &self.places
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn identity(&self) -> String {
        format!(
            "pai {} workspace {} dataset {} {} at {}",
            self.endpoint, self.workspace_id, self.dataset_id, self.dataset_version, self.uri_base
        )
    }

    fn credentials(&self) -> Vec<(&'static str, &SecretSource)> {
        vec![
            ("access_key_id", &self.access_key_id),
            ("access_key_secret", &self.access_key_secret),
        ]
    }

    fn namespace(&self) -> Option<(String, String, &'static str)> {
        Some((
            format!(
                "pai {} workspace {} dataset {} {}",
                self.endpoint, self.workspace_id, self.dataset_id, self.dataset_version
            ),
            self.uri_base.clone(),
            "uri_base",
        ))
    }

    fn connect(&self) -> Result<Box<dyn Sink>, String> {
        let id = self.access_key_id.load().map_err(|e| e.to_string())?;
        let secret = self.access_key_secret.load().map_err(|e| e.to_string())?;
        let client = PaiClient::new(self, id, secret).map_err(|e| e.to_string())?;
        Ok(Box::new(PaiSink {
            batch_size: self.batch_size,
            client,
        }))
    }
}

struct PaiSink {
    batch_size: usize,
    client: PaiClient,
}

impl Sink for PaiSink {
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
            let records = self.client.list().await?;
            Ok(Some(
                records
                    .into_iter()
                    .map(|(uri, id)| Listed {
                        id,
                        name: uri,
                        standing: None,
                        state: None,
                        error: None,
                        carries: None,
                    })
                    .collect(),
            ))
        }
        .boxed_local()
    }

    /// By URI, through a listing filtered on the file's name.
    fn find<'a>(&'a self, key: &'a str) -> LocalBoxFuture<'a, Result<Option<Listed>, SinkError>> {
        async move {
            let uri = self.client.uri_of(key);
            let id = self.client.find(&uri).await?;
            Ok(id.map(|id| Listed {
                id,
                name: uri,
                standing: None,
                state: None,
                error: None,
                carries: None,
            }))
        }
        .boxed_local()
    }

    fn record_name(&self, key: &str) -> String {
        self.client.uri_of(key)
    }

    fn verbs(&self) -> crate::sink::verbs::Verbs<'_> {
        crate::sink::verbs::Verbs {
            metadata: self,
            content: None,
            records: Some(self),
            status: None,
            delete: Some(self),
        }
    }
}
