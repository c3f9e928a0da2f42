//! The one place that names every upstream: which `[sync.X]` tables are
//! sinks, and how each is read. Adding an upstream means its folder under
//! `src/sink/` and one line in `SINKS`.

use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::de::{DeValue, ValueDeserializer};
use toml::Spanned;

use super::{dify, pai, sharely, SinkConfig};
use crate::config::locate::{Locator, Span};
use crate::config::section::Section;
use crate::config::ConfigError;

/// Reads a job's section of one upstream, as written (shape and types only).
pub type Read = fn(Spanned<DeValue<'_>>) -> Result<Box<dyn RawSink>, toml::de::Error>;

/// The upstreams, by the section name a `[[sync]]` job spells.
pub const SINKS: &[(&str, Read)] = &[
    ("dify", read::<dify::RawDify>),
    ("pai", read::<pai::RawPai>),
    ("sharely", read::<sharely::RawSharely>),
];

/// An upstream's raw section (`deny_unknown_fields`), checked into its
/// `SinkConfig` through a `Section`, which names `sync[N].KIND.key` and
/// the position in every error.
pub trait Validate: DeserializeOwned + 'static {
    fn validate(self, section: &Section) -> Result<Arc<dyn SinkConfig>, ConfigError>;
}

/// A sink section as read, before validation.
pub trait RawSink {
    /// Where the section is in the config file.
    fn span(&self) -> Span;

    /// The section of job number `index`, checked; relative paths in it
    /// resolve against `base`.
    fn validate(
        self: Box<Self>,
        kind: &'static str,
        loc: &Locator,
        base: &Path,
        index: usize,
    ) -> Result<Arc<dyn SinkConfig>, ConfigError>;
}

impl<T: Validate> RawSink for Spanned<T> {
    fn span(&self) -> Span {
        Spanned::span(self)
    }

    fn validate(
        self: Box<Self>,
        kind: &'static str,
        loc: &Locator,
        base: &Path,
        index: usize,
    ) -> Result<Arc<dyn SinkConfig>, ConfigError> {
        let section = Section::new(loc, base, index, kind, Spanned::span(&self));
        (*self).into_inner().validate(&section)
    }
}

fn read<T: Validate>(value: Spanned<DeValue<'_>>) -> Result<Box<dyn RawSink>, toml::de::Error> {
    let raw: Spanned<T> = Spanned::<T>::deserialize(ValueDeserializer::from(value))?;
    Ok(Box::new(raw))
}
