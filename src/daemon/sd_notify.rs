//! systemd's notification protocol (sd_notify(3)): datagrams such as
//! `READY=1` or `STATUS=…` sent to the socket named by `$NOTIFY_SOCKET`,
//! and the watchdog interval from `$WATCHDOG_USEC`. Outside systemd (no
//! socket) every call is a no-op.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let path = std::env::var_os("NOTIFY_SOCKET");
        let target = path.as_ref().and_then(|path| {
            let addr = socket_addr(&path.to_string_lossy())?;
            let sock = UnixDatagram::unbound().ok()?;
            // A full receive queue must cost a status line, never stall the
            // service (a blocking send would wait for the reader).
            sock.set_nonblocking(true).ok()?;
            Some((sock, addr))
        });
        if path.is_some() && target.is_none() {
            tracing::warn!("NOTIFY_SOCKET is set but unusable; systemd will not hear READY=1");
        }
        Notifier {
            target,
            watchdog: watchdog_interval(),
        }
    }

    /// How often to send `WATCHDOG=1`: half the interval systemd expects,
    /// as sd_watchdog_enabled(3) recommends.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(msg.as_bytes(), addr) {
                tracing::debug!("sd_notify failed: {e}");
            }
        }
    }
}

fn socket_addr(path: &str) -> Option<SocketAddr> {
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes()).ok()
    } else if path.starts_with('/') {
        SocketAddr::from_pathname(path).ok()
    } else {
        None
    }
}

fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    // WATCHDOG_PID, when set, names the process meant to ping.
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}
