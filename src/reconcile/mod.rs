//! One full pass for each job: scan the source, diff against the state
//! file, plan, and (unless dry-running) push. The daemon will call the same
//! pass; `--reconcile` runs it once.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use crate::audit::{self, AuditReport};
use crate::config::{Config, JobConfig};
use crate::guard;
use crate::outbox::{self, Held};
use crate::plan::{self, Op, Plan, Rules};
use crate::sink::{ErrorClass, Outcome, PushContext, PushError, Sink, SinkError};
use crate::source::{Observed, OwnFiles, Scanned, Scope, Skipped, Source};
use crate::state::{State, StateError, StateLock};

mod pass;

#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    pub dry_run: bool,
    /// Leave steps that failed transiently alone until their backoff ran
    /// out (the service). A one-shot run asked for by hand tries them now.
    pub honour_backoff: bool,
    /// Retire whatever the plan retires, beyond the delete guard.
    pub allow_deletes: bool,
    /// Read every file, trusting no recorded size, mtime or identity.
    pub checksum: bool,
    /// Audit the upstream on full passes (at most once per
    /// `daemon.audit_interval` in a long-lived runner).
    pub audit: bool,
    /// Items per slice of a full folder pass (0: `SLICE`).
    pub slice: usize,
}

/// A full pass over a folder reads, plans, queues, pushes and settles this
/// many files at a time (see `source::Survey`): memory stays that of the
/// walk plus one slice, whatever the size of a first sync. A multiple of
/// the usual batch sizes (50, 100, 200, 250, 500), so that slicing adds
/// no partial batch: 10,000 metadata changes are still 100 calls of 100.
pub const SLICE: usize = 2000;

/// A pass that pushed keeps at most this many of its planned steps in its
/// report (the outcome counts them all); a dry run keeps every one.
const KEPT_OPS: usize = 1000;

pub use crate::report::JobReport;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("no job named {0:?}")]
    NoSuchJob(String),
    #[error("cannot set up an HTTP client: {0}")]
    Http(String),
}

/// Runs one pass over every selected job (all when `only` is empty).
pub async fn run(
    config: &Config,
    only: &[String],
    opts: RunOptions,
) -> Result<Vec<JobReport>, ReconcileError> {
    let mut runner = Runner::open(config.clone(), opts)?;
    let mut reports = Vec::new();
    for job in &config.jobs {
        if !only.is_empty() && !only.contains(&job.name) {
            continue;
        }
        reports.push(runner.run_job(&job.name, &Scope::All).await?);
    }
    Ok(reports)
}

/// What a sequence of passes shares: the config, the open state file, one
/// source per job and one connected sink per job (created on first use, so
/// a job with nothing to push never needs its key).
pub struct Runner {
    pub config: Config,
    state: State,
    /// kbsync's own files, which no job mirrors.
    own: OwnFiles,
    sinks: HashMap<String, Box<dyn Sink>>,
    sources: HashMap<String, Box<dyn Source>>,
    opts: RunOptions,
    stop: Arc<AtomicBool>,
    /// Held while this runner may write the state file.
    lock: Option<StateLock>,
    /// Jobs whose target binding was checked: once per job and config,
    /// not on every scoped pass.
    bound: HashSet<String>,
    /// When each job's upstream was last audited.
    audited: HashMap<String, Instant>,
}

impl Runner {
    /// Opens the state file; unless dry-running, first takes its lock, so
    /// a second kbsync on the same file is refused.
    pub fn open(config: Config, opts: RunOptions) -> Result<Runner, ReconcileError> {
        let lock = if opts.dry_run {
            None
        } else {
            Some(StateLock::acquire(&config.state_path)?)
        };
        Runner::open_with(config, opts, lock)
    }

    /// Switches to `config` (SIGHUP). The upstream clients are rebuilt (a
    /// rotated key is read again). The state file's lock is kept when the
    /// path did not change; a new path must be lockable. On error nothing
    /// changes.
    pub fn reconfigure(&mut self, config: Config) -> Result<(), ReconcileError> {
        let new_lock = if config.state_path == self.config.state_path {
            None
        } else {
            Some(StateLock::acquire(&config.state_path)?)
        };
        let state = State::open(&config.state_path)?;
        self.own = OwnFiles::of(&config);
        self.state = state;
        self.config = config;
        self.sinks.clear();
        self.sources.clear();
        self.bound.clear();
        if let Some(lock) = new_lock {
            self.lock = Some(lock);
        }
        Ok(())
    }

