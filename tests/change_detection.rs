//! Edits that keep a file's size and mtime are still mirrored: the state
//! records which file (device, inode, ctime) was read, as git does; and a
//! deep verify reads everything when asked or when its interval is due.

mod support;

use std::os::unix::fs::MetadataExt;

use kbsync::reconcile::{self, RunOptions};
use kbsync::sink::dify::document_name;
use support::fake_dify::FakeDify;
use support::{set_mtime, with_fake, Workspace};

/// Far from any scan, so no file is "racily clean" and re-read for that.
const OLD: i64 = 1_600_000_000;

fn content(fake: &FakeDify, key: &str) -> Vec<u8> {
    fake.world()
        .doc_by_name(&document_name(key))
        .map(|d| d.content.clone())
        .unwrap_or_default()
}

/// A synced tree whose files are all settled and not racy.
async fn settled_tree() -> (FakeDify, Workspace) {
    let (fake, ws) = with_fake("disable", "").await;
    for key in ["a.md", "b.md", "c.md"] {
        ws.write(key, &format!("{key} version one"));
        set_mtime(&ws.path(key), OLD);
    }
    assert!(ws.sync().await.converged());
    // Settled now: a pass reads nothing.
    let r = ws.sync().await;
    assert_eq!((r.hashed_files, r.unchanged), (0, 3), "{r:?}");
    (fake, ws)
}

#[tokio::test]
async fn an_in_place_edit_with_the_mtime_put_back_is_synced() {
    let (fake, ws) = settled_tree().await;
    let path = ws.path("a.md");
    let ctime = |p: &std::path::Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.ctime(), m.ctime_nsec())
    };
    let before = ctime(&path);
    // Same length, same mtime (`touch -r`): only the ctime moves. The
    // kernel's clock is coarse, so write again until it did.
    for _ in 0..1000 {
        std::fs::write(&path, "a.md version TWO").unwrap();
        set_mtime(&path, OLD);
        if ctime(&path) != before {
            break;
        }
    }
    assert_ne!(ctime(&path), before, "the ctime never moved");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.hashed_files, 1);
    assert_eq!(r.outcome.as_ref().unwrap().updated, 1);
    assert_eq!(content(&fake, "a.md"), b"a.md version TWO");
}

#[tokio::test]
async fn a_copy_renamed_into_place_with_size_and_mtime_kept_is_synced() {
    // `cp -p`, `rsync -t`, an unpacked archive: a new file (a new inode)
    // with the old size and mtime.
    let (fake, ws) = settled_tree().await;
    let tmp = ws.dir.path().join("b.tmp");
    std::fs::write(&tmp, "b.md version TWO").unwrap();
    set_mtime(&tmp, OLD);
    std::fs::rename(&tmp, ws.path("b.md")).unwrap();
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().updated, 1);
    assert_eq!(content(&fake, "b.md"), b"b.md version TWO");
    // Read once; then settled again.
    let r = ws.sync().await;
    assert_eq!((r.hashed_files, r.unchanged), (0, 3), "{r:?}");
}

#[tokio::test]
async fn checksum_reads_every_file_and_changes_nothing_when_all_is_in_sync() {
    let (fake, ws) = settled_tree().await;
    let before = fake.requests();
    let opts = RunOptions {
        checksum: true,
        ..RunOptions::default()
    };
    let r = reconcile::run(&ws.config(), &[], opts)
        .await
        .unwrap()
        .remove(0);
    assert!(r.converged(), "{r:?}");
    assert_eq!((r.hashed_files, r.unchanged), (3, 0));
    assert!(r.plan.ops.is_empty());
    assert_eq!(fake.requests(), before);
}

#[tokio::test]
async fn a_due_rehash_interval_makes_a_full_pass_read_everything() {
    let (fake, ws) = with_fake("disable", "").await;
    ws.append_config("");
    let text = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(
        &ws.config_path,
        text.replace(
            "root = \"docs\"",
            "root = \"docs\"\nrehash_interval_secs = 3600",
        ),
    )
    .unwrap();
    for key in ["a.md", "b.md"] {
        ws.write(key, key);
        set_mtime(&ws.path(key), OLD);
    }
    assert!(ws.sync().await.converged());
    let r = ws.sync().await;
    assert_eq!(r.hashed_files, 0, "not due yet");
    // An hour and more later (the clock is the state file's).
    let db = rusqlite::Connection::open(ws.config().state_path).unwrap();
    db.execute("UPDATE jobs SET rehashed_at = rehashed_at - 3600", [])
        .unwrap();
    let r = ws.sync().await;
    assert_eq!(r.hashed_files, 2, "{r:?}");
    assert!(r.converged() && r.plan.ops.is_empty());
    let r = ws.sync().await;
    assert_eq!(r.hashed_files, 0, "the interval starts again");
    assert!(fake.world().duplicate_names().is_empty());
}
