//! Open WebUI as a target, against a fake that answers as a real 0.12.4
//! server did (tests/support/fake_openwebui.rs): uploads processed in the
//! background and linked when done, failures only visible by polling,
//! duplicate text refused, a knowledge base the key cannot write ignored
//! silently. With a real folder and a real state file.

mod support;

use serde_json::json;
use support::fake_openwebui::{FakeOpenWebUi, Fault, API_KEY, KNOWLEDGE, READ_ONLY};
use support::Workspace;

fn config(base: &str, knowledge: &str, policy: &str, metadata: &str) -> String {
    format!(
        r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "kb"
delete_policy = "{policy}"

[sync.folder]
root = "docs"

[sync.openwebui]
base_url = "{base}"
knowledge_id = "{knowledge}"
api_key_file = "owui.key"
retry_min_delay_ms = 1
retry_max_delay_secs = 1
max_retries = 3

[sync.metadata]
{metadata}
"#
    )
}

const MAPPING: &str = r#"owner = { front_matter = "owner" }
team = { value = "blue" }"#;

async fn setup(policy: &str) -> (FakeOpenWebUi, Workspace) {
    let fake = FakeOpenWebUi::start().await;
    let ws = Workspace::raw(&config(&fake.base_url(), KNOWLEDGE, policy, MAPPING));
    support::write_key(&ws.dir.path().join("owui.key"), API_KEY);
    (fake, ws)
}

/// The linked files' (path, content), sorted.
fn mirrored(fake: &FakeOpenWebUi) -> Vec<(String, String)> {
    let w = fake.world();
    let mut v: Vec<(String, String)> = w
        .linked()
        .iter()
        .map(|f| {
            (
                f.meta_data["kbsync_path"].as_str().unwrap().to_owned(),
                String::from_utf8_lossy(&f.content).into_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

fn sha256(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn files_go_up_with_their_path_and_metadata_and_unfit_ones_are_reported() {
    let (fake, ws) = setup("delete").await;
    ws.write("guides/intro.md", "---\nowner: ana\n---\nHello.\n");
    ws.write("notes.txt", "plain\n");
    ws.write("blank.md", "   \n\n  ");
    ws.write("logo.png", "not really a png");
    let r = ws.sync().await;
    assert!(!r.converged(), "a file the server cannot process fails");
    let outcome = r.outcome.as_ref().unwrap();
    assert_eq!(outcome.created, 2, "{outcome:?}");
    // The server answered 200 to the blank file, then failed it: the
    // reason is the server's, and no failed file is left behind.
    let failed: Vec<String> = outcome
        .failures
        .iter()
        .map(|f| format!("{} {}", f.key, f.error))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].starts_with("blank.md"), "{failed:?}");
    assert!(
        failed[0].contains("The content provided is empty"),
        "{failed:?}"
    );
    // The image is never sent: the server would fail it too.
    assert!(
        r.skipped.iter().any(|s| s.path.ends_with("logo.png")),
        "{:?}",
        r.skipped
    );
    {
        let w = fake.world();
        assert_eq!(w.files.len(), 2, "only the two linked files remain");
        let intro = &w.by_path("guides/intro.md")[0];
        assert_eq!(intro.filename, "intro.md", "the server keeps the base name");
        assert_eq!(intro.meta_data["owner"], json!("ana"));
        assert_eq!(intro.meta_data["team"], json!("blue"));
        assert_eq!(
            intro.file_hash,
            sha256("---\nowner: ana\n---\nHello.\n"),
            "the raw bytes' SHA-256, as the server's own sync compares"
        );
    }
    // The refused file is not sent again while it is unchanged.
    let before = fake.world().log.len();
    let r = ws.sync().await;
    assert_eq!(r.held.len(), 1, "{r:?}");
    assert_eq!(fake.world().log.len(), before, "no request at all");
}

#[tokio::test]
async fn an_edit_links_the_new_file_before_the_old_one_goes() {
    let (fake, ws) = setup("delete").await;
    ws.write("a.md", "---\nowner: ana\n---\nv1\n");
    assert!(ws.sync().await.converged());
    let old = fake.world().by_path("a.md")[0].id.clone();
    let from = fake.world().log.len();
    ws.write("a.md", "---\nowner: ana\n---\nv2\n");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().updated, 1);
    assert_eq!(
        mirrored(&fake),
        [("a.md".into(), "---\nowner: ana\n---\nv2\n".into())]
    );
    let w = fake.world();
    assert!(!w.files.contains_key(&old), "the old file is deleted");
    // The new file was uploaded naming the knowledge base, and linked,
    // before the old one was cleaned up.
    let calls: Vec<String> = w.log[from..]
        .iter()
        .map(|l| format!("{} {}", l.method, l.path))
        .collect();
    let upload = calls
        .iter()
        .position(|c| c == "POST /api/v1/files/")
        .unwrap();
    let cleanup = calls
        .iter()
        .position(|c| c.ends_with("/sync/cleanup"))
        .unwrap();
    let linked_check = calls
        .iter()
        .rposition(|c| c.starts_with("GET /api/v1/files/") && !c.ends_with("/status"))
        .unwrap();
    assert!(upload < linked_check && linked_check < cleanup, "{calls:?}");
    assert_eq!(w.by_path("a.md")[0].meta_data["owner"], json!("ana"));
}

#[tokio::test]
async fn new_metadata_swaps_in_a_new_upload_of_the_same_text() {
    let (fake, ws) = setup("delete").await;
    ws.write("a.md", "---\nowner: ana\n---\nsame text\n");
    assert!(ws.sync().await.converged());
    let old = fake.world().by_path("a.md")[0].id.clone();
    // Only the metadata changes: the server refuses a second link of the
    // same text, so the new file is processed unlinked and swapped in.
    std::fs::write(
        &ws.config_path,
        std::fs::read_to_string(&ws.config_path)
            .unwrap()
            .replace("\"blue\"", "\"green\""),
    )
    .unwrap();
    let from = fake.world().log.len();
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let outcome = r.outcome.as_ref().unwrap();
    assert_eq!((outcome.updated, outcome.metadata), (1, 1), "{outcome:?}");
    {
        let w = fake.world();
        let files = w.by_path("a.md");
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].meta_data["team"], json!("green"));
        assert_ne!(files[0].id, old);
        assert!(!w.files.contains_key(&old), "the old file is deleted");
        assert_eq!(w.files.len(), 1, "no failed upload is left behind");
        let links: Vec<&str> = w.log[from..]
            .iter()
            .filter(|l| l.path.contains("/file/"))
            .map(|l| l.path.rsplit('/').next().unwrap())
            .collect();
        assert_eq!(
            links,
            ["remove", "add"],
            "one unlink, one link: the only gap"
        );
    }
    let again = ws.sync().await;
    assert!(again.converged() && again.plan.ops.is_empty(), "{again:?}");
}

