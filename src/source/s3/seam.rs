//! The S3 kind as the pass and the service see it: its `Source` (one poll
//! of the bucket, a single slice for now) and what its section declares.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use toml::Spanned;

use super::client::{connect, Client};
use super::config::{validate, RawS3, S3Config};
use super::scan::{poll, Against};
use crate::config::locate::Span;
use crate::config::ConfigError;
use crate::model::Capabilities;
use crate::sink::{ErrorClass, SinkError};
use crate::source::registry::{At, RawSource};
use crate::source::seam::needs_content;
use crate::source::trigger::Trigger;
use crate::source::{Content, ScanInput, Scanned, Scope, Source, SourceConfig, Survey};
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

    /// Every listed object is planned again (until the triage is generic
    /// over stamps).
    fn settles(&self) -> bool {
        false
    }

    fn survey<'a>(&'a self, input: ScanInput<'a>) -> BoxFuture<'a, Result<Survey, StateError>> {
        async move {
            let cached = input.state.load_items_in(input.job, input.scope)?;
            let listing = super::listing::list(&self.client.op, &self.cfg).await;
            let against = Against {
                cached: &cached,
                checksum: input.checksum,
                refuses: input.refuses,
            };
            let mut polled = poll(&self.client, &self.cfg, listing, against).await;
            for s in &mut polled.scan.skipped {
                s.reason = self.client.scrub(&s.reason);
            }
            let content = Box::new(Objects {
                client: self.client.clone(),
                bodies: polled.bodies,
                max: self.cfg.max_file_size,
            });
            let scanned = Scanned {
                scan: polled.scan,
                cached,
                content,
            };
            Ok(Survey::Whole(Some(Box::new((
                input.scope.clone(),
                scanned,
            )))))
        }
        .boxed()
    }
}

/// What a push uploads: the bytes this poll read, or (an upload owed from
/// an earlier poll, whose object did not move since) one GET now.
struct Objects {
    client: Client,
    bodies: HashMap<String, Bytes>,
    max: u64,
}

impl Content for Objects {
    fn read<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes, SinkError>> {
        async move {
            if let Some(body) = self.bodies.get(key) {
                return Ok(body.clone());
            }
            super::object::get(&self.client, key, self.max)
                .await
                .map(|o| o.body)
                .map_err(|reason| {
                    let reason = self.client.scrub(&reason);
                    SinkError::local(
                        ErrorClass::Transient,
                        "unreadable",
                        format!("{key}: {reason}; the next poll reads it again"),
                    )
                })
        }
        .boxed()
    }
}
