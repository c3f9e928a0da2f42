//! One behaviour suite for every source kind, as `sinks.rs` is for the
//! upstreams: the scenarios that hold for any source are written once
//! against `Harness` and run against each kind (a real folder in a temp
//! dir; pages on an in-process web server; a bucket on a real SeaweedFS;
//! a share on a real `rclone serve webdav`; a repository made with `git`
//! and served by `git daemon`),
//! mirrored into the fake Dify.
//! A kind added later gets them by adding a harness and one line to
//! `suite!` at the bottom.

mod support;

use kbsync::reconcile::{JobReport, RunOptions, Runner};
use kbsync::sink::dify::document_name;
use kbsync::source::Scope;
use support::fake_dify::{FakeDify, DATASET};
use support::fake_web::FakeWeb;
use support::git::{GitDaemon, Remote};
use support::rclone::{self, RcloneDav};
use support::s3_proxy::{Asked, S3Proxy};
use support::seaweed::{self, SeaweedFs};
use support::Workspace;

/// The items every scenario starts from, by the name the harness gives
/// them (a file's path, or a page's URL path).
const NAMES: &[&str] = &["a.md", "b.md", "c.md"];

/// Every kind caps what it reads per item at this many bytes.
const MAX: usize = 64;

fn body(name: &str, version: u32) -> String {
    format!("{name}, version {version}\n")
}

/// What the suite needs from a kind.
trait Harness: Sized {
    /// A source holding nothing yet, and a workspace whose one job mirrors
    /// it into `dify` with `delete_policy = "disable"` and
    /// `max_file_size = MAX`.
    async fn start(dify: &FakeDify) -> Self;
    fn ws(&self) -> &Workspace;
    /// Creates or changes an item.
    fn put(&self, name: &str, body: &str);
    /// The item is gone from the source, for certain.
    fn remove(&self, name: &str);
    /// The item is there but cannot be read this time: it must be
    /// protected, not retired.
    fn make_unreadable(&self, name: &str);
    fn make_readable(&self, name: &str, body: &str);
    /// The key kbsync tracks the item under.
    fn key(&self, name: &str) -> String;
    /// Items whose content the source read (not merely stamped) in `r`.
    fn reads(&self, r: &JobReport, mark: usize) -> usize;
    /// Where `reads` counts from.
    fn mark(&self) -> usize;
}

struct Case<H> {
    dify: FakeDify,
    h: H,
}

impl<H: Harness> Case<H> {
    async fn start() -> Case<H> {
        let dify = FakeDify::start().await;
        let h = H::start(&dify).await;
        for name in NAMES {
            h.put(name, &body(name, 1));
        }
        Case { dify, h }
    }

    /// Started, and mirrored once.
    async fn synced() -> Case<H> {
        let c = Case::<H>::start().await;
        let r = c.h.ws().sync().await;
        assert!(r.converged(), "{r:?}");
        c
    }

    /// The document of `name`: its bytes and whether it is enabled.
    fn doc(&self, name: &str) -> Option<(String, bool)> {
        let w = self.dify.world();
        let d = w.doc_by_name(&document_name(&self.h.key(name)))?;
        Some((String::from_utf8_lossy(&d.content).into_owned(), d.enabled))
    }

    fn assert_mirrors(&self, name: &str, version: u32) {
        assert_eq!(
            self.doc(name),
            Some((body(name, version), true)),
            "{name} at version {version}"
        );
    }

    /// A pass over an unchanged source reads nothing and sends nothing.
    async fn assert_rests(&self) {
        let (requests, mark) = (self.dify.requests(), self.h.mark());
        let r = self.h.ws().sync().await;
        assert!(r.converged(), "{r:?}");
        assert!(r.plan.ops.is_empty(), "{:?}", r.plan.ops);
        assert_eq!(self.h.reads(&r, mark), 0, "a settled item was read");
        assert_eq!(self.dify.requests(), requests, "a no-op pass sent requests");
    }
}

async fn first_survey<H: Harness>() {
    let c = Case::<H>::start().await;
    let mark = c.h.mark();
    let r = c.h.ws().sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(c.h.reads(&r, mark), NAMES.len());
    for name in NAMES {
        c.assert_mirrors(name, 1);
    }
    assert_eq!(c.dify.world().docs.len(), NAMES.len());
    c.assert_rests().await;
}

