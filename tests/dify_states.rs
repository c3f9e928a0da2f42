//! Dify's document states as its server code has them (see
//! shared/specs/dify/NOTES.md): documents that are gone, still indexing,
//! flagged "being indexed", or not available. None of them is a permanent
//! refusal: each ends in an exact mirror without `kbsync retry`.

mod support;

use kbsync::reconcile::{self, JobReport, RunOptions};
use kbsync::sink::dify::document_name;
use serde_json::json;
use support::fake_dify::{FakeDify, Fault, World};
use support::{with_fake, Workspace};

const META: &str = r#"
owner = { front_matter = "owner" }
"#;

fn note(owner: &str, body: &str) -> String {
    format!("---\nowner: {owner}\n---\n{body}\n")
}

fn doc_owner(w: &World, key: &str) -> Option<serde_json::Value> {
    w.metadata_of(&document_name(key)).get("owner").cloned()
}

/// Passes until one converges (at most `n`); the last report.
async fn converge(ws: &Workspace, n: usize) -> (usize, JobReport) {
    for i in 1..=n {
        let r = ws.sync().await;
        if r.converged() {
            return (i, r);
        }
        assert!(
            r.outcome
                .as_ref()
                .is_none_or(|o| o.failures.iter().all(|f| f.error.is_transient())),
            "a failure was parked: {r:?}"
        );
    }
    panic!("not converged after {n} passes");
}

async fn service_pass(ws: &Workspace) -> JobReport {
    let opts = RunOptions {
        honour_backoff: true,
        ..RunOptions::default()
    };
    reconcile::run(&ws.config(), &[], opts)
        .await
        .unwrap()
        .remove(0)
}

fn parked(ws: &Workspace) -> usize {
    let s = kbsync::status::read(&ws.config(), &[]).unwrap().unwrap();
    s[0].summary.failed.len()
}

#[tokio::test]
async fn a_document_deleted_by_hand_comes_back_on_a_metadata_only_change() {
    // D5: batch metadata answers 400 "Document not found." (not 404).
    let (fake, ws) = with_fake("disable", META).await;
    ws.write("a.md", &note("ana", "A"));
    ws.write("b.md", &note("bo", "B"));
    assert!(ws.sync().await.converged());
    let id = fake.world().doc_by_name("a.md").unwrap().id.clone();
    fake.world().docs.remove(&id);
    // Only the metadata changes: same body, new owner... the front matter
    // is in the file, so move the owner through a config value instead.
    ws.append_config("team = { value = \"core\" }\n");
    let (passes, _) = converge(&ws, 2).await;
    assert!(passes <= 2);
    let w = fake.world();
    let a = w.doc_by_name("a.md").expect("recreated");
    assert_eq!(a.content, note("ana", "A").as_bytes());
    assert_eq!(w.metadata_of("a.md").get("team"), Some(&json!("core")));
    assert_eq!(w.metadata_of("b.md").get("team"), Some(&json!("core")));
    assert_eq!(parked(&ws), 0);
}

#[tokio::test]
async fn metadata_follows_a_recreated_document() {
    // D4 / case 7: update answers 404, the document is created again, and
    // the metadata goes to the new id.
    let (fake, ws) = with_fake("disable", META).await;
    ws.write("a.md", &note("ana", "A"));
    assert!(ws.sync().await.converged());
    let old = fake.world().doc_by_name("a.md").unwrap().id.clone();
    fake.world().docs.remove(&old);
    ws.write("a.md", &note("bo", "A, edited"));
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    let a = w.doc_by_name("a.md").unwrap();
    assert_ne!(a.id, old);
    assert_eq!(a.content, note("bo", "A, edited").as_bytes());
    assert_eq!(doc_owner(&w, "a.md"), Some(json!("bo")));
}

#[tokio::test]
async fn a_document_deleted_upstream_then_locally_is_forgotten_under_every_policy() {
    for policy in ["delete", "disable", "archive"] {
        let (fake, ws) = with_fake(policy, "").await;
        for k in ["a.md", "b.md", "c.md"] {
            ws.write(k, k);
        }
        assert!(ws.sync().await.converged());
        let id = fake.world().doc_by_name("a.md").unwrap().id.clone();
        fake.world().docs.remove(&id);
        ws.remove("a.md");
        let (passes, _) = converge(&ws, 1).await;
        assert_eq!(passes, 1, "{policy}");
        assert!(ws.sync().await.converged(), "{policy}: and stays so");
        assert_eq!(parked(&ws), 0, "{policy}");
    }
}

