//! The upstream audit: drift made by hand in the knowledge base is found
//! and repaired by the next `--reconcile`; `kbsync check` reports it and
//! changes nothing.

mod support;

use kbsync::reconcile::JobReport;
use kbsync::sink::dify::document_name;
use serde_json::json;
use support::fake_dify::{FakeDify, Fault};
use support::{run_binary, with_fake, Workspace};

const META: &str = r#"
source_path = { fact = "path" }
"#;

async fn mirrored(policy: &str, n: usize) -> (FakeDify, Workspace) {
    let (fake, ws) = with_fake(policy, META).await;
    for i in 0..n {
        ws.write(&format!("d/{i:03}.md"), &format!("document {i}"));
    }
    assert!(ws.reconcile().await.converged());
    (fake, ws)
}

fn doc_id(fake: &FakeDify, key: &str) -> String {
    fake.world()
        .doc_by_name(&document_name(key))
        .unwrap_or_else(|| panic!("no document for {key}"))
        .id
        .clone()
}

fn drifts(r: &JobReport) -> Vec<(String, &'static str)> {
    r.audit
        .as_ref()
        .expect("the audit ran")
        .findings
        .iter()
        .map(|f| (f.key.clone(), f.drift.as_str()))
        .collect()
}

#[tokio::test]
async fn documents_deleted_disabled_or_archived_by_hand_are_restored() {
    let (fake, ws) = mirrored("disable", 5).await;
    // By hand, in Dify's UI.
    let gone = doc_id(&fake, "d/000.md");
    fake.world().docs.remove(&gone);
    let off = doc_id(&fake, "d/001.md");
    fake.world().docs.get_mut(&off).unwrap().enabled = false;
    let shelved = doc_id(&fake, "d/002.md");
    fake.world().docs.get_mut(&shelved).unwrap().archived = true;

    // Without the audit nothing is noticed: the state file says all is well.
    let r = ws.sync().await;
    assert!(r.converged() && r.plan.ops.is_empty() && r.requests == 0);

    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    let mut found = drifts(&r);
    found.sort();
    assert_eq!(
        found,
        [
            ("d/000.md".to_owned(), "missing"),
            ("d/001.md".to_owned(), "status"),
            ("d/002.md".to_owned(), "status"),
        ]
    );
    {
        let w = fake.world();
        let back = w.doc_by_name(&document_name("d/000.md")).unwrap();
        assert_eq!(back.content, b"document 0");
        assert_eq!(
            w.metadata_of(&document_name("d/000.md")).get("source_path"),
            Some(&json!("d/000.md"))
        );
        assert!(w.docs[&off].enabled);
        assert!(!w.docs[&shelved].archived);
        assert_eq!(w.docs.len(), 5);
    }
    // And then it rests: the audit finds nothing.
    let r = ws.reconcile().await;
    assert!(r.converged() && drifts(&r).is_empty() && r.plan.ops.is_empty());
}

#[tokio::test]
async fn a_retired_document_switched_back_on_by_hand_is_retired_again() {
    let (fake, ws) = mirrored("disable", 4).await;
    ws.remove("d/003.md");
    assert!(ws.reconcile().await.converged());
    let id = doc_id(&fake, "d/003.md");
    assert!(!fake.world().docs[&id].enabled);
    fake.world().docs.get_mut(&id).unwrap().enabled = true;
    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(drifts(&r), [("d/003.md".to_owned(), "status")]);
    assert!(!fake.world().docs[&id].enabled);
}

#[tokio::test]
async fn duplicates_under_an_owned_name_are_retired_per_policy() {
    for (policy, left) in [("delete", 3), ("disable", 4), ("keep", 4)] {
        let (fake, ws) = mirrored(policy, 3).await;
        let tracked = doc_id(&fake, "d/001.md");
        let extra = fake
            .world()
            .add_doc(&document_name("d/001.md"), b"a second copy");
        let r = ws.reconcile().await;
        // Left in place under `keep`: the upstream holds more than the
        // source, which `check` reports too.
        assert_eq!(r.converged(), policy != "keep", "{policy}: {r:?}");
        assert_eq!(
            drifts(&r),
            [("d/001.md".to_owned(), "duplicate")],
            "{policy}"
        );
        let w = fake.world();
        assert_eq!(w.docs.len(), left, "{policy}");
        assert!(
            w.docs.contains_key(&tracked),
            "{policy}: the tracked one stays"
        );
        match policy {
            "delete" => assert!(!w.docs.contains_key(&extra)),
            "disable" => assert!(!w.docs[&extra].enabled),
            _ => assert!(w.docs[&extra].enabled, "keep: only reported"),
        }
    }
}

