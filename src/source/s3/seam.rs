//! The S3 kind as the pass and the service see it: its `Source` (one poll
//! of the bucket, read in slices of keys: `source::remote`) and what its
//! section declares.

use std::sync::Arc;

use toml::Spanned;

use super::client::connect;
use super::config::{validate, RawS3, S3Config};
use super::listing::bucket_failure;
use super::scan::Place;
use crate::config::locate::Span;
use crate::config::ConfigError;
use crate::model::Capabilities;
use crate::source::registry::{At, RawSource};
use crate::source::remote::{polled, Remote};
use crate::source::seam::needs_content;
use crate::source::trigger::Trigger;
use crate::source::{Source, SourceConfig};

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
        let client = connect(self)?;
        let cfg = self.clone();
        Ok(polled(Remote {
            op: client.op.clone(),
            place: Place {
                label: format!("s3://{}/{}", cfg.bucket, cfg.prefix),
                bucket: Some(cfg.bucket.clone()),
                filter: cfg.filter.clone(),
                max_file_size: cfg.max_file_size,
            },
            redact: client.redact.clone(),
            bound: client.bound.clone(),
            fetch: client,
            failed: Box::new(move |e| bucket_failure(&cfg, e)),
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
