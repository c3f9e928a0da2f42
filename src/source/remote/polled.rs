//! A store polled through OpenDAL, as the pass sees it: listed once a
//! pass (first, so that a bucket or folder that is not there makes the
//! job unavailable before anything else is done, as a missing folder
//! root does), then read in slices by `s3::scan` against the cache.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use opendal::Operator;

use super::Bound;
use crate::sink::redact::Redactor;
use crate::source::s3::listing::{list, Failure, Listing};
use crate::source::s3::scan::{survey, Fetch, Place};
use crate::source::{ScanInput, Scope, Source, Survey};
use crate::state::StateError;

/// What a kind hands over: its operator, how it reads an object, what
/// is polled, and what a failed listing means for it.
pub(crate) struct Remote<F> {
    pub op: Operator,
    pub fetch: F,
    pub place: Place,
    pub failed: Box<dyn Fn(&opendal::Error) -> Failure + Send + Sync>,
    /// The secrets the kind sends, in every form they may come back in.
    pub redact: Arc<Redactor>,
    pub bound: Bound,
}

/// The kind's `Source`.
pub(crate) fn polled<F: Fetch + Clone + Send + 'static>(remote: Remote<F>) -> Box<dyn Source> {
    Box::new(Polled {
        remote,
        listed: Mutex::default(),
    })
}

struct Polled<F> {
    remote: Remote<F>,
    /// The listing `unavailable` made, for the survey that follows it.
    listed: Mutex<Option<Listing>>,
}

impl<F> Polled<F> {
    async fn list(&self) -> Listing {
        let r = &self.remote;
        list(&r.op, &r.bound, &r.place.label, &r.failed).await
    }

    fn listed(&self) -> std::sync::MutexGuard<'_, Option<Listing>> {
        self.listed.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<F: Fetch + Clone + Send + 'static> Source for Polled<F> {
    /// A listing is of the whole store.
    fn scope(&self, _asked: &Scope) -> Scope {
        Scope::All
    }

    /// An object found in sync is skipped while its stamp holds.
    fn settles(&self) -> bool {
        true
    }

    /// Lists the store: a bucket or folder that is missing, or that the
    /// credentials may not list, makes the job unavailable.
    fn unavailable(&self) -> BoxFuture<'_, Option<String>> {
        async move {
            let listing = self.list().await;
            let why = match &listing.failure {
                Some(Failure::Unavailable(why)) => Some(self.remote.redact.text(why)),
                _ => None,
            };
            *self.listed() = Some(listing);
            why
        }
        .boxed()
    }

    fn survey<'a>(&'a self, input: ScanInput<'a>) -> BoxFuture<'a, Result<Survey, StateError>> {
        async move {
            let taken = self.listed().take();
            let listing = match taken {
                Some(listing) => listing,
                None => self.list().await,
            };
            let r = &self.remote;
            survey(input, listing, &r.fetch, &r.place, &r.redact).await
        }
        .boxed()
    }
}
