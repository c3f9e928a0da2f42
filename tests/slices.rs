//! A full pass over a large tree goes a slice of keys at a time (read,
//! record, plan, queue, push, settle), so a first sync of a million files
//! never holds a million of anything. These passes run with slices of 3
//! files, so every step crosses slice boundaries, and must end exactly
//! where one pass over everything ends.

mod support;

use kbsync::reconcile::{RunOptions, Runner};
use kbsync::sink::dify::document_name;
use kbsync::source::Scope;
use kbsync::state::State;
use support::fake_dify::{FakeDify, Fault};
use support::{set_mtime, with_fake, Workspace};

const SLICE: usize = 3;

/// Files last modified long ago: a file written within 2 s of a scan is
/// read again by the next one (it may change within the same mtime tick).
fn write_files(ws: &Workspace, n: usize) {
    for i in 0..n {
        ws.write(&key(i), &format!("file {i}"));
        set_mtime(&ws.path(&key(i)), 1_700_000_000 + i as i64);
    }
}

fn key(i: usize) -> String {
    format!("d{}/f{i:02}.md", i % 4)
}

fn enabled(fake: &FakeDify) -> usize {
    fake.world().docs.values().filter(|d| d.enabled).count()
}

/// A first sync of 12 files in slices whose first upload is refused for
/// good: its step is parked. Returns its key.
async fn sync_with_one_parked(fake: &FakeDify, ws: &Workspace) -> String {
    write_files(ws, 12);
    fake.world().inject(
        None,
        "create-by-file",
        Fault::status(400, "invalid_param", "the file is refused"),
        1,
    );
    let r = ws.sync_in_slices(SLICE).await;
    let failures = &r.outcome.as_ref().unwrap().failures;
    assert_eq!(failures.len(), 1, "{r:?}");
    failures[0].key.clone()
}

fn outbox_rows(ws: &Workspace) -> usize {
    let state = State::open_read_only(&ws.config().state_path).unwrap();
    state.summaries().unwrap()[0].queued as usize
}

#[tokio::test]
async fn a_first_sync_in_slices_mirrors_everything_once() {
    let (fake, ws) = with_fake("disable", "section = { path_segment = 0 }\n").await;
    write_files(&ws, 20);
    let r = ws.sync_in_slices(SLICE).await;
    assert!(r.converged(), "{r:?}");
    let o = r.outcome.as_ref().unwrap();
    assert_eq!((o.created, o.metadata), (20, 20));
    assert_eq!(r.scanned, 20);
    assert_eq!(r.hashed_files, 20);
    {
        let w = fake.world();
        assert_eq!(w.docs.len(), 20);
        assert!(w.duplicate_names().is_empty());
        // One listing for adoption, at the first create, not one a slice.
        let lists = w
            .log
            .iter()
            .filter(|l| {
                l.method == "GET" && l.path.split('?').next().unwrap().ends_with("/documents")
            })
            .count();
        assert_eq!(lists, 1);
        for i in 0..20 {
            let meta = w.metadata_of(&document_name(&key(i)));
            assert_eq!(meta["section"], format!("d{}", i % 4), "{}", key(i));
        }
    }
    assert_eq!(outbox_rows(&ws), 0);
    // Every slice settled its items: the next pass reads and sends nothing.
    let before = fake.requests();
    let again = ws.sync_in_slices(SLICE).await;
    assert!(again.converged() && again.plan.ops.is_empty(), "{again:?}");
    assert_eq!((again.hashed_files, again.unchanged), (0, 20));
    assert_eq!(fake.requests(), before);
}

