//! The control API on the running service, driven with a real HTTP client:
//! status and run history, a pass now (whole or one subtree), pause and
//! resume that outlive a restart, the bearer token, and git hosts' push
//! webhooks. Waits are on the service's own answers (`?wait=true`,
//! sd_notify) and on requests the fakes see, never on the clock.

mod support;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use support::fake_dify::{FakeDify, Fault, DATASET};
use support::git::{GitDaemon, Remote};
use support::service::{Daemon, WAIT};
use support::Workspace;

const TOKEN: &str = "kbsync-test-api-token-5f0c2d";

/// A folder job into the fake Dify, served on a port with the API token.
async fn setup() -> (FakeDify, Workspace, Api) {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "delete", "", "");
    let api = Api::on(&ws, "");
    (fake, ws, api)
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    /// Adds `[daemon]` with the listener, the token and `extra`.
    fn on(ws: &Workspace, extra: &str) -> Api {
        support::write_key(&ws.dir.path().join("api.token"), &format!("{TOKEN}\n"));
        let port = support::seaweed::free_port();
        ws.append_config(&format!(
            "\n[daemon]\ndebounce_ms = 50\nmetrics_listen = \"127.0.0.1:{port}\"\napi_token_file = \"api.token\"\n{extra}\n"
        ));
        Api {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = tokio::time::timeout(WAIT, req.send())
            .await
            .expect("the service answers in time")
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str) -> (u16, Value) {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .bearer_auth(TOKEN),
        )
        .await
    }

    async fn text(&self, path: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}

fn creates(fake: &FakeDify) -> usize {
    fake.world()
        .log
        .iter()
        .filter(|l| l.path.ends_with("create-by-file"))
        .count()
}

#[tokio::test]
async fn a_session_reads_status_runs_a_pass_and_reads_its_history() {
    let (fake, ws, api) = setup().await;
    ws.write("a.md", "alpha");
    ws.write("guides/b.md", "beta");
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    d.notified("last sync").await;

    let (code, jobs) = api.get("/jobs").await;
    assert_eq!(code, 200, "{jobs}");
    let job = &jobs[0];
    assert_eq!(job["job"], "docs");
    assert_eq!(job["tracked"], 2);
    assert_eq!(job["in_sync"], 2);
    assert_eq!(job["paused_since"], Value::Null);
    assert_eq!(job["last_run"]["converged"], true);
    assert_eq!(job["last_run"]["detail"]["created"], 2, "{job}");
    assert_eq!(job["last_run"]["detail"]["scope"], "all");

    // A pass now, waited for: its counts come back.
    ws.write("c.md", "gamma");
    let (code, run) = api.post("/jobs/docs/sync?wait=true").await;
    assert_eq!(code, 200, "{run}");
    assert_eq!(run["converged"], true, "{run}");
    assert_eq!(run["detail"]["created"], 1, "{run}");
    assert_eq!(run["detail"]["scope"], "all");
    assert_eq!(creates(&fake), 3);

    // One subtree: only what is under it is looked at (the watcher may
    // run its own pass of the edited file first; the answer is the pass
    // that covers the subtree).
    ws.write("guides/b.md", "beta, edited");
    let (code, run) = api.post("/jobs/docs/sync?path=guides&wait=true").await;
    assert_eq!(code, 200, "{run}");
    assert_eq!(run["detail"]["scope"], "guides", "{run}");
    assert_eq!(run["detail"]["scanned"], 1, "of 3 files, {run}");
    fake.wait_until("b.md updated", WAIT, |w| {
        w.log.iter().any(|l| l.path.contains("update-by-file"))
    })
    .await;

    // Without waiting: accepted, and run by the loop.
    let (code, queued) = api.post("/jobs/docs/sync").await;
    assert_eq!((code, queued["queued"].as_str()), (202, Some("all")));

    let (code, runs) = api.get("/jobs/docs/runs?limit=2").await;
    assert_eq!(code, 200, "{runs}");
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs[0]["finished_at"].as_i64() >= runs[1]["finished_at"].as_i64());
    assert!(runs.iter().all(|r| r["detail"]["duration_ms"].is_u64()));

    let (code, one) = api.get("/jobs/docs").await;
    assert_eq!((code, one["job"].as_str()), (200, Some("docs")));
    let (code, missing) = api.post("/jobs/nope/sync").await;
    assert_eq!(code, 404, "{missing}");
    assert_eq!(missing["jobs"], serde_json::json!(["docs"]));
    for bad in ["/etc", "a/../..", ".."] {
        let (code, why) = api.post(&format!("/jobs/docs/sync?path={bad}")).await;
        assert_eq!(code, 400, "{bad}: {why}");
    }
    let (code, _) = api.get("/jobs/docs/runs?limit=0").await;
    assert_eq!(code, 400);
    d.stop().await;
}

