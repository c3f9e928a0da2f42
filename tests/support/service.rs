//! The service as a child process: the real binary, its log captured to
//! a file and its sd_notify datagrams read from a socket, so tests wait on
//! what it says rather than on the clock.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::net::UnixDatagram;
use tokio::process::{Child, Command};

use super::Workspace;

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Daemon {
    pub child: Child,
    /// sd_notify datagrams, drained from the socket as they come so the
    /// daemon never finds its queue full.
    notify: tokio::sync::mpsc::UnboundedReceiver<String>,
    log: PathBuf,
}

impl Daemon {
    pub fn spawn(ws: &Workspace, tag: &str, env: &[(&str, &str)]) -> Daemon {
        let sock = ws.dir.path().join(format!("notify-{tag}.sock"));
        let socket = UnixDatagram::bind(&sock).unwrap();
        let (tx, notify) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf).await {
                if tx
                    .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                    .is_err()
                {
                    return;
                }
            }
        });
        let log = ws.dir.path().join(format!("daemon-{tag}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kbsync"));
        cmd.arg("--config")
            .arg(&ws.config_path)
            .arg("--log-format")
            .arg("plain")
            .env("NOTIFY_SOCKET", &sock)
            .env("RUST_LOG", "kbsync=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        Daemon {
            child: cmd.spawn().unwrap(),
            notify,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Next sd_notify datagram containing `needle`.
    pub async fn notified(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.notify.recv()).await {
                Ok(Some(msg)) => {
                    if msg.contains(needle) {
                        return msg;
                    }
                }
                Ok(None) => panic!("notify socket closed"),
                Err(_) => panic!(
                    "no sd_notify message with {needle:?} within {WAIT:?}; log:\n{}",
                    self.log_text()
                ),
            }
        }
    }

    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("daemon still running").to_string();
        let ok = std::process::Command::new("kill")
            .args(["-s", name, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -s {name} {pid}");
    }

    pub async fn exit(&mut self) -> ExitStatus {
        match tokio::time::timeout(WAIT, self.child.wait()).await {
            Ok(s) => s.unwrap(),
            Err(_) => panic!("daemon did not exit; log:\n{}", self.log_text()),
        }
    }

    /// SIGTERM, then the exit status, which must be success.
    pub async fn stop(mut self) -> String {
        self.signal("TERM");
        let status = self.exit().await;
        let log = self.log_text();
        assert!(status.success(), "exit {status:?}; log:\n{log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log_text());
        }
    }
}
