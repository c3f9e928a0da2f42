//! Metadata mapping: how a job turns an item's facts (path, size, modified
//! time, content hash, front matter) into the metadata values pushed
//! upstream. Pure functions; the planner compares their output with what was
//! last pushed.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

mod map;

/// Field name → value (a JSON string or number). Ordered, so that equal
/// metadata always serialises to the same text in the state file.
pub use map::Metadata;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fact {
    /// The item's key: its path relative to the source root, `/`-separated.
    Path,
    FileName,
    /// Lower-case extension without the dot.
    Extension,
    /// The parent folder relative to the root (`""` at the root).
    Folder,
    Size,
    Modified,
    Blake3,
    /// What a source records beside (`SourceFacts`): an object's or a
    /// page's ETag (without its quotes), an object's content type and
    /// bucket. Unset where the source has none.
    Etag,
    ContentType,
    Bucket,
    /// A git file's: the commit it was read at (40 hex), that commit's
    /// time, its author's name, the ref followed, and the job's `web_url`
    /// filled in for it.
    Commit,
    CommitTime,
    Author,
    Ref,
    WebUrl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Number,
    /// Dify stores time fields as Unix seconds.
    Time,
}

impl fmt::Display for FieldType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldType::String => "string",
            FieldType::Number => "number",
            FieldType::Time => "time",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum FieldSource {
    Static(Json),
    /// Index into the folder names of the key; negative counts from the end
    /// (`-1` is the item's own folder).
    PathSegment(i64),
    Fact(Fact),
    FrontMatter(String),
    /// An object's user metadata (S3's `x-amz-meta-NAME`), by `NAME`.
    ObjectMetadata(String),
}