    fn open_with(
        config: Config,
        opts: RunOptions,
        lock: Option<StateLock>,
    ) -> Result<Runner, ReconcileError> {
        let state = if opts.dry_run {
            State::open_read_only(&config.state_path)?
        } else {
            State::open(&config.state_path)?
        };
        Ok(Runner {
            own: OwnFiles::of(&config),
            config,
            state,
            sinks: HashMap::new(),
            sources: HashMap::new(),
            opts,
            stop: Arc::new(AtomicBool::new(false)),
            lock,
            bound: HashSet::new(),
            audited: HashMap::new(),
        })
    }

    /// The jobs an operator paused, and since when (Unix seconds).
    pub fn paused_jobs(&self) -> Result<std::collections::BTreeMap<String, i64>, StateError> {
        self.state.paused()
    }

    /// When a pass of any job last converged (Unix seconds).
    pub fn last_success(&self) -> Result<Option<i64>, StateError> {
        self.state.last_success()
    }

    /// Set it to make the running pass stop starting new upstream work;
    /// what already started finishes and is recorded.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Until when `job`'s upstream rests (it answered "down" too often).
    pub fn resting_until(&self, job: &str) -> Option<std::time::Instant> {
        self.sinks.get(job)?.resting_until()
    }

    /// Keys of `job` whose backed-off steps are due now, at most `limit`.
    pub fn due_keys(&self, job: &str, limit: usize) -> Result<Vec<String>, StateError> {
        self.state.due_keys(job, crate::state::unix_now(), limit)
    }

    /// When the earliest backed-off step of `job` is due (Unix seconds).
    pub fn next_retry_at(&self, job: &str) -> Result<Option<i64>, StateError> {
        self.state.next_retry_at(job)
    }

    /// Whether `kbsync retry --allow-deletes` lifted the delete guard for
    /// the next full pass of `job`.
    pub fn deletes_allowed(&self, job: &str) -> Result<bool, StateError> {
        self.state.deletes_allowed(job)
    }

    /// Empties the state file's write-ahead log (the service, when idle).
    pub fn checkpoint(&self) -> Result<i64, StateError> {
        self.state.checkpoint()
    }

    /// The files kbsync writes (the state file and its companions): the
    /// watcher does not react to them.
    pub fn avoided(&self) -> &[PathBuf] {
        self.own.written()
    }

    /// One pass over the part of job `name` that `scope` selects.
    pub async fn run_job(
        &mut self,
        name: &str,
        scope: &Scope,
    ) -> Result<JobReport, ReconcileError> {
        let Some(job) = self.config.jobs.iter().find(|j| j.name == name).cloned() else {
            return Err(ReconcileError::NoSuchJob(name.to_owned()));
        };
        let span = tracing::info_span!("job", job = %job.name);
        self.run_one(&job, scope).instrument(span).await
    }
}

impl Runner {
    fn audit_due(&self, job: &JobConfig) -> bool {
        if !self.opts.audit {
            return false;
        }
        match (
            self.audited.get(&job.name),
            self.config.daemon.audit_interval,
        ) {
            (None, _) => true,
            (Some(at), Some(every)) => at.elapsed() >= every,
            (Some(_), None) => false,
        }
    }

