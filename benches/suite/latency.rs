//! Event latency in service mode: a file write until its upload reaches
//! the upstream, edit after edit.

use std::time::{Duration, Instant};

use tokio::process::Child;

use crate::support::fake_dify::{FakeDify, DATASET};
use crate::support::Workspace;
use crate::Row;

const WAIT: Duration = Duration::from_secs(600);

/// Starts the service and waits for its READY=1 (sd_notify).
pub(crate) async fn spawn(ws: &Workspace) -> Child {
    let (child, notify) = crate::measure::service(ws);
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

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub async fn rows(edits: u64, debounce_ms: u64) -> Vec<Row> {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "disable", "", "");
    ws.append_config(&format!("\n[daemon]\ndebounce_ms = {debounce_ms}\n"));
    for i in 0..10 {
        ws.write(&format!("f{i}.md"), "v0");
    }
    let child = spawn(&ws).await;
    fake.wait_until("the first sync", WAIT, |w| w.docs.len() == 10)
        .await;
    eprintln!("timing {edits} edits (debounce {debounce_ms} ms)…");
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
    crate::measure::stop(child).await;
    samples.sort();
    let bound = Duration::from_millis(debounce_ms + 100);
    let row = |name: &str, d: Duration| Row {
        metric: format!("file write → upload request at the upstream, {name} of {edits} edits"),
        kbsync: format!("{:.0} ms", d.as_secs_f64() * 1e3),
        baseline: format!("{debounce_ms} ms (debounce)"),
        ratio: None,
        target: format!("≤ {} ms (debounce + 100 ms)", bound.as_millis()),
        pass: Some(d <= bound),
    };
    vec![
        row("median", pct(&samples, 0.5)),
        row("p99", pct(&samples, 0.99)),
    ]
}
