//! Paths the watcher reported and not yet pushed, per job, with the
//! debounce rule that decides when a batch is due: after a quiet period
//! (`debounce`), or `max_delay` after its first event when events keep
//! coming. Pure bookkeeping over `Instant`s, so it is tested without clocks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::source::Scope;

/// Past this many distinct paths a batch becomes a full pass: one walk is
/// cheaper than thousands of scoped lookups, and memory stays bounded.
pub const MAX_PATHS: usize = 20_000;

#[derive(Debug, Default)]
struct Batch {
    paths: BTreeSet<String>,
    full: bool,
    /// Due now, whatever the debounce says.
    urgent: bool,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Batch {
    fn due_at(&self, debounce: Duration, max_delay: Duration) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        if self.urgent {
            return Some(first);
        }
        Some((last + debounce).min(first + max_delay))
    }

    fn note(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }
}

#[derive(Debug, Default)]
pub struct Pending {
    jobs: BTreeMap<String, Batch>,
}

impl Pending {
    /// `key` changed in `job` (a file, a folder, or `""` for the root).
    pub fn touch(&mut self, job: &str, key: String, now: Instant) {
        let batch = self.jobs.entry(job.to_owned()).or_default();
        batch.note(now);
        if batch.full {
            return;
        }
        if key.is_empty() || batch.paths.len() >= MAX_PATHS {
            batch.full = true;
            batch.paths.clear();
        } else {
            batch.paths.insert(key);
        }
    }

    /// A full pass of `job`, debounced like any change (lost events come in
    /// bursts; rescanning in the middle of one would miss its end).
    pub fn rescan(&mut self, job: &str, now: Instant) {
        self.touch(job, String::new(), now);
    }

    /// A full pass of `job` as soon as possible (start-up, the periodic
    /// reconcile, a reloaded config).
    /// Makes the job's batch due at once (no debounce).
    pub fn hurry(&mut self, job: &str) {
        if let Some(b) = self.jobs.get_mut(job) {
            b.urgent = true;
        }
    }

    pub fn rescan_now(&mut self, job: &str, now: Instant) {
        self.rescan(job, now);
        if let Some(b) = self.jobs.get_mut(job) {
            b.urgent = true;
        }
    }

    /// When the earliest batch is due, if any is pending.
    pub fn due_at(&self, debounce: Duration, max_delay: Duration) -> Option<Instant> {
        self.jobs
            .values()
            .filter_map(|b| b.due_at(debounce, max_delay))
            .min()
    }

    /// Removes and returns the batches due at `now`.
    pub fn take_due(
        &mut self,
        now: Instant,
        debounce: Duration,
        max_delay: Duration,
    ) -> Vec<(String, Scope)> {
        let due: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, b)| b.due_at(debounce, max_delay).is_some_and(|t| t <= now))
            .map(|(j, _)| j.clone())
            .collect();
        due.into_iter()
            .filter_map(|job| {
                let batch = self.jobs.remove(&job)?;
                let scope = if batch.full {
                    Some(Scope::All)
                } else {
                    Scope::of(batch.paths)
                };
                Some((job, scope?))
            })
            .collect()
    }

    /// Paths waiting (a pending full pass counts as one).
    pub fn depth(&self) -> usize {
        self.jobs
            .values()
            .map(|b| if b.full { 1 } else { b.paths.len() })
            .sum()
    }

    /// Drops the batches of jobs no longer configured.
    pub fn retain_jobs(&mut self, jobs: &[String]) {
        self.jobs.retain(|j, _| jobs.contains(j));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_millis(1000);
    const MAX: Duration = Duration::from_millis(10_000);

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn a_batch_is_due_after_a_quiet_period() {
        let t0 = Instant::now();
        let mut p = Pending::default();
        p.touch("a", "x.md".into(), t0);
        p.touch("a", "y.md".into(), ms(t0, 400));
        assert_eq!(p.due_at(D, MAX), Some(ms(t0, 1400)));
        assert!(p.take_due(ms(t0, 1399), D, MAX).is_empty());
        let due = p.take_due(ms(t0, 1400), D, MAX);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, "a");
        assert_eq!(due[0].1.paths().collect::<Vec<_>>(), ["x.md", "y.md"]);
        assert_eq!(p.due_at(D, MAX), None);
        assert_eq!(p.depth(), 0);
    }

    #[test]
    fn a_steady_stream_is_cut_at_max_delay() {
        let t0 = Instant::now();
        let mut p = Pending::default();
        for i in 0..200 {
            p.touch("a", format!("f{i}"), ms(t0, i * 100));
        }
        assert_eq!(p.due_at(D, MAX), Some(ms(t0, 10_000)));
    }

    #[test]
    fn repeated_touches_of_one_file_are_one_path() {
        let t0 = Instant::now();
        let mut p = Pending::default();
        for i in 0..1000 {
            p.touch("a", "same.md".into(), ms(t0, i));
        }
        assert_eq!(p.depth(), 1);
    }

    #[test]
    fn the_root_or_too_many_paths_make_a_full_pass() {
        let t0 = Instant::now();
        let mut p = Pending::default();
        p.touch("a", "x".into(), t0);
        p.touch("a", String::new(), t0);
        p.touch("a", "y".into(), t0);
        for i in 0..=MAX_PATHS {
            p.touch("b", format!("f{i}"), t0);
        }
        assert_eq!(p.depth(), 2);
        let due = p.take_due(ms(t0, 1000), D, MAX);
        assert!(due.iter().all(|(_, s)| s.is_all()), "{due:?}");
    }

    #[test]
    fn an_urgent_rescan_is_due_at_once_and_jobs_are_independent() {
        let t0 = Instant::now();
        let mut p = Pending::default();
        p.touch("a", "x".into(), t0);
        p.rescan_now("b", ms(t0, 5));
        assert_eq!(p.due_at(D, MAX), Some(ms(t0, 5)));
        let due = p.take_due(ms(t0, 5), D, MAX);
        assert_eq!(due, vec![("b".to_string(), Scope::All)]);
        assert_eq!(p.due_at(D, MAX), Some(ms(t0, 1000)));
    }
}
