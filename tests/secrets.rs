//! Secrets stay secret: a key pasted where a name, path, id or value
//! belongs is refused at load without being echoed; a credential never
//! follows a redirect to another host; no link out of the root, and none
//! of kbsync's own files (key files, credentials, config, state file) is
//! ever uploaded; a key or token an upstream repeats in its error answers
//! is never printed, logged nor stored.

mod support;

use std::process::Command;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use kbsync::sink::dify::document_name;
use support::fake_dify::{self, FakeDify};
use support::fake_pai::{self, FakePai};
use support::fake_sharely::{self, FakeSharely};
use support::serve::{Echo, EchoAs};
use support::shown::{assert_never_shown_nor_stored, reconcile_and_status};
use support::Workspace;

const KEY: &str = "dataset-0Jx3kQm7vT9pLw2RzA5bNc8d";

fn kbsync(config: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    support::run_binary(Command::new(env!("CARGO_BIN_EXE_kbsync")), config, args)
}

fn config(dify_lines: &str, metadata: &str) -> String {
    format!(
        r#"[state]
path = "state/kbsync.db"

[[sync]]
name = "docs"

[sync.folder]
root = "docs"

[sync.dify]
base_url = "http://127.0.0.1:9/v1"
{dify_lines}

[sync.metadata]
{metadata}
"#
    )
}

#[test]
fn a_key_pasted_into_any_setting_is_refused_without_being_shown() {
    let cases = [
        (
            config(&format!("api_key_env = \"{KEY}\"\ndataset_id = \"d\""), ""),
            "sync[0].dify.api_key_env",
            12,
        ),
        (
            config(&format!("api_key_file = \"{KEY}\"\ndataset_id = \"d\""), ""),
            "sync[0].dify.api_key_file",
            12,
        ),
        (
            config(&format!("api_key_env = \"K\"\ndataset_id = \"{KEY}\""), ""),
            "sync[0].dify.dataset_id",
            13,
        ),
        (
            config(
                "api_key_env = \"K\"\ndataset_id = \"d\"",
                &format!("team = {{ value = \"{KEY}\" }}"),
            ),
            "sync[0].metadata.team.value",
            16,
        ),
        (
            config(
                &format!("api_key_env = \"K\"\ndataset_id = \"d\"\ntimeout_secs = \"{KEY}\""),
                "",
            ),
            "sync[0].dify.timeout_secs",
            14,
        ),
    ];
    for (text, setting, line) in cases {
        let ws = Workspace::raw(&text);
        for args in [&["--dry-run"][..], &["--reconcile"][..], &["status"][..]] {
            let (code, out, err) = kbsync(&ws.config_path, args);
            assert_eq!(code, 2, "{setting} {args:?}: {out}{err}");
            assert!(!err.contains(KEY) && !out.contains(KEY), "{setting}: {err}");
            assert!(
                err.contains(&format!("kbsync.toml:{line}:")) && err.contains(setting),
                "{setting}: {err}"
            );
            assert!(err.contains("looks like an API key"), "{err}");
        }
        assert!(!ws.dir.path().join("state").exists(), "nothing written");
    }
}

#[test]
fn a_variable_name_that_is_no_name_is_refused_without_being_shown() {
    let ws = Workspace::raw(&config(
        "api_key_env = \"paste d my-key here\"\ndataset_id = \"d\"",
        "",
    ));
    let (code, _, err) = kbsync(&ws.config_path, &["--dry-run"]);
    assert_eq!(code, 2);
    assert!(!err.contains("paste"), "{err}");
    assert!(
        err.contains("expected the name of an environment variable"),
        "{err}"
    );
}

/// A workspace whose one job mirrors `docs/` into Sharely at `base_url`,
/// with the key in `sharely.key` and `extra` settings in the section.
fn sharely_workspace(base_url: &str, extra: &str) -> Workspace {
    let ws = Workspace::raw(&format!(
        r#"[state]
path = "state/kbsync.db"

[[sync]]
name = "kb"

[sync.folder]
root = "docs"

[sync.sharely]
base_url = "{base_url}"
workspace_id = "{}"
organization_id = "{}"
api_key_file = "sharely.key"
{extra}
"#,
        fake_sharely::WORKSPACE,
        fake_sharely::ORG,
    ));
    support::write_key(&ws.dir.path().join("sharely.key"), fake_sharely::API_KEY);
    ws
}

