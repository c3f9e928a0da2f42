//! End-to-end: a real folder in a temp dir, a real SQLite state file, and
//! the in-process fake Dify speaking the Knowledge API over HTTP.

mod support;

use kbsync::sink::dify::document_name;
use support::fake_dify::{FakeDify, Fault, DATASET};
use support::{set_mtime, Workspace};

const META: &str = r#"
section = { path_segment = 0 }
source_path = { fact = "path" }
modified = { fact = "modified" }
title = { front_matter = "title" }
"#;

async fn setup(policy: &str) -> (FakeDify, Workspace) {
    support::with_fake(policy, META).await
}

/// `n` Markdown files, last modified well in the past (files written just
/// before a scan are re-read by the next one; see `racy_files_are_hashed_again`).
fn tree(ws: &Workspace, n: usize) {
    for i in 0..n {
        let key = format!("team{}/doc{i:03}.md", i % 3);
        ws.write(
            &key,
            &format!("---\ntitle: Doc {i}\n---\nBody of document {i}.\n"),
        );
        set_mtime(&ws.path(&key), 1_600_000_000 + i as i64);
    }
}

#[tokio::test]
async fn first_sync_mirrors_tree_and_second_pass_sends_nothing() {
    let (fake, ws) = setup("disable").await;
    tree(&ws, 12);
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let o = r.outcome.as_ref().unwrap();
    assert_eq!(o.created, 12);
    assert_eq!(o.metadata, 12);
    {
        let w = fake.world();
        assert_eq!(w.docs.len(), 12);
        assert!(w.duplicate_names().is_empty());
        let name = document_name("team1/doc004.md");
        let doc = w.doc_by_name(&name).expect("document named after its path");
        assert_eq!(
            doc.content,
            std::fs::read(ws.path("team1/doc004.md")).unwrap()
        );
        let meta = w.metadata_of(&name);
        assert_eq!(meta["section"], "team1");
        assert_eq!(meta["source_path"], "team1/doc004.md");
        assert_eq!(meta["title"], "Doc 4");
        assert!(meta["modified"].is_number());
        // 4 fields: one list, four creates; one document listing; 12
        // uploads; a single batch metadata call.
        assert_eq!(w.count_since(0, "POST /v1/datasets/"), 4 + 12 + 1);
        assert_eq!(w.count_since(0, "documents/metadata"), 1);
        assert_eq!(w.log.len(), r.requests as usize);
    }

    let before = fake.requests();
    let again = ws.sync().await;
    assert!(again.converged());
    assert!(again.plan.ops.is_empty(), "{:?}", again.plan.ops);
    assert_eq!(fake.requests(), before, "a no-op pass must send nothing");
    assert_eq!(again.hashed_files, 0, "unchanged files are not re-read");
}

#[tokio::test]
async fn yaml_front_matter_quotes_escapes_and_block_scalars_reach_the_metadata() {
    let (fake, ws) = setup("disable").await;
    let files = [
        (
            "single.md",
            "---\ntitle: 'It''s here'\n---\nBody\n",
            "It's here",
        ),
        (
            "double.md",
            "---\ntitle: \"Say \\\"hi\\\" \\u00e0 la \\\\ carte\"\n---\n",
            "Say \"hi\" \u{e0} la \\ carte",
        ),
        (
            "folded.md",
            "---\ntitle: >-\n  A title folded\n  over two lines\n---\n",
            "A title folded over two lines",
        ),
        (
            "literal.md",
            "---\r\ntitle: |\r\n  Line one\r\n  Line two\r\n---\r\n",
            "Line one\nLine two\n",
        ),
    ];
    for (key, text, _) in files {
        ws.write(key, text);
    }
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    for (key, _, title) in files {
        assert_eq!(
            w.metadata_of(&document_name(key)).get("title"),
            Some(&serde_json::Value::from(title)),
            "{key}"
        );
    }
}

