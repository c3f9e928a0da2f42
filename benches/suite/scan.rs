//! The scan: first index, and a no-op full reconcile beside `find`.

use crate::measure::{self, median, ms, write_tree};
use crate::support::fake_dify::{FakeDify, DATASET};
use crate::support::Workspace;
use crate::Row;

/// Two metadata fields, so the planner has work per item.
const META: &str = r#"
section = { path_segment = 0 }
modified = { fact = "modified" }
"#;

/// Times `runs` no-op passes of the binary against `find -printf`,
/// alternating, and checks they sent nothing. Returns the medians and the
/// largest peak memory of each side.
fn noop_runs(ws: &Workspace, fake: &FakeDify, runs: usize) -> [(std::time::Duration, u64); 2] {
    // Warm-up: the tree and the state file into the page cache.
    measure::find(&ws.root);
    measure::kbsync(&ws.config_path);
    let before = fake.requests();
    let (mut k, mut f) = (Vec::new(), Vec::new());
    let (mut k_rss, mut f_rss) = (0, 0);
    for _ in 0..runs {
        let m = measure::find(&ws.root);
        f.push(m.wall);
        f_rss = f_rss.max(m.max_rss_kib);
        let m = measure::kbsync(&ws.config_path);
        k.push(m.wall);
        k_rss = k_rss.max(m.max_rss_kib);
    }
    assert_eq!(fake.requests(), before, "a no-op pass sent requests");
    [(median(k), k_rss), (median(f), f_rss)]
}

pub async fn tree_rows(n: usize, runs: usize, index: bool, noop: bool) -> Vec<Row> {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "disable", "", META);
    eprintln!("writing {n} files of 2 KiB…");
    write_tree(&ws.root, n, 2048);
    let mut rows = Vec::new();

    let baseline = median(
        (0..3)
            .map(|_| measure::find(&ws.root).wall + measure::hash_all(&ws.root))
            .collect(),
    );
    eprintln!("first sync of {n} files…");
    let first = ws.sync().await;
    assert!(first.converged(), "{first:?}");
    assert_eq!(first.hashed_files, n);
    assert_eq!(fake.world().docs.len(), n);
    if index {
        let ratio = first.scan_elapsed.as_secs_f64() / baseline.as_secs_f64();
        rows.push(Row {
            metric: format!(
                "first index of {n} files of 2 KiB: walk, read + BLAKE3, record in SQLite"
            ),
            kbsync: ms(first.scan_elapsed),
            baseline: format!("{} (`find -printf` + BLAKE3 crate, 1 thread)", ms(baseline)),
            ratio: Some(ratio),
            target: "≤ 1.5×".into(),
            pass: Some(ratio <= 1.5),
        });
        rows.push(Row {
            metric: format!(
                "first sync of {n} files into the fake (includes the index; {} requests)",
                first.requests
            ),
            kbsync: ms(first.elapsed),
            baseline: "—".into(),
            ratio: None,
            target: "—".into(),
            pass: None,
        });
    }
    if noop {
        let [(k, k_rss), (f, _)] = noop_runs(&ws, &fake, runs);
        let ratio = k.as_secs_f64() / f.as_secs_f64();
        rows.push(Row {
            metric: format!("no-op full reconcile of {n} files (`kbsync --reconcile --no-audit`, start to exit, median of {runs}; peak RSS {:.0} MiB)", k_rss as f64 / 1024.0),
            kbsync: ms(k),
            baseline: format!("{} (`find -printf`)", ms(f)),
            ratio: Some(ratio),
            target: "≤ 1.1×".into(),
            pass: Some(ratio <= 1.1),
        });
    }
    rows
}

pub async fn million_rows(n: usize, runs: usize) -> Vec<Row> {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "disable", "", META);
    eprintln!("writing {n} files…");
    write_tree(&ws.root, n, 32);
    eprintln!("first sync of {n} files (the binary, into the fake)…");
    let first = measure::kbsync(&ws.config_path);
    assert_eq!(fake.world().docs.len(), n);
    eprintln!(
        "  {} , peak RSS {:.0} MiB",
        ms(first.wall),
        first.max_rss_kib as f64 / 1024.0
    );
    let [(k, k_rss), (f, f_rss)] = noop_runs(&ws, &fake, runs);
    let ratio = k.as_secs_f64() / f.as_secs_f64();
    let mib = k_rss as f64 / 1024.0;
    vec![
        Row {
            metric: format!("no-op full reconcile of {n} files (median of {runs})"),
            kbsync: ms(k),
            baseline: format!("{} (`find -printf`)", ms(f)),
            ratio: Some(ratio),
            target: "≤ 1.1×".into(),
            pass: Some(ratio <= 1.1),
        },
        Row {
            metric: "peak memory of that no-op pass (max RSS)".into(),
            kbsync: format!("{mib:.0} MiB"),
            baseline: format!("{:.0} MiB (`find`)", f_rss as f64 / 1024.0),
            ratio: None,
            target: "< 150 MB".into(),
            pass: Some(k_rss * 1024 < 150_000_000),
        },
        Row {
            metric: format!("first sync of {n} files into the fake (the binary, `--no-audit`)"),
            kbsync: ms(first.wall),
            baseline: "—".into(),
            ratio: None,
            target: "—".into(),
            pass: None,
        },
        Row {
            metric: "peak memory of that first sync (max RSS)".into(),
            kbsync: format!("{:.0} MiB", first.max_rss_kib as f64 / 1024.0),
            baseline: "—".into(),
            ratio: None,
            target: "≤ 150 MB".into(),
            pass: Some(first.max_rss_kib * 1024 <= 150_000_000),
        },
    ]
}