/// Slices of one key each still cover every key, once.
async fn slices_partition_the_keys<H: Harness>() {
    let c = Case::<H>::start().await;
    let r = c.h.ws().sync_in_slices(1).await;
    assert!(r.converged(), "{r:?}");
    for name in NAMES {
        c.assert_mirrors(name, 1);
    }
    let w = c.dify.world();
    assert_eq!(w.docs.len(), NAMES.len());
    assert!(w.duplicate_names().is_empty(), "{:?}", w.duplicate_names());
}

/// A change is found by its stamp: only the changed item is read again.
async fn change_by_stamp<H: Harness>() {
    let c = Case::<H>::synced().await;
    c.h.put("b.md", &body("b.md", 2));
    let mark = c.h.mark();
    let r = c.h.ws().sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(c.h.reads(&r, mark), 1, "only the changed item is read");
    assert_eq!(r.outcome.as_ref().unwrap().updated, 1);
    c.assert_mirrors("b.md", 2);
    c.assert_mirrors("a.md", 1);
    c.assert_rests().await;
}

/// A pass scoped to one key (what a watcher reports) mirrors it and
/// retires nothing outside the scope; a source that cannot scope passes
/// whole.
async fn scoped_pass<H: Harness>() {
    let c = Case::<H>::synced().await;
    c.h.put("a.md", &body("a.md", 2));
    c.h.put("b.md", &body("b.md", 2));
    let mut runner = Runner::open(c.h.ws().config(), RunOptions::default()).unwrap();
    let scope = Scope::of([c.h.key("a.md")]).unwrap();
    let r = runner.run_job("suite", &scope).await.unwrap();
    drop(runner);
    assert!(r.converged(), "{r:?}");
    c.assert_mirrors("a.md", 2);
    for name in ["b.md", "c.md"] {
        let (_, enabled) = c.doc(name).expect("kept");
        assert!(enabled, "{name} is outside the scope: not retired");
    }
    let r = c.h.ws().sync().await;
    assert!(r.converged(), "{r:?}");
    c.assert_mirrors("b.md", 2);
    c.assert_rests().await;
}

async fn vanish<H: Harness>() {
    let c = Case::<H>::synced().await;
    c.h.remove("c.md");
    let r = c.h.ws().sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(c.doc("c.md"), Some((body("c.md", 1), false)), "disabled");
    c.assert_mirrors("a.md", 1);
    c.assert_rests().await;
}

/// An item that cannot be read is reported, and its document kept as it
/// is: the pass does not converge, and nothing is retired.
async fn unreadable_protects<H: Harness>() {
    let c = Case::<H>::synced().await;
    c.h.make_unreadable("c.md");
    let r = c.h.ws().sync().await;
    assert!(
        !r.converged(),
        "an unread item means the mirror is not exact"
    );
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    assert!(r.plan.ops.is_empty(), "{:?}", r.plan.ops);
    c.assert_mirrors("c.md", 1);
    c.h.make_readable("c.md", &body("c.md", 2));
    let r = c.h.ws().sync().await;
    assert!(r.converged(), "{r:?}");
    c.assert_mirrors("c.md", 2);
}

/// A workspace whose one job mirrors `source` (a section, without
/// `max_file_size`) into `dify`.
fn workspace(dify: &FakeDify, source: &str) -> Workspace {
    Workspace::raw(&format!(
        r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "suite"
delete_policy = "disable"

{source}
max_file_size = {MAX}

[sync.dify]
base_url = "{}"
dataset_id = "{DATASET}"
api_key_file = "api.key"
retry_min_delay_ms = 1
retry_max_delay_secs = 1
"#,
        dify.base_url()
    ))
}

// --- a folder -----------------------------------------------------------

struct Folder {
    ws: Workspace,
    /// Puts so far: each sets an mtime of its own, long past, as a file
    /// changed some time ago has (one changed within the filesystem's
    /// timestamp granularity is read again, whatever its stamp says).
    puts: std::cell::Cell<i64>,
}

impl Harness for Folder {
    async fn start(dify: &FakeDify) -> Folder {
        let ws = workspace(dify, "[sync.folder]\nroot = \"docs\"");
        Folder {
            ws,
            puts: std::cell::Cell::new(0),
        }
    }

    fn ws(&self) -> &Workspace {
        &self.ws
    }

    fn put(&self, name: &str, body: &str) {
        self.ws.write(name, body);
        self.puts.set(self.puts.get() + 1);
        support::set_mtime(&self.ws.path(name), 1_600_000_000 + self.puts.get());
    }

