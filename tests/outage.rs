//! An upstream outage costs a few requests and a few log lines per pass,
//! not a request and an error line per item and attempt.

mod support;

use std::process::Command;

use support::fake_dify::{FakeDify, Fault};
use support::Workspace;

#[tokio::test]
async fn an_outage_is_a_few_requests_and_one_line_per_kind_of_failure() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(
        &fake.base_url(),
        support::fake_dify::DATASET,
        "keep",
        "",
        "",
    );
    for i in 0..300 {
        ws.write(&format!("f{i:03}.md"), &format!("file {i}"));
    }
    // Down for maintenance: every call answers 503.
    fake.world().inject(
        None,
        "/v1/",
        Fault::status(
            503,
            "service_unavailable",
            "The server is down for maintenance.",
        ),
        u32::MAX,
    );
    let config = ws.config_path.clone();
    let (code, _out, err) = tokio::task::spawn_blocking(move || {
        support::run_binary(
            Command::new(env!("CARGO_BIN_EXE_kbsync")),
            &config,
            &["--reconcile", "--log-format", "plain"],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{err}");
    let sent = fake.world().log.len();
    // Ten answers in a row that say "down", and requests stop; a few more
    // were in flight (four uploads at a time).
    assert!(sent <= 14, "{sent} requests sent during the outage");
    let failure_lines: Vec<&str> = err.lines().filter(|l| l.contains("failed")).collect();
    assert!(
        failure_lines
            .iter()
            .any(|l| l.contains("300 create step(s) failed, retried later; the first, f000.md")),
        "{err}"
    );
    assert!(
        err.lines().count() < 20,
        "{} log lines:\n{err}",
        err.lines().count()
    );
    assert!(!err.contains("f150.md"), "one line per item:\n{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("WARN") && l.contains("upstream=dify") && l.contains("it rests")),
        "the rest is said, naming the upstream:\n{err}"
    );
}
