//! `[sync.s3]` end to end: a bucket on a real SeaweedFS (behind a proxy
//! that counts and can break its answers) mirrored into the fake Dify.

mod support;

use kbsync::reconcile::JobReport;
use kbsync::sink::dify::document_name;
use support::fake_dify::{FakeDify, DATASET};
use support::s3_proxy::{Asked, S3Proxy};
use support::seaweed::{self, SeaweedFs};
use support::shown::{assert_never_shown_nor_stored, reconcile_and_status};
use support::Workspace;

const BUCKET: &str = "docs";

struct Job {
    dify: FakeDify,
    ws: Workspace,
    proxy: S3Proxy,
    op: opendal::Operator,
    server: SeaweedFs,
}

/// How the job signs its requests.
enum Auth {
    /// The server's key pair, from files.
    Keys,
    /// A secret the server does not know.
    WrongSecret,
    Anonymous,
}

impl Job {
    async fn start(auth: Auth, extra: &str) -> Job {
        let server = SeaweedFs::start();
        server.create_bucket(BUCKET).await;
        let proxy = S3Proxy::start(&server.endpoint).await;
        let dify = FakeDify::start().await;
        let credentials = match auth {
            Auth::Anonymous => "anonymous = true",
            _ => "access_key_id_file = \"s3.id\"\nsecret_access_key_file = \"s3.key\"",
        };
        let ws = Workspace::raw(&format!(
            r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "bucket"
delete_policy = "delete"

[sync.s3]
bucket = "{BUCKET}"
endpoint = "{}"
{credentials}
{extra}

[sync.dify]
base_url = "{}"
dataset_id = "{DATASET}"
api_key_file = "api.key"
retry_min_delay_ms = 1
retry_max_delay_secs = 1
"#,
            proxy.endpoint(),
            dify.base_url()
        ));
        let secret = match auth {
            Auth::WrongSecret => "notTheSecretTheServerKnows",
            _ => seaweed::SECRET_ACCESS_KEY,
        };
        support::write_key(&ws.dir.path().join("s3.id"), seaweed::ACCESS_KEY_ID);
        support::write_key(&ws.dir.path().join("s3.key"), secret);
        Job {
            dify,
            ws,
            proxy,
            op: server.operator(BUCKET),
            server,
        }
    }

    async fn put(&self, key: &str, body: &str) {
        self.op.write(key, body.to_owned()).await.unwrap();
    }

    /// Writes `body` over `key` until the server stamps it with another
    /// time than before: the server keeps whole seconds, so a rewrite in
    /// the same second would look untouched (the same ETag, size and time).
    async fn put_again_with_a_new_stamp(&self, key: &str, body: &str) {
        let before = self.op.stat(key).await.unwrap().last_modified();
        loop {
            self.put(key, body).await;
            if self.op.stat(key).await.unwrap().last_modified() != before {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn sync(&self) -> JobReport {
        self.ws.sync().await
    }

    fn doc(&self, key: &str) -> Option<String> {
        let w = self.dify.world();
        let d = w.doc_by_name(&document_name(key))?;
        Some(String::from_utf8_lossy(&d.content).into_owned())
    }

    /// (listings, GETs, HEADs, other) the proxy saw since `from`.
    fn asked_since(&self, from: usize) -> [usize; 4] {
        let w = self.proxy.world();
        let mut n = [0; 4];
        for (a, _) in &w.log[from..] {
            n[match a {
                Asked::List => 0,
                Asked::Get => 1,
                Asked::Head => 2,
                Asked::Other => 3,
            }] += 1;
        }
        n
    }

    fn asked(&self) -> usize {
        self.proxy.world().log.len()
    }
}

/// A first sync mirrors every object below the prefix; a poll over an
/// unchanged bucket costs one listing request and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_then_a_no_op_poll_costs_only_the_listing() {
    let job = Job::start(Auth::Keys, "prefix = \"team/\"").await;
    job.put("team/a.md", "# A\n").await;
    job.put("team/guides/b.txt", "b\n").await;
    job.put("other/c.md", "outside the prefix\n").await;
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().created, 2);
    assert_eq!(job.doc("a.md").as_deref(), Some("# A\n"));
    assert_eq!(job.doc("guides/b.txt").as_deref(), Some("b\n"));
    assert_eq!(job.dify.world().docs.len(), 2);

    let (asked, sent) = (job.asked(), job.dify.requests());
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    assert!(r.plan.ops.is_empty(), "{:?}", r.plan.ops);
    assert_eq!((r.hashed_files, r.unchanged), (0, 2), "settled: skipped");
    assert_eq!(job.asked_since(asked), [1, 0, 0, 0], "one listing page");
    assert_eq!(job.dify.requests(), sent, "nothing upstream");
}

/// A moved stamp costs one GET: other bytes are one update, the same
/// bytes written again are none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_by_stamp_and_the_same_bytes_again() {
    let job = Job::start(Auth::Keys, "").await;
    job.put("a.md", "one\n").await;
    job.put("b.md", "kept\n").await;
    assert!(job.sync().await.converged());