    /// Lists the upstream and repairs the state file from what it holds
    /// (nothing is written on a dry run): the report, why it could not run,
    /// and the requests it took.
    async fn audit(
        &mut self,
        job: &JobConfig,
    ) -> Result<(Option<AuditReport>, Option<AuditFailure>, u64), ReconcileError> {
        let sink = match connect(&mut self.sinks, job) {
            Ok(s) => s,
            Err(e) => {
                let failure = AuditFailure {
                    refused: Some(Refused::unloaded(e.clone())),
                    message: e,
                };
                return Ok((None, Some(failure), 0));
            }
        };
        let before = sink.requests_sent();
        let result = audit::audit(sink, &self.state, job, !self.opts.dry_run).await;
        let requests = sink.requests_sent() - before;
        self.audited.insert(job.name.clone(), Instant::now());
        match result {
            Ok(report) => {
                if let Some(r) = &report {
                    tracing::info!(
                        listed = r.listed,
                        drift = r.findings.len(),
                        requests,
                        "audited the upstream"
                    );
                }
                Ok((report, None, requests))
            }
            Err(audit::AuditError::State(e)) => Err(e.into()),
            Err(audit::AuditError::Sink(e)) => {
                let refused = refused_by_target(job, &e);
                if refused.is_none() {
                    tracing::error!("the upstream audit failed: {e}");
                }
                let failure = AuditFailure {
                    message: format!("the upstream audit failed: {e}"),
                    refused,
                };
                Ok((None, Some(failure), requests))
            }
        }
    }
}

impl Runner {
    /// A pass whose source cannot be looked at (`why`: its root is missing
    /// or looks unmounted) scans, records and retires nothing. A dry run
    /// with the audit (`kbsync check`) still compares the upstream with
    /// the state file, which needs no source.
    async fn without_source(
        &mut self,
        job: &JobConfig,
        scope: &Scope,
        why: String,
    ) -> Result<JobReport, ReconcileError> {
        let mut report = JobReport::new(&job.name);
        report.unscanned = true;
        if self.opts.dry_run {
            report.error = Some(format!("{why}: the source was not looked at"));
            if scope.is_all() && self.audit_due(job) {
                let (audit, failure, requests) = self.audit(job).await?;
                (report.audit, report.requests) = (audit, requests);
                report.audit_error = failure.map(|f| f.message);
            }
        } else {
            report.error = Some(format!("{why}: nothing was scanned, nothing retired"));
        }
        tracing::error!("{}", report.error.as_deref().unwrap_or_default());
        Ok(report)
    }
}

/// The job's connected sink, connecting on first use.
fn connect<'s>(
    sinks: &'s mut HashMap<String, Box<dyn Sink>>,
    job: &JobConfig,
) -> Result<&'s dyn Sink, String> {
    match sinks.entry(job.name.clone()) {
        std::collections::hash_map::Entry::Occupied(e) => Ok(&**e.into_mut()),
        std::collections::hash_map::Entry::Vacant(e) => {
            let sink = job.sink.connect()?;
            sink.transport().serve_job(&job.name);
            Ok(&**e.insert(sink))
        }
    }
}

/// What the slices of a pass read that its report does not keep, for its
/// "scanned" line.
#[derive(Default)]
struct ScanTotals {
    hashed_bytes: u64,
    skipped: usize,
}

impl ScanTotals {
    fn add(&mut self, scanned: &Scanned) {
        self.hashed_bytes += scanned.scan.hashed_bytes;
        self.skipped += scanned.scan.skipped.len();
    }

    fn log(&self, scope: &Scope, report: &JobReport) {
        tracing::info!(
            scope = %describe(scope),
            files = report.scanned,
            hashed = report.hashed_files,
            hashed_bytes = self.hashed_bytes,
            skipped = self.skipped,
            "scanned"
        );
    }
}

/// Why the upstream refused the job's target or credential, as the
/// setting that names it: the job stops before reading anything.
#[derive(Debug, Clone)]
struct Refused {
    message: String,
    /// The config is wrong (not an upstream that could not be reached).
    config: bool,
}

impl Refused {
    fn config(message: String) -> Refused {
        Refused {
            message,
            config: true,
        }
    }

    /// The credential could not be loaded (a variable not set yet, a
    /// file not there yet): the job fails, and is tried again.
    fn unloaded(message: String) -> Refused {
        Refused {
            message,
            config: false,
        }
    }
}

/// Whether an upstream's answer says the config is wrong: the key was
/// refused (401, 403 other than a rate limit), there is no such target
/// (404), or the sink found nothing in the job can succeed (a refused
/// signature). Transient answers are not: they say nothing of the config.
fn refused_by_target(job: &JobConfig, e: &SinkError) -> Option<Refused> {
    let refusal = e.class == ErrorClass::Fatal
        || (e.class != ErrorClass::Transient && matches!(e.status, Some(401 | 403 | 404)));
    refusal.then(|| {
        Refused::config(format!(
            "{}: the {} upstream refused it: {e}",
            job.sink.places().of(e),
            job.sink.kind()
        ))
    })
}

