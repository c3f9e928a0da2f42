//! Sharely.ai knowledge metadata. Its public API as kbsync uses it sets
//! metadata on knowledge items the config names (`[sync.sharely.knowledge]`);
//! there is no upload, status or delete here.

mod client;
mod config;
mod push;

pub use client::check_values;
pub use config::{validate, RawSharely, SharelyConfig, RESERVED_FIELDS};

use futures::future::LocalBoxFuture;
use futures::FutureExt;

use crate::plan::Plan;
use crate::sink::{Capabilities, Outcome, PushContext, PushError, Sink, SinkConfig};
use client::SharelyClient;

/// Metadata updates only: no upload, no listing, no status, no delete, no
/// batch.
pub const CAPABILITIES: Capabilities = Capabilities {
    content: false,
    batch_metadata: false,
    status: false,
    delete: false,
    create_records: false,
};

impl SinkConfig for SharelyConfig {
    fn kind(&self) -> &'static str {
        "sharely"
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn identity(&self) -> String {
        format!("sharely {}workspaces/{}", self.base_url, self.workspace_id)
    }

    fn bound(&self, key: &str) -> Option<String> {
        self.knowledge.get(key).cloned()
    }

    fn plan_inputs(&self) -> String {
        format!("{:?}", self.knowledge)
    }

    fn unbound_reason(&self) -> String {
        "no upstream item to attach its metadata to: map it under [sync.sharely.knowledge] (the sharely API documents no upload)".to_owned()
    }

    fn refuses_field(&self, name: &str) -> Option<String> {
        RESERVED_FIELDS.contains(&name.to_lowercase().as_str()).then(|| {
            format!(
                "{name:?} is reserved by Sharely ({}) and cannot be set through metadata; choose another name",
                RESERVED_FIELDS.join(", ")
            )
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn connect(&self) -> Result<Box<dyn Sink>, String> {
        let key = self.api_key.load().map_err(|e| e.to_string())?;
        let client = SharelyClient::new(self, key).map_err(|e| e.to_string())?;
        Ok(Box::new(SharelySink {
            concurrency: self.concurrency,
            client,
        }))
    }
}

struct SharelySink {
    concurrency: usize,
    client: SharelyClient,
}

impl Sink for SharelySink {
    fn requests_sent(&self) -> u64 {
        self.client.requests_sent()
    }

    fn push<'a>(
        &'a self,
        ctx: PushContext<'a>,
        plan: &'a Plan,
    ) -> LocalBoxFuture<'a, Result<Outcome, PushError>> {
        push::push(ctx, &self.client, self.concurrency, plan).boxed_local()
    }
}
