//! Where the web source may fetch from: only the hosts the job names, with
//! redirects held to the same hosts, sitemaps capped in size and indexes
//! followed rather than mirrored. Two in-process web servers stand for the
//! public site (reached as 127.0.0.1) and an intranet one (as localhost).

mod support;

use support::fake_dify::{FakeDify, DATASET};
use support::fake_web::FakeWeb;
use support::Workspace;

fn config(fake: &FakeDify, site: &FakeWeb, extra: &str) -> String {
    format!(
        r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "site"

[sync.web]
urls = ["{page}"]
sitemap = "{sitemap}"
{extra}

[sync.dify]
base_url = "{base}"
dataset_id = "{DATASET}"
api_key_file = "api.key"
retry_min_delay_ms = 5
retry_max_delay_secs = 1
"#,
        page = site.url("/page.md"),
        sitemap = site.url("/sitemap.xml"),
        base = fake.base_url(),
    )
}

fn urlset(locs: &[String]) -> String {
    let locs: String = locs
        .iter()
        .map(|l| format!("<url><loc>{l}</loc></url>"))
        .collect();
    format!(
        r#"<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</urlset>"#
    )
}

fn index(locs: &[String]) -> String {
    let locs: String = locs
        .iter()
        .map(|l| format!("<sitemap><loc>{l}</loc></sitemap>"))
        .collect();
    format!(
        r#"<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{locs}</sitemapindex>"#
    )
}

fn intranet_url(intranet: &FakeWeb, path: &str) -> String {
    format!("http://localhost:{}{path}", intranet.addr.port())
}

async fn setup() -> (FakeDify, FakeWeb, FakeWeb) {
    let fake = FakeDify::start().await;
    let site = FakeWeb::start().await;
    let intranet = FakeWeb::start().await;
    site.site().put("/page.md", "# Page\n", "text/markdown");
    site.site().put("/other.md", "# Other\n", "text/markdown");
    intranet
        .site()
        .put("/admin.md", "# Admin secrets\n", "text/markdown");
    (fake, site, intranet)
}

#[tokio::test]
async fn sitemap_entries_on_other_hosts_are_reported_and_never_fetched() {
    let (fake, site, intranet) = setup().await;
    let locs = vec![
        site.url("/other.md"),
        intranet_url(&intranet, "/admin.md"),
        "http://169.254.169.254/latest/meta-data/iam.md".to_owned(),
    ];
    site.site()
        .custom
        .insert("/sitemap.xml".into(), (200, vec![], urlset(&locs)));
    let ws = Workspace::raw(&config(&fake, &site, ""));
    for report in [ws.dry_run().await, ws.sync().await] {
        let mut skipped: Vec<(&str, &str)> = report
            .skipped
            .iter()
            .map(|s| (s.path.as_str(), s.reason.as_str()))
            .collect();
        skipped.sort();
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].0.starts_with("http://169.254.169.254/"));
        assert!(skipped[0]
            .1
            .contains("host 169.254.169.254 is not one the job names"));
        assert!(skipped[1]
            .1
            .contains("host localhost is not one the job names; add it to allow_hosts"));
    }
    assert!(intranet.site().log.is_empty(), "the intranet was reached");
    assert_eq!(fake.world().docs.len(), 2, "page.md and other.md");

    // Named in allow_hosts, the other host is fetched.
    std::fs::write(
        &ws.config_path,
        config(&fake, &site, "allow_hosts = [\"localhost\"]"),
    )
    .unwrap();
    let r = ws.sync().await;
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    assert_eq!(fake.world().docs.len(), 3);

    // Not allowed again: the page is skipped, and its copy left as it is.
    std::fs::write(&ws.config_path, config(&fake, &site, "")).unwrap();
    let r = ws.sync().await;
    assert_eq!(r.skipped.len(), 2, "{:?}", r.skipped);
    let w = fake.world();
    assert_eq!(w.docs.len(), 3);
    assert!(
        w.docs.values().all(|d| d.enabled && !d.archived),
        "a refused page was retired"
    );
}

#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed() {
    let (fake, site, intranet) = setup().await;
    site.site().custom.insert(
        "/page.md".into(),
        (
            302,
            vec![("location".into(), intranet_url(&intranet, "/admin.md"))],
            String::new(),
        ),
    );
    site.site().custom.insert(
        "/sitemap.xml".into(),
        (200, vec![], urlset(&[site.url("/other.md")])),
    );
    let ws = Workspace::raw(&config(&fake, &site, ""));
    let r = ws.sync().await;
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    assert!(
        r.skipped[0]
            .reason
            .contains("redirected to http://localhost:"),
        "{:?}",
        r.skipped
    );
    assert!(intranet.site().log.is_empty(), "the redirect was followed");
    assert_eq!(fake.world().docs.len(), 1);
}

#[tokio::test]
async fn an_oversized_sitemap_is_refused_and_protects_every_page() {
    let (fake, site, _intranet) = setup().await;
    let many: Vec<String> = (0..100).map(|i| site.url(&format!("/p{i}.md"))).collect();
    site.site()
        .custom
        .insert("/sitemap.xml".into(), (200, vec![], urlset(&many)));
    let ws = Workspace::raw(&config(&fake, &site, "max_sitemap_size = \"2KiB\""));
    let r = ws.sync().await;
    let reasons: Vec<&str> = r.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("larger than max_sitemap_size (2048 bytes)"),
        "{reasons:?}"
    );
    assert_eq!(fake.world().docs.len(), 1, "only the configured page");
}

#[tokio::test]
async fn nested_sitemap_indexes_are_followed_not_mirrored() {
    let (fake, site, _intranet) = setup().await;
    {
        let mut s = site.site();
        s.custom.insert(
            "/sitemap.xml".into(),
            (200, vec![], index(&[site.url("/a/index.xml")])),
        );
        s.custom.insert(
            "/a/index.xml".into(),
            (200, vec![], index(&[site.url("/a/pages.xml")])),
        );
        s.custom.insert(
            "/a/pages.xml".into(),
            (200, vec![], urlset(&[site.url("/other.md")])),
        );
    }
    let ws = Workspace::raw(&config(&fake, &site, ""));
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    let mut names: Vec<&str> = w.docs.values().map(|d| d.name.as_str()).collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| n.ends_with("other.md") || n.ends_with("page.md")),
        "{names:?}"
    );
}