/// The name under which a mirror marks its target: `kbsync_owner_`, the
/// job's name prefix (hashed), and the mirror (machine, state file, job,
/// hashed). The same after a lost state file is recreated at its path, so
/// starting afresh is never taken for a second mirror.
fn owner_mark(state_path: &std::path::Path, job: &JobConfig) -> String {
    let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    // The state file's folder as it resolves: one file, one name.
    let state = match (state_path.parent(), state_path.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map(|d| d.join(name))
            .unwrap_or_else(|_| state_path.to_owned()),
        _ => state_path.to_owned(),
    };
    let prefix = job.sink.namespace().map(|(_, p, _)| p).unwrap_or_default();
    let hex = |text: &str, n: usize| blake3::hash(text.as_bytes()).to_hex()[..n].to_owned();
    format!(
        "kbsync_owner_{}_{}",
        hex(&prefix, 8),
        hex(
            &format!("{}\0{}\0{}", machine.trim(), state.display(), job.name),
            12
        )
    )
}

/// An audit that could not run: why, and whether that was the upstream
/// refusing the target (the job then stops).
struct AuditFailure {
    message: String,
    refused: Option<Refused>,
}

impl Runner {
    /// Records which upstream the job now mirrors into. A target new to
    /// the state file is asked first (`Sink::check_target`): a refused
    /// one keeps the binding the job had, so a mistyped id costs no
    /// re-upload once it is fixed. A different target than last time
    /// makes the state's upstream ids meaningless.
    /// Also returns the requests the check took.
    async fn bind(
        &mut self,
        job: &JobConfig,
    ) -> Result<(Result<(), Refused>, u64), ReconcileError> {
        let identity = job.sink.identity();
        let old = self.state.bound_target(&job.name)?;
        if old.as_deref() == Some(identity.as_str()) {
            return Ok((Ok(()), 0));
        }
        let sink = match connect(&mut self.sinks, job) {
            Ok(s) => s,
            Err(e) => return Ok((Err(Refused::unloaded(e)), 0)),
        };
        let before = sink.requests_sent();
        let checked = sink.check_target().await;
        let requests = sink.requests_sent() - before;
        match checked.map_err(|e| (refused_by_target(job, &e), e)) {
            Ok(()) => {}
            Err((Some(refused), _)) => return Ok((Err(refused), requests)),
            // Unreachable for now: a first binding loses nothing, and the
            // pass meets the outage step by step; a changed one would drop
            // every upstream id for a target not known to be right.
            Err((None, e)) if old.is_some() => {
                let refused = Refused::unloaded(format!(
                    "cannot reach the new target to check it (the job stays bound to the one before): {e}"
                ));
                return Ok((Err(refused), requests));
            }
            Err((None, _)) => {}
        }
        if self.state.bind_target(&job.name, &identity)? {
            tracing::warn!("target changed since the last run: documents will be adopted by name or created anew in the new target");
        }
        Ok((Ok(()), requests))
    }

    /// Marks the target as this mirror's, with the audit (so a no-op pass
    /// without one still sends nothing). Another mirror's mark stops the
    /// job: two state files mirroring into one target would flip each
    /// other's documents on every pass. A failure to mark is left to the
    /// audit, which meets the same upstream.
    /// Also returns the requests it took.
    async fn claim(&mut self, job: &JobConfig) -> (Option<Refused>, u64) {
        let mark = owner_mark(&self.config.state_path, job);
        let Ok(sink) = connect(&mut self.sinks, job) else {
            return (None, 0);
        };
        let before = sink.requests_sent();
        let claimed = sink.claim(&mark).await;
        let requests = sink.requests_sent() - before;
        let Ok(Some(other)) = claimed else {
            return (None, requests);
        };
        let refused = Refused::config(format!(
            "{}: another kbsync already mirrors into this {} target under the same name prefix (its mark: metadata field `{other}`; this one's would be `{mark}`): two mirrors would undo each other's work on every pass. Give this job its own target or a name_prefix of its own; if the other mirror is gone for good, delete the field `{other}` in the target's metadata settings and run again",
            job.sink.places().target,
            job.sink.kind()
        ));
        (Some(refused), requests)
    }

