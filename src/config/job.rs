//! One `[[sync]]` job: its name, source, sink, metadata mapping and
//! delete policy. The source's and the sink's own sections are read and
//! validated by their kind (through `source::registry` and
//! `sink::registry`); this file knows none of them by name.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::de::DeValue;
use toml::Spanned;

use super::collect;
use super::locate::{Locator, Span};
use super::metadata::{self, RawField};
use super::schedule::Schedule;
use super::{ConfigError, DeletePolicy, Roots};
use crate::metadata::FieldMapping;
use crate::model::MaxDelete;
use crate::sink::registry::{RawSink, SINKS};
use crate::sink::SinkConfig;
use crate::source::registry::{At, RawSource, KINDS};
use crate::source::SourceConfig;

#[derive(Debug, Clone)]
pub struct JobConfig {
    pub name: String,
    pub delete_policy: DeletePolicy,
    /// Where items come from, as its own section validated it.
    pub source: Arc<dyn SourceConfig>,
    /// The upstream, as its own section validated it.
    pub sink: Arc<dyn SinkConfig>,
    /// How much one pass may retire before the delete guard refuses.
    pub max_delete: MaxDelete,
    /// What the audit does with more records under a name the job owns.
    pub duplicates: Duplicates,
    pub metadata: Vec<FieldMapping>,
    /// Full passes at the minutes it matches (UTC), besides the trigger;
    /// a polled source is then polled on it alone.
    pub schedule: Option<Schedule>,
}

impl JobConfig {
    /// Whether the service polls the job every interval: a polled source
    /// without a schedule.
    pub fn poll_every(&self) -> Option<std::time::Duration> {
        match (self.source.trigger(), &self.schedule) {
            (crate::source::Trigger::Poll(every), None) => Some(every),
            _ => None,
        }
    }

    /// Whether the schedule alone says when the job is looked at: a
    /// polled source with a schedule, which the periodic full pass
    /// (`full_reconcile_secs`) leaves alone too.
    pub fn on_schedule_only(&self) -> bool {
        self.schedule.is_some() && matches!(self.source.trigger(), crate::source::Trigger::Poll(_))
    }

    /// Why the job's source cannot be looked at now: a folder whose root
    /// is missing or looks unmounted.
    pub fn unmounted(&self) -> Option<String> {
        self.source.unavailable()
    }

    pub fn max_file_size(&self) -> u64 {
        self.source.max_file_size()
    }
}

/// What the audit does with more records under a name a job owns than
/// the one it tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Duplicates {
    /// Retired as `delete_policy` retires vanished files' records.
    #[default]
    Retire,
    /// Only reported.
    Report,
}

/// A `[[sync]]` table as read. Its source and sink sections are whatever
/// the registries know; any other key is refused with its position, as
/// `deny_unknown_fields` would.
pub struct RawJob {
    name: Spanned<String>,
    delete_policy: Option<Spanned<DeletePolicy>>,
    max_delete: Option<Spanned<toml::Value>>,
    duplicates: Option<Spanned<Duplicates>>,
    /// The source sections, read by `read_sections` (in `KINDS` order).
    sources: Vec<(&'static str, Box<dyn RawSource>)>,
    /// The sink sections, read by `read_sections` (in `SINKS` order).
    sinks: Vec<(&'static str, RawSink)>,
    metadata: BTreeMap<Spanned<String>, Spanned<RawField>>,
    schedule: Option<Spanned<String>>,
    /// Where the source section sets `poll_interval_secs`, which a
    /// schedule replaces.
    poll_interval: Option<(&'static str, Span)>,
}

const JOB_KEYS: &[&str] = &[
    "name",
    "delete_policy",
    "max_delete",
    "duplicates",
    "schedule",
];

/// A polled source's interval, which `schedule` replaces.
const POLL_INTERVAL: &str = "poll_interval_secs";

/// Every key a job may have, for the "expected one of" message.
static ALL_KEYS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let kinds = KINDS.iter().map(|(key, _)| key);
    JOB_KEYS
        .iter()
        .chain(kinds)
        .chain(&["metadata"])
        .chain(SINKS.iter().map(|(key, _)| key))
        .copied()
        .collect()
});

impl<'de> Deserialize<'de> for RawJob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawJob, D::Error> {
        d.deserialize_map(JobVisitor)
    }
}

