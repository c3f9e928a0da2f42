//! What a run shows and keeps, read whole: `--reconcile` and `status`
//! through the binary (what they print and log), and the state file's
//! bytes, for tests that a secret appears in none of them.

use std::process::Command;

use super::Workspace;

/// `kbsync ARGS` through the binary, beside the fake's runtime.
async fn binary(config: &std::path::Path, args: &'static [&'static str]) -> (i32, String, String) {
    let config = config.to_owned();
    tokio::task::spawn_blocking(move || {
        super::run_binary(Command::new(env!("CARGO_BIN_EXE_kbsync")), &config, args)
    })
    .await
    .unwrap()
}

/// Runs `--reconcile` and then `status`: what they printed and logged,
/// and the state file's bytes (the database and its logs, read raw).
pub async fn reconcile_and_status(ws: &Workspace) -> Vec<(&'static str, String)> {
    let (code, out, err) = binary(&ws.config_path, &["--reconcile"]).await;
    assert_eq!(code, 1, "{out}{err}");
    let (_, status, status_err) = binary(&ws.config_path, &["status"]).await;
    let mut stored = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = ws.dir.path().join(format!("state/kbsync.db{suffix}"));
        stored.extend(std::fs::read(path).unwrap_or_default());
    }
    vec![
        ("--reconcile's output", out),
        ("--reconcile's log", err),
        ("status", status),
        ("status's log", status_err),
        (
            "the state file",
            String::from_utf8_lossy(&stored).into_owned(),
        ),
    ]
}

/// None of `secrets` is in `texts`, while the echoed errors were kept,
/// redacted, in all but the quiet `status`'s log.
pub fn assert_never_shown_nor_stored(texts: &[(&str, String)], secrets: &[&str]) {
    for (what, text) in texts {
        for secret in secrets {
            assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
        }
        if *what != "status's log" {
            assert!(
                text.contains("[redacted]"),
                "{what} lost the error:\n{text}"
            );
        }
    }
}
