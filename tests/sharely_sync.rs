//! End-to-end against the fake Sharely API in metadata-only mode
//! (`upload = false`): a real folder, a real state file, metadata onto the
//! knowledge items the config maps.

mod support;

use serde_json::{json, Value as Json};
use support::fake_sharely::{FakeSharely, API_KEY, ORG, WORKSPACE};
use support::Workspace;

const A: &str = "11111111-0000-4000-8000-00000000000a";
const B: &str = "11111111-0000-4000-8000-00000000000b";
const C: &str = "11111111-0000-4000-8000-00000000000c";

fn config(base: &str, extra_job: &str) -> String {
    format!(
        r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "kb"
{extra_job}

[sync.folder]
root = "docs"

[sync.sharely]
base_url = "{base}"
workspace_id = "{WORKSPACE}"
organization_id = "{ORG}"
api_key_file = "sharely.key"
upload = false
retry_min_delay_ms = 1
retry_max_delay_secs = 1
max_retries = 3

[sync.sharely.knowledge]
"guide.md" = "{A}"
"team/faq.md" = "{B}"
"team/policy.md" = "{C}"

[sync.metadata]
department = {{ path_segment = 0 }}
source_path = {{ fact = "path" }}
owner = {{ front_matter = "owner" }}
pages = {{ front_matter = "pages", type = "number" }}
"#
    )
}

async fn setup() -> (FakeSharely, Workspace) {
    let fake = FakeSharely::start().await;
    {
        let mut w = fake.world();
        for id in [A, B, C] {
            w.add_item(id, "FILE", "COMPLETED");
        }
    }
    let ws = Workspace::raw(&config(&fake.base_url(), ""));
    std::fs::write(ws.dir.path().join("sharely.key"), API_KEY).unwrap();
    ws.write("guide.md", "---\nowner: ana\npages: 12\n---\nGuide");
    ws.write("team/faq.md", "---\nowner: bo\n---\nFAQ");
    ws.write("team/policy.md", "Policy");
    (fake, ws)
}

#[tokio::test]
async fn first_sync_sets_metadata_on_mapped_items_and_reports_the_rest() {
    let (fake, ws) = setup().await;
    ws.write("notes/unmapped.md", "not known to Sharely");
    let r = ws.sync().await;
    assert!(r.outcome.as_ref().unwrap().failures.is_empty(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().metadata, 3);
    // The unmapped file is named, not dropped.
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].path, "notes/unmapped.md");
    assert!(r.skipped[0].reason.contains("[sync.sharely.knowledge]"));
    assert!(!r.converged());
    {
        let w = fake.world();
        assert_eq!(w.tokens_issued(), 1, "the token is cached");
        let a = &w.items[A].metadata;
        assert_eq!(a["owner"], json!("ana"));
        assert_eq!(a["pages"], json!(12));
        assert_eq!(a["source_path"], json!("guide.md"));
        assert_eq!(w.items[B].metadata["department"], json!("team"));
        assert_eq!(w.items[C].metadata.get("owner"), None);
        // Sent as Sharely expects: type, metadata, no removal on first push.
        let put = w.log.iter().find(|l| l.method == "PUT").unwrap();
        assert_eq!(put.body["type"], json!("FILE"));
        assert!(put.body.get("removeMetadataKeys").is_none());
    }
    // Nothing changed: nothing sent.
    ws.remove("notes/unmapped.md");
    let before = fake.world().log.len();
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(fake.world().log.len(), before);
}

#[tokio::test]
async fn changes_are_sent_and_vanished_keys_removed_leaving_others_alone() {
    let (fake, ws) = setup().await;
    assert!(ws.sync().await.converged());
    // Someone set a key by hand in Sharely: not kbsync's to remove.
    fake.world()
        .items
        .get_mut(A)
        .unwrap()
        .metadata
        .insert("curated".into(), json!("yes"));
    // The owner line goes, the page count changes.
    ws.write("guide.md", "---\npages: 13\n---\nGuide, longer");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    let put = w.log.iter().rev().find(|l| l.method == "PUT").unwrap();
    assert_eq!(put.body["removeMetadataKeys"], json!(["owner"]));
    assert_eq!(w.count("PUT", "metadata"), 4, "one more call, for guide.md");
    let a = &w.items[A].metadata;
    assert_eq!(a.get("owner"), None);
    assert_eq!(a["pages"], json!(13));
    assert_eq!(a["curated"], json!("yes"));
}

