//! The WebDAV kind as the pass and the service see it: its `Source` (one
//! poll of the share, read in slices as the S3 kind's) and what its
//! section declares.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use toml::Spanned;

use super::client::{connect, share_failure, Dav};
use super::config::{validate, RawWebdav, WebdavConfig};
use crate::config::locate::Span;
use crate::config::ConfigError;
use crate::model::Capabilities;
use crate::source::registry::{At, RawSource};
use crate::source::s3::scan::{survey, Place};
use crate::source::seam::needs_content;
use crate::source::trigger::Trigger;
use crate::source::{ScanInput, Scope, Source, SourceConfig, Survey};
use crate::state::StateError;

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
        Ok(Box::new(WebdavSource {
            dav: connect(self)?,
            cfg: self.clone(),
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

struct WebdavSource {
    cfg: WebdavConfig,
    dav: Dav,
}

impl Source for WebdavSource {
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
            label: cfg.url.to_string(),
            bucket: None,
            filter: &cfg.filter,
            max_file_size: cfg.max_file_size,
        };
        let failed = |e: &opendal::Error| share_failure(cfg, e);
        let dav = &self.dav;
        survey(input, &dav.op, &dav.bound, failed, dav, place, &dav.redact).boxed()
    }
}
