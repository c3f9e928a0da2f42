//! The binary as a user runs it: exit codes, and error messages that name
//! the file, line and key of a bad config.

mod support;

use std::path::Path;
use std::process::Command;

use support::fake_dify::{FakeDify, Fault};
use support::Workspace;

fn kbsync(config: &Path, args: &[&str]) -> (i32, String, String) {
    support::run_binary(Command::new(env!("CARGO_BIN_EXE_kbsync")), config, args)
}

fn config_with(dir: &Path, body: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("docs")).unwrap();
    let p = dir.join("bad.toml");
    std::fs::write(&p, body).unwrap();
    p
}

const GOOD_JOB: &str = r#"[[sync]]
name = "docs"

[sync.folder]
root = "docs"

[sync.dify]
base_url = "https://dify.example.com/v1"
dataset_id = "abc"
api_key_env = "KBSYNC_TEST_KEY"
"#;

#[test]
fn unknown_key_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = config_with(
        dir.path(),
        &GOOD_JOB.replace("root = \"docs\"", "root = \"docs\"\nincldue = [\"*.md\"]"),
    );
    let (code, _, err) = kbsync(&p, &["--dry-run"]);
    assert_eq!(code, 2);
    assert!(err.contains("bad.toml:6:1"), "{err}");
    assert!(
        err.contains("`incldue`") && err.contains("unknown field"),
        "{err}"
    );
}

#[test]
fn inline_api_key_is_refused_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = config_with(
        dir.path(),
        &GOOD_JOB.replace(
            "api_key_env = \"KBSYNC_TEST_KEY\"",
            "api_key = \"dataset-SECRET42\"",
        ),
    );
    let (code, _, err) = kbsync(&p, &["--dry-run"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.toml:10:") && err.contains("api_key_env"),
        "{err}"
    );
    assert!(!err.contains("SECRET42"), "{err}");
}

#[test]
fn bad_values_point_at_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            GOOD_JOB.replace("root = \"docs\"", "root = \"nowhere\""),
            "bad.toml:5:",
            "root",
        ),
        (
            GOOD_JOB.replace(
                "name = \"docs\"",
                "name = \"docs\"\ndelete_policy = \"purge\"",
            ),
            "bad.toml:3:",
            "unknown variant",
        ),
        (
            GOOD_JOB.replace("https://dify.example.com", "http://dify.example.com"),
            "bad.toml:8:",
            "clear text",
        ),
        (
            format!("{GOOD_JOB}\n[sync.metadata]\nx = {{ fact = \"size\", path_segment = 1 }}\n"),
            "bad.toml:13:",
            "exactly one",
        ),
        (
            GOOD_JOB.replace("root = \"docs\"", "root = \"docs\"\ninclude = [\"a[\"]"),
            "bad.toml:6:",
            "bad glob",
        ),
    ];
    for (body, at, says) in cases {
        let p = config_with(dir.path(), &body);
        let (code, _, err) = kbsync(&p, &["--dry-run"]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(at) && err.contains(says),
            "expected {at} … {says} in: {err}"
        );
    }
}