#[tokio::test]
async fn being_indexed_after_enable_is_a_wait() {
    // D2: enable/disable set a "being indexed" flag; the next status change
    // on that document is refused until the index task ends.
    let (fake, ws) = with_fake("disable", "").await;
    for k in ["a.md", "b.md", "c.md"] {
        ws.write(k, k);
    }
    assert!(ws.sync().await.converged());
    // An idle worker lifts the lock within a second: two refusals.
    fake.world().indexing_flag_requests = 2;
    ws.remove("a.md");
    assert!(ws.sync().await.converged(), "disabled");
    // Back at once: the enable meets the flag that the disable left.
    ws.write("a.md", "a.md");
    let (passes, r) = converge(&ws, 1).await;
    assert_eq!(passes, 1, "{r:?}");
    assert!(fake.world().doc_by_name("a.md").unwrap().enabled);
}

#[tokio::test]
async fn a_lock_an_idle_worker_lifts_in_seconds_is_waited_out_within_the_pass() {
    // Dify 1.13.3, idle worker: the lock an enable or disable leaves was
    // lifted about 1.8 s after the call. Three tries within a second of
    // each other all met it, and the revived file then waited 10 minutes.
    let (fake, ws) = with_fake("disable", "").await;
    // The lock waits scale with the call backoff's first delay (2, 5 and
    // 10 s at the default 500 ms); 100 ms here puts them at 0.4, 1 and 2 s.
    let text = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(
        &ws.config_path,
        text.replace("retry_min_delay_ms = 5", "retry_min_delay_ms = 100"),
    )
    .unwrap();
    for k in ["a.md", "b.md", "c.md"] {
        ws.write(k, k);
    }
    assert!(ws.sync().await.converged());
    fake.world().indexing_lock_for = std::time::Duration::from_millis(1500);
    ws.remove("a.md");
    assert!(ws.sync().await.converged(), "disabled");
    ws.write("a.md", "a.md");
    let mark = fake.world().log.len();
    let r = ws.sync().await;
    let tries = fake.world().count_since(mark, "/status/enable");
    assert!(r.converged(), "{tries} enable calls: {r:?}");
    assert!(fake.world().doc_by_name("a.md").unwrap().enabled);
    assert!((2..=4).contains(&tries), "{tries} enable calls");
}

#[tokio::test]
async fn a_flag_that_outlasts_the_pass_backs_off_and_is_never_parked() {
    let (fake, ws) = with_fake("disable", "").await;
    for k in ["a.md", "b.md", "c.md"] {
        ws.write(k, k);
    }
    assert!(ws.sync().await.converged());
    // Dify 1.13.3 keeps a lock of up to 600 s after a status change
    // (`document_<id>_indexing` in Redis, TTL 600): here it outlasts any
    // reasonable wait.
    fake.world().indexing_flag_requests = 50;
    ws.remove("a.md");
    assert!(ws.sync().await.converged());
    let disabled_at = kbsync::state::unix_now();
    ws.write("a.md", "a.md");
    let mark = fake.world().log.len();
    let r = ws.sync().await;
    assert!(!r.converged());
    assert_eq!(parked(&ws), 0, "a wait, not a refusal");
    // Not 8 refused calls within the lock: the first and three spaced
    // ones, then one after it.
    let tries = fake.world().count_since(mark, "/status/enable");
    assert!(
        (1..=4).contains(&tries),
        "{tries} enable calls: {:?}",
        fake.world().log[mark..]
            .iter()
            .map(|l| format!("{} {} {}", l.method, l.path, l.status))
            .collect::<Vec<_>>()
    );
    let s = kbsync::status::read(&ws.config(), &[]).unwrap().unwrap();
    let s = &s[0].summary;
    assert_eq!(s.retrying.len(), 1, "{s:?}");
    let next = s.retrying[0].next_attempt_at.unwrap();
    assert!(
        (disabled_at + 600..=disabled_at + 620).contains(&next),
        "next attempt {}s after the disable",
        next - disabled_at
    );
    assert!(s.retrying[0].message.contains("10 minutes"), "{s:?}");
    // Disabled upstream meanwhile: pending, not in sync.
    assert_eq!((s.in_sync, s.pending_restore), (2, 1), "{s:?}");
    // The index task ends.
    let id = fake.world().doc_by_name("a.md").unwrap().id.clone();
    fake.world().docs.get_mut(&id).unwrap().being_indexed = 0;
    let (passes, _) = converge(&ws, 1).await;
    assert_eq!(passes, 1);
    assert!(fake.world().doc_by_name("a.md").unwrap().enabled);
}

