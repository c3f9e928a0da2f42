//! `[sync.git]` end to end: real repositories made with `git`, read by
//! path, over `git daemon` and over smart HTTP (`git http-backend`),
//! mirrored into the fake Dify.

mod support;

use kbsync::reconcile::JobReport;
use kbsync::sink::dify::document_name;
use support::fake_dify::{FakeDify, DATASET};
use support::git::{GitDaemon, Remote, SmartHttp};
use support::Workspace;

const TOKEN: &str = "glpat-notARealTokenButLongEnough";

struct Job {
    dify: FakeDify,
    ws: Workspace,
    remote: Remote,
}

impl Job {
    /// A job following `main` of `remote` at `url`, with `extra` settings
    /// in its `[sync.git]` table.
    async fn start(remote: Remote, url: &str, extra: &str) -> Job {
        let dify = FakeDify::start().await;
        let ws = Workspace::raw(&format!(
            r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "handbook"
delete_policy = "delete"

[sync.git]
url = "{url}"
branch = "main"
{extra}

[sync.dify]
base_url = "{}"
dataset_id = "{DATASET}"
api_key_file = "api.key"
retry_min_delay_ms = 1
retry_max_delay_secs = 1
"#,
            dify.base_url()
        ));
        Job { dify, ws, remote }
    }

    async fn local(extra: &str) -> Job {
        let remote = Remote::new();
        let url = remote.file_url();
        Job::start(remote, &url, extra).await
    }

    async fn sync(&self) -> JobReport {
        self.ws.sync().await
    }

    fn doc(&self, key: &str) -> Option<String> {
        let w = self.dify.world();
        let d = w.doc_by_name(&document_name(key))?;
        Some(String::from_utf8_lossy(&d.content).into_owned())
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .dify
            .world()
            .docs
            .values()
            .map(|d| d.name.clone())
            .collect();
        names.sort();
        names
    }
}

/// A first sync mirrors the files below `path`; a poll that finds the
/// branch where the last converged pass left it reads nothing and sends
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_then_a_poll_of_an_unmoved_branch_reads_nothing() {
    let job = Job::local("path = \"docs\"").await;
    job.remote.write("docs/a.md", "# A\n");
    job.remote.write("docs/guides/b.txt", "b\n");
    job.remote.write("README.md", "outside the folder\n");
    job.remote.commit("first");
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().created, 2);
    assert_eq!(job.doc("guides/b.txt").as_deref(), Some("b\n"));

    let sent = job.dify.requests();
    let r = job.sync().await;
    assert!(r.converged() && r.plan.ops.is_empty(), "{r:?}");
    assert_eq!((r.hashed_files, r.unchanged), (0, 2), "nothing read");
    assert_eq!(job.dify.requests(), sent, "nothing upstream");
}

/// A commit that adds, modifies, deletes and renames reads exactly the
/// blobs it introduced: one update, two creates (the rename's new name
/// among them) and two retirements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_reads_only_the_blobs_it_changed() {
    let job = Job::local("").await;
    for i in 0..10 {
        job.remote
            .write(&format!("f{i}.md"), &format!("file {i}\n"));
    }
    job.remote.commit("ten");
    assert!(job.sync().await.converged());

    job.remote.write("f0.md", "file 0, edited\n");
    job.remote.write("new.md", "new\n");
    job.remote.remove("f1.md");
    job.remote.rename("f2.md", "moved/f2.md");
    job.remote.commit("change");
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.hashed_files, 3, "f0, new and moved/f2 read: {r:?}");
    let o = r.outcome.as_ref().unwrap();
    assert_eq!((o.updated, o.created, o.deleted), (1, 2, 2), "{o:?}");
    assert_eq!(job.doc("f0.md").as_deref(), Some("file 0, edited\n"));
    assert_eq!(job.doc("moved/f2.md").as_deref(), Some("file 2\n"));
    assert!(job.doc("f1.md").is_none() && job.doc("f2.md").is_none());
    assert_eq!(job.names().len(), 10);
}

/// A commit that changes nothing the job mirrors (another folder, or the
/// same bytes again) moves the branch: the tree is listed, no blob is
/// read and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_outside_the_mirrored_files_sends_nothing() {
    let job = Job::local("path = \"docs\"").await;
    job.remote.write("docs/a.md", "a\n");
    job.remote.commit("first");
    assert!(job.sync().await.converged());
    job.remote.write("src/main.rs", "fn main() {}\n");
    job.remote.commit("code");
    let sent = job.dify.requests();
    let r = job.sync().await;
    assert!(r.converged() && r.plan.ops.is_empty(), "{r:?}");
    assert_eq!((r.hashed_files, r.unchanged), (0, 1));
    assert_eq!(job.dify.requests(), sent, "nothing upstream");
}

