//! `--reconcile` off a terminal logs a progress line at an interval:
//! files read and uploads done, with rate and time left, for the whole
//! pass; Ctrl-C stops it gracefully.

mod support;

use std::process::Command;

use support::fake_dify::FakeDify;
use support::Workspace;

fn write_files(ws: &Workspace, n: usize) {
    for i in 0..n {
        ws.write(&format!("f{i:02}.md"), "text");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_reconcile_logs_progress_lines_and_quiet_silences_them() {
    let fake = FakeDify::start().await;
    // Paced to 10 requests a second: 30 uploads take about 3 s.
    let ws = Workspace::new(
        &fake.base_url(),
        support::fake_dify::DATASET,
        "keep",
        "requests_per_minute = 600",
        "",
    );
    write_files(&ws, 30);
    // `--reconcile` with a progress line every second, `--quiet` or not.
    let run = |quiet: bool| {
        let config = ws.config_path.clone();
        let mut args = vec![
            "--reconcile",
            "--log-format",
            "plain",
            "--progress-secs",
            "1",
        ];
        if quiet {
            args.push("--quiet");
        }
        tokio::task::spawn_blocking(move || {
            support::run_binary(Command::new(env!("CARGO_BIN_EXE_kbsync")), &config, &args)
        })
    };
    let (code, _, err) = run(false).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("progress: ")).collect();
    assert!(!lines.is_empty(), "no progress line:\n{err}");
    for l in &lines {
        // The job's name, then the phases under way.
        let text = &l[l.find("progress: docs: ").expect(l) + "progress: docs: ".len()..];
        for part in text.split("; ") {
            let phase = part.starts_with("reading ") || part.starts_with("uploading ");
            assert!(phase && part.contains("/30 files"), "{text}");
            // Rates are whole numbers: `12/s`, not `12.0/s`.
            if let Some(rate) = part.split(" (").nth(1).and_then(|r| r.split("/s").next()) {
                assert!(rate == "<1" || rate.parse::<u64>().is_ok(), "{part}");
            }
        }
    }
    // The last one shows uploads under way, with a rate and time left.
    let last = lines.last().unwrap();
    assert!(
        last.contains("uploading ") && last.contains("/s, about "),
        "{last}"
    );

    for i in 0..30 {
        ws.write(&format!("f{i:02}.md"), "changed");
    }
    let (code, _, err) = run(true).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("progress: "), "{err}");
}

/// The reading total is the whole pass's, known before the first slice:
/// when the first slice's uploads begin, 10 of 25 files are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reading_total_is_the_whole_pass_not_the_slice() {
    let (fake, ws) = support::with_fake("keep", "").await;
    write_files(&ws, 25);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let at_first_upload = seen.clone();
    fake.world().on_arrival = Some(Box::new(move |line| {
        let mut seen = at_first_upload.lock().unwrap();
        if line.contains("create-by-file") && seen.is_none() {
            *seen = Some(kbsync::progress::READING.get());
        }
    }));
    // The counters start at zero in this process: no other test here
    // passes in-process.
    let r = ws.sync_in_slices(10).await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(*seen.lock().unwrap(), Some((10, 25)), "(done, total)");
    assert_eq!(kbsync::progress::READING.get(), (25, 25));
    assert_eq!(kbsync::progress::UPLOADING.get(), (25, 25));
}

/// `kbsync --reconcile` as a child, its stdout and stderr piped.
fn reconcile(ws: &Workspace) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kbsync"))
        .args(["--reconcile", "--log-format", "plain", "--config"])
        .arg(&ws.config_path)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn ctrl_c(child: &tokio::process::Child) {
    let pid = child.id().unwrap() as i32;
    // SAFETY: signals our own child, which is still running (not reaped).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
}

/// Ctrl-C during `--reconcile`: the uploads under way finish and are
/// recorded, no other starts, the summary is printed, and the exit code
/// is 130.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_pass_gracefully_and_prints_the_summary() {
    let (fake, ws) = support::with_fake("keep", "").await;
    write_files(&ws, 40);
    fake.world().latency = Some(support::fake_dify::Latency {
        upload: std::time::Duration::from_millis(300),
        other: std::time::Duration::ZERO,
    });
    let child = reconcile(&ws);
    let wait = std::time::Duration::from_secs(30);
    fake.wait_until("the first upload answered", wait, |w| !w.docs.is_empty())
        .await;
    ctrl_c(&child);
    let out = tokio::time::timeout(wait, child.wait_with_output())
        .await
        .expect("exits after the uploads under way")
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(130), "{stdout}{stderr}");
    assert!(
        stderr.contains("interrupted: starting no new upstream call"),
        "{stderr}"
    );
    assert!(stdout.contains("docs: NOT converged: 40 files"), "{stdout}");
    let uploaded = fake.world().docs.len();
    assert!(uploaded < 40, "stopped before the end: {uploaded}");
    assert!(stdout.contains(&format!("{uploaded} created")), "{stdout}");
    // What finished upstream is in the state file.
    let db = rusqlite::Connection::open(ws.dir.path().join("state/kbsync.db")).unwrap();
    let recorded: usize = db
        .query_row(
            "SELECT count(*) FROM items WHERE doc_id IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(recorded, uploaded, "{stdout}");
}

/// A second Ctrl-C abandons the uploads under way: kbsync exits 130 at
/// once, without waiting for their answers or printing a summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_abandons_the_uploads_under_way() {
    use tokio::io::AsyncBufReadExt;
    let (fake, ws) = support::with_fake("keep", "").await;
    write_files(&ws, 4);
    // Answers that outlast the test's wait.
    fake.world().latency = Some(support::fake_dify::Latency {
        upload: std::time::Duration::from_secs(120),
        other: std::time::Duration::ZERO,
    });
    let mut child = reconcile(&ws);
    let wait = std::time::Duration::from_secs(30);
    fake.wait_until("an upload under way", wait, |w| {
        w.arrived.iter().any(|l| l.contains("create-by-file"))
    })
    .await;
    ctrl_c(&child);
    // The second once the first was taken (two at once may be one).
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let said = tokio::time::timeout(wait, async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            if line.contains("interrupted: starting no new upstream call") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(said, Ok(true), "the first Ctrl-C is answered");
    ctrl_c(&child);
    let out = tokio::time::timeout(wait, child.wait_with_output())
        .await
        .expect("exits without the answers")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(!stdout.contains("docs:"), "no summary: {stdout}");
    assert!(fake.world().docs.is_empty(), "no upload was answered");
}
