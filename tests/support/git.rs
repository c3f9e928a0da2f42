//! Real git repositories for the git source's tests, made with the `git`
//! command: a bare remote that a scratch clone commits and pushes to,
//! read by path (`file://`), served by `git daemon` (`git://`), or served
//! by `git http-backend` behind an in-process HTTP server (smart HTTP,
//! with Basic authentication when asked, counting requests).

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};

use super::seaweed::{free_port, require, wait_for_port};

/// A bare repository `remote.git` and a clone of it to commit from, on
/// branch `main`.
pub struct Remote {
    dir: tempfile::TempDir,
}

impl Remote {
    pub fn new() -> Remote {
        require("git", "apt-get install git");
        let dir = tempfile::tempdir().unwrap();
        let r = Remote { dir };
        r.git_in(
            r.dir.path(),
            &["init", "-q", "--bare", "-b", "main", "remote.git"],
        );
        r.git_in(r.dir.path(), &["init", "-q", "-b", "main", "work"]);
        r.git(&["remote", "add", "origin", r.bare().to_str().unwrap()]);
        r
    }

    pub fn bare(&self) -> PathBuf {
        self.dir.path().join("remote.git")
    }

    /// The folder the served repositories are in (`remote.git` below it).
    pub fn base(&self) -> &Path {
        self.dir.path()
    }

    fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare().display())
    }

    /// Runs git in the clone; its stdout.
    pub fn git(&self, args: &[&str]) -> String {
        self.git_in(&self.work(), args)
    }

    fn git_in(&self, dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(dir)
            .args([
                "-c",
                "user.name=Ann Author",
                "-c",
                "user.email=ann@example.com",
            ])
            .args([
                "-c",
                "commit.gpgsign=false",
                "-c",
                "core.hooksPath=/dev/null",
            ])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn write(&self, key: &str, body: &str) {
        let p = self.work().join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    pub fn remove(&self, key: &str) {
        std::fs::remove_file(self.work().join(key)).unwrap();
    }

    pub fn rename(&self, from: &str, to: &str) {
        let p = self.work().join(to);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        self.git(&["mv", from, to]);
    }

    pub fn link(&self, key: &str, target: &str) {
        let p = self.work().join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
    }

    /// Commits everything and pushes it to `main` (forced: a rewritten
    /// history goes too); the commit's id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.push("main")
    }

    /// Pushes the clone's HEAD to `branch`, forced; the commit's id.
    pub fn push(&self, branch: &str) -> String {
        self.git(&[
            "push",
            "-q",
            "--force",
            "origin",
            &format!("HEAD:refs/heads/{branch}"),
        ]);
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn delete_branch(&self, branch: &str) {
        self.git_in(
            &self.bare(),
            &["config", "receive.denyDeleteCurrent", "ignore"],
        );
        self.git(&["push", "-q", "origin", &format!(":refs/heads/{branch}")]);
    }

    /// The objects of the remote dropped unless a ref reaches them: after
    /// a force-push, the old commits are gone.
    pub fn prune(&self) {
        self.git_in(&self.bare(), &["reflog", "expire", "--expire=now", "--all"]);
        self.git_in(&self.bare(), &["gc", "-q", "--prune=now"]);
    }
}

/// `git daemon` serving a remote's folder on a free loopback port,
/// killed with its children on drop.
pub struct GitDaemon {
    child: Child,
    pub url: String,
    log: PathBuf,
}

impl GitDaemon {
    pub fn start(remote: &Remote) -> GitDaemon {
        let port = free_port();
        let log = remote.base().join(format!("daemon-{port}.log"));
        let mut child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", remote.base().display()))
            .arg(remote.base())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .expect("git daemon starts");
        wait_for_port(&mut child, SocketAddr::from(([127, 0, 0, 1], port)), &log)
            .unwrap_or_else(|e| panic!("{e}"));
        GitDaemon {
            child,
            url: format!("git://127.0.0.1:{port}/remote.git"),
            log,
        }
    }

    pub fn stop(&mut self) {
        // It forks a child per connection: stop the whole group.
        unsafe {
            libc::killpg(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// What the smart HTTP server saw and asks.
#[derive(Default)]
pub struct HttpWorld {
    /// Each request: method, path and query, and its Authorization header.
    pub requests: Vec<(String, Option<String>)>,
    /// Basic credentials (user, password) it requires, when set.
    pub login: Option<(String, String)>,
    /// The folder the repositories are served from.
    pub root: PathBuf,
}

/// `git http-backend` (smart HTTP) behind an in-process server.
pub struct SmartHttp {
    pub url: String,
    world: Arc<Mutex<HttpWorld>>,
}

impl SmartHttp {
    pub async fn start(remote: &Remote) -> SmartHttp {
        let world = Arc::new(Mutex::new(HttpWorld {
            root: remote.base().to_owned(),
            ..HttpWorld::default()
        }));
        let addr = super::serve::serve(world.clone(), handle).await;
        SmartHttp {
            url: format!("http://{addr}/remote.git"),
            world,
        }
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, HttpWorld> {
        self.world.lock().unwrap()
    }
}

async fn handle(
    world: Arc<Mutex<HttpWorld>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (login, root) = {
        let mut w = world.lock().unwrap();
        w.requests
            .push((format!("{} {}", parts.method, parts.uri), auth.clone()));
        (w.login.clone(), w.root.clone())
    };
    if let Some((user, password)) = login {
        use base64::Engine;
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        if auth.as_deref() != Some(want.as_str()) {
            return Ok(Response::builder()
                .status(401)
                .header("www-authenticate", "Basic realm=\"git\"")
                .body(Full::new(Bytes::from_static(b"Authentication required\n")))
                .unwrap());
        }
    }
    let input = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut cgi = tokio::process::Command::new("git");
    cgi.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", input.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cgi.spawn().expect("git http-backend runs");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(&input).await;
    }
    let out = child.wait_with_output().await.unwrap();
    Ok(cgi_answer(&out.stdout))
}

/// A CGI program's output as an HTTP answer: its headers (a `Status:` one
/// sets the status), a blank line, the body.
fn cgi_answer(out: &[u8]) -> Response<Full<Bytes>> {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            out.windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        })
        .unwrap_or((out.len(), out.len()));
    let head = String::from_utf8_lossy(&out[..split.0]);
    let mut answer = Response::builder().status(200);
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split(' ').next().unwrap_or("200");
            answer = answer.status(code.parse::<u16>().unwrap_or(500));
        } else {
            answer = answer.header(name.trim(), value);
        }
    }
    answer
        .body(Full::new(Bytes::copy_from_slice(&out[split.1..])))
        .unwrap()
}