    /// A pass that stops before reading anything: the target or its
    /// credential was refused, or could not be checked.
    fn stopped(
        &self,
        job: &JobConfig,
        scope: &Scope,
        started: Instant,
        started_at: i64,
        refused: Refused,
    ) -> Result<JobReport, ReconcileError> {
        tracing::error!("{}", refused.message);
        let mut report = JobReport::new(&job.name);
        report.config_error = refused.config;
        report.error = Some(refused.message);
        report.elapsed = started.elapsed();
        log_run(&self.state, scope, started_at, &report)?;
        Ok(report)
    }
}

/// Saves what the scan learnt: facts of new and changed items, and which
/// cached items are gone (never those the scan could not read).
fn record(state: &mut State, job: &str, scanned: &Scanned) -> Result<(), StateError> {
    let (scan, cached) = (&scanned.scan, &scanned.cached);
    let changed: Vec<&Observed> = scan
        .items
        .iter()
        .filter(|o| match cached.get(&o.key) {
            None => true,
            Some(c) => {
                o.rehashed
                    || !c.present
                    || c.facts.as_ref().is_none_or(|f| {
                        f.size != o.size
                            || f.mtime_ns != o.mtime_ns
                            || f.identity != o.identity
                            || f.hash != o.hash
                    })
            }
        })
        .collect();
    let observed: HashSet<&str> = scan.items.iter().map(|o| o.key.as_str()).collect();
    let absent: Vec<&str> = cached
        .values()
        .filter(|c| c.present && !observed.contains(c.key.as_str()) && !scan.is_protected(&c.key))
        .map(|c| c.key.as_str())
        .collect();
    state.save_scan(job, &changed, &absent)
}

/// Files new to the state file whose names the audit found upstream,
/// unclaimed (a state file restored from a backup, documents made before
/// a lost one): each adopts its record, as it stands, instead of being
/// created a second time.
fn adopt_listed(
    state: &State,
    job: &str,
    sink: &dyn Sink,
    scanned: &mut Scanned,
) -> Result<(), StateError> {
    let mut adopted = Vec::new();
    for o in &scanned.scan.items {
        if scanned.cached.contains_key(&o.key) {
            continue;
        }
        if let Some(l) = state.take_unclaimed(&sink.record_name(&o.key))? {
            tracing::info!(key = %o.key, record = %l.id, "new to the state file, already upstream: adopted");
            audit::adopt(state, job, &o.key, &l)?;
            adopted.push(o.key.as_str());
        }
    }
    if !adopted.is_empty() {
        let rows = state.load_keys(job, adopted)?;
        scanned.cached.extend(rows);
    }
    Ok(())
}

/// The plan, and what the pass must report as skipped: what the scan could
/// not read, and items of a sink that can neither take content nor create
/// records when no upstream record is bound to them.
fn plan_pass(job: &JobConfig, rules: &Rules, scanned: &Scanned) -> (Plan, Vec<Skipped>) {
    let (scan, cached) = (&scanned.scan, &scanned.cached);
    // Items the sink would refuse outright (a file type it does not take)
    // were left out by the source, unread, as skipped and protected.
    let mut skipped = scan.skipped.clone();
    let is_protected = |k: &str| scan.is_protected(k);
    let plan = plan::plan(scan.items.iter(), cached, rules, &is_protected);
    if !rules.caps.content && !rules.caps.create_records {
        let reason = job.sink.unbound_reason();
        for item in &scan.items {
            let bound = cached.get(&item.key).is_some_and(|c| c.doc_id.is_some());
            if !bound && job.sink.bound(&item.key).is_none() {
                skipped.push(Skipped {
                    path: item.key.clone(),
                    reason: reason.clone(),
                });
            }
        }
    }
    for (key, w) in &plan.warnings {
        tracing::warn!(%key, field = %w.field, "metadata value skipped: {}", w.message);
    }
    (plan, skipped)
}