impl FieldSource {
    pub fn natural_type(&self) -> FieldType {
        match self {
            FieldSource::Static(Json::Number(_)) => FieldType::Number,
            FieldSource::Fact(Fact::Size) => FieldType::Number,
            FieldSource::Fact(Fact::Modified | Fact::CommitTime) => FieldType::Time,
            _ => FieldType::String,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldMapping {
    pub name: String,
    pub source: FieldSource,
    pub kind: FieldType,
}

/// What the mapping may read of one item.
pub struct ItemFacts<'a> {
    pub key: &'a str,
    pub size: u64,
    pub mtime_ns: i64,
    pub hash: &'a str,
    pub front_matter: Option<&'a Metadata>,
    pub source: Option<&'a SourceFacts>,
}

/// What a source records of an item beyond its path, size and time, read
/// from the row's `validator` (an S3 object's stamp and facts, a web
/// page's validators): the facts a mapping may name besides those.
#[derive(Debug, Default, Deserialize)]
pub struct SourceFacts {
    etag: Option<String>,
    content_type: Option<String>,
    bucket: Option<String>,
    #[serde(default)]
    meta: std::collections::BTreeMap<String, String>,
    commit: Option<String>,
    commit_time: Option<i64>,
    author: Option<String>,
    #[serde(rename = "ref")]
    git_ref: Option<String>,
    web_url: Option<String>,
}

impl SourceFacts {
    pub fn parse(validator: &str) -> Option<SourceFacts> {
        serde_json::from_str(validator).ok()
    }

    fn fact(&self, f: Fact) -> Option<&str> {
        match f {
            Fact::Etag => self.etag.as_deref().map(|e| e.trim_matches('"')),
            Fact::ContentType => self.content_type.as_deref(),
            Fact::Bucket => self.bucket.as_deref(),
            Fact::Commit => self.commit.as_deref(),
            Fact::Author => self.author.as_deref(),
            Fact::Ref => self.git_ref.as_deref(),
            Fact::WebUrl => self.web_url.as_deref(),
            _ => None,
        }
    }
}

/// A value the mapping could not convert; reported per item, never hidden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingWarning {
    pub field: String,
    pub message: String,
}

pub fn evaluate(mappings: &[FieldMapping], item: &ItemFacts) -> (Metadata, Vec<MappingWarning>) {
    let mut out = Metadata::with_capacity(mappings.len());
    let mut warnings = Vec::new();
    for m in mappings {
        let raw = match &m.source {
            FieldSource::Static(v) => Some(v.clone()),
            FieldSource::PathSegment(i) => path_segment(item.key, *i).map(Json::from),
            FieldSource::FrontMatter(k) => item.front_matter.and_then(|fm| fm.get(k)).cloned(),
            FieldSource::ObjectMetadata(k) => item
                .source
                .and_then(|s| s.meta.get(&k.to_ascii_lowercase()))
                .map(|v| Json::from(v.as_str())),
            FieldSource::Fact(Fact::Modified) if m.kind == FieldType::String => Some(Json::from(
                format_rfc3339(item.mtime_ns.div_euclid(1_000_000_000)),
            )),
            FieldSource::Fact(f) => fact(*f, item),
        };
        // A missing value (no such front matter key, a path not that deep)
        // leaves the field unset rather than sending an empty string.
        let Some(raw) = raw else { continue };
        match coerce(&raw, m.kind) {
            Some(v) => {
                out.insert(m.name.clone(), v);
            }
            None => warnings.push(MappingWarning {
                field: m.name.clone(),
                message: format!("value {raw} is not a valid {}", m.kind),
            }),
        }
    }
    (out, warnings)
}

fn fact(f: Fact, item: &ItemFacts) -> Option<Json> {
    let (folder, file_name) = match item.key.rsplit_once('/') {
        Some((d, f)) => (d, f),
        None => ("", item.key),
    };
    Some(match f {
        Fact::Path => Json::from(item.key),
        Fact::FileName => Json::from(file_name),
        Fact::Extension => Json::from(
            file_name
                .rsplit_once('.')
                .map(|(_, e)| e.to_ascii_lowercase())
                .unwrap_or_default(),
        ),
        Fact::Folder => Json::from(folder),
        Fact::Size => Json::from(item.size),
        Fact::Modified => Json::from(item.mtime_ns.div_euclid(1_000_000_000)),
        Fact::Blake3 => Json::from(item.hash),
        Fact::CommitTime => return item.source.and_then(|s| s.commit_time).map(Json::from),
        Fact::Etag
        | Fact::ContentType
        | Fact::Bucket
        | Fact::Commit
        | Fact::Author
        | Fact::Ref
        | Fact::WebUrl => return item.source.and_then(|s| s.fact(f)).map(Json::from),
    })
}

fn path_segment(key: &str, index: i64) -> Option<&str> {
    let folders: Vec<&str> = key.split('/').collect();
    let folders = &folders[..folders.len() - 1];
    let i = if index < 0 {
        folders.len().checked_sub(index.unsigned_abs() as usize)?
    } else {
        index as usize
    };
    folders.get(i).copied()
}

/// Converts a value to a field type; `None` when it cannot be.
pub fn coerce(v: &Json, kind: FieldType) -> Option<Json> {
    match (kind, v) {
        (FieldType::String, Json::String(_)) => Some(v.clone()),
        (FieldType::String, Json::Number(n)) => Some(Json::from(n.to_string())),
        (FieldType::String, Json::Bool(b)) => Some(Json::from(b.to_string())),
        (FieldType::Number, Json::Number(_)) => Some(v.clone()),
        (FieldType::Number, Json::String(s)) => parse_number(s.trim()),
        (FieldType::Time, Json::Number(n)) => n.as_f64().map(|f| Json::from(f.floor() as i64)),
        (FieldType::Time, Json::String(s)) => parse_time(s.trim()).map(Json::from),
        _ => None,
    }
}

fn parse_number(s: &str) -> Option<Json> {
    if let Ok(i) = s.parse::<i64>() {
        return Some(Json::from(i));
    }
    let f: f64 = s.parse().ok()?;
    serde_json::Number::from_f64(f).map(Json::Number)
}

/// Unix seconds from a count of seconds, or a date or date-time as
/// RFC 3339 / ISO 8601 write them: `2026-09-01`, `2026-09-01 10:30[:00]`,
/// `2026-09-01T10:30:00Z`, `…+02:00`. Without a zone the time is UTC. A
/// day the calendar does not have (`2026-02-31`) is no time at all.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(secs) = s.parse::<i64>() {
        return Some(secs);
    }
    if let Ok(at) = s.parse::<jiff::Timestamp>() {
        return Some(at.as_second());
    }
    // What a timestamp could not be read from, with an offset or a zone,
    // is no time; without either it is a civil date-time, taken as UTC.
    let pieces = jiff::fmt::temporal::Pieces::parse(s).ok()?;
    if pieces.offset().is_some() || pieces.time_zone_annotation().is_some() {
        return None;
    }
    let civil = pieces.date().to_datetime(pieces.time().unwrap_or_default());
    let at = jiff::tz::TimeZone::UTC.to_timestamp(civil).ok()?;
    Some(at.as_second())
}