struct JobVisitor;

impl<'de> Visitor<'de> for JobVisitor {
    type Value = RawJob;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a [[sync]] table")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawJob, A::Error> {
        let mut name = None;
        let mut job = RawJob {
            name: Spanned::new(0..0, String::new()),
            delete_policy: None,
            max_delete: None,
            duplicates: None,
            sources: Vec::new(),
            sinks: Vec::new(),
            metadata: BTreeMap::new(),
            schedule: None,
            poll_interval: None,
        };
        while let Some(key) = map.next_key_seed(JobKey)? {
            match key.as_str() {
                "name" => name = Some(map.next_value()?),
                "delete_policy" => job.delete_policy = Some(map.next_value()?),
                "max_delete" => job.max_delete = Some(map.next_value()?),
                "duplicates" => job.duplicates = Some(map.next_value()?),
                "metadata" => job.metadata = map.next_value()?,
                "schedule" => job.schedule = Some(map.next_value()?),
                // Read by its kind once the whole file parsed (`read_sections`).
                section if is_section(section) => {
                    map.next_value::<IgnoredAny>()?;
                }
                other => return Err(de::Error::unknown_field(other, ALL_KEYS.as_slice())),
            }
        }
        job.name = name.ok_or_else(|| de::Error::missing_field("name"))?;
        Ok(job)
    }
}

/// A job's key, refused while it is being read (so the error points at
/// the key) unless it is a job setting or a sink's section.
struct JobKey;

impl<'de> DeserializeSeed<'de> for JobKey {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        let key = String::deserialize(d)?;
        if ALL_KEYS.contains(&key.as_str()) {
            Ok(key)
        } else {
            Err(de::Error::unknown_field(&key, ALL_KEYS.as_slice()))
        }
    }
}

/// Whether `key` is a source's or a sink's section.
fn is_section(key: &str) -> bool {
    KINDS.iter().any(|(k, _)| *k == key) || SINKS.iter().any(|(k, _)| *k == key)
}

/// Reads the `[[sync]]` table number `index` (`table`, from the file
/// parsed with positions kept) and its source and sink sections, each
/// through the kind that `KINDS` or `SINKS` names for its key; every error
/// goes into `errors`, and `None` means there was one.
pub fn read(
    loc: &Locator,
    index: usize,
    table: &Spanned<DeValue<'_>>,
    errors: &mut Vec<ConfigError>,
) -> Option<RawJob> {
    let base = format!("sync[{index}]");
    let before = errors.len();
    let job = collect::read(loc, &base, table, collect::typed::<RawJob>, errors);
    let section = |key: &str| table.get_ref().get(key);
    let mut sources = Vec::new();
    let mut poll_interval = None;
    for (key, read) in KINDS {
        if let Some(value) = section(key) {
            let at = format!("{base}.{key}");
            sources.extend(collect::read(loc, &at, value, *read, errors).map(|raw| (*key, raw)));
            let set = value.get_ref().get(POLL_INTERVAL);
            poll_interval = poll_interval.or(set.map(|v| (*key, v.span())));
        }
    }
    let mut sinks = Vec::new();
    for (key, read) in SINKS {
        if let Some(value) = section(key) {
            let at = format!("{base}.{key}");
            sinks.extend(collect::read(loc, &at, value, *read, errors).map(|raw| (*key, raw)));
        }
    }
    let mut job = job.filter(|_| errors.len() == before)?;
    job.sources = sources;
    job.sinks = sinks;
    job.poll_interval = poll_interval;
    Some(job)
}