#[test]
fn dry_run_of_the_bundled_example_prints_a_plan() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    let (code, out, err) = kbsync(&example, &["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("create") && out.contains("handbook/welcome.md"),
        "{out}"
    );
    assert!(
        !out.contains("drafts/"),
        ".kbsyncignore excludes drafts: {out}"
    );
    let (code, json, _) = kbsync(&example, &["--dry-run", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["job"], "handbook");
    assert!(v[0]["ops"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["op"] == "create"));
}

#[test]
fn reconcile_with_dry_run_is_the_dry_run_and_times_show_as_dates() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("docs")).unwrap();
    std::fs::write(dir.path().join("docs/a.md"), "a").unwrap();
    let mtime = std::fs::metadata(dir.path().join("docs/a.md"))
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let config = config_with(
        dir.path(),
        "[state]\npath = \"state/kbsync.db\"\n\n[[sync]]\nname = \"docs\"\n[sync.folder]\nroot = \"docs\"\n[sync.dify]\nbase_url = \"http://127.0.0.1:9/v1\"\ndataset_id = \"d\"\napi_key_env = \"NOT_SET_ANYWHERE\"\n[sync.metadata]\nmodified = { fact = \"modified\" }\n",
    );
    let (code, both, err) = kbsync(&config, &["--reconcile", "--dry-run"]);
    assert_eq!(code, 0, "{err}");
    let (_, alone, _) = kbsync(&config, &["--dry-run"]);
    assert_eq!(both, alone);
    assert!(
        both.contains(&format!(
            "modified={}",
            kbsync::metadata::format_rfc3339(mtime)
        )),
        "{both}"
    );
    assert!(
        !dir.path().join("state").exists(),
        "a dry run writes nothing"
    );
    // JSON keeps the number.
    let (_, json, _) = kbsync(&config, &["--reconcile", "--dry-run", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let meta = v[0]["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["op"] == "set_metadata")
        .unwrap();
    assert_eq!(meta["metadata"]["modified"], mtime, "{json}");
}

#[test]
fn missing_api_key_fails_the_job_with_exit_1_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let p = config_with(dir.path(), GOOD_JOB);
    std::fs::write(dir.path().join("docs/a.md"), "hello").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kbsync"))
        .args(["--config", p.to_str().unwrap(), "--reconcile"])
        .env_remove("KBSYNC_TEST_KEY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("KBSYNC_TEST_KEY is not set"), "{stdout}");
}

#[test]
fn the_bundled_service_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("handbook");
    std::fs::create_dir_all(&root).unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/service.toml"))
        .unwrap()
        .replace("/srv/docs/handbook", root.to_str().unwrap());
    let path = dir.path().join("kbsync.toml");
    std::fs::write(&path, text).unwrap();
    let config = kbsync::config::Config::load(&path).unwrap();
    assert_eq!(config.state_path, Path::new("/var/lib/kbsync/kbsync.db"));
    assert_eq!(config.daemon.shutdown_timeout.as_secs(), 30);
}

#[test]
fn daemon_settings_are_checked_like_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let p = config_with(
        dir.path(),
        &format!("[daemon]\ndebounce_ms = 5000\nmax_delay_ms = 100\n\n{GOOD_JOB}"),
    );
    let (code, _, err) = kbsync(&p, &["--dry-run"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.toml:3:16: `daemon.max_delay_ms`: must be at least debounce_ms (5000)"),
        "{err}"
    );
}

#[test]
fn the_metrics_listener_is_loopback_unless_remote_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let run = |daemon: &str| {
        let p = config_with(dir.path(), &format!("[daemon]\n{daemon}\n\n{GOOD_JOB}"));
        kbsync(&p, &["--dry-run"])
    };
    let (code, _, err) = run("metrics_listen = \"0.0.0.0:9477\"");
    assert_eq!(code, 2);
    assert!(
        err.contains(
            "bad.toml:2:18: `daemon.metrics_listen`: 0.0.0.0:9477 is reachable from other machines"
        ) && err.contains("metrics_allow_remote = true"),
        "{err}"
    );
    let (code, _, err) = run("metrics_listen = \"localhost\"");
    assert_eq!(code, 2);
    assert!(
        err.contains("`daemon.metrics_listen`: \"localhost\" is not an address and port"),
        "{err}"
    );
    // Beyond loopback every route asks for the API token: there must be one.
    let (code, _, err) = run("metrics_listen = \"0.0.0.0:9477\"\nmetrics_allow_remote = true");
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.toml:2:18: `daemon.metrics_listen`: beyond loopback every route asks for the API token: set api_token_file"),
        "{err}"
    );
    let (code, _, err) = run("api_token_file = \"api.token\"");
    assert_eq!(code, 2);
    assert!(
        err.contains("`daemon.api_token_file`: the control API is served on the metrics listener"),
        "{err}"
    );
    for fine in [
        "metrics_listen = \"127.0.0.1:9477\"",
        "metrics_listen = \"[::1]:9477\"",
        "metrics_listen = \"0.0.0.0:9477\"\nmetrics_allow_remote = true\napi_token_file = \"api.token\"",
    ] {
        let (code, _, err) = run(fine);
        assert_eq!(code, 0, "{fine}: {err}");
    }
}