    job.put("a.md", "two\n").await;
    let asked = job.asked();
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().updated, 1);
    assert_eq!(job.asked_since(asked)[1], 1, "one GET");
    assert_eq!(job.doc("a.md").as_deref(), Some("two\n"));

    job.put_again_with_a_new_stamp("b.md", "kept\n").await;
    let (asked, sent) = (job.asked(), job.dify.requests());
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.hashed_files, 1, "the rewritten object is read");
    assert!(r.plan.ops.is_empty(), "{:?}", r.plan.ops);
    assert_eq!(job.asked_since(asked)[1], 1, "one GET");
    assert_eq!(job.dify.requests(), sent, "same bytes: nothing upstream");
}

/// A bucket larger than a slice is read, pushed and settled a slice of
/// keys at a time (here 3: one metadata batch a slice), each object read
/// once; the next poll skips every one as settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_larger_than_a_slice_is_read_in_slices() {
    let mapping = "[sync.metadata]\nkey = { fact = \"path\" }\n";
    let job = Job::start(Auth::Keys, mapping).await;
    for i in 0..10 {
        job.put(&format!("n{i:02}.md"), &format!("{i}\n")).await;
    }
    let (asked, mark) = (job.asked(), job.dify.requests());
    let r = job.ws.sync_in_slices(3).await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().created, 10);
    assert_eq!(job.asked_since(asked), [1, 10, 0, 0], "one GET an object");
    {
        let w = job.dify.world();
        // 3 + 3 + 3 + 1.
        assert_eq!(w.count_since(mark, "documents/metadata"), 4);
        assert!(w.duplicate_names().is_empty(), "{:?}", w.duplicate_names());
    }
    for i in 0..10 {
        assert_eq!(job.doc(&format!("n{i:02}.md")), Some(format!("{i}\n")));
    }

    let (asked, sent) = (job.asked(), job.dify.requests());
    let r = job.ws.sync_in_slices(3).await;
    assert!(r.converged() && r.plan.ops.is_empty(), "{r:?}");
    assert_eq!((r.hashed_files, r.unchanged), (0, 10));
    assert_eq!(job.asked_since(asked), [1, 0, 0, 0], "the listing only");
    assert_eq!(job.dify.requests(), sent, "nothing upstream");
}

/// A deleted object's document is retired; an emptied bucket goes
/// through the delete guard like an emptied folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_objects_are_retired_and_an_emptied_bucket_is_guarded() {
    let job = Job::start(Auth::Keys, "").await;
    for i in 0..12 {
        job.put(&format!("n{i:02}.md"), &format!("{i}\n")).await;
    }
    assert!(job.sync().await.converged());

    job.op.delete("n00.md").await.unwrap();
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().deleted, 1);
    assert_eq!(job.doc("n00.md"), None);

    job.op.delete_with("/").recursive(true).await.unwrap();
    let r = job.sync().await;
    assert!(r.refused.is_some(), "{r:?}");
    assert_eq!(job.dify.world().docs.len(), 11, "nothing retired");
}

/// A listing that fails part-way protects every record: the objects it
/// did not reach are not taken for deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_fails_part_way_protects_everything() {
    let job = Job::start(Auth::Anonymous, "").await;
    for key in ["a.md", "b.md", "c.md", "d.md", "e.md"] {
        job.put(key, key).await;
    }
    job.proxy.world().page_size = Some(2);
    let asked = job.asked();
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(job.asked_since(asked)[0], 3, "pages of two keys");
    assert_eq!(job.dify.world().docs.len(), 5);

    job.proxy.world().fail_lists_after = Some(job.proxy.count(Asked::List) + 1);
    let r = job.sync().await;
    assert!(!r.converged(), "half a listing is not a mirror");
    assert!(r.plan.ops.is_empty(), "{:?}", r.plan.ops);
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    assert!(
        r.skipped[0].reason.contains("stopped part-way"),
        "{:?}",
        r.skipped
    );
    assert_eq!(job.dify.world().docs.len(), 5, "nothing retired");
}

