//! The service end to end: the real binary watching a temp folder, pushing
//! into the in-process fake Dify. Every wait is on an event (a request the
//! fake sees, a datagram on the sd_notify socket, the process exiting),
//! each with a deadline; none is a fixed sleep.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use kbsync::sink::dify::document_name;
use support::fake_dify::{FakeDify, Fault, World};
use support::service::{Daemon, WAIT};
use support::{set_mtime, Workspace};

async fn setup(policy: &str, metadata: &str, daemon: &str) -> (FakeDify, Workspace) {
    let (fake, ws) = support::with_fake(policy, metadata).await;
    ws.append_config(&format!("\n[daemon]\n{daemon}\n"));
    (fake, ws)
}

fn content_of(w: &World, key: &str) -> Option<Vec<u8>> {
    w.doc_by_name(&document_name(key))
        .map(|d| d.content.clone())
}

fn has(w: &World, key: &str, content: &str) -> bool {
    content_of(w, key).as_deref() == Some(content.as_bytes())
}

fn id_of(fake: &FakeDify, key: &str) -> String {
    fake.world()
        .doc_by_name(&document_name(key))
        .map(|d| d.id.clone())
        .unwrap_or_else(|| panic!("no document for {key}"))
}

/// The binary beside the running service: exit code, stdout, stderr.
fn cli(ws: &Workspace, args: &[&str]) -> (i32, String, String) {
    support::run_binary(
        std::process::Command::new(env!("CARGO_BIN_EXE_kbsync")),
        &ws.config_path,
        args,
    )
}

