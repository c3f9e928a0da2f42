//! The WebDAV kind as the pass and the service see it: its `Source` (one
//! poll of the share, read in slices as the S3 kind's: `source::remote`)
//! and what its section declares.

use std::sync::Arc;

use toml::Spanned;

use super::client::{connect, share_failure};
use super::config::{validate, RawWebdav, WebdavConfig};
use crate::config::locate::Span;
use crate::config::ConfigError;
use crate::model::Capabilities;
use crate::source::registry::{At, RawSource};
use crate::source::remote::{polled, Remote};
use crate::source::s3::scan::Place;
use crate::source::seam::needs_content;
use crate::source::trigger::Trigger;
use crate::source::{Source, SourceConfig};

impl RawSource for Spanned<RawWebdav> {
    fn span(&self) -> Span {
        Spanned::span(self)
    }

    fn validate(self: Box<Self>, at: &At) -> Result<Arc<dyn SourceConfig>, ConfigError> {
        Ok(Arc::new(validate(at, *self)?))
    }
}

impl SourceConfig for WebdavConfig {
    fn kind(&self) -> &'static str {
        "webdav"
    }

    fn open(&self) -> Result<Box<dyn Source>, String> {
        let dav = connect(self)?;
        let cfg = self.clone();
        Ok(polled(Remote {
            op: dav.op.clone(),
            place: Place {
                label: cfg.url.to_string(),
                bucket: None,
                filter: cfg.filter.clone(),
                max_file_size: cfg.max_file_size,
            },
            redact: dav.redact.clone(),
            bound: dav.bound.clone(),
            fetch: dav,
            failed: Box::new(move |e| share_failure(&cfg, e)),
        }))
    }

    /// Polled: a share tells no one of a change.
    fn trigger(&self) -> Trigger {
        Trigger::Poll(self.poll_interval)
    }

    fn max_file_size(&self) -> u64 {
        self.max_file_size
    }

    fn refuses_target(&self, caps: Capabilities, target: &str) -> Option<String> {
        needs_content(caps, target, "a WebDAV share")
    }
}
