//! The one place that names every upstream: which `[sync.X]` tables are
//! sinks, and how each becomes a `SinkConfig`. Adding an upstream means its
//! folder under `src/sink/` and one variant here with its match arms.

use std::path::Path;
use std::sync::Arc;

use serde::de::MapAccess;
use toml::Spanned;

use super::{dify, pai, sharely, SinkConfig};
use crate::config::locate::{Locator, Span};
use crate::config::section::Section;
use crate::config::ConfigError;

/// The section names, as a `[[sync]]` job spells them.
pub const SECTIONS: &[&str] = &["dify", "pai", "sharely"];

/// A sink's section as read from TOML, before validation (boxed: the
/// sections differ much in size).
pub enum RawSink {
    Dify(Box<Spanned<dify::RawDify>>),
    Pai(Box<Spanned<pai::RawPai>>),
    Sharely(Box<Spanned<sharely::RawSharely>>),
}

impl RawSink {
    /// Reads the value of the job's key `name` as that sink's section;
    /// `None` when `name` names no sink.
    pub fn next_value<'de, A: MapAccess<'de>>(
        name: &str,
        map: &mut A,
    ) -> Result<Option<RawSink>, A::Error> {
        Ok(Some(match name {
            "dify" => RawSink::Dify(map.next_value()?),
            "pai" => RawSink::Pai(map.next_value()?),
            "sharely" => RawSink::Sharely(map.next_value()?),
            _ => return Ok(None),
        }))
    }

    pub fn span(&self) -> Span {
        match self {
            RawSink::Dify(r) => r.span(),
            RawSink::Pai(r) => r.span(),
            RawSink::Sharely(r) => r.span(),
        }
    }

    /// Validates the section of job number `index`; relative paths in it
    /// resolve against `base`.
    pub fn validate(
        self,
        loc: &Locator,
        base: &Path,
        index: usize,
    ) -> Result<Arc<dyn SinkConfig>, ConfigError> {
        let span = self.span();
        let section = |kind| Section::new(loc, base, index, kind, span);
        Ok(match self {
            RawSink::Dify(r) => Arc::new(dify::validate(&section("dify"), r.into_inner())?),
            RawSink::Pai(r) => Arc::new(pai::validate(&section("pai"), r.into_inner())?),
            RawSink::Sharely(r) => {
                Arc::new(sharely::validate(&section("sharely"), r.into_inner())?)
            }
        })
    }
}
