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
/// migration left (migration 14 added the runs' counts and the paused
/// jobs).
fn make_older(ws: &Workspace) {
    let version = user_version(ws);
    let c = Connection::open(ws.config().state_path).unwrap();
    c.execute_batch("ALTER TABLE runs DROP COLUMN detail; DROP TABLE paused;")
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

/// A workspace synced once, that an unprivileged user may read but not
/// write: its folders 755, the config 644.
async fn synced_for_readers() -> (support::fake_dify::FakeDify, Workspace) {
    let (fake, ws) = with_fake("keep", "").await;
    ws.write("a.md", "a");
    assert!(ws.sync().await.converged());
    support::chmod(ws.dir.path(), 0o755);
    support::chmod(&ws.config_path, 0o644);
    (fake, ws)
}

fn unprivileged(ws: &Workspace, args: &[&str]) -> (i32, String, String) {
    support::run_binary(
        support::unprivileged(&ws.config_path),
        &ws.config_path,
        args,
    )
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn status_reads_a_read_only_state_file_in_a_read_only_folder() {
    let (_fake, ws) = synced_for_readers().await;
    let state = ws.config().state_path;
    let folder = state.parent().unwrap().to_owned();
    support::chmod(&state, 0o444);
    support::chmod(&folder, 0o555);
    let before = listing(&folder);
    let (code, out, err) = unprivileged(&ws, &["status"]);
    support::chmod(&folder, 0o755);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("items: 1 tracked, 1 in sync"), "{out}");
    assert_eq!(listing(&folder), before, "nothing created beside it");
}

#[tokio::test]
async fn status_reads_a_read_only_state_file_while_its_writer_has_it_open() {
    let (_fake, ws) = synced_for_readers().await;
    let state = ws.config().state_path;
    let folder = state.parent().unwrap().to_owned();
    // The service writes (WAL) and has not checkpointed: the newest rows
    // are only in the log.
    let writer = Connection::open(&state).unwrap();
    writer
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
             INSERT INTO runs (job, started_at, finished_at, converged, summary)
             VALUES ('docs', 4102444800, 4102444800, 1, 'docs: written by the service');",
        )
        .unwrap();
    support::chmod(&state, 0o444);
    support::chmod(&folder, 0o555);
    let (code, out, err) = unprivileged(&ws, &["status"]);
    support::chmod(&folder, 0o755);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("docs: written by the service"), "{out}");
    drop(writer);
}

/// The current schema version, from a state file kbsync wrote.
async fn current_version() -> i64 {
    let (_fake, ws) = with_fake("keep", "").await;
    assert!(ws.sync().await.converged());
    user_version(&ws)
}

#[tokio::test]
async fn a_malformed_state_file_gets_the_move_aside_hint() {
    let (_fake, ws) = with_fake("keep", "").await;
    for i in 0..200 {
        ws.write(&format!("d/{i:03}.md"), &format!("file {i}"));
    }
    assert!(ws.sync().await.converged());
    let state = ws.config().state_path;
    let whole = std::fs::read(&state).unwrap();
    let version = current_version().await;
    let sqlite = |sql: &str| {
        let _ = std::fs::remove_file(&state);
        Connection::open(&state)
            .unwrap()
            .execute_batch(sql)
            .unwrap();
        std::fs::read(&state).unwrap()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "a table of the wrong shape",
            sqlite(&format!(
                "CREATE TABLE items (a, b); CREATE TABLE jobs (x); PRAGMA user_version = {version};"
            )),
        ),
        (
            "a table of the wrong shape, no version",
            sqlite("CREATE TABLE items (a, b);"),
        ),
        (
            "another program's database",
            sqlite("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);"),
        ),
        ("truncated", whole[..whole.len() / 2].to_vec()),
        (
            "a garbage header",
            b"SQLite format 3\0 and then nothing a database holds".repeat(200),
        ),
    ];
    for (what, bytes) in cases {
        for args in [&["status"][..], &["--reconcile"][..], &["retry"][..]] {
            std::fs::write(&state, &bytes).unwrap();
            for companion in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{companion}", state.display()));
            }
            let (code, out, err) = kbsync(&ws, args);
            assert_eq!(code, 2, "{what}, {args:?}: {out}{err}");
            assert!(
                err.contains("is not a kbsync state database or is corrupt; it was left untouched: move it aside"),
                "{what}, {args:?}: {err}"
            );
            assert!(
                std::fs::read(&state).unwrap() == bytes,
                "{what}, {args:?}: left untouched"
            );
        }
    }
}

/// The stamps a state file holds (a file's size, mtime and identity) keep
/// their meaning across an upgrade: the kbsync that migrates the file of a
/// settled tree reads none of it again.
#[tokio::test]
async fn an_upgraded_state_file_keeps_its_settled_tree_unread() {
    let (_fake, ws) = with_fake("keep", "").await;
    for i in 0..20 {
        let key = format!("d/{i:02}.md");
        ws.write(&key, &format!("file {i}"));
        support::set_mtime(&ws.path(&key), 1_600_000_000 + i);
    }
    assert!(ws.sync().await.converged());
    let current = user_version(&ws);
    make_older(&ws);
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(user_version(&ws), current, "migrated");
    assert_eq!((r.hashed_files, r.unchanged), (0, 20), "{r:?}");
}