#[tokio::test]
async fn every_post_needs_the_token_and_a_refusal_never_shows_it() {
    let (fake, ws, api) = setup().await;
    ws.write("a.md", "alpha");
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    d.notified("last sync").await;
    let before = fake.requests();
    let url = format!("{}/jobs/docs/sync", api.base);
    let wrong = format!("{TOKEN}x");
    for req in [
        api.http.post(&url),
        api.http.post(&url).bearer_auth(&wrong),
        api.http.post(&url).bearer_auth(&TOKEN[..TOKEN.len() - 1]),
        api.http.post(&url).basic_auth("admin", Some(TOKEN)),
        api.http.post(format!("{}/jobs/docs/pause", api.base)),
    ] {
        let (code, body) = api.send(req).await;
        assert_eq!(code, 401, "{body}");
        assert!(!body.to_string().contains(TOKEN), "{body}");
    }
    // Reading needs no token on loopback.
    assert_eq!(api.get("/jobs").await.0, 200);
    let log = d.stop().await;
    assert_eq!(log.matches("control API: refused").count(), 5, "{log}");
    assert!(!log.contains(TOKEN) && !log.contains(&wrong), "{log}");
    assert_eq!(
        fake.requests(),
        before,
        "a refused order sent nothing upstream"
    );
}

#[tokio::test]
async fn a_paused_job_runs_no_pass_even_after_a_restart_until_it_is_resumed() {
    let (fake, ws, api) = setup().await;
    ws.write("a.md", "alpha");
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    d.notified("last sync").await;

    let (code, paused) = api.post("/jobs/docs/pause").await;
    assert_eq!(code, 200, "{paused}");
    assert_eq!(paused["paused"], true);
    assert!(paused["paused_since"].is_i64());
    let (code, refused) = api.post("/jobs/docs/sync").await;
    assert_eq!(code, 409, "{refused}");
    let (code, ready) = api.text("/readyz").await;
    assert_eq!(code, 200, "{ready}");
    assert!(ready.contains("docs: paused since"), "{ready}");
    let (_, metrics) = api.text("/metrics").await;
    assert!(
        metrics.contains("kbsync_job_paused{job=\"docs\"} 1"),
        "{metrics}"
    );
    d.stop().await;

    // The pause is in the state file: `status` shows it, and a restarted
    // service's first pass is not run.
    ws.write("b.md", "beta");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_kbsync"))
        .args(["--config"])
        .arg(&ws.config_path)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(status[0]["paused_since"].is_i64(), "{status}");
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_kbsync"))
        .arg("--config")
        .arg(&ws.config_path)
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("  paused since 20"), "{text}");
    let mut d = Daemon::spawn(&ws, "2", &[]);
    d.notified("READY=1").await;
    // The status after the loop took the first batch (and left it).
    d.notified("change(s) queued").await;
    assert_eq!(creates(&fake), 1, "nothing was uploaded while paused");
    // Paused since before this start: no first pass, and still ready.
    let (code, ready) = api.text("/readyz").await;
    assert_eq!(code, 200, "{ready}");
    assert!(ready.starts_with("ready\ndocs: paused since"), "{ready}");
    assert!(d.log_text().contains("paused: the pass is not run"));

    let (code, resumed) = api.post("/jobs/docs/resume").await;
    assert_eq!((code, &resumed["paused"]), (200, &Value::Bool(false)));
    fake.wait_until("b.md uploaded after resume", WAIT, |w| {
        w.log
            .iter()
            .filter(|l| l.path.ends_with("create-by-file"))
            .count()
            == 2
    })
    .await;
    let (_, metrics) = api.text("/metrics").await;
    assert!(
        metrics.contains("kbsync_job_paused{job=\"docs\"} 0"),
        "{metrics}"
    );
    d.stop().await;
}

/// A running service mirroring a repository behind `git daemon` with a
/// git job that polls only hourly, the webhook secret `setting` = `secret`;
/// after its first sync a second commit is pushed, which only a webhook
/// makes it see.
struct Pushed {
    fake: FakeDify,
    git: GitDaemon,
    api: Api,
    service: Daemon,
    _remote: Remote,
    _ws: Workspace,
}

async fn pushed(setting: &str, secret: &str) -> Pushed {
    let file = format!("{setting}.secret");
    let (fake, remote, git, ws, api) = git_setup(&format!(
        "\n[daemon.webhooks]\n{setting}_file = \"{file}\"\n"
    ))
    .await;
    support::write_key(&ws.dir.path().join(&file), secret);
    let mut service = Daemon::spawn(&ws, "1", &[]);
    service.notified("READY=1").await;
    service.notified("last sync").await;
    assert_eq!(creates(&fake), 1);
    remote.write("news.md", "# News");
    remote.commit("second");
    remote.push("main");
    Pushed {
        fake,
        git,
        api,
        service,
        _remote: remote,
        _ws: ws,
    }
}

