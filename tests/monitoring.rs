//! The service's metrics and health endpoints, scraped over HTTP from the
//! running binary and parsed with an independent Prometheus text parser.
//! Waits are on sd_notify datagrams and requests the fake sees.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_parse::{Scrape, Value};
use support::fake_dify::{FakeDify, Fault};
use support::service::{Daemon, WAIT};
use support::Workspace;

/// A loopback port nothing listens on (the kernel's pick, let go again).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn setup() -> (FakeDify, Workspace, u16) {
    setup_with("").await
}

/// `setup` with `extra_dify` in the job's `[sync.dify]`.
async fn setup_with(extra_dify: &str) -> (FakeDify, Workspace, u16) {
    let fake = FakeDify::start().await;
    let dataset = support::fake_dify::DATASET;
    let ws = Workspace::new(&fake.base_url(), dataset, "disable", extra_dify, "");
    let port = free_port();
    ws.append_config(&format!(
        "\n[daemon]\ndebounce_ms = 50\nmetrics_listen = \"127.0.0.1:{port}\"\n"
    ));
    (fake, ws, port)
}

async fn get(port: u16, path: &str) -> (u16, String) {
    let resp = tokio::time::timeout(WAIT, reqwest::get(format!("http://127.0.0.1:{port}{path}")))
        .await
        .expect("the listener answers")
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// Samples by name and labels (`name{a="1",b="2"}`, labels sorted).
fn scrape(text: &str) -> BTreeMap<String, Value> {
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    parsed
        .samples
        .into_iter()
        .map(|s| {
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            (format!("{}{{{}}}", s.metric, labels.join(",")), s.value)
        })
        .collect()
}

fn number(samples: &BTreeMap<String, Value>, key: &str) -> f64 {
    match samples.get(key) {
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        other => panic!("{key}: {other:?} in\n{:#?}", samples.keys()),
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn a_scrape_shows_items_requests_bytes_passes_and_watches() {
    let (fake, ws, port) = setup().await;
    let files = [
        ("a.md", "alpha"),
        ("b.md", "beta beta"),
        ("sub/c.md", "gamma"),
    ];
    for (k, v) in files {
        ws.write(k, v);
    }
    let started = unix_now().floor();
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    d.notified("last sync").await;

    let (code, text) = get(port, "/metrics").await;
    assert_eq!(code, 200, "{text}");
    let m = scrape(&text);
    let job = |name: &str| number(&m, &format!("{name}{{job=\"docs\"}}"));
    assert_eq!(job("kbsync_items_tracked"), 3.0);
    assert_eq!(job("kbsync_items_in_sync"), 3.0);
    assert_eq!(job("kbsync_items_pending"), 0.0);
    assert_eq!(job("kbsync_items_parked"), 0.0);
    assert_eq!(job("kbsync_outbox_depth"), 0.0);
    assert_eq!(job("kbsync_audit_differences"), 0.0);
    assert!(job("kbsync_last_success_timestamp_seconds") >= started);
    let creates = fake
        .world()
        .log
        .iter()
        .filter(|l| l.path.ends_with("create-by-file"))
        .count();
    assert_eq!(creates, 3);
    assert_eq!(
        number(
            &m,
            "kbsync_requests_total{class=\"2xx\",job=\"docs\",op=\"create_by_file\",upstream=\"dify\"}"
        ),
        3.0
    );
    let bytes: usize = files.iter().map(|(_, v)| v.len()).sum();
    assert_eq!(
        number(&m, "kbsync_uploaded_bytes_total{upstream=\"dify\"}"),
        bytes as f64
    );
    assert_eq!(
        number(&m, "kbsync_passes_total{job=\"docs\",result=\"converged\"}"),
        1.0
    );
    match m.get("kbsync_pass_duration_seconds{job=\"docs\"}") {
        Some(Value::Histogram(buckets)) => {
            let inf = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
            assert_eq!(inf.count, 1.0, "{buckets:?}");
        }
        other => panic!("pass duration: {other:?}"),
    }
    // The root, its one folder, and the root's parent (which shows the
    // root moved away or replaced).
    assert_eq!(number(&m, "kbsync_inotify_watches{}"), 3.0);
    assert_eq!(number(&m, "kbsync_inotify_overflows_total{}"), 0.0);
    assert_eq!(
        number(
            &m,
            &format!(
                "kbsync_build_info{{version={:?}}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );

    // Counters an alert takes a rate of are there before their first event.
    for key in [
        "kbsync_retries_total{job=\"docs\",upstream=\"dify\"}",
        "kbsync_rate_limit_pauses_total{job=\"docs\",upstream=\"dify\"}",
        "kbsync_passes_total{job=\"docs\",result=\"failed\"}",
        "kbsync_passes_total{job=\"docs\",result=\"not_converged\"}",
        "kbsync_reloads_total{result=\"rejected\"}",
        "kbsync_reloads_total{result=\"applied\"}",
        "kbsync_job_paused{job=\"docs\"}",
    ] {
        assert_eq!(number(&m, key), 0.0, "{key}");
    }

    // Told to slow down once: a retry, a pause, and the 429 counted.
    fake.world()
        .inject(None, "create-by-file", Fault::too_many("1"), 1);
    ws.write("d.md", "delta");
    d.notified("last sync").await;
    let m = scrape(&get(port, "/metrics").await.1);
    assert_eq!(
        number(
            &m,
            "kbsync_requests_total{class=\"4xx\",job=\"docs\",op=\"create_by_file\",upstream=\"dify\"}"
        ),
        1.0
    );
    assert_eq!(
        number(
            &m,
            "kbsync_requests_total{class=\"2xx\",job=\"docs\",op=\"create_by_file\",upstream=\"dify\"}"
        ),
        4.0
    );
    assert_eq!(
        number(&m, "kbsync_retries_total{job=\"docs\",upstream=\"dify\"}"),
        1.0
    );
    assert_eq!(
        number(
            &m,
            "kbsync_rate_limit_pauses_total{job=\"docs\",upstream=\"dify\"}"
        ),
        1.0
    );
    assert_eq!(number(&m, "kbsync_items_tracked{job=\"docs\"}"), 4.0);

    assert_eq!(get(port, "/nothing").await.0, 404);
    d.stop().await;
}

#[tokio::test]
async fn readiness_follows_the_first_pass_a_fatal_pass_and_recovery() {
    let (fake, ws, port) = setup().await;
    ws.write("a.md", "alpha");
    // The first upload is answered only when the test says so.
    let go = Arc::new(tokio::sync::Notify::new());
    fake.world()
        .inject(None, "create-by-file", Fault::ApplyThenWait(go.clone()), 1);
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    fake.wait_until("the first upload", WAIT, |w| {
        w.arrived.iter().any(|r| r.contains("create-by-file"))
    })
    .await;
    assert_eq!(get(port, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(
        get(port, "/readyz").await,
        (503, "docs: first pass not done yet\n".into())
    );

    go.notify_one();
    d.notified("last sync").await;
    assert_eq!(get(port, "/readyz").await, (200, "ready\n".into()));

    // The key is refused: the pass stops as a whole.
    fake.world().inject(
        None,
        "create-by-file",
        Fault::status(401, "unauthorized", "Access token is invalid"),
        1,
    );
    ws.write("b.md", "beta");
    d.notified("with failures").await;
    let (code, why) = get(port, "/readyz").await;
    assert_eq!(code, 503);
    assert!(
        why.starts_with("docs: last pass failed: stopped: ") && why.contains("401"),
        "{why}"
    );
    // Still alive: the loop turns, it is the upstream that refuses.
    assert_eq!(get(port, "/healthz").await.0, 200);

    // The key works again: the next pass is fine, and so is readiness.
    ws.write("c.md", "gamma");
    d.notified(" ok").await;
    assert_eq!(get(port, "/readyz").await, (200, "ready\n".into()));
    d.stop().await;
}

#[tokio::test]
async fn a_port_in_use_stops_the_start_with_the_setting_named() {
    let (_fake, ws) = support::with_fake("disable", "").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    ws.append_config(&format!(
        "\n[daemon]\nmetrics_listen = \"127.0.0.1:{port}\"\n"
    ));
    let mut d = Daemon::spawn(&ws, "1", &[]);
    let status = d.exit().await;
    assert!(!status.success());
    let log = d.log_text();
    assert!(
        log.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (`daemon.metrics_listen`)"
        )),
        "{log}"
    );
}

#[tokio::test]
async fn a_target_the_upstream_refuses_is_a_failed_job_not_retried_every_30_s() {
    let (fake, ws, port) = setup().await;
    ws.write("a.md", "alpha");
    let text = std::fs::read_to_string(&ws.config_path).unwrap();
    let typo = support::fake_dify::DATASET.replace("d1f7", "d1f8");
    std::fs::write(
        &ws.config_path,
        text.replace(support::fake_dify::DATASET, &typo),
    )
    .unwrap();
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    fake.wait_until("the check of the target", WAIT, |w| !w.log.is_empty())
        .await;
    let (code, why) = loop {
        let (code, why) = get(port, "/readyz").await;
        if !why.contains("first pass not done") {
            break (code, why);
        }
        d.notified("STATUS").await;
    };
    assert_eq!(code, 503);
    assert!(
        why.contains("kbsync.toml:") && why.contains("dataset_id") && why.contains("404"),
        "{why}"
    );
    let log = d.stop().await;
    assert!(log.contains("until the config changes"), "{log}");
    assert!(!log.contains("trying again in"), "{log}");
    assert_eq!(fake.requests(), 1, "{:?}", fake.world().log);
}

/// A file the upstream refuses for good (Dify's bare 400 on a type it does
/// not take) and a file skipped before upload leave nothing to retry: the
/// pass is not converged, yet it synced all it could. That moment is its
/// own series, so an alert on it can fire when passes stop settling.
#[tokio::test]
async fn a_file_refused_for_good_does_not_hide_when_the_job_last_settled() {
    let (fake, ws, port) = setup_with("allowed_extensions = [\"md\", \"rst\"]").await;
    ws.write("a.md", "alpha");
    ws.write("notes.rst", "refused on create with an empty message");
    ws.write("tool.exe", "skipped before it is read");
    let started = unix_now().floor();
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    d.notified("last sync").await;

    let m = scrape(&get(port, "/metrics").await.1);
    let job = |name: &str| format!("{name}{{job=\"docs\"}}");
    assert_eq!(number(&m, &job("kbsync_items_parked")), 1.0);
    assert_eq!(number(&m, &job("kbsync_items_skipped")), 1.0, "tool.exe");
    assert!(
        !m.contains_key(&job("kbsync_last_success_timestamp_seconds")),
        "nothing converged: {:#?}",
        m.keys()
    );
    let settled = number(&m, &job("kbsync_last_settled_timestamp_seconds"));
    assert!(settled >= started, "{settled} < {started}");

    // `status` beside the running service says the same, as text and JSON.
    let config = ws.config_path.clone();
    let status = |args: &'static [&'static str]| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            support::run_binary(
                std::process::Command::new(env!("CARGO_BIN_EXE_kbsync")),
                &config,
                args,
            )
        })
    };
    let (code, out, err) = status(&["status"]).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("last successful sync: never"), "{out}");
    assert!(
        out.contains("last pass that left nothing to retry: 20"),
        "{out}"
    );
    let (code, out, err) = status(&["status", "--json"]).await.unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["last_success"], serde_json::Value::Null, "{out}");
    assert_eq!(v[0]["last_settled"].as_f64(), Some(settled), "{out}");
    assert_eq!(v[0]["last_run"]["settled"], true, "{out}");

    // A pass that leaves something to retry (a 503 that outlasts the
    // retries) does not move it.
    fake.world().inject(
        None,
        "create-by-file",
        Fault::status(503, "service_unavailable", "Service Unavailable"),
        100,
    );
    ws.write("b.md", "beta");
    d.notified("with failures").await;
    let (_, out, _) = status(&["status", "--json"]).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["last_settled"].as_f64(), Some(settled), "{out}");
    assert_eq!(v[0]["last_run"]["settled"], false, "{out}");
    d.stop().await;
}

