//! End-to-end against the fake PAI dataset-file-metadata API, which checks
//! every request's V3 signature.

mod support;

use kbsync::config::DeletePolicy;
use kbsync::sink::{Listed, SinkError};
use serde_json::json;
use support::fake_pai::{FakePai, DATASET, KEY_ID, SECRET, WORKSPACE};
use support::Workspace;

const BASE: &str = "oss://kb-bucket/handbook/";

fn config(endpoint: &str) -> String {
    format!(
        r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "pai"
delete_policy = "delete"

[sync.folder]
root = "docs"

[sync.pai]
endpoint = "{endpoint}"
workspace_id = "{WORKSPACE}"
dataset_id = "{DATASET}"
uri_base = "{BASE}"
access_key_id_env = "KBSYNC_TEST_PAI_ID"
access_key_secret_file = "pai.secret"
batch_size = 2
retry_min_delay_ms = 1
retry_max_delay_secs = 1
max_retries = 3

[sync.metadata]
section = {{ path_segment = 0 }}
source_path = {{ fact = "path" }}
owner = {{ front_matter = "owner" }}
"#
    )
}

async fn setup() -> (FakePai, Workspace) {
    // The key id comes from the environment, as it would in production.
    std::env::set_var("KBSYNC_TEST_PAI_ID", KEY_ID);
    let fake = FakePai::start().await;
    let ws = Workspace::raw(&config(&fake.endpoint()));
    std::fs::write(ws.dir.path().join("pai.secret"), SECRET).unwrap();
    ws.write("a/one.md", "---\nowner: ana\n---\nOne");
    ws.write("a/two.md", "Two");
    ws.write("b/three.md", "Three");
    (fake, ws)
}

fn attrs(fake: &FakePai, key: &str) -> serde_json::Value {
    let w = fake.world();
    let r = w.by_uri(&format!("{BASE}{key}"));
    assert_eq!(r.len(), 1, "{key}: {} records", r.len());
    r[0].attributes()
}

#[tokio::test]
async fn first_sync_adopts_existing_records_creates_the_rest_then_rests() {
    let (fake, ws) = setup().await;
    // The dataset already knows two of the files.
    fake.world().add_record(&format!("{BASE}a/two.md"));
    fake.world().add_record(&format!("{BASE}b/three.md"));
    // Small pages: the listing must follow NextToken.
    fake.world().page_size_cap = 1;
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().created, 1);
    assert_eq!(attrs(&fake, "a/one.md")["owner"], json!("ana"));
    assert_eq!(attrs(&fake, "a/two.md")["source_path"], json!("a/two.md"));
    assert_eq!(attrs(&fake, "b/three.md")["section"], json!("b"));
    {
        let w = fake.world();
        assert_eq!(w.records.len(), 3);
        assert_eq!(
            w.count("ListDatasetFileMetas"),
            1 + 2,
            "the new target checked, then two pages of one"
        );
        assert_eq!(w.count("UpdateDatasetFileMetas"), 1);
        assert_eq!(w.count("CreateDatasetFileMetas"), 1);
        assert!(w.log.iter().all(|l| l.status == 200), "signatures accepted");
        // Created with the fields the SDK marks required; the fingerprint
        // follows the content on updates too.
        let one = w.by_uri(&format!("{BASE}a/one.md"))[0];
        let content = std::fs::read(ws.path("a/one.md")).unwrap();
        let hash = kbsync::source::folder::hash_bytes(&content);
        assert_eq!(one.fingerprint, format!("blake3:{hash}"));
        let two = w.by_uri(&format!("{BASE}a/two.md"))[0];
        assert!(two.fingerprint.starts_with("blake3:"), "{two:?}");
    }
    let before = fake.world().log.len();
    assert!(ws.sync().await.converged());
    assert_eq!(fake.world().log.len(), before, "no-op pass: no request");
}

#[tokio::test]
async fn metadata_changes_go_out_in_batches_and_removed_keys_disappear() {
    let (fake, ws) = setup().await;
    assert!(ws.sync().await.converged());
    ws.write("a/one.md", "---\nowner: bo\n---\nOne");
    ws.write("a/two.md", "---\nowner: cy\n---\nTwo");
    ws.write("b/three.md", "---\nowner: di\n---\nThree");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(
        fake.world().count("UpdateDatasetFileMetas"),
        2,
        "3 records, batches of 2"
    );
    assert_eq!(attrs(&fake, "b/three.md")["owner"], json!("di"));
    // MetaAttributes is replaced: a field no longer mapped is gone.
    ws.write("a/one.md", "One, without front matter");
    assert!(ws.sync().await.converged());
    assert_eq!(attrs(&fake, "a/one.md").get("owner"), None);
}

