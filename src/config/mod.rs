//! TOML configuration → typed, validated jobs.
//!
//! Every error a user can cause names the file, the line and column, and the
//! key, and is raised before anything is scanned or sent. Unknown keys are
//! rejected so that a typo does not silently fall back to a default.

mod collect;
mod control;
mod job;
pub mod locate;
mod metadata;
mod pasted_keys;
pub mod schedule;
pub mod section;
pub mod size;
pub mod validate;

pub use control::{ControlConfig, Event, NotifyConfig};
pub use job::{Duplicates, JobConfig};
pub use schedule::Schedule;
pub use section::{Calls, RetryConfig};
pub use size::{parse_size, DEFAULT_MAX_FILE_SIZE};

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::IgnoredAny;
use serde::Deserialize;
use toml::de::DeValue;
use toml::Spanned;

use locate::{bounded, Locator};

pub use crate::model::DeletePolicy;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub state_path: PathBuf,
    pub daemon: DaemonConfig,
    /// The control API's token, notifications and webhooks.
    pub control: ControlConfig,
    pub jobs: Vec<JobConfig>,
}

/// Whether a folder job's root must be there for the config to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    /// A pass and the service: a root that is not a folder is refused at
    /// load, naming the setting, since a typo must not pass for an
    /// unmounted share.
    MustExist,
    /// `status`, `retry`, `check`, `forget`: an operator needs them most
    /// while a share is unmounted, so a missing root loads, and each job
    /// says so (`SourceConfig::unavailable`).
    MayBeMissing,
}

impl Config {
    pub fn job_names(&self) -> Vec<String> {
        self.jobs.iter().map(|j| j.name.clone()).collect()
    }
}

/// How the long-running service batches and paces its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Quiet time after the last file event before a batch is pushed.
    pub debounce: Duration,
    /// A batch is pushed at the latest this long after its first event,
    /// even if events keep coming.
    pub max_delay: Duration,
    /// Interval of full reconciles; `None` disables them.
    pub full_reconcile: Option<Duration>,
    /// How long shutdown waits for in-flight upstream calls.
    pub shutdown_timeout: Duration,
    /// How often the service audits each upstream (at a full pass); `None`:
    /// only at start.
    pub audit_interval: Option<Duration>,
    /// Full passes of jobs whose root is on a network filesystem, where
    /// inotify does not see changes made on other machines.
    pub network_reconcile: Duration,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; off when
    /// `None`. Loopback unless `metrics_allow_remote` was set.
    pub metrics_listen: Option<SocketAddr>,
    /// How often a long pass logs (and tells systemd) how far it got.
    pub progress_log: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            debounce: Duration::from_millis(1000),
            max_delay: Duration::from_secs(10),
            full_reconcile: Some(Duration::from_secs(3600)),
            shutdown_timeout: Duration::from_secs(30),
            audit_interval: Some(Duration::from_secs(6 * 3600)),
            network_reconcile: Duration::from_secs(300),
            metrics_listen: None,
            progress_log: Duration::from_secs(30),
        }
    }
}

