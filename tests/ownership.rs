//! Two jobs on one dataset: refused unless their document names cannot
//! collide; with a `name_prefix` each, each keeps to its own documents.

mod support;

use kbsync::config::Config;
use kbsync::reconcile::{self, RunOptions};
use kbsync::sink::dify::document_name;
use support::fake_dify::{FakeDify, DATASET};
use support::Workspace;

fn two_jobs(base: &str, prefix_a: &str, prefix_b: &str) -> String {
    let job = |name: &str, root: &str, prefix: &str| {
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("name_prefix = \"{prefix}\"\n")
        };
        format!(
            r#"
[[sync]]
name = "{name}"
delete_policy = "delete"
max_delete = "100%"

[sync.folder]
root = "{root}"

[sync.dify]
base_url = "{base}"
dataset_id = "{DATASET}"
api_key_file = "api.key"
{prefix}"#
        )
    };
    format!(
        "[state]\npath = \"state/kbsync.db\"\n{}{}",
        job("handbook", "docs", prefix_a),
        job("wiki", "wiki", prefix_b)
    )
}

fn load_error(ws: &Workspace) -> String {
    Config::load(&ws.config_path)
        .expect_err("refused")
        .to_string()
}

#[tokio::test]
async fn two_jobs_on_one_dataset_without_their_own_prefixes_are_refused() {
    let fake = FakeDify::start().await;
    for (a, b) in [("", ""), ("", "wiki/"), ("team/", "team/wiki/")] {
        let ws = Workspace::raw(&two_jobs(&fake.base_url(), a, b));
        std::fs::create_dir_all(ws.dir.path().join("wiki")).unwrap();
        let err = load_error(&ws);
        assert!(
            err.contains("\"handbook\"") && err.contains("\"wiki\"") && err.contains("name_prefix"),
            "{a:?} {b:?}: {err}"
        );
        assert!(
            err.contains("kbsync.toml:"),
            "names the file and line: {err}"
        );
    }
}

#[tokio::test]
async fn with_their_own_prefixes_each_job_keeps_to_its_documents() {
    let fake = FakeDify::start().await;
    let ws = Workspace::raw(&two_jobs(&fake.base_url(), "handbook/", "wiki/"));
    let wiki = ws.dir.path().join("wiki");
    std::fs::create_dir_all(&wiki).unwrap();
    ws.write("README.md", "the handbook");
    std::fs::write(wiki.join("README.md"), "the wiki").unwrap();
    let opts = RunOptions {
        audit: true,
        ..RunOptions::default()
    };
    let reports = reconcile::run(&ws.config(), &[], opts).await.unwrap();
    assert!(reports.iter().all(|r| r.converged()), "{reports:?}");
    {
        let w = fake.world();
        assert_eq!(w.docs.len(), 2);
        let h = w.doc_by_name(&document_name("handbook/README.md")).unwrap();
        assert_eq!(h.content, b"the handbook");
        let k = w.doc_by_name(&document_name("wiki/README.md")).unwrap();
        assert_eq!(k.content, b"the wiki");
    }
    // One job's file goes: the other's document stays, and neither audit
    // takes the other's document for its own.
    ws.remove("README.md");
    let reports = reconcile::run(&ws.config(), &[], opts).await.unwrap();
    assert!(reports.iter().all(|r| r.converged()), "{reports:?}");
    assert!(reports
        .iter()
        .all(|r| r.audit.as_ref().unwrap().findings.is_empty()));
    let w = fake.world();
    assert_eq!(w.docs.len(), 1);
    assert!(w.doc_by_name(&document_name("wiki/README.md")).is_some());
}

#[tokio::test]
async fn a_new_target_is_listed_and_its_documents_adopted() {
    // D1: after a change of base_url (or dataset), the new dataset is
    // listed before anything is created in it.
    let old = FakeDify::start().await;
    let new = FakeDify::start().await;
    let ws = Workspace::new(&old.base_url(), DATASET, "disable", "", "");
    ws.write("a.md", "alpha");
    ws.write("b.md", "beta");
    assert!(ws.sync().await.converged());
    // The new dataset already holds both names, one disabled; and, as
    // Dify does by default, a create re-uses an enabled document's name.
    new.world().reuse_same_name = true;
    new.world().add_doc("a.md", b"alpha, uploaded by hand");
    let b = new.world().add_doc("b.md", b"beta");
    new.world().docs.get_mut(&b).unwrap().enabled = false;
    let text = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(
        &ws.config_path,
        text.replace(&old.base_url(), &new.base_url()),
    )
    .unwrap();
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().adopted, 2);
    let w = new.world();
    assert_eq!(w.docs.len(), 2, "adopted, not duplicated");
    assert!(w.duplicate_names().is_empty());
    assert!(w.docs[&b].enabled);
    assert_eq!(w.doc_by_name("a.md").unwrap().content, b"alpha");
    assert_eq!(
        w.count_since(0, "create-by-file"),
        0,
        "nothing created blind"
    );
}

#[tokio::test]
async fn a_second_mirror_into_the_same_dataset_is_refused_not_fought() {
    let fake = FakeDify::start().await;
    let a = Workspace::new(&fake.base_url(), DATASET, "disable", "", "");
    let b = Workspace::new(&fake.base_url(), DATASET, "disable", "", "");
    for i in 0..4 {
        a.write(&format!("doc{i}.md"), &format!("a {i}"));
        b.write(&format!("doc{i}.md"), &format!("b {i}"));
    }
    assert!(a.reconcile().await.converged());
    let mark = fake.requests();
    let r = b.reconcile().await;
    let e = r.error.as_deref().expect("the second mirror stops");
    assert!(r.config_error, "{e}");
    assert!(
        e.contains("another kbsync") && e.contains("dataset_id") && e.contains("kbsync_owner_"),
        "{e}"
    );
    {
        let w = fake.world();
        assert_eq!(w.count_since(mark, "by-file"), 0, "{:?}", &w.log[mark..]);
        assert_eq!(w.count_since(mark, "status"), 0);
        assert!(w.docs.values().all(|d| d.enabled));
    }
    // The first one keeps going, with nothing to undo.
    let again = a.reconcile().await;
    assert!(again.converged() && again.plan.ops.is_empty(), "{again:?}");
    // Its own state file lost and made afresh: still the same mirror.
    std::fs::remove_dir_all(a.dir.path().join("state")).unwrap();
    assert!(a.reconcile().await.converged());
}
