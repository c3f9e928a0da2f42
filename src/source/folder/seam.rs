//! The folder kind as the pass and the service see it: its `Source` (a
//! walk, then the slices of `source::sliced`, read by `FolderReader`) and
//! what its config section declares.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use toml::Spanned;

use super::config::{validate, FolderConfig, RawFolder};
use super::Stat;
use crate::config::locate::Span;
use crate::config::ConfigError;
use crate::source::fence::Fence;
use crate::source::registry::{At, RawSource};
use crate::source::trigger::{Trigger, WatchSpec};
use crate::source::{
    sliced, Content, FolderContent, ReadChanged, ScanInput, ScanResult, Scope, Source,
    SourceConfig, Survey, Trust,
};
use crate::state::{State, StateError};

impl RawSource for Spanned<RawFolder> {
    fn span(&self) -> Span {
        Spanned::span(self)
    }

    fn validate(self: Box<Self>, at: &At) -> Result<Arc<dyn SourceConfig>, ConfigError> {
        let raw = (*self).into_inner();
        Ok(Arc::new(validate(
            at.loc, at.base, at.roots, at.index, raw,
        )?))
    }
}

impl SourceConfig for FolderConfig {
    fn kind(&self) -> &'static str {
        "folder"
    }

    fn open(&self) -> Result<Box<dyn Source>, String> {
        Ok(Box::new(FolderSource { cfg: self.clone() }))
    }

    /// Watched: file events name the paths to pass over.
    fn trigger(&self) -> Trigger {
        let cfg = self.clone();
        Trigger::Watch(WatchSpec::new(self.root.clone(), move |start| {
            super::walk_builder(&cfg, start)
        }))
    }

    fn max_file_size(&self) -> u64 {
        self.max_file_size
    }

    fn unavailable(&self) -> Option<String> {
        self.unmounted()
    }
}

struct FolderSource {
    cfg: FolderConfig,
}

impl FolderSource {
    /// Whether a full pass should read every file: `rehash_interval`
    /// passed since the last pass that did.
    fn rehash_due(&self, state: &State, job: &str, scope: &Scope) -> Result<bool, StateError> {
        let Some(every) = self.cfg.rehash_interval else {
            return Ok(false);
        };
        if !scope.is_all() {
            return Ok(false);
        }
        let now = crate::state::unix_now();
        Ok(match state.rehashed_at(job)? {
            Some(at) => now - at >= every.as_secs() as i64,
            None => {
                // The first pass reads what it must anyway: start counting.
                state.mark_rehashed(job)?;
                false
            }
        })
    }
}

impl Source for FolderSource {
    fn scope(&self, asked: &Scope) -> Scope {
        asked.clone()
    }

    fn settles(&self) -> bool {
        true
    }

    fn unavailable(&self) -> BoxFuture<'_, Option<String>> {
        Box::pin(std::future::ready(self.cfg.unmounted()))
    }

    fn survey<'a>(&'a self, input: ScanInput<'a>) -> BoxFuture<'a, Result<Survey, StateError>> {
        async move {
            // The walk (stat only) runs while the cache is read: neither
            // needs the other until files are compared.
            let walking = {
                let (cfg, own, scope) = (self.cfg.clone(), input.own.clone(), input.scope.clone());
                tokio::task::spawn_blocking(move || {
                    let fence = Fence::new(&cfg.root, own.resolve());
                    let walked = super::walk(&cfg, &fence, &scope);
                    (walked, Arc::new(fence))
                })
            };
            let trust = input.state.plan_fingerprint(
                input.job,
                input.fingerprint,
                input.record_fingerprint,
            )?;
            let deep = input.checksum || self.rehash_due(input.state, input.job, input.scope)?;
            if deep {
                tracing::info!("reading every file (checksum pass)");
            }
            let (walked, fence) = walking.await.expect("the walk thread does not panic");
            let reader = FolderReader {
                cfg: self.cfg.clone(),
                fence,
                walk_started_ns: walked.started_ns,
                stop: input.stop.clone(),
            };
            let trust = Trust {
                settled: trust,
                deep,
            };
            sliced(&input, trust, walked.listed, reader)
        }
        .boxed()
    }
}

/// Reads what changed in a slice of the walk: hashes it, on all cores.
struct FolderReader {
    cfg: FolderConfig,
    /// What the walk kept out; every upload is held to it again.
    fence: Arc<Fence>,
    walk_started_ns: i64,
    stop: Arc<AtomicBool>,
}

impl ReadChanged for FolderReader {
    type Entry = Stat;

    fn read(&self, entries: Vec<Stat>) -> BoxFuture<'static, ScanResult> {
        let (cfg, stop, started) = (self.cfg.clone(), self.stop.clone(), self.walk_started_ns);
        async move {
            tokio::task::spawn_blocking(move || super::read_changed(&cfg, entries, started, &stop))
                .await
                .expect("the hashing threads do not panic")
        }
        .boxed()
    }

    fn content(&self) -> Box<dyn Content + Send + Sync> {
        Box::new(FolderContent {
            root: self.cfg.root.clone(),
            fence: self.fence.clone(),
            max_file_size: self.cfg.max_file_size,
        })
    }
}