#[tokio::test]
async fn the_same_text_under_two_paths_is_refused_once_and_nothing_is_left_behind() {
    let (fake, ws) = setup("delete").await;
    ws.write("a.md", "twin\n");
    ws.write("b.md", "twin\n");
    let r = ws.sync().await;
    let outcome = r.outcome.as_ref().unwrap();
    assert_eq!(outcome.created, 1);
    assert_eq!(outcome.failures.len(), 1, "{outcome:?}");
    let f = &outcome.failures[0];
    assert_eq!(f.key, "b.md");
    assert!(
        f.error
            .message
            .contains("another file in the knowledge base has the same text"),
        "{}",
        f.error
    );
    assert_eq!(
        fake.world().files.len(),
        1,
        "the refused upload was deleted"
    );
    assert_eq!(mirrored(&fake).len(), 1);
}

#[tokio::test]
async fn a_knowledge_base_the_key_cannot_write_is_refused_before_any_upload() {
    let fake = FakeOpenWebUi::start().await;
    let ws = Workspace::raw(&config(&fake.base_url(), READ_ONLY, "delete", MAPPING));
    support::write_key(&ws.dir.path().join("owui.key"), API_KEY);
    ws.write("a.md", "text\n");
    let r = ws.sync().await;
    let error = r.error.clone().unwrap_or_default();
    assert!(error.contains("not write to it"), "{r:?}");
    assert!(error.contains("knowledge_id"), "names the setting: {error}");
    assert_eq!(fake.world().count("POST", "/api/v1/files"), 0);
}

#[tokio::test]
async fn an_embedding_backend_down_is_waited_for_not_parked() {
    let (fake, ws) = setup("delete").await;
    ws.write("a.md", "text\n");
    fake.world().uploads_fail_with = Some("[Errno 104] Connection reset by peer".into());
    let r = ws.sync().await;
    let outcome = r.outcome.as_ref().unwrap();
    assert_eq!(outcome.failures.len(), 1, "{outcome:?}");
    assert!(outcome.failures[0].error.is_transient(), "{outcome:?}");
    assert!(fake.world().files.is_empty(), "the failed file was deleted");
    fake.world().uploads_fail_with = None;
    // Transient: not parked, the next pass tries again and converges.
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(mirrored(&fake), [("a.md".into(), "text\n".into())]);
}

