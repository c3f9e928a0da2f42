//! Object stores and shares as sources, against real servers: a bucket on
//! SeaweedFS (`weed`) and a folder behind `rclone serve webdav`, each
//! beside `rclone lsf -R` listing the same thing.

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::measure::{self, key, key_in, median, ms};
use crate::support::fake_dify::{FakeDify, DATASET};
use crate::support::rclone::{self, RcloneDav};
use crate::support::s3_proxy::{Asked, S3Proxy};
use crate::support::seaweed::{self, SeaweedFs};
use crate::support::Workspace;
use crate::Row;

const BUCKET: &str = "bench";
const WAIT: Duration = Duration::from_secs(600);

/// About 1 KiB an object: the test server's volumes hold 100,000 of them.
fn body(i: usize) -> String {
    format!("# Note {i}\n{}", "lorem ipsum dolor sit amet ".repeat(37))
}

/// A job mirroring `source` (a `[sync.s3]` or `[sync.webdav]` body) into
/// the fake Dify.
fn workspace(fake: &FakeDify, kind: &str, source: &str) -> Workspace {
    Workspace::raw(&format!(
        r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "objects"
delete_policy = "delete"

[sync.{kind}]
{source}

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

/// The job's config with its source pointed at `to` instead of `from`
/// (the counting proxy, or back).
fn point(ws: &Workspace, from: &str, to: &str) {
    let text = std::fs::read_to_string(&ws.config_path).unwrap();
    std::fs::write(&ws.config_path, text.replace(from, to)).unwrap();
}

/// `runs` no-op passes of the binary, each beside one `rclone lsf -R` of
/// the same listing, alternating. Medians, and kbsync's peak memory.
fn noop_beside(ws: &Workspace, rclone: &mut Command, runs: usize) -> (Duration, Duration, u64) {
    measure::kbsync(&ws.config_path);
    measure::run(rclone);
    let (mut k, mut r, mut rss) = (Vec::new(), Vec::new(), 0);
    for _ in 0..runs {
        let m = measure::kbsync(&ws.config_path);
        k.push(m.wall);
        rss = rss.max(m.max_rss_kib);
        r.push(measure::run(rclone).wall);
    }
    (median(k), median(r), rss)
}

/// (listings, GETs, others) the proxy saw.
fn asked(proxy: &S3Proxy) -> (usize, usize, usize) {
    let lists = proxy.count(Asked::List);
    let gets = proxy.count(Asked::Get);
    (lists, gets, proxy.world().log.len() - lists - gets)
}

pub async fn s3_rows(n: usize, runs: usize, poll_secs: u64, changes: usize) -> Vec<Row> {
    let server = SeaweedFs::start();
    server.create_bucket(BUCKET).await;
    let op = server.operator(BUCKET);
    eprintln!("putting {n} objects of about 1 KiB…");
    let began = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let op = op.clone();
            async move { op.write(&key(i), body(i)).await.unwrap() }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    eprintln!("  {}", ms(began.elapsed()));

    let fake = FakeDify::start().await;
    let ws = workspace(
        &fake,
        "s3",
        &format!(
            "bucket = \"{BUCKET}\"\nendpoint = \"{}\"\naccess_key_id_file = \"s3.id\"\nsecret_access_key_file = \"s3.key\"\npoll_interval_secs = {poll_secs}",
            server.endpoint
        ),
    );
    crate::support::write_key(&ws.dir.path().join("s3.id"), seaweed::ACCESS_KEY_ID);
    crate::support::write_key(&ws.dir.path().join("s3.key"), seaweed::SECRET_ACCESS_KEY);

    eprintln!("first sync of {n} objects (the binary)…");
    let first = measure::kbsync(&ws.config_path);
    assert_eq!(
        fake.world().docs.len(),
        n,
        "the first sync mirrored every object"
    );
    let mut rclone = Command::new("rclone");
    rclone
        .args(["lsf", "-R", "--config=/dev/null", "--s3-list-version", "2"])
        .arg(format!(
            ":s3,provider=Other,endpoint='{}',access_key_id={},secret_access_key={}:{BUCKET}",
            server.endpoint,
            seaweed::ACCESS_KEY_ID,
            seaweed::SECRET_ACCESS_KEY
        ))
        .env_remove("AWS_CA_BUNDLE");
    eprintln!("no-op polls beside `rclone lsf -R`…");
    let before = fake.requests();
    let (k, r, noop_rss) = noop_beside(&ws, &mut rclone, runs);
    assert_eq!(
        fake.requests(),
        before,
        "a no-op poll sent upstream requests"
    );

    let proxy = S3Proxy::start(&server.endpoint).await;
    point(&ws, &server.endpoint, &proxy.endpoint());
    measure::kbsync(&ws.config_path);
    let (lists, gets, others) = asked(&proxy);
    point(&ws, &proxy.endpoint(), &server.endpoint);
    assert_eq!(
        fake.requests(),
        before,
        "a no-op poll sent upstream requests"
    );

    let latency = change_to_upload(&ws, &fake, &op, n, changes).await;
    let ratio = k.as_secs_f64() / r.as_secs_f64();
    let bound = Duration::from_secs(poll_secs + 2);
    let first_mib = first.max_rss_kib as f64 / 1024.0;
    vec![
        Row {
            metric: format!(
                "S3 no-op poll of {n} objects (SeaweedFS; `kbsync --reconcile --no-audit`, median of {runs}; peak RSS {:.0} MiB)",
                noop_rss as f64 / 1024.0
            ),
            kbsync: ms(k),
            baseline: format!("{} (`rclone lsf -R --s3-list-version 2`)", ms(r)),
            ratio: Some(ratio),
            target: "≤ 0.75×".into(),
            pass: Some(ratio <= 0.75),
        },
        Row {
            metric: "requests of that no-op poll: list, GET, other to S3; to the upstream".into(),
            kbsync: format!("{lists}, {gets}, {others}; 0"),
            baseline: "—".into(),
            ratio: None,
            target: format!("{}, 0, 0; 0", n.div_ceil(1000)),
            pass: Some(lists == n.div_ceil(1000) && gets == 0 && others == 0),
        },
        Row {
            metric: format!("S3 first sync of {n} objects into the fake (the binary, `--no-audit`)"),
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
        Row {
            metric: format!(
                "object put → its upload at the upstream, the service polling every {poll_secs} s, slowest of {changes} (median {})",
                ms(latency.0)
            ),
            kbsync: ms(latency.1),
            baseline: "—".into(),
            ratio: None,
            target: format!("≤ {} (poll + 2 s)", ms(bound)),
            pass: Some(latency.1 <= bound),
        },
    ]
}

/// Runs the service over the bucket and times `changes` puts, one after
/// another, each until the upstream receives its upload. (median, max)
async fn change_to_upload(
    ws: &Workspace,
    fake: &FakeDify,
    op: &opendal::Operator,
    n: usize,
    changes: usize,
) -> (Duration, Duration) {
    let child = crate::latency::spawn(ws).await;
    eprintln!("timing {changes} object changes under the service…");
    let mut samples = Vec::new();
    for c in 0..changes {
        let i = (c * 7919) % n;
        let before = fake.world().arrived.len();
        let t0 = Instant::now();
        op.write(&key(i), format!("changed {c}\n{}", body(i)))
            .await
            .unwrap();
        fake.wait_until("the upload", WAIT, |w| {
            w.arrived[before..]
                .iter()
                .any(|r| r.contains("update-by-file"))
        })
        .await;
        samples.push(t0.elapsed());
        eprintln!("  {}", ms(t0.elapsed()));
    }
    measure::stop(child).await;
    samples.sort();
    (samples[samples.len() / 2], *samples.last().unwrap())
}

pub async fn webdav_rows(n: usize, folders: usize, runs: usize) -> Vec<Row> {
    // Files are written before the server lists them, and never after:
    // cached listings are faithful here.
    let dav = RcloneDav::start_caching("1h");
    let per_folder = n.div_ceil(folders);
    eprintln!("writing {n} files in {folders} folders behind rclone serve webdav…");
    for i in 0..n {
        dav.write(&key_in(i, per_folder), &body(i));
    }
    let fake = FakeDify::start().await;
    let ws = workspace(
        &fake,
        "webdav",
        &format!(
            "url = \"{}\"\nusername = \"{}\"\npassword_file = \"dav.pass\"",
            dav.url,
            rclone::USER
        ),
    );
    crate::support::write_key(&ws.dir.path().join("dav.pass"), rclone::PASSWORD);
    eprintln!("first sync of {n} files over WebDAV (the binary)…");
    let first = measure::kbsync(&ws.config_path);
    assert_eq!(
        fake.world().docs.len(),
        n,
        "the first sync mirrored every file"
    );

    let obscured = Command::new("rclone")
        .args(["obscure", rclone::PASSWORD])
        .output()
        .unwrap();
    let mut rclone = Command::new("rclone");
    rclone
        .args(["lsf", "-R", "--config=/dev/null"])
        .arg(format!(
            ":webdav,url='{}',user={},pass={}:",
            dav.url,
            rclone::USER,
            String::from_utf8_lossy(&obscured.stdout).trim()
        ));
    eprintln!("no-op polls beside `rclone lsf -R`…");
    let before = fake.requests();
    let (k, r, rss) = noop_beside(&ws, &mut rclone, runs);

    let proxy = S3Proxy::start(dav.url.trim_end_matches('/')).await;
    proxy.world().dav = true;
    let url = dav.url.trim_end_matches('/');
    point(&ws, url, &proxy.endpoint());
    measure::kbsync(&ws.config_path);
    let (lists, gets, others) = asked(&proxy);
    assert_eq!(
        fake.requests(),
        before,
        "a no-op poll sent upstream requests"
    );
    vec![
        Row {
            metric: format!(
                "WebDAV no-op poll of {n} files in {} folders (rclone serve webdav; median of {runs}; peak RSS {:.0} MiB; PROPFIND {lists}, GET {gets}, other {others})",
                n.div_ceil(per_folder),
                rss as f64 / 1024.0
            ),
            kbsync: ms(k),
            baseline: format!("{} (`rclone lsf -R`)", ms(r)),
            ratio: Some(k.as_secs_f64() / r.as_secs_f64()),
            target: "report".into(),
            pass: None,
        },
        Row {
            metric: format!(
                "WebDAV first sync of {n} files into the fake (the binary; peak RSS {:.0} MiB)",
                first.max_rss_kib as f64 / 1024.0
            ),
            kbsync: ms(first.wall),
            baseline: "—".into(),
            ratio: None,
            target: "—".into(),
            pass: None,
        },
    ]
}
