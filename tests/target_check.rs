//! The target is checked before a pass trusts it: a dataset id or key
//! that the upstream refuses stops the job before any file is read, names
//! the setting, and leaves the job bound to the target it mirrored.

mod support;

use std::process::Command;

use support::fake_dify::{FakeDify, DATASET};
use support::{run_binary, set_mtime, Workspace};

fn kbsync() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kbsync"))
}

fn line_of(ws: &Workspace, needle: &str) -> usize {
    let text = std::fs::read_to_string(&ws.config_path).unwrap();
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_dataset_id_stops_the_job_and_keeps_the_binding() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "disable", "", "");
    for k in ["a.md", "b.md", "c.md"] {
        ws.write(k, k);
        set_mtime(&ws.path(k), 1_600_000_000);
    }
    let (code, _, err) = run_binary(kbsync(), &ws.config_path, &["--reconcile"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fake.world().docs.len(), 3);

    // One character off, still a well-formed id.
    let typo = format!("{}e", &DATASET[..DATASET.len() - 1]);
    let good = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(&ws.config_path, good.replace(DATASET, &typo)).unwrap();
    let line = line_of(&ws, &typo);
    let mark = fake.requests();
    let (code, out, err) = run_binary(kbsync(), &ws.config_path, &["--reconcile"]);
    assert_eq!(
        code, 4,
        "a target the upstream does not find exits 4: {out}{err}"
    );
    let place = format!("kbsync.toml:{line}:");
    assert!(
        err.contains(&place) && err.contains("dataset_id"),
        "names file, line and key: {err}"
    );
    assert_eq!(
        fake.requests() - mark,
        1,
        "one refused call, then nothing: {:?}",
        &fake.world().log[mark..]
    );

    // Fixed: the job is still bound to its dataset, nothing is sent again.
    std::fs::write(&ws.config_path, &good).unwrap();
    let mark = fake.requests();
    let (code, out, err) = run_binary(kbsync(), &ws.config_path, &["--reconcile"]);
    assert_eq!(code, 0, "{out}{err}");
    let w = fake.world();
    assert_eq!(w.count_since(mark, "by-file"), 0, "{:?}", &w.log[mark..]);
    assert_eq!(w.docs.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_stops_the_job_before_reading_and_names_the_setting() {
    let fake = FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), DATASET, "disable", "", "");
    ws.write("a.md", "a");
    support::write_key(
        &ws.dir.path().join("api.key"),
        "dataset-WRONGKEY000000000000",
    );
    let line = line_of(&ws, "api_key_file");
    let (code, out, err) = run_binary(kbsync(), &ws.config_path, &["--reconcile"]);
    assert_eq!(code, 4, "a refused credential exits 4: {out}{err}");
    assert!(
        err.contains(&format!("kbsync.toml:{line}:")) && err.contains("api_key_file"),
        "{err}"
    );
    assert!(!err.contains("WRONGKEY"), "{err}");
    assert_eq!(fake.requests(), 1, "{:?}", fake.world().log);
}
