//! First sync against a server with real latency: every upload takes
//! 100 ms to answer (Dify parses the file before it answers) and every
//! other call 20 ms. Throughput then depends on keeping
//! `upload_concurrency` uploads in flight all the time.

use std::time::{Duration, Instant};

use crate::measure::{ms, write_tree};
use crate::support::fake_dify::{FakeDify, Latency, Logged, DATASET};
use crate::support::Workspace;
use crate::Row;

const UPLOAD: Duration = Duration::from_millis(100);
const OTHER: Duration = Duration::from_millis(20);

const META: &str = r#"
section = { path_segment = 0 }
modified = { fact = "modified" }
"#;

struct Run {
    took: Duration,
    /// What the time cannot go below: the uploads `concurrency` at a time,
    /// and every other call one after another.
    ideal: Duration,
    others: usize,
    /// Upload slots left empty while uploads were still to come, in wall
    /// time (slot time / concurrency).
    idle: Duration,
}

async fn first_sync(files: usize, concurrency: usize) -> Run {
    let fake = FakeDify::start().await;
    fake.world().latency = Some(Latency {
        upload: UPLOAD,
        other: OTHER,
    });
    let ws = Workspace::new(
        &fake.base_url(),
        DATASET,
        "disable",
        &format!("upload_concurrency = {concurrency}"),
        META,
    );
    write_tree(&ws.root, files, 512);
    let started = Instant::now();
    let r = ws.sync().await;
    let took = started.elapsed();
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    assert_eq!(w.docs.len(), files);
    let uploads: Vec<&Logged> = w
        .log
        .iter()
        .filter(|l| l.path.ends_with("/create-by-file"))
        .collect();
    assert_eq!(uploads.len(), files, "one upload per file");
    let others = w.log.len() - uploads.len();
    let ideal = UPLOAD * files.div_ceil(concurrency) as u32 + OTHER * others as u32;
    Run {
        took,
        ideal,
        others,
        idle: idle_slots(&uploads, concurrency),
    }
}

/// How long upload slots sat empty between the first upload's arrival and
/// the last one's (after it, no upload waits for a slot), summed over the
/// slots and divided by their number: the wall time the pass lost by not
/// keeping `concurrency` uploads in flight.
fn idle_slots(uploads: &[&Logged], concurrency: usize) -> Duration {
    let (Some(first), Some(last)) = (
        uploads.iter().map(|l| l.arrived).min(),
        uploads.iter().map(|l| l.arrived).max(),
    ) else {
        return Duration::ZERO;
    };
    // At one instant, answers count before arrivals: a slot freed and
    // taken at once was not idle.
    let mut events: Vec<(Instant, i64)> = uploads
        .iter()
        .flat_map(|l| [(l.arrived, 1), (l.answered, -1)])
        .filter(|(t, _)| *t <= last)
        .collect();
    events.sort();
    let (mut in_flight, mut at, mut idle) = (0i64, first, Duration::ZERO);
    for (t, change) in events {
        let empty = (concurrency as i64 - in_flight).max(0) as u32;
        idle += (t - at) * empty;
        at = t;
        in_flight += change;
    }
    idle / concurrency as u32
}

/// `files` at concurrency 8 against the 1.15× target; `small` at 1, 4 and
/// 16 for the throughput curve.
pub async fn rows(files: usize, small: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    for concurrency in [1, 4, 8, 16] {
        let n = if concurrency == 8 { files } else { small };
        eprintln!(
            "first sync of {n} files, 100 ms per upload, upload_concurrency = {concurrency}…"
        );
        let run = first_sync(n, concurrency).await;
        let ratio = run.took.as_secs_f64() / run.ideal.as_secs_f64();
        let rate = n as f64 / run.took.as_secs_f64();
        rows.push(Row {
            metric: format!(
                "first sync of {n} files, 100 ms per upload and 20 ms per other call ({} others), upload_concurrency = {concurrency}: {rate:.1} files/s",
                run.others,
            ),
            kbsync: ms(run.took),
            baseline: format!("{} (uploads / concurrency + others in a row)", ms(run.ideal)),
            ratio: Some(ratio),
            target: if concurrency == 8 { "≤ 1.15×".into() } else { "—".into() },
            pass: (concurrency == 8).then_some(ratio <= 1.15),
        });
        if concurrency == 8 {
            // Slots stay empty for a moment after each answer (the result
            // is recorded and the next file read before the next upload
            // starts) and at each slice boundary; a metadata or status
            // phase between uploads would add its whole length.
            let idle_share = run.idle.as_secs_f64() / run.took.as_secs_f64();
            rows.push(Row {
                metric: format!(
                    "  upload slots idle while uploads waited, in wall time (slot time / {concurrency})"
                ),
                kbsync: ms(run.idle),
                baseline: format!("{} (the pass)", ms(run.took)),
                ratio: Some(idle_share),
                target: "—".into(),
                pass: None,
            });
        }
    }
    rows
}