async fn git_setup(hooks: &str) -> (FakeDify, Remote, GitDaemon, Workspace, Api) {
    let remote = Remote::new();
    remote.write("guide.md", "# Guide");
    remote.commit("first");
    remote.push("main");
    let daemon = GitDaemon::start(&remote);
    let fake = FakeDify::start().await;
    let ws = Workspace::raw(&format!(
        r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "handbook"
delete_policy = "delete"

[sync.git]
url = "{}"
branch = "main"
poll_interval_secs = 3600

[sync.dify]
base_url = "{}"
dataset_id = "{DATASET}"
api_key_file = "api.key"
retry_min_delay_ms = 1
retry_max_delay_secs = 1
"#,
        daemon.url,
        fake.base_url()
    ));
    let api = Api::on(&ws, hooks);
    (fake, remote, daemon, ws, api)
}

fn github_signature(body: &str, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[tokio::test]
async fn a_signed_github_push_runs_the_git_job_that_follows_the_pushed_branch() {
    let secret = "whsec-test-0c1d2e";
    let Pushed {
        fake,
        git: daemon,
        api,
        service: d,
        _remote,
        _ws,
    } = pushed("github_secret", secret).await;
    // The clone URL as GitHub would spell this repository.
    let clone_url = daemon.url.replace("git://", "https://");
    let push = |git_ref: &str| {
        serde_json::json!({
            "ref": git_ref,
            "repository": {"clone_url": clone_url, "default_branch": "main"},
        })
        .to_string()
    };
    let deliver = |body: String, signature: String| {
        api.http
            .post(format!("{}/hooks/github", api.base))
            .header("X-GitHub-Event", "push")
            .header("X-Hub-Signature-256", signature)
            .body(body)
    };

    // Unsigned, or signed with another secret: refused, nothing runs.
    let (code, _) = api
        .send(
            api.http
                .post(format!("{}/hooks/github", api.base))
                .body(push("refs/heads/main")),
        )
        .await;
    assert_eq!(code, 401);
    let body = push("refs/heads/main");
    let (code, _) = api
        .send(deliver(body.clone(), github_signature(&body, "other")))
        .await;
    assert_eq!(code, 401);
    // Another branch of the repository: no job follows it.
    let body = push("refs/heads/draft");
    let (code, answer) = api
        .send(deliver(body.clone(), github_signature(&body, secret)))
        .await;
    assert_eq!(
        (code, answer["triggered"].clone()),
        (200, serde_json::json!([]))
    );

    let body = push("refs/heads/main");
    let (code, answer) = api
        .send(deliver(body.clone(), github_signature(&body, secret)))
        .await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["triggered"], serde_json::json!(["handbook"]));
    fake.wait_until("news.md uploaded after the push", WAIT, |w| {
        w.log
            .iter()
            .filter(|l| l.path.ends_with("create-by-file"))
            .count()
            == 2
    })
    .await;
    // Without a GitLab token configured, its route is not there.
    let (code, _) = api
        .send(api.http.post(format!("{}/hooks/gitlab", api.base)))
        .await;
    assert_eq!(code, 404);
    d.stop().await;
}

#[tokio::test]
async fn a_gitlab_push_with_its_token_runs_the_job() {
    let token = "gitlab-hook-token-77";
    let Pushed {
        fake,
        git: daemon,
        api,
        service: d,
        _remote,
        _ws,
    } = pushed("gitlab_token", token).await;
    let body = serde_json::json!({
        "ref": "refs/heads/main",
        "project": {"git_http_url": daemon.url.replace("git://", "http://")},
    })
    .to_string();
    let deliver = |sent: &str| {
        api.http
            .post(format!("{}/hooks/gitlab", api.base))
            .header("X-Gitlab-Event", "Push Hook")
            .header("X-Gitlab-Token", sent.to_owned())
            .body(body.clone())
    };
    assert_eq!(api.send(deliver("wrong")).await.0, 401);
    let (code, answer) = api.send(deliver(token)).await;
    assert_eq!(code, 202, "{answer}");
    fake.wait_until("news.md uploaded after the push", WAIT, |w| {
        w.log
            .iter()
            .filter(|l| l.path.ends_with("create-by-file"))
            .count()
            == 2
    })
    .await;
    let log = d.stop().await;
    assert!(!log.contains(token), "{log}");
}

