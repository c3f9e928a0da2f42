//! Sharely as a content target (`upload`, the default): files become FILE
//! items titled by their path, mapped back by listing, replaced when they
//! change, deleted under `delete_policy = "delete"`; the access token is
//! renewed before it runs out. Against the fake Sharely API, with a real
//! folder and a real state file.

mod support;

use serde_json::json;
use support::fake_sharely::{FakeSharely, Fault, API_KEY, ORG, WORKSPACE};
use support::Workspace;

const MAPPED: &str = "11111111-0000-4000-8000-00000000000a";

fn config(base: &str, policy: &str, extra: &str) -> String {
    format!(
        r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "kb"
delete_policy = "{policy}"

[sync.folder]
root = "docs"

[sync.sharely]
base_url = "{base}"
workspace_id = "{WORKSPACE}"
organization_id = "{ORG}"
api_key_file = "sharely.key"
retry_min_delay_ms = 1
retry_max_delay_secs = 1
max_retries = 3
{extra}

[sync.metadata]
source_path = {{ fact = "path" }}
owner = {{ front_matter = "owner" }}
"#
    )
}

async fn setup(policy: &str, extra: &str) -> (FakeSharely, Workspace) {
    let fake = FakeSharely::start().await;
    let ws = Workspace::raw(&config(&fake.base_url(), policy, extra));
    support::write_key(&ws.dir.path().join("sharely.key"), API_KEY);
    (fake, ws)
}

fn content_of(fake: &FakeSharely, title: &str) -> Vec<String> {
    fake.world()
        .titled(title)
        .iter()
        .map(|(_, i)| String::from_utf8(i.content.clone().unwrap_or_default()).unwrap())
        .collect()
}

#[tokio::test]
async fn a_changed_file_replaces_its_item_and_keeps_its_metadata() {
    let (fake, ws) = setup("keep", "").await;
    ws.write("guide.md", "---\nowner: ana\n---\nv1");
    assert!(ws.sync().await.converged());
    let first = fake.world().titled("guide.md")[0].0.clone();

    // Same front matter: a content-only change.
    ws.write("guide.md", "---\nowner: ana\n---\nv2");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().updated, 1);
    let w = fake.world();
    let items = w.titled("guide.md");
    assert_eq!(items.len(), 1, "the old item is deleted");
    let (id, item) = items[0];
    assert_ne!(*id, first, "Sharely cannot replace a file: a new item");
    assert_eq!(
        item.content.as_deref(),
        Some(&b"---\nowner: ana\n---\nv2"[..])
    );
    // The new item starts bare: what the old one had is set again.
    assert_eq!(item.metadata.get("owner"), Some(&json!("ana")));
    assert_eq!(item.metadata.get("source_path"), Some(&json!("guide.md")));
}

#[tokio::test]
async fn items_already_titled_by_path_are_taken_over_without_duplicates() {
    let (fake, ws) = setup("keep", "").await;
    // A lost state file, or an upload made by hand.
    let old = fake.world().add_file("guide.md", b"an old copy");
    ws.write("guide.md", "the file");
    ws.write("new.md", "new");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let o = r.outcome.as_ref().unwrap();
    assert_eq!((o.adopted, o.created), (1, 1));
    assert_eq!(content_of(&fake, "guide.md"), ["the file"]);
    assert!(!fake.world().items.contains_key(&old));
    assert!(fake.world().duplicate_titles().is_empty());
    // The new target checked (one item), then one listing the first time
    // the job creates; none after.
    assert_eq!(fake.world().count("GET", "/knowledge"), 2);
    ws.write("later.md", "later");
    assert!(ws.sync().await.converged());
    assert_eq!(fake.world().count("GET", "/knowledge"), 2);
}

