//! The bad-input corpus: every kind of hostile or broken input kbsync must
//! survive, each with the exact words it reports. Nothing may crash the run,
//! and nothing may be dropped silently: what cannot be mirrored is named
//! with its reason, and its earlier upstream copy is kept.

mod support;

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use kbsync::sink::dify::document_name;
use support::fake_dify::{FakeDify, DATASET};
use support::{chmod, is_root, Workspace};

fn reason_for<'r>(r: &'r kbsync::reconcile::JobReport, needle: &str) -> &'r str {
    r.skipped
        .iter()
        .find(|s| s.path.contains(needle))
        .map(|s| s.reason.as_str())
        .unwrap_or_else(|| panic!("{needle} not reported as skipped: {:?}", r.skipped))
}

fn kbsync(config: &Path, args: &[&str], as_nobody: bool) -> (i32, String, String) {
    let cmd = if as_nobody {
        support::unprivileged(config)
    } else {
        Command::new(env!("CARGO_BIN_EXE_kbsync"))
    };
    support::run_binary(cmd, config, args)
}

/// A workspace the binary can run in as `nobody` (`kbsync(…, true)`):
/// it reaches the folders and writes its state; the key is readable.
fn unprivileged_workspace(fake: &FakeDify) -> Workspace {
    if is_root() && Command::new("setpriv").arg("--version").output().is_err() {
        panic!("running as root needs setpriv (util-linux) to test permissions");
    }
    let ws = Workspace::new(&fake.base_url(), DATASET, "delete", "", "");
    std::fs::create_dir_all(ws.dir.path().join("state")).unwrap();
    for p in [
        ws.dir.path().to_owned(),
        ws.dir.path().join("state"),
        ws.root.clone(),
    ] {
        chmod(&p, 0o777);
    }
    chmod(&ws.dir.path().join("api.key"), 0o644);
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_bad_names_loops_and_long_paths() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(
        &fake.base_url(),
        DATASET,
        "delete",
        "",
        "pages = { front_matter = \"pages\", type = \"number\" }",
    );
    let cfg = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(
        &ws.config_path,
        cfg.replace("root = \"docs\"", "root = \"docs\"\nfollow_symlinks = true"),
    )
    .unwrap();

    ws.write("good.md", "fine");
    // A FIFO would block a reader forever; a socket cannot be read at all.
    assert!(Command::new("mkfifo")
        .arg(ws.path("pipe.md"))
        .status()
        .unwrap()
        .success());
    let _socket = std::os::unix::net::UnixListener::bind(ws.path("sock.md")).unwrap();
    let device = support::is_root()
        && Command::new("mknod")
            .arg(ws.path("null.md"))
            .args(["c", "1", "3"])
            .status()
            .is_ok_and(|s| s.success());
    // A name that is not UTF-8 cannot become a document name.
    let bad = ws.root.join(std::ffi::OsStr::from_bytes(b"caf\xe9.md"));
    std::fs::write(&bad, "latin-1 name").unwrap();
    // A link back to its own folder: followed, it never ends.
    std::fs::create_dir_all(ws.path("loop")).unwrap();
    std::os::unix::fs::symlink("..", ws.path("loop/again")).unwrap();
    // Long: three 200-character folders and a 240-character file name.
    let long_key = format!(
        "{}/{}/{}/{}.md",
        "a".repeat(200),
        "b".repeat(200),
        "c".repeat(200),
        "d".repeat(240)
    );
    ws.write(&long_key, "deep");
    // A value the field's type cannot take.
    ws.write("bad-meta.md", "---\npages: many\n---\nbody");

    let r = ws.sync().await;
    assert_eq!(reason_for(&r, "pipe.md"), "not a regular file (fifo)");
    assert_eq!(reason_for(&r, "sock.md"), "not a regular file (socket)");
    if device {
        assert_eq!(
            reason_for(&r, "null.md"),
            "not a regular file (character device)"
        );
    }
    assert_eq!(
        reason_for(&r, "caf"),
        "file name is not valid UTF-8; rename it to mirror it"
    );
    assert!(
        reason_for(&r, "loop").contains("File system loop found"),
        "{:?}",
        r.skipped
    );
    let warning = r
        .plan
        .warnings
        .iter()
        .find(|(k, _)| k == "bad-meta.md")
        .map(|(_, w)| (w.field.clone(), w.message.clone()));
    assert_eq!(
        warning,
        Some((
            "pages".to_owned(),
            "value \"many\" is not a valid number".to_owned()
        ))
    );
    assert!(!r.converged(), "skipped files mean the mirror is not exact");

    let w = fake.world();
    let names: Vec<&str> = w.docs.values().map(|d| d.name.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(w.doc_by_name("good.md").is_some());
    let long = w.doc_by_name(&document_name(&long_key)).unwrap();
    assert!(long.name.chars().count() <= 200 && long.name.ends_with(".md"));
    assert_eq!(long.content, b"deep");
    // Uploaded without the value it could not take.
    assert!(!w.metadata_of("bad-meta.md").contains_key("pages"));
}

/// Front matter a YAML reader refuses, and an alias bomb: 10 anchors of
/// 10 aliases each stand for 10^10 values in 400 bytes.
fn alias_bomb() -> String {
    let mut yaml = String::from("---\ntitle: Bomb\nl0: &l0 [lol]\n");
    for i in 1..=10 {
        let refs = vec![format!("*l{}", i - 1); 10].join(",");
        yaml.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
    }
    yaml + "---\nbody\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_front_matter_is_reported_and_the_file_uploaded_without_it() {
    let (fake, ws) = support::with_fake(
        "delete",
        "title = { front_matter = \"title\" }\nowner = { front_matter = \"owner\" }",
    )
    .await;
    ws.write("good.md", "---\ntitle: Fine\n---\nbody\n");
    ws.write(
        "notes/unclosed.md",
        "---\nowner: ana\ntitle: \"never closed\n---\nbody\n",
    );
    ws.write("bad.md", "+++\ntitle = 'T'\nowner =\n+++\nbody\n");
    ws.write("bomb.md", &alias_bomb());

    let started = std::time::Instant::now();
    let (code, _, err) = kbsync(&ws.config_path, &["--reconcile"], false);
    let took = started.elapsed();
    assert_eq!(code, 0, "{err}");
    for (key, words) in [
        ("notes/unclosed.md", "line 3"),
        ("bad.md", "line 3"),
        ("bomb.md", "alias replay limit"),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(key) && l.contains("front matter"))
            .unwrap_or_else(|| panic!("no warning names {key}: {err}"));
        assert!(line.contains(words), "{line}");
    }
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    let w = fake.world();
    assert_eq!(w.docs.len(), 4, "every file is uploaded");
    assert_eq!(w.metadata_of("good.md")["title"], "Fine");
    for name in ["bad.md", "bomb.md", &document_name("notes/unclosed.md")] {
        assert!(
            w.metadata_of(name).is_empty(),
            "{name}: no facts from a broken header"
        );
    }
}