/// The file's top-level keys; each section is read on its own
/// (`Config::check`), so that an error in one does not hide the others.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(rename = "state")]
    _state: Option<IgnoredAny>,
    #[serde(rename = "daemon")]
    _daemon: Option<IgnoredAny>,
    #[serde(rename = "sync")]
    _sync: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    debounce_ms: Option<Spanned<i64>>,
    max_delay_ms: Option<Spanned<i64>>,
    full_reconcile_secs: Option<Spanned<i64>>,
    shutdown_timeout_secs: Option<Spanned<i64>>,
    audit_interval_secs: Option<Spanned<i64>>,
    network_reconcile_secs: Option<Spanned<i64>>,
    metrics_listen: Option<Spanned<String>>,
    metrics_allow_remote: Option<bool>,
    progress_log_secs: Option<Spanned<i64>>,
    api_token: Option<Spanned<toml::Value>>,
    api_token_env: Option<Spanned<String>>,
    api_token_file: Option<Spanned<String>>,
    api_token_credential: Option<Spanned<String>>,
    notify: Option<Spanned<control::RawNotify>>,
    webhooks: Option<Spanned<control::RawWebhooks>>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, Roots::MustExist)
    }

    pub fn load_with(path: &Path, roots: Roots) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse_with(path, &text, roots)
    }

    /// Parses and validates `text` as if read from `path`; relative paths in
    /// it are resolved against the config file's folder, so the service does
    /// not depend on its working directory.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse_with(path, text, Roots::MustExist)
    }

    /// As `check`, stopping at the first error (in the file's order).
    pub fn parse_with(path: &Path, text: &str, roots: Roots) -> Result<Config, ConfigError> {
        Config::check(path, text, roots).map_err(|mut errors| errors.swap_remove(0))
    }

    /// Parses and validates `text` as if read from `path`, or finds every
    /// error in it, in the file's order: each section and each job is
    /// read and validated on its own (`kbsync config validate`).
    pub fn check(path: &Path, text: &str, roots: Roots) -> Result<Config, Vec<ConfigError>> {
        let loc = Locator { path, text };
        // A pasted key stops everything: no other error may quote it.
        pasted_keys::refuse(&loc, text).map_err(|e| vec![e])?;
        let doc = toml::de::DeTable::parse(text).map_err(|e| vec![loc.parse_error(e)])?;
        let doc = Spanned::new(doc.span(), DeValue::Table(doc.into_inner()));
        let mut errors = Vec::new();
        collect::read(&loc, "", &doc, collect::typed::<RawConfig>, &mut errors);
        let part = |key: &str| doc.get_ref().get(key);
        let state = part("state")
            .and_then(|v| collect::read(&loc, "state", v, collect::typed::<RawState>, &mut errors));
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let (daemon, control) = match part("daemon") {
            None => (
                Some(DaemonConfig::default()),
                Some(ControlConfig::default()),
            ),
            Some(v) => {
                match collect::read(&loc, "daemon", v, collect::typed::<RawDaemon>, &mut errors) {
                    None => (None, None),
                    Some(d) => (
                        validate_daemon(&loc, &d).map_err(|e| errors.push(e)).ok(),
                        control_of(&loc, base, v.span(), &d)
                            .map_err(|e| errors.push(e))
                            .ok(),
                    ),
                }
            }
        };
        let state_path = state_path(base, state);
        let jobs = jobs(&loc, base, roots, &state_path, part("sync"), &mut errors);
        match (daemon, control) {
            (Some(daemon), Some(control)) if errors.is_empty() => Ok(Config {
                path: path.to_owned(),
                state_path,
                daemon,
                control,
                jobs,
            }),
            _ => {
                errors.sort_by_key(|e| match e {
                    ConfigError::Invalid { line, column, .. } => (*line, *column),
                    ConfigError::Read { .. } => (0, 0),
                });
                Err(errors)
            }
        }
    }
}

/// `[state] path`, else the first of systemd's `$STATE_DIRECTORY`, else
/// beside the config.
fn state_path(base: &Path, state: Option<RawState>) -> PathBuf {
    match state.and_then(|s| s.path) {
        Some(p) => base.join(p.get_ref()),
        None => match std::env::var_os("STATE_DIRECTORY") {
            // systemd's StateDirectory= may list several, colon-separated.
            Some(dirs) => {
                let first = dirs
                    .to_string_lossy()
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .to_owned();
                PathBuf::from(first).join("kbsync.db")
            }
            None => base.join("kbsync.db"),
        },
    }
}

/// The `[[sync]]` jobs, each read and validated on its own; the checks
/// across jobs (names, namespaces) once all are valid.
fn jobs(
    loc: &Locator,
    base: &Path,
    roots: Roots,
    state_path: &Path,
    sync: Option<&Spanned<DeValue<'_>>>,
    errors: &mut Vec<ConfigError>,
) -> Vec<JobConfig> {
    let tables = match sync.map(|s| (s.span(), s.get_ref())) {
        Some((_, DeValue::Array(tables))) if !tables.is_empty() => tables.as_ref(),
        Some((span, DeValue::Table(_))) => {
            errors.push(loc.error(
                span,
                "sync",
                "jobs are [[sync]] tables (two brackets), one per job",
            ));
            return Vec::new();
        }
        _ => {
            errors.push(loc.error(0..0, "sync", "no [[sync]] job is defined"));
            return Vec::new();
        }
    };
    let mut jobs = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        let Some(raw) = job::read(loc, i, table, errors) else {
            continue;
        };
        match job::validate(loc, base, roots, i, state_path, raw) {
            Ok(job) => jobs.push(job),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        if let Err(e) = check_across(loc, &jobs) {
            errors.push(e);
        }
    }
    jobs.into_iter().map(|(j, _)| j).collect()
}

/// What no job can check alone: a name used twice, namespaces that meet.
fn check_across(loc: &Locator, jobs: &[(JobConfig, locate::Span)]) -> Result<(), ConfigError> {
    check_namespaces(loc, jobs)?;
    let mut names = HashSet::new();
    for (job, span) in jobs {
        if !names.insert(job.name.clone()) {
            return Err(loc.error(
                span.clone(),
                "name",
                format!("job name {:?} is used twice; each [[sync]] needs its own name, it keys the state", job.name),
            ));
        }
    }
    Ok(())
}