#[tokio::test]
async fn an_item_mapped_in_the_config_is_never_uploaded_over_or_deleted() {
    let (fake, ws) = setup(
        "delete",
        &format!("\n[sync.sharely.knowledge]\n\"hand.md\" = \"{MAPPED}\"\n"),
    )
    .await;
    fake.world().add_item(MAPPED, "URL", "COMPLETED");
    ws.write("hand.md", "---\nowner: bo\n---\nnotes about a web page");
    ws.write("file.md", "a file");
    // Files that stay, so that two going is under the delete guard's 50%.
    for k in ["s1.md", "s2.md", "s3.md"] {
        ws.write(k, k);
    }
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    {
        let w = fake.world();
        let hand = &w.items[MAPPED];
        assert_eq!(hand.content, None, "nothing uploaded over a mapped item");
        assert_eq!(hand.metadata.get("owner"), Some(&json!("bo")));
        assert_eq!(w.titled("hand.md").len(), 0);
        assert_eq!(w.titled("file.md").len(), 1);
        assert_eq!(w.items.len(), 5);
    }
    ws.remove("hand.md");
    ws.remove("file.md");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert!(
        fake.world().items.contains_key(MAPPED),
        "the user's item stays"
    );
    assert!(
        fake.world().titled("file.md").is_empty(),
        "kbsync's item goes"
    );
}

#[tokio::test]
async fn a_replaced_item_that_cannot_be_deleted_is_sorted_out_next_pass() {
    let (fake, ws) = setup("keep", "").await;
    ws.write("guide.md", "v1");
    assert!(ws.sync().await.converged());
    ws.write("guide.md", "v2");
    fake.world().delete_faults = vec![Fault::Refuse(503); 4];
    let r = ws.sync().await;
    assert!(
        !r.converged(),
        "a pass that left two items is not converged"
    );
    assert_eq!(fake.world().titled("guide.md").len(), 2);
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(content_of(&fake, "guide.md"), ["v2"]);
}

#[tokio::test]
async fn an_upload_whose_answer_was_lost_leaves_no_duplicate() {
    let (fake, ws) = setup("keep", "").await;
    ws.write("guide.md", "v1");
    fake.world().upload_faults = vec![Fault::ApplyThen500];
    let r = ws.sync().await;
    assert!(!r.converged());
    // Not sent again blind within the pass: the item may exist.
    assert_eq!(fake.world().count("POST", "/knowledge/file"), 1);
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(content_of(&fake, "guide.md"), ["v1"]);
}

#[tokio::test]
async fn metadata_waits_while_a_new_item_is_processing() {
    let (fake, ws) = setup("keep", "").await;
    fake.world().processing_calls = 2;
    ws.write("guide.md", "---\nowner: ana\n---\nv1");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    assert_eq!(
        w.titled("guide.md")[0].1.metadata.get("owner"),
        Some(&json!("ana"))
    );
    assert_eq!(w.count("PUT", "/metadata"), 3, "two 403s, then set");
}

#[tokio::test]
async fn a_file_type_sharely_refuses_is_skipped_before_upload() {
    let (fake, ws) = setup("keep", "").await;
    ws.write("tool.exe", "MZ");
    ws.write("page.html", "<p>hi</p>");
    ws.write("ok.md", "fine");
    let r = ws.sync().await;
    let mut skipped: Vec<&str> = r.skipped.iter().map(|s| s.path.as_str()).collect();
    skipped.sort();
    assert_eq!(skipped, ["page.html", "tool.exe"]);
    assert!(
        r.skipped[0].reason.contains("allowed_extensions"),
        "{:?}",
        r.skipped
    );
    assert_eq!(fake.world().count("POST", "/knowledge/file"), 1);
    // Widened by the config.
    std::fs::write(
        &ws.config_path,
        config(
            &fake.base_url(),
            "keep",
            "allowed_extensions = [\"md\", \"html\"]",
        ),
    )
    .unwrap();
    let r = ws.sync().await;
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    assert_eq!(content_of(&fake, "page.html"), ["<p>hi</p>"]);
}

