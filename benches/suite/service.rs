//! The service over a large tree: how long until it is watching
//! (READY=1) and until its first pass is done, and its memory then.

use std::time::{Duration, Instant};

use crate::measure::{key_in, ms, write_tree_with};
use crate::support::fake_dify::{FakeDify, DATASET};
use crate::support::Workspace;
use crate::Row;

const WAIT: Duration = Duration::from_secs(3600);

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

pub async fn rows(files: usize, per_folder: usize) -> Vec<Row> {
    let folders = files.div_ceil(per_folder);
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "disable", "", "");
    // No periodic pass during the measurement.
    ws.append_config("\n[daemon]\nfull_reconcile_secs = 0\n");
    eprintln!("writing {files} files in {folders} folders…");
    write_tree_with(&ws.root, files, 32, |i| key_in(i, per_folder));
    eprintln!("first sync (the binary's --reconcile)…");
    let first = crate::measure::kbsync(&ws.config_path);
    assert_eq!(fake.world().docs.len(), files);
    eprintln!("  {}", ms(first.wall));

    eprintln!("starting the service…");
    let started = Instant::now();
    let (child, notify) = crate::measure::service(&ws);
    let pid = child.id().unwrap();
    let mut buf = vec![0u8; 4096];
    let (mut ready, mut passed, mut status) = (None, None, String::new());
    while passed.is_none() {
        let n = tokio::time::timeout(WAIT, notify.recv(&mut buf))
            .await
            .expect("the service reports")
            .unwrap();
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.contains("READY=1") {
            ready.get_or_insert(started.elapsed());
        }
        if msg.contains("last sync") {
            passed = Some(started.elapsed());
            status = msg;
        }
    }
    let (ready, passed) = (ready.expect("READY=1 first"), passed.unwrap());
    let rss = status_kib(pid, "VmRSS");
    let peak = status_kib(pid, "VmHWM");
    crate::measure::stop(child).await;
    // "watching 1 job(s) (N inotify watches); …"
    let watches = status
        .split(" inotify watches")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .unwrap_or("?")
        .to_owned();
    let mib = |kib: u64| format!("{:.0} MiB", kib as f64 / 1024.0);
    vec![
        Row {
            metric: format!(
                "the service over {files} files in {folders} folders ({watches} inotify watches), synced before: RSS after its first pass (peak {})",
                mib(peak)
            ),
            kbsync: mib(rss),
            baseline: "—".into(),
            ratio: None,
            target: "≤ 150 MB".into(),
            pass: Some(rss * 1024 <= 150_000_000),
        },
        Row {
            metric: "  its start to READY=1 (every folder watched) / to the end of the first pass".into(),
            kbsync: format!("{} / {}", ms(ready), ms(passed)),
            baseline: "—".into(),
            ratio: None,
            target: "—".into(),
            pass: None,
        },
    ]
}