/// A force-push that rewrites history, with the old commits pruned from
/// the remote: the new tree is compared with the state by blob ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_push_is_compared_by_blob_ids() {
    let job = Job::local("").await;
    job.remote.write("a.md", "a\n");
    job.remote.commit("one");
    job.remote.write("b.md", "b\n");
    job.remote.commit("two");
    assert!(job.sync().await.converged());
    job.remote.git(&["reset", "-q", "--hard", "HEAD~1"]);
    job.remote.write("c.md", "c\n");
    job.remote.commit("rewritten");
    job.remote.prune();
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.hashed_files, 1, "c.md only: {r:?}");
    let o = r.outcome.as_ref().unwrap();
    assert_eq!((o.created, o.deleted, o.updated), (1, 1, 0), "{o:?}");
    assert_eq!(job.names(), [document_name("a.md"), document_name("c.md")]);
}

/// A branch that is deleted is unavailable, never an empty tree: nothing
/// is retired and the message names the setting and where it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_branch_makes_the_job_unavailable_and_retires_nothing() {
    let job = Job::local("").await;
    job.remote.write("a.md", "a\n");
    job.remote.commit("one");
    job.remote.push("keep");
    assert!(job.sync().await.converged());
    job.remote.delete_branch("main");
    let r = job.sync().await;
    assert!(!r.converged());
    assert!(r.unscanned, "{r:?}");
    assert!(r.plan.ops.is_empty(), "{:?}", r.plan.ops);
    let why = r.error.as_deref().unwrap_or_default();
    assert!(why.contains("branch \"main\""), "{why}");
    assert!(why.contains("`sync[0].git.branch`"), "{why}");
    assert!(why.contains("kbsync.toml:11:"), "{why}");
    assert_eq!(job.names(), [document_name("a.md")], "nothing retired");
}

/// `git daemon` (git://): a first sync, a no-op, then the server gone:
/// unavailable, nothing retired, the URL setting named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_git_daemon_and_a_server_that_went_away() {
    let remote = Remote::new();
    remote.write("a.md", "a\n");
    remote.write("b/c.md", "c\n");
    remote.commit("first");
    let mut daemon = GitDaemon::start(&remote);
    let url = daemon.url.clone();
    let job = Job::start(remote, &url, "").await;
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(job.doc("b/c.md").as_deref(), Some("c\n"));
    job.remote.write("a.md", "a, edited\n");
    job.remote.commit("edit");
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!((r.hashed_files, r.unchanged), (1, 1));
    assert_eq!(job.doc("a.md").as_deref(), Some("a, edited\n"));

    daemon.stop();
    let r = job.sync().await;
    assert!(r.unscanned && !r.converged(), "{r:?}");
    let why = r.error.as_deref().unwrap_or_default();
    assert!(why.contains("`sync[0].git.url`"), "{why}");
    assert_eq!(job.names().len(), 2, "nothing retired");
}

/// Smart HTTP (`git http-backend`): a first sync and an edit over the
/// HTTP transport. A login is refused there: a token goes only over
/// https, and the config refuses one for an http URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_smart_http() {
    let remote = Remote::new();
    remote.write("a.md", "a\n");
    remote.commit("first");
    let http = SmartHttp::start(&remote).await;
    let url = http.url.clone();
    let job = Job::start(remote, &url, "").await;
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(job.doc("a.md").as_deref(), Some("a\n"));
    job.remote.write("a.md", "a2\n");
    job.remote.commit("two");
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(job.doc("a.md").as_deref(), Some("a2\n"));
    assert!(!http.world().requests.is_empty());
}

/// A server that asks for a login the job does not have (401) makes the
/// job unavailable and says what to set; nothing prompts for one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_the_server_refuses_makes_the_job_unavailable() {
    let remote = Remote::new();
    remote.write("a.md", "a\n");
    remote.commit("first");
    let http = SmartHttp::start(&remote).await;
    http.world().login = Some(("ci".into(), TOKEN.into()));
    let url = http.url.clone();
    let job = Job::start(remote, &url, "").await;
    let r = job.sync().await;
    assert!(r.unscanned && !r.converged(), "{r:?}");
    let why = r.error.as_deref().unwrap_or_default();
    assert!(
        why.contains("`sync[0].git.token_env`") && why.contains("HTTP 401"),
        "{why}"
    );
    assert!(why.contains("token_file"), "{why}");
    assert_eq!(job.names().len(), 0);
}

/// A symbolic link in the tree is reported and never followed, whatever
/// it points at (here, the job's own API key file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symbolic_link_is_reported_and_never_followed() {
    let job = Job::local("").await;
    let key = job.ws.dir.path().join("api.key");
    job.remote.write("a.md", "a\n");
    job.remote.link("leak.md", key.to_str().unwrap());
    job.remote.commit("with a link");
    let r = job.sync().await;
    assert!(!r.converged());
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    assert_eq!(r.skipped[0].path, "leak.md");
    assert!(
        r.skipped[0].reason.contains("never followed"),
        "{:?}",
        r.skipped
    );
    assert_eq!(job.names(), [document_name("a.md")]);
    // The next poll at the same commit reports it again: a skipped file
    // keeps the job from converging, and from the unmoved-branch shortcut.
    let r = job.sync().await;
    assert_eq!(r.skipped.len(), 1, "{r:?}");
}