#[tokio::test]
async fn an_update_waits_behind_a_held_un_archive() {
    // D3: Dify answers 400 "Document is not available" to an update of an
    // archived document; the update must wait for its un_archive.
    let (fake, ws) = with_fake("archive", "").await;
    for k in ["a.md", "b.md", "c.md"] {
        ws.write(k, k);
    }
    assert!(ws.sync().await.converged());
    ws.remove("a.md");
    assert!(ws.sync().await.converged(), "archived");
    // It comes back changed; the un_archive fails for a while.
    ws.write("a.md", "a.md, changed");
    fake.world().inject(
        None,
        "/status/un_archive",
        Fault::status(503, "unavailable", "Service Unavailable"),
        9,
    );
    let r = ws.sync().await;
    assert!(!r.converged());
    // The service's next pass: the un_archive is still backing off.
    let mark = fake.requests();
    let r = service_pass(&ws).await;
    assert!(!r.converged());
    assert_eq!(
        fake.world().count_since(mark, "update-by-file"),
        0,
        "no update of an archived document"
    );
    assert_eq!(parked(&ws), 0);
    // By hand (or once the backoff ran out): both go through.
    let (passes, _) = converge(&ws, 1).await;
    assert_eq!(passes, 1);
    let w = fake.world();
    let a = w.doc_by_name("a.md").unwrap();
    assert!(!a.archived);
    assert_eq!(a.content, b"a.md, changed");
}

/// A document for `a.md` created before a crash (or by hand) with other
/// bytes, still queued for indexing; Dify's worker finishes it after
/// `ticks` more requests (0: never, until the test says so).
async fn created_before_a_crash(extra_dify: &str, ticks: u32) -> (FakeDify, Workspace, String) {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(
        &fake.base_url(),
        support::fake_dify::DATASET,
        "disable",
        extra_dify,
        META,
    );
    ws.write("a.md", &note("ana", "A"));
    let id = fake.world().add_doc("a.md", b"an older upload");
    {
        let mut w = fake.world();
        let doc = w.docs.get_mut(&id).unwrap();
        doc.indexing_status = "waiting".into();
        doc.ticks_left = ticks;
    }
    (fake, ws, id)
}

#[tokio::test]
async fn an_adopted_document_still_indexing_is_waited_for() {
    // D6 / case 6: after a crash, documents created but still `waiting`
    // are found by name; Dify refuses their update while they index, so
    // the pass waits on the document, then updates it.
    // Dify's worker gets to it after a few more requests.
    let (fake, ws, id) = created_before_a_crash("", 5).await;
    let r = ws.sync().await;
    assert!(r.converged(), "waited, then updated: {r:?}");
    let w = fake.world();
    assert_eq!(w.docs.len(), 1, "adopted, not duplicated");
    assert_eq!(w.docs[&id].content, note("ana", "A").as_bytes());
    assert_eq!(
        w.count_since(0, "update-by-file"),
        1,
        "one update, once indexed"
    );
    assert_eq!(doc_owner(&w, "a.md"), Some(json!("ana")));
}

#[tokio::test]
async fn an_adopted_document_indexing_past_the_wait_is_retried_not_parked() {
    let (fake, ws, id) = created_before_a_crash("indexing_wait_secs = 0", 0).await;
    let r = ws.sync().await;
    assert!(!r.converged(), "it cannot be updated yet");
    assert_eq!(parked(&ws), 0, "a wait, not a refusal");
    assert_eq!(fake.world().count_since(0, "update-by-file"), 0);
    assert_eq!(fake.world().docs.len(), 1, "adopted, not duplicated");
    // Indexing ends.
    fake.world().docs.get_mut(&id).unwrap().indexing_status = "completed".into();
    let (passes, _) = converge(&ws, 1).await;
    assert_eq!(passes, 1);
    let w = fake.world();
    assert_eq!(w.docs.len(), 1);
    assert_eq!(w.docs[&id].content, note("ana", "A").as_bytes());
    assert_eq!(doc_owner(&w, "a.md"), Some(json!("ana")));
}