#[tokio::test]
async fn a_record_removed_upstream_fails_alone_and_is_recreated() {
    let (fake, ws) = setup().await;
    assert!(ws.sync().await.converged());
    // Someone deletes one record; then all three files change.
    {
        let mut w = fake.world();
        let id = w
            .records
            .iter()
            .find(|(_, r)| r.uri.ends_with("a/two.md"))
            .map(|(id, _)| id.clone())
            .unwrap();
        w.records.remove(&id);
    }
    for (k, o) in [("a/one.md", "x"), ("a/two.md", "y"), ("b/three.md", "z")] {
        ws.write(k, &format!("---\nowner: {o}\n---\n"));
    }
    let r = ws.sync().await;
    let o = r.outcome.as_ref().unwrap();
    assert_eq!(o.metadata, 2);
    assert_eq!(o.failures.len(), 1);
    assert_eq!(o.failures[0].key, "a/two.md");
    assert!(
        o.failures[0].error.message.contains("Not Found"),
        "{:?}",
        o.failures
    );
    // The next pass looks it up, does not find it, creates it again.
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(attrs(&fake, "a/two.md")["owner"], json!("y"));
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_a_refused_batch_is_bisected() {
    let (fake, ws) = setup().await;
    {
        let mut w = fake.world();
        w.fail_next.push(("ListDatasetFileMetas".into(), 429, 1));
        w.fail_next.push(("ListDatasetFileMetas".into(), 503, 1));
    }
    assert!(ws.sync().await.converged());
    // A whole batch refused (400) is halved: each half goes through.
    for (k, o) in [("a/one.md", "p"), ("a/two.md", "q")] {
        ws.write(k, &format!("---\nowner: {o}\n---\n"));
    }
    fake.world()
        .fail_next
        .push(("UpdateDatasetFileMetas".into(), 400, 1));
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(fake.world().count("UpdateDatasetFileMetas"), 1 + 2);
    assert_eq!(attrs(&fake, "a/two.md")["owner"], json!("q"));
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_signature_check_and_stops_the_job() {
    let (fake, ws) = setup().await;
    std::fs::write(ws.dir.path().join("pai.secret"), "NotTheSecret").unwrap();
    let r = ws.sync().await;
    let err = r.error.clone().expect("a refused signature stops the job");
    assert!(err.contains("SignatureDoesNotMatch"), "{err}");
    assert!(!err.contains("NotTheSecret"));
    let w = fake.world();
    assert!(w.records.is_empty());
    assert_eq!(w.log.len(), 1, "nothing more is tried after the refusal");
}

/// Lets a pass delete every record (the delete guard's default is half).
fn allow_deleting_all(ws: &Workspace) {
    let text = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(
        &ws.config_path,
        text.replace(
            "delete_policy = \"delete\"",
            "delete_policy = \"delete\"\nmax_delete = \"100%\"",
        ),
    )
    .unwrap();
}

#[tokio::test]
async fn vanished_files_have_their_records_deleted_in_batches() {
    let (fake, ws) = setup().await;
    // Every record goes: more than the delete guard's default half.
    allow_deleting_all(&ws);
    assert!(ws.sync().await.converged());
    ws.remove("a/one.md");
    ws.remove("a/two.md");
    ws.remove("b/three.md");
    // One record is already gone upstream: that counts as deleted.
    {
        let mut w = fake.world();
        let id = w
            .records
            .iter()
            .find(|(_, r)| r.uri.ends_with("b/three.md"))
            .map(|(id, _)| id.clone())
            .unwrap();
        w.records.remove(&id);
    }
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().deleted, 3);
    let w = fake.world();
    assert!(w.records.is_empty());
    let deletes = w.answered("DeleteDatasetFileMetas");
    assert_eq!(deletes.len(), 1, "one call for the three records");
    let ids = deletes[0].params["DatasetFileMetaIds"].split(',').count();
    assert_eq!(ids, 3);
}

#[tokio::test]
async fn a_server_that_reads_the_id_list_as_one_id_gets_one_id_per_call() {
    let (fake, ws) = setup().await;
    allow_deleting_all(&ws);
    assert!(ws.sync().await.converged());
    // Its "Not Found" names an id that was not asked for ("a,b"): that is
    // never taken for the records being gone.
    fake.world().ids_as_one = true;
    ws.remove("a/one.md");
    ws.remove("a/two.md");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().deleted, 2);
    let w = fake.world();
    assert_eq!(w.records.len(), 1, "both records really deleted");
    let sent: Vec<usize> = w
        .log
        .iter()
        .filter(|l| l.action == "DeleteDatasetFileMetas")
        .map(|l| l.params["DatasetFileMetaIds"].split(',').count())
        .collect();
    assert_eq!(sent, [2, 1, 1], "the batch, then one id per call");
}

