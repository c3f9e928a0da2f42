//! `kbsync config validate` through the binary: every error of a config
//! in one run, each with file:line:column, the full key path and, for an
//! unknown key, the closest known one; a valid config exits 0.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn kbsync(config: &Path, args: &[&str]) -> (i32, String, String) {
    support::run_binary(Command::new(env!("CARGO_BIN_EXE_kbsync")), config, args)
}

fn validate(config: &Path) -> (i32, String, String) {
    kbsync(config, &["config", "validate"])
}

/// `body` as `bad.toml` in `dir`, beside a `docs` folder.
fn config_with(dir: &Path, body: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("docs")).unwrap();
    let p = dir.join("bad.toml");
    std::fs::write(&p, body).unwrap();
    p
}

/// A valid job named `name` mirroring `docs` into the dataset `dataset`,
/// with the `extra` lines after its name.
fn job(name: &str, dataset: &str, extra: &str) -> String {
    format!(
        r#"[[sync]]
name = "{name}"
{extra}[sync.folder]
root = "docs"
[sync.dify]
base_url = "https://dify.example.com/v1"
dataset_id = "{dataset}"
api_key_env = "KBSYNC_TEST_KEY"
"#
    )
}

/// The lines of `err` that report an error (`bad.toml:line:column: …`).
fn error_lines(err: &str) -> Vec<&str> {
    err.lines().filter(|l| l.contains("bad.toml:")).collect()
}

#[test]
fn three_mistakes_in_three_places_are_reported_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[daemon]\ndebounce_msec = 500\n\n{}[sync.metadata]\nsection = {{ path_segment = \"first\" }}\n\n{}",
        job("docs", "abc", ""),
        job("nightly", "def", "schedule = \"0 25 * * *\"\n"),
    );
    let p = config_with(dir.path(), &text);
    let (code, out, err) = validate(&p);
    assert_eq!(code, 2, "{out}{err}");
    let lines = error_lines(&err);
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].contains("bad.toml:2:1: `daemon.debounce_msec`: unknown field `debounce_msec`: did you mean `debounce_ms`?"),
        "{err}"
    );
    assert!(
        lines[1].contains("bad.toml:13:")
            && lines[1].contains("`sync[0].metadata.section.path_segment`"),
        "{err}"
    );
    assert!(
        lines[2].contains("bad.toml:17:")
            && lines[2].contains("`sync[1].schedule`")
            && lines[2].contains("hour field \"25\""),
        "{err}"
    );
    assert!(err.contains("3 error(s) in"), "{err}");
}

/// The service and `--reconcile` stop at the first error, told the same
/// way: the key's full path and the suggestion.
#[test]
fn a_typo_suggests_the_key_on_the_normal_load_path_too() {
    let dir = tempfile::tempdir().unwrap();
    let text =
        job("docs", "abc", "").replace("root = \"docs\"", "root = \"docs\"\nincldue = [\"*.md\"]");
    let p = config_with(
        dir.path(),
        &format!("[daemon]\ndebounce_msec = 500\n\n{text}"),
    );
    let (code, _, err) = kbsync(&p, &["--dry-run"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.toml:2:1: `daemon.debounce_msec`: unknown field `debounce_msec`: did you mean `debounce_ms`?"),
        "{err}"
    );
    let (code, _, err) = validate(&p);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.toml:8:1: `sync[0].folder.incldue`: unknown field `incldue`: did you mean `include`?"),
        "{err}"
    );
}

#[test]
fn an_inline_api_key_is_refused_unechoed_and_never_suggested() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}{}",
        job("docs", "abc", "").replace(
            "api_key_env = \"KBSYNC_TEST_KEY\"",
            "api_key = \"plain-PASTED7\""
        ),
        job("other", "def", "").replace("api_key_env", "apikey"),
    );
    let p = config_with(dir.path(), &text);
    let (code, out, err) = validate(&p);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        !err.contains("PASTED7") && !out.contains("PASTED7"),
        "{err}"
    );
    let lines = error_lines(&err);
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].contains("bad.toml:8:")
            && lines[0].contains("`sync[0].dify.api_key`: secrets are not accepted inline"),
        "{err}"
    );
    // The typo is pointed at the setting that names where the key is.
    assert!(
        lines[1].contains("bad.toml:16:1: `sync[1].dify.apikey`: unknown field `apikey`: did you mean `api_key_env`?"),
        "{err}"
    );
    assert!(!lines[1].contains("`api_key`"), "{err}");
    // The same on the normal load path.
    let (code, _, err) = kbsync(&p, &["--dry-run"]);
    assert_eq!(code, 2);
    assert!(
        !err.contains("PASTED7") && !err.contains("`api_key`,"),
        "{err}"
    );
}

#[test]
fn the_bundled_example_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    let (code, out, err) = validate(&example);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("ok: ") && out.contains("1 job(s): handbook"),
        "{out}"
    );
}

#[test]
fn a_file_that_does_not_parse_is_one_error_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let p = config_with(dir.path(), &format!("{}name = \n", job("docs", "abc", "")));
    let (code, _, err) = validate(&p);
    assert_eq!(code, 2);
    assert_eq!(error_lines(&err).len(), 1, "{err}");
    assert!(err.contains("bad.toml:9:"), "{err}");
}

/// A section with several mistakes: each is found, since the section is
/// read again past every one.
#[test]
fn every_mistake_in_one_section_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let text = job("docs", "abc", "").replace(
        "root = \"docs\"",
        "root = \"docs\"\nincldue = [\"*.md\"]\nexlcude = [\"*.tmp\"]\nfollow_symlinks = \"yes\"",
    );
    let p = config_with(dir.path(), &text);
    let (code, _, err) = validate(&p);
    assert_eq!(code, 2, "{err}");
    let lines = error_lines(&err);
    assert_eq!(lines.len(), 3, "{err}");
    for (line, expected) in lines.iter().zip([
        "bad.toml:5:1: `sync[0].folder.incldue`: unknown field `incldue`: did you mean `include`?",
        "bad.toml:6:1: `sync[0].folder.exlcude`: unknown field `exlcude`: did you mean `exclude`?",
        "bad.toml:7:19: `sync[0].folder.follow_symlinks`: invalid type",
    ]) {
        assert!(line.contains(expected), "{expected}\n{err}");
    }
}