#[tokio::test]
async fn racy_files_are_hashed_again_so_a_same_tick_rewrite_is_seen() {
    let (fake, ws) = setup("disable").await;
    ws.write("fresh.md", "version one");
    assert!(ws.sync().await.converged());
    let mtime = std::fs::metadata(ws.path("fresh.md"))
        .unwrap()
        .modified()
        .unwrap();
    // A rewrite of the same size within the same timestamp tick leaves size
    // and mtime as they were: only the content tells.
    ws.write("fresh.md", "version two");
    std::fs::File::options()
        .write(true)
        .open(ws.path("fresh.md"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.hashed_files, 1);
    assert_eq!(
        fake.world()
            .doc_by_name(&document_name("fresh.md"))
            .unwrap()
            .content,
        b"version two"
    );
    // Once the file is older than the scan that read it, size and mtime
    // are trusted again.
    set_mtime(&ws.path("fresh.md"), 1_600_000_000);
    let mark = fake.requests();
    assert_eq!(ws.sync().await.hashed_files, 1);
    assert_eq!(ws.sync().await.hashed_files, 0);
    let w = fake.world();
    assert_eq!(w.count_since(mark, "by-file"), 0, "same bytes: no upload");
    assert_eq!(
        w.count_since(mark, "documents/metadata"),
        1,
        "new `modified`"
    );
}

#[tokio::test]
async fn content_change_uploads_once_and_refreshes_metadata() {
    let (fake, ws) = setup("disable").await;
    tree(&ws, 5);
    assert!(ws.sync().await.converged());
    let mark = fake.requests();
    ws.write(
        "team0/doc000.md",
        "---\ntitle: Renamed title\n---\nNew body.\n",
    );
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    assert_eq!(w.count_since(mark, "update-by-file"), 1);
    assert_eq!(w.count_since(mark, "create-by-file"), 0);
    assert_eq!(w.count_since(mark, "documents/metadata"), 1);
    let name = document_name("team0/doc000.md");
    assert_eq!(
        w.doc_by_name(&name).unwrap().content,
        b"---\ntitle: Renamed title\n---\nNew body.\n"
    );
    assert_eq!(w.metadata_of(&name)["title"], "Renamed title");
    assert_eq!(w.docs.len(), 5);
}

#[tokio::test]
async fn metadata_only_change_is_one_batch_call() {
    let (fake, ws) = setup("disable").await;
    tree(&ws, 60);
    assert!(ws.sync().await.converged());
    let mark = fake.requests();
    // Touch every file: same bytes, new mtime → only `modified` changes.
    for i in 0..60 {
        set_mtime(
            &ws.path(&format!("team{}/doc{i:03}.md", i % 3)),
            1_800_000_000 + i as i64,
        );
    }
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().metadata, 60);
    let w = fake.world();
    assert_eq!(
        w.log.len() - mark,
        1,
        "one batch metadata call, nothing else"
    );
    assert_eq!(w.count_since(mark, "POST /v1/datasets/"), 1);
    assert_eq!(
        w.metadata_of(&document_name("team2/doc059.md"))["modified"],
        1_800_000_059
    );
}

#[tokio::test]
async fn delete_policy_delete_removes_the_document() {
    let (fake, ws) = setup("delete").await;
    tree(&ws, 3);
    assert!(ws.sync().await.converged());
    ws.remove("team1/doc001.md");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    assert_eq!(w.docs.len(), 2);
    assert!(w.doc_by_name(&document_name("team1/doc001.md")).is_none());
}

#[tokio::test]
async fn delete_policy_disable_then_readd_reenables_without_upload() {
    let (fake, ws) = setup("disable").await;
    tree(&ws, 3);
    assert!(ws.sync().await.converged());
    let content = std::fs::read(ws.path("team1/doc001.md")).unwrap();
    ws.remove("team1/doc001.md");
    assert!(ws.sync().await.converged());
    let name = document_name("team1/doc001.md");
    assert!(!fake.world().doc_by_name(&name).unwrap().enabled);

    let mark = fake.requests();
    std::fs::write(ws.path("team1/doc001.md"), &content).unwrap();
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    assert!(w.doc_by_name(&name).unwrap().enabled);
    assert_eq!(
        w.count_since(mark, "-by-file"),
        0,
        "unchanged content is not re-uploaded"
    );
    assert_eq!(w.count_since(mark, "status/enable"), 1);
    assert_eq!(w.docs.len(), 3);
}