/// Answers every request with a redirect to `to`, keeping the path.
async fn redirector(to: String) -> std::net::SocketAddr {
    let world = Arc::new(Mutex::new(to));
    support::serve::serve(world, |w, req: Request<Incoming>| async move {
        let to = w.lock().unwrap().clone();
        Ok::<_, std::convert::Infallible>(
            Response::builder()
                .status(307)
                .header("location", format!("{to}{}", req.uri().path()))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
    })
    .await
}

#[tokio::test]
async fn credentials_never_follow_a_redirect_to_another_host() {
    // The real API is elsewhere; a redirect points there.
    let elsewhere = FakeSharely::start().await;
    let front = redirector(elsewhere.base_url()).await;
    let ws = sharely_workspace(&format!("http://{front}"), "max_retries = 0");
    ws.write("a.md", "a");
    let r = ws.sync().await;
    assert!(!r.converged());
    let err = format!("{r:?}");
    assert!(
        err.contains(&format!("redirected to {}", elsewhere.base_url())),
        "{err}"
    );
    assert!(
        elsewhere.world().log.is_empty(),
        "the API key went to the other host"
    );
}

// ---------------------------------------------------------------------------
// Links and kbsync's own files: nothing outside the root, and none of the
// files kbsync itself reads or writes, is ever uploaded.

/// `--reconcile` through the binary (beside the fake's runtime): exit code,
/// stdout, stderr. `env` is added to the binary's environment.
async fn reconcile_binary(config: &std::path::Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let config = config.to_owned();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kbsync"));
        cmd.envs(env);
        support::run_binary(cmd, &config, &["--reconcile", "--quiet"])
    })
    .await
    .unwrap()
}

/// Documents in the fake whose content holds `needle`.
fn docs_holding(fake: &FakeDify, needle: &str) -> Vec<String> {
    fake.world()
        .docs
        .values()
        .filter(|d| {
            d.content
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        })
        .map(|d| d.name.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_out_of_the_root_uploads_nothing_from_outside() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), fake_dify::DATASET, "delete", "", "");
    ws.folder_setting("follow_symlinks = true");
    let outside = ws.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("private.md"), "private notes").unwrap();
    ws.write("good.md", "fine");
    ws.write("leak.md", "an ordinary file first");
    assert!(ws.sync().await.converged());
    // The job's own key file, outside the root, in place of a mirrored
    // file; a file anyone may have lying about; and a whole folder.
    let key_file = ws.dir.path().join("api.key");
    ws.remove("leak.md");
    std::os::unix::fs::symlink(&key_file, ws.path("leak.md")).unwrap();
    std::os::unix::fs::symlink("../outside/private.md", ws.path("notes.md")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.path("ext")).unwrap();

    let (code, out, err) = reconcile_binary(&ws.config_path, &[]).await;

    assert_eq!(
        docs_holding(&fake, fake_dify::API_KEY),
        Vec::<String>::new()
    );
    assert_eq!(docs_holding(&fake, "private notes"), Vec::<String>::new());
    let names: Vec<String> = fake.world().docs.values().map(|d| d.name.clone()).collect();
    // What the link replaced is retired (delete_policy = "delete").
    assert_eq!(names, ["good.md"], "{out}{err}");
    assert_eq!(code, 1, "skipped entries: not converged\n{out}{err}");
    for (link, target) in [
        ("leak.md", key_file.canonicalize().unwrap()),
        (
            "notes.md",
            outside.join("private.md").canonicalize().unwrap(),
        ),
        ("ext", outside.canonicalize().unwrap()),
    ] {
        let line = format!(
            "skipped {link}: symbolic link target outside the root: {}",
            target.display()
        );
        assert!(out.contains(&line), "{line:?} not in the summary:\n{out}");
        assert!(err.contains(link), "the skip is logged:\n{err}");
    }
    assert!(!out.contains(fake_dify::API_KEY) && !err.contains(fake_dify::API_KEY));
}

#[tokio::test]
async fn links_inside_the_root_are_still_followed() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), fake_dify::DATASET, "delete", "", "");
    ws.folder_setting("follow_symlinks = true");
    ws.write("real.md", "the real one");
    ws.write("sub/x.md", "under sub");
    std::os::unix::fs::symlink("real.md", ws.path("alias.md")).unwrap();
    std::os::unix::fs::symlink(ws.path("sub"), ws.path("subalias")).unwrap();

    let r = ws.sync().await;

    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    let names: Vec<&String> = w.docs.values().map(|d| &d.name).collect();
    assert_eq!(names.len(), 4, "{names:?}");
    assert_eq!(w.doc_by_name("alias.md").unwrap().content, b"the real one");
    assert_eq!(
        w.doc_by_name(&document_name("subalias/x.md"))
            .unwrap()
            .content,
        b"under sub"
    );
}

