//! Nothing is destroyed on evidence that could mean "the source is not
//! there": the delete guard, the root marker, and an empty sitemap.

mod support;

use kbsync::reconcile::{self, RunOptions};
use kbsync::sink::dify::document_name;
use kbsync::source::web::key_of;
use support::fake_dify::{FakeDify, DATASET};
use support::fake_web::FakeWeb;
use support::{run_binary, with_fake, Workspace};

fn write_files(ws: &Workspace, n: usize) {
    for i in 0..n {
        ws.write(&format!("f{i:02}.md"), &format!("file {i}"));
    }
}

fn enabled_docs(fake: &FakeDify) -> usize {
    fake.world()
        .docs
        .values()
        .filter(|d| d.enabled && !d.archived)
        .count()
}

/// The requests that retire: deletes and status changes.
fn retiring_requests(fake: &FakeDify) -> usize {
    let w = fake.world();
    w.log
        .iter()
        .filter(|l| l.method == "DELETE" || l.path.contains("/status/"))
        .count()
}

async fn sync_allowing_deletes(ws: &Workspace) -> reconcile::JobReport {
    ws.run_with(RunOptions {
        allow_deletes: true,
        ..RunOptions::default()
    })
    .await
}

#[tokio::test]
async fn an_emptied_root_retires_nothing_until_allowed() {
    for policy in ["delete", "disable", "archive"] {
        let (fake, ws) = with_fake(policy, "").await;
        write_files(&ws, 20);
        assert!(ws.sync().await.converged());
        assert_eq!(enabled_docs(&fake), 20);

        // The share is unmounted: the mount point is an empty folder.
        for i in 0..20 {
            ws.remove(&format!("f{i:02}.md"));
        }
        let r = ws.sync().await;
        assert!(!r.converged(), "{policy}: a refused pass is not converged");
        let refusal = r.refused.as_ref().expect("the guard refused");
        assert_eq!((refusal.retiring, refusal.tracked), (20, 20), "{policy}");
        assert!(refusal.to_string().contains("--allow-deletes"), "{refusal}");
        assert_eq!(retiring_requests(&fake), 0, "{policy}: nothing retired");
        assert_eq!(enabled_docs(&fake), 20, "{policy}");
        // The refusal is what `status` shows of the last run.
        let s = kbsync::status::read(&ws.config(), &[]).unwrap().unwrap();
        let last = s[0].summary.last_run.as_ref().unwrap();
        assert!(!last.converged);
        assert!(
            last.summary.contains("refused to retire 20 of 20"),
            "{}",
            last.summary
        );

        // Asked for: it goes ahead.
        let r = sync_allowing_deletes(&ws).await;
        assert!(r.converged(), "{policy}: {r:?}");
        assert_eq!(enabled_docs(&fake), 0, "{policy}");
        assert!(ws.sync().await.converged(), "{policy}: then at rest");
    }
}

#[tokio::test]
async fn up_to_half_goes_ahead_more_is_refused() {
    let (fake, ws) = with_fake("delete", "").await;
    write_files(&ws, 20);
    assert!(ws.sync().await.converged());
    for i in 0..11 {
        ws.remove(&format!("f{i:02}.md"));
    }
    let r = ws.sync().await;
    let refusal = r.refused.as_ref().expect("11 of 20 is over half");
    assert_eq!((refusal.retiring, refusal.tracked), (11, 20));
    assert_eq!(fake.world().docs.len(), 20);

    // One comes back: 10 of 20 is within the default.
    ws.write("f00.md", "file 0");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().deleted, 10);
    assert_eq!(fake.world().docs.len(), 10);
}

#[tokio::test]
async fn max_delete_as_a_count_and_the_rest_of_the_pass_goes_ahead() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "delete", "", "");
    let text = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(
        &ws.config_path,
        text.replace(
            "delete_policy = \"delete\"",
            "delete_policy = \"delete\"\nmax_delete = 2",
        ),
    )
    .unwrap();
    write_files(&ws, 5);
    assert!(ws.sync().await.converged());
    for i in 0..3 {
        ws.remove(&format!("f{i:02}.md"));
    }
    ws.write("new.md", "a new file");
    ws.write("f04.md", "changed");
    let r = ws.sync().await;
    assert_eq!(r.refused.as_ref().map(|g| g.retiring), Some(3));
    let o = r.outcome.as_ref().unwrap();
    assert_eq!((o.created, o.updated, o.deleted), (1, 1, 0));
    let w = fake.world();
    assert!(w.doc_by_name(&document_name("new.md")).is_some());
    assert_eq!(
        w.doc_by_name(&document_name("f04.md")).unwrap().content,
        b"changed"
    );
    assert!(w.doc_by_name(&document_name("f00.md")).is_some());
}

