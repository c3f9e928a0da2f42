//! The state file's life beside the service: `retry` never changes a held
//! file's schema, `forget --job` purges a job removed from the config, and
//! a state file written by an older kbsync is read by `status` as it is.

mod support;

use std::process::Command;

use kbsync::state::StateLock;
use rusqlite::Connection;
use support::fake_dify::FakeDify;
use support::{with_fake, Workspace};

fn kbsync(ws: &Workspace, args: &[&str]) -> (i32, String, String) {
    support::run_binary(
        Command::new(env!("CARGO_BIN_EXE_kbsync")),
        &ws.config_path,
        args,
    )
}

fn user_version(ws: &Workspace) -> i64 {
    let c = Connection::open(ws.config().state_path).unwrap();
    c.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

/// Turns the state file back into what the kbsync before the last
/// migration left (migration 7 added these columns).
fn make_older(ws: &Workspace) {
    let version = user_version(ws);
    let c = Connection::open(ws.config().state_path).unwrap();
    c.execute_batch(
        "ALTER TABLE jobs DROP COLUMN rehashed_at; ALTER TABLE items DROP COLUMN identity;",
    )
    .unwrap();
    c.pragma_update(None, "user_version", version - 1).unwrap();
}

#[tokio::test]
async fn retry_beside_the_service_never_migrates_its_file() {
    let (_fake, ws) = with_fake("keep", "").await;
    ws.write("a.md", "a");
    assert!(ws.sync().await.converged());
    let current = user_version(&ws);
    let state = ws.config().state_path;

    // The service holds the file: retry writes beside it.
    let lock = StateLock::acquire(&state).unwrap();
    let (code, out, err) = kbsync(&ws, &["retry"]);
    assert_eq!(code, 0, "{out}{err}");

    // A file of another schema is refused, not migrated under the holder.
    make_older(&ws);
    let (code, _, err) = kbsync(&ws, &["retry"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("while the running kbsync holds it; stop the service"),
        "{err}"
    );
    assert_eq!(user_version(&ws), current - 1, "left as it was");
    drop(lock);

    // Without a holder, retry opens it as a pass would.
    let (code, _, err) = kbsync(&ws, &["retry"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(user_version(&ws), current);
}

#[tokio::test]
async fn forget_purges_a_job_removed_from_the_config() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(
        &fake.base_url(),
        support::fake_dify::DATASET,
        "keep",
        "",
        "",
    );
    ws.write("a.md", "a");
    ws.write("b.md", "b");
    assert!(ws.sync().await.converged());

    // Still configured: refused.
    let (code, _, err) = kbsync(&ws, &["forget", "--job", "docs"]);
    assert_eq!(code, 2);
    assert!(err.contains("still in"), "{err}");

    // Renamed in the config: the old name's rows are an orphan.
    let text = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(
        &ws.config_path,
        text.replace("name = \"docs\"", "name = \"kb\""),
    )
    .unwrap();
    let (code, out, err) = kbsync(&ws, &["forget", "--job", "nope"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains("holds no job \"nope\" (it holds: docs)"),
        "{err}"
    );

    // Not while the service holds the file.
    let lock = StateLock::acquire(&ws.config().state_path).unwrap();
    let (code, _, err) = kbsync(&ws, &["forget", "--job", "docs"]);
    assert_eq!(code, 2);
    assert!(err.contains("in use by another kbsync"), "{err}");
    drop(lock);

    let (code, out, err) = kbsync(&ws, &["forget", "--job", "docs"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("forgot job \"docs\": 2 item(s)"), "{out}");
    let c = Connection::open(ws.config().state_path).unwrap();
    for table in ["items", "outbox", "runs", "fields", "jobs"] {
        let n: i64 = c
            .query_row(
                &format!("SELECT count(*) FROM {table} WHERE job = 'docs'"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
    // The upstream is left alone.
    assert_eq!(fake.world().docs.len(), 2);
}

#[tokio::test]
async fn status_reads_a_state_file_of_an_older_kbsync() {
    let (_fake, ws) = with_fake("keep", "").await;
    ws.write("a.md", "a");
    assert!(ws.sync().await.converged());
    let current = user_version(&ws);
    make_older(&ws);
    for args in [&["status"][..], &["--dry-run"][..]] {
        let (code, out, err) = kbsync(&ws, args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert!(!err.contains("newer"), "{err}");
    }
    assert_eq!(user_version(&ws), current - 1, "reading wrote nothing");
}