/// `2026-09-01T10:30:00Z` for Unix seconds (clamped to the years -9999 to
/// 9999, which a timestamp spans).
pub fn format_rfc3339(secs: i64) -> String {
    use jiff::Timestamp;
    let secs = secs.clamp(Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
    Timestamp::from_second(secs)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(key: &'a str, fm: Option<&'a Metadata>) -> ItemFacts<'a> {
        ItemFacts {
            key,
            size: 42,
            mtime_ns: 1_700_000_000_123_456_789,
            hash: "abc",
            front_matter: fm,
            source: None,
        }
    }

    fn mapping(name: &str, source: FieldSource, kind: FieldType) -> FieldMapping {
        FieldMapping {
            name: name.into(),
            source,
            kind,
        }
    }

    #[test]
    fn facts_and_path_segments() {
        let maps = vec![
            mapping("dept", FieldSource::PathSegment(0), FieldType::String),
            mapping("parent", FieldSource::PathSegment(-1), FieldType::String),
            mapping("deep", FieldSource::PathSegment(5), FieldType::String),
            mapping("size", FieldSource::Fact(Fact::Size), FieldType::Number),
            mapping(
                "modified",
                FieldSource::Fact(Fact::Modified),
                FieldType::Time,
            ),
            mapping("ext", FieldSource::Fact(Fact::Extension), FieldType::String),
            mapping("folder", FieldSource::Fact(Fact::Folder), FieldType::String),
        ];
        let (m, w) = evaluate(&maps, &facts("hr/policies/Leave.MD", None));
        assert!(w.is_empty());
        assert_eq!(m["dept"], "hr");
        assert_eq!(m["parent"], "policies");
        assert!(!m.contains_key("deep"));
        assert_eq!(m["size"], 42);
        assert_eq!(m["modified"], 1_700_000_000);
        assert_eq!(m["ext"], "md");
        assert_eq!(m["folder"], "hr/policies");
    }

    #[test]
    fn front_matter_values_are_coerced_or_reported() {
        let mut fm = Metadata::new();
        fm.insert("date".into(), Json::from("2024-02-29"));
        fm.insert("pages".into(), Json::from("12"));
        fm.insert("rating".into(), Json::from("high"));
        let maps: Vec<FieldMapping> = [
            ("date", "date", FieldType::Time),
            ("pages", "pages", FieldType::Number),
            ("rating", "rating", FieldType::Number),
            ("absent", "nope", FieldType::String),
        ]
        .into_iter()
        .map(|(name, key, kind)| mapping(name, FieldSource::FrontMatter(key.into()), kind))
        .collect();
        let (m, w) = evaluate(&maps, &facts("a.md", Some(&fm)));
        assert_eq!(m["date"], 1_709_164_800);
        assert_eq!(m["pages"], 12);
        assert!(!m.contains_key("rating") && !m.contains_key("absent"));
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].field, "rating");
    }

    #[test]
    fn source_facts_are_read_from_the_validator_and_unset_elsewhere() {
        let recorded = SourceFacts::parse(
            r#"{"etag":"\"9a0364b9\"","size":3,"content_type":"text/plain","bucket":"docs","meta":{"author":"Ann"}}"#,
        );
        let maps = vec![
            mapping("etag", FieldSource::Fact(Fact::Etag), FieldType::String),
            mapping(
                "type",
                FieldSource::Fact(Fact::ContentType),
                FieldType::String,
            ),
            mapping("bucket", FieldSource::Fact(Fact::Bucket), FieldType::String),
            mapping(
                "by",
                FieldSource::ObjectMetadata("Author".into()),
                FieldType::String,
            ),
        ];
        let mut item = facts("a.txt", None);
        item.source = recorded.as_ref();
        let (m, w) = evaluate(&maps, &item);
        assert!(w.is_empty());
        assert_eq!(m["etag"], "9a0364b9");
        assert_eq!(m["type"], "text/plain");
        assert_eq!(m["bucket"], "docs");
        assert_eq!(m["by"], "Ann");
        let (m, _) = evaluate(&maps, &facts("a.txt", None));
        assert!(m.is_empty(), "a file has none of these: {m:?}");
    }

    #[test]
    fn impossible_dates_are_not_times() {
        for s in [
            "2026-02-31",
            "2025-02-29",
            "2026-04-31",
            "2026-02-31T10:00:00Z",
            "2026-06-01T24:30:00Z",
            "2026-06-01T10:00:61Z",
        ] {
            assert_eq!(parse_time(s), None, "{s}");
        }
    }

    #[test]
    fn time_parsing() {
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(parse_time("2000-03-01T02:00:00+02:00"), Some(951_868_800));
        assert_eq!(parse_time("2000-03-01 00:00"), Some(951_868_800));
        assert_eq!(parse_time("2000-13-01"), None);
        assert_eq!(parse_time("2024-02-29"), Some(1_709_164_800));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2000-03-01T00:00:00.75Z"), Some(951_868_800));
        assert_eq!(parse_time("2000-03-01 00:00:05"), Some(951_868_805));
        assert_eq!(format_rfc3339(951_868_800), "2000-03-01T00:00:00Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
        assert!(format_rfc3339(i64::MAX).starts_with("9999-12-"));
    }
}
