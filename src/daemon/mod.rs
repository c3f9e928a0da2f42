//! The long-running service: watch the folders, batch what changed, run a
//! scoped pass per batch, a full pass periodically; talk to systemd; react
//! to SIGTERM/SIGINT (finish in-flight work, exit 0) and SIGHUP (reload).
//!
//! Everything runs on one loop, one pass at a time: passes share the state
//! file and the upstream rate budget, so running them side by side would
//! buy little and make shutdown and reload harder to reason about.

mod orders;
mod pending;
pub mod sd_notify;
mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::{Instant, Interval};

use crate::config::{Config, Roots};
use crate::control::notify::{Notifier as Events, Transitions};
use crate::control::{Control, Order};
use crate::monitor::{self, Health};
use crate::reconcile::{JobReport, ReconcileError, RunOptions, Runner};
use crate::source::{Scope, Trigger};
use sd_notify::Notifier;
use watch::Shared;

pub use pending::Pending;

/// First delay before a pass that failed as a whole (or skipped files) is
/// tried again; it doubles up to the full-reconcile interval. Single steps
/// that failed are retried on the outbox's own schedule instead.
const FIRST_RETRY: Duration = Duration::from_secs(30);

/// How often the outbox is read for steps whose backoff ran out, or that
/// `kbsync retry` made due. Its tick is also the idle loop's heartbeat.
pub const OUTBOX_CHECK: Duration = Duration::from_secs(5);

/// Due retries are passes over at most this many items at a time.
const RETRY_KEYS: usize = 1000;

/// The state file's log is emptied at most this often between full passes.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(300);

/// Loads the config (with `roots` as the command needs them) and keeps
/// only the jobs in `only` (all when empty).
pub fn load_config(path: &Path, only: &[String], roots: Roots) -> anyhow::Result<Config> {
    let mut config = Config::load_with(path, roots)?;
    for name in only {
        if !config.jobs.iter().any(|j| &j.name == name) {
            anyhow::bail!("no job named {name:?} in {}", path.display());
        }
    }
    if !only.is_empty() {
        config.jobs.retain(|j| only.contains(&j.name));
    }
    Ok(config)
}

struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    stop: bool,
    reload: bool,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            stop: false,
            reload: false,
        })
    }

    /// Waits for the next signal and records what it asks for.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => self.stop = true,
            _ = self.int.recv() => self.stop = true,
            _ = self.hup.recv() => self.reload = true,
        }
    }
}

struct Retry {
    at: Instant,
    delay: Duration,
}

struct Daemon {
    config_path: PathBuf,
    only: Vec<String>,
    runner: Runner,
    shared: Arc<Shared>,
    watcher: Option<watch::Watcher>,
    /// Jobs whose root is on a network filesystem, and their next full pass.
    network: HashMap<String, Instant>,
    notifier: Arc<Notifier>,
    signals: Signals,
    next_full: Option<Instant>,
    /// Polled jobs (`Trigger::Poll`): when each is polled next, and how often.
    next_poll: HashMap<String, (Instant, Duration)>,
    /// Jobs with a `schedule`: when each one's next pass is, and the
    /// minute it stands for.
    next_scheduled: HashMap<String, (Instant, jiff::Timestamp)>,
    retries: HashMap<String, Retry>,
    /// Per job: when the outbox's earliest backed-off step is due.
    outbox_due: HashMap<String, Instant>,
    outbox_check: Interval,
    /// When each job's last pass ended.
    last_pass: HashMap<String, Instant>,
    last_sync: Option<(SystemTime, bool)>,
    last_checkpoint: Instant,
    health: Arc<Health>,
    /// Serving metrics, health and the control API, when `metrics_listen`
    /// asked for it.
    listener: Option<monitor::Listener>,
    control: Arc<Control>,
    orders: tokio::sync::mpsc::UnboundedReceiver<Order>,
    /// `[daemon.notify]`'s sender, when configured.
    events: Option<Events>,
    transitions: Transitions,
}

