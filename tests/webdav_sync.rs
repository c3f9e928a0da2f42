//! `[sync.webdav]` end to end: a folder served by a real `rclone serve
//! webdav` (behind a proxy that counts and can break its answers)
//! mirrored into the fake Dify.

mod support;

use kbsync::reconcile::JobReport;
use kbsync::sink::dify::document_name;
use support::fake_dify::{FakeDify, DATASET};
use support::rclone::{self, RcloneDav};
use support::s3_proxy::{Asked, S3Proxy};
use support::shown::{assert_never_shown_nor_stored, reconcile_and_status};
use support::Workspace;

struct Job {
    dify: FakeDify,
    ws: Workspace,
    proxy: S3Proxy,
    server: RcloneDav,
}

impl Job {
    async fn start(password: &str) -> Job {
        let server = RcloneDav::start();
        let proxy = S3Proxy::start(server.url.trim_end_matches('/')).await;
        proxy.world().dav = true;
        let dify = FakeDify::start().await;
        let ws = Workspace::raw(&format!(
            r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "share"
delete_policy = "delete"

[sync.webdav]
url = "{}/handbook/"
username = "{}"
password_file = "dav.pass"

[sync.dify]
base_url = "{}"
dataset_id = "{DATASET}"
api_key_file = "api.key"
retry_min_delay_ms = 1
retry_max_delay_secs = 1
"#,
            proxy.endpoint(),
            rclone::USER,
            dify.base_url()
        ));
        support::write_key(&ws.dir.path().join("dav.pass"), password);
        std::fs::create_dir(server.path("handbook")).unwrap();
        Job {
            dify,
            ws,
            proxy,
            server,
        }
    }

    async fn sync(&self) -> JobReport {
        self.ws.sync().await
    }

    fn asked_since(&self, from: usize, what: Asked) -> usize {
        self.proxy.world().log[from..]
            .iter()
            .filter(|(a, _)| *a == what)
            .count()
    }

    fn asked(&self) -> usize {
        self.proxy.world().log.len()
    }
}

/// A first sync mirrors the folder's files; a no-op poll costs one
/// PROPFIND per folder and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_op_poll_costs_one_propfind_per_folder() {
    let job = Job::start(rclone::PASSWORD).await;
    job.server.write("handbook/a.md", "# A\n");
    job.server.write("handbook/guides/b.txt", "b\n");
    job.server.write("handbook/guides/deep/c.md", "c\n");
    job.server.write("elsewhere.md", "outside the folder\n");
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().created, 3);
    {
        let w = job.dify.world();
        let doc = w.doc_by_name(&document_name("guides/deep/c.md")).unwrap();
        assert_eq!(doc.content, b"c\n");
    }

    let (asked, sent) = (job.asked(), job.dify.requests());
    let r = job.sync().await;
    assert!(r.converged() && r.plan.ops.is_empty(), "{r:?}");
    assert_eq!((r.hashed_files, r.unchanged), (0, 3), "settled: skipped");
    assert_eq!(job.asked_since(asked, Asked::List), 3, "three folders");
    assert_eq!(job.asked(), asked + 3, "nothing but the listing");
    assert_eq!(job.dify.requests(), sent, "nothing upstream");
}

/// A share of `a.md` and `sub/b.md` mirrored, then `a.md` removed: a pass
/// that took a broken listing for whole would retire its document.
async fn synced_then_one_removed() -> Job {
    let job = Job::start(rclone::PASSWORD).await;
    job.server.write("handbook/a.md", "a\n");
    job.server.write("handbook/sub/b.md", "b\n");
    assert!(job.sync().await.converged());
    std::fs::remove_file(job.server.path("handbook/a.md")).unwrap();
    job
}

/// A listing that fails in a subfolder protects every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_fails_part_way_protects_everything() {
    let job = synced_then_one_removed().await;
    job.proxy.world().fail_lists_after = Some(job.proxy.count(Asked::List) + 1);
    let r = job.sync().await;
    assert!(!r.converged());
    assert!(r.plan.ops.is_empty(), "{:?}", r.plan.ops);
    assert!(
        r.skipped[0].reason.contains("stopped part-way"),
        "{:?}",
        r.skipped
    );
    assert_eq!(job.dify.world().docs.len(), 2, "nothing retired");
}

/// A password the server refuses makes the job unavailable: nothing is
/// read or retired, and the message names the setting, never the
/// password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_makes_the_job_unavailable_and_names_the_setting() {
    let job = Job::start("notThePasswordTheServerKnows").await;
    job.server.write("handbook/a.md", "a\n");
    let r = job.sync().await;
    assert!(!r.converged());
    assert!(r.unscanned && r.skipped.is_empty(), "{r:?}");
    assert!(r.plan.ops.is_empty(), "{:?}", r.plan.ops);
    let why = r.error.as_deref().unwrap_or_default();
    assert!(why.contains("refused"), "{why}");
    assert!(why.contains("`sync[0].webdav.password_file`"), "{why}");
    assert!(!format!("{r:?}").contains("notThePasswordTheServerKnows"));
}