#[tokio::test]
async fn an_impossible_date_is_reported_and_left_unset() {
    let (fake, ws) = support::with_fake(
        "delete",
        "reviewed = { front_matter = \"reviewed\", type = \"time\" }",
    )
    .await;
    ws.write("leap.md", "---\nreviewed: 2024-02-29\n---\n");
    ws.write("never.md", "---\nreviewed: 2026-02-31\n---\n");
    let r = ws.sync().await;
    let warnings: Vec<_> = r
        .plan
        .warnings
        .iter()
        .map(|(k, w)| (k.as_str(), w.field.as_str(), w.message.as_str()))
        .collect();
    assert_eq!(
        warnings,
        [(
            "never.md",
            "reviewed",
            "value \"2026-02-31\" is not a valid time"
        )]
    );
    let w = fake.world();
    assert_eq!(w.metadata_of("leap.md")["reviewed"], 1_709_164_800);
    assert!(!w.metadata_of("never.md").contains_key("reviewed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_that_vanish_or_change_between_scan_and_upload() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(
        &fake.base_url(),
        DATASET,
        "delete",
        "upload_concurrency = 1",
        "",
    );
    for k in ["a.md", "b.md", "c.md"] {
        ws.write(k, &format!("{k} v1"));
    }
    // Uploads go one at a time, in key order: when a.md's arrives, b.md is
    // removed and c.md rewritten, after the scan and before their reads.
    let (b, c) = (ws.path("b.md"), ws.path("c.md"));
    fake.world().on_arrival = Some(Box::new(move |line| {
        if line.contains("create-by-file") && b.exists() {
            std::fs::remove_file(&b).unwrap();
            std::fs::write(&c, "c.md v2").unwrap();
        }
    }));
    let r = ws.sync().await;
    let o = r.outcome.as_ref().unwrap();
    assert_eq!(o.failures.len(), 1, "{:?}", o.failures);
    assert_eq!(o.failures[0].key, "b.md");
    assert_eq!(o.failures[0].error.code, "vanished");
    assert!(o.failures[0]
        .error
        .message
        .ends_with("disappeared before its upload; the next scan sees it gone"));
    // What was sent is what is recorded: c.md's new bytes.
    assert_eq!(
        fake.world().doc_by_name("c.md").unwrap().content,
        b"c.md v2"
    );
    // b.md's create was never sent: nothing upstream to look for.
    let mark = fake.requests();
    let r = ws.sync().await;
    assert!(r.converged(), "{:?}", r.outcome);
    let w = fake.world();
    assert_eq!(w.docs.len(), 2);
    assert!(w.doc_by_name("b.md").is_none());
    assert_eq!(
        w.log.len() - mark,
        0,
        "a create that was never sent needs no lookup: {:?}",
        &w.log[mark..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_files_and_folders_are_reported_and_their_copies_kept() {
    let fake = FakeDify::start().await;
    let ws = unprivileged_workspace(&fake);
    ws.write("open.md", "anyone");
    ws.write("secret.md", "mine");
    ws.write("private/a.md", "a");
    ws.write("private/b.md", "b");
    chmod(&ws.path("private"), 0o777);

    let (code, _, err) = kbsync(&ws.config_path, &["--reconcile"], true);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("is readable by other users (mode 644); restrict it: chmod 600"),
        "{err}"
    );
    assert_eq!(fake.world().docs.len(), 4);

    support::chmod(&ws.path("secret.md"), 0o000);
    support::chmod(&ws.path("private"), 0o000);
    let (code, out, _) = kbsync(&ws.config_path, &["--reconcile"], true);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("skipped secret.md: cannot read: Permission denied (os error 13)"),
        "{out}"
    );
    assert!(out.contains("private"), "{out}");
    assert!(out.contains("Permission denied"), "{out}");
    assert_eq!(
        fake.world().docs.len(),
        4,
        "unreadable is not deleted: every copy is kept"
    );

    support::chmod(&ws.path("secret.md"), 0o644);
    support::chmod(&ws.path("private"), 0o777);
    let (code, out, _) = kbsync(&ws.config_path, &["--reconcile"], true);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_is_refused_and_left_untouched() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "delete", "", "");
    ws.write("a.md", "a");
    let state = ws.dir.path().join("state/kbsync.db");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    let garbage = b"SQLite format 3\0 but then nothing a database would hold ...".repeat(100);
    std::fs::write(&state, &garbage).unwrap();
    let (code, _, err) = kbsync(&ws.config_path, &["--reconcile"], false);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("is not a kbsync state database or is corrupt; it was left untouched"),
        "{err}"
    );
    assert_eq!(std::fs::read(&state).unwrap(), garbage);
    assert_eq!(fake.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_locked_by_another_program_or_kbsync_is_refused() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "delete", "", "");
    ws.write("a.md", "a");
    let (code, _, err) = kbsync(&ws.config_path, &["--reconcile"], false);
    assert_eq!(code, 0, "{err}");
    let state = ws.dir.path().join("state/kbsync.db");

    // Another kbsync holds it (this test process takes kbsync's lock).
    let lock = kbsync::state::StateLock::acquire(&state).unwrap();
    let (code, _, err) = kbsync(&ws.config_path, &["--reconcile"], false);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "is in use by another kbsync (pid {}); stop it first",
            std::process::id()
        )),
        "{err}"
    );
    drop(lock);

    // Another program holds a write lock inside SQLite itself: kbsync waits
    // (busy timeout), then says who to look for.
    let other = rusqlite::Connection::open(&state).unwrap();
    other.execute_batch("BEGIN EXCLUSIVE").unwrap();
    ws.write("b.md", "b");
    let (code, _, err) = kbsync(&ws.config_path, &["--reconcile"], false);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("database is locked"), "{err}");
    assert!(
        err.contains("another process holds the state file"),
        "{err}"
    );
    other.execute_batch("ROLLBACK").unwrap();
    drop(other);
    let (code, _, err) = kbsync(&ws.config_path, &["--reconcile"], false);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fake.world().docs.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_and_one_excludes_are_refused_quickly_naming_the_key_and_line() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "delete", "", "");
    let config = std::fs::read_to_string(&ws.config_path).unwrap();
    let globs: String = (0..10_001)
        .map(|i| format!("  \"generated/part{i}/**\",\n"))
        .collect();
    let config = config.replace(
        "root = \"docs\"",
        &format!("root = \"docs\"\nexclude = [\n{globs}]"),
    );
    std::fs::write(&ws.config_path, &config).unwrap();
    // The 10,001st pattern's line.
    let line = config
        .lines()
        .position(|l| l.contains("\"generated/part10000/**\""))
        .unwrap()
        + 1;
    let started = std::time::Instant::now();
    let (code, _, err) = kbsync(&ws.config_path, &["--dry-run"], false);
    let took = started.elapsed();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("kbsync.toml:{line}:")) && err.contains("sync[0].folder.exclude"),
        "{err}"
    );
    assert!(err.contains("at most 10000"), "{err}");
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    assert_eq!(fake.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_too_large_to_compile_are_a_config_error_naming_the_key() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "delete", "", "");
    // One valid pattern whose automaton is over globset's 10 MiB.
    let alternatives: Vec<String> = (0..50_000).map(|i| format!("x{i}y?z*")).collect();
    let config = std::fs::read_to_string(&ws.config_path).unwrap().replace(
        "root = \"docs\"",
        &format!(
            "root = \"docs\"\ninclude = [\"*.md\"]\nexclude = [\"{{{}}}\"]",
            alternatives.join(",")
        ),
    );
    std::fs::write(&ws.config_path, &config).unwrap();
    let line = config
        .lines()
        .position(|l| l.starts_with("exclude"))
        .unwrap()
        + 1;
    let (code, _, err) = kbsync(&ws.config_path, &["--dry-run"], false);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("kbsync.toml:{line}:12:")) && err.contains("sync[0].folder.exclude"),
        "{err}"
    );
    assert!(
        err.contains("the pattern cannot be compiled (error building NFA)"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_type_the_sink_refuses_is_never_opened() {
    let fake = FakeDify::start().await;
    let ws = unprivileged_workspace(&fake);
    ws.write("open.md", "anyone");
    ws.write("tool.exe", "MZ");
    // Unreadable: had the scan opened it, it would say "cannot read".
    chmod(&ws.path("tool.exe"), 0o000);
    let (code, out, err) = kbsync(&ws.config_path, &["--reconcile"], true);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("skipped tool.exe: Dify does not take .exe files (allowed_extensions:"),
        "{out}"
    );
    assert!(err.contains("files=1 hashed=1 "), "{err}");
    let w = fake.world();
    assert_eq!(w.docs.len(), 1);
    assert!(w.doc_by_name("open.md").is_some());
}