#[tokio::test]
async fn a_listing_that_never_ends_is_stopped_and_nothing_acts_on_it() {
    let (fake, ws) = setup().await;
    assert!(ws.sync().await.converged());
    // A second record for a file: an audit with the whole listing would
    // delete it.
    fake.world().add_record(&format!("{BASE}a/two.md"));
    // Every page the first again, with a NextToken and no TotalCount.
    fake.world().endless_listing = true;
    let lists = || fake.world().count("ListDatasetFileMetas");
    let before = lists();
    let r = tokio::time::timeout(std::time::Duration::from_secs(20), ws.reconcile())
        .await
        .unwrap_or_else(|_| panic!("the pass did not end within 20 s: {} listings", lists()));
    let err = r.audit_error.as_deref().expect("the audit says why not");
    assert!(
        err.contains("PAI's listing (ListDatasetFileMetas) does not end: page 2 holds the same records as page 1"),
        "{err}"
    );
    assert!(!r.converged(), "{r:?}");
    assert_eq!(lists() - before, 2);
    assert_eq!(fake.world().by_uri(&format!("{BASE}a/two.md")).len(), 2);
}

/// The ids of the records held under `key`'s URI.
fn ids_of(fake: &FakePai, key: &str) -> Vec<String> {
    let uri = format!("{BASE}{key}");
    let w = fake.world();
    w.records
        .iter()
        .filter(|(_, r)| r.uri == uri)
        .map(|(id, _)| id.clone())
        .collect()
}

fn findings(r: &kbsync::reconcile::JobReport) -> Vec<(String, &'static str)> {
    let audit = r.audit.as_ref().expect("the audit ran");
    audit
        .findings
        .iter()
        .map(|f| (f.key.clone(), f.drift.as_str()))
        .collect()
}

#[tokio::test]
async fn the_audit_deletes_a_duplicate_record_once_and_keeps_the_tracked_one() {
    let (fake, ws) = setup().await;
    assert!(ws.reconcile().await.converged());
    let tracked = ids_of(&fake, "a/two.md");
    // A second record under the same URI, made by hand or another tool.
    let extra = fake.world().add_record(&format!("{BASE}a/two.md"));

    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(findings(&r), [("a/two.md".to_owned(), "duplicate")]);
    let audit = r.audit.as_ref().unwrap();
    assert_eq!(audit.retired, 1, "{audit:?}");
    assert!(
        audit.findings[0]
            .detail
            .contains("retired per delete_policy"),
        "{audit:?}"
    );
    {
        let w = fake.world();
        let deletes = w.answered("DeleteDatasetFileMetas");
        let ids: Vec<_> = deletes
            .iter()
            .map(|l| l.params.get("DatasetFileMetaIds").cloned())
            .collect();
        assert_eq!(ids, [Some(extra.clone())], "one delete, of the duplicate");
    }
    assert_eq!(
        ids_of(&fake, "a/two.md"),
        tracked,
        "the tracked record stays"
    );
    assert_eq!(fake.world().records.len(), 3);

    // The next audit finds nothing and deletes nothing more.
    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    assert!(findings(&r).is_empty(), "{r:?}");
    assert_eq!(fake.world().count("DeleteDatasetFileMetas"), 1);
}

#[tokio::test]
async fn a_record_the_listing_skips_is_looked_up_before_it_is_taken_for_gone() {
    let (fake, ws) = setup().await;
    assert!(ws.reconcile().await.converged());
    let id = ids_of(&fake, "a/two.md").remove(0);
    // The audit's listing leaves the record out, as a listing that pages
    // while records come and go can.
    fake.world().skip_once.insert(id.clone());
    let creates = fake.world().count("CreateDatasetFileMetas");

    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    assert!(findings(&r).is_empty(), "{:?}", findings(&r));
    assert!(r.plan.ops.is_empty(), "{:?}", r.plan.ops);
    {
        let w = fake.world();
        assert!(w.skip_once.is_empty(), "the listing did skip it");
        let lookups: Vec<_> = w
            .answered("ListDatasetFileMetas")
            .into_iter()
            .filter_map(|l| l.params.get("QueryFileName"))
            .collect();
        assert_eq!(lookups, ["two.md"], "one lookup, by the file's name");
        assert_eq!(w.count("CreateDatasetFileMetas"), creates);
    }
    assert_eq!(ids_of(&fake, "a/two.md"), std::slice::from_ref(&id));

    // Really gone: the lookup does not find it either, and it is created
    // again.
    fake.world().records.remove(&id);
    let r = ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(findings(&r), [("a/two.md".to_owned(), "missing")]);
    let now = ids_of(&fake, "a/two.md");
    assert_eq!(now.len(), 1);
    assert_ne!(now[0], id);
    assert_eq!(attrs(&fake, "a/two.md")["source_path"], json!("a/two.md"));
}

