//! Requests sent upstream: batching, and pacing under a rate limit.

use std::time::{Duration, Instant};

use crate::measure::{key, ms, write_tree};
use crate::support::fake_dify::{FakeDify, RateWindow, DATASET};
use crate::support::{set_mtime, Workspace};
use crate::Row;

const META: &str = r#"
modified = { fact = "modified" }
"#;

fn batch_size(ws: &Workspace) -> usize {
    let config = ws.config();
    // Upcast: a sink section is `Any`, for code that knows which it is.
    let sink: &dyn std::any::Any = &*config.jobs[0].sink;
    sink.downcast_ref::<kbsync::sink::dify::DifyConfig>()
        .expect("the workspace mirrors into Dify")
        .batch_size
}

fn count_row(metric: String, sent: usize, items: usize, batch: usize) -> Row {
    // The batches, and one call of slack for the job.
    let bound = items.div_ceil(batch) as f64 + 1.0;
    Row {
        metric,
        kbsync: format!("{sent} requests"),
        baseline: format!("{} batches of {batch}", items.div_ceil(batch)),
        ratio: Some(sent as f64 / items.div_ceil(batch) as f64),
        target: format!("≤ {bound:.0} (batches + 1)"),
        pass: Some(sent as f64 <= bound),
    }
}

pub async fn efficiency_rows(changes: usize, deletions: usize) -> Vec<Row> {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "disable", "", META);
    let n = changes.max(deletions);
    write_tree(&ws.root, n, 64);
    let first = ws.sync().await;
    assert!(first.converged(), "{first:?}");
    let batch = batch_size(&ws);

    // Same bytes, new mtime: only the `modified` field changes. In the
    // past, as edits are: a file dated in the future is read again by
    // every pass (its mtime is always within the racy window).
    for i in 0..changes {
        set_mtime(&ws.root.join(key(i)), 1_710_000_000 + i as i64);
    }
    let before = fake.requests();
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().metadata, changes);
    let meta_sent = fake.requests() - before;
    let last = kbsync::sink::dify::document_name(&key(changes - 1));
    assert_eq!(
        fake.world().metadata_of(&last)["modified"],
        1_710_000_000 + changes as i64 - 1
    );

    // Every n/deletions-th file goes; policy `disable`.
    let step = n / deletions;
    for i in (0..n).step_by(step).take(deletions) {
        std::fs::remove_file(ws.root.join(key(i))).unwrap();
    }
    let before = fake.requests();
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let del_sent = fake.requests() - before;
    {
        let w = fake.world();
        let disabled = w.docs.values().filter(|d| !d.enabled).count();
        assert_eq!(disabled, deletions);
    }
    vec![
        count_row(
            format!("requests for {changes} metadata-only changes (batch metadata call)"),
            meta_sent,
            changes,
            batch,
        ),
        count_row(
            format!("requests for {deletions} deletions under `disable` (batch status call)"),
            del_sent,
            deletions,
            batch,
        ),
    ]
}

pub async fn rate_rows(per_minute: u64, files: usize) -> Vec<Row> {
    let fake = FakeDify::start().await;
    // N per minute as a sliding one-second window of N/60: the strictest
    // reading of the limit (no bursts).
    let per_second = (per_minute / 60).max(1) as usize;
    fake.world().rate_limit = Some(RateWindow::gateway(per_second, Duration::from_secs(1)));
    let ws = Workspace::new(
        &fake.base_url(),
        DATASET,
        "disable",
        &format!("requests_per_minute = {per_minute}"),
        META,
    );
    write_tree(&ws.root, files, 256);
    let start = Instant::now();
    let r = ws.sync().await;
    let took = start.elapsed();
    assert!(r.converged(), "{r:?}");
    assert_eq!(fake.world().docs.len(), files);
    let (sent, refused) = {
        let w = fake.world();
        (w.log.len(), w.rate_limit.as_ref().unwrap().refused)
    };
    let needed = sent - refused;
    let minimum = Duration::from_secs_f64(needed as f64 * 60.0 / per_minute as f64);
    // The share of the cap used: requests per minute achieved over N.
    let share = minimum.as_secs_f64() / took.as_secs_f64();
    vec![
        Row {
            metric: format!(
                "first sync of {files} files, fake limited to {per_minute} requests/min ({needed} requests): {:.0} requests/min",
                needed as f64 * 60.0 / took.as_secs_f64()
            ),
            kbsync: ms(took),
            baseline: format!("{} (requests / N)", ms(minimum)),
            ratio: Some(share),
            target: "≥ 0.95 of the cap".into(),
            pass: Some(share >= 0.95),
        },
        Row {
            metric: "429 answers during that sync".into(),
            kbsync: refused.to_string(),
            baseline: "—".into(),
            ratio: None,
            target: "≤ 5 (a handful)".into(),
            pass: Some(refused <= 5),
        },
    ]
}

/// The upstream audit of a dataset of `docs` documents, in sync: one list
/// call per 100 documents and one list of the metadata fields (the owner
/// mark, made by the first sync), nothing else. Timed as the binary's
/// `--reconcile` (audit included) beside the same pass without it, with
/// the process's peak memory.
pub async fn audit_rows(docs: usize) -> Vec<Row> {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "disable", "", META);
    write_tree(&ws.root, docs, 64);
    // Audited, so the owner mark is made here and the pass measured is a
    // no-op.
    assert!(ws.reconcile().await.converged());
    // Warm-up: the tree and the state file into the page cache.
    crate::measure::kbsync(&ws.config_path);

    let before = fake.requests();
    let with = crate::measure::run(
        std::process::Command::new(crate::measure::binary())
            .arg("--reconcile")
            .arg("--config")
            .arg(&ws.config_path),
    );
    let sent = fake.requests() - before;
    let lists = fake
        .world()
        .log
        .iter()
        .rev()
        .take(sent)
        .filter(|l| l.path.split('?').next().unwrap().ends_with("/documents"))
        .count();
    let without = crate::measure::kbsync(&ws.config_path);
    assert_eq!(
        fake.requests() - before,
        sent,
        "the pass without the audit sent nothing"
    );
    assert_eq!(fake.world().docs.len(), docs);
    let expected = docs.div_ceil(100);
    // And one list of the metadata fields: the owner mark looked at.
    let mark = 1;
    vec![Row {
        metric: format!(
            "upstream audit of {docs} documents in sync (`--reconcile` with the audit: wall {}, peak RSS {:.0} MiB; without it: {}, {:.0} MiB)",
            ms(with.wall),
            with.max_rss_kib as f64 / 1024.0,
            ms(without.wall),
            without.max_rss_kib as f64 / 1024.0,
        ),
        kbsync: format!("{sent} requests ({lists} lists)"),
        baseline: format!(
            "ceil({docs} / 100) = {expected} list calls + {mark} list of the metadata fields"
        ),
        ratio: Some(sent as f64 / (expected + mark) as f64),
        target: "= ceil(N / 100) + 1".into(),
        pass: Some(sent == expected + mark && lists == expected),
    }]
}
