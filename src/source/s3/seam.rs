//! The S3 kind as the pass and the service see it: its `Source` (one poll
//! of the bucket, read in slices of keys) and what its section declares.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use toml::Spanned;

use super::client::{connect, Client};
use super::config::{validate, RawS3, S3Config};
use super::listing::bucket_failure;
use super::scan::{survey, Place};
use crate::config::locate::Span;
use crate::config::ConfigError;
use crate::model::Capabilities;
use crate::source::registry::{At, RawSource};
use crate::source::seam::needs_content;
use crate::source::trigger::Trigger;
use crate::source::{ScanInput, Scope, Source, SourceConfig, Survey};
use crate::state::StateError;

impl RawSource for Spanned<RawS3> {
    fn span(&self) -> Span {
        Spanned::span(self)
    }

    fn validate(self: Box<Self>, at: &At) -> Result<Arc<dyn SourceConfig>, ConfigError> {
        Ok(Arc::new(validate(at, *self)?))
    }
}

impl SourceConfig for S3Config {
    fn kind(&self) -> &'static str {
        "s3"
    }

    fn open(&self) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(S3Source {
            client: connect(self)?,
            cfg: self.clone(),
        }))
    }

    /// Polled: a bucket tells no one of a change.
    fn trigger(&self) -> Trigger {
        Trigger::Poll(self.poll_interval)
    }

    fn max_file_size(&self) -> u64 {
        self.max_file_size
    }

    fn refuses_target(&self, caps: Capabilities, target: &str) -> Option<String> {
        needs_content(caps, target, "a bucket")
    }
}

struct S3Source {
    cfg: S3Config,
    client: Client,
}

impl Source for S3Source {
    /// A listing is of the whole prefix.
    fn scope(&self, _asked: &Scope) -> Scope {
        Scope::All
    }

    /// An object found in sync is skipped while its stamp holds.
    fn settles(&self) -> bool {
        true
    }

    fn survey<'a>(&'a self, input: ScanInput<'a>) -> BoxFuture<'a, Result<Survey, StateError>> {
        let cfg = &self.cfg;
        let place = Place {
            label: format!("s3://{}/{}", cfg.bucket, cfg.prefix),
            bucket: Some(&cfg.bucket),
            filter: &cfg.filter,
            max_file_size: cfg.max_file_size,
        };
        let client = &self.client;
        let failed = |e: &opendal::Error| bucket_failure(cfg, e);
        let op = &client.op;
        survey(
            input,
            op,
            &client.bound,
            failed,
            client,
            place,
            &client.redact,
        )
        .boxed()
    }
}
