//! A job's `schedule` as the binary loads it: a bad expression and a
//! schedule beside `poll_interval_secs` are config errors naming the file,
//! line, column and key; a good one loads.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

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