#[tokio::test]
async fn a_long_pass_says_how_far_it_got() {
    let (fake, ws, _api) = setup().await;
    ws.append_config("progress_log_secs = 1\n");
    ws.write("a.md", "alpha");
    ws.write("b.md", "beta");
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    fake.world()
        .inject(None, "create-by-file", Fault::ApplyThenWait(go.clone()), 1);
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    let status = d.notified("pass running").await;
    assert!(status.contains("docs: "), "{status}");
    assert!(status.contains("files read"), "{status}");
    go.notify_one();
    d.notified("last sync").await;
    let log = d.stop().await;
    assert!(log.contains("progress: docs: "), "{log}");
}

/// A loopback receiver of `[daemon.notify]` events.
struct Receiver {
    url: String,
    events: tokio::sync::mpsc::UnboundedReceiver<(Option<String>, Value)>,
}

type Inbox = tokio::sync::mpsc::UnboundedSender<(Option<String>, Value)>;

impl Receiver {
    async fn start() -> Receiver {
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let addr = support::serve::serve(
            std::sync::Arc::new(std::sync::Mutex::new(tx)),
            |inbox: std::sync::Arc<std::sync::Mutex<Inbox>>,
             req: hyper::Request<hyper::body::Incoming>| async move {
                use http_body_util::BodyExt;
                let auth = req
                    .headers()
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned());
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let event: Value = serde_json::from_slice(&body).unwrap();
                let _ = inbox.lock().unwrap().send((auth, event));
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                    bytes::Bytes::from_static(b"ok"),
                )))
            },
        )
        .await;
        Receiver {
            url: format!("http://{addr}/kbsync-events"),
            events,
        }
    }

    async fn next(&mut self) -> (Option<String>, Value) {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("an event arrives")
            .unwrap()
    }
}

#[tokio::test]
async fn job_changes_of_state_are_posted_with_the_secret_header_only_in_the_header() {
    let mut receiver = Receiver::start().await;
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "delete", "", "");
    let config = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(
        &ws.config_path,
        config.replace(
            "delete_policy = \"delete\"",
            "delete_policy = \"delete\"\nmax_delete = 1",
        ),
    )
    .unwrap();
    let secret = "Bearer notify-secret-9a8b7c";
    support::write_key(&ws.dir.path().join("notify.secret"), secret);
    let api = Api::on(
        &ws,
        &format!(
            "\n[daemon.notify]\nurl = \"{}\"\nheader_name = \"Authorization\"\nheader_value_file = \"notify.secret\"\n",
            receiver.url
        ),
    );
    ws.write("a.md", "alpha");
    ws.write("b.md", "beta");
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    d.notified("last sync").await;

    // The upstream refuses the key: the job fails as a whole.
    fake.world().inject(
        None,
        "create-by-file",
        Fault::status(401, "unauthorized", "Access token is invalid"),
        1,
    );
    ws.write("c.md", "gamma");
    let (auth, event) = receiver.next().await;
    assert_eq!(auth.as_deref(), Some(secret));
    assert_eq!(event["event"], "failing", "{event}");
    assert_eq!(event["job"], "docs");
    assert!(
        event["message"].as_str().unwrap().contains("401"),
        "{event}"
    );
    assert!(!event.to_string().contains("notify-secret"), "{event}");

    let (code, run) = api.post("/jobs/docs/sync?wait=true").await;
    assert_eq!(
        (code, &run["converged"]),
        (200, &Value::Bool(true)),
        "{run}"
    );
    let (_, event) = receiver.next().await;
    assert_eq!(event["event"], "recovered", "{event}");

    // Two of three files gone, one allowed: the guard refuses.
    ws.remove("a.md");
    ws.remove("b.md");
    let (code, run) = api.post("/jobs/docs/sync?wait=true").await;
    assert_eq!(code, 200, "{run}");
    assert!(run["detail"]["refused"].is_string(), "{run}");
    let (_, event) = receiver.next().await;
    assert_eq!(event["event"], "guard_refused", "{event}");
    assert!(event["at"].as_str().unwrap().ends_with('Z'), "{event}");
    d.stop().await;
}

#[tokio::test]
async fn beyond_loopback_every_route_asks_for_the_token() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "delete", "", "");
    support::write_key(&ws.dir.path().join("api.token"), TOKEN);
    let port = support::seaweed::free_port();
    ws.append_config(&format!(
        "\n[daemon]\nmetrics_listen = \"0.0.0.0:{port}\"\nmetrics_allow_remote = true\napi_token_file = \"api.token\"\n"
    ));
    ws.write("a.md", "alpha");
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    d.notified("last sync").await;
    let http = reqwest::Client::new();
    for path in ["/metrics", "/healthz", "/readyz", "/jobs"] {
        let url = format!("http://127.0.0.1:{port}{path}");
        let refused = http.get(&url).send().await.unwrap();
        assert_eq!(refused.status().as_u16(), 401, "{path}");
        let taken = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(taken.status().as_u16(), 200, "{path}");
    }
    d.stop().await;
}