type Boxed<'a, T> = futures::future::LocalBoxFuture<'a, Result<T, SinkError>>;

/// The PAI sink, except that it cannot retire: what a sink whose API has
/// no such call answers.
struct CannotRetire(Box<dyn kbsync::sink::Sink>);

impl kbsync::sink::Sink for CannotRetire {
    fn transport(&self) -> &kbsync::sink::http::Transport {
        self.0.transport()
    }
    fn claim<'a>(&'a self, mark: &'a str) -> Boxed<'a, Option<String>> {
        self.0.claim(mark)
    }
    fn check_target(&self) -> Boxed<'_, ()> {
        self.0.check_target()
    }
    fn list_pages<'a>(
        &'a self,
        each: &'a mut (dyn FnMut(Vec<Listed>) -> Result<(), SinkError> + 'a),
    ) -> Boxed<'a, bool> {
        self.0.list_pages(each)
    }
    fn find<'a>(&'a self, key: &'a str) -> Boxed<'a, Option<Listed>> {
        self.0.find(key)
    }
    fn record_name(&self, key: &str) -> String {
        self.0.record_name(key)
    }
    /// Everything but the Delete verb.
    fn verbs(&self) -> kbsync::sink::verbs::Verbs<'_> {
        kbsync::sink::verbs::Verbs {
            delete: None,
            ..self.0.verbs()
        }
    }
}

/// Retiring through the verbs PAI has: records are deleted (or kept),
/// never disabled or archived, and a policy it cannot serve sends nothing.
#[tokio::test]
async fn a_sink_without_status_deletes_keeps_or_says_it_cannot() {
    let (fake, ws) = setup().await;
    assert!(ws.reconcile().await.converged());
    let config = ws.config();
    let sink = config.jobs[0].sink.connect().unwrap();
    let ids = ids_of(&fake, "a/two.md");
    assert_eq!(ids.len(), 1);
    let retire = |policy| kbsync::execute::retire(sink.verbs(), "PAI", &ids, policy);
    assert_eq!(retire(DeletePolicy::Keep).await, Ok(()));
    for policy in [DeletePolicy::Disable, DeletePolicy::Archive] {
        let e = retire(policy).await.unwrap_err();
        assert!(e.is_unsupported(), "{e:?}");
        assert_eq!(
            e.to_string(),
            "unsupported: PAI records have no status: they cannot be disabled or archived (delete_policy = \"delete\" or \"keep\")"
        );
    }
    assert_eq!(fake.world().count("DeleteDatasetFileMetas"), 0);
    assert_eq!(ids_of(&fake, "a/two.md").len(), 1, "kept");
    assert_eq!(retire(DeletePolicy::Delete).await, Ok(()));
    assert_eq!(fake.world().count("DeleteDatasetFileMetas"), 1);
    assert!(ids_of(&fake, "a/two.md").is_empty(), "deleted");
}

#[tokio::test]
async fn a_duplicate_a_sink_cannot_retire_is_reported_as_staying() {
    let (fake, ws) = setup().await;
    assert!(ws.reconcile().await.converged());
    let extra = fake.world().add_record(&format!("{BASE}a/two.md"));
    let config = ws.config();
    let job = &config.jobs[0];
    let sink = CannotRetire(job.sink.connect().unwrap());
    let state = kbsync::state::State::open(&config.state_path).unwrap();

    let report = kbsync::audit::audit(&sink, &state, job, true)
        .await
        .unwrap()
        .expect("PAI lists");
    assert_eq!(report.retired, 0, "{report:?}");
    assert_eq!(report.findings.len(), 1, "{report:?}");
    let detail = &report.findings[0].detail;
    assert_eq!(
        detail,
        &format!("record {extra} has the same name; not retired: this API cannot delete records")
    );
    assert_eq!(ids_of(&fake, "a/two.md").len(), 2, "both records stay");
    assert_eq!(fake.world().count("DeleteDatasetFileMetas"), 0);
}
