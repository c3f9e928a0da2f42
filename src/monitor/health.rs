//! `/healthz` and `/readyz`: is the service's loop turning, and has every
//! job done a pass that was not fatal.
//!
//! Alive means the loop beat recently. It beats at least every few seconds
//! when idle and while a pass runs, so a long first sync is alive; a loop
//! stuck for `STALL` is not. Ready means every job's first pass is done and
//! its last pass did not fail as a whole (a credential refused, a source
//! that looks unmounted, deletions the guard refused). Steps that failed
//! one by one do not make the service unready: they are retried on their
//! own, and `kbsync_items_parked` counts them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A loop that has not beaten for this long is reported as stuck.
pub const STALL: Duration = Duration::from_secs(120);

/// How often the loop beats while it waits or a pass runs.
pub const BEAT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
enum JobState {
    FirstPass,
    Passed,
    Failed(String),
}

pub struct Health {
    started: Instant,
    /// Milliseconds from `started` to the last beat.
    beat: AtomicU64,
    stopping: AtomicBool,
    jobs: Mutex<BTreeMap<String, JobState>>,
}

impl Health {
    pub fn new(jobs: &[String]) -> Health {
        let h = Health {
            started: Instant::now(),
            beat: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            jobs: Mutex::new(BTreeMap::new()),
        };
        h.expect(jobs);
        h
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, JobState>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The jobs of the (re)loaded config: a new one is not ready until its
    /// first pass; one that stays keeps what it had.
    pub fn expect(&self, names: &[String]) {
        let mut jobs = self.jobs();
        jobs.retain(|j, _| names.contains(j));
        for name in names {
            jobs.entry(name.clone()).or_insert(JobState::FirstPass);
        }
    }

    pub fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.beat.store(ms, Ordering::Relaxed);
    }

    /// A pass of `job` ended; `failure` says why it failed as a whole.
    pub fn passed(&self, job: &str, failure: Option<String>) {
        self.beat();
        if let Some(state) = self.jobs().get_mut(job) {
            *state = match failure {
                None => JobState::Passed,
                Some(why) => JobState::Failed(why),
            };
        }
    }

    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Alive: `(true, "ok")`, or `(false, why)`.
    pub fn healthz(&self) -> (bool, String) {
        self.healthz_at(Instant::now())
    }

    fn healthz_at(&self, now: Instant) -> (bool, String) {
        if self.stopping.load(Ordering::Relaxed) {
            return (false, "stopping".into());
        }
        let last = Duration::from_millis(self.beat.load(Ordering::Relaxed));
        let quiet = now
            .saturating_duration_since(self.started)
            .saturating_sub(last);
        if quiet > STALL {
            return (
                false,
                format!("the service loop has not run for {} s", quiet.as_secs()),
            );
        }
        (true, "ok".into())
    }

    /// Ready: `(true, "ready")`, or `(false, one line per job that is not)`.
    pub fn readyz(&self) -> (bool, String) {
        self.readyz_but(&|_| false)
    }

    /// `readyz`, leaving out the jobs `paused` names: an operator paused
    /// them, so their not running is no failure of the service.
    pub fn readyz_but(&self, paused: &dyn Fn(&str) -> bool) -> (bool, String) {
        if self.stopping.load(Ordering::Relaxed) {
            return (false, "stopping".into());
        }
        let lines: Vec<String> = self
            .jobs()
            .iter()
            .filter(|(job, _)| !paused(job))
            .filter_map(|(job, state)| match state {
                JobState::Passed => None,
                JobState::FirstPass => Some(format!("{job}: first pass not done yet")),
                JobState::Failed(why) => Some(format!("{job}: last pass failed: {why}")),
            })
            .collect();
        if lines.is_empty() {
            (true, "ready".into())
        } else {
            (false, lines.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ready_once_every_job_passed_and_not_after_a_failed_pass() {
        let h = Health::new(&names(&["a", "b"]));
        assert_eq!(
            h.readyz(),
            (
                false,
                "a: first pass not done yet\nb: first pass not done yet".into()
            )
        );
        h.passed("a", None);
        assert_eq!(h.readyz(), (false, "b: first pass not done yet".into()));
        h.passed("b", None);
        assert_eq!(h.readyz(), (true, "ready".into()));
        h.passed("b", Some("source root is missing".into()));
        assert_eq!(
            h.readyz(),
            (false, "b: last pass failed: source root is missing".into())
        );
        // A reload adding a job: not ready until it has run; the one kept
        // keeps its state.
        h.passed("b", None);
        h.expect(&names(&["b", "c"]));
        assert_eq!(h.readyz(), (false, "c: first pass not done yet".into()));
        // A paused job does not count.
        assert_eq!(h.readyz_but(&|job| job == "c"), (true, "ready".into()));
        h.stopping();
        assert!(!h.readyz().0);
        assert_eq!(h.healthz(), (false, "stopping".into()));
    }

    #[test]
    fn alive_while_the_loop_beats() {
        let h = Health::new(&[]);
        h.beat();
        assert_eq!(h.healthz(), (true, "ok".into()));
        // Asked as if later, instead of waiting.
        let (alive, why) = h.healthz_at(Instant::now() + STALL + Duration::from_secs(5));
        assert!(!alive);
        assert!(
            why.starts_with("the service loop has not run for 12"),
            "{why}"
        );
    }
}
