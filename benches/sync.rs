//! `cargo bench --bench sync [-- --files N]`: measures what a sync costs
//! against the in-process fake Dify (tests/support): requests for a first
//! sync and for metadata-only changes, and the wall time of a no-op pass,
//! beside `find -printf` over the same tree as a baseline.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::fake_dify::{FakeDify, DATASET};
use support::{set_mtime, Workspace};

const META: &str = r#"
section = { path_segment = 0 }
modified = { fact = "modified" }
"#;

fn arg(name: &str, default: usize) -> usize {
    support::numeric_arg(name, default as u64) as usize
}

/// A settled tree: mtimes in the past, as for files not being edited (a
/// file modified within 2 s of a scan is re-read by the next one).
fn write_tree(ws: &Workspace, n: usize) {
    for i in 0..n {
        let key = format!("dir{:02}/sub{:02}/file{i:06}.md", i % 50, i % 7);
        ws.write(&key, &format!("document {i}\n"));
        set_mtime(&ws.path(&key), 1_700_000_000);
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let small = arg("--files", 1_000);
    let large = arg("--noop-files", 10_000);
    // More rounds make the no-op pass dominate a profile (`perf record`).
    let rounds = arg("--noop-rounds", 5);
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "disable", "", META);
    write_tree(&ws, small);

    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let first = fake.requests();
    let before = fake.requests();
    for i in 0..small {
        set_mtime(
            &ws.path(&format!("dir{:02}/sub{:02}/file{i:06}.md", i % 50, i % 7)),
            1_800_000_000 + i as i64,
        );
    }
    let r = ws.sync().await;
    assert!(r.converged());
    let meta_only = fake.requests() - before;

    let fake2 = FakeDify::start().await;
    let big = Workspace::new(&fake2.base_url(), DATASET, "disable", "", META);
    write_tree(&big, large);
    let t = Instant::now();
    assert!(big.sync().await.converged());
    let first_large = t.elapsed();
    let mut noop = Vec::new();
    for _ in 0..rounds {
        let before = fake2.requests();
        let t = Instant::now();
        let r = big.sync().await;
        noop.push(t.elapsed());
        assert!(r.plan.ops.is_empty() && fake2.requests() == before);
        assert_eq!(r.hashed_files, 0);
    }
    let mut find = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let out = std::process::Command::new("find")
            .arg(&big.root)
            .args(["-type", "f", "-printf", "%s %T@ %p\n"])
            .output()
            .unwrap();
        assert!(out.status.success());
        find.push(t.elapsed());
    }
    let (noop, find) = (median(noop), median(find));

    println!("| metric | value |");
    println!("|---|---|");
    println!("| requests, first sync of {small} files | {first} |");
    println!("| requests, {small} metadata-only changes | {meta_only} |");
    println!(
        "| first sync of {large} files (fake upstream, wall) | {:.2} s |",
        first_large.as_secs_f64()
    );
    println!(
        "| no-op pass over {large} files (median of 5) | {:.1} ms |",
        noop.as_secs_f64() * 1e3
    );
    println!(
        "| `find -printf` over the same tree (median of 5) | {:.1} ms |",
        find.as_secs_f64() * 1e3
    );
    println!(
        "| ratio no-op / find | {:.2} |",
        noop.as_secs_f64() / find.as_secs_f64()
    );
}