#[tokio::test]
async fn a_document_whose_indexing_failed_is_replaced_when_its_file_changes() {
    // D7: an errored document takes neither update nor disable.
    let (fake, ws) = with_fake("disable", META).await;
    ws.write("a.md", &note("ana", "A corrupt start"));
    assert!(ws.sync().await.converged());
    let old = fake.world().doc_by_name("a.md").unwrap().id.clone();
    fake.world().docs.get_mut(&old).unwrap().indexing_status = "error".into();
    ws.write("a.md", &note("ana", "A, fixed"));
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    assert!(!w.docs.contains_key(&old), "the errored document is gone");
    let a = w.doc_by_name("a.md").unwrap();
    assert_eq!(a.content, note("ana", "A, fixed").as_bytes());
    assert_eq!(doc_owner(&w, "a.md"), Some(json!("ana")));
    assert_eq!(w.docs.len(), 1);
}

#[tokio::test]
async fn a_create_the_server_applies_after_the_timeout_is_not_sent_twice() {
    // Case 5: a slow server still works on a create when the client gives
    // up; a lookup right then finds nothing. Sending it again would make
    // two documents.
    let fake = FakeDify::start().await;
    let ws = Workspace::new(
        &fake.base_url(),
        support::fake_dify::DATASET,
        "disable",
        "timeout_secs = 1",
        META,
    );
    ws.write("big.md", &note("ana", "a large document"));
    fake.world().inject(
        None,
        "create-by-file",
        Fault::StallThenApply(std::time::Duration::from_millis(1500)),
        1,
    );
    let r = ws.sync().await;
    assert!(!r.converged(), "unconfirmed: {r:?}");
    assert_eq!(parked(&ws), 0);
    // The server finishes the first create.
    fake.wait_until(
        "the slow create applied",
        std::time::Duration::from_secs(10),
        |w| w.docs.len() == 1,
    )
    .await;
    let (passes, _) = converge(&ws, 1).await;
    assert_eq!(passes, 1);
    let w = fake.world();
    let sent = w.arrived.iter().filter(|l| l.contains("create-by-file"));
    assert_eq!(sent.count(), 1, "sent once");
    assert_eq!(w.docs.len(), 1);
    assert_eq!(doc_owner(&w, "big.md"), Some(json!("ana")));
}

#[tokio::test]
async fn an_update_of_a_document_archived_behind_our_back_restores_it_first() {
    // The archive was applied but its answer lost; the file comes back
    // changed before kbsync learns: Dify answers the update "not available".
    let (fake, ws) = with_fake("archive", "").await;
    for k in ["a.md", "b.md", "c.md"] {
        ws.write(k, k);
    }
    assert!(ws.sync().await.converged());
    ws.remove("a.md");
    fake.world()
        .inject(None, "/status/archive", Fault::ApplyThen500, 100);
    assert!(!ws.sync().await.converged());
    let id = fake.world().doc_by_name("a.md").unwrap().id.clone();
    assert!(fake.world().docs[&id].archived, "applied upstream");
    fake.world().faults.clear();
    ws.write("a.md", "a.md, back and changed");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    assert!(!w.docs[&id].archived);
    assert_eq!(w.docs[&id].content, b"a.md, back and changed");
    assert_eq!(w.docs.len(), 3);
}

#[tokio::test]
async fn one_busy_document_does_not_hold_back_its_batch() {
    // Dify refuses a whole status batch when one document in it is flagged
    // "being indexed"; the others must still go.
    let (fake, ws) = with_fake("disable", "").await;
    for k in ["a.md", "b.md", "c.md", "d.md", "e.md", "f.md"] {
        ws.write(k, k);
    }
    assert!(ws.sync().await.converged());
    let busy = fake.world().doc_by_name("b.md").unwrap().id.clone();
    fake.world().docs.get_mut(&busy).unwrap().being_indexed = 1000;
    for k in ["a.md", "b.md", "c.md"] {
        ws.remove(k);
    }
    let r = ws.sync().await;
    assert!(!r.converged());
    assert_eq!(r.outcome.as_ref().unwrap().status.get("disable"), Some(&2));
    {
        let w = fake.world();
        assert!(!w.doc_by_name("a.md").unwrap().enabled);
        assert!(!w.doc_by_name("c.md").unwrap().enabled);
        assert!(w.docs[&busy].enabled, "still flagged");
    }
    assert_eq!(parked(&ws), 0);
    fake.world().docs.get_mut(&busy).unwrap().being_indexed = 0;
    let (passes, _) = converge(&ws, 1).await;
    assert_eq!(passes, 1);
    assert!(!fake.world().docs[&busy].enabled);
}

