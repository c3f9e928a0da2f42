//! First sync against a server with real latency: every upload takes
//! 100 ms to answer (Dify parses the file before it answers) and every
//! other call 20 ms. Throughput then depends on keeping
//! `upload_concurrency` uploads in flight all the time.

use std::time::{Duration, Instant};

use crate::measure::{ms, write_tree};
use crate::support::fake_dify::{FakeDify, Latency, DATASET};
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
    let uploads = w
        .log
        .iter()
        .filter(|l| l.path.ends_with("/create-by-file"))
        .count();
    assert_eq!(uploads, files, "one upload per file");
    let others = w.log.len() - uploads;
    let ideal = UPLOAD * files.div_ceil(concurrency) as u32 + OTHER * others as u32;
    Run {
        took,
        ideal,
        others,
    }
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
                run.others
            ),
            kbsync: ms(run.took),
            baseline: format!("{} (uploads / concurrency + others in a row)", ms(run.ideal)),
            ratio: Some(ratio),
            target: if concurrency == 8 { "≤ 1.15×".into() } else { "—".into() },
            pass: (concurrency == 8).then_some(ratio <= 1.15),
        });
    }
    rows
}