#[tokio::test]
async fn a_status_change_retried_on_difys_indexing_lock_is_counted_as_a_retry() {
    let (fake, ws, port) = setup().await;
    ws.write("a.md", "alpha");
    ws.write("b.md", "beta");
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    d.notified("last sync").await;
    // The next status call finds the document locked ("being indexed");
    // the one after goes through.
    let id = fake.world().doc_by_name("a.md").unwrap().id.clone();
    fake.world().docs.get_mut(&id).unwrap().being_indexed = 1;
    ws.remove("a.md");
    d.notified("last sync").await;
    assert!(!fake.world().docs[&id].enabled, "disabled after the wait");
    let m = scrape(&get(port, "/metrics").await.1);
    assert_eq!(
        number(&m, "kbsync_retries_total{job=\"docs\",upstream=\"dify\"}"),
        1.0
    );
    d.stop().await;
}

#[tokio::test]
async fn a_rejected_reload_is_counted_and_a_restart_shows_the_last_sync_at_once() {
    let (_fake, ws, port) = setup().await;
    ws.write("a.md", "alpha");
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    d.notified("last sync").await;
    let good = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(&ws.config_path, format!("{good}\nnot toml at all")).unwrap();
    d.signal("HUP");
    d.notified("reloading configuration").await;
    d.notified("watching").await;
    let m = scrape(&get(port, "/metrics").await.1);
    assert_eq!(number(&m, "kbsync_reloads_total{result=\"rejected\"}"), 1.0);
    assert_eq!(number(&m, "kbsync_reloads_total{result=\"applied\"}"), 0.0);
    std::fs::write(&ws.config_path, good).unwrap();
    d.stop().await;

    // The first status line of the next start reads the state file.
    let mut d = Daemon::spawn(&ws, "2", &[]);
    let ready = d.notified("READY=1").await;
    assert!(ready.contains("last sync 20"), "{ready}");
    assert!(ready.contains(" ok"), "{ready}");
    d.stop().await;
}