#[tokio::test]
async fn delete_policy_archive_then_readd_changed_unarchives_and_updates() {
    let (fake, ws) = setup("archive").await;
    tree(&ws, 3);
    assert!(ws.sync().await.converged());
    ws.remove("team2/doc002.md");
    assert!(ws.sync().await.converged());
    let name = document_name("team2/doc002.md");
    assert!(fake.world().doc_by_name(&name).unwrap().archived);

    ws.write("team2/doc002.md", "brand new content\n");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    let doc = w.doc_by_name(&name).unwrap();
    assert!(!doc.archived);
    assert_eq!(doc.content, b"brand new content\n");
    assert_eq!(w.docs.len(), 3);
}

/// Dify refuses to delete an archived document (403
/// `archived_document_immutable`). Those the state file knows to be
/// archived are un-archived in batch calls first; one archived behind
/// kbsync's back still gets the 403 and is un-archived on its own.
#[tokio::test]
async fn archived_documents_are_unarchived_in_batches_before_their_deletes() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "archive", "batch_size = 2", META);
    tree(&ws, 12);
    assert!(ws.sync().await.converged());
    let gone: Vec<String> = (0..5)
        .map(|i| format!("team{}/doc{i:03}.md", i % 3))
        .collect();
    for key in &gone {
        ws.remove(key);
    }
    assert!(ws.sync().await.converged());
    assert_eq!(fake.world().docs.values().filter(|d| d.archived).count(), 5);

    // The policy becomes `delete`: the five archived documents go.
    let config = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(
        &ws.config_path,
        config.replace("delete_policy = \"archive\"", "delete_policy = \"delete\""),
    )
    .unwrap();
    let mark = fake.requests();
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().deleted, 5);
    {
        let w = fake.world();
        assert_eq!(w.docs.len(), 7);
        assert_eq!(w.count_since(mark, "/status/un_archive"), 3, "ceil(5 / 2)");
        assert_eq!(w.count_since(mark, "DELETE "), 5);
        let refused = w.log[mark..].iter().filter(|l| l.status == 403).count();
        assert_eq!(refused, 0, "{:#?}", &w.log[mark..]);
    }

    // Archived by hand, unknown to the state file: the 403, then one
    // un_archive and the delete again.
    let key = "team2/doc011.md";
    let id = {
        let mut w = fake.world();
        let id = w.doc_by_name(&document_name(key)).unwrap().id.clone();
        w.docs.get_mut(&id).unwrap().archived = true;
        id
    };
    ws.remove(key);
    let mark = fake.requests();
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    assert!(!w.docs.contains_key(&id));
    assert_eq!(w.count_since(mark, "/status/un_archive"), 1);
    assert_eq!(w.count_since(mark, "DELETE "), 2);
}

#[tokio::test]
async fn rename_creates_new_name_and_retires_old() {
    let (fake, ws) = setup("delete").await;
    tree(&ws, 2);
    assert!(ws.sync().await.converged());
    std::fs::rename(ws.path("team0/doc000.md"), ws.path("team0/moved.md")).unwrap();
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    assert!(w.doc_by_name(&document_name("team0/doc000.md")).is_none());
    assert!(w.doc_by_name(&document_name("team0/moved.md")).is_some());
    assert_eq!(w.docs.len(), 2);
}

#[tokio::test]
async fn transient_faults_converge_without_duplicates() {
    let (fake, ws) = setup("disable").await;
    tree(&ws, 20);
    {
        let mut w = fake.world();
        w.inject(
            None,
            "create-by-file",
            Fault::status(503, "service_unavailable", "Service Unavailable"),
            3,
        );
        w.inject(None, "create-by-file", Fault::too_many("1"), 1);
        w.inject(None, "create-by-file", Fault::Drop, 2);
        // Applied upstream, but the answer is lost: a retry must not duplicate.
        w.inject(None, "create-by-file", Fault::ApplyThen500, 2);
        w.inject(None, "create-by-file", Fault::ApplyThenDrop, 1);
        w.inject(
            None,
            "documents/metadata",
            Fault::status(502, "bad_gateway", "Bad Gateway"),
            1,
        );
        w.inject(
            None,
            "documents/metadata",
            Fault::status(403, "forbidden", "Sorry, you have reached the knowledge base request rate limit of your subscription."),
            1,
        );
    }
    let r = ws.sync().await;
    // A create whose connection was lost without an answer may still be
    // applied by a slow server: it is not sent again in the same pass.
    let o = r.outcome.as_ref().unwrap();
    let unconfirmed: Vec<&str> = o.failures.iter().map(|f| f.error.code.as_str()).collect();
    assert_eq!(unconfirmed, ["unconfirmed", "unconfirmed"], "{r:?}");
    assert_eq!(
        o.created, 18,
        "applied-then-lost creates are adopted in the same pass"
    );
    // The next pass looks their names up, finds nothing, creates them.
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().created, 2);
    {
        let w = fake.world();
        assert!(
            w.duplicate_names().is_empty(),
            "duplicates: {:?}",
            w.duplicate_names()
        );
        assert_eq!(w.docs.len(), 20);
        for d in w.docs.values() {
            assert_eq!(w.metadata_of(&d.name).len(), 4, "{} lacks metadata", d.name);
        }
        // 503 ×3, drop ×2, applied-then-lost ×3 may each have been applied:
        // each is followed by a lookup by name; the 429 is not. The two
        // dropped ones are looked up once more by the next pass.
        assert_eq!(w.count_since(0, "keyword="), 10);
    }
    let before = fake.requests();
    assert!(ws.sync().await.plan.ops.is_empty());
    assert_eq!(fake.requests(), before);
}

