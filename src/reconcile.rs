//! One full pass for each job: scan the source, diff against the state
//! file, plan, and (unless dry-running) push. The daemon will call the same
//! pass; `--reconcile` runs it once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::config::{Config, JobConfig, SourceConfig, TargetConfig};
use crate::plan::{self, Plan, Rules};
use crate::push::queue::{self, Held};
use crate::push::{Outcome, Pusher};
use crate::source::{folder, web, KnownFacts, Observed, ScanResult, Scope, Skipped};
use crate::state::{lock_path, CachedItem, State, StateError, StateLock};
use crate::target::dify::DifyClient;
use crate::target::pai::PaiClient;
use crate::target::sharely::SharelyClient;
use crate::triage::triage;

/// A job's upstream client.
enum Upstream {
    Dify(DifyClient),
    Sharely(SharelyClient),
    Pai(PaiClient),
}

impl Upstream {
    fn requests_sent(&self) -> u64 {
        match self {
            Upstream::Dify(c) => c.requests_sent(),
            Upstream::Sharely(c) => c.requests_sent(),
            Upstream::Pai(c) => c.requests_sent(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    pub dry_run: bool,
    /// Leave steps that failed transiently alone until their backoff ran
    /// out (the service). A one-shot run asked for by hand tries them now.
    pub honour_backoff: bool,
}

#[derive(Debug)]
pub struct JobReport {
    pub job: String,
    pub scanned: usize,
    pub hashed_files: usize,
    /// Files found settled and unchanged: neither read nor planned.
    pub unchanged: usize,
    pub skipped: Vec<Skipped>,
    pub plan: Plan,
    /// Planned steps the outbox held back (failed before, see `Held`).
    pub held: Vec<Held>,
    pub outcome: Option<Outcome>,
    pub requests: u64,
    /// The scan: walk, triage, reading what changed, and (unless dry
    /// running) recording the facts in the state file.
    pub scan_elapsed: Duration,
    pub elapsed: Duration,
    /// A job-level error (credential, state, fatal upstream answer).
    pub error: Option<String>,
}

impl JobReport {
    pub fn converged(&self) -> bool {
        self.error.is_none()
            && self.skipped.is_empty()
            && self.held.is_empty()
            && self.outcome.as_ref().is_none_or(Outcome::converged)
    }
}

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

/// What a sequence of passes shares: the config, the open state file and
/// one upstream client per job (created on first use, so a job with
/// nothing to push never needs its key).
pub struct Runner {
    pub config: Config,
    state: State,
    avoid: Vec<PathBuf>,
    clients: HashMap<String, Upstream>,
    web_clients: HashMap<String, reqwest::Client>,
    opts: RunOptions,
    stop: Arc<AtomicBool>,
    /// Held while this runner may write the state file.
    lock: Option<StateLock>,
    /// Jobs whose target binding was checked: once per job and config,
    /// not on every scoped pass.
    bound: HashSet<String>,
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
        self.avoid = state_files(&config.state_path);
        self.state = state;
        self.config = config;
        self.clients.clear();
        self.web_clients.clear();
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
        let avoid = state_files(&config.state_path);
        Ok(Runner {
            config,
            state,
            avoid,
            clients: HashMap::new(),
            web_clients: HashMap::new(),
            opts,
            stop: Arc::new(AtomicBool::new(false)),
            lock,
            bound: HashSet::new(),
        })
    }

    /// Set it to make the running pass stop starting new upstream work;
    /// what already started finishes and is recorded.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// When the earliest backed-off step of `job` is due (Unix seconds).
    pub fn next_retry_at(&self, job: &str) -> Result<Option<i64>, StateError> {
        self.state.next_retry_at(job)
    }

    /// Files the source must never mirror, nor react to (the state file).
    pub fn avoided(&self) -> &[PathBuf] {
        &self.avoid
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

    fn client(&mut self, job: &JobConfig) -> Result<&Upstream, String> {
        if !self.clients.contains_key(&job.name) {
            let client = match &job.target {
                TargetConfig::Dify(dify) => {
                    let key = dify.api_key.load().map_err(|e| e.to_string())?;
                    Upstream::Dify(DifyClient::new(dify, key).map_err(|e| e.to_string())?)
                }
                TargetConfig::Sharely(cfg) => {
                    let key = cfg.api_key.load().map_err(|e| e.to_string())?;
                    Upstream::Sharely(SharelyClient::new(cfg, key).map_err(|e| e.to_string())?)
                }
                TargetConfig::Pai(cfg) => {
                    let id = cfg.access_key_id.load().map_err(|e| e.to_string())?;
                    let secret = cfg.access_key_secret.load().map_err(|e| e.to_string())?;
                    Upstream::Pai(PaiClient::new(cfg, id, secret).map_err(|e| e.to_string())?)
                }
            };
            self.clients.insert(job.name.clone(), client);
        }
        Ok(&self.clients[&job.name])
    }
}

fn state_files(path: &Path) -> Vec<PathBuf> {
    let abs = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            dir.canonicalize()
                .map(|d| d.join(name))
                .unwrap_or_else(|_| path.to_owned())
        }
        _ => path.to_owned(),
    };
    let with = |suffix: &str| {
        let mut s = abs.clone().into_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    vec![
        with("-wal"),
        with("-shm"),
        with("-journal"),
        lock_path(&abs),
        abs,
    ]
}

fn target_identity(job: &JobConfig) -> String {
    match &job.target {
        TargetConfig::Dify(d) => format!("dify {}datasets/{}", d.base_url, d.dataset_id),
        TargetConfig::Sharely(c) => format!("sharely {}workspaces/{}", c.base_url, c.workspace_id),
        TargetConfig::Pai(c) => format!(
            "pai {} workspace {} dataset {} {} at {}",
            c.endpoint, c.workspace_id, c.dataset_id, c.dataset_version, c.uri_base
        ),
    }
}

impl Runner {
    async fn run_one(
        &mut self,
        job: &JobConfig,
        scope: &Scope,
    ) -> Result<JobReport, ReconcileError> {
        let opts = self.opts;
        let started = Instant::now();
        let started_at = crate::state::unix_now();
        if !opts.dry_run && !self.bound.contains(&job.name) {
            if self.state.bind_target(&job.name, &target_identity(job))? {
                tracing::warn!("target changed since the last run: documents will be adopted by name or created anew in the new target");
            }
            self.bound.insert(job.name.clone());
        }
        // A web job is polled as a whole.
        let scope = match job.source {
            SourceConfig::Folder(_) => scope,
            SourceConfig::Web(_) => &Scope::All,
        };
        // The walk (stat only) runs while the cache is read: neither needs
        // the other until files are compared.
        let walking = match &job.source {
            SourceConfig::Folder(folder_cfg) => {
                let folder_cfg = folder_cfg.clone();
                let avoid_owned = self.avoid.clone();
                let scope_owned = scope.clone();
                Some(tokio::task::spawn_blocking(move || {
                    folder::walk(&folder_cfg, &avoid_owned, &scope_owned)
                }))
            }
            SourceConfig::Web(_) => None,
        };
        let bind = |key: &str| match &job.target {
            TargetConfig::Sharely(c) => c.knowledge.get(key).cloned(),
            TargetConfig::Dify(_) | TargetConfig::Pai(_) => None,
        };
        let rules = Rules {
            mappings: &job.metadata,
            delete_policy: job.delete_policy,
            caps: job.target.capabilities(),
            bind: &bind,
        };
        // Folder jobs skip settled, unchanged files; a web job re-plans
        // every page it fetched.
        let (cached, walked, unchanged) = match walking {
            Some(walking) => {
                let fingerprint = plan_fingerprint(job, &rules);
                let trust = self
                    .state
                    .plan_fingerprint(&job.name, &fingerprint, !opts.dry_run)?;
                let walked = walking.await.expect("the walk thread does not panic");
                let t = triage(&self.state, &job.name, scope, trust, walked)?;
                (t.cached, Some(t.walked), t.unchanged)
            }
            None => (self.state.load_items_in(&job.name, scope)?, None, 0),
        };
        let known: HashMap<String, KnownFacts> = cached
            .iter()
            .filter_map(|(k, c)| c.facts.clone().map(|f| (k.clone(), f)))
            .collect();

        let (mut scan, bodies) = match (&job.source, walked) {
            (SourceConfig::Folder(folder_cfg), Some(walked)) => {
                let folder_cfg = folder_cfg.clone();
                let scan = tokio::task::spawn_blocking(move || {
                    folder::read_changed(&folder_cfg, walked, &known)
                })
                .await
                .expect("the hashing threads do not panic");
                (scan, HashMap::new())
            }
            (SourceConfig::Folder(_), None) => unreachable!("folder jobs start a walk"),
            (SourceConfig::Web(web_cfg), _) => {
                let in_sync: HashSet<String> = cached
                    .values()
                    .filter(|c| {
                        c.present && c.facts.as_ref().map(|f| &f.hash) == c.pushed_hash.as_ref()
                    })
                    .map(|c| c.key.clone())
                    .collect();
                let client = match self.web_clients.get(&job.name) {
                    Some(c) => c.clone(),
                    None => {
                        let c = web::client(web_cfg)
                            .map_err(|e| ReconcileError::Http(e.to_string()))?;
                        self.web_clients.insert(job.name.clone(), c.clone());
                        c
                    }
                };
                let fetched = web::scan(&client, web_cfg, &known, &in_sync).await;
                (fetched.scan, fetched.bodies)
            }
        };
        scan.unchanged = unchanged;
        tracing::info!(
            scope = %describe(scope),
            files = scan.items.len() + unchanged,
            hashed = scan.hashed_files,
            hashed_bytes = scan.hashed_bytes,
            skipped = scan.skipped.len(),
            "scanned"
        );

        let is_protected = |k: &str| scan.is_protected(k);
        if !opts.dry_run {
            let changed: Vec<&Observed> = scan
                .items
                .iter()
                .filter(|o| match cached.get(&o.key) {
                    None => true,
                    Some(c) => {
                        o.rehashed
                            || !c.present
                            || c.facts.as_ref().is_none_or(|f| {
                                f.size != o.size || f.mtime_ns != o.mtime_ns || f.hash != o.hash
                            })
                    }
                })
                .collect();
            let observed: HashSet<&str> = scan.items.iter().map(|o| o.key.as_str()).collect();
            let absent: Vec<&str> = cached
                .values()
                .filter(|c| {
                    c.present && !observed.contains(c.key.as_str()) && !is_protected(&c.key)
                })
                .map(|c| c.key.as_str())
                .collect();
            self.state.save_scan(&job.name, &changed, &absent)?;
        }
        let scan_elapsed = started.elapsed();
        tracing::debug!(ms = scan_elapsed.as_millis() as u64, "scan recorded");

        let plan = plan::plan(&scan.items, &cached, &rules, &is_protected);
        let mut skipped = scan.skipped.clone();
        if !rules.caps.content && !rules.caps.create_records {
            let reason = crate::push::metadata_only::unbound_reason(job.target.kind());
            for item in &scan.items {
                let bound = cached.get(&item.key).is_some_and(|c| c.doc_id.is_some());
                if !bound && bind(&item.key).is_none() {
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

        let mut report = JobReport {
            job: job.name.clone(),
            scanned: scan.items.len() + scan.unchanged,
            hashed_files: scan.hashed_files,
            unchanged: scan.unchanged,
            skipped,
            plan,
            held: Vec::new(),
            outcome: None,
            requests: 0,
            scan_elapsed,
            elapsed: Duration::ZERO,
            error: None,
        };
        if opts.dry_run {
            // Show what the outbox would hold back, without writing it.
            let rows = self.state.outbox_in(&job.name, scope)?;
            report.held = queue::hold(&report.plan, &rows, crate::state::unix_now(), false).1;
            report.elapsed = started.elapsed();
            return Ok(report);
        }

        // The steps (a key and fingerprint per op) are gone before the push.
        let rows = {
            let steps: Vec<_> = report.plan.ops.iter().filter_map(queue::step).collect();
            self.state.queue(&job.name, scope, &steps)?
        };
        let suspects: HashSet<String> = rows
            .values()
            .filter(|r| r.started && r.op == "create")
            .map(|r| r.key.clone())
            .collect();
        let (filtered, held) = queue::hold(
            &report.plan,
            &rows,
            crate::state::unix_now(),
            opts.honour_backoff,
        );
        for h in &held {
            match h.until {
                Some(at) => {
                    tracing::info!(key = %h.key, op = h.op, "waiting until {} to retry: {}", crate::metadata::format_rfc3339(at), h.error.message)
                }
                None => {
                    tracing::debug!(key = %h.key, op = h.op, "not retried until it changes (or `kbsync retry`): {}", h.error.message)
                }
            }
        }
        report.held = held;
        let to_push = filtered.as_ref().unwrap_or(&report.plan);

        let needs_upstream = to_push.ops.iter().any(|o| match o {
            crate::plan::Op::Forget { key } => suspects.contains(key),
            other => other.is_upstream(),
        });
        if needs_upstream {
            let stop = self.stop.clone();
            // Split borrows: the client lives in `self.clients`, the pusher
            // writes through `self.state`.
            if let Err(e) = self.client(job) {
                report.error = Some(e);
            }
            match (self.clients.get(&job.name), &job.target) {
                (None, _) => {}
                (Some(upstream), target) => {
                    let before = upstream.requests_sent();
                    let outcome = match (upstream, target) {
                        (Upstream::Dify(client), TargetConfig::Dify(dify)) => {
                            Pusher {
                                job,
                                dify,
                                client,
                                state: &mut self.state,
                                cached: &cached,
                                bodies: &bodies,
                                stop: &stop,
                                suspects: &suspects,
                            }
                            .run(to_push)
                            .await
                        }
                        (Upstream::Sharely(client), TargetConfig::Sharely(cfg)) => {
                            crate::push::metadata_only::push(
                                &job.name,
                                client,
                                cfg.concurrency,
                                &mut self.state,
                                &cached,
                                to_push,
                                &stop,
                            )
                            .await
                        }
                        (Upstream::Pai(client), TargetConfig::Pai(cfg)) => {
                            crate::push::pai::push(
                                &job.name,
                                client,
                                cfg.batch_size,
                                &mut self.state,
                                to_push,
                                &stop,
                            )
                            .await
                        }
                        _ => unreachable!("clients are built from the job's own target"),
                    }
                    .map_err(|e| match e {
                        crate::push::PushError::State(s) => ReconcileError::State(s),
                    })?;
                    report.requests = upstream.requests_sent() - before;
                    if let Some(f) = &outcome.fatal {
                        report.error = Some(format!("stopped: {f}"));
                    }
                    report.outcome = Some(outcome);
                }
            }
        } else {
            let mut outcome = Outcome::default();
            for op in &to_push.ops {
                if let crate::plan::Op::Forget { key } = op {
                    self.state.forget(&job.name, key)?;
                    outcome.forgotten += 1;
                }
            }
            report.outcome = Some(outcome);
        }
        if matches!(job.source, SourceConfig::Folder(_)) {
            self.settle(job, &scan, &cached, &rules)?;
        }
        report.elapsed = started.elapsed();
        // A scoped pass that found nothing to do (an editor's lock file, a
        // touched but unchanged file) is not worth a line in the run log.
        if scope.is_all() || !report.plan.ops.is_empty() || !report.converged() {
            let summary = crate::report::summary_line(&report);
            self.state
                .record_run(&job.name, started_at, report.converged(), &summary)?;
        }
        Ok(report)
    }
}

impl Runner {
    /// Flags settled every item of this pass the planner now finds in sync
    /// (its steps, if any, all confirmed), so later passes skip it while it
    /// is unchanged. Planned again from the rows as they are now.
    fn settle(
        &mut self,
        job: &JobConfig,
        scan: &ScanResult,
        cached: &HashMap<String, CachedItem>,
        rules: &Rules,
    ) -> Result<(), ReconcileError> {
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
            let now = self
                .state
                .load_keys(&job.name, slice.iter().map(|(k, _)| *k))?;
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
            self.state.mark_settled(&job.name, &settled)?;
        }
        Ok(())
    }
}

/// Keys re-planned at once by `settle`: few enough to look up one by one.
const SETTLE_SLICE: usize = 2_000;

fn plan_fingerprint(job: &JobConfig, rules: &Rules) -> String {
    let bindings = match &job.target {
        TargetConfig::Sharely(c) => format!("{:?}", c.knowledge),
        TargetConfig::Dify(_) | TargetConfig::Pai(_) => String::new(),
    };
    plan::fingerprint(rules.mappings, rules.delete_policy, rules.caps, &bindings)
}

fn describe(scope: &Scope) -> String {
    match scope {
        Scope::All => "all".into(),
        Scope::Paths(p) if p.len() == 1 => p.iter().next().cloned().unwrap_or_default(),
        Scope::Paths(p) => format!("{} paths", p.len()),
    }
}