#[tokio::test]
async fn files_added_by_hand_are_never_touched() {
    let (fake, ws) = setup("delete").await;
    // A file uploaded in the web UI: it carries no kbsync path.
    let by_hand = {
        let mut w = fake.world();
        let id = w.add_file("a.md", "the user's own");
        w.files.get_mut(&id).unwrap().meta_data.clear();
        id
    };
    ws.write("a.md", "ours\n");
    ws.write("b.md", "also ours\n");
    ws.write("c.md", "ours too\n");
    assert!(ws.reconcile().await.converged());
    ws.remove("a.md");
    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    let audit = r.audit.as_ref().expect("the audit ran");
    assert!(audit.findings.is_empty(), "{audit:?}");
    let w = fake.world();
    assert!(w.files.contains_key(&by_hand), "the user's file stays");
    assert!(w.by_path("a.md").is_empty(), "ours is deleted");
    assert_eq!(w.files.len(), 3);
}

#[tokio::test]
async fn a_listing_of_thirty_a_page_is_read_to_its_end() {
    let (fake, ws) = setup("delete").await;
    // A key of a user that is not an admin: `limit` is ignored.
    fake.world().admin = false;
    for i in 0..65 {
        ws.write(&format!("f{i:02}.md"), &format!("file {i}\n"));
    }
    assert!(ws.sync().await.converged());
    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    let audit = r.audit.as_ref().expect("the audit ran");
    assert!(audit.findings.is_empty(), "{audit:?}");
    assert_eq!(fake.world().linked().len(), 65);
}

#[tokio::test]
async fn a_lost_upload_answer_is_adopted_not_uploaded_twice() {
    let (fake, ws) = setup("delete").await;
    ws.write("a.md", "text\n");
    fake.world().upload_faults = vec![Fault::ApplyThen500];
    let r = ws.sync().await;
    assert!(!r.converged());
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().adopted, 1, "{r:?}");
    assert_eq!(fake.world().files.len(), 1);
    assert_eq!(fake.world().count("POST", "/api/v1/files"), 1);
}

#[test]
fn policies_and_fields_the_server_cannot_carry_are_refused_at_load() {
    let cases = [
        (
            config("https://owui.example.com", KNOWLEDGE, "disable", MAPPING),
            "delete_policy",
        ),
        (
            config(
                "https://owui.example.com",
                KNOWLEDGE,
                "delete",
                "source = { fact = \"path\" }",
            ),
            "\"source\" cannot be carried to Open WebUI",
        ),
        (
            config("http://owui.example.com", KNOWLEDGE, "delete", MAPPING),
            "base_url",
        ),
    ];
    for (text, needle) in cases {
        let ws = Workspace::raw(&text);
        support::write_key(&ws.dir.path().join("owui.key"), API_KEY);
        let err = kbsync::config::Config::load(&ws.config_path)
            .err()
            .unwrap_or_else(|| panic!("loaded: {text}"))
            .to_string();
        assert!(err.contains(needle), "{err}");
        assert!(
            err.contains("kbsync.toml:"),
            "names the file and line: {err}"
        );
    }
}

/// The audit finds the file an unanswered upload made, with the metadata
/// it carried: kept as it is, not uploaded again to carry that metadata.
#[tokio::test]
async fn a_lost_upload_found_by_the_audit_keeps_the_metadata_it_carried() {
    let (fake, ws) = setup("delete").await;
    ws.write("a.md", "---\nowner: ana\n---\ntext\n");
    ws.write("b.md", "other text\n");
    fake.world().upload_faults = vec![Fault::ApplyThen500];
    assert!(!ws.sync().await.converged());
    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    let outcome = r.outcome.as_ref().unwrap();
    assert_eq!(outcome.created + outcome.updated, 0, "{outcome:?}");
    assert_eq!(fake.world().count("POST", "/api/v1/files"), 2);
    let w = fake.world();
    let a = &w.by_path("a.md")[0];
    assert_eq!(a.meta_data["owner"], json!("ana"));
    assert_eq!(w.files.len(), 2);
}

/// Under load a real server answered uploads 400 "Error uploading file"
/// with nothing stored, and completed others with their text lost: the
/// first is sent again at once, the second deleted and retried later.
#[tokio::test]
async fn a_busy_server_s_lost_uploads_and_lost_text_are_waits() {
    let (fake, ws) = setup("delete").await;
    ws.write("a.md", "alpha\n");
    ws.write("b.md", "beta\n");
    {
        let mut w = fake.world();
        w.busy_uploads = 1;
        w.lose_text = 1;
    }
    let r = ws.sync().await;
    let outcome = r.outcome.as_ref().unwrap();
    assert_eq!(outcome.created, 1, "{outcome:?}");
    assert_eq!(outcome.failures.len(), 1, "{outcome:?}");
    let lost = &outcome.failures[0].error;
    assert!(lost.is_transient(), "{lost}");
    assert!(lost.message.contains("kept no text"), "{lost}");
    assert_eq!(fake.world().files.len(), 1, "the emptied file was deleted");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(
        mirrored(&fake),
        [
            ("a.md".into(), "alpha\n".into()),
            ("b.md".into(), "beta\n".into())
        ]
    );
}