#[tokio::test]
async fn a_create_answered_after_the_timeout_is_adopted_not_duplicated() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(
        &fake.base_url(),
        support::fake_dify::DATASET,
        "delete",
        "timeout_secs = 1",
        "",
    );
    ws.write("slow.md", "applied, but the answer comes too late");
    fake.world().inject(
        None,
        "create-by-file",
        Fault::ApplyThenStall(std::time::Duration::from_secs(3)),
        1,
    );
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    assert_eq!(w.docs.len(), 1, "{:?}", w.duplicate_names());
    // `arrived`: the stalled create is answered (and logged) only later.
    let arrived = |needle: &str| w.arrived.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(arrived("create-by-file"), 1);
    assert_eq!(arrived("keyword="), 1);
}

#[tokio::test]
async fn permanent_errors_are_reported_per_file_and_not_retried_in_the_pass() {
    // The job lets .xyz through (as for a server with more extractors);
    // this one refuses it as Dify's create does: 400 with no message.
    let fake = FakeDify::start().await;
    let ws = Workspace::new(
        &fake.base_url(),
        DATASET,
        "disable",
        r#"allowed_extensions = ["md", "xyz"]"#,
        META,
    );
    tree(&ws, 3);
    ws.write("notes.xyz", "Dify does not take this type");
    let r = ws.sync().await;
    assert!(!r.converged());
    let o = r.outcome.as_ref().unwrap();
    assert_eq!(o.created, 3);
    assert_eq!(o.failures.len(), 1);
    let f = &o.failures[0];
    assert_eq!(f.key, "notes.xyz");
    assert_eq!(f.error.status, Some(400));
    assert_eq!(f.error.code, "invalid_param");
    assert!(
        f.error.message.contains("without a reason") && f.error.message.contains("file type"),
        "an empty message gets a hint: {}",
        f.error.message
    );
    assert_eq!(
        fake.world().count_since(0, "create-by-file"),
        4,
        "a 400 is not retried"
    );

    // Parked in the outbox: later passes leave it alone (and say so)…
    let r = ws.sync().await;
    assert!(!r.converged());
    assert_eq!(r.held.len(), 1);
    assert_eq!(r.held[0].key, "notes.xyz");
    assert_eq!(r.held[0].until, None);
    assert_eq!(fake.world().count_since(0, "create-by-file"), 4);
    // A dry run says so too.
    let d = ws.dry_run().await;
    assert_eq!(d.held.len(), 1);
    assert_eq!(d.held[0].error.code, "invalid_param");
    // …until the file changes.
    ws.write("notes.xyz", "Dify still does not take this type");
    let r = ws.sync().await;
    assert!(r.held.is_empty());
    assert_eq!(r.outcome.as_ref().unwrap().failures.len(), 1);
    assert_eq!(fake.world().count_since(0, "create-by-file"), 5);
}

#[tokio::test]
async fn existing_document_with_same_name_is_adopted() {
    let (fake, ws) = setup("disable").await;
    ws.write("guide.md", "local version\n");
    let old = fake.world().add_doc("guide.md", b"uploaded by hand\n");
    fake.world().docs.get_mut(&old).unwrap().enabled = false;
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().adopted, 1);
    let w = fake.world();
    assert_eq!(w.docs.len(), 1);
    let doc = &w.docs[&old];
    assert!(doc.enabled);
    assert_eq!(doc.content, b"local version\n");
}

