//! The web kind as the pass and the service see it: its `Source` (one
//! poll of every page, a single slice) and what its config section declares.

use std::collections::HashSet;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use toml::Spanned;

use super::config::{validate, RawWeb, WebConfig};
use crate::config::locate::Span;
use crate::config::ConfigError;
use crate::model::Capabilities;
use crate::source::registry::{At, RawSource};
use crate::source::seam::{known_facts, needs_content};
use crate::source::trigger::Trigger;
use crate::source::{Downloaded, ScanInput, Scanned, Scope, Source, SourceConfig, Survey};
use crate::state::StateError;

impl RawSource for Spanned<RawWeb> {
    fn span(&self) -> Span {
        Spanned::span(self)
    }

    fn validate(self: Box<Self>, at: &At) -> Result<Arc<dyn SourceConfig>, ConfigError> {
        Ok(Arc::new(validate(at.loc, at.index, *self)?))
    }
}

impl SourceConfig for WebConfig {
    fn kind(&self) -> &'static str {
        "web"
    }

    fn open(&self) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(WebSource {
            client: super::client(self).map_err(|e| e.to_string())?,
            cfg: self.clone(),
        }))
    }

    /// Polled: nothing tells of a change to a page.
    fn trigger(&self) -> Trigger {
        Trigger::Poll(self.poll_interval)
    }

    fn max_file_size(&self) -> u64 {
        self.max_file_size
    }

    fn refuses_target(&self, caps: Capabilities, target: &str) -> Option<String> {
        needs_content(caps, target, "web pages")
    }
}

struct WebSource {
    cfg: WebConfig,
    client: reqwest::Client,
}

impl Source for WebSource {
    fn scope(&self, _asked: &Scope) -> Scope {
        Scope::All
    }

    /// A web job re-plans every page it fetched.
    fn settles(&self) -> bool {
        false
    }

    fn survey<'a>(&'a self, input: ScanInput<'a>) -> BoxFuture<'a, Result<Survey, StateError>> {
        async move {
            let cached = input.state.load_items_in(input.job, input.scope)?;
            let known = known_facts(&cached);
            let in_sync: HashSet<String> = cached
                .values()
                .filter(|c| {
                    c.present && c.facts.as_ref().map(|f| &f.hash) == c.pushed_hash.as_ref()
                })
                .map(|c| c.key.clone())
                .collect();
            let fetched =
                super::scan(&self.client, &self.cfg, &known, &in_sync, input.refuses).await;
            let scanned = Scanned {
                scan: fetched.scan,
                cached,
                content: Box::new(Downloaded(fetched.bodies)),
            };
            Ok(Survey::Whole(Some(Box::new((
                input.scope.clone(),
                scanned,
            )))))
        }
        .boxed()
    }
}