#[tokio::test]
async fn a_missing_marker_means_unmounted_and_nothing_happens() {
    let (fake, ws) = with_fake("delete", "").await;
    let text = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(
        &ws.config_path,
        text.replace(
            "root = \"docs\"",
            "root = \"docs\"\nrequire_marker = \".kbsync-root\"",
        ),
    )
    .unwrap();
    write_files(&ws, 3);
    let r = ws.sync().await;
    let e = r.error.as_deref().expect("no marker yet");
    assert!(e.contains(".kbsync-root") && e.contains("unmounted"), "{e}");
    assert_eq!(fake.requests(), 0);

    ws.write(".kbsync-root", "");
    assert!(ws.sync().await.converged());
    assert_eq!(fake.world().docs.len(), 3);

    // Unmounted: the marker and everything else are gone.
    for i in 0..3 {
        ws.remove(&format!("f{i:02}.md"));
    }
    ws.remove(".kbsync-root");
    let before = fake.requests();
    let r = ws.sync().await;
    assert!(!r.converged());
    assert!(r.plan.ops.is_empty());
    assert_eq!(fake.requests(), before);
    assert_eq!(fake.world().docs.len(), 3);
    // Nothing was recorded as gone either.
    let items = kbsync::state::State::open(&ws.config().state_path)
        .unwrap()
        .load_items("docs")
        .unwrap();
    assert!(items.values().all(|i| i.present), "{items:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_allow_deletes_lets_the_next_full_pass_through() {
    let (fake, ws) = with_fake("delete", "").await;
    write_files(&ws, 12);
    assert!(ws.sync().await.converged());
    for i in 0..12 {
        ws.remove(&format!("f{i:02}.md"));
    }
    assert!(ws.sync().await.refused.is_some());
    let bin = || std::process::Command::new(env!("CARGO_BIN_EXE_kbsync"));
    let config = ws.config_path.clone();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run_binary(bin(), &config, &["retry", "--allow-deletes"])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("may retire beyond max_delete"), "{out}");
    // A scoped pass does not spend the allowance; the full pass does.
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().deleted, 12);
    assert_eq!(fake.world().docs.len(), 0);
    // Spent: the guard is back.
    write_files(&ws, 12);
    assert!(ws.sync().await.converged());
    for i in 0..12 {
        ws.remove(&format!("f{i:02}.md"));
    }
    assert!(ws.sync().await.refused.is_some());
}

#[tokio::test]
async fn a_sitemap_without_pages_protects_every_page() {
    let fake = FakeDify::start().await;
    let web = FakeWeb::start().await;
    {
        let mut s = web.site();
        s.put("/a.md", "# A\n", "text/markdown");
        s.put("/b.md", "# B\n", "text/markdown");
        s.sitemap = vec!["/a.md".into(), "/b.md".into()];
    }
    let ws = Workspace::raw(&format!(
        r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "site"
delete_policy = "delete"

[sync.web]
sitemap = "{sitemap}"

[sync.dify]
base_url = "{base}"
dataset_id = "{DATASET}"
api_key_file = "api.key"
"#,
        sitemap = web.url("/sitemap.xml"),
        base = fake.base_url(),
    ));
    assert!(ws.sync().await.converged());
    assert_eq!(fake.world().docs.len(), 2);

    // The site answers 200 with an empty sitemap.
    web.site().sitemap.clear();
    let r = ws.sync().await;
    assert!(!r.converged());
    assert!(
        r.skipped.iter().any(|s| s.reason.contains("lists no page")),
        "{:?}",
        r.skipped
    );
    assert!(r.plan.ops.is_empty(), "{:?}", r.plan.ops);
    let w = fake.world();
    let url = reqwest::Url::parse(&web.url("/a.md")).unwrap();
    assert!(w.doc_by_name(&document_name(&key_of(&url))).is_some());
    assert_eq!(w.docs.len(), 2);
}

/// Switches the job's `delete_policy` in its config file.
fn set_policy(ws: &Workspace, from: &str, to: &str) {
    let config = std::fs::read_to_string(&ws.config_path).unwrap();
    let old = format!("delete_policy = \"{from}\"");
    assert!(config.contains(&old), "{config}");
    std::fs::write(
        &ws.config_path,
        config.replace(&old, &format!("delete_policy = \"{to}\"")),
    )
    .unwrap();
}

#[tokio::test]
async fn a_policy_change_that_destroys_earlier_retirements_goes_through_the_guard() {
    let (fake, ws) = with_fake("disable", "").await;
    write_files(&ws, 10);
    assert!(ws.sync().await.converged());
    // Retired a few at a time, each pass within the guard: 6 of 10 are
    // disabled upstream, kept for revival.
    for batch in [0..3, 3..6] {
        for i in batch {
            ws.remove(&format!("f{i:02}.md"));
        }
        assert!(ws.sync().await.converged());
    }
    assert_eq!(enabled_docs(&fake), 4);
    assert_eq!(fake.world().docs.len(), 10);

    // `disable` → `delete` would destroy all six at once: more than half.
    set_policy(&ws, "disable", "delete");
    let before = retiring_requests(&fake);
    let r = ws.sync().await;
    let refusal = r
        .refused
        .as_ref()
        .expect("the guard refused the policy change");
    assert_eq!((refusal.retiring, refusal.tracked), (6, 10), "{refusal}");
    // The refusal says why: not an emptied source, a changed policy.
    let said = refusal.to_string();
    assert!(
        said.contains("6 of them retired earlier") && said.contains("delete_policy"),
        "{said}"
    );
    assert!(!r.converged());
    assert_eq!(retiring_requests(&fake), before, "nothing deleted");
    assert_eq!(fake.world().docs.len(), 10);

    // Meant: allowed once, it goes ahead.
    let r = sync_allowing_deletes(&ws).await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(fake.world().docs.len(), 4);
}

#[tokio::test]
async fn a_second_refused_pass_gives_the_same_reason_not_an_earlier_policy() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "delete", "", "");
    write_files(&ws, 7);
    assert!(ws.sync().await.converged());
    for i in 0..4 {
        ws.remove(&format!("f{i:02}.md"));
    }
    for pass in ["first", "second"] {
        let r = ws.sync().await;
        let refusal = r.refused.as_ref().expect("4 of 7 is over half");
        assert_eq!((refusal.retiring, refusal.tracked), (4, 7), "{pass}");
        assert_eq!(refusal.earlier, 0, "{pass} pass: {refusal}");
        assert!(
            !refusal.to_string().contains("another delete_policy"),
            "{pass} pass: {refusal}"
        );
    }
    assert_eq!(fake.world().docs.len(), 7);
}
