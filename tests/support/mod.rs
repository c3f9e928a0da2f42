//! Test support: an in-process fake of Dify's Knowledge API and helpers to
//! build a config around a temporary folder.
#![allow(dead_code)]

pub mod fake_dify;
pub mod fake_openwebui;
pub mod fake_pai;
pub mod fake_sharely;
pub mod fake_web;
pub mod git;
pub mod rclone;
pub mod s3_proxy;
pub mod seaweed;
pub mod serve;
pub mod service;
pub mod shown;

use std::path::{Path, PathBuf};

use kbsync::config::Config;
use kbsync::reconcile::{self, JobReport, RunOptions};

pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub config_path: PathBuf,
}

impl Workspace {
    /// A temp folder `docs/` and a config mirroring it into `fake`.
    pub fn new(
        base_url: &str,
        dataset: &str,
        policy: &str,
        extra_dify: &str,
        metadata: &str,
    ) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("docs");
        std::fs::create_dir_all(&root).unwrap();
        write_key(
            &dir.path().join("api.key"),
            &format!("{}\n", fake_dify::API_KEY),
        );
        let config_path = dir.path().join("kbsync.toml");
        let text = format!(
            r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "docs"
delete_policy = "{policy}"

[sync.folder]
root = "docs"

[sync.dify]
base_url = "{base_url}"
dataset_id = "{dataset}"
api_key_file = "api.key"
retry_min_delay_ms = 5
retry_max_delay_secs = 2
max_retries = 8
{extra_dify}

[sync.metadata]
{metadata}
"#
        );
        std::fs::write(&config_path, text).unwrap();
        Workspace {
            dir,
            root,
            config_path,
        }
    }

    /// A workspace with `config` as its config file (and `api.key` beside it).
    pub fn raw(config: &str) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("docs");
        std::fs::create_dir_all(&root).unwrap();
        write_key(&dir.path().join("api.key"), fake_dify::API_KEY);
        let config_path = dir.path().join("kbsync.toml");
        std::fs::write(&config_path, config).unwrap();
        Workspace {
            dir,
            root,
            config_path,
        }
    }

    pub fn append_config(&self, text: &str) {
        let mut config = std::fs::read_to_string(&self.config_path).unwrap();
        config.push_str(text);
        std::fs::write(&self.config_path, config).unwrap();
    }

    /// Adds `line` to the `[sync.folder]` of a job whose root is `docs`.
    pub fn folder_setting(&self, line: &str) {
        let config = std::fs::read_to_string(&self.config_path).unwrap();
        let root = "root = \"docs\"";
        assert!(config.contains(root), "no job with root = \"docs\"");
        std::fs::write(
            &self.config_path,
            config.replace(root, &format!("{root}\n{line}")),
        )
        .unwrap();
    }

    pub fn write(&self, key: &str, content: &str) {
        let p = self.root.join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn remove(&self, key: &str) {
        std::fs::remove_file(self.root.join(key)).unwrap();
    }

    pub fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path).unwrap()
    }

    /// One pass, as `--reconcile` runs it.
    pub async fn sync(&self) -> JobReport {
        self.sync_in_slices(0).await
    }

    /// One pass with `opts`.
    pub async fn run_with(&self, opts: RunOptions) -> JobReport {
        let mut reports = reconcile::run(&self.config(), &[], opts).await.unwrap();
        reports.remove(0)
    }

    /// One pass whose full passes over a folder go `slice` files at a time
    /// (0: the product's size), as a large tree does.
    pub async fn sync_in_slices(&self, slice: usize) -> JobReport {
        let config = self.config();
        let opts = RunOptions {
            slice,
            ..RunOptions::default()
        };
        let mut reports = reconcile::run(&config, &[], opts).await.unwrap();
        reports.remove(0)
    }

    /// One pass as `--reconcile` runs it: with the upstream audit.
    pub async fn reconcile(&self) -> JobReport {
        self.run_with(RunOptions {
            audit: true,
            ..RunOptions::default()
        })
        .await
    }

    pub async fn dry_run(&self) -> JobReport {
        let config = self.config();
        let mut reports = reconcile::run(
            &config,
            &[],
            RunOptions {
                dry_run: true,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
        reports.remove(0)
    }
}

/// A fresh fake Dify and a workspace whose one job mirrors into it.
pub async fn with_fake(policy: &str, metadata: &str) -> (fake_dify::FakeDify, Workspace) {
    let fake = fake_dify::FakeDify::start().await;
    let ws = Workspace::new(&fake.base_url(), fake_dify::DATASET, policy, "", metadata);
    (fake, ws)
}

/// Runs `cmd` (the kbsync binary, perhaps behind a wrapper) with
/// `args --config <config>`: exit code, stdout, stderr.
pub fn run_binary(
    mut cmd: std::process::Command,
    config: &Path,
    args: &[&str],
) -> (i32, String, String) {
    let out = cmd
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn set_mtime(path: &Path, secs: i64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(t).unwrap();
}

/// `--name N` from the command line (benchmarks), else `default`.
pub fn numeric_arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes a key file as an operator should (mode 600), so runs do not warn.
pub fn write_key(path: &Path, key: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, key).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The kbsync binary as a user without privileges runs it: root reads and
/// writes every file whatever its mode, so to see permission errors (or
/// their absence) a root test run goes through `setpriv` as `nobody`. The
/// build folder may sit where `nobody` cannot reach (under /root, say), so
/// a copy beside `config` runs; its folder must be reachable.
pub fn unprivileged(config: &Path) -> std::process::Command {
    if !is_root() {
        return std::process::Command::new(env!("CARGO_BIN_EXE_kbsync"));
    }
    assert!(
        std::process::Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok(),
        "running as root needs setpriv (util-linux) to test permissions"
    );
    let copy = config.with_file_name("kbsync-bin");
    if !copy.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_kbsync"), &copy).unwrap();
        chmod(&copy, 0o755);
    }
    let mut c = std::process::Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy);
    c
}

pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