/// The plan as the outbox lets it through.
struct Queue {
    /// The plan without held steps; `None` when nothing was held.
    filtered: Option<Plan>,
    held: Vec<Held>,
    /// Keys whose create was sent before and never confirmed.
    suspects: HashSet<String>,
}

/// Writes the plan's upstream steps to the outbox and holds back those that
/// failed before (parked, or still backing off when `honour_backoff`).
fn queue(
    state: &mut State,
    job: &str,
    scope: &Scope,
    plan: &Plan,
    honour_backoff: bool,
) -> Result<Queue, StateError> {
    // The steps (a key and fingerprint per op) are gone before the push.
    let rows = {
        let steps: Vec<_> = plan.ops.iter().filter_map(outbox::step).collect();
        state.queue(job, scope, &steps)?
    };
    let suspects: HashSet<String> = rows
        .values()
        .filter(|r| r.started && matches!(r.op.as_str(), "create" | "update"))
        .map(|r| r.key.clone())
        .collect();
    let (filtered, held) = outbox::hold(plan, &rows, crate::state::unix_now(), honour_backoff);
    // Per item at debug; one line for all at info: during an outage tens
    // of thousands of steps wait, and a line each would flood the journal.
    for h in &held {
        match h.until {
            Some(at) => {
                tracing::debug!(key = %h.key, op = h.op, "waiting until {} to retry: {}", crate::metadata::format_rfc3339(at), h.error.message)
            }
            None => {
                tracing::debug!(key = %h.key, op = h.op, "not retried until it changes (or `kbsync retry`): {}", h.error.message)
            }
        }
    }
    let waiting = held.iter().filter_map(|h| Some((h.until?, h)));
    if let Some((at, first)) = waiting.clone().min_by_key(|(at, _)| *at) {
        tracing::info!(
            "{} step(s) wait out a backoff, the first until {} ({} {}: {})",
            waiting.count(),
            crate::metadata::format_rfc3339(at),
            first.op,
            first.key,
            first.error.message
        );
    }
    let parked = held.iter().filter(|h| h.until.is_none()).count();
    if parked > 0 {
        tracing::info!("{parked} step(s) parked until their item changes (or `kbsync retry`)");
    }
    Ok(Queue {
        filtered,
        held,
        suspects,
    })
}

/// Whether the plan needs the upstream: any upstream op, or forgetting an
/// item whose create may have been applied (its document must be found).
fn needs_upstream(plan: &Plan, suspects: &HashSet<String>) -> bool {
    plan.ops.iter().any(|o| match o {
        Op::Forget { key } => suspects.contains(key),
        other => other.is_upstream(),
    })
}

struct Pushed {
    outcome: Outcome,
    requests: u64,
}

async fn push(sink: &dyn Sink, ctx: PushContext<'_>, plan: &Plan) -> Result<Pushed, StateError> {
    let before = sink.requests_sent();
    let outcome = crate::execute::push(sink, ctx, plan)
        .await
        .map_err(|e| match e {
            PushError::State(s) => s,
        })?;
    Ok(Pushed {
        outcome,
        requests: sink.requests_sent() - before,
    })
}

/// A plan with nothing for the upstream: only local bookkeeping.
fn forget_only(state: &State, job: &str, plan: &Plan) -> Result<Outcome, StateError> {
    let mut outcome = Outcome::default();
    crate::execute::forget(state, job, plan, &mut outcome)?;
    Ok(outcome)
}

