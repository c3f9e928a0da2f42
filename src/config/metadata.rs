//! `[sync.metadata]`: one table per field, each with exactly one source.

use serde::Deserialize;
use toml::Spanned;

use super::locate::{Locator, Span};
use super::ConfigError;
use crate::metadata::{Fact, FieldMapping, FieldSource, FieldType};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawField {
    value: Option<toml::Value>,
    path_segment: Option<i64>,
    fact: Option<Fact>,
    front_matter: Option<String>,
    object_metadata: Option<String>,
    #[serde(rename = "type")]
    kind: Option<FieldType>,
}

pub fn validate_field(
    loc: &Locator,
    key: &str,
    name: String,
    spec: Spanned<RawField>,
) -> Result<FieldMapping, ConfigError> {
    let span = spec.span();
    let raw = spec.into_inner();
    let mut sources = Vec::new();
    if let Some(v) = raw.value {
        sources.push(static_source(loc, span.clone(), key, v)?);
    }
    if let Some(i) = raw.path_segment {
        sources.push(FieldSource::PathSegment(i));
    }
    if let Some(f) = raw.fact {
        sources.push(FieldSource::Fact(f));
    }
    if let Some(k) = raw.front_matter {
        sources.push(FieldSource::FrontMatter(k));
    }
    if let Some(k) = raw.object_metadata {
        sources.push(FieldSource::ObjectMetadata(k));
    }
    if sources.len() != 1 {
        return Err(loc.error(
            span,
            key,
            "a metadata field needs exactly one of `value`, `path_segment`, `fact`, `front_matter` or `object_metadata`",
        ));
    }
    let source = sources.remove(0);
    let kind = raw.kind.unwrap_or_else(|| source.natural_type());
    if let FieldSource::Static(v) = &source {
        if crate::metadata::coerce(v, kind).is_none() {
            return Err(loc.error(
                span,
                key,
                format!("static value {v} cannot be used as a {kind} field"),
            ));
        }
    }
    Ok(FieldMapping { name, source, kind })
}

fn static_source(
    loc: &Locator,
    span: Span,
    key: &str,
    v: toml::Value,
) -> Result<FieldSource, ConfigError> {
    let json = match v {
        toml::Value::String(s) => serde_json::Value::String(s),
        toml::Value::Integer(i) => serde_json::Value::from(i),
        toml::Value::Float(f) => serde_json::Value::from(f),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        other => {
            return Err(loc.error(
                span,
                key,
                format!(
                    "a static metadata value must be a string, number or date, not {}",
                    other.type_str()
                ),
            ))
        }
    };
    Ok(FieldSource::Static(json))
}