/// Runs until SIGTERM or SIGINT. Errors only when it cannot start.
pub async fn run(config_path: &Path, only: &[String]) -> anyhow::Result<()> {
    let config = load_config(config_path, only, Roots::MustExist)?;
    let signals = Signals::install()?;
    let runner = Runner::open(
        config,
        RunOptions {
            dry_run: false,
            honour_backoff: true,
            allow_deletes: false,
            checksum: false,
            audit: true,
            slice: 0,
        },
    )?;
    let health = Arc::new(Health::new(&runner.config.job_names()));
    let (control, orders) = Control::new(&runner.config, runner.paused_jobs()?)?;
    let events = runner
        .config
        .control
        .notify
        .as_ref()
        .map(Events::start)
        .transpose()?;
    let listener = listen(&runner.config, &health, &control).await?;
    // The first status line tells of the last good pass, before this run.
    let last_sync = runner
        .last_success()?
        .map(|at| (UNIX_EPOCH + Duration::from_secs(at.max(0) as u64), true));
    let shared = Arc::new(Shared::default());
    let notifier = Arc::new(Notifier::from_env());
    // The watchdog is pinged from its own task: a pass's synchronous work
    // (SQLite, hashing hand-offs) holds the loop's task, not this one, so
    // a long pass is not mistaken for a hang. A runtime that stops
    // scheduling tasks at all stops the pings too.
    let pinger = notifier.watchdog_every().map(|every| {
        let notifier = notifier.clone();
        tokio::spawn(async move {
            let mut i = tokio::time::interval(every);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                i.tick().await;
                notifier.watchdog();
            }
        })
    });
    let mut d = Daemon {
        config_path: config_path.to_owned(),
        only: only.to_vec(),
        runner,
        shared,
        watcher: None,
        network: HashMap::new(),
        notifier,
        signals,
        next_full: None,
        next_poll: HashMap::new(),
        next_scheduled: HashMap::new(),
        retries: HashMap::new(),
        outbox_due: HashMap::new(),
        last_pass: HashMap::new(),
        outbox_check: {
            let mut i = tokio::time::interval(OUTBOX_CHECK);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        },
        last_sync,
        last_checkpoint: Instant::now(),
        health,
        listener,
        control,
        orders,
        events,
        transitions: Transitions::default(),
    };
    d.start_watching();
    d.health.beat();
    d.notifier.ready(&d.status_line());
    tracing::info!(
        jobs = d.runner.config.jobs.len(),
        "started; the first pass is a full reconcile"
    );
    d.event_loop().await;
    if let Some(p) = pinger {
        p.abort();
    }
    d.health.stopping();
    d.notifier.stopping();
    drop(d.watcher.take());
    drop(d.listener.take());
    tracing::info!("stopped");
    Ok(())
}