#[tokio::test]
async fn a_token_near_its_end_is_renewed_before_use() {
    // Sharely's tokens last a day: one serves the whole pass.
    let (fake, ws) = setup("keep", "").await;
    ws.write("a.md", "a");
    ws.write("b.md", "b");
    assert!(ws.sync().await.converged());
    assert_eq!(fake.world().tokens_issued(), 1);

    // Tokens that expire within the renewal margin are never used twice,
    // so no call is made with one that runs out on the way.
    let (fake, ws) = setup("keep", "").await;
    fake.world().token_lifetime_secs = 120;
    ws.write("a.md", "a");
    ws.write("b.md", "b");
    assert!(ws.sync().await.converged());
    let w = fake.world();
    let calls = w.log.iter().filter(|l| l.path.starts_with("/v1/")).count();
    assert_eq!(w.tokens_issued(), calls);
    assert_eq!(w.expired_refusals, 0);
    assert_eq!(w.count("POST", "generate-access-key-token"), calls);
}

#[tokio::test]
async fn the_audit_retires_duplicates_and_restores_deleted_items() {
    let (fake, ws) = setup("delete", "").await;
    ws.write("a.md", "a");
    ws.write("b.md", "b");
    assert!(ws.reconcile().await.converged());
    {
        let mut w = fake.world();
        w.add_file("a.md", b"a copy made by hand");
        let b = w.titled("b.md")[0].0.clone();
        w.items.remove(&b);
    }
    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    let audit = r.audit.as_ref().unwrap();
    assert_eq!(audit.retired, 1);
    assert_eq!(content_of(&fake, "a.md"), ["a"]);
    assert_eq!(content_of(&fake, "b.md"), ["b"]);
}

#[tokio::test]
async fn a_listing_that_never_ends_is_stopped_and_nothing_acts_on_it() {
    let (fake, ws) = setup("delete", "").await;
    ws.write("a.md", "a");
    ws.write("b.md", "b");
    assert!(ws.reconcile().await.converged());
    fake.world().add_file("a.md", b"a copy made by hand");
    // Full pages of made-up items, and a total of 10^12.
    fake.world().endless_listing = true;
    let lists = || {
        let w = fake.world();
        let listing = |l: &&support::fake_sharely::Logged| l.path.ends_with("/knowledge");
        w.log.iter().filter(listing).count()
    };
    let before = lists();
    let r = tokio::time::timeout(std::time::Duration::from_secs(20), ws.reconcile())
        .await
        .unwrap_or_else(|_| panic!("the pass did not end within 20 s: {} listings", lists()));
    let err = r.audit_error.as_deref().expect("the audit says why not");
    assert!(
        err.contains(
            "Sharely's listing (list knowledge) does not end: it reports 1000000000000 records"
        ),
        "{err}"
    );
    assert!(!r.converged(), "{r:?}");
    assert_eq!(lists() - before, 1);
    fake.world().endless_listing = false;
    assert_eq!(content_of(&fake, "a.md").len(), 2, "the copy was retired");
}

#[tokio::test]
async fn an_audited_pass_after_a_lost_upload_answer_lists_the_workspace_once() {
    // The audit's listing finds the item the unanswered upload made and
    // adopts it; the uploads do not list the same items again.
    let (fake, ws) = setup("keep", "").await;
    ws.write("guide.md", "v1");
    fake.world().upload_faults = vec![Fault::ApplyThen500];
    assert!(!ws.sync().await.converged());
    let listings = || {
        let w = fake.world();
        w.log
            .iter()
            .filter(|l| l.method == "GET" && l.path.ends_with("/knowledge"))
            .count()
    };
    let before = listings();
    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(listings() - before, 1, "the audit's listing alone");
    assert_eq!(content_of(&fake, "guide.md"), ["v1"]);
    assert_eq!(
        fake.world().count("POST", "/knowledge/file"),
        1,
        "not sent again"
    );
}
