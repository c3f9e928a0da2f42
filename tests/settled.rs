//! Settled items: a pass skips files whose cached row was found in sync
//! and whose size and mtime did not move, and must still see everything
//! that matters: a new mapping, a deleted file, a failed push.

mod support;

use kbsync::sink::dify::document_name;
use support::{set_mtime, with_fake, Workspace};

const META: &str = r#"
source_path = { fact = "path" }
"#;

fn tree(ws: &Workspace, n: usize) {
    for i in 0..n {
        let key = format!("team{}/doc{i:03}.md", i % 3);
        ws.write(&key, &format!("Body of document {i}.\n"));
        set_mtime(&ws.path(&key), 1_600_000_000 + i as i64);
    }
}

#[tokio::test]
async fn a_synced_tree_is_skipped_until_the_mapping_changes() {
    let (fake, ws) = with_fake("disable", META).await;
    tree(&ws, 12);
    let first = ws.sync().await;
    assert!(first.converged(), "{first:?}");
    assert_eq!(first.unchanged, 0);

    // Settled at the end of the first pass: nothing read, nothing planned.
    let mark = fake.requests();
    let r = ws.sync().await;
    assert!(r.converged() && r.plan.ops.is_empty());
    assert_eq!((r.scanned, r.unchanged, r.hashed_files), (12, 12, 0));
    assert_eq!(fake.requests(), mark);

    // A new field changes what every item should carry upstream.
    ws.append_config("size = { fact = \"size\" }\n");
    let d = ws.dry_run().await;
    assert_eq!(
        d.unchanged, 0,
        "a dry run distrusts flags of another mapping"
    );
    assert_eq!(d.plan.ops.len(), 12, "{:?}", d.plan.ops);
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.unchanged, 0);
    assert_eq!(r.outcome.as_ref().unwrap().metadata, 12);
    assert_eq!(r.hashed_files, 0, "the facts were still good: no file read");
    let size = std::fs::metadata(ws.path("team2/doc011.md")).unwrap().len();
    assert_eq!(
        fake.world().metadata_of(&document_name("team2/doc011.md"))["size"],
        size
    );
    let r = ws.sync().await;
    assert_eq!((r.unchanged, r.plan.ops.len()), (12, 0));

    // One file touched: only it is read and planned.
    set_mtime(&ws.path("team1/doc004.md"), 1_700_000_000);
    let r = ws.sync().await;
    assert!(r.converged());
    assert_eq!((r.unchanged, r.hashed_files, r.plan.ops.len()), (11, 1, 0));
    let r = ws.sync().await;
    assert_eq!(r.unchanged, 12);
}

#[tokio::test]
async fn a_settled_file_that_goes_is_disabled_once_then_left_alone() {
    let (fake, ws) = with_fake("disable", META).await;
    tree(&ws, 4);
    assert!(ws.sync().await.converged());
    let content = std::fs::read(ws.path("team0/doc003.md")).unwrap();
    ws.remove("team0/doc003.md");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.unchanged, 3);
    assert_eq!(r.plan.ops.len(), 1);
    let name = document_name("team0/doc003.md");
    assert!(!fake.world().doc_by_name(&name).unwrap().enabled);

    let mark = fake.requests();
    let r = ws.sync().await;
    assert!(r.converged() && r.plan.ops.is_empty(), "{:?}", r.plan.ops);
    assert_eq!(fake.requests(), mark);

    // Back with the same bytes: enabled again, not uploaded.
    std::fs::write(ws.path("team0/doc003.md"), &content).unwrap();
    set_mtime(&ws.path("team0/doc003.md"), 1_600_000_003);
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.plan.ops.len(), 1, "{:?}", r.plan.ops);
    assert!(fake.world().doc_by_name(&name).unwrap().enabled);
    assert_eq!(fake.world().count_since(mark, "-by-file"), 0);
}

#[tokio::test]
async fn a_file_whose_push_failed_is_planned_on_every_pass() {
    // Let through by the job, refused by the server.
    let fake = support::fake_dify::FakeDify::start().await;
    let ws = support::Workspace::new(
        &fake.base_url(),
        support::fake_dify::DATASET,
        "disable",
        r#"allowed_extensions = ["md", "xyz"]"#,
        META,
    );
    tree(&ws, 3);
    ws.write("notes.xyz", "Dify does not take this type");
    set_mtime(&ws.path("notes.xyz"), 1_600_000_000);
    let r = ws.sync().await;
    assert!(!r.converged());
    for _ in 0..2 {
        let r = ws.sync().await;
        assert_eq!(r.unchanged, 3);
        assert_eq!(r.held.len(), 1, "the parked create is still planned");
        assert_eq!(r.held[0].key, "notes.xyz");
    }
    assert_eq!(fake.world().count_since(0, "create-by-file"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_larger_than_one_settle_slice_settle_every_key() {
    // Settling re-plans in slices of 2,000 keys; 4,200 files and 2,100
    // deletions span several.
    let (fake, ws) = with_fake("disable", META).await;
    tree(&ws, 4_200);
    assert!(ws.sync().await.converged());
    let r = ws.sync().await;
    assert_eq!((r.unchanged, r.hashed_files), (4_200, 0));

    for i in (0..4_200).step_by(2) {
        ws.remove(&format!("team{}/doc{i:03}.md", i % 3));
    }
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().status["disable"], 2_100);
    // Their rows are settled too: the next pass does not even plan them.
    let db = rusqlite::Connection::open(ws.dir.path().join("state/kbsync.db")).unwrap();
    let gone_settled: i64 = db
        .query_row(
            "SELECT count(*) FROM items WHERE present = 0 AND settled = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(gone_settled, 2_100);
    let mark = fake.requests();
    let r = ws.sync().await;
    assert_eq!((r.unchanged, r.plan.ops.len()), (2_100, 0));
    assert_eq!(fake.requests(), mark);
}