#[tokio::test]
async fn status_change_waits_for_indexing() {
    let (fake, ws) = setup("disable").await;
    fake.world().polls_to_complete = 3;
    tree(&ws, 2);
    assert!(ws.sync().await.converged());
    ws.remove("team0/doc000.md");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    assert!(
        !w.doc_by_name(&document_name("team0/doc000.md"))
            .unwrap()
            .enabled
    );
    assert_eq!(w.count_since(0, "indexing-status"), 3);
}

#[tokio::test]
async fn update_of_a_document_still_indexing_waits_then_succeeds() {
    let (fake, ws) = setup("disable").await;
    fake.world().polls_to_complete = 2;
    ws.write("a.md", "first\n");
    assert!(ws.sync().await.converged());
    let mark = fake.requests();
    ws.write("a.md", "second\n");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    assert_eq!(w.doc_by_name("a.md").unwrap().content, b"second\n");
    assert_eq!(
        w.count_since(mark, "update-by-file"),
        2,
        "refused while indexing, then accepted"
    );
    assert_eq!(w.count_since(mark, "indexing-status"), 2);
}

/// `kbsync --reconcile` on the workspace with `args`, off the fake's
/// thread: exit code and stderr (the log).
async fn reconcile_binary(ws: &Workspace, args: &'static [&'static str]) -> (i32, String) {
    let config = ws.config_path.clone();
    let (code, _, err) = tokio::task::spawn_blocking(move || {
        let mut all = vec!["--reconcile", "--no-audit", "--log-format", "plain"];
        all.extend_from_slice(args);
        support::run_binary(
            std::process::Command::new(env!("CARGO_BIN_EXE_kbsync")),
            &config,
            &all,
        )
    })
    .await
    .unwrap();
    (code, err)
}

/// A pass that waits on Dify's indexing says so at info, with the batch
/// and then the seconds waited; at debug, the refusal that made it wait.
#[tokio::test]
async fn a_wait_on_indexing_is_logged_with_its_batch_and_cause() {
    let (fake, ws) = setup("disable").await;
    fake.world().polls_to_complete = 2;
    ws.write("a.md", "first\n");
    assert!(ws.sync().await.converged());
    let batch = fake.world().doc_by_name("a.md").unwrap().batch.clone();
    ws.write("a.md", "second\n");
    let (code, log) = reconcile_binary(&ws, &["--log", "info"]).await;
    assert_eq!(code, 0, "{log}");
    let start = log
        .lines()
        .find(|l| l.contains("waiting for Dify to index 1 document"))
        .unwrap_or_else(|| panic!("no wait logged at info:\n{log}"));
    assert!(start.contains(&batch), "{start}");
    assert!(
        log.lines()
            .any(|l| l.contains("Dify indexed 1 document") && l.contains("waited_secs=")),
        "{log}"
    );
    assert!(
        !log.contains("Document is not available"),
        "debug only: {log}"
    );

    // At debug, the refusal that started it.
    let batch = fake.world().doc_by_name("a.md").unwrap().batch.clone();
    ws.write("a.md", "third\n");
    let (code, log) = reconcile_binary(&ws, &["--log", "kbsync=debug"]).await;
    assert_eq!(code, 0, "{log}");
    assert!(
        log.lines().any(|l| l.contains(&batch)
            && l.contains("Document is not available")
            && l.contains("update")),
        "{log}"
    );
    assert_eq!(
        fake.world().doc_by_name("a.md").unwrap().content,
        b"third\n"
    );
}

#[tokio::test]
async fn missing_dataset_stops_the_job_with_a_clear_error() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(
        &fake.base_url(),
        "00000000-dead-beef-0000-000000000000",
        "disable",
        "",
        META,
    );
    ws.write("a.md", "a");
    ws.write("b.md", "b");
    let r = ws.sync().await;
    assert!(!r.converged());
    let err = r.error.as_deref().unwrap();
    assert!(err.contains("Dataset not found"), "{err}");
    assert_eq!(
        fake.requests(),
        1,
        "nothing more is tried once the dataset is missing"
    );
}

