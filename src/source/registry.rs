//! The one place that names every source kind: which `[sync.X]` tables
//! are sources, and how each is read. Adding a kind means its folder under
//! `src/source/` and one line in `KINDS`.

use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use toml::de::{DeValue, ValueDeserializer};
use toml::Spanned;

use super::{folder, web, SourceConfig};
use crate::config::locate::{Locator, Span};
use crate::config::{ConfigError, Roots};

/// Reads a job's section of one kind, as written (shape and types only).
pub type Read = fn(Spanned<DeValue<'_>>) -> Result<Box<dyn RawSource>, toml::de::Error>;

/// The source kinds, by the section name a `[[sync]]` job spells.
pub const KINDS: &[(&str, Read)] = &[
    ("folder", read::<Spanned<folder::RawFolder>>),
    ("web", read::<Spanned<web::RawWeb>>),
];

/// A source section as read, before validation.
pub trait RawSource {
    /// Where the section is in the config file.
    fn span(&self) -> Span;

    /// The section checked and resolved: its errors name `at`'s file,
    /// position and key.
    fn validate(self: Box<Self>, at: &At) -> Result<Arc<dyn SourceConfig>, ConfigError>;
}

/// Where a source section is validated: the file, the folder relative
/// paths resolve against, whether a root must exist, and the job's number.
pub struct At<'a> {
    pub loc: &'a Locator<'a>,
    pub base: &'a Path,
    pub roots: Roots,
    pub index: usize,
}

fn read<T: RawSource + DeserializeOwned + 'static>(
    value: Spanned<DeValue<'_>>,
) -> Result<Box<dyn RawSource>, toml::de::Error> {
    Ok(Box::new(T::deserialize(ValueDeserializer::from(value))?))
}