    fn remove(&self, name: &str) {
        self.ws.remove(name);
    }

    /// Grown past `max_file_size`: found, not read (a mode-000 file is
    /// readable to root, which the suite may run as).
    fn make_unreadable(&self, name: &str) {
        self.ws.write(name, &"x".repeat(MAX + 1));
    }

    fn make_readable(&self, name: &str, body: &str) {
        self.put(name, body);
    }

    fn key(&self, name: &str) -> String {
        name.to_owned()
    }

    fn reads(&self, r: &JobReport, _mark: usize) -> usize {
        r.hashed_files
    }

    fn mark(&self) -> usize {
        0
    }
}

// --- web pages ----------------------------------------------------------

struct Web {
    web: FakeWeb,
    ws: Workspace,
}

impl Harness for Web {
    async fn start(dify: &FakeDify) -> Web {
        let web = FakeWeb::start().await;
        let urls: Vec<String> = NAMES
            .iter()
            .map(|n| format!("{:?}", web.url(&format!("/{n}"))))
            .collect();
        let ws = workspace(dify, &format!("[sync.web]\nurls = [{}]", urls.join(", ")));
        Web { web, ws }
    }

    fn ws(&self) -> &Workspace {
        &self.ws
    }

    fn put(&self, name: &str, body: &str) {
        self.web
            .site()
            .put(&format!("/{name}"), body, "text/markdown");
    }

    /// 404: the server says the page is gone.
    fn remove(&self, name: &str) {
        self.web.site().status.insert(format!("/{name}"), 404);
    }

    /// 503: the server is there but does not serve the page now.
    fn make_unreadable(&self, name: &str) {
        self.web.site().status.insert(format!("/{name}"), 503);
    }

    fn make_readable(&self, name: &str, body: &str) {
        self.web.site().status.remove(&format!("/{name}"));
        self.put(name, body);
    }

    fn key(&self, name: &str) -> String {
        let url = reqwest::Url::parse(&self.web.url(&format!("/{name}"))).unwrap();
        kbsync::source::web::key_of(&url)
    }

    /// Pages answered in full (200), not as unchanged (304).
    fn reads(&self, _r: &JobReport, mark: usize) -> usize {
        self.web.site().log[mark..]
            .iter()
            .filter(|(_, status)| *status == 200)
            .count()
    }

    fn mark(&self) -> usize {
        self.web.site().log.len()
    }
}

// --- an S3 bucket ------------------------------------------------------

struct Bucket {
    /// Declared before the server: dropped first.
    ws: Workspace,
    proxy: S3Proxy,
    op: opendal::Operator,
    _server: SeaweedFs,
}

/// Runs `f` to completion from a test's synchronous step.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

impl Harness for Bucket {
    async fn start(dify: &FakeDify) -> Bucket {
        let server = SeaweedFs::start();
        server.create_bucket("suite").await;
        let proxy = S3Proxy::start(&server.endpoint).await;
        let ws = workspace(
            dify,
            &format!(
                "[sync.s3]\nbucket = \"suite\"\nendpoint = \"{}\"\naccess_key_id_file = \"s3.id\"\nsecret_access_key_file = \"s3.key\"",
                proxy.endpoint()
            ),
        );
        support::write_key(&ws.dir.path().join("s3.id"), seaweed::ACCESS_KEY_ID);
        support::write_key(&ws.dir.path().join("s3.key"), seaweed::SECRET_ACCESS_KEY);
        Bucket {
            ws,
            proxy,
            op: server.operator("suite"),
            _server: server,
        }
    }

    fn ws(&self) -> &Workspace {
        &self.ws
    }

    fn put(&self, name: &str, body: &str) {
        block_on(self.op.write(name, body.to_owned())).unwrap();
    }

    /// Deleted: the listing no longer has it.
    fn remove(&self, name: &str) {
        block_on(self.op.delete(name)).unwrap();
    }

    /// Over `max_file_size`: listed, not read.
    fn make_unreadable(&self, name: &str) {
        self.put(name, &"x".repeat(MAX + 1));
    }

    fn make_readable(&self, name: &str, body: &str) {
        self.put(name, body);
    }

    fn key(&self, name: &str) -> String {
        name.to_owned()
    }

