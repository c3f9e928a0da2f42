//! How far a long pass has got: files read (hashed) and uploads done, for
//! `--reconcile`'s progress bars on a terminal and its progress line in a
//! log. A first sync into a real Dify can run for an hour (every upload is
//! parsed and indexed by the server); it must not sit silent between
//! "scanned" and the summary.
//!
//! One set of counters per process: kbsync runs one pass at a time, and
//! the scan's hashing threads and the uploads update it without being
//! handed anything. `start` resets them for the next job. What the bars
//! and the line say is made by pure functions (`reading`, `uploading`,
//! `bar_line`), tested on their own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Counter {
    total: AtomicU64,
    done: AtomicU64,
    /// When the first items were added, in ns after `EPOCH` (0: not yet):
    /// a rate counts from there, not from the pass's start (an audit or a
    /// wait for the upstream may come first).
    since_ns: AtomicU64,
}

/// The origin of `Counter::since_ns`.
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn now_ns() -> u64 {
    (EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64).max(1)
}

impl Counter {
    const fn new() -> Counter {
        Counter {
            total: AtomicU64::new(0),
            done: AtomicU64::new(0),
            since_ns: AtomicU64::new(0),
        }
    }

    /// `n` more items are to be done in this pass.
    pub fn add(&self, n: usize) {
        if n > 0 {
            let _ =
                self.since_ns
                    .compare_exchange(0, now_ns(), Ordering::Relaxed, Ordering::Relaxed);
        }
        self.total.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn one_done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }

    /// At least `n` items are done (counted from the process's start: the
    /// service never resets the counters): for a reader that reports a
    /// slice at a time rather than each item (counting both ways never
    /// counts an item twice).
    pub fn reach(&self, n: u64) {
        self.done.fetch_max(n, Ordering::Relaxed);
    }

    /// (done, total).
    pub fn get(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    fn reset(&self) {
        self.total.store(0, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        self.since_ns.store(0, Ordering::Relaxed);
    }

    /// How long since the first items were added.
    fn elapsed(&self) -> Duration {
        match self.since_ns.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => Duration::from_nanos(now_ns().saturating_sub(since)),
        }
    }
}

/// Files to read and hash in the whole pass (the survey knows them all
/// once the listing is triaged, before the first slice), and those read.
pub static READING: Counter = Counter::new();
/// Uploads (creates and updates) planned so far and finished, well or
/// not. A pass plans a slice at a time, so the total grows until the last
/// slice is read.
pub static UPLOADING: Counter = Counter::new();

/// The job whose pass the counters count.
static JOB: Mutex<Option<String>> = Mutex::new(None);

/// The pass of `job` begins: the counters start again from zero.
pub fn start(job: &str) {
    READING.reset();
    UPLOADING.reset();
    *JOB.lock().unwrap_or_else(|e| e.into_inner()) = Some(job.to_owned());
}

/// What the counters say now.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub job: String,
    /// (done, total), as `Counter::get`, and the time since the phase's
    /// first items were added.
    pub reading: (u64, u64),
    pub reading_for: Duration,
    pub uploading: (u64, u64),
    pub uploading_for: Duration,
}

impl Snapshot {
    fn now() -> Option<Snapshot> {
        let job = JOB.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        Some(Snapshot {
            job,
            reading: READING.get(),
            reading_for: READING.elapsed(),
            uploading: UPLOADING.get(),
            uploading_for: UPLOADING.elapsed(),
        })
    }

    /// Every upload the pass will make is counted: the last slice was
    /// read (and so planned) or nothing was to be read.
    fn all_planned(&self) -> bool {
        self.reading.0 >= self.reading.1
    }
}

/// Items a second, as a whole number (`400/s`; `<1/s` below one).
fn rate(done: u64, elapsed: Duration) -> Option<(f64, String)> {
    let secs = elapsed.as_secs_f64();
    if done == 0 || secs <= 0.0 {
        return None;
    }
    let r = done as f64 / secs;
    let shown = if r < 1.0 {
        "<1/s".to_owned()
    } else {
        format!("{r:.0}/s")
    };
    Some((r, shown))
}