pub fn validate(
    loc: &Locator,
    base: &Path,
    roots: Roots,
    index: usize,
    state: &Path,
    raw: RawJob,
) -> Result<(JobConfig, Span), ConfigError> {
    let job = Job {
        loc,
        index,
        name_span: raw.name.span(),
        name: raw.name.into_inner(),
    };
    job.check_name()?;
    let policy_span = raw.delete_policy.as_ref().map(|p| p.span());
    let at = At {
        loc,
        base,
        roots,
        index,
        state,
    };
    let source = job.source(&at, raw.sources)?;
    let max_delete = job.max_delete(raw.max_delete.as_ref())?;
    let sink = job.sink(base, raw.sinks)?;
    let delete_policy = job.delete_policy(raw.delete_policy, policy_span, sink.as_ref())?;
    job.check_source_target(source.as_ref(), sink.as_ref())?;
    let metadata = job.metadata(raw.metadata, sink.as_ref())?;
    let schedule = job.schedule(raw.schedule, raw.poll_interval)?;
    Ok((
        JobConfig {
            name: job.name,
            delete_policy,
            source,
            sink,
            max_delete,
            duplicates: raw.duplicates.map(Spanned::into_inner).unwrap_or_default(),
            metadata,
            schedule,
        },
        job.name_span,
    ))
}

/// The job being validated: what each of its errors names (the file
/// position through `loc`, the key `sync[index].…`, the job's name).
struct Job<'a> {
    loc: &'a Locator<'a>,
    index: usize,
    name: String,
    name_span: Span,
}

