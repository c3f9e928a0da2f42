//! Dify's Knowledge API: documents uploaded from content, metadata set in
//! batches, status changed in batches, deletes. The first sink, and the
//! only one with every capability.

mod client;
mod config;
mod indexing;
mod name;
mod push;

pub use config::{validate, DifyConfig, RawDify, BUILT_IN_FIELDS};
pub use name::document_name;

use futures::future::LocalBoxFuture;
use futures::FutureExt;

use crate::plan::Plan;
use crate::sink::{Capabilities, Outcome, PushContext, PushError, Sink, SinkConfig};
use client::DifyClient;

pub const CAPABILITIES: Capabilities = Capabilities {
    content: true,
    batch_metadata: true,
    status: true,
    delete: true,
    create_records: false,
};

impl SinkConfig for DifyConfig {
    fn kind(&self) -> &'static str {
        "dify"
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn identity(&self) -> String {
        format!("dify {}datasets/{}", self.base_url, self.dataset_id)
    }

    fn refuses_field(&self, name: &str) -> Option<String> {
        BUILT_IN_FIELDS.contains(&name).then(|| {
            format!(
                "{name:?} is one of Dify's built-in metadata fields ({}); choose another name",
                BUILT_IN_FIELDS.join(", ")
            )
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn connect(&self) -> Result<Box<dyn Sink>, String> {
        let key = self.api_key.load().map_err(|e| e.to_string())?;
        let client = DifyClient::new(self, key).map_err(|e| e.to_string())?;
        Ok(Box::new(DifySink {
            cfg: self.clone(),
            client,
        }))
    }
}

struct DifySink {
    cfg: DifyConfig,
    client: DifyClient,
}

impl Sink for DifySink {
    fn requests_sent(&self) -> u64 {
        self.client.requests_sent()
    }

    fn push<'a>(
        &'a self,
        ctx: PushContext<'a>,
        plan: &'a Plan,
    ) -> LocalBoxFuture<'a, Result<Outcome, PushError>> {
        async move {
            push::Pusher::new(ctx, &self.cfg, &self.client)
                .run(plan)
                .await
        }
        .boxed_local()
    }
}
