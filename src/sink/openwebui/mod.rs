//! Open WebUI knowledge bases. Each file is uploaded with its path and
//! its metadata in the upload's metadata (the server keeps that and has
//! no call to change it), processed by the server in the background and
//! linked to the knowledge base when done; a change is a new upload that
//! replaces the old file once it is linked (`verbs.rs`). kbsync keeps its
//! own state rather than the server's `sync/diff` protocol, which trusts
//! a client's hash, takes an empty manifest as "delete everything" and
//! sees one file per folder and name (README, Open WebUI).

mod client;
mod config;
mod verbs;

pub use config::{validate, OpenWebUiConfig, RawOpenWebUi, DEFAULT_EXTENSIONS, RESERVED_FIELDS};

use futures::future::LocalBoxFuture;
use futures::FutureExt;

use crate::metadata::Metadata;
use crate::secret::SecretSource;
use crate::sink::http::Transport;
use crate::sink::verbs::{Content, Delete, Verbs};
use crate::sink::{no_place_for_a_mark, Capabilities, Listed, Sink, SinkConfig, SinkError};
use client::{FileRecord, OpenWebUiClient};

/// The upload metadata field that holds the file's path: the files that
/// carry it are kbsync's, named by it (the server keeps only the base
/// name of an upload). Files without it were added by hand and are left
/// alone.
pub const PATH_FIELD: &str = "kbsync_path";

/// Uploads and deletes; metadata only with an upload; no status.
pub const CAPABILITIES: Capabilities = Capabilities {
    content: true,
    batch_metadata: false,
    status: false,
    delete: true,
    create_records: false,
    metadata_with_content: true,
};

impl SinkConfig for OpenWebUiConfig {
    fn kind(&self) -> &'static str {
        "openwebui"
    }

    fn places(&self) -> &crate::sink::Places {
        &self.places
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn identity(&self) -> String {
        format!("openwebui {}knowledge/{}", self.base_url, self.knowledge_id)
    }

    /// Files are named by their path alone: two jobs into one knowledge
    /// base could take each other's files.
    fn namespace(&self) -> Option<(String, String, &'static str)> {
        Some((self.identity(), String::new(), "knowledge_id"))
    }

    fn refuses_item(&self, key: &str) -> Option<String> {
        let ext = crate::sink::extension(key);
        (!self.allowed_extensions.contains(&ext)).then(|| {
            format!(
                "not uploaded to Open WebUI: {} files are not in allowed_extensions ({}); add the extension there if the server extracts text from it, or exclude the file",
                crate::sink::file_type(&ext),
                self.allowed_extensions.join(", ")
            )
        })
    }

    fn refuses_field(&self, name: &str) -> Option<String> {
        RESERVED_FIELDS
            .contains(&name.to_lowercase().as_str())
            .then(|| {
                format!(
                    "{name:?} cannot be carried to Open WebUI: the server acts on, overwrites or drops that upload metadata key ({}); choose another name",
                    RESERVED_FIELDS.join(", ")
                )
            })
    }

    fn credentials(&self) -> Vec<(&'static str, &SecretSource)> {
        vec![("api_key", &self.api_key)]
    }

    fn connect(&self) -> Result<Box<dyn Sink>, String> {
        let key = self.api_key.load().map_err(|e| e.to_string())?;
        let client = OpenWebUiClient::new(self, key).map_err(|e| e.to_string())?;
        Ok(Box::new(OpenWebUiSink {
            cfg: self.clone(),
            client,
        }))
    }
}

pub struct OpenWebUiSink {
    cfg: OpenWebUiConfig,
    client: OpenWebUiClient,
}

/// The state of a file the server is still processing.
pub(crate) const PROCESSING: &str = "processing";

/// Upload metadata kbsync sets besides the mapped fields.
const OWN_FIELDS: &[&str] = &[PATH_FIELD, "file_hash", "knowledge_id", "directory_id"];

/// A file of the knowledge base as the audit sees it, if kbsync made it:
/// linked (`processed`), or still being processed; with the mapped
/// metadata it carries.
fn listed(f: FileRecord, processed: bool) -> Option<Listed> {
    let name = f.field(PATH_FIELD)?.to_owned();
    let carried: Metadata = f
        .meta
        .and_then(|m| m.data)
        .into_iter()
        .flatten()
        .filter(|(k, _)| !OWN_FIELDS.contains(&k.as_str()))
        .collect();
    Some(Listed {
        id: f.id,
        name,
        standing: None,
        state: Some(if processed { "completed" } else { PROCESSING }.to_owned()),
        error: None,
        carries: serde_json::to_string(&carried).ok(),
    })
}

impl OpenWebUiSink {
    /// Every file of the job, a page at a time: first those the server is
    /// still processing (an upload whose answer was lost may be one), then
    /// the linked ones.
    async fn each_file(
        &self,
        query: Option<&str>,
        each: &mut dyn FnMut(Vec<Listed>) -> Result<(), SinkError>,
    ) -> Result<(), SinkError> {
        let pending = self.client.pending().await?;
        each(
            pending
                .into_iter()
                .filter_map(|f| listed(f, false))
                .collect(),
        )?;
        self.client
            .files(query, &mut |page| {
                each(page.into_iter().filter_map(|f| listed(f, true)).collect())
            })
            .await
    }
}

impl Sink for OpenWebUiSink {
    fn transport(&self) -> &Transport {
        self.client.transport()
    }

    fn claim<'a>(&'a self, _: &'a str) -> LocalBoxFuture<'a, Result<Option<String>, SinkError>> {
        no_place_for_a_mark()
    }

    fn check_target(&self) -> LocalBoxFuture<'_, Result<(), SinkError>> {
        self.client.check().boxed_local()
    }

    fn list(&self) -> LocalBoxFuture<'_, Result<Option<Vec<Listed>>, SinkError>> {
        async move {
            let mut all = Vec::new();
            self.each_file(None, &mut |page| {
                all.extend(page);
                Ok(())
            })
            .await?;
            Ok(Some(all))
        }
        .boxed_local()
    }

    fn list_pages<'a>(
        &'a self,
        each: &'a mut (dyn FnMut(Vec<Listed>) -> Result<(), SinkError> + 'a),
    ) -> LocalBoxFuture<'a, Result<bool, SinkError>> {
        async move {
            self.each_file(None, each).await?;
            Ok(true)
        }
        .boxed_local()
    }

    /// By the file's base name (the listing's search), then its path.
    fn find<'a>(&'a self, key: &'a str) -> LocalBoxFuture<'a, Result<Option<Listed>, SinkError>> {
        async move {
            let base = key.rsplit('/').next().unwrap_or(key);
            let mut found = None;
            self.each_file(Some(base), &mut |page| {
                found = found
                    .take()
                    .or_else(|| page.into_iter().find(|l| l.name == key));
                Ok(())
            })
            .await?;
            Ok(found)
        }
        .boxed_local()
    }

    fn verbs(&self) -> Verbs<'_> {
        Verbs {
            metadata: self,
            content: Some(self as &dyn Content),
            records: None,
            status: None,
            delete: Some(self as &dyn Delete),
        }
    }
}