/// The metrics listener with the control API, when `metrics_listen` asks
/// for it; its counters are there from the start.
async fn listen(
    config: &Config,
    health: &Arc<Health>,
    control: &Arc<Control>,
) -> anyhow::Result<Option<monitor::Listener>> {
    let Some(addr) = config.daemon.metrics_listen else {
        return Ok(None);
    };
    let jobs: Vec<(String, &'static str)> = config
        .jobs
        .iter()
        .map(|j| (j.name.clone(), j.sink.kind()))
        .collect();
    let handle = monitor::install(&jobs)?;
    for job in config.job_names() {
        monitor::paused(&job, control.is_paused(&job));
    }
    Ok(Some(
        monitor::serve(addr, handle, health.clone(), control.clone()).await?,
    ))
}

impl Daemon {
    /// (Re)creates the watcher for the current config and queues a full
    /// pass of every job: whatever happened while not watching is found.
    fn start_watching(&mut self) {
        drop(self.watcher.take());
        self.watcher = watch::start(
            &self.runner.config,
            self.runner.avoided(),
            self.shared.clone(),
        );
        let now = std::time::Instant::now();
        let mut pending = self.shared.pending();
        for job in &self.runner.config.jobs {
            pending.rescan_now(&job.name, now);
        }
        drop(pending);
        self.next_full = self
            .runner
            .config
            .daemon
            .full_reconcile
            .map(|every| Instant::now() + every);
        self.next_poll = self
            .runner
            .config
            .jobs
            .iter()
            .filter_map(|j| Some((j.name.clone(), j.poll_every()?)))
            .map(|(job, every)| (job, (Instant::now() + every, every)))
            .collect();
        self.next_scheduled = scheduled(&self.runner.config.jobs, &HashMap::new());
        let every = self.runner.config.daemon.network_reconcile;
        self.network = self
            .runner
            .config
            .jobs
            .iter()
            .filter(|j| {
                matches!(j.source.trigger(), Trigger::Watch(w) if watch::network_fs(&w.root).is_some())
            })
            .map(|j| (j.name.clone(), Instant::now() + every))
            .collect();
    }

    async fn event_loop(&mut self) {
        loop {
            self.health.beat();
            if self.signals.stop {
                return;
            }
            if self.signals.reload {
                self.signals.reload = false;
                self.reload();
            }
            let cfg = self.runner.config.daemon;
            let due = self
                .shared
                .pending()
                .due_at(cfg.debounce, cfg.max_delay)
                .map(Instant::from_std);
            let retry = self
                .retries
                .values()
                .map(|r| r.at)
                .chain(self.outbox_due.values().copied())
                .min();
            let poll = self
                .next_poll
                .values()
                .map(|(at, _)| at)
                .chain(self.network.values())
                .chain(self.next_scheduled.values().map(|(at, _)| at))
                .min()
                .copied();
            let wake_at = [due, self.next_full, retry, poll]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                _ = self.signals.next() => {}
                _ = self.shared.wake.notified() => {}
                Some(order) = self.orders.recv() => {
                    orders::obey(order, &mut self.shared.pending(), std::time::Instant::now());
                }
                _ = self.outbox_check.tick() => {
                    self.check_outbox();
                    self.checkpoint_when_idle(false);
                }
                _ = sleep_until(wake_at) => self.work().await,
            }
        }
    }

    /// Queues what became due (periodic reconcile, retries) and runs every
    /// batch whose debounce ran out.
    async fn work(&mut self) {
        let cfg = self.runner.config.daemon;
        let now = Instant::now();
        {
            let mut pending = self.shared.pending();
            if let (Some(at), Some(every)) = (self.next_full, cfg.full_reconcile) {
                if at <= now {
                    tracing::info!("periodic full reconcile");
                    for job in self
                        .runner
                        .config
                        .jobs
                        .iter()
                        .filter(|j| !j.on_schedule_only())
                    {
                        pending.rescan_now(&job.name, now.into_std());
                    }
                    self.next_full = Some(now + every);
                }
            }
            for (job, r) in &self.retries {
                if r.at <= now {
                    pending.rescan_now(job, now.into_std());
                }
            }
            let runner = &self.runner;
            self.outbox_due.retain(|job, at| {
                if *at > now {
                    return true;
                }
                // Only the items whose steps are due are looked at again: an
                // outage backs off item by item, and must not mean a walk
                // of the whole tree each time one of them is due.
                let full = runner.deletes_allowed(job).unwrap_or(false);
                match runner.due_keys(job, RETRY_KEYS) {
                    // More than that are due: these first; the rest at the
                    // next check, five seconds on.
                    Ok(keys) if !full && !keys.is_empty() => {
                        tracing::debug!(%job, items = keys.len(), "retrying failed steps");
                        for key in keys {
                            pending.touch(job, key, now.into_std());
                        }
                        pending.hurry(job);
                    }
                    _ => {
                        tracing::info!(%job, "retrying failed steps");
                        pending.rescan_now(job, now.into_std());
                    }
                }
                false
            });
            let every = cfg.network_reconcile;
            for (job, at) in self.network.iter_mut() {
                if *at <= now {
                    tracing::info!(%job, "full pass of a job on a network filesystem");
                    pending.rescan_now(job, now.into_std());
                    *at = now + every;
                }
            }
            for job in take_scheduled(&mut self.next_scheduled, &self.runner.config.jobs, now) {
                pending.rescan_now(&job, now.into_std());
            }
            for job in &self.runner.config.jobs {
                if let Some((at, every)) = self.next_poll.get_mut(&job.name) {
                    if *at <= now {
                        pending.rescan_now(&job.name, now.into_std());
                        *at = now + *every;
                    }
                }
            }
        }
        let batches = self
            .shared
            .pending()
            .take_due(now.into_std(), cfg.debounce, cfg.max_delay);
        let full = batches.iter().any(|(_, scope)| scope.is_all());
        if let (true, Some(w)) = (full, &self.watcher) {
            // A root replaced since it was armed is watched anew.
            w.check_roots();
        }
        for (job, scope) in batches {
            if self.signals.stop {
                // The next start begins with a full pass; nothing is lost.
                break;
            }
            if self.control.is_paused(&job) {
                // Resuming queues a full pass, which finds what this missed.
                tracing::debug!(%job, "paused: the pass is not run");
                continue;
            }
            self.pass(&job, &scope).await;
        }
        self.checkpoint_when_idle(full);
        self.publish_status();
    }

    /// The status line to systemd, and the watch count to metrics.
    fn publish_status(&self) {
        monitor::watches(self.watcher.as_ref().map_or(0, |w| w.watch_count()));
        self.notifier.status(&self.status_line());
    }

    /// Empties the state file's log when nothing waits: after a full pass,
    /// and otherwise at most every `CHECKPOINT_EVERY`.
    fn checkpoint_when_idle(&mut self, after_full_pass: bool) {
        let cfg = self.runner.config.daemon;
        let idle = self
            .shared
            .pending()
            .due_at(cfg.debounce, cfg.max_delay)
            .is_none();
        let due = after_full_pass || self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY;
        if !idle || !due || self.signals.stop {
            return;
        }
        match self.runner.checkpoint() {
            Ok(pages) => tracing::debug!(pages, "state file log checkpointed and truncated"),
            Err(e) => tracing::warn!("state file checkpoint failed: {e}"),
        }
        self.last_checkpoint = Instant::now();
    }

    async fn pass(&mut self, job: &str, scope: &Scope) {
        let grace = self.runner.config.daemon.shutdown_timeout;
        let stop = self.runner.stop_flag();
        let started = Instant::now();
        let seq = self.control.pass_started();
        let progress = (
            orders::Progress::start(job),
            self.runner.config.daemon.progress_log,
        );
        let result = guarded(
            self.runner.run_job(job, scope),
            &mut self.signals,
            &stop,
            grace,
            (&self.notifier, &self.health),
            progress,
        )
        .await;
        if let Some(result) = &result {
            if !matches!(result, Err(ReconcileError::NoSuchJob(_))) {
                orders::announce(
                    &self.control,
                    self.events.as_ref(),
                    &mut self.transitions,
                    (seq, job, scope),
                    result.as_ref(),
                );
            }
        }
        match result {
            None => {}
            Some(Ok(report)) => {
                monitor::pass(job, outcome(&report), started.elapsed());
                if let Some(audit) = &report.audit {
                    monitor::audit_differences(job, audit.findings.len());
                }
                self.health.passed(job, failure(&report));
                self.after(job, scope, &report);
            }
            Some(Err(ReconcileError::NoSuchJob(_))) => {}
            Some(Err(e)) => {
                tracing::error!(%job, "pass failed: {e}");
                monitor::pass(job, "failed", started.elapsed());
                self.health.passed(job, Some(e.to_string()));
                self.last_sync = Some((SystemTime::now(), false));
                self.schedule_retry(job);
            }
        }
        if scope.is_all() {
            give_back_memory();
        }
    }

    fn after(&mut self, job: &str, scope: &Scope, report: &JobReport) {
        let interrupted = report.outcome.as_ref().is_some_and(|o| o.interrupted);
        let quiet = !scope.is_all() && report.plan.ops.is_empty() && report.converged();
        let line = crate::report::summary_line(report);
        if report.converged() {
            if quiet {
                tracing::debug!("{line}");
            } else {
                tracing::info!("{line}");
            }
            self.retries.remove(job);
        } else {
            tracing::warn!("{line}");
            if let Some(e) = &report.error {
                tracing::error!(%job, "{e}");
            }
            // Failed steps come back on the outbox's schedule; a pass that
            // failed as a whole, or skipped files, is retried as a whole;
            // a target the upstream refused waits for the config to change.
            if report.config_error {
                tracing::info!(%job, "not tried again until the config changes (SIGHUP) or the next full pass");
                self.retries.remove(job);
            } else if !interrupted && (report.error.is_some() || !report.skipped.is_empty()) {
                self.schedule_retry(job);
            } else {
                self.retries.remove(job);
            }
        }
        self.last_pass.insert(job.to_owned(), Instant::now());
        self.check_outbox_of(job);
        if !quiet {
            self.last_sync = Some((SystemTime::now(), report.converged()));
        }
    }

    /// Reads when each job's earliest backed-off step is due.
    fn check_outbox(&mut self) {
        for job in self.runner.config.job_names() {
            self.check_outbox_of(&job);
        }
    }

    fn check_outbox_of(&mut self, job: &str) {
        // `kbsync retry --allow-deletes` was run: a full pass now.
        let due = match self.runner.deletes_allowed(job) {
            Ok(true) => Ok(Some(crate::state::unix_now())),
            _ => self.runner.next_retry_at(job),
        };
        match due {
            Ok(Some(at)) => {
                let wait = Duration::from_secs((at - crate::state::unix_now()).max(0) as u64);
                // Not sooner than one check interval after the job's last
                // pass: a step that is due but that a pass cannot attempt
                // yet must not make the service spin.
                let floor = self
                    .last_pass
                    .get(job)
                    .map(|t| *t + OUTBOX_CHECK)
                    .unwrap_or_else(Instant::now);
                // While the upstream rests, retries would fail unsent: wait.
                let floor = match self.runner.resting_until(job) {
                    Some(until) => floor.max(Instant::from_std(until)),
                    None => floor,
                };
                self.outbox_due
                    .insert(job.to_owned(), (Instant::now() + wait).max(floor));
            }
            Ok(None) => {
                self.outbox_due.remove(job);
            }
            Err(e) => tracing::error!(%job, "cannot read the outbox: {e}"),
        }
    }

    /// A pass that did not converge is tried again later, with a doubling
    /// delay, instead of waiting for the next change or periodic reconcile.
    fn schedule_retry(&mut self, job: &str) {
        let cap = self
            .runner
            .config
            .daemon
            .full_reconcile
            .unwrap_or(Duration::from_secs(3600))
            .max(FIRST_RETRY);
        let delay = match self.retries.get(job) {
            Some(r) => (r.delay * 2).min(cap),
            None => FIRST_RETRY,
        };
        tracing::info!(%job, "trying again in {}s", delay.as_secs());
        self.retries.insert(
            job.to_owned(),
            Retry {
                at: Instant::now() + delay,
                delay,
            },
        );
    }

    /// SIGHUP: load the config again; a config that does not load leaves
    /// the running one in place.
    fn reload(&mut self) {
        self.notifier.status("reloading configuration");
        let config = match load_config(&self.config_path, &self.only, Roots::MustExist) {
            Ok(c) => c,
            Err(e) => return self.reload_rejected(&format!("{e:#}")),
        };
        // The API's and the webhooks' secrets, and where events go.
        if let Err(e) = self.control.reconfigure(&config) {
            return self.reload_rejected(&format!("{e:#}"));
        }
        let events = match config
            .control
            .notify
            .as_ref()
            .map(Events::start)
            .transpose()
        {
            Ok(events) => events,
            Err(e) => return self.reload_rejected(&format!("{e:#}")),
        };
        let listen = self.runner.config.daemon.metrics_listen;
        if config.daemon.metrics_listen != listen {
            tracing::warn!("daemon.metrics_listen changed: the listener moves at the next restart");
        }
        match self.runner.reconfigure(config) {
            Ok(()) => {
                self.events = events;
                monitor::reload("applied");
                let names = self.runner.config.job_names();
                self.transitions.retain(&names);
                self.shared.pending().retain_jobs(&names);
                self.retries.retain(|j, _| names.contains(j));
                self.outbox_due.retain(|j, _| names.contains(j));
                self.last_pass.retain(|j, _| names.contains(j));
                self.health.expect(&names);
                self.start_watching();
                tracing::info!(jobs = names.len(), "configuration reloaded");
            }
            Err(e) => return self.reload_rejected(&e.to_string()),
        }
        self.publish_status();
    }

    fn reload_rejected(&mut self, why: &str) {
        tracing::error!(
            "configuration reload rejected, still running the previous configuration: {why}"
        );
        monitor::reload("rejected");
        // The control surface follows the configuration that runs.
        if let Err(e) = self.control.reconfigure(&self.runner.config) {
            tracing::warn!("control API: {e:#}");
        }
        self.publish_status();
    }

    fn status_line(&self) -> String {
        let jobs = self.runner.config.jobs.len();
        let queued = self.shared.pending().depth();
        let last = match self.last_sync {
            None => "no sync yet".to_owned(),
            Some((at, ok)) => {
                let secs = at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                format!(
                    "last sync {} {}",
                    crate::metadata::format_rfc3339(secs),
                    if ok { "ok" } else { "with failures" }
                )
            }
        };
        let folders = self.watcher.as_ref().map_or(0, |w| w.watch_count());
        format!(
            "watching {jobs} job(s) ({folders} inotify watches); {queued} change(s) queued; {last}"
        )
    }
}