/// The commit's facts can be mapped, and a link for citations made from
/// a template; a file unchanged by later commits keeps the facts of the
/// commit it was read at (no metadata change per commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_facts_and_the_web_link_are_mapped() {
    let mapping = r#"web_url = "https://git.example.com/org/handbook/blob/{commit}/{path}"
path = "docs"

[sync.metadata]
commit = { fact = "commit" }
committed = { fact = "commit_time" }
author = { fact = "author" }
ref = { fact = "ref" }
link = { fact = "web_url" }
title = { front_matter = "title" }
"#;
    let job = Job::local(mapping).await;
    job.remote
        .write("docs/leave.md", "---\ntitle: Leave\n---\nTwenty days.\n");
    job.remote.write("docs/other.md", "other\n");
    let first = job.remote.commit("leave");
    let time: i64 = job
        .remote
        .git(&["log", "-1", "--format=%ct"])
        .parse()
        .unwrap();
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    let meta = job.dify.world().metadata_of(&document_name("leave.md"));
    let expected = [
        ("commit", serde_json::json!(first)),
        ("committed", serde_json::json!(time)),
        ("author", serde_json::json!("Ann Author")),
        ("ref", serde_json::json!("refs/heads/main")),
        (
            "link",
            serde_json::json!(format!(
                "https://git.example.com/org/handbook/blob/{first}/docs/leave.md"
            )),
        ),
        ("title", serde_json::json!("Leave")),
    ];
    for (name, value) in expected {
        assert_eq!(meta.get(name), Some(&value), "{name} in {meta:?}");
    }
    job.remote.write("docs/other.md", "other, edited\n");
    let second = job.remote.commit("other");
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.outcome.as_ref().unwrap().metadata, 1, "{r:?}");
    let w = job.dify.world();
    assert_eq!(
        w.metadata_of(&document_name("leave.md"))["commit"],
        first.as_str()
    );
    assert_eq!(
        w.metadata_of(&document_name("other.md"))["commit"],
        second.as_str()
    );
}

/// The shortcut for an unmoved branch never hides a repair: a document
/// deleted upstream by hand is found by the audit and uploaded again,
/// although the branch did not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_deleted_by_hand_is_uploaded_again_though_the_branch_did_not_move() {
    let job = Job::local("").await;
    job.remote.write("a.md", "a\n");
    job.remote.write("b.md", "b\n");
    job.remote.commit("first");
    assert!(job.sync().await.converged());
    let id = job
        .dify
        .world()
        .doc_by_name(&document_name("a.md"))
        .unwrap()
        .id
        .clone();
    job.dify.world().docs.remove(&id);
    let r = job.ws.reconcile().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(job.doc("a.md").as_deref(), Some("a\n"), "uploaded again");
}

/// An empty branch where the state has records goes through the delete
/// guard, as an emptied folder does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_tree_is_refused_by_the_delete_guard() {
    let job = Job::local("").await;
    for i in 0..10 {
        job.remote.write(&format!("f{i}.md"), "x\n");
    }
    job.remote.commit("ten");
    assert!(job.sync().await.converged());
    job.remote.git(&["rm", "-q", "-r", "."]);
    job.remote.write("README.md", "moved elsewhere\n");
    job.remote.commit("emptied");
    let r = job.sync().await;
    assert!(r.refused.is_some(), "{r:?}");
    for i in 0..10 {
        assert!(job.doc(&format!("f{i}.md")).is_some(), "f{i}.md retired");
    }
}

/// A `path` that is not in the tree (mistyped, or moved away) makes the
/// job unavailable, naming `path`: never an emptied folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_not_in_the_tree_makes_the_job_unavailable() {
    let job = Job::local("path = \"docs\"").await;
    job.remote.write("docs/a.md", "a\n");
    job.remote.commit("first");
    assert!(job.sync().await.converged());
    job.remote.rename("docs/a.md", "handbook/a.md");
    job.remote.commit("moved");
    let r = job.sync().await;
    assert!(r.unscanned && !r.converged(), "{r:?}");
    let why = r.error.as_deref().unwrap_or_default();
    assert!(
        why.contains("the folder \"docs\" is not in the tree"),
        "{why}"
    );
    assert!(why.contains("`sync[0].git.path`"), "{why}");
    assert_eq!(job.names(), [document_name("a.md")], "nothing retired");
}

/// The shortcut for an unmoved branch holds only for the settings it was
/// listed under: a job whose `include` (or `path`, `max_file_size`,
/// `web_url`) changed lists the tree again at the same commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_filter_lists_the_tree_again_though_the_branch_did_not_move() {
    let job = Job::local("include = [\"*.md\"]").await;
    job.remote.write("a.md", "a\n");
    job.remote.write("b.txt", "b\n");
    job.remote.commit("first");
    assert!(job.sync().await.converged());
    assert_eq!(job.names(), [document_name("a.md")]);
    let config = std::fs::read_to_string(&job.ws.config_path)
        .unwrap()
        .replace("include = [\"*.md\"]", "include = [\"*.md\", \"*.txt\"]");
    std::fs::write(&job.ws.config_path, config).unwrap();
    let r = job.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(
        job.doc("b.txt").as_deref(),
        Some("b\n"),
        "the new filter applied"
    );
}
