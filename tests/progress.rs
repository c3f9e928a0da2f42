//! `--reconcile` off a terminal logs a progress line at an interval:
//! files read and uploads done, with rate and time left.

mod support;

use std::process::Command;

use support::fake_dify::FakeDify;
use support::Workspace;

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
    for i in 0..30 {
        ws.write(&format!("f{i:02}.md"), "text");
    }
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
        let text = &l[l.find("progress: ").unwrap()..];
        let (reading, uploading) = text
            .trim_start_matches("progress: ")
            .split_once("; ")
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            reading.starts_with("reading ") && reading.contains("/30 files"),
            "{text}"
        );
        assert!(
            uploading.starts_with("uploading ") && uploading.contains("/30 files"),
            "{text}"
        );
    }
    // The last one shows uploads under way, with a rate and time left.
    let last = lines.last().unwrap();
    assert!(last.contains("/s, about "), "{last}");

    for i in 0..30 {
        ws.write(&format!("f{i:02}.md"), "changed");
    }
    let (code, _, err) = run(true).await.unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("progress: "), "{err}");
}
