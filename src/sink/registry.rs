//! The one place that names every upstream: which `[sync.X]` tables are
//! sinks, and how each is read. Adding an upstream means its folder under
//! `src/sink/` and one line in `SINKS`.

use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use toml::de::{DeValue, ValueDeserializer};
use toml::Spanned;

use super::{dify, openwebui, pai, sharely, SinkConfig};
use crate::config::locate::{Locator, Span};
use crate::config::section::Section;
use crate::config::ConfigError;

/// Reads a job's section of one upstream, as written (shape and types only).
pub type Read = fn(Spanned<DeValue<'_>>) -> Result<RawSink, toml::de::Error>;

/// The upstreams, by the section name a `[[sync]]` job spells, each with
/// the validation of its raw section (`deny_unknown_fields`).
pub const SINKS: &[(&str, Read)] = &[
    ("dify", |v| read(v, dify::validate)),
    ("pai", |v| read(v, pai::validate)),
    ("sharely", |v| read(v, sharely::validate)),
    ("openwebui", |v| read(v, openwebui::validate)),
];

/// Checks a raw section through a `Section`, which names
/// `sync[N].KIND.key` and the position in every error.
type Check = Box<dyn FnOnce(&Section) -> Result<Arc<dyn SinkConfig>, ConfigError>>;

/// A sink section as read, before validation.
pub struct RawSink {
    /// Where the section is in the config file.
    pub span: Span,
    check: Check,
}

impl RawSink {
    /// The section `kind` of job number `index`, checked; relative paths
    /// in it resolve against `base`.
    pub fn validate(
        self,
        kind: &str,
        loc: &Locator,
        base: &Path,
        index: usize,
    ) -> Result<Arc<dyn SinkConfig>, ConfigError> {
        let section = Section::new(loc, base, index, kind, self.span);
        (self.check)(&section)
    }
}

fn read<T, C>(
    value: Spanned<DeValue<'_>>,
    validate: fn(&Section, T) -> Result<C, ConfigError>,
) -> Result<RawSink, toml::de::Error>
where
    T: DeserializeOwned + 'static,
    C: SinkConfig,
{
    let raw = Spanned::<T>::deserialize(ValueDeserializer::from(value))?;
    let span = raw.span();
    let raw = raw.into_inner();
    Ok(RawSink {
        span,
        check: Box::new(move |section| Ok(Arc::new(validate(section, raw)?))),
    })
}