#[test]
fn the_bundled_sharely_config_uploads_files_and_only_sets_metadata_on_mapped_ones() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/sharely.toml");
    let (code, out, err) = kbsync(Path::new(config), &["--dry-run", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ops: Vec<(&str, &str)> = v[0]["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["op"].as_str().unwrap(), o["key"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [
            ("create", "handbook/time-off.md"),
            ("set_metadata", "handbook/time-off.md"),
            ("set_metadata", "handbook/welcome.md"),
        ],
        "{out}"
    );
    assert_eq!(v[0]["skipped"].as_array().unwrap().len(), 0, "{out}");
}

#[test]
fn the_bundled_openwebui_config_uploads_each_file_with_its_metadata() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/openwebui.toml");
    let (code, out, err) = kbsync(Path::new(config), &["--dry-run", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ops: Vec<(&str, &str)> = v[0]["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["op"].as_str().unwrap(), o["key"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ops,
        [
            ("create", "handbook/time-off.md"),
            ("set_metadata", "handbook/time-off.md"),
            ("create", "handbook/welcome.md"),
            ("set_metadata", "handbook/welcome.md"),
        ],
        "{out}"
    );
}

#[test]
fn the_bundled_pai_config_plans_a_record_per_file_and_pai_limits_are_enforced() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/pai.toml");
    let (code, out, err) = kbsync(Path::new(config), &["--dry-run", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ops = v[0]["ops"].as_array().unwrap();
    assert_eq!(ops.len(), 4, "{out}");
    assert!(ops.iter().all(|o| o["op"] == "set_metadata"), "{out}");

    let text = std::fs::read_to_string(config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("example-docs")).unwrap();
    for (from, to, needle) in [
        (
            "delete_policy = \"keep\"",
            "delete_policy = \"archive\"",
            "the pai target cannot archive items",
        ),
        (
            "oss://my-bucket/handbook/",
            "s3://my-bucket/handbook",
            "`sync[0].pai.uri_base`: expected the dataset location",
        ),
        (
            "dataset_id = \"d-lfd60v0p0000ujtsdx\"",
            "dataset_id = \"d-1,d-2\"",
            "`sync[0].pai.dataset_id`: expected an id of letters, digits",
        ),
        (
            "access_key_secret_env = \"ALIBABA_CLOUD_ACCESS_KEY_SECRET\"",
            "access_key_secret = \"inline\"",
            "`sync[0].pai.access_key_secret`: secrets are not accepted inline",
        ),
    ] {
        let bad = dir.path().join("pai.toml");
        std::fs::write(&bad, text.replace(from, to)).unwrap();
        let (code, _, err) = kbsync(&bad, &["--dry-run"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(needle), "{needle}: {err}");
        assert!(!err.contains("\"inline\""), "{err}");
    }
}

#[test]
fn plain_http_is_refused_except_to_loopback_or_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let http = GOOD_JOB.replace("https://dify.example.com", "http://dify.example.com");
    let (code, _, err) = kbsync(&config_with(dir.path(), &http), &["--dry-run"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.toml:8:12: `sync[0].dify.base_url`")
            && err.contains("plain http would send the API key in clear text"),
        "{err}"
    );
    let loopback = GOOD_JOB.replace("https://dify.example.com", "http://127.0.0.1:5001");
    let (code, _, err) = kbsync(&config_with(dir.path(), &loopback), &["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    let allowed = http.replace(
        "dataset_id = \"abc\"",
        "dataset_id = \"abc\"\nallow_insecure_http = true",
    );
    let (code, _, err) = kbsync(&config_with(dir.path(), &allowed), &["--dry-run"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn completions_and_the_manual_come_from_the_cli_definition() {
    // No config is needed: these work on a fresh install.
    let none = Path::new("/nonexistent/kbsync.toml");
    for (shell, marker) in [
        ("bash", "_kbsync()"),
        ("zsh", "#compdef kbsync"),
        ("fish", "complete -c kbsync"),
    ] {
        let (code, out, err) = kbsync(none, &["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains(marker), "{shell}: {out}");
        for word in ["reconcile", "dry-run", "retry", "forget", "check", "status"] {
            assert!(out.contains(word), "{shell} completion lacks {word}");
        }
    }
    let (code, man, err) = kbsync(none, &["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(man.contains(".TH kbsync 1"), "{man}");
    for word in [
        "\\-\\-reconcile",
        "\\-\\-dry\\-run",
        "retry",
        "forget",
        "completions",
    ] {
        assert!(man.contains(word), "the manual lacks {word}");
    }
}

/// A job synced into a fake Dify (one file parked: the upstream refused
/// it) whose root then went away, as an unmounted share does; and what
/// kbsync says of the root.
async fn synced_then_unmounted() -> (FakeDify, Workspace, String) {
    let (fake, ws) = support::with_fake("keep", "").await;
    ws.write("a.md", "a");
    ws.write("b.md", "b");
    fake.world().inject(
        None,
        "create-by-file",
        Fault::status(400, "invalid_param", "Refused for the test."),
        1,
    );
    assert!(!ws.sync().await.converged(), "one file parked");
    let root = ws.dir.path().canonicalize().unwrap().join("docs");
    std::fs::remove_dir_all(&ws.root).unwrap();
    let missing = format!("root {} is missing (unmounted?)", root.display());
    (fake, ws, missing)
}

/// The binary on the workspace's config, off the fake's thread.
async fn on(ws: &Workspace, args: &[&str]) -> (i32, String, String) {
    let (config, args) = (
        ws.config_path.clone(),
        args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    );
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kbsync(&config, &args)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn status_with_the_root_missing_says_so_and_shows_the_rest() {
    let (_fake, ws, missing) = synced_then_unmounted().await;
    let (code, out, err) = on(&ws, &["status"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("source: {missing}")), "{out}");
    assert!(out.contains("items: 2 tracked, 1 in sync"), "{out}");
    assert!(
        out.contains("failed create a.md") || out.contains("failed create b.md"),
        "{out}"
    );

    let (code, out, err) = on(&ws, &["status", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["source_problem"], missing);
    assert_eq!(v[0]["tracked"], 2);
}

#[tokio::test]
async fn retry_with_the_root_missing_schedules_the_steps_and_says_so() {
    let (_fake, ws, missing) = synced_then_unmounted().await;
    let (code, out, err) = on(&ws, &["retry"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 step(s) will be tried again"), "{out}");
    assert!(out.contains(&format!("docs: {missing}")), "{out}");
}

#[tokio::test]
async fn check_with_the_root_missing_compares_the_upstream_only_and_exits_1() {
    let (fake, ws, missing) = synced_then_unmounted().await;
    // Drift made by hand: the audit still finds it from the state file.
    {
        let mut w = fake.world();
        assert_eq!(w.docs.len(), 1, "the one created");
        w.docs.clear();
    }
    let before = fake.requests();
    let (code, out, err) = on(&ws, &["check"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("{missing}: the source was not looked at")),
        "{out}"
    );
    assert!(out.contains("source not looked at"), "{out}");
    assert!(out.contains("  missing "), "the audit ran: {out}");
    assert!(
        fake.world().log[before..].iter().all(|l| l.method == "GET"),
        "check only lists"
    );

    let (code, out, _) = on(&ws, &["check", "--json"]).await;
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["in_step"], false);
    assert_eq!(v[0]["source_scanned"], false);
    assert_eq!(v[0]["drift"][0]["drift"], "missing");
}
