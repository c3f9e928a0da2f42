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
}

impl FieldSource {
    pub fn natural_type(&self) -> FieldType {
        match self {
            FieldSource::Static(Json::Number(_)) => FieldType::Number,
            FieldSource::Fact(Fact::Size) => FieldType::Number,
            FieldSource::Fact(Fact::Modified) => FieldType::Time,
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
            FieldSource::Fact(Fact::Modified) if m.kind == FieldType::String => Some(Json::from(
                format_rfc3339(item.mtime_ns.div_euclid(1_000_000_000)),
            )),
            FieldSource::Fact(f) => Some(fact(*f, item)),
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

fn fact(f: Fact, item: &ItemFacts) -> Json {
    let (folder, file_name) = match item.key.rsplit_once('/') {
        Some((d, f)) => (d, f),
        None => ("", item.key),
    };
    match f {
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
    }
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

/// Unix seconds from `YYYY-MM-DD`, `YYYY-MM-DD HH:MM[:SS]` or RFC 3339 with
/// `Z` or an offset. Dates without a zone are taken as UTC.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(secs) = s.parse::<i64>() {
        return Some(secs);
    }
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, mo, d) * 86_400;
    let rest = &s[10..];
    if rest.is_empty() {
        return Some(secs);
    }
    if !(rest.starts_with('T') || rest.starts_with(' ')) || rest.len() < 6 {
        return None;
    }
    let (h, mi) = (num(11..13)?, num(14..16)?);
    if b[13] != b':' || h > 23 || mi > 59 {
        return None;
    }
    secs += h * 3600 + mi * 60;
    let mut tail = &s[16..];
    if let Some(t) = tail.strip_prefix(':') {
        let sec: i64 = t.get(0..2)?.parse().ok()?;
        secs += sec;
        tail = &t[2..];
        if let Some(frac) = tail.strip_prefix('.') {
            let digits = frac.bytes().take_while(|c| c.is_ascii_digit()).count();
            tail = &frac[digits..];
        }
    }
    match tail {
        "" | "Z" | "z" => Some(secs),
        zone => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let z = &zone[1..];
            let (zh, zm) = z.split_once(':').unwrap_or((z.get(0..2)?, z.get(2..)?));
            let offset = zh.parse::<i64>().ok()? * 3600 + zm.parse::<i64>().ok()? * 60;
            Some(secs - sign * offset)
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

pub fn format_rfc3339(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
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
        let maps = vec![
            mapping(
                "date",
                FieldSource::FrontMatter("date".into()),
                FieldType::Time,
            ),
            mapping(
                "pages",
                FieldSource::FrontMatter("pages".into()),
                FieldType::Number,
            ),
            mapping(
                "rating",
                FieldSource::FrontMatter("rating".into()),
                FieldType::Number,
            ),
            mapping(
                "absent",
                FieldSource::FrontMatter("nope".into()),
                FieldType::String,
            ),
        ];
        let (m, w) = evaluate(&maps, &facts("a.md", Some(&fm)));
        assert_eq!(m["date"], 1_709_164_800);
        assert_eq!(m["pages"], 12);
        assert!(!m.contains_key("rating") && !m.contains_key("absent"));
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].field, "rating");
    }

    #[test]
    fn time_parsing() {
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(parse_time("2000-03-01T02:00:00+02:00"), Some(951_868_800));
        assert_eq!(parse_time("2000-03-01 00:00"), Some(951_868_800));
        assert_eq!(parse_time("2000-13-01"), None);
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(format_rfc3339(951_868_800), "2000-03-01T00:00:00Z");
    }
}