/// A bucket that is gone, or credentials the server refuses, make the
/// job unavailable, as a missing folder root does: nothing is read or
/// retired, and the message names the setting, file and line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_makes_the_job_unavailable_and_names_the_setting() {
    let job = Job::start(Auth::Keys, "").await;
    job.put("a.md", "a\n").await;
    assert!(job.sync().await.converged());
    job.server.delete_bucket(BUCKET).await;
    let asked = job.asked();
    let r = job.sync().await;
    assert!(!r.converged());
    assert!(r.unscanned, "{r:?}");
    assert!(r.skipped.is_empty(), "no failed items: {:?}", r.skipped);
    assert!(r.plan.ops.is_empty(), "{:?}", r.plan.ops);
    let why = r.error.as_deref().unwrap_or_default();
    assert!(why.contains("was not found"), "{why}");
    assert!(why.contains("kbsync.toml:10:"), "{why}");
    assert!(why.contains("`sync[0].s3.bucket`"), "{why}");
    assert!(
        why.contains("nothing was scanned, nothing retired"),
        "{why}"
    );
    assert_eq!(job.asked_since(asked), [1, 0, 0, 0], "the listing only");
    assert_eq!(job.dify.world().docs.len(), 1, "nothing retired");
    // A dry run says so in its exit code too, not only in its text.
    let (code, out, err) = support::run_binary(
        std::process::Command::new(env!("CARGO_BIN_EXE_kbsync")),
        &job.ws.config_path,
        &["--dry-run"],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("was not found"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_make_the_job_unavailable_and_name_the_setting_never_the_key() {
    let job = Job::start(Auth::WrongSecret, "").await;
    job.put("a.md", "a\n").await;
    let r = job.sync().await;
    assert!(!r.converged());
    assert!(r.unscanned && r.skipped.is_empty(), "{r:?}");
    assert!(r.plan.ops.is_empty(), "{:?}", r.plan.ops);
    let why = r.error.as_deref().unwrap_or_default();
    assert!(why.contains("refused (403"), "{why}");
    assert!(why.contains("`sync[0].s3.access_key_id_file`"), "{why}");
    // The server refused the secret (SignatureDoesNotMatch): its setting
    // is named too, not only the key id's.
    assert!(why.contains("`sync[0].s3.secret_access_key_file`"), "{why}");
    let everything = format!("{r:?}");
    let state = std::fs::read(job.ws.dir.path().join("state/kbsync.db")).unwrap();
    for secret in [seaweed::ACCESS_KEY_ID, "notTheSecretTheServerKnows"] {
        assert!(!everything.contains(secret), "{secret} in the report");
        assert!(
            !String::from_utf8_lossy(&state).contains(secret),
            "{secret} in the state file"
        );
    }
}

/// A server (or a proxy in front of it) that repeats the request's
/// credentials in its error answers, as sent, JSON-escaped or
/// URL-encoded: neither the key id nor the secret is printed, logged,
/// shown by `status` nor stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_echoed_in_error_answers_are_never_shown_nor_stored() {
    let job = Job::start(Auth::Keys, "").await;
    job.put("a.md", "a\n").await;
    job.proxy.world().echo = Some((Asked::List, 500));
    let texts = reconcile_and_status(&job.ws).await;
    assert_never_shown_nor_stored(
        &texts,
        &[seaweed::ACCESS_KEY_ID, seaweed::SECRET_ACCESS_KEY],
    );
}

/// A listing that never ends (every page truncated, its continuation
/// token coming round again) is stopped at the first token it was given
/// before: nothing is retired and the report says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_never_ends_is_stopped_and_protects_everything() {
    let job = Job::start(Auth::Keys, "").await;
    job.put("a.md", "a\n").await;
    job.put("b.md", "b\n").await;
    assert!(job.sync().await.converged());
    job.proxy.world().endless = true;
    let asked = job.asked();
    let r = tokio::time::timeout(std::time::Duration::from_secs(120), job.sync())
        .await
        .expect("the listing is stopped");
    assert!(!r.converged());
    assert!(r.plan.ops.is_empty(), "{:?}", r.plan.ops);
    let why = &r.skipped[0].reason;
    assert!(why.contains("does not end"), "{why}");
    assert!(why.contains("nothing is taken for deleted"), "{why}");
    assert_eq!(
        job.asked_since(asked),
        [3, 0, 0, 0],
        "no page asked for twice"
    );
    assert_eq!(job.dify.world().docs.len(), 2, "nothing retired");
}

