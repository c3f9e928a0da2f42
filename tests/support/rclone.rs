//! A real WebDAV server for the WebDAV source's tests: `rclone serve
//! webdav` (Debian's `rclone`) over a temporary folder, on a free loopback
//! port with a user and password, ready when its port answers, killed on
//! drop. `.ci/run` installs it; without it the tests fail saying so.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::seaweed::{free_port, require, wait_for_port};

pub const USER: &str = "kbsync";
pub const PASSWORD: &str = "webdavTestPassword";

pub struct RcloneDav {
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT/`.
    pub url: String,
}

impl RcloneDav {
    /// A server that caches no listing: the tests change the folder behind
    /// its back.
    pub fn start() -> RcloneDav {
        RcloneDav::start_caching("0s")
    }

    /// A server that keeps folder listings for `dir_cache_time` (rclone's
    /// duration syntax). With no cache rclone re-reads a folder's entries
    /// once per entry it answers for, so a 91-file PROPFIND takes over a
    /// second: the benchmark measures kbsync, not that.
    pub fn start_caching(dir_cache_time: &str) -> RcloneDav {
        require("rclone", "apt-get install rclone");
        let dir = tempfile::tempdir().unwrap();
        let served = dir.path().join("share");
        std::fs::create_dir(&served).unwrap();
        let port = free_port();
        let log = dir.path().join("rclone.log");
        let mut child = Command::new("rclone")
            .args(["serve", "webdav"])
            .arg(&served)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(["--user", USER, "--pass", PASSWORD])
            .arg("--config=/dev/null")
            .arg(format!("--dir-cache-time={dir_cache_time}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .expect("rclone starts");
        wait_for_port(&mut child, SocketAddr::from(([127, 0, 0, 1], port)), &log)
            .unwrap_or_else(|e| panic!("{e}"));
        RcloneDav {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}/"),
        }
    }

    /// The folder the server shares.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("share")
    }

    pub fn path(&self, key: &str) -> PathBuf {
        self.root().join(key)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rclone.log")).unwrap_or_default()
    }

    pub fn write(&self, key: &str, body: &str) {
        let p: &Path = &self.path(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
}

impl Drop for RcloneDav {
    fn drop(&mut self) {
        unsafe {
            libc::killpg(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