/// A root that holds kbsync's own files: the config, the key file (and a
/// hard link and a symbolic link to it), the state file and its
/// companions, and the systemd credentials folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kbsync_never_mirrors_its_own_files() {
    let fake = FakeDify::start().await;
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(etc.join("credentials")).unwrap();
    let config_path = etc.join("kbsync.md");
    std::fs::write(
        &config_path,
        format!(
            r#"[state]
path = "state/kbsync.db"

[[sync]]
name = "etc"

[sync.folder]
root = "."
follow_symlinks = true

[sync.dify]
base_url = "{}"
dataset_id = "{}"
api_key_file = "dify-key.txt"
"#,
            fake.base_url(),
            fake_dify::DATASET,
        ),
    )
    .unwrap();
    support::write_key(&etc.join("dify-key.txt"), fake_dify::API_KEY);
    support::write_key(&etc.join("credentials/other-key.txt"), fake_dify::API_KEY);
    std::fs::hard_link(etc.join("dify-key.txt"), etc.join("copy.txt")).unwrap();
    std::os::unix::fs::symlink("dify-key.txt", etc.join("alias.md")).unwrap();
    std::fs::write(etc.join("readme.md"), "a document").unwrap();
    let creds = etc.join("credentials");
    let env = [("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())];

    // The first pass makes the state file; the second sees it, and a link
    // to it.
    reconcile_binary(&config_path, &env).await;
    std::os::unix::fs::symlink("state/kbsync.db", etc.join("db.txt")).unwrap();
    let (code, out, err) = reconcile_binary(&config_path, &env).await;

    assert_eq!(
        docs_holding(&fake, fake_dify::API_KEY),
        Vec::<String>::new()
    );
    let names: Vec<String> = fake.world().docs.values().map(|d| d.name.clone()).collect();
    assert_eq!(names, ["readme.md"], "{out}{err}");
    assert_eq!(code, 1, "{out}{err}");
    for (key, what) in [
        ("kbsync.md", "the config file"),
        ("dify-key.txt", "the api_key_file of job \"etc\""),
        ("copy.txt", "the api_key_file of job \"etc\""),
        ("alias.md", "the api_key_file of job \"etc\""),
        ("credentials/other-key.txt", "a systemd credential"),
        ("state/kbsync.db", "the state file"),
        ("db.txt", "the state file"),
        ("state/kbsync.db.lock", "the state file's lock"),
    ] {
        let line = format!("skipped {key}: kbsync's own file ({what})");
        assert!(out.contains(&line), "{line:?} not in the summary:\n{out}");
    }
    assert!(!out.contains(fake_dify::API_KEY) && !err.contains(fake_dify::API_KEY));
}

/// The scan found regular files; before their upload, they are replaced
/// by links to the key file and to a file outside the root. Links are not
/// even followed by this job: the upload reads within the same fence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_swapped_for_a_link_after_the_scan_is_not_uploaded() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(
        &fake.base_url(),
        fake_dify::DATASET,
        "delete",
        "upload_concurrency = 1",
        "",
    );
    let outside = ws.dir.path().join("private.md");
    std::fs::write(&outside, "private notes").unwrap();
    for k in ["a.md", "b.md", "c.md"] {
        ws.write(k, &format!("{k} v1"));
    }
    // Uploads go one at a time, in key order: when a.md's arrives, b.md
    // and c.md are swapped, after the scan and before their reads.
    let (b, c, key_file) = (
        ws.path("b.md"),
        ws.path("c.md"),
        ws.dir.path().join("api.key"),
    );
    fake.world().on_arrival = Some(Box::new(move |line| {
        if line.contains("create-by-file") && !b.is_symlink() {
            std::fs::remove_file(&b).unwrap();
            std::os::unix::fs::symlink(&key_file, &b).unwrap();
            std::fs::remove_file(&c).unwrap();
            std::os::unix::fs::symlink(&outside, &c).unwrap();
        }
    }));

    let r = ws.sync().await;

    assert_eq!(
        docs_holding(&fake, fake_dify::API_KEY),
        Vec::<String>::new()
    );
    assert_eq!(docs_holding(&fake, "private notes"), Vec::<String>::new());
    let o = r.outcome.as_ref().unwrap();
    let failed: Vec<(&str, &str)> = o
        .failures
        .iter()
        .map(|f| (f.key.as_str(), f.error.code.as_str()))
        .collect();
    assert_eq!(failed, [("b.md", "fenced"), ("c.md", "fenced")]);
    assert!(
        o.failures[0]
            .error
            .message
            .contains("kbsync's own file (the api_key_file of job \"docs\")"),
        "{}",
        o.failures[0].error.message
    );
    assert!(
        o.failures[1]
            .error
            .message
            .contains("it now leads outside the root"),
        "{}",
        o.failures[1].error.message
    );
    let names: Vec<String> = fake.world().docs.values().map(|d| d.name.clone()).collect();
    assert_eq!(names, ["a.md"]);
}