/// Dify deletes no archived document: an archived duplicate is
/// un-archived first, as the push does for a vanished file's document
/// (both delete through the same verb).
#[tokio::test]
async fn an_archived_duplicate_is_deleted_under_the_delete_policy() {
    let (fake, ws) = mirrored("delete", 1).await;
    let extra = fake
        .world()
        .add_doc(&document_name("d/000.md"), b"a second copy");
    fake.world().docs.get_mut(&extra).unwrap().archived = true;
    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.audit.as_ref().expect("the audit ran").retired, 1);
    let w = fake.world();
    assert!(!w.docs.contains_key(&extra), "the duplicate is gone");
    assert_eq!(w.docs.len(), 1, "the tracked one stays");
}

#[tokio::test]
async fn a_lost_state_file_adopts_what_is_there() {
    let (fake, ws) = mirrored("disable", 3).await;
    let off = doc_id(&fake, "d/002.md");
    fake.world().docs.get_mut(&off).unwrap().enabled = false;
    std::fs::remove_dir_all(ws.dir.path().join("state")).unwrap();
    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    assert_eq!(w.docs.len(), 3, "adopted, not duplicated");
    assert!(w.docs[&off].enabled);
    assert!(w.duplicate_names().is_empty());
}

#[tokio::test]
async fn the_audit_costs_one_list_call_per_hundred_documents() {
    let (fake, ws) = mirrored("disable", 250).await;
    let mark = fake.requests();
    let r = ws.reconcile().await;
    assert!(r.converged() && r.plan.ops.is_empty());
    assert_eq!(r.audit.as_ref().unwrap().listed, 250);
    let w = fake.world();
    assert_eq!(w.count_since(mark, "/documents?"), 3, "ceil(250 / 100)");
    // And the owner mark looked at: one list of the metadata fields.
    assert_eq!(w.count_since(mark, "GET /v1/datasets"), 3 + 1);
    assert_eq!(w.log.len() - mark, 3 + 1, "and nothing else");
    assert_eq!(r.requests, 3 + 1);
}