/// An object key respelled between NFC and NFD (as macOS clients upload
/// it) is the same document: its record moves to the new key, and the
/// change is one update, never an upload beside a retirement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_respelled_nfd_is_the_same_document() {
    const COMPOSED: &str = "caf\u{e9}.md";
    const DECOMPOSED: &str = "cafe\u{301}.md";
    let job = Job::start(Auth::Keys, "").await;
    job.put(COMPOSED, "menu\n").await;
    job.put("plain.md", "plain\n").await;
    assert!(job.sync().await.converged());
    let id = job.dify.world().doc_by_name(COMPOSED).unwrap().id.clone();

    job.op.delete(COMPOSED).await.unwrap();
    job.put(DECOMPOSED, "menu, renamed on a Mac\n").await;
    let listed: Vec<String> = job
        .op
        .list("")
        .await
        .unwrap()
        .iter()
        .map(|e| e.path().to_owned())
        .collect();
    assert_eq!(
        listed,
        [DECOMPOSED, "plain.md"],
        "the server keeps the new spelling"
    );
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    let done = r.outcome.as_ref().unwrap();
    assert_eq!(
        (done.created, done.deleted, done.updated),
        (0, 0, 1),
        "{done:?}"
    );
    let w = job.dify.world();
    assert_eq!(w.docs.len(), 2);
    let doc = w.doc_by_name(COMPOSED).unwrap();
    assert_eq!(
        (doc.id.as_str(), doc.content.as_slice()),
        (id.as_str(), &b"menu, renamed on a Mac\n"[..])
    );
}

/// An object's facts and user metadata can be mapped, and a Markdown
/// object's front matter read, as a file's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_facts_user_metadata_and_front_matter_are_mapped() {
    let mapping = r#"
[sync.metadata]
key = { fact = "path" }
size = { fact = "size" }
modified = { fact = "modified" }
etag = { fact = "etag" }
content_type = { fact = "content_type" }
bucket = { fact = "bucket" }
author = { object_metadata = "author" }
title = { front_matter = "title" }
"#;
    let job = Job::start(Auth::Keys, mapping).await;
    let body = "---\ntitle: Leave policy\n---\nTwenty days.\n";
    job.op
        .write_with("hr/leave.md", body.to_owned())
        .content_type("text/markdown")
        .user_metadata([("Author".to_owned(), "Ann".to_owned())])
        .await
        .unwrap();
    let listed = job.op.stat("hr/leave.md").await.unwrap();
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    let meta = job.dify.world().metadata_of(&document_name("hr/leave.md"));
    let etag = listed.etag().unwrap().trim_matches('"').to_owned();
    let modified = listed.last_modified().unwrap().into_inner().as_second();
    let expected = [
        ("key", serde_json::json!("hr/leave.md")),
        ("size", serde_json::json!(body.len())),
        ("modified", serde_json::json!(modified)),
        ("etag", serde_json::json!(etag)),
        ("content_type", serde_json::json!("text/markdown")),
        ("bucket", serde_json::json!(BUCKET)),
        ("author", serde_json::json!("Ann")),
        ("title", serde_json::json!("Leave policy")),
    ];
    for (name, value) in expected {
        assert_eq!(meta.get(name), Some(&value), "{name} in {meta:?}");
    }
    // Unmoved, the object is not read again and its facts stand.
    let asked = job.asked();
    let r = job.sync().await;
    assert!(r.converged() && r.plan.ops.is_empty(), "{r:?}");
    assert_eq!(job.asked_since(asked)[1], 0, "no GET");
}

/// A library's debug line must not carry a credential either: the S3
/// signing library prints its credential provider, secret included, at
/// debug level. Every log format, at the most verbose level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_verbose_log_never_shows_the_secret() {
    let job = Job::start(Auth::Keys, "").await;
    job.put("a.md", "a\n").await;
    for format in ["plain", "json"] {
        let (_, out, err) = support::run_binary(
            std::process::Command::new(env!("CARGO_BIN_EXE_kbsync")),
            &job.ws.config_path,
            &["--dry-run", "--log", "trace", "--log-format", format],
        );
        assert!(
            err.contains("reqsign"),
            "the signing library logged nothing at trace: {err}"
        );
        for secret in [seaweed::SECRET_ACCESS_KEY, seaweed::ACCESS_KEY_ID] {
            assert!(
                !out.contains(secret) && !err.contains(secret),
                "{format}: {secret} in the log"
            );
        }
    }
}