#[tokio::test]
async fn a_document_whose_indexing_failed_is_deleted_when_its_file_goes() {
    // D7: Dify refuses to disable it ("not completed"), for good.
    let (fake, ws) = with_fake("disable", "").await;
    for k in ["a.md", "b.md", "c.md"] {
        ws.write(k, k);
    }
    assert!(ws.sync().await.converged());
    let id = fake.world().doc_by_name("a.md").unwrap().id.clone();
    fake.world().docs.get_mut(&id).unwrap().indexing_status = "error".into();
    ws.remove("a.md");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().deleted, 1);
    let w = fake.world();
    assert!(!w.docs.contains_key(&id));
    assert_eq!(w.docs.len(), 2);
}

/// Newer Dify updates a document with `PATCH …/documents/{doc}`; 1.13.2
/// answers that with 405 and serves only the deprecated `update-by-file`.
#[tokio::test]
async fn updates_use_the_patch_route_where_the_server_has_it() {
    for patch_route in [true, false] {
        let fake = FakeDify::start().await;
        fake.world().patch_route = patch_route;
        let ws = Workspace::new(
            &fake.base_url(),
            support::fake_dify::DATASET,
            "keep",
            "upload_concurrency = 1",
            META,
        );
        for key in ["a.md", "b.md", "c.md"] {
            ws.write(key, &note("ana", "v1"));
        }
        assert!(ws.sync().await.converged());
        let mark = fake.world().log.len();
        for key in ["a.md", "b.md", "c.md"] {
            ws.write(key, &note("ana", "v2"));
        }
        let r = ws.sync().await;
        assert!(r.converged(), "{patch_route}: {r:?}");
        assert_eq!(r.outcome.as_ref().unwrap().updated, 3);
        let w = fake.world();
        let patched = w
            .log
            .iter()
            .skip(mark)
            .filter(|l| l.method == "PATCH" && !l.path.contains("/status/"))
            .count();
        let by_alias = w.count_since(mark, "update-by-file");
        // Where PATCH is refused, it is tried once per client, not per file.
        assert_eq!(
            (patched, by_alias),
            if patch_route { (3, 0) } else { (1, 3) },
            "patch_route = {patch_route}"
        );
        for key in ["a.md", "b.md", "c.md"] {
            let doc = w.doc_by_name(&document_name(key)).unwrap();
            assert_eq!(doc.content, note("ana", "v2").into_bytes(), "{key}");
        }
    }
}

/// A create sent just before the process died (kill -9): the state file
/// has it started, unconfirmed, and Dify applied it and queued its
/// indexing. Emulated by a create whose connection drops unanswered,
/// then applied by the server as a slow one would.
async fn an_unconfirmed_create_applied_later(ws: &Workspace, fake: &FakeDify) -> String {
    ws.write("a.md", &note("ana", "A"));
    fake.world().inject(None, "create-by-file", Fault::Drop, 1);
    let r = ws.sync().await;
    assert!(!r.converged(), "the create is unconfirmed: {r:?}");
    assert!(fake.world().docs.is_empty());
    let mut w = fake.world();
    let id = w.add_doc("a.md", note("ana", "A").as_bytes());
    // Queued behind other uploads: Dify's worker gets to it in a while.
    let doc = w.docs.get_mut(&id).unwrap();
    doc.indexing_status = "waiting".into();
    doc.ticks_left = 1_000;
    id
}

fn uploads(fake: &FakeDify) -> usize {
    let w = fake.world();
    w.count_since(0, "update-by-file")
        + w.count_since(0, "create-by-file")
        + w.log
            .iter()
            .filter(|l| l.method == "PATCH" && !l.path.contains("/status/"))
            .count()
}

#[tokio::test]
async fn a_create_applied_before_a_crash_is_adopted_without_uploading_again() {
    // With the audit (`--reconcile`) and without (a service pass between
    // audits), the restart finds the queued document and takes it as the
    // create's result: Dify refuses any update while it is queued, and
    // none is needed: it holds the bytes that create sent.
    for audited in [true, false] {
        let (fake, ws) = with_fake("disable", META).await;
        let id = an_unconfirmed_create_applied_later(&ws, &fake).await;
        let sent = uploads(&fake);
        let r = if audited {
            ws.reconcile().await
        } else {
            ws.sync().await
        };
        assert!(r.converged(), "audited {audited}: {r:?}");
        assert_eq!(
            uploads(&fake),
            sent,
            "audited {audited}: nothing uploaded again"
        );
        let w = fake.world();
        assert_eq!(w.docs.len(), 1, "adopted, not duplicated");
        assert_eq!(w.docs[&id].indexing_status, "waiting", "still queued");
        assert_eq!(doc_owner(&w, "a.md"), Some(json!("ana")));
    }
}