/// Runs one pass while still answering signals. On
/// SIGTERM/SIGINT the pass is told to start nothing new and given `grace`
/// to finish what is in flight; `None` when it had to be abandoned (its
/// confirmed steps are already in the state file; the rest is replayed on
/// the next start).
async fn guarded<F: std::future::Future>(
    pass: F,
    signals: &mut Signals,
    stop: &AtomicBool,
    grace: Duration,
    (notifier, health): (&Notifier, &Health),
    progress: (orders::Progress, Duration),
) -> Option<F::Output> {
    let mut pass = std::pin::pin!(pass);
    // A long pass (a first sync) is the loop at work, not a stuck loop.
    let mut beat = tokio::time::interval(monitor::BEAT);
    let mut report = tokio::time::interval_at(Instant::now() + progress.1, progress.1);
    let progress = progress.0;
    loop {
        tokio::select! {
            r = &mut pass => return Some(r),
            _ = beat.tick() => health.beat(),
            _ = report.tick() => {
                let line = progress.line();
                tracing::info!("progress: {line}");
                notifier.status(&format!("pass running: {line}"));
            }
            _ = signals.next() => {
                if signals.stop {
                    break;
                }
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    notifier.stopping();
    tracing::info!(
        "stopping: waiting up to {}s for in-flight upstream calls",
        grace.as_secs()
    );
    let deadline = Instant::now() + grace;
    signals.stop = false;
    loop {
        tokio::select! {
            r = &mut pass => {
                signals.stop = true;
                return Some(r);
            }
            _ = signals.next() => {
                if signals.stop {
                    tracing::warn!("second stop signal: abandoning in-flight calls");
                    return None;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                tracing::warn!("shutdown timeout: abandoning in-flight calls; they are replayed on the next start");
                signals.stop = true;
                return None;
            }
        }
    }
}

/// Returns the heap a full pass freed to the system. glibc keeps freed
/// memory for reuse, so a service whose first pass held a large walk and
/// an audit listing would otherwise stay at that size while it idles.
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; no pointer is
    // handed over and allocations in use are untouched.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A pass's result in `kbsync_passes_total`.
fn outcome(report: &JobReport) -> &'static str {
    if report.converged() {
        "converged"
    } else if failure(report).is_some() {
        "failed"
    } else {
        "not_converged"
    }
}

/// Why a pass failed as a whole, making the service unready: the job
/// could not run, or the delete guard held everything back. Steps that
/// failed one by one are retried on their own and do not count.
fn failure(report: &JobReport) -> Option<String> {
    if let Some(e) = &report.error {
        return Some(e.clone());
    }
    report.refused.as_ref().map(|r| r.to_string())
}

/// The jobs whose scheduled pass is due at `now`; `next` then holds the
/// pass after.
fn take_scheduled(
    next: &mut HashMap<String, (Instant, jiff::Timestamp)>,
    jobs: &[crate::config::JobConfig],
    now: Instant,
) -> Vec<String> {
    let mut due = next.clone();
    due.retain(|_, (at, _)| *at <= now);
    if due.is_empty() {
        return Vec::new();
    }
    *next = scheduled(jobs, &due);
    let due: Vec<String> = due.into_keys().collect();
    tracing::info!(jobs = ?due, "scheduled full pass");
    due
}

/// When each job with a schedule has its next pass: after the minute in
/// `done` that it just had, if any (`Schedule::next_pass`).
fn scheduled(
    jobs: &[crate::config::JobConfig],
    done: &HashMap<String, (Instant, jiff::Timestamp)>,
) -> HashMap<String, (Instant, jiff::Timestamp)> {
    let (wall, mono) = (jiff::Timestamp::now(), std::time::Instant::now());
    let next = |j: &crate::config::JobConfig| {
        let done = done.get(&j.name).map(|(_, minute)| *minute);
        let (at, minute) = j.schedule.as_ref()?.next_pass(done, wall, mono)?;
        Some((j.name.clone(), (Instant::from_std(at), minute)))
    };
    jobs.iter().filter_map(next).collect()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