#[tokio::test]
async fn oversized_and_vanished_unreadable_files_are_reported_not_deleted() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(
        &fake.base_url(),
        support::fake_dify::DATASET,
        "delete",
        "",
        META,
    );
    std::fs::write(
        &ws.config_path,
        std::fs::read_to_string(&ws.config_path)
            .unwrap()
            .replace("root = \"docs\"", "root = \"docs\"\nmax_file_size = 64"),
    )
    .unwrap();
    ws.write("small.md", "fits");
    ws.write("big.md", "grows");
    assert!(ws.sync().await.converged());
    ws.write("big.md", &"x".repeat(100));
    let r = ws.sync().await;
    assert!(
        !r.converged(),
        "a skipped file means the mirror is not exact"
    );
    assert_eq!(r.skipped.len(), 1);
    assert!(
        r.skipped[0].reason.contains("max_file_size"),
        "{:?}",
        r.skipped
    );
    let w = fake.world();
    assert_eq!(
        w.docs.len(),
        2,
        "the previously synced copy is kept, not deleted"
    );
}

#[tokio::test]
async fn dry_run_plans_without_touching_upstream_or_state() {
    let (fake, ws) = setup("disable").await;
    tree(&ws, 4);
    let r = ws.dry_run().await;
    assert_eq!(
        r.plan.ops.iter().filter(|o| o.name() == "create").count(),
        4
    );
    assert_eq!(fake.requests(), 0);
    assert!(!ws.dir.path().join("state/kbsync.db").exists());
}

#[tokio::test]
async fn auth_failure_is_fatal_and_never_leaks_the_key() {
    let (fake, ws) = setup("disable").await;
    std::fs::write(ws.dir.path().join("api.key"), "dataset-WRONGKEY\n").unwrap();
    ws.write("a.md", "a");
    let r = ws.sync().await;
    let err = r.error.clone().unwrap();
    assert!(err.contains("401"), "{err}");
    assert!(!format!("{r:?}").contains("WRONGKEY"));
    assert_eq!(fake.requests(), 1);
    let db = std::fs::read(ws.dir.path().join("state/kbsync.db")).unwrap();
    assert!(!db.windows(8).any(|w| w == b"WRONGKEY"));
}

#[tokio::test]
async fn types_dify_does_not_take_are_skipped_before_any_upload() {
    // D8: a default Dify refuses json, xml, epub, pptx… on create with an
    // empty 400; they are reported locally and never sent.
    let (fake, ws) = setup("disable").await;
    ws.write("guide.md", "# Guide");
    ws.write("data/config.json", "{}");
    ws.write("slides.pptx", "binary");
    ws.write("LICENSE", "text");
    let r = ws.sync().await;
    assert!(!r.converged(), "skipped files are reported");
    let mut skipped: Vec<&str> = r.skipped.iter().map(|s| s.path.as_str()).collect();
    skipped.sort();
    assert_eq!(skipped, ["LICENSE", "data/config.json", "slides.pptx"]);
    let json = r
        .skipped
        .iter()
        .find(|s| s.path == "data/config.json")
        .unwrap();
    assert!(
        json.reason.contains(".json") && json.reason.contains("allowed_extensions"),
        "{}",
        json.reason
    );
    let w = fake.world();
    assert_eq!(w.count_since(0, "create-by-file"), 1);
    assert_eq!(w.docs.len(), 1);
}

#[tokio::test]
async fn text_types_dify_does_not_take_can_be_sent_as_text() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(
        &fake.base_url(),
        DATASET,
        "disable",
        r#"send_as_text = ["rst", "yaml"]"#,
        "source_path = { fact = \"path\" }\n",
    );
    ws.write("docs/intro.rst", "Intro\n=====\n");
    ws.write("deploy/app.yaml", "replicas: 3\n");
    ws.write("data.json", "{}");
    let r = ws.sync().await;
    let skipped: Vec<&str> = r.skipped.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(skipped, ["data.json"], "json is neither taken nor listed");
    {
        let w = fake.world();
        assert_eq!(w.docs.len(), 2);
        let rst = w
            .doc_by_name(&document_name("docs/intro.rst.txt"))
            .expect("named so that Dify takes it");
        assert_eq!(rst.content, b"Intro\n=====\n");
        assert_eq!(
            w.metadata_of(&document_name("docs/intro.rst.txt"))
                .get("source_path"),
            Some(&serde_json::json!("docs/intro.rst")),
            "the original path stays in the metadata"
        );
        assert!(w
            .doc_by_name(&document_name("deploy/app.yaml.txt"))
            .is_some());
    }
    // The names map back: a pass with the audit finds no drift.
    std::fs::remove_file(ws.path("data.json")).unwrap();
    let opts = kbsync::reconcile::RunOptions {
        audit: true,
        ..Default::default()
    };
    let r = kbsync::reconcile::run(&ws.config(), &[], opts)
        .await
        .unwrap()
        .remove(0);
    assert!(r.converged(), "{r:?}");
    assert!(r.audit.unwrap().findings.is_empty());
    assert_eq!(
        r.requests,
        2 + 1,
        "the owner mark looked for and made (the first audit), one list call"
    );
}