/// `reading 1200/10000 files (400/s, about 22 s left)`; `None` while
/// there is nothing to read.
pub fn reading(s: &Snapshot) -> Option<String> {
    let (done, total) = s.reading;
    if total == 0 {
        return None;
    }
    Some(match rate(done, s.reading_for) {
        None => format!("reading {done}/{total} files"),
        Some((r, shown)) => format!(
            "reading {done}/{total} files ({shown}, about {} left)",
            human_secs(total.saturating_sub(done) as f64 / r)
        ),
    })
}

/// `uploading 300/2000 files (50/s, about 34 s left)` once every slice was
/// planned; before, the total is what was planned so far and no time left
/// is guessed: `uploading 300 files of 2000 planned so far (50/s)`.
/// `None` while nothing is to be uploaded.
pub fn uploading(s: &Snapshot) -> Option<String> {
    let (done, total) = s.uploading;
    if total == 0 {
        return None;
    }
    let rate = rate(done, s.uploading_for);
    Some(match (s.all_planned(), rate) {
        (true, None) => format!("uploading {done}/{total} files"),
        (true, Some((r, shown))) => format!(
            "uploading {done}/{total} files ({shown}, about {} left)",
            human_secs(total.saturating_sub(done) as f64 / r)
        ),
        (false, None) => format!("uploading {done} files of {total} planned so far"),
        (false, Some((_, shown))) => {
            format!("uploading {done} files of {total} planned so far ({shown})")
        }
    })
}

/// The line logged every interval when stderr is not a terminal:
/// `progress: docs: reading 1200/10000 files (400/s, about 22 s left);
/// uploading 3 files of 2000 planned so far (1/s)`; `None` before a pass
/// starts or while it has nothing to read or upload.
pub fn line(s: &Snapshot) -> Option<String> {
    let parts: Vec<String> = [reading(s), uploading(s)].into_iter().flatten().collect();
    if parts.is_empty() {
        return None;
    }
    Some(format!("progress: {}: {}", s.job, parts.join("; ")))
}

/// One bar on a terminal: the job, a bar of `width` cells, then the
/// phase's text: `docs  [=========>          ] reading 1200/10000 files
/// (…)`. The bar is full when done reaches total.
pub fn bar_line(job: &str, (done, total): (u64, u64), text: &str, width: usize) -> String {
    let filled = if total == 0 {
        0
    } else {
        (done.min(total) as u128 * width as u128 / total as u128) as usize
    };
    let mut bar = "=".repeat(filled);
    if filled < width {
        bar.push('>');
        bar.push_str(&" ".repeat(width - filled - 1));
    }
    format!("{job}  [{bar}] {text}")
}

fn human_secs(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// The bars being drawn, for the log writer to print around.
static BARS: Mutex<Option<indicatif::MultiProgress>> = Mutex::new(None);

/// Runs `write` (a log line to stderr) with the bars taken off the screen
/// and drawn again after, so a line never lands inside a bar.
pub fn around_bars<T>(write: impl FnOnce() -> T) -> T {
    let bars = BARS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match bars {
        Some(bars) => bars.suspend(write),
        None => write(),
    }
}

/// Takes the bars off the screen for good (an exit that skips `report`'s
/// clean-up: a second Ctrl-C).
pub fn clear() {
    if let Some(bars) = BARS.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = bars.clear();
    }
}

/// Shows progress until dropped (aborted): bars on a terminal, else a
/// line at `every`.
pub async fn report(every: Duration) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        bars().await
    } else {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Some(line) = Snapshot::now().as_ref().and_then(line) {
                tracing::info!("{line}");
            }
        }
    }
}

