//! `cargo bench --bench suite [-- OPTIONS]`: kbsync beside its baselines.
//!
//! Generates its own trees in temp folders, runs the release binary (or
//! the library) against the in-process fake Dify (tests/support), and
//! prints one table: metric, kbsync, baseline, ratio, target, pass/fail.
//! Exits 1 when a target is missed.
//!
//! Options (defaults are the published targets' sizes):
//!   --only noop,million,index,upstream,audit,rate,latency,throughput,service,s3,webdav,git   parts to run (all)
//!   --files N          no-op and first-index tree (100000)
//!   --million N        the large no-op tree (1000000)
//!   --runs N           timed runs per side, median reported (11)
//!   --meta-changes N   metadata-only changes (10000)
//!   --deletions N      deletions under `disable` (1000)
//!   --audit-docs N     documents the upstream audit lists (100000)
//!   --rate N           the fake's limit, requests per minute (3000)
//!   --rate-files N     first sync under that limit (2000)
//!   --edits N          daemon edits timed (200)
//!   --debounce-ms N    the daemon's debounce (1000, the default)
//!   --slow-files N     first sync against 100 ms uploads, concurrency 8 (5000)
//!   --slow-small N     the same at concurrency 1, 4 and 16 (500)
//!   --service-files N  the service over a tree of N files (1000000)
//!   --per-folder N     files per folder in that tree (10)
//!   --objects N        objects in the S3 bucket (100000; SeaweedFS's `weed`)
//!   --poll-secs N      the S3 job's poll interval for the change timing (10)
//!   --changes N        object changes timed under the service (5)
//!   --dav-files N      files behind `rclone serve webdav` (100000)
//!   --dav-folders N    folders they are spread over (1100)
//!   --git-files N      files in the repository `git daemon` serves (100000)
//!   --git-changes N    files one later commit changes (10)
//!
//! `KBSYNC_BENCH_BIN=PATH` measures another build of the binary (an older
//! one, for before/after numbers on the same machine).

#[path = "../../tests/support/mod.rs"]
mod support;

mod git;
mod latency;
mod measure;
mod objects;
mod scan;
mod service;
mod throughput;
mod upstream;

pub struct Row {
    pub metric: String,
    pub kbsync: String,
    pub baseline: String,
    pub ratio: Option<f64>,
    pub target: String,
    /// None: informational, no target.
    pub pass: Option<bool>,
}

pub fn arg(name: &str, default: u64) -> u64 {
    support::numeric_arg(name, default)
}

fn selected(part: &str) -> bool {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--only") {
        Some(i) => args
            .get(i + 1)
            .is_some_and(|list| list.split(',').any(|p| p == part)),
        None => true,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--measure-child") {
        measure::measure_child(&args[i + 1..]);
    }
    tokio::runtime::Runtime::new().unwrap().block_on(suite());
}

async fn suite() {
    let mut rows: Vec<Row> = Vec::new();
    let runs = arg("--runs", 11) as usize;
    if selected("noop") || selected("index") {
        let files = arg("--files", 100_000) as usize;
        rows.extend(scan::tree_rows(files, runs, selected("index"), selected("noop")).await);
    }
    if selected("million") {
        let files = arg("--million", 1_000_000) as usize;
        rows.extend(scan::million_rows(files, runs).await);
    }
    if selected("upstream") {
        rows.extend(
            upstream::efficiency_rows(
                arg("--meta-changes", 10_000) as usize,
                arg("--deletions", 1_000) as usize,
            )
            .await,
        );
    }
    if selected("audit") {
        rows.extend(upstream::audit_rows(arg("--audit-docs", 100_000) as usize).await);
    }
    if selected("rate") {
        rows.extend(
            upstream::rate_rows(arg("--rate", 3000), arg("--rate-files", 2000) as usize).await,
        );
    }
    if selected("latency") {
        rows.extend(latency::rows(arg("--edits", 200), arg("--debounce-ms", 1000)).await);
    }
    if selected("throughput") {
        rows.extend(
            throughput::rows(
                arg("--slow-files", 5000) as usize,
                arg("--slow-small", 500) as usize,
            )
            .await,
        );
    }
    if selected("service") {
        rows.extend(
            service::rows(
                arg("--service-files", 1_000_000) as usize,
                arg("--per-folder", 10) as usize,
            )
            .await,
        );
    }
    if selected("s3") {
        rows.extend(
            objects::s3_rows(
                arg("--objects", 100_000) as usize,
                runs,
                arg("--poll-secs", 10),
                arg("--changes", 5) as usize,
            )
            .await,
        );
    }
    if selected("git") {
        rows.extend(
            git::rows(
                arg("--git-files", 100_000) as usize,
                runs,
                arg("--git-changes", 10) as usize,
            )
            .await,
        );
    }
    if selected("webdav") {
        rows.extend(
            objects::webdav_rows(
                arg("--dav-files", 100_000) as usize,
                arg("--dav-folders", 1100) as usize,
                runs,
            )
            .await,
        );
    }
    print_table(&rows);
    if rows.iter().any(|r| r.pass == Some(false)) {
        std::process::exit(1);
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!("| metric | kbsync | baseline | ratio | target | result |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.metric,
            r.kbsync,
            r.baseline,
            r.ratio.map_or("—".into(), |x| format!("{x:.2}")),
            r.target,
            match r.pass {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "—",
            }
        );
    }
}
