//! Secrets stay secret: a key pasted where a name, path, id or value
//! belongs is refused at load without being echoed; a credential never
//! follows a redirect to another host.

mod support;

use std::process::Command;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use support::fake_sharely::{self, FakeSharely};
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
    let ws = Workspace::raw(&format!(
        r#"[state]
path = "state/kbsync.db"

[[sync]]
name = "kb"

[sync.folder]
root = "docs"

[sync.sharely]
base_url = "http://{front}"
workspace_id = "{}"
organization_id = "{}"
api_key_file = "sharely.key"
max_retries = 0
"#,
        fake_sharely::WORKSPACE,
        fake_sharely::ORG,
    ));
    support::write_key(&ws.dir.path().join("sharely.key"), fake_sharely::API_KEY);
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
