//! Waiting on the upstream is visible and bounded: a wait the upstream
//! asks for (`Retry-After`) is logged at the default level with the
//! upstream, the call, how long and why, and one call never waits longer
//! in all than `max_retry_wait_secs` before its step fails transiently and
//! the pass moves on.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use hyper::Method;
use support::fake_dify::{FakeDify, Fault, DATASET};
use support::Workspace;

/// `kbsync --reconcile` at the default log level, off the fake's thread:
/// exit code, stdout, stderr, and how long it ran.
async fn reconcile(ws: &Workspace) -> (i32, String, String, Duration) {
    let config = ws.config_path.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let (code, out, err) = support::run_binary(
            Command::new(env!("CARGO_BIN_EXE_kbsync")),
            &config,
            &["--reconcile", "--log-format", "plain"],
        );
        (code, out, err, started.elapsed())
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_wait_the_upstream_asks_for_is_logged_at_info() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "keep", "", "");
    ws.write("a.md", "a");
    fake.world()
        .inject(None, "create-by-file", Fault::too_many("2"), 2);
    let (code, out, err, _) = reconcile(&ws).await;
    assert_eq!(code, 0, "{out}{err}");
    let waits: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("INFO") && l.contains("waiting"))
        .collect();
    assert_eq!(waits.len(), 2, "one line per wait:\n{err}");
    for line in waits {
        for says in [
            "upstream=dify",
            "call=create_by_file",
            "wait_secs=2",
            "HTTP 429 too_many_requests",
            "Retry-After",
        ] {
            assert!(line.contains(says), "{says} in: {line}");
        }
    }
    assert_eq!(fake.world().docs.len(), 1);
}

/// A workspace whose calls may wait 3 s in all.
async fn with_a_wait_budget() -> (FakeDify, Workspace) {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(
        &fake.base_url(),
        DATASET,
        "keep",
        "max_retry_wait_secs = 3",
        "",
    );
    (fake, ws)
}

#[tokio::test]
async fn a_call_asked_to_wait_beyond_its_budget_gives_up_at_once() {
    let (fake, ws) = with_a_wait_budget().await;
    ws.write("a.md", "a");
    // Fifteen minutes asked for, three seconds allowed: the create is not
    // sent again in this pass, and the pass ends at once.
    fake.world()
        .inject(None, "create-by-file", Fault::too_many("900"), u32::MAX);
    let (code, out, err, took) = reconcile(&ws).await;
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(fake.world().count_since(0, "create-by-file"), 1, "{err}");
    assert!(took < Duration::from_secs(30), "the pass took {took:?}");
    assert!(
        out.contains("failed create a.md")
            && out.contains("the upstream asked to wait 900 s")
            && out.contains("max_retry_wait_secs = 3"),
        "{out}"
    );
    assert!(
        err.lines().any(|l| l.contains("INFO")
            && l.contains("gave up")
            && l.contains("call=create_by_file")),
        "{err}"
    );
}

#[tokio::test]
async fn a_call_waits_until_its_budget_is_spent() {
    let (fake, ws) = with_a_wait_budget().await;
    // Two seconds asked for, again and again (the audit's listing): one
    // wait fits in the three seconds, the second would not.
    fake.world().inject(
        Some(Method::GET),
        "/documents",
        Fault::too_many("2"),
        u32::MAX,
    );
    let (code, out, err, took) = reconcile(&ws).await;
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(fake.world().count_since(0, "/documents"), 2, "{err}");
    assert!(took >= Duration::from_secs(2), "it waited once: {took:?}");
    assert!(
        out.contains("the upstream audit failed")
            && out.contains("waited 2 s in all")
            && out.contains("max_retry_wait_secs = 3"),
        "{out}"
    );
}
