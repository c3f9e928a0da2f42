//! Timing and peak memory of child processes, and the generated trees.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

pub struct Measured {
    pub wall: Duration,
    /// Peak resident set of the child (getrusage's ru_maxrss), KiB.
    pub max_rss_kib: u64,
}

/// Runs `cmd` to completion with its output discarded; panics unless it
/// exits 0.
///
/// Linux carries a process's peak memory across fork and exec, so a child
/// of this (large) process would report at least our own size: the child
/// is started by a fresh, small copy of this binary (`--measure-child`),
/// which reaps it with wait4 and prints its wall time and peak memory.
pub fn run(cmd: &mut Command) -> Measured {
    let mut helper = Command::new(std::env::current_exe().unwrap());
    helper
        .arg("--measure-child")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stderr(Stdio::inherit());
    // The command's own environment, removals included (rclone 1.60
    // refuses to start with AWS_CA_BUNDLE set).
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => helper.env(k, v),
            None => helper.env_remove(k),
        };
    }
    let out = helper.output().expect("spawn the measuring helper");
    assert!(out.status.success(), "{cmd:?} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().unwrap());
    Measured {
        wall: Duration::from_nanos(fields.next().unwrap()),
        max_rss_kib: fields.next().unwrap(),
    }
}

/// The helper's side of `run`: runs `args` with output discarded and
/// prints "wall_ns max_rss_kib"; exits with 1 if the command failed.
pub fn measure_child(args: &[String]) -> ! {
    let start = Instant::now();
    let child = Command::new(&args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: a plain syscall on our own child; both out-pointers are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    println!("{} {}", wall.as_nanos(), usage.ru_maxrss);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    std::process::exit(if ok { 0 } else { 1 });
}

pub fn find(root: &Path) -> Measured {
    run(Command::new("find")
        .arg(root)
        .args(["-type", "f", "-printf", "%s %T@ %p\n"]))
}

/// The binary measured: this build's, or the one `KBSYNC_BENCH_BIN` names
/// (an older build, for before/after numbers on the same machine).
pub fn binary() -> std::path::PathBuf {
    std::env::var_os("KBSYNC_BENCH_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_kbsync").into())
}

pub fn kbsync(config: &Path) -> Measured {
    run(Command::new(binary())
        .arg("--reconcile")
        // The scan's floor: the audit's listing is measured on its own.
        .arg("--no-audit")
        .arg("--config")
        .arg(config))
}

/// The binary as a service over `ws`; its sd_notify datagrams (READY=1,
/// STATUS=…) arrive on the returned socket.
pub fn service(
    ws: &crate::support::Workspace,
) -> (tokio::process::Child, tokio::net::UnixDatagram) {
    let sock = ws.dir.path().join("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&sock).unwrap();
    let child = tokio::process::Command::new(binary())
        .arg("--config")
        .arg(&ws.config_path)
        .env("NOTIFY_SOCKET", &sock)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, notify)
}

/// SIGTERM to the service, which must then exit 0.
pub async fn stop(mut child: tokio::process::Child) {
    let pid = child.id().expect("still running").to_string();
    Command::new("kill")
        .args(["-s", "TERM", &pid])
        .status()
        .unwrap();
    assert!(child.wait().await.unwrap().success());
}

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1e3)
    } else {
        format!("{ms:.0} ms")
    }
}

/// The key of file `i` in a tree of `n`: 100 files per folder, folders
/// two levels deep, as document trees tend to be.
pub fn key(i: usize) -> String {
    let folder = i / 100;
    format!("area{:03}/topic{:04}/note{i:07}.md", folder / 64, folder)
}

/// Writes `n` Markdown files of about `bytes` bytes under `root`, last
/// modified a day ago (settled: a file modified within 2 s of a scan is
/// re-read by the next one).
pub fn write_tree(root: &Path, n: usize, bytes: usize) {
    write_tree_with(root, n, bytes, key)
}

/// The key of file `i` with `per_folder` files in each folder.
pub fn key_in(i: usize, per_folder: usize) -> String {
    let folder = i / per_folder;
    format!("area{:03}/topic{folder:06}/note{i:07}.md", folder / 1000)
}

/// As `write_tree`, with the keys `key` gives.
pub fn write_tree_with(root: &Path, n: usize, bytes: usize, key: impl Fn(usize) -> String) {
    let when = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let filler = "lorem ipsum dolor sit amet ".repeat(bytes / 27 + 1);
    let mut made = String::new();
    for i in 0..n {
        let key = key(i);
        let dir = &key[..key.rfind('/').unwrap()];
        if dir != made {
            std::fs::create_dir_all(root.join(dir)).unwrap();
            made = dir.to_owned();
        }
        let mut f = std::fs::File::create(root.join(&key)).unwrap();
        let head = format!("# Note {i}\n");
        f.write_all(head.as_bytes()).unwrap();
        f.write_all(&filler.as_bytes()[..bytes.saturating_sub(head.len())])
            .unwrap();
        f.set_modified(when).unwrap();
    }
}

/// Reads and hashes every file `find` lists, one after another with the
/// BLAKE3 crate: the work of `b3sum` over the same bytes.
pub fn hash_all(root: &Path) -> Duration {
    let out = Command::new("find")
        .arg(root)
        .args(["-type", "f", "-print0"])
        .output()
        .unwrap();
    let start = Instant::now();
    let mut n = 0;
    for path in out.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        use std::os::unix::ffi::OsStrExt;
        let bytes = std::fs::read(std::ffi::OsStr::from_bytes(path)).unwrap();
        std::hint::black_box(blake3::hash(&bytes));
        n += 1;
    }
    assert!(n > 0);
    start.elapsed()
}
