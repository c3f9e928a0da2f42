//! The git kind as the config and the service see it: what its section
//! declares (polled; a target that takes no content cannot mirror it).

use std::sync::Arc;

use toml::Spanned;

use super::config::{validate, Follow, GitConfig, RawGit};
use super::scan::open;
use crate::config::locate::Span;
use crate::config::ConfigError;
use crate::model::Capabilities;
use crate::source::registry::{At, RawSource};
use crate::source::seam::needs_content;
use crate::source::trigger::Trigger;
use crate::source::{Push, Source, SourceConfig};

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

    /// The push names this repository and moved the branch or tag the job
    /// follows (the default branch, for a job that follows `HEAD`).
    fn pushed(&self, push: &Push) -> bool {
        if !push.names(&self.url) {
            return false;
        }
        match &self.follow {
            Follow::Head => push
                .default_branch
                .as_ref()
                .is_none_or(|b| push.git_ref == format!("refs/heads/{b}")),
            follow => push.git_ref == follow.remote(),
        }
    }

    fn refuses_target(&self, caps: Capabilities, target: &str) -> Option<String> {
        needs_content(caps, target, "a git repository")
    }
}