/// The control API's token, notifications and webhooks of `[daemon]`.
fn control_of(
    loc: &Locator,
    base: &Path,
    span: locate::Span,
    r: &RawDaemon,
) -> Result<ControlConfig, ConfigError> {
    control::validate(
        loc,
        base,
        span,
        control::Raw {
            token: section::key_fields!(
                r.api_token,
                api_token_env,
                api_token_file,
                api_token_credential
            ),
            notify: r.notify.as_ref(),
            webhooks: r.webhooks.as_ref(),
            listen: r.metrics_listen.as_ref(),
            remote: r.metrics_allow_remote == Some(true),
        },
    )
}

fn validate_daemon(loc: &Locator, raw: &RawDaemon) -> Result<DaemonConfig, ConfigError> {
    let ms = |v: i64| Duration::from_millis(v as u64);
    let secs = |v: i64| Duration::from_secs(v as u64);
    let debounce = bounded(
        loc,
        &raw.debounce_ms,
        "daemon.debounce_ms",
        0,
        600_000,
        1000,
    )?;
    let max_delay = bounded(
        loc,
        &raw.max_delay_ms,
        "daemon.max_delay_ms",
        0,
        3_600_000,
        (debounce * 10).max(10_000),
    )?;
    if max_delay < debounce {
        let span = raw.max_delay_ms.as_ref().map_or(0..0, |s| s.span());
        return Err(loc.error(
            span,
            "daemon.max_delay_ms",
            format!("must be at least debounce_ms ({debounce})"),
        ));
    }
    let full = bounded(
        loc,
        &raw.full_reconcile_secs,
        "daemon.full_reconcile_secs",
        0,
        30 * 86_400,
        3600,
    )?;
    let audit = bounded(
        loc,
        &raw.audit_interval_secs,
        "daemon.audit_interval_secs",
        0,
        30 * 86_400,
        6 * 3600,
    )?;
    let network = bounded(
        loc,
        &raw.network_reconcile_secs,
        "daemon.network_reconcile_secs",
        10,
        30 * 86_400,
        300,
    )?;
    let metrics_listen = metrics_listen(loc, raw)?;
    let progress = bounded(
        loc,
        &raw.progress_log_secs,
        "daemon.progress_log_secs",
        1,
        3600,
        30,
    )?;
    Ok(DaemonConfig {
        metrics_listen,
        progress_log: secs(progress),
        network_reconcile: secs(network),
        audit_interval: (audit > 0).then(|| secs(audit)),
        debounce: ms(debounce),
        max_delay: ms(max_delay),
        full_reconcile: (full > 0).then(|| secs(full)),
        shutdown_timeout: secs(bounded(
            loc,
            &raw.shutdown_timeout_secs,
            "daemon.shutdown_timeout_secs",
            1,
            3600,
            30,
        )?),
    })
}

/// The metrics listener's address. Metrics name the jobs, folders' item
/// counts and upstream error rates: not for everyone on the network, so an
/// address other than loopback must be asked for twice.
fn metrics_listen(loc: &Locator, raw: &RawDaemon) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(listen) = &raw.metrics_listen else {
        return Ok(None);
    };
    let key = "daemon.metrics_listen";
    let addr: SocketAddr = listen.get_ref().parse().map_err(|_| {
        loc.error(
            listen.span(),
            key,
            format!(
                "{:?} is not an address and port, e.g. \"127.0.0.1:9477\" or \"[::1]:9477\"",
                listen.get_ref()
            ),
        )
    })?;
    if !addr.ip().is_loopback() && raw.metrics_allow_remote != Some(true) {
        return Err(loc.error(
            listen.span(),
            key,
            format!(
                "{addr} is reachable from other machines; metrics are served on loopback (e.g. \"127.0.0.1:{}\") unless `metrics_allow_remote = true` is set as well",
                addr.port()
            ),
        ));
    }
    Ok(Some(addr))
}

/// Two jobs whose records could take each other's names would adopt and
/// overwrite each other's documents: refused, naming both.
fn check_namespaces(loc: &Locator, jobs: &[(JobConfig, locate::Span)]) -> Result<(), ConfigError> {
    for (i, (b, span)) in jobs.iter().enumerate() {
        let Some((place_b, prefix_b, setting)) = b.sink.namespace() else {
            continue;
        };
        for (a, _) in &jobs[..i] {
            let Some((place_a, prefix_a, _)) = a.sink.namespace() else {
                continue;
            };
            if place_a == place_b
                && (prefix_a.starts_with(&prefix_b) || prefix_b.starts_with(&prefix_a))
            {
                return Err(loc.error(
                    span.clone(),
                    &format!("sync[{i}].{}.{setting}", b.sink.kind()),
                    format!(
                        "jobs {:?} and {:?} both mirror into {place_b} with names that can collide ({setting} {prefix_a:?} and {prefix_b:?}), so each would adopt and overwrite the other's documents; give each its own {setting}, neither a prefix of the other (e.g. \"{}/\" and \"{}/\")",
                        a.name, b.name, a.name, b.name
                    ),
                ));
            }
        }
    }
    Ok(())
}
