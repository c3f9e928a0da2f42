//! The git kind as the config and the service see it: what its section
//! declares (polled; a target that takes no content cannot mirror it).

use std::sync::Arc;

use toml::Spanned;

use super::config::{validate, GitConfig, RawGit};
use super::scan::open;
use crate::config::locate::Span;
use crate::config::ConfigError;
use crate::model::Capabilities;
use crate::source::registry::{At, RawSource};
use crate::source::seam::needs_content;
use crate::source::trigger::Trigger;
use crate::source::{Source, SourceConfig};

impl RawSource for Spanned<RawGit> {
    fn span(&self) -> Span {
        Spanned::span(self)
    }

    fn validate(self: Box<Self>, at: &At) -> Result<Arc<dyn SourceConfig>, ConfigError> {
        Ok(Arc::new(validate(at, *self)?))
    }
}

impl SourceConfig for GitConfig {
    fn kind(&self) -> &'static str {
        "git"
    }

    fn open(&self) -> Result<Box<dyn Source>, String> {
        open(self)
    }

    /// Polled: a remote tells no one of a push (the webhooks of the
    /// control API will).
    fn trigger(&self) -> Trigger {
        Trigger::Poll(self.poll_interval)
    }

    fn max_file_size(&self) -> u64 {
        self.max_file_size
    }

    fn refuses_target(&self, caps: Capabilities, target: &str) -> Option<String> {
        needs_content(caps, target, "a git repository")
    }
}