#[tokio::test]
async fn the_guard_judges_the_whole_pass_not_each_slice() {
    let (fake, ws) = with_fake("disable", "").await;
    write_files(&ws, 12);
    assert!(ws.sync_in_slices(SLICE).await.converged());
    // Every file goes (an unmounted share): each slice alone retires 3 of
    // 12, a quarter, within max_delete; the pass retires all 12.
    for i in 0..12 {
        ws.remove(&key(i));
    }
    let r = ws.sync_in_slices(SLICE).await;
    let refusal = r.refused.as_ref().expect("the pass is refused as a whole");
    assert_eq!((refusal.retiring, refusal.tracked), (12, 12));
    assert!(!r.converged());
    assert_eq!(enabled(&fake), 12, "nothing retired");

    // Some files go: retired, in whichever slice they fall.
    for i in 0..12 {
        ws.write(&key(i), &format!("file {i}"));
    }
    assert!(ws.sync_in_slices(SLICE).await.converged());
    for i in [0, 5, 11] {
        ws.remove(&key(i));
    }
    let r = ws.sync_in_slices(SLICE).await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().status.get("disable"), Some(&3));
    assert_eq!(enabled(&fake), 9);
}

#[tokio::test]
async fn a_slice_keeps_the_outbox_rows_of_the_others() {
    let (fake, ws) = with_fake("disable", "").await;
    let parked = sync_with_one_parked(&fake, &ws).await;
    assert_eq!(fake.world().docs.len(), 11);
    assert_eq!(outbox_rows(&ws), 1);

    // Passes in slices: the parked step is held (not sent again, not
    // dropped by another slice's reconciliation of the outbox) until its
    // file changes.
    for _ in 0..2 {
        let before = fake.requests();
        let r = ws.sync_in_slices(SLICE).await;
        assert_eq!(r.held.len(), 1, "{r:?}");
        assert_eq!(r.held[0].key, parked);
        assert_eq!(fake.requests(), before);
        assert_eq!(outbox_rows(&ws), 1);
    }
    ws.write(&parked, "changed");
    let r = ws.sync_in_slices(SLICE).await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(fake.world().docs.len(), 12);
    assert_eq!(outbox_rows(&ws), 0);
}

#[tokio::test]
async fn a_dry_run_in_slices_shows_the_whole_plan() {
    let (_fake, ws) = with_fake("disable", "").await;
    write_files(&ws, 10);
    let whole = ws.dry_run().await;
    let opts = kbsync::reconcile::RunOptions {
        dry_run: true,
        slice: SLICE,
        ..Default::default()
    };
    let sliced = kbsync::reconcile::run(&ws.config(), &[], opts)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(sliced.plan.ops.len(), 10);
    let keys = |r: &kbsync::reconcile::JobReport| {
        r.plan
            .ops
            .iter()
            .map(|o| o.key().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&sliced), keys(&whole));
}

/// What the watcher reports can be one folder holding a whole new tree: a
/// scoped pass goes in slices too, each slice a key range of its paths, and
/// leaves what lies outside them (here a parked step) alone.
#[tokio::test]
async fn a_scoped_pass_over_a_large_new_folder_goes_in_slices() {
    let (fake, ws) = with_fake("disable", "section = { path_segment = 0 }\n").await;
    sync_with_one_parked(&fake, &ws).await;
    // Its content step, parked, and its metadata step, waiting on it.
    assert_eq!(outbox_rows(&ws), 2);

    // Keys of the new folder sort after every other: a slice's range alone
    // would reach from "" over d0..d3, where the parked step lies.
    for i in 0..10 {
        let k = format!("new/g{i:02}.md");
        ws.write(&k, &format!("new {i}"));
        set_mtime(&ws.path(&k), 1_700_000_100 + i as i64);
    }
    let opts = RunOptions {
        slice: SLICE,
        ..RunOptions::default()
    };
    let mut runner = Runner::open(ws.config(), opts).unwrap();
    let mark = fake.requests();
    let r = runner
        .run_job("docs", &Scope::of(["new"]).unwrap())
        .await
        .unwrap();
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().created, 10);
    {
        let w = fake.world();
        // One metadata batch per slice of 3: 3 + 3 + 3 + 1.
        assert_eq!(w.count_since(mark, "documents/metadata"), 4);
        assert_eq!(w.docs.len(), 21);
        assert_eq!(w.docs.values().filter(|d| d.enabled).count(), 21);
    }
    drop(runner);
    assert_eq!(outbox_rows(&ws), 2, "the steps outside the scope stay");
}