fn status_json(ws: &Workspace) -> serde_json::Value {
    let (code, out, err) = cli(ws, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[tokio::test]
async fn follows_creates_edits_renames_and_deletes_as_they_happen() {
    let (fake, ws) = setup("delete", "", "debounce_ms = 100").await;
    ws.write("a.md", "alpha v1");
    ws.write("b.md", "bravo");
    let mut d = Daemon::spawn(&ws, "1", &[("WATCHDOG_USEC", "200000")]);
    d.notified("READY=1").await;
    d.notified("WATCHDOG=1").await;
    fake.wait_until("the first full pass", WAIT, |w| {
        has(w, "a.md", "alpha v1") && has(w, "b.md", "bravo")
    })
    .await;
    let a_id = id_of(&fake, "a.md");

    ws.write("a.md", "alpha v2");
    fake.wait_until("the edit", WAIT, |w| has(w, "a.md", "alpha v2"))
        .await;

    // New folders are watched as they appear, files inside them included.
    ws.write("new/deep/x.md", "nested");
    fake.wait_until("the new subfolder", WAIT, |w| {
        has(w, "new/deep/x.md", "nested")
    })
    .await;

    std::fs::rename(ws.path("b.md"), ws.path("c.md")).unwrap();
    fake.wait_until("the rename", WAIT, |w| {
        has(w, "c.md", "bravo") && content_of(w, "b.md").is_none()
    })
    .await;

    std::fs::remove_dir_all(ws.path("new")).unwrap();
    fake.wait_until("the folder removal", WAIT, |w| {
        content_of(w, "new/deep/x.md").is_none()
    })
    .await;

    // Editors: write a temporary file and rename it over the original, or
    // truncate and rewrite in place. Either is one update of the same
    // document, never a delete and a create.
    let mark = fake.requests();
    std::fs::write(ws.path(".a.md.kate-swp"), "alpha v3").unwrap();
    std::fs::write(ws.path("a.md.tmp~"), "alpha v3").unwrap();
    std::fs::rename(ws.path("a.md.tmp~"), ws.path("a.md")).unwrap();
    std::fs::remove_file(ws.path(".a.md.kate-swp")).unwrap();
    fake.wait_until("the rename-over save", WAIT, |w| has(w, "a.md", "alpha v3"))
        .await;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(ws.path("a.md")).unwrap();
        f.write_all(b"alpha ").unwrap();
        f.flush().unwrap();
        f.write_all(b"v4").unwrap();
    }
    fake.wait_until("the in-place save", WAIT, |w| has(w, "a.md", "alpha v4"))
        .await;
    assert_eq!(id_of(&fake, "a.md"), a_id, "same document all along");
    {
        let w = fake.world();
        assert_eq!(w.count_since(mark, "create-by-file"), 0);
        assert_eq!(w.count_since(mark, "DELETE"), 0);
        assert!(w.duplicate_names().is_empty());
        let names: Vec<&str> = w.docs.values().map(|d| d.name.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
    d.stop().await;
}

#[tokio::test]
async fn a_burst_of_a_thousand_writes_becomes_a_handful_of_batch_calls() {
    let (fake, ws) = setup(
        "disable",
        r#"modified = { fact = "modified" }"#,
        "debounce_ms = 300",
    )
    .await;
    for i in 0..1000 {
        ws.write(&format!("d{}/f{i:04}.md", i % 10), &format!("file {i}"));
    }
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    fake.wait_until("1,000 documents with metadata", WAIT, |w| {
        w.docs.len() == 1000 && w.docs.values().all(|d| !d.metadata.is_empty())
    })
    .await;

    let mark = fake.requests();
    // Same bytes, new modification time: only the `modified` field changes.
    for i in 0..1000 {
        set_mtime(
            &ws.path(&format!("d{}/f{i:04}.md", i % 10)),
            1_700_000_000 + i,
        );
    }
    fake.wait_until("all 1,000 metadata updates", WAIT, |w| {
        (0..1000).all(|i| {
            w.metadata_of(&document_name(&format!("d{}/f{i:04}.md", i % 10)))
                .get("modified")
                == Some(&serde_json::json!(1_700_000_000 + i))
        })
    })
    .await;
    let log = d.stop().await;
    let w = fake.world();
    let batches = w.count_since(mark, "documents/metadata");
    assert_eq!(w.count_since(mark, "by-file"), 0, "no uploads");
    assert!(
        (10..=12).contains(&batches),
        "{batches} metadata calls for 1,000 changes; log:\n{log}"
    );
}

#[tokio::test]
async fn sigterm_during_a_push_then_restart_loses_and_duplicates_nothing() {
    let (fake, ws) = setup("disable", "", "debounce_ms = 50\nshutdown_timeout_secs = 1").await;
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    // Uploads are applied at once but answered only after the shutdown
    // grace period: the daemon has to give up on them mid-flight.
    fake.world().inject(
        None,
        "create-by-file",
        Fault::ApplyThenStall(Duration::from_secs(5)),
        4,
    );
    for i in 0..12 {
        ws.write(&format!("n{i:02}.md"), &format!("note {i}"));
    }
    fake.wait_until("an upload in flight", WAIT, |w| {
        w.arrived.iter().any(|r| r.contains("create-by-file"))
    })
    .await;
    let first = d.stop().await;
    assert!(first.contains("abandoning in-flight calls"), "{first}");
    let before_restart = fake.world().docs.len();
    assert!(before_restart < 12, "the push was cut short");

    let mut d = Daemon::spawn(&ws, "2", &[]);
    d.notified("READY=1").await;
    fake.wait_until("all 12 notes", WAIT, |w| {
        (0..12).all(|i| has(w, &format!("n{i:02}.md"), &format!("note {i}")))
    })
    .await;
    let second = d.stop().await;
    let w = fake.world();
    assert!(w.duplicate_names().is_empty(), "{:?}", w.duplicate_names());
    assert_eq!(w.docs.len(), 12, "{second}");
}

#[tokio::test]
async fn sighup_with_a_broken_config_keeps_the_running_one() {
    let (fake, ws) = setup("disable", "", "debounce_ms = 50").await;
    ws.write("one.md", "one");
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    fake.wait_until("the first file", WAIT, |w| has(w, "one.md", "one"))
        .await;

    let good = std::fs::read_to_string(&ws.config_path).unwrap();
    let broken = good.replace("debounce_ms = 50", "debounce_ms = \"soon\"");
    std::fs::write(&ws.config_path, &broken).unwrap();
    d.signal("HUP");
    d.notified("STATUS=reloading").await;
    d.notified("STATUS=watching").await;
    assert!(
        d.log_text().contains("configuration reload rejected"),
        "{}",
        d.log_text()
    );
    assert!(d.log_text().contains("kbsync.toml:"), "names file and line");

    // Still watching and pushing with the old configuration.
    ws.write("two.md", "two");
    fake.wait_until("a file after the bad reload", WAIT, |w| {
        has(w, "two.md", "two")
    })
    .await;

    // A good config is taken: a new metadata field appears on every doc.
    let with_owner = good.replace(
        "[sync.metadata]",
        "[sync.metadata]\nowner = { value = \"docs-team\" }",
    );
    std::fs::write(&ws.config_path, with_owner).unwrap();
    d.signal("HUP");
    fake.wait_until("the new field on both documents", WAIT, |w| {
        ["one.md", "two.md"].iter().all(|k| {
            w.metadata_of(&document_name(k)).get("owner") == Some(&serde_json::json!("docs-team"))
        })
    })
    .await;
    let log = d.stop().await;
    assert!(log.contains("configuration reloaded"), "{log}");
}

#[tokio::test]
async fn status_reads_the_state_while_the_service_runs() {
    // The job lets .exe through; the server refuses it, as Dify's create
    // does: 400 invalid_param with no message.
    let fake = FakeDify::start().await;
    let ws = Workspace::new(
        &fake.base_url(),
        support::fake_dify::DATASET,
        "disable",
        r#"allowed_extensions = ["md", "exe"]"#,
        "",
    );
    ws.append_config("\n[daemon]\ndebounce_ms = 50\n");
    ws.write("ok.md", "fine");
    ws.write("tool.exe", "not a document type Dify takes");
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    fake.wait_until("the upload and the refusal", WAIT, |w| {
        has(w, "ok.md", "fine")
            && w.log
                .iter()
                .any(|l| l.path.contains("create-by-file") && l.status == 400)
    })
    .await;
    // The refusal is recorded right after the answer; the run log after the
    // pass. Wait for the pass to end: its STATUS line follows it.
    d.notified("STATUS=watching").await;

    let v = status_json(&ws);
    let job = &v[0];
    assert_eq!(job["job"], "docs");
    assert_eq!(job["tracked"], 2);
    assert_eq!(job["in_sync"], 1);
    assert_eq!(job["pending_upload"], 1);
    assert_eq!(job["failed"][0]["key"], "tool.exe");
    assert_eq!(job["failed"][0]["code"], "invalid_param");
    assert_eq!(job["last_run"]["converged"], false);

    let (code, text, err) = cli(&ws, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains(
            "2 tracked, 1 in sync, 1 pending upload, 0 pending restore, 0 pending removal, 1 failed"
        ),
        "{text}"
    );
    assert!(
        text.contains("failed create tool.exe [HTTP 400 invalid_param]"),
        "{text}"
    );
    assert!(
        text.contains("outbox: 1 step(s) queued, 0 retrying, 1 parked"),
        "{text}"
    );

    // A parked refusal is not retried by later passes of unrelated
    // changes: one more file means one more create, not two.
    let creates = |w: &World| w.count_since(0, "create-by-file");
    assert_eq!(creates(&fake.world()), 2);
    ws.write("more.md", "more");
    fake.wait_until("more.md", WAIT, |w| has(w, "more.md", "more"))
        .await;
    d.notified("STATUS=watching").await;
    assert_eq!(creates(&fake.world()), 3);

    // `kbsync retry` beside the running service: it tries again within
    // the outbox check interval (and Dify refuses again).
    let (code, said, _) = cli(&ws, &["retry"]);
    assert!(
        code == 0 && said.contains("1 step(s) will be tried again"),
        "{said}"
    );
    fake.wait_until("the retried create", WAIT, |w| creates(w) == 4)
        .await;
    d.stop().await;
}

#[tokio::test]
async fn web_pages_are_polled_beside_a_watched_folder() {
    // Two jobs into one dataset: each names its documents in its own space.
    let fake = FakeDify::start().await;
    let ws = Workspace::new(
        &fake.base_url(),
        support::fake_dify::DATASET,
        "disable",
        "name_prefix = \"files/\"",
        "",
    );
    ws.append_config("\n[daemon]\ndebounce_ms = 50\n");
    let web = support::fake_web::FakeWeb::start().await;
    web.site().put("/status.md", "all good", "text/markdown");
    ws.append_config(&format!(
        r#"
[[sync]]
name = "site"

[sync.web]
urls = ["{url}"]
poll_interval_secs = 1

[sync.dify]
base_url = "{base}"
dataset_id = "{dataset}"
api_key_file = "api.key"
name_prefix = "web/"
"#,
        url = web.url("/status.md"),
        base = fake.base_url(),
        dataset = support::fake_dify::DATASET,
    ));
    ws.write("local.md", "from disk");
    let page_key = format!("web/{}/status.md", web.addr);
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    fake.wait_until("both jobs' first pass", WAIT, |w| {
        has(w, "files/local.md", "from disk") && has(w, &page_key, "all good")
    })
    .await;
    web.site().put("/status.md", "degraded", "text/markdown");
    fake.wait_until("the changed page", WAIT, |w| has(w, &page_key, "degraded"))
        .await;
    d.stop().await;
}

#[tokio::test]
async fn a_backed_off_step_waits_across_a_restart_until_its_time_or_kbsync_retry() {
    let (fake, ws) = setup("disable", "", "debounce_ms = 50").await;
    // More 503s than one pass retries (1 + max_retries = 9 attempts).
    fake.world().inject(
        None,
        "create-by-file",
        Fault::status(503, "service_unavailable", "Service Unavailable"),
        9,
    );
    ws.write("a.md", "patience");
    let creates = |w: &World| w.count_since(0, "create-by-file");
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    fake.wait_until("nine refused creates", WAIT, |w| creates(w) == 9)
        .await;
    d.notified("STATUS=watching").await;
    let v = status_json(&ws);
    let retrying = &v[0]["retrying"][0];
    assert_eq!(retrying["key"], "a.md");
    assert_eq!(retrying["status"], 503);
    assert_eq!(retrying["attempts"], 1);
    let wait = retrying["next_attempt_at"].as_i64().unwrap() - kbsync::state::unix_now();
    assert!((20..=40).contains(&wait), "next attempt in {wait}s");
    d.stop().await;

    // A restart does not forget the backoff: the first full pass leaves
    // the step alone.
    let mut d = Daemon::spawn(&ws, "2", &[]);
    d.notified("READY=1").await;
    d.notified("STATUS=watching").await;
    assert_eq!(creates(&fake.world()), 9);
    assert!(
        d.log_text().contains("wait out a backoff, the first until"),
        "{}",
        d.log_text()
    );

    // `kbsync retry` cuts the wait short.
    assert_eq!(cli(&ws, &["retry"]).0, 0);
    fake.wait_until("the retried upload", WAIT, |w| has(w, "a.md", "patience"))
        .await;
    d.stop().await;
}

#[tokio::test]
async fn the_service_refuses_an_emptied_root_until_retry_allow_deletes() {
    let (fake, ws) = setup("delete", "", "debounce_ms = 50").await;
    for i in 0..12 {
        ws.write(&format!("n{i:02}.md"), "note");
    }
    assert!(ws.sync().await.converged());
    for i in 0..12 {
        ws.remove(&format!("n{i:02}.md"));
    }
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    d.notified("STATUS=watching").await;
    let deletes = |w: &World| w.log.iter().filter(|l| l.method == "DELETE").count();
    assert_eq!(deletes(&fake.world()), 0);
    assert_eq!(fake.world().docs.len(), 12);
    let v = status_json(&ws);
    let last = v[0]["last_run"]["summary"].as_str().unwrap().to_owned();
    assert!(last.contains("refused to retire 12 of 12"), "{last}");

    let (code, said, err) = cli(&ws, &["retry", "--allow-deletes"]);
    assert_eq!(code, 0, "{err}");
    assert!(said.contains("may retire beyond max_delete"), "{said}");
    fake.wait_until("the allowed deletions", WAIT, |w| w.docs.is_empty())
        .await;
    assert_eq!(deletes(&fake.world()), 12);
    d.stop().await;
}

#[tokio::test]
async fn the_service_audits_at_start_and_repairs_drift() {
    let (fake, ws) = setup("disable", "", "debounce_ms = 50").await;
    ws.write("a.md", "alpha");
    ws.write("b.md", "beta");
    assert!(ws.sync().await.converged());
    // Made by hand while the service was down.
    let id = id_of(&fake, "a.md");
    fake.world().docs.get_mut(&id).unwrap().enabled = false;
    let gone = id_of(&fake, "b.md");
    fake.world().docs.remove(&gone);
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    fake.wait_until("the drift repaired", WAIT, |w| {
        w.docs.get(&id).is_some_and(|doc| doc.enabled) && has(w, "b.md", "beta")
    })
    .await;
    d.notified("STATUS=watching").await;
    let log = d.stop().await;
    assert!(log.contains("audited the upstream"), "{log}");
}

#[tokio::test]
async fn the_service_empties_the_state_files_log_when_idle() {
    let (fake, ws) = setup("keep", "", "debounce_ms = 50").await;
    for i in 0..50 {
        ws.write(&format!("f{i}.md"), "text");
    }
    let wal = {
        let mut p = ws.config().state_path.into_os_string();
        p.push("-wal");
        PathBuf::from(p)
    };
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    fake.wait_until("the first sync", WAIT, |w| w.docs.len() == 50)
        .await;
    // The STATUS line follows the pass and the checkpoint after it.
    d.notified("STATUS=watching").await;
    let len = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(len, 0, "the log holds {len} bytes after an idle full pass");
    d.stop().await;
}

/// The number in the service's STATUS line: "(N inotify watches)".
fn watches(status: &str) -> usize {
    let end = status.find(" inotify watches").expect("a watch count");
    let start = status[..end].rfind('(').unwrap() + 1;
    status[start..end].parse().unwrap()
}

#[tokio::test]
async fn only_folders_the_scan_enters_are_watched() {
    let (fake, ws) = setup("keep", "", "debounce_ms = 50").await;
    ws.append_config("");
    let text = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(
        &ws.config_path,
        text.replace(
            "root = \"docs\"",
            "root = \"docs\"\nexclude = [\"**/node_modules/**\"]",
        ),
    )
    .unwrap();
    ws.write("a/x.md", "x");
    ws.write("b/y.md", "y");
    ws.write(".hidden/z.md", "z");
    for i in 0..300 {
        std::fs::create_dir_all(ws.root.join(format!("web/node_modules/pkg{i}/lib"))).unwrap();
    }
    ws.write("web/app.md", "app");
    // A symlink to a tree outside the root: not followed by default.
    let outside = ws.dir.path().join("outside");
    for i in 0..50 {
        std::fs::create_dir_all(outside.join(format!("d{i}"))).unwrap();
    }
    std::os::unix::fs::symlink(&outside, ws.root.join("link")).unwrap();

    let mut d = Daemon::spawn(&ws, "1", &[]);
    let status = d.notified("STATUS=watching").await;
    // docs, a, b, web, and the root's parent.
    assert_eq!(watches(&status), 5, "{status}");
    fake.wait_until("the first sync", WAIT, |w| w.docs.len() == 3)
        .await;
    // A folder made later is watched too, and its files are seen.
    ws.write("c/new.md", "new");
    fake.wait_until("c/new.md", WAIT, |w| has(w, "c/new.md", "new"))
        .await;
    ws.write("c/new.md", "edited");
    fake.wait_until("the edit in c/", WAIT, |w| has(w, "c/new.md", "edited"))
        .await;
    d.stop().await;
}

/// With `follow_symlinks`, a link to a folder inside the root is entered
/// and watched; one to a folder outside is neither.
#[tokio::test]
async fn a_linked_folder_outside_the_root_is_not_watched() {
    let (fake, ws) = setup("keep", "", "debounce_ms = 50").await;
    ws.folder_setting("follow_symlinks = true");
    ws.write("a/x.md", "x");
    std::os::unix::fs::symlink(ws.path("a"), ws.path("inside")).unwrap();
    let outside = ws.dir.path().join("outside");
    for i in 0..20 {
        std::fs::create_dir_all(outside.join(format!("d{i}"))).unwrap();
    }
    std::os::unix::fs::symlink(&outside, ws.path("ext")).unwrap();

    let mut d = Daemon::spawn(&ws, "1", &[]);
    let status = d.notified("STATUS=watching").await;
    // docs, a (inside is the same folder: the same watch), and the root's
    // parent.
    assert_eq!(watches(&status), 3, "{status}");
    fake.wait_until("the first sync", WAIT, |w| w.docs.len() == 2)
        .await;
    d.stop().await;
}

#[tokio::test]
async fn a_root_moved_away_and_replaced_is_watched_anew() {
    let (fake, ws) = setup("keep", "", "debounce_ms = 50").await;
    ws.write("old.md", "old");
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    fake.wait_until("the first sync", WAIT, |w| has(w, "old.md", "old"))
        .await;

    // A deploy: the new tree is built beside the root, then swapped in.
    let staged = ws.dir.path().join("docs.new");
    std::fs::create_dir_all(staged.join("sub")).unwrap();
    std::fs::write(staged.join("old.md"), "old").unwrap();
    std::fs::write(staged.join("sub/fresh.md"), "fresh").unwrap();
    std::fs::rename(&ws.root, ws.dir.path().join("docs.old")).unwrap();
    std::fs::rename(&staged, &ws.root).unwrap();
    fake.wait_until("the new tree's file", WAIT, |w| {
        has(w, "sub/fresh.md", "fresh")
    })
    .await;
    // Edits in the new tree are seen: it is the one watched now.
    ws.write("sub/fresh.md", "edited in the new tree");
    fake.wait_until("the edit", WAIT, |w| {
        has(w, "sub/fresh.md", "edited in the new tree")
    })
    .await;
    // And the old tree is not: an edit there is no change.
    let before = fake.world().log.len();
    std::fs::write(ws.dir.path().join("docs.old/old.md"), "stale edit").unwrap();
    ws.write("marker.md", "m");
    fake.wait_until("the marker", WAIT, |w| has(w, "marker.md", "m"))
        .await;
    assert!(has(&fake.world(), "old.md", "old"));
    assert!(fake.world().log.len() > before);
    d.stop().await;
}

#[tokio::test]
async fn a_symlinked_root_swapped_to_a_new_release_is_followed() {
    let (fake, ws) = setup("keep", "", "debounce_ms = 50").await;
    let releases = ws.dir.path().join("releases");
    for (v, body) in [("v1", "one"), ("v2", "two")] {
        std::fs::create_dir_all(releases.join(v)).unwrap();
        std::fs::write(releases.join(v).join("notes.md"), body).unwrap();
    }
    let current = ws.dir.path().join("current");
    std::os::unix::fs::symlink(releases.join("v1"), &current).unwrap();
    let text = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(
        &ws.config_path,
        text.replace("root = \"docs\"", "root = \"current\""),
    )
    .unwrap();
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    fake.wait_until("v1", WAIT, |w| has(w, "notes.md", "one"))
        .await;

    // `ln -sfn releases/v2 current`: a new link renamed over the old.
    let tmp = ws.dir.path().join("current.tmp");
    std::os::unix::fs::symlink(releases.join("v2"), &tmp).unwrap();
    std::fs::rename(&tmp, &current).unwrap();
    fake.wait_until("v2", WAIT, |w| has(w, "notes.md", "two"))
        .await;
    std::fs::write(releases.join("v2/notes.md"), "two, edited").unwrap();
    fake.wait_until("the edit in v2", WAIT, |w| {
        has(w, "notes.md", "two, edited")
    })
    .await;
    d.stop().await;
}

#[tokio::test]
async fn sigterm_while_a_large_file_is_hashed_exits_within_the_timeout() {
    let (_fake, ws) = setup("keep", "", "debounce_ms = 50\nshutdown_timeout_secs = 1").await;
    let text = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(
        &ws.config_path,
        text.replace(
            "root = \"docs\"",
            "root = \"docs\"\nmax_file_size = \"64GB\"",
        ),
    )
    .unwrap();
    // 16 GB of holes: reading it takes many seconds, and no disk.
    let big = std::fs::File::create(ws.root.join("big.pdf")).unwrap();
    big.set_len(16 << 30).unwrap();
    drop(big);
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    // The first pass begins at once, and its reading with it.
    let started = std::time::Instant::now();
    d.signal("TERM");
    let status = d.exit().await;
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(2),
        "exit took {took:?} with shutdown_timeout_secs = 1"
    );
}

#[tokio::test]
async fn during_an_outage_retries_look_only_at_the_items_due() {
    let (fake, ws) = setup("keep", "", "debounce_ms = 50").await;
    // Fewer than the ten "down" answers that rest the upstream.
    for i in 0..8 {
        ws.write(&format!("f{i:02}.md"), "text");
    }
    // Uploads are down for maintenance (503); each is tried once a pass.
    let text = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(
        &ws.config_path,
        text.replace("max_retries = 8", "max_retries = 0"),
    )
    .unwrap();
    fake.world().inject(
        None,
        "create-by-file",
        Fault::status(503, "service_unavailable", "Down for maintenance."),
        u32::MAX,
    );
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    d.notified("STATUS=watching").await;
    // Every create failed and waits out its backoff; `retry` makes them due.
    let (code, said, _) = cli(&ws, &["retry"]);
    assert_eq!(code, 0, "{said}");
    d.notified("STATUS=watching").await;
    let log = d.stop().await;
    let scans: Vec<&str> = log.lines().filter(|l| l.contains(" scanned ")).collect();
    assert!(scans.len() >= 2, "{log}");
    assert!(scans[0].contains("scope=all"), "{}", scans[0]);
    assert!(
        scans[1..].iter().all(|l| l.contains("scope=8 paths")),
        "a retry walked more than the items due:\n{}",
        scans.join("\n")
    );
}