    /// Object GETs (the listing's own requests are not reads).
    fn reads(&self, _r: &JobReport, mark: usize) -> usize {
        self.proxy.count(Asked::Get) - mark
    }

    fn mark(&self) -> usize {
        self.proxy.count(Asked::Get)
    }
}

// --- a WebDAV share ----------------------------------------------------

struct Share {
    ws: Workspace,
    proxy: S3Proxy,
    server: RcloneDav,
    /// Puts so far: each sets an mtime of its own (the server stamps
    /// files by size and whole-second mtime), as the folder harness does.
    puts: std::cell::Cell<i64>,
}

impl Harness for Share {
    async fn start(dify: &FakeDify) -> Share {
        let server = RcloneDav::start();
        let proxy = S3Proxy::start(server.url.trim_end_matches('/')).await;
        proxy.world().dav = true;
        let ws = workspace(
            dify,
            &format!(
                "[sync.webdav]\nurl = \"{}/\"\nusername = \"{}\"\npassword_file = \"dav.pass\"",
                proxy.endpoint(),
                rclone::USER
            ),
        );
        support::write_key(&ws.dir.path().join("dav.pass"), rclone::PASSWORD);
        Share {
            ws,
            proxy,
            server,
            puts: std::cell::Cell::new(0),
        }
    }

    fn ws(&self) -> &Workspace {
        &self.ws
    }

    fn put(&self, name: &str, body: &str) {
        self.server.write(name, body);
        self.puts.set(self.puts.get() + 1);
        support::set_mtime(&self.server.path(name), 1_600_000_000 + self.puts.get());
    }

    fn remove(&self, name: &str) {
        std::fs::remove_file(self.server.path(name)).unwrap();
    }

    /// Over `max_file_size`: listed, not read.
    fn make_unreadable(&self, name: &str) {
        self.put(name, &"x".repeat(MAX + 1));
    }

    fn make_readable(&self, name: &str, body: &str) {
        self.put(name, body);
    }

    fn key(&self, name: &str) -> String {
        name.to_owned()
    }

    fn reads(&self, _r: &JobReport, mark: usize) -> usize {
        self.proxy.count(Asked::Get) - mark
    }

    fn mark(&self) -> usize {
        self.proxy.count(Asked::Get)
    }
}

// --- a git repository ----------------------------------------------------

struct Repo {
    ws: Workspace,
    remote: Remote,
    _daemon: GitDaemon,
}

impl Repo {
    fn commit(&self, what: &str) {
        self.remote.commit(what);
    }
}

impl Harness for Repo {
    async fn start(dify: &FakeDify) -> Repo {
        let remote = Remote::new();
        let daemon = GitDaemon::start(&remote);
        let ws = workspace(
            dify,
            &format!("[sync.git]\nurl = \"{}\"\nbranch = \"main\"", daemon.url),
        );
        Repo {
            ws,
            remote,
            _daemon: daemon,
        }
    }

    fn ws(&self) -> &Workspace {
        &self.ws
    }

    fn put(&self, name: &str, body: &str) {
        self.remote.write(name, body);
        self.commit(name);
    }

    fn remove(&self, name: &str) {
        self.remote.remove(name);
        self.commit(name);
    }

    /// Over `max_file_size`: listed, its blob never inflated.
    fn make_unreadable(&self, name: &str) {
        self.put(name, &"x".repeat(MAX + 1));
    }

    fn make_readable(&self, name: &str, body: &str) {
        self.put(name, body);
    }

    fn key(&self, name: &str) -> String {
        name.to_owned()
    }

    fn reads(&self, r: &JobReport, _mark: usize) -> usize {
        r.hashed_files
    }

    fn mark(&self) -> usize {
        0
    }
}

/// One test per scenario and kind.
macro_rules! suite {
    ($($kind:ident: $harness:ty),* $(,)?) => {
        $(
            mod $kind {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn first_survey() {
                    super::first_survey::<$harness>().await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn slices_partition_the_keys() {
                    super::slices_partition_the_keys::<$harness>().await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn change_by_stamp() {
                    super::change_by_stamp::<$harness>().await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn scoped_pass() {
                    super::scoped_pass::<$harness>().await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn vanish() {
                    super::vanish::<$harness>().await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn unreadable_protects() {
                    super::unreadable_protects::<$harness>().await
                }
            }
        )*
    };
}

suite!(folder: Folder, web: Web, s3: Bucket, webdav: Share, git: Repo);