#[tokio::test]
async fn an_audit_that_cannot_list_is_not_converged_and_repairs_nothing() {
    let (fake, ws) = mirrored("disable", 3).await;
    let id = doc_id(&fake, "d/000.md");
    fake.world().docs.get_mut(&id).unwrap().enabled = false;
    fake.world().inject(
        None,
        "/documents",
        Fault::status(503, "unavailable", "Service Unavailable"),
        100,
    );
    let r = ws.reconcile().await;
    assert!(!r.converged());
    assert!(r.audit_error.as_deref().unwrap().contains("audit"), "{r:?}");
    assert!(!fake.world().docs[&id].enabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_the_differences_changes_nothing_and_exits_1() {
    let (fake, ws) = mirrored("disable", 3).await;
    let id = doc_id(&fake, "d/000.md");
    fake.world().docs.get_mut(&id).unwrap().enabled = false;
    ws.write("d/new.md", "new");
    let before = fake.world().log.len();
    let config = ws.config_path.clone();
    let bin = || std::process::Command::new(env!("CARGO_BIN_EXE_kbsync"));
    let c = config.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || run_binary(bin(), &c, &["check"]))
        .await
        .unwrap();
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("docs: 3 differences"), "{out}");
    assert!(
        out.contains("status d/000.md: disabled upstream, recorded enabled"),
        "{out}"
    );
    assert!(out.contains("would upload d/new.md: 3 B"), "{out}");
    // Only listed: nothing written upstream.
    {
        let w = fake.world();
        assert!(w.log[before..].iter().all(|l| l.method == "GET"));
        assert!(!w.docs[&id].enabled);
    }
    let c = config.clone();
    let (code, json_out, _) =
        tokio::task::spawn_blocking(move || run_binary(bin(), &c, &["check", "--json"]))
            .await
            .unwrap();
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v[0]["in_step"], false);
    assert_eq!(v[0]["drift"][0]["drift"], "status");

    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    let c = config.clone();
    let (code, out, _) = tokio::task::spawn_blocking(move || run_binary(bin(), &c, &["check"]))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("docs: 0 differences"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_can_be_only_reported() {
    let (fake, ws) = mirrored("delete", 2).await;
    let text = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(
        &ws.config_path,
        text.replace(
            "delete_policy = \"delete\"",
            "delete_policy = \"delete\"\nduplicates = \"report\"",
        ),
    )
    .unwrap();
    let extra = fake
        .world()
        .add_doc(&document_name("d/000.md"), b"a second copy");
    let r = ws.reconcile().await;
    assert_eq!(drifts(&r), [("d/000.md".to_owned(), "duplicate")]);
    assert!(fake.world().docs.contains_key(&extra), "only reported");
    assert!(!r.converged() && r.settled(), "{r:?}");
    let (code, out) = check(&ws).await;
    assert_eq!(code, 1, "check agrees: {out}");
}

#[tokio::test]
async fn a_record_the_listing_skips_is_looked_up_before_it_is_taken_for_gone() {
    let (fake, ws) = mirrored("disable", 150).await;
    // Someone deletes a document on page 1 while the audit reads page 2:
    // the newest document of page 2 moves up to page 1 and is never seen.
    let (deleted, skipped) = {
        let w = fake.world();
        let newest_first: Vec<&String> = w.docs.keys().rev().collect();
        (newest_first[0].clone(), newest_first[100].clone())
    };
    let skipped_key = fake.world().docs[&skipped].name.clone();
    fake.world().delete_before_page = Some((2, deleted.clone()));
    let mark = fake.requests();
    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    // Page 1 still showed the deleted one; page 2 lacked the skipped one.
    assert_eq!(r.audit.as_ref().unwrap().listed, 149);
    assert_eq!(drifts(&r), [], "the skipped record was found by name");
    {
        let w = fake.world();
        assert_eq!(w.count_since(mark, "keyword="), 1, "one lookup");
        assert!(w.docs.contains_key(&skipped));
        assert!(
            w.duplicate_names().is_empty(),
            "{skipped_key} was not uploaded again"
        );
    }
    // The next audit sees the deletion and uploads the file again.
    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(drifts(&r).len(), 1);
    assert_eq!(drifts(&r)[0].1, "missing");
    assert_eq!(fake.world().docs.len(), 150);
}

#[tokio::test]
async fn many_records_gone_are_confirmed_by_one_second_listing() {
    let (fake, ws) = mirrored("disable", 30).await;
    for i in 0..25 {
        let id = doc_id(&fake, &format!("d/{i:03}.md"));
        fake.world().docs.remove(&id);
    }
    let mark = fake.requests();
    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    let found = drifts(&r);
    assert_eq!(found.len(), 25);
    assert!(found.iter().all(|(_, d)| *d == "missing"), "{found:?}");
    let w = fake.world();
    // Over 20 missing: a second listing rather than 25 lookups.
    assert_eq!(w.count_since(mark, "/documents?page=1"), 2);
    assert_eq!(w.count_since(mark, "keyword="), 0);
    assert_eq!(w.docs.len(), 30, "uploaded again");
    assert!(w.duplicate_names().is_empty());
}

/// `kbsync check`: its exit code and what it printed.
async fn check(ws: &Workspace) -> (i32, String) {
    let config = ws.config_path.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run_binary(
            std::process::Command::new(env!("CARGO_BIN_EXE_kbsync")),
            &config,
            &["check"],
        )
    })
    .await
    .unwrap();
    (code, format!("{out}{err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_renamed_by_hand_gets_its_name_back_and_check_agrees() {
    let (fake, ws) = mirrored("disable", 3).await;
    let id = doc_id(&fake, "d/001.md");
    fake.world().docs.get_mut(&id).unwrap().name = "Renamed in the UI.md".into();
    let (code, out) = check(&ws).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("renamed d/001.md"), "{out}");

    let mark = fake.world().log.len();
    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(drifts(&r), [("d/001.md".to_owned(), "renamed")]);
    {
        let w = fake.world();
        // Dify's update-by-file names the document after the uploaded
        // file and keeps its id: the same document, its name back.
        assert_eq!(w.docs[&id].name, document_name("d/001.md"));
        assert_eq!(w.docs.len(), 3);
        assert_eq!(w.count_since(mark, "update-by-file"), 1);
        assert_eq!(w.count_since(mark, "create-by-file"), 0);
    }
    let (code, out) = check(&ws).await;
    assert_eq!(code, 0, "converged, so check finds nothing: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_whose_indexing_failed_is_shown_with_difys_reason_and_not_in_sync() {
    let (fake, ws) = mirrored("disable", 2).await;
    let id = doc_id(&fake, "d/000.md");
    let reason = "Could not detect encoding for /tmp/tmpq1w2e3/d_000.md";
    fake.world()
        .docs
        .get_mut(&id)
        .unwrap()
        .fail_indexing(reason);

    let r = ws.reconcile().await;
    assert!(!r.converged(), "an errored document is no mirror: {r:?}");
    assert!(r.settled(), "nothing to retry until the file changes");
    let f = &r.audit.as_ref().unwrap().findings[0];
    assert_eq!((f.key.as_str(), f.drift.as_str()), ("d/000.md", "errored"));
    assert!(f.detail.contains(reason), "{}", f.detail);
    let (code, out) = check(&ws).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(reason), "{out}");

    // `status` counts it failed, with the reason, and not in sync.
    let s = kbsync::status::read(&ws.config(), &[]).unwrap().unwrap();
    let s = &s[0].summary;
    assert_eq!((s.tracked, s.in_sync), (2, 1), "{s:?}");
    assert_eq!(s.failed.len(), 1, "{s:?}");
    assert_eq!(s.failed[0].key, "d/000.md");
    assert!(s.failed[0].message.contains(reason), "{s:?}");

    // A fixed file replaces it; nothing is left failed. Dify 1.13.3
    // refuses an update of an errored document ("not available") yet keeps
    // the uploaded file: an orphan upload and three calls wasted. The
    // audit knows it errored, so it is deleted and created, not updated.
    ws.write("d/000.md", "document 0, fixed");
    let mark = fake.world().log.len();
    assert!(ws.reconcile().await.converged());
    let w = fake.world();
    assert_eq!(
        w.count_since(mark, "update-by-file"),
        0,
        "no update of an errored document"
    );
    assert_eq!(w.count_since(mark, "create-by-file"), 1);
    assert_eq!(w.docs.len(), 2);
    assert!(!w.docs.contains_key(&id), "the errored document is gone");
    drop(w);
    let s = kbsync::status::read(&ws.config(), &[]).unwrap().unwrap();
    assert_eq!((s[0].summary.in_sync, s[0].summary.failed.len()), (2, 0));
}

#[tokio::test]
async fn a_document_whose_indexing_failed_is_removed_with_one_delete_when_its_file_goes() {
    // Dify 1.13.3 refuses to disable it ("is not completed"); the audit
    // knows it errored, so the pass deletes it and sends nothing else.
    let (fake, ws) = mirrored("disable", 2).await;
    let id = doc_id(&fake, "d/000.md");
    fake.world()
        .docs
        .get_mut(&id)
        .unwrap()
        .fail_indexing("Could not detect encoding");
    ws.remove("d/000.md");
    let mark = fake.world().log.len();
    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().deleted, 1);
    let w = fake.world();
    assert!(!w.docs.contains_key(&id), "the errored document is gone");
    assert_eq!(w.count_since(mark, "/status/"), 0, "no disable tried");
    assert_eq!(w.count_since(mark, "indexing-status"), 0);
    assert_eq!(w.count_since(mark, "DELETE"), 1);
    drop(w);
    let f = &r.audit.as_ref().unwrap().findings[0];
    assert_eq!((f.key.as_str(), f.drift.as_str()), ("d/000.md", "errored"));
    assert!(f.detail.contains("removed by this pass"), "{}", f.detail);
    assert!(!f.detail.contains("replaced"), "{}", f.detail);
}