/// Metadata waits only for its own document's upload, not for every
/// upload of the pass: against a server where each upload takes time, a
/// metadata phase after all uploads would leave the upload slots idle.
#[tokio::test]
async fn metadata_batches_go_out_while_uploads_still_run() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(
        &fake.base_url(),
        DATASET,
        "disable",
        "batch_size = 10\nupload_concurrency = 2",
        "section = { path_segment = 0 }",
    );
    tree(&ws, 25);
    // The first upload is answered only once a metadata batch has gone out;
    // the other slot carries the remaining 24 meanwhile.
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    fake.world()
        .inject(None, "create-by-file", Fault::ApplyThenWait(go.clone()), 1);
    let (r, ()) = tokio::join!(ws.sync(), async {
        fake.wait_until(
            "a metadata batch while the first upload is unanswered",
            std::time::Duration::from_secs(30),
            |w| w.arrived.iter().any(|a| a.contains("documents/metadata")),
        )
        .await;
        go.notify_one();
    });
    assert!(r.converged(), "{r:?}");
    let o = r.outcome.as_ref().unwrap();
    assert_eq!((o.created, o.metadata), (25, 25));
    let w = fake.world();
    assert_eq!(w.count_since(0, "documents/metadata"), 3, "10 + 10 + 5");
    for d in w.docs.values() {
        assert!(w.metadata_of(&d.name).contains_key("section"), "{}", d.name);
    }
}

/// A file skipped (a type Dify does not take) keeps the job from
/// converging; `status` names it and why until it goes, and a scoped pass
/// elsewhere does not drop it from the list.
#[tokio::test]
async fn skipped_files_are_listed_by_status_until_they_go() {
    let (_fake, ws) = setup("disable").await;
    ws.write("a.md", "alpha");
    ws.write("tool.exe", "a program");
    ws.write("d/setup.exe", "another");
    let r = ws.sync().await;
    assert!(!r.converged(), "{r:?}");
    let skipped = || {
        let s = kbsync::status::read(&ws.config(), &[]).unwrap().unwrap();
        s[0].summary
            .skipped
            .iter()
            .map(|s| (s.key.clone(), s.reason.clone()))
            .collect::<Vec<_>>()
    };
    let listed = skipped();
    let keys: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["d/setup.exe", "tool.exe"]);
    assert!(
        listed[1].1.contains("does not take .exe files"),
        "{listed:?}"
    );
    let (code, out, err) = support::run_binary(
        std::process::Command::new(env!("CARGO_BIN_EXE_kbsync")),
        &ws.config_path,
        &["status"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 skipped"), "{out}");
    assert!(
        out.contains("skipped tool.exe: Dify does not take .exe files"),
        "{out}"
    );

    // A pass scoped to another file leaves the list as it is.
    ws.write("a.md", "alpha, again");
    let mut runner = kbsync::reconcile::Runner::open(ws.config(), Default::default()).unwrap();
    let scope = kbsync::source::Scope::of(["a.md"]).unwrap();
    assert!(runner.run_job("docs", &scope).await.unwrap().converged());
    drop(runner);
    assert_eq!(skipped().len(), 2);

    // Gone, or allowed: no longer listed.
    ws.remove("d/setup.exe");
    let r = ws.sync().await;
    assert!(!r.converged());
    assert_eq!(skipped().len(), 1);
    ws.remove("tool.exe");
    assert!(ws.sync().await.converged());
    assert!(skipped().is_empty());
}
