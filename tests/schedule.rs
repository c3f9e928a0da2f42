//! A job's `schedule` as the binary loads it: a bad expression and a
//! schedule beside `poll_interval_secs` are config errors naming the file,
//! line, column and key; a good one loads; in the service, a polled job
//! with a schedule is polled on it alone. (When a scheduled pass is due is
//! `Schedule::next_pass`, tested as a pure function: a pass at a real
//! minute boundary would take up to a minute to wait for.)

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use support::fake_dify::FakeDify;
use support::fake_web::FakeWeb;
use support::service::{Daemon, WAIT};

fn validate(config: &Path) -> (i32, String, String) {
    support::run_binary(
        Command::new(env!("CARGO_BIN_EXE_kbsync")),
        config,
        &["config", "validate"],
    )
}

/// A config whose one job has `schedule` and reads `source` as its
/// source section, into Dify.
fn config(dir: &Path, schedule: &str, source: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("docs")).unwrap();
    let p = dir.join("kbsync.toml");
    let text = format!(
        "[[sync]]\nname = \"docs\"\nschedule = \"{schedule}\"\n{source}[sync.dify]\nbase_url = \"https://dify.example.com/v1\"\ndataset_id = \"abc\"\napi_key_env = \"K\"\n"
    );
    std::fs::write(&p, text).unwrap();
    p
}

const FOLDER: &str = "[sync.folder]\nroot = \"docs\"\n";
const WEB: &str = "[sync.web]\nurls = [\"https://docs.example.com/a.md\"]\n";

#[test]
fn a_bad_expression_names_its_place_key_and_field() {
    let dir = tempfile::tempdir().unwrap();
    for (expr, why) in [
        ("0 6 * *", "has 4 field(s); a schedule has 5"),
        (
            "0 6 * * 1-8",
            "day of week field \"1-8\": \"8\" is not a value from 0 to 7",
        ),
        ("0 0 31 2 *", "never matches"),
    ] {
        let p = config(dir.path(), expr, FOLDER);
        let (code, out, err) = validate(&p);
        assert_eq!(code, 2, "{out}{err}");
        assert!(
            err.contains("kbsync.toml:3:12: `sync[0].schedule`:") && err.contains(why),
            "{expr}: {err}"
        );
    }
}

#[test]
fn a_schedule_beside_a_poll_interval_is_refused_at_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let web = format!("{WEB}poll_interval_secs = 600\n");
    let p = config(dir.path(), "0 6 * * 1-5", &web);
    let (code, out, err) = validate(&p);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(
            "kbsync.toml:6:22: `sync[0].web.poll_interval_secs`: job \"docs\" has a schedule"
        ),
        "{err}"
    );
}

#[test]
fn a_good_schedule_loads_on_a_watched_and_a_polled_job() {
    let dir = tempfile::tempdir().unwrap();
    for source in [FOLDER, WEB] {
        let p = config(dir.path(), "*/15 6-18 * jan-jun mon-fri", source);
        let (code, out, err) = validate(&p);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("1 job(s): docs"), "{out}");
    }
}

/// Two web jobs, polled every second and passed in full every second;
/// the one with a schedule (at an hour twelve hours away) is fetched at
/// the service's start only, while the other is fetched again and again.
#[tokio::test]
async fn a_polled_job_with_a_schedule_waits_for_it() {
    let fake = FakeDify::start().await;
    let ws = support::Workspace::new(
        &fake.base_url(),
        support::fake_dify::DATASET,
        "disable",
        "name_prefix = \"files/\"",
        "",
    );
    let web = FakeWeb::start().await;
    web.site().put("/polled.md", "polled", "text/markdown");
    web.site()
        .put("/scheduled.md", "scheduled", "text/markdown");
    let hour = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600;
    let job = |name: &str, trigger: &str| {
        format!(
            "\n[[sync]]\nname = \"{name}\"\n{trigger}[sync.web]\nurls = [\"{url}\"]\n{interval}[sync.dify]\nbase_url = \"{base}\"\ndataset_id = \"{dataset}\"\napi_key_file = \"api.key\"\nname_prefix = \"{name}/\"\n",
            url = web.url(&format!("/{name}.md")),
            interval = if trigger.is_empty() { "poll_interval_secs = 1\n" } else { "" },
            base = fake.base_url(),
            dataset = support::fake_dify::DATASET,
        )
    };
    ws.append_config(&job("polled", ""));
    ws.append_config(&job(
        "scheduled",
        &format!("schedule = \"0 {} * * *\"\n", (hour + 12) % 24),
    ));
    ws.append_config("\n[daemon]\nfull_reconcile_secs = 1\n");
    let fetches = |path: &str| web.site().log.iter().filter(|(p, _)| p == path).count();
    let mut d = Daemon::spawn(&ws, "1", &[]);
    d.notified("READY=1").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while fetches("/polled.md") < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the polled job was fetched {} time(s)",
            fetches("/polled.md")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(fetches("/scheduled.md"), 1, "{:?}", web.site().log);
    d.stop().await;
}