// ---------------------------------------------------------------------------
// An upstream (or a proxy in front of it) that repeats the request's
// credentials in its error answers: the key and the tokens are never
// printed, logged, nor stored.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dify_key_echoed_in_error_answers_is_never_shown_nor_stored() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), fake_dify::DATASET, "delete", "", "");
    let cfg = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(
        &ws.config_path,
        cfg.replace("max_retries = 8", "max_retries = 1"),
    )
    .unwrap();
    ws.write("a.md", "a");
    ws.write("b.md", "b");
    ws.write("c.md", "c");
    fake.world().echo = vec![
        // The audit's listing; then a refusal, and a server error as an
        // HTML page on every try after it.
        Echo::new("/documents", 400, EchoAs::Json, 1),
        Echo::new("create-by-file", 400, EchoAs::Json, 1),
        Echo::new("create-by-file", 500, EchoAs::Html, 100),
    ];

    let texts = reconcile_and_status(&ws).await;
    assert_never_shown_nor_stored(&texts, &[fake_dify::API_KEY]);
    assert!(fake.world().echo.iter().all(|e| e.times < 100), "echoed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharely_key_and_token_echoed_in_error_answers_are_never_shown_nor_stored() {
    let fake = FakeSharely::start().await;
    let ws = sharely_workspace(&fake.base_url(), "retry_min_delay_ms = 1\nmax_retries = 1");
    ws.write("a.md", "a");
    ws.write("b.md", "b");
    fake.world().echo = vec![
        // The first token exchange (it carries the key), then calls that
        // carry the token.
        Echo::new("generate-access-key-token", 500, EchoAs::Json, 2),
        Echo::new("/knowledge", 400, EchoAs::Html, 1),
        Echo::new("/knowledge", 400, EchoAs::Json, 100),
    ];

    let texts = reconcile_and_status(&ws).await;
    let mut secrets = fake.world().tokens().to_vec();
    assert!(!secrets.is_empty(), "a token was handed out");
    secrets.push(fake_sharely::API_KEY.to_owned());
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_never_shown_nor_stored(&texts, &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pai_key_id_echoed_in_error_answers_is_never_shown_nor_stored() {
    let fake = FakePai::start().await;
    let ws = Workspace::raw(&format!(
        r#"[state]
path = "state/kbsync.db"

[[sync]]
name = "pai"

[sync.folder]
root = "docs"

[sync.pai]
endpoint = "{}"
workspace_id = "{}"
dataset_id = "{}"
uri_base = "oss://kb-bucket/handbook/"
access_key_id_file = "pai.id"
access_key_secret_file = "pai.secret"
retry_min_delay_ms = 1
max_retries = 1

[sync.metadata]
source_path = {{ fact = "path" }}
"#,
        fake.endpoint(),
        fake_pai::WORKSPACE,
        fake_pai::DATASET,
    ));
    support::write_key(&ws.dir.path().join("pai.id"), fake_pai::KEY_ID);
    support::write_key(&ws.dir.path().join("pai.secret"), fake_pai::SECRET);
    ws.write("a.md", "a");
    fake.world().echo = vec![
        Echo::new("datasetfilemetas", 400, EchoAs::Json, 1),
        Echo::new("datasetfilemetas", 500, EchoAs::Html, 100),
    ];

    let texts = reconcile_and_status(&ws).await;
    assert_never_shown_nor_stored(&texts, &[fake_pai::KEY_ID, fake_pai::SECRET]);
}

/// A token is known as a secret once bought; a server that hands the same
/// token out again must still be understood.
#[tokio::test]
async fn a_sharely_token_handed_out_again_is_still_used() {
    let fake = FakeSharely::start().await;
    let ws = sharely_workspace(&fake.base_url(), "");
    // Within the renewal margin: bought again before every call.
    fake.world().token_lifetime_secs = 120;
    fake.world().reissue_valid_token = true;
    ws.write("a.md", "a");
    ws.write("b.md", "b");

    let r = ws.sync().await;

    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    assert_eq!(w.tokens_issued(), 1);
    assert!(w.count("POST", "generate-access-key-token") > 2);
    assert_eq!(w.titled("a.md").len() + w.titled("b.md").len(), 2);
}