/// Flags settled every item of this pass the planner now finds in sync
/// (its steps, if any, all confirmed), so later passes skip it while it is
/// unchanged. Planned again from the rows as they are now.
fn settle(
    state: &mut State,
    job: &str,
    scanned: &Scanned,
    rules: &Rules,
) -> Result<(), StateError> {
    let (scan, cached) = (&scanned.scan, &scanned.cached);
    // The pass's keys, each with its observation when it was seen.
    let mut domain: Vec<(&str, Option<&Observed>)> = scan
        .items
        .iter()
        .map(|o| (o.key.as_str(), Some(o)))
        .chain(cached.keys().map(|k| (k.as_str(), None)))
        .collect();
    // Observed entries sort first among equal keys, and dedup keeps them.
    domain.sort_unstable_by(|a, b| a.0.cmp(b.0).then(b.1.is_some().cmp(&a.1.is_some())));
    domain.dedup_by(|later, first| later.0 == first.0);
    let is_protected = |k: &str| scan.is_protected(k);
    // In slices (the planner decides each key alone): a first sync of a
    // million files never holds a million rows at once.
    for slice in domain.chunks(SETTLE_SLICE) {
        let now = state.load_keys(job, slice.iter().map(|(k, _)| *k))?;
        let again = plan::plan(
            slice.iter().filter_map(|(_, o)| *o),
            &now,
            rules,
            &is_protected,
        );
        let busy: HashSet<&str> = again
            .ops
            .iter()
            .map(|o| o.key())
            .chain(again.warnings.iter().map(|(k, _)| k.as_str()))
            .collect();
        let settled: Vec<&str> = slice
            .iter()
            .filter(|(k, _)| !busy.contains(k))
            .filter(|(k, seen)| {
                now.get(*k).is_some_and(|c| match seen {
                    // Unbound items of a metadata-only target are reported
                    // as skipped on every pass: never settled.
                    Some(_) => c.present && c.doc_id.is_some(),
                    None => !c.present && !is_protected(k),
                })
            })
            .map(|(k, _)| *k)
            .collect();
        state.mark_settled(job, &settled)?;
    }
    Ok(())
}

/// Keys re-planned at once by `settle`: few enough to look up one by one.
const SETTLE_SLICE: usize = 2_000;

/// Adds the pass to the run log. A scoped pass that found nothing to do
/// (an editor's lock file, a touched but unchanged file) is not worth a
/// line.
fn log_run(
    state: &State,
    scope: &Scope,
    started_at: i64,
    report: &JobReport,
) -> Result<(), StateError> {
    state.record_skipped(&report.job, scope, &report.skipped)?;
    if scope.is_all() || !report.plan.ops.is_empty() || !report.converged() {
        let summary = crate::report::summary_line(report);
        let outcome = (report.converged(), report.settled());
        let detail = run_detail(scope, report);
        state.record_run(&report.job, started_at, outcome, &summary, &detail)?;
    }
    Ok(())
}

/// The pass in numbers, for the run log.
pub fn run_detail(scope: &Scope, r: &JobReport) -> crate::state::RunDetail {
    let mut d = crate::state::RunDetail {
        scope: describe(scope),
        duration_ms: r.elapsed.as_millis() as u64,
        scanned: r.scanned as u64,
        read: r.hashed_files as u64,
        skipped: r.skipped.len() as u64,
        held: r.held.len() as u64,
        requests: r.requests,
        error: r.error.clone(),
        refused: r.refused.as_ref().map(|g| g.to_string()),
        ..Default::default()
    };
    if let Some(o) = &r.outcome {
        d.created = o.created as u64;
        d.adopted = o.adopted as u64;
        d.updated = o.updated as u64;
        d.metadata = o.metadata as u64;
        d.status = o
            .status
            .iter()
            .map(|(action, n)| ((*action).to_owned(), *n as u64))
            .collect();
        d.deleted = o.deleted as u64;
        d.failed = o.failures.len() as u64;
        d.interrupted = o.interrupted;
    }
    d
}

fn plan_fingerprint(job: &JobConfig, rules: &Rules) -> String {
    plan::fingerprint(
        rules.mappings,
        rules.delete_policy,
        rules.caps,
        &job.sink.plan_inputs(),
    )
}

fn describe(scope: &Scope) -> String {
    match scope {
        Scope::All => "all".into(),
        Scope::Paths(p) if p.len() == 1 => p.iter().next().cloned().unwrap_or_default(),
        Scope::Paths(p) => format!("{} paths", p.len()),
        Scope::Range {
            from,
            until,
            within,
        } => {
            let range = format!(
                "{from:?}..{}",
                until
                    .as_deref()
                    .map(|u| format!("{u:?}"))
                    .unwrap_or_default()
            );
            match within {
                Some(paths) => format!("{range} of {} path(s)", paths.len()),
                None => range,
            }
        }
    }
}
