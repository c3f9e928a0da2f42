//! `cargo bench --bench daemon [-- --edits 100 --debounce-ms 1000 --watch-files 100000]`
//!
//! Runs the release binary as a service against the in-process fake Dify
//! and measures (1) the latency from a file write to the upload request
//! reaching the upstream, over `--edits` edits one after another, and (2)
//! the service's resident memory while watching `--watch-files` files, after
//! their first sync (steady) and at its peak (VmHWM).

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::fake_dify::{FakeDify, DATASET};
use support::Workspace;
use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(600);

fn arg(name: &str, default: u64) -> u64 {
    support::numeric_arg(name, default)
}

async fn spawn(ws: &Workspace, tag: &str) -> Child {
    let sock = ws.dir.path().join(format!("notify-{tag}.sock"));
    let notify = UnixDatagram::bind(&sock).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kbsync"))
        .arg("--config")
        .arg(&ws.config_path)
        .env("NOTIFY_SOCKET", &sock)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut buf = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(WAIT, notify.recv(&mut buf))
            .await
            .expect("READY=1")
            .unwrap();
        if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
            break;
        }
    }
    // Keep draining so the service never sees a full queue.
    tokio::spawn(async move { while notify.recv(&mut buf).await.is_ok() {} });
    child
}

fn proc_status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn stop(mut child: Child) {
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-s", "TERM", &pid])
        .status()
        .unwrap();
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{status:?}");
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn latency(edits: u64, debounce_ms: u64) -> Vec<Duration> {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "disable", "", "");
    ws.append_config(&format!("\n[daemon]\ndebounce_ms = {debounce_ms}\n"));
    for i in 0..10 {
        ws.write(&format!("f{i}.md"), "v0");
    }
    let child = spawn(&ws, "lat").await;
    fake.wait_until("first sync", WAIT, |w| w.docs.len() == 10)
        .await;
    let mut samples = Vec::new();
    for e in 0..edits {
        let before = fake.world().arrived.len();
        let answered = fake.requests();
        let t0 = Instant::now();
        ws.write(&format!("f{}.md", e % 10), &format!("edit {e}"));
        fake.wait_until("the upload request", WAIT, |w| {
            w.arrived[before..]
                .iter()
                .any(|r| r.contains("update-by-file"))
        })
        .await;
        samples.push(t0.elapsed());
        // Let the pass finish before the next edit.
        fake.wait_until("its answer", WAIT, |w| w.log.len() > answered)
            .await;
    }
    stop(child).await;
    samples.sort();
    samples
}

async fn memory(files: u64) -> (u64, u64, u64, Duration) {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "disable", "", "");
    ws.append_config("\n[daemon]\ndebounce_ms = 200\n");
    let dirs = files.div_ceil(100);
    for i in 0..files {
        ws.write(&format!("d{:04}/f{i:06}.txt", i % dirs), "x");
    }
    let t0 = Instant::now();
    let child = spawn(&ws, "mem").await;
    let n = files as usize;
    fake.wait_until("the first sync", WAIT, |w| w.docs.len() == n)
        .await;
    let first = t0.elapsed();
    let pid = child.id().unwrap();
    // A quiet moment: the pass has recorded its run once the last upload
    // was answered; give the allocator nothing else to do.
    let mut status = std::process::Command::new(env!("CARGO_BIN_EXE_kbsync"));
    status.args(["status", "--config"]).arg(&ws.config_path);
    loop {
        let out = status.output().unwrap();
        if String::from_utf8_lossy(&out.stdout).contains("last successful sync: 2") {
            break;
        }
    }
    let rss = proc_status(pid, "VmRSS:");
    let hwm = proc_status(pid, "VmHWM:");
    stop(child).await;
    (dirs, rss, hwm, first)
}

#[tokio::main]
async fn main() {
    let edits = arg("--edits", 100);
    let debounce = arg("--debounce-ms", 1000);
    let files = arg("--watch-files", 100_000);

    let lat = latency(edits, debounce).await;
    let (dirs, rss, hwm, first) = memory(files).await;

    println!("| metric | value |");
    println!("|---|---|");
    println!(
        "| write → upload request, median of {edits} edits (debounce {debounce} ms) | {:.0} ms |",
        pct(&lat, 0.5).as_secs_f64() * 1000.0
    );
    println!(
        "| write → upload request, p99 / worst | {:.0} / {:.0} ms |",
        pct(&lat, 0.99).as_secs_f64() * 1000.0,
        lat.last().unwrap().as_secs_f64() * 1000.0
    );
    println!(
        "| first sync of {files} files in {dirs} folders (service start → all uploaded) | {:.1} s |",
        first.as_secs_f64()
    );
    println!(
        "| resident memory watching {files} files, steady after first sync | {:.1} MiB |",
        rss as f64 / 1024.0
    );
    println!(
        "| resident memory, peak (VmHWM, during the first sync) | {:.1} MiB |",
        hwm as f64 / 1024.0
    );
}