async fn bars() {
    use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
    let multi = MultiProgress::new();
    *BARS.lock().unwrap_or_else(|e| e.into_inner()) = Some(multi.clone());
    // Taken off the screen when the task is aborted.
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            clear();
        }
    }
    let _clear = Clear;
    let style =
        ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar());
    // A bar is on screen only while its phase has a total.
    let mut shown: [Option<ProgressBar>; 2] = [None, None];
    loop {
        if let Some(s) = Snapshot::now() {
            let phases = [(s.reading, reading(&s)), (s.uploading, uploading(&s))];
            for (slot, (counts, text)) in shown.iter_mut().zip(phases) {
                match (text, slot.as_ref()) {
                    (Some(text), bar) => {
                        let bar = match bar {
                            Some(b) => b.clone(),
                            None => {
                                let b = multi.add(ProgressBar::new(0).with_style(style.clone()));
                                *slot = Some(b.clone());
                                b
                            }
                        };
                        bar.set_message(bar_line(&s.job, counts, &text, 30));
                    }
                    (None, Some(bar)) => {
                        bar.finish_and_clear();
                        multi.remove(bar);
                        *slot = None;
                    }
                    (None, None) => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, reading: (u64, u64), uploading: (u64, u64)) -> Snapshot {
        Snapshot {
            job: "docs".into(),
            reading,
            reading_for: Duration::from_secs(secs),
            uploading,
            uploading_for: Duration::from_secs(secs),
        }
    }

    #[test]
    fn each_phase_shows_the_whole_pass_with_a_whole_number_rate() {
        let cases: [(Snapshot, Option<&str>, Option<&str>); 6] = [
            (at(10, (0, 0), (0, 0)), None, None),
            (at(10, (0, 50), (0, 0)), Some("reading 0/50 files"), None),
            (
                at(3, (1000, 10000), (0, 0)),
                Some("reading 1000/10000 files (333/s, about 27 s left)"),
                None,
            ),
            (
                at(10, (1, 10001), (0, 0)),
                Some("reading 1/10001 files (<1/s, about 27 h 46 min left)"),
                None,
            ),
            // Slices still to read: no time left is guessed for uploads.
            (
                at(10, (2000, 5000), (400, 2000)),
                Some("reading 2000/5000 files (200/s, about 15 s left)"),
                Some("uploading 400 files of 2000 planned so far (40/s)"),
            ),
            (
                at(10, (5000, 5000), (400, 5000)),
                Some("reading 5000/5000 files (500/s, about 0 s left)"),
                Some("uploading 400/5000 files (40/s, about 115 s left)"),
            ),
        ];
        for (s, read, upload) in cases {
            assert_eq!(reading(&s).as_deref(), read, "{s:?}");
            assert_eq!(uploading(&s).as_deref(), upload, "{s:?}");
        }
    }

    #[test]
    fn the_line_names_the_job_and_leaves_out_empty_phases() {
        assert_eq!(line(&at(1, (0, 0), (0, 0))), None);
        assert_eq!(
            line(&at(2, (4, 4), (1, 4))).as_deref(),
            Some("progress: docs: reading 4/4 files (2/s, about 0 s left); uploading 1/4 files (<1/s, about 6 s left)")
        );
        assert_eq!(
            line(&at(2, (0, 0), (3, 3))).as_deref(),
            Some("progress: docs: uploading 3/3 files (2/s, about 0 s left)")
        );
    }

    #[test]
    fn a_phase_is_timed_from_its_first_items() {
        let c = Counter::new();
        c.add(0);
        assert_eq!(c.elapsed(), Duration::ZERO, "nothing to do yet");
        c.add(3);
        let since = c.since_ns.load(Ordering::Relaxed);
        assert!(since > 0);
        c.add(2);
        assert_eq!(c.since_ns.load(Ordering::Relaxed), since, "the first");
        assert_eq!(c.get(), (0, 5));
        c.reset();
        assert_eq!((c.get(), c.elapsed()), ((0, 0), Duration::ZERO));
    }

    #[test]
    fn a_bar_fills_with_done_over_total_and_names_the_job() {
        assert_eq!(
            bar_line("docs", (0, 4), "reading 0/4 files", 4),
            "docs  [>   ] reading 0/4 files"
        );
        assert_eq!(bar_line("docs", (2, 4), "t", 4), "docs  [==> ] t");
        assert_eq!(bar_line("docs", (4, 4), "t", 4), "docs  [====] t");
        assert_eq!(bar_line("docs", (9, 4), "t", 4), "docs  [====] t");
    }
}