#[tokio::test]
async fn failures_are_per_item_and_classified() {
    let fake = FakeSharely::start().await;
    {
        let mut w = fake.world();
        w.add_item(A, "FILE", "COMPLETED");
        // B is a URL item: its real type is read from Sharely and sent (a
        // job-wide FILE would get 422). C is still processing (403).
        w.add_item(B, "URL", "COMPLETED");
        w.add_item(C, "FILE", "PROCESSING");
    }
    let ws = Workspace::raw(&config(&fake.base_url(), ""));
    std::fs::write(ws.dir.path().join("sharely.key"), API_KEY).unwrap();
    ws.write("guide.md", "Guide");
    ws.write("team/faq.md", "FAQ");
    ws.write("team/policy.md", "Policy");
    // A 500 first: retried within the pass.
    fake.world().fail_next.push((500, 1));
    let r = ws.sync().await;
    let o = r.outcome.as_ref().unwrap();
    assert_eq!(o.metadata, 2);
    let mut failed: Vec<(String, Option<u16>)> = o
        .failures
        .iter()
        .map(|f| (f.key.clone(), f.error.status))
        .collect();
    failed.sort();
    assert_eq!(failed, [("team/policy.md".to_owned(), Some(403))]);
    let sent_to_b: Vec<Json> = fake
        .world()
        .log
        .iter()
        .filter(|l| l.method == "PUT" && l.path.contains(B) && l.status == 200)
        .map(|l| l.body.clone())
        .collect();
    assert_eq!(sent_to_b.len(), 1);
    assert_eq!(sent_to_b[0]["type"], json!("URL"));
    assert!(fake.world().items[A].metadata.contains_key("source_path"));
    // 403 (not COMPLETED yet) is retried: by the next one-shot pass at
    // once, and it goes through once the item is ready.
    fake.world().items.get_mut(C).unwrap().status = "COMPLETED".into();
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().metadata, 1);
    assert!(fake.world().items[C].metadata.contains_key("source_path"));
}

#[tokio::test]
async fn a_stated_type_that_does_not_match_is_parked() {
    let (fake, ws) = setup().await;
    fake.world().items.get_mut(B).unwrap().kind = "URL".into();
    std::fs::write(
        &ws.config_path,
        config(&fake.base_url(), "").replace(
            "upload = false",
            "upload = false\nknowledge_type = \"FILE\"",
        ),
    )
    .unwrap();
    let r = ws.sync().await;
    let failed: Vec<_> = r
        .outcome
        .as_ref()
        .unwrap()
        .failures
        .iter()
        .map(|f| (f.key.as_str(), f.error.status))
        .collect();
    assert_eq!(failed, [("team/faq.md", Some(422))]);
    // No look at the items' types: the config states it.
    assert_eq!(fake.world().count("GET", "knowledge/"), 0);
    // Parked: not sent again until something changes.
    let before = fake.world().count("PUT", B);
    let r = ws.sync().await;
    assert_eq!(r.held.len(), 1);
    assert_eq!(r.held[0].key, "team/faq.md");
    assert_eq!(fake.world().count("PUT", B), before);
}

#[tokio::test]
async fn an_expired_token_is_replaced_mid_run() {
    let (fake, ws) = setup().await;
    // The new target checked, one listing (the items' types), then a
    // metadata call per item: the token expires after the first of them.
    fake.world().token_lifetime_calls = 3;
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    assert_eq!(w.tokens_issued(), 2);
    assert!(w
        .items
        .values()
        .all(|i| i.metadata.contains_key("source_path")));
}

#[tokio::test]
async fn a_refused_api_key_stops_the_job_without_leaking_it() {
    let (fake, ws) = setup().await;
    std::fs::write(ws.dir.path().join("sharely.key"), "sk-sharely-WRONG").unwrap();
    let r = ws.sync().await;
    let err = r.error.clone().unwrap();
    assert!(err.contains("API key was refused"), "{err}");
    assert!(!err.contains("WRONG"));
    assert_eq!(fake.world().count("PUT", "metadata"), 0);
}

#[test]
fn the_config_refuses_what_sharely_cannot_do() {
    for (extra, needle) in [
        (
            "delete_policy = \"disable\"",
            "the sharely target cannot disable items (its API offers no such call); use delete_policy = \"keep\"",
        ),
        (
            "delete_policy = \"delete\"",
            "the sharely target cannot delete items",
        ),
    ] {
        let ws = Workspace::raw(&config("https://api.sharely.ai", extra));
        let err = kbsync::config::Config::load(&ws.config_path)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(needle), "{err}");
        assert!(err.contains("delete_policy"), "{err}");
    }
    let ws =
        Workspace::raw(&config("https://api.sharely.ai", "").replace("owner = {", "title = {"));
    let err = kbsync::config::Config::load(&ws.config_path)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("\"title\" is reserved by Sharely"), "{err}");
}
