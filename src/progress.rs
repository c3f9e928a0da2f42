//! How far a long pass has got: files read (hashed) and uploads done, for
//! `--reconcile`'s progress bar on a terminal and its progress line in a
//! log. A first sync into a real Dify can run for an hour (every upload is
//! parsed and indexed by the server); it must not sit silent between
//! "scanned" and the summary.
//!
//! One set of counters per process: kbsync runs one pass at a time, and
//! the scan's hashing threads and the uploads update it without being
//! handed anything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct Counter {
    total: AtomicU64,
    done: AtomicU64,
}

impl Counter {
    const fn new() -> Counter {
        Counter {
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
        }
    }

    /// A phase of `n` more items starts.
    pub fn add(&self, n: usize) {
        self.total.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn one_done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// (done, total).
    pub fn get(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }
}

/// Files read and hashed by the scan.
pub static READING: Counter = Counter::new();
/// Uploads (creates and updates) finished, well or not.
pub static UPLOADING: Counter = Counter::new();

/// The line logged every interval when stderr is not a terminal:
/// `reading 1200/10000 files (400/s, about 22 s left); uploading 0/0`.
pub fn line(elapsed: Duration) -> String {
    format!(
        "progress: {}; {}",
        part("reading", "files", READING.get(), elapsed),
        part("uploading", "files", UPLOADING.get(), elapsed)
    )
}

fn part(what: &str, unit: &str, (done, total): (u64, u64), elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if done == 0 || secs <= 0.0 {
        return format!("{what} {done}/{total} {unit}");
    }
    let rate = done as f64 / secs;
    let left = total.saturating_sub(done) as f64 / rate;
    format!(
        "{what} {done}/{total} {unit} ({rate:.1}/s, about {} left)",
        human_secs(left)
    )
}

fn human_secs(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// Shows progress until dropped (aborted): bars on a terminal, else a
/// line at `every`.
pub async fn report(every: Duration) {
    use std::io::IsTerminal;
    let started = std::time::Instant::now();
    if std::io::stderr().is_terminal() {
        bars().await
    } else {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            tracing::info!("{}", line(started.elapsed()));
        }
    }
}

async fn bars() {
    use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
    let style = ProgressStyle::with_template(
        "{prefix:>9} [{bar:30}] {pos}/{len} files, {per_sec}, ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let multi = MultiProgress::new();
    let bar = |name: &str| {
        let b = multi.add(ProgressBar::new(0));
        b.set_style(style.clone());
        b.set_prefix(name.to_owned());
        b
    };
    let (reading, uploading) = (bar("reading"), bar("uploading"));
    // Cleared when the task is aborted and these are dropped.
    struct Clear(MultiProgress);
    impl Drop for Clear {
        fn drop(&mut self) {
            let _ = self.0.clear();
        }
    }
    let _clear = Clear(multi.clone());
    loop {
        for (b, c) in [(&reading, &READING), (&uploading, &UPLOADING)] {
            let (done, total) = c.get();
            b.set_length(total);
            b.set_position(done);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_reads_done_total_rate_and_time_left() {
        let d = Duration::from_secs(10);
        assert_eq!(part("reading", "files", (0, 50), d), "reading 0/50 files");
        assert_eq!(
            part("reading", "files", (400, 1000), d),
            "reading 400/1000 files (40.0/s, about 15 s left)"
        );
        assert_eq!(
            part("uploading", "files", (20, 10020), d),
            "uploading 20/10020 files (2.0/s, about 83 min left)"
        );
        assert_eq!(
            part("uploading", "files", (1, 10001), d),
            "uploading 1/10001 files (0.1/s, about 27 h 46 min left)"
        );
    }
}