/// A folder that is gone from the share makes the job unavailable, as a
/// missing folder root does: its records are not taken for deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_folder_makes_the_job_unavailable_and_names_the_setting() {
    let job = Job::start(rclone::PASSWORD).await;
    job.server.write("handbook/a.md", "a\n");
    assert!(job.sync().await.converged());
    std::fs::remove_dir_all(job.server.path("handbook")).unwrap();
    let r = job.sync().await;
    assert!(!r.converged());
    assert!(r.unscanned && r.skipped.is_empty(), "{r:?}");
    assert!(r.refused.is_none() && r.plan.ops.is_empty(), "{r:?}");
    let why = r.error.as_deref().unwrap_or_default();
    assert!(why.contains("was not found"), "{why}");
    assert!(why.contains("`sync[0].webdav.url`"), "{why}");
    assert_eq!(job.dify.world().docs.len(), 1, "nothing retired");
}

/// A pass over a share made hostile: it retires nothing (`docs` stay
/// upstream), plans nothing, does not converge, and says why.
async fn protected(job: &Job, docs: usize) -> String {
    let r = job.sync().await;
    assert!(!r.converged());
    assert!(r.plan.ops.is_empty(), "{:?}", r.plan.ops);
    assert_eq!(job.dify.world().docs.len(), docs, "nothing retired");
    r.skipped[0].reason.clone()
}

/// A subfolder the server refuses to list (ownCloud answers 403 for a
/// locked folder) or says is not there while its parent names it is a
/// listing that stopped part-way: the files below it are not taken for
/// deleted (OpenDAL's lister takes such a folder for an empty one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subfolder_refused_or_lost_protects_everything() {
    let job = Job::start(rclone::PASSWORD).await;
    for key in ["a.md", "b.md", "c.md", "sub/d.md"] {
        job.server.write(&format!("handbook/{key}"), key);
    }
    assert!(job.sync().await.converged());
    for status in [403, 404] {
        job.proxy.world().refuse_folder = Some(("/handbook/sub/".into(), status));
        let why = protected(&job, 4).await;
        assert!(why.contains("stopped part-way"), "{why}");
        assert!(why.contains(&format!("answered HTTP {status}")), "{why}");
    }
}

/// A folder listing that names a subfolder twice (a listing that repeats
/// or cycles) is stopped at the folder it would list again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_listed_again_is_stopped_and_protects_everything() {
    let job = synced_then_one_removed().await;
    job.proxy.world().twice = Some("/handbook/sub/".into());
    let asked = job.asked();
    let why = protected(&job, 2).await;
    assert!(why.contains("does not end"), "{why}");
    assert!(why.contains("the folder /handbook/sub/ again"), "{why}");
    assert_eq!(job.asked_since(asked, Asked::List), 2, "each folder once");
}

/// A GET the server refuses is a file skipped (and protected), never an
/// empty file uploaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_get_uploads_nothing() {
    let job = Job::start(rclone::PASSWORD).await;
    job.server.write("handbook/a.md", "a\n");
    job.proxy.world().echo = Some((Asked::Get, 403));
    let r = job.sync().await;
    assert!(!r.converged());
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    assert!(
        r.skipped[0].reason.contains("cannot read"),
        "{:?}",
        r.skipped
    );
    assert!(job.dify.world().docs.is_empty(), "no empty document");
}

/// A server (or a proxy in front of it) that repeats the request's Basic
/// credentials in its error answers (the header, and `user:password`
/// decoded): neither the password nor its base64 form is printed,
/// logged, shown by `status` nor stored, whether a GET or the listing
/// was answered so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_echoed_in_error_answers_are_never_shown_nor_stored() {
    use base64::Engine;
    let job = Job::start(rclone::PASSWORD).await;
    job.server.write("handbook/a.md", "a\n");
    job.server.write("handbook/sub/b.md", "b\n");
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        rclone::USER,
        rclone::PASSWORD
    ));
    let secrets = [rclone::PASSWORD, basic.as_str()];
    job.proxy.world().echo = Some((Asked::Get, 403));
    let texts = reconcile_and_status(&job.ws).await;
    assert_never_shown_nor_stored(&texts, &secrets);
    job.proxy.world().echo = Some((Asked::List, 500));
    let texts = reconcile_and_status(&job.ws).await;
    assert_never_shown_nor_stored(&texts, &secrets);
}
