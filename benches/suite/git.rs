//! A git repository as a source, served by a real `git daemon`: the no-op
//! poll beside `git fetch` of the same unchanged remote, a commit of a few
//! changed files (blobs read, documents pushed), and a first sync's memory.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::measure::{self, key, median, ms};
use crate::support::fake_dify::{FakeDify, DATASET};
use crate::support::git::{GitDaemon, Remote};
use crate::support::Workspace;
use crate::Row;

/// About 1 KiB a file.
fn body(i: usize, version: usize) -> String {
    format!(
        "# Note {i} (version {version})\n{}",
        "lorem ipsum dolor sit amet ".repeat(37)
    )
}

/// Commits `files` (key, body) to `main` of the remote with one
/// `git fast-import` (the first commit when `parent` is false).
fn import(remote: &Remote, files: impl Iterator<Item = (String, String)>, parent: bool) {
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(remote.bare())
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = std::io::BufWriter::new(child.stdin.take().unwrap());
    let message = "bench";
    write!(
        input,
        "commit refs/heads/main\ncommitter Bench <bench@example.com> 1700000000 +0000\ndata {}\n{message}\n",
        message.len()
    )
    .unwrap();
    if parent {
        writeln!(input, "from refs/heads/main^0").unwrap();
    }
    for (path, content) in files {
        write!(
            input,
            "M 100644 inline {path}\ndata {}\n{content}\n",
            content.len()
        )
        .unwrap();
    }
    drop(input);
    assert!(child.wait().unwrap().success(), "git fast-import");
}

fn workspace(fake: &FakeDify, url: &str) -> Workspace {
    Workspace::raw(&format!(
        r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "repo"
delete_policy = "delete"

[sync.git]
url = "{url}"
branch = "main"

[sync.dify]
base_url = "{}"
dataset_id = "{DATASET}"
api_key_file = "api.key"
retry_min_delay_ms = 10
retry_max_delay_secs = 2
"#,
        fake.base_url()
    ))
}

pub async fn rows(n: usize, runs: usize, changes: usize) -> Vec<Row> {
    let remote = Remote::new();
    eprintln!("committing {n} files of about 1 KiB…");
    import(&remote, (0..n).map(|i| (key(i), body(i, 0))), false);
    let daemon = GitDaemon::start(&remote);
    let fake = FakeDify::start().await;
    let ws = workspace(&fake, &daemon.url);

    eprintln!("first sync of {n} files over git:// (the binary)…");
    let first = measure::kbsync(&ws.config_path);
    assert_eq!(fake.world().docs.len(), n, "every file mirrored");

    // The baseline: a bare clone fetching the same unchanged branch.
    let clone = ws.dir.path().join("baseline.git");
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&clone)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}");
    };
    git(&["init", "-q", "--bare"]);
    let mut fetch = Command::new("git");
    fetch
        .arg("--git-dir")
        .arg(&clone)
        .args(["fetch", "-q", "--no-tags", &daemon.url])
        .arg("+refs/heads/main:refs/heads/main");
    measure::run(&mut fetch);

    eprintln!("no-op polls beside `git fetch`…");
    let before = fake.requests();
    measure::kbsync(&ws.config_path);
    let (mut k, mut f, mut rss) = (Vec::new(), Vec::new(), 0);
    for _ in 0..runs {
        let m = measure::kbsync(&ws.config_path);
        k.push(m.wall);
        rss = rss.max(m.max_rss_kib);
        f.push(measure::run(&mut fetch).wall);
    }
    assert_eq!(
        fake.requests(),
        before,
        "a no-op poll sent upstream requests"
    );
    let (k, f) = (median(k), median(f));

    eprintln!("a commit changing {changes} files…");
    import(
        &remote,
        (0..changes).map(|c| {
            let i = (c * 7919) % n;
            (key(i), body(i, 1))
        }),
        true,
    );
    let sent = fake.requests();
    let report = ws.sync().await;
    assert!(report.converged(), "{report:?}");
    let updates = fake.world().log[sent..]
        .iter()
        .filter(|l| l.path.ends_with("/update-by-file"))
        .count();
    let ratio = k.as_secs_f64() / f.as_secs_f64();
    let first_mib = first.max_rss_kib as f64 / 1024.0;
    vec![
        Row {
            metric: format!(
                "git no-op poll of {n} files (git daemon; `kbsync --reconcile --no-audit`, median of {runs}; peak RSS {:.0} MiB)",
                rss as f64 / 1024.0
            ),
            kbsync: ms(k),
            baseline: format!("{} (`git fetch` of the same unchanged branch)", ms(f)),
            ratio: Some(ratio),
            target: "≤ 1.2×".into(),
            pass: Some(ratio <= 1.2),
        },
        Row {
            metric: format!(
                "a commit changing {changes} of {n} files: blobs read, documents updated ({} in all, {} requests)",
                ms(report.elapsed),
                fake.requests() - sent
            ),
            kbsync: format!("{}, {updates}", report.hashed_files),
            baseline: "—".into(),
            ratio: None,
            target: format!("{changes}, {changes}"),
            pass: Some(report.hashed_files == changes && updates == changes),
        },
        Row {
            metric: format!("git first sync of {n} files into the fake (the binary, `--no-audit`)"),
            kbsync: ms(first.wall),
            baseline: "—".into(),
            ratio: None,
            target: "—".into(),
            pass: None,
        },
        Row {
            metric: "peak memory of that first sync (max RSS)".into(),
            kbsync: format!("{first_mib:.0} MiB"),
            baseline: "—".into(),
            ratio: None,
            target: "≤ 60 MiB".into(),
            pass: Some(first_mib <= 60.0),
        },
    ]
}