impl Job<'_> {
    fn key(&self, k: &str) -> String {
        format!("sync[{}].{k}", self.index)
    }

    fn error(&self, span: Span, k: &str, message: impl Into<String>) -> ConfigError {
        self.loc.error(span, &self.key(k), message)
    }

    fn check_name(&self) -> Result<(), ConfigError> {
        let name = &self.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(self.error(
                self.name_span.clone(),
                "name",
                "a job name must be non-empty and use only letters, digits, '-', '_' and '.'",
            ));
        }
        Ok(())
    }

    /// Exactly one source section, validated by its kind.
    fn source(
        &self,
        at: &At,
        sources: Vec<(&'static str, Box<dyn RawSource>)>,
    ) -> Result<Arc<dyn SourceConfig>, ConfigError> {
        let name = &self.name;
        let mut sources = sources.into_iter();
        let Some((first, source)) = sources.next() else {
            let tables = KINDS
                .iter()
                .map(|(key, _)| format!("[sync.{key}]"))
                .collect::<Vec<_>>()
                .join(" or ");
            return Err(self.error(
                self.name_span.clone(),
                KINDS[0].0,
                format!("job {name:?} has no source: add a {tables} table"),
            ));
        };
        if let Some((second, raw)) = sources.next() {
            return Err(self.error(
                raw.span(),
                second,
                format!("job {name:?} has both [sync.{first}] and [sync.{second}]; a job has one source, so make a second [[sync]] job"),
            ));
        }
        source.validate(at)
    }

    fn max_delete(&self, raw: Option<&Spanned<toml::Value>>) -> Result<MaxDelete, ConfigError> {
        match raw {
            None => Ok(MaxDelete::default()),
            Some(v) => max_delete(v.get_ref()).ok_or_else(|| {
                self.error(
                    v.span(),
                    "max_delete",
                    "expected a number of records (e.g. 100) or a share of the job's records (e.g. \"50%\")",
                )
            }),
        }
    }

    /// Exactly one target section, validated by its sink.
    fn sink(
        &self,
        base: &Path,
        sinks: Vec<(&'static str, RawSink)>,
    ) -> Result<Arc<dyn SinkConfig>, ConfigError> {
        let name = &self.name;
        let mut sinks = sinks.into_iter();
        let Some((kind, sink)) = sinks.next() else {
            return Err(self.error(
                self.name_span.clone(),
                SINKS[0].0,
                format!(
                    "job {name:?} has no target: add one of {}",
                    SINKS
                        .iter()
                        .map(|(s, _)| format!("[sync.{s}]"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        if let Some((_, second)) = sinks.next() {
            return Err(self.error(
                second.span,
                SINKS[0].0,
                format!("job {name:?} has more than one target; a job has one, so make another [[sync]] job"),
            ));
        }
        sink.validate(kind, self.loc, base, self.index)
    }

    /// The delete policy set (at `span`), or the target's default; one the
    /// target cannot carry out is refused.
    fn delete_policy(
        &self,
        raw: Option<Spanned<DeletePolicy>>,
        span: Option<Span>,
        sink: &dyn SinkConfig,
    ) -> Result<DeletePolicy, ConfigError> {
        let caps = sink.capabilities();
        let delete_policy = match raw {
            Some(p) => p.into_inner(),
            // Without status changes, keeping is the only reversible choice:
            // deleting stays something to ask for.
            None if !caps.status => DeletePolicy::Keep,
            None => DeletePolicy::default(),
        };
        let unsupported = match delete_policy {
            DeletePolicy::Delete => !caps.delete,
            DeletePolicy::Disable | DeletePolicy::Archive => !caps.status,
            DeletePolicy::Keep => false,
        };
        if unsupported {
            let at = span.unwrap_or_else(|| self.name_span.clone());
            return Err(self.error(
                at,
                "delete_policy",
                format!(
                    "the {} target cannot {} items (its API offers no such call); use delete_policy = \"keep\"",
                    sink.kind(),
                    match delete_policy {
                        DeletePolicy::Delete => "delete",
                        DeletePolicy::Disable => "disable",
                        _ => "archive",
                    }
                ),
            ));
        }
        Ok(delete_policy)
    }

    /// A source the target cannot mirror (web pages into a target that
    /// takes no content) is refused, naming the source's section.
    fn check_source_target(
        &self,
        source: &dyn SourceConfig,
        sink: &dyn SinkConfig,
    ) -> Result<(), ConfigError> {
        match source.refuses_target(sink.capabilities(), sink.kind()) {
            Some(why) => Err(self.error(self.name_span.clone(), source.kind(), why)),
            None => Ok(()),
        }
    }

    /// The `schedule`, parsed; beside `poll_interval_secs` it is refused,
    /// since a job polled on a schedule is polled on it alone.
    fn schedule(
        &self,
        raw: Option<Spanned<String>>,
        poll_interval: Option<(&'static str, Span)>,
    ) -> Result<Option<Schedule>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        let schedule = Schedule::parse(raw.get_ref())
            .map_err(|why| self.error(raw.span(), "schedule", why))?;
        if let Some((kind, span)) = poll_interval {
            return Err(self.error(
                span,
                &format!("{kind}.{POLL_INTERVAL}"),
                format!(
                    "job {:?} has a schedule, which says when it is polled: remove {POLL_INTERVAL}, or the schedule to poll at an interval",
                    self.name
                ),
            ));
        }
        Ok(Some(schedule))
    }

    /// The `[sync.metadata]` fields, each name one the target accepts.
    fn metadata(
        &self,
        raw: BTreeMap<Spanned<String>, Spanned<RawField>>,
        sink: &dyn SinkConfig,
    ) -> Result<Vec<FieldMapping>, ConfigError> {
        let mut metadata = Vec::new();
        for (field_name, spec) in raw {
            let span = field_name.span();
            let field_name = field_name.into_inner();
            let field_key = self.key(&format!("metadata.{field_name}"));
            if field_name.is_empty() || field_name.chars().count() > 255 {
                return Err(self.loc.error(
                    span,
                    &field_key,
                    "a metadata field name must be 1 to 255 characters",
                ));
            }
            if let Some(why) = sink.refuses_field(&field_name) {
                return Err(self.loc.error(span, &field_key, why));
            }
            metadata.push(metadata::validate_field(
                self.loc, &field_key, field_name, spec,
            )?);
        }
        Ok(metadata)
    }
}

/// `100` (records) or `"50%"` (of the job's records).
fn max_delete(v: &toml::Value) -> Option<MaxDelete> {
    match v {
        toml::Value::Integer(n) if *n >= 0 => Some(MaxDelete::Count(*n as u64)),
        toml::Value::String(s) => {
            let p: u8 = s.trim().strip_suffix('%')?.trim().parse().ok()?;
            (p <= 100).then_some(MaxDelete::Percent(p))
        }
        _ => None,
    }
}