#[tokio::test]
async fn a_create_applied_before_a_crash_whose_file_changed_since_waits_then_updates() {
    for audited in [true, false] {
        let (fake, ws) = with_fake("disable", META).await;
        let id = an_unconfirmed_create_applied_later(&ws, &fake).await;
        // Dify's worker finishes after a few more requests.
        fake.world().docs.get_mut(&id).unwrap().ticks_left = 6;
        ws.write("a.md", &note("ana", "A, edited after the crash"));
        let r = if audited {
            ws.reconcile().await
        } else {
            ws.sync().await
        };
        assert!(r.converged(), "audited {audited}: {r:?}");
        let w = fake.world();
        assert_eq!(w.docs.len(), 1, "adopted, not duplicated");
        assert_eq!(
            String::from_utf8_lossy(&w.docs[&id].content),
            note("ana", "A, edited after the crash"),
            "audited {audited}: {:?}",
            w.log
                .iter()
                .map(|l| format!("{} {} {}", l.method, l.path, l.status))
                .collect::<Vec<_>>()
        );
    }
}

/// Dify 1.13 answers the PATCH update route with 405. Updates sent side by
/// side must not each find that out: the first asks, the others wait for
/// its answer.
#[tokio::test]
async fn concurrent_updates_probe_the_patch_route_once() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(
        &fake.base_url(),
        support::fake_dify::DATASET,
        "keep",
        "upload_concurrency = 4",
        META,
    );
    let keys: Vec<String> = (0..8).map(|i| format!("doc{i}.md")).collect();
    for key in &keys {
        ws.write(key, &note("ana", "v1"));
    }
    assert!(ws.sync().await.converged());
    // Every upload takes a while, so the four updates are all sent before
    // the first answer comes back, as against a real server.
    fake.world().latency = Some(support::fake_dify::Latency {
        upload: std::time::Duration::from_millis(100),
        other: std::time::Duration::ZERO,
    });
    let mark = fake.world().log.len();
    for key in &keys {
        ws.write(key, &note("ana", "v2"));
    }
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().updated, keys.len());
    let w = fake.world();
    let patched: Vec<String> = w
        .log
        .iter()
        .skip(mark)
        .filter(|l| l.method == "PATCH" && !l.path.contains("/status/"))
        .map(|l| format!("{} {} -> {}", l.method, l.path, l.status))
        .collect();
    assert_eq!(patched.len(), 1, "{patched:#?}");
    assert_eq!(w.count_since(mark, "update-by-file"), keys.len());
}

/// A restart after kill -9 in the middle of the creates: every create of
/// the phase was marked started, more than are looked up one by one. The
/// audit's listing is the pass's one listing: the pusher does not list the
/// same page again to look for them.
#[tokio::test]
async fn a_restart_after_a_kill_mid_create_lists_the_documents_once() {
    let (fake, ws) = with_fake("disable", META).await;
    for i in 0..25 {
        ws.write(&format!("n{i:02}.md"), &note("ana", &format!("N{i}")));
    }
    fake.world().inject(None, "create-by-file", Fault::Drop, 25);
    let r = ws.sync().await;
    assert!(!r.converged(), "every create unconfirmed: {r:?}");
    // A few of them were applied before the process died.
    for i in 0..3 {
        let key = format!("n{i:02}.md");
        fake.world()
            .add_doc(&key, note("ana", &format!("N{i}")).as_bytes());
    }
    fake.world().faults.clear();
    let mark = fake.world().log.len();
    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    let listings: Vec<String> = w.log[mark..]
        .iter()
        .filter(|l| l.method == "GET" && l.path.contains("/documents?"))
        .map(|l| l.path.clone())
        .collect();
    assert_eq!(listings.len(), 1, "one listing: {listings:#?}");
    assert_eq!(w.docs.len(), 25, "adopted, not duplicated");
    assert!(w.duplicate_names().is_empty());
}
