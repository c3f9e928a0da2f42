//! The web source end to end: pages served by an in-process web server,
//! mirrored into the in-process fake Dify through conditional GETs.

mod support;

use kbsync::sink::dify::document_name;
use kbsync::source::web::key_of;
use support::fake_dify::{FakeDify, World, DATASET};
use support::fake_web::FakeWeb;
use support::Workspace;

async fn setup() -> (FakeDify, FakeWeb, Workspace) {
    let fake = FakeDify::start().await;
    let web = FakeWeb::start().await;
    {
        let mut s = web.site();
        s.put("/handbook.md", "# Handbook\n", "text/markdown");
        s.put("/faq", "<h1>FAQ</h1>", "text/html");
        s.put("/guide/", "<h1>Guide</h1>", "text/html");
        s.put("/notes.txt", "notes v1", "text/plain");
        s.sitemap = vec!["/guide/".into(), "/notes.txt".into()];
    }
    let config = format!(
        r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "site"
delete_policy = "disable"

[sync.web]
urls = ["{handbook}", "{faq}"]
sitemap = "{sitemap}"

[sync.dify]
base_url = "{base}"
dataset_id = "{DATASET}"
api_key_file = "api.key"
retry_min_delay_ms = 5
retry_max_delay_secs = 1

[sync.metadata]
url_path = {{ fact = "path" }}
"#,
        handbook = web.url("/handbook.md"),
        faq = web.url("/faq"),
        sitemap = web.url("/sitemap.xml"),
        base = fake.base_url(),
    );
    let ws = Workspace::raw(&config);
    (fake, web, ws)
}

fn doc<'w>(w: &'w World, web: &FakeWeb, path: &str) -> Option<&'w support::fake_dify::Doc> {
    let url = reqwest::Url::parse(&web.url(path)).unwrap();
    w.doc_by_name(&document_name(&key_of(&url)))
}

#[tokio::test]
async fn pages_are_mirrored_then_polled_with_conditional_gets() {
    let (fake, web, ws) = setup().await;
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    {
        let w = fake.world();
        assert_eq!(w.docs.len(), 4);
        assert_eq!(doc(&w, &web, "/faq").unwrap().content, b"<h1>FAQ</h1>");
        assert_eq!(doc(&w, &web, "/guide/").unwrap().content, b"<h1>Guide</h1>");
        let host = web.addr.to_string();
        assert!(
            doc(&w, &web, "/guide/")
                .unwrap()
                .name
                .ends_with("guide∕index.html"),
            "named after host and path, with an extension Dify accepts"
        );
        assert_eq!(
            w.metadata_of(&document_name(&format!("{host}/notes.txt")))["url_path"],
            format!("{host}/notes.txt")
        );
    }

    // Nothing changed: every page answers 304, nothing goes upstream.
    let mark = fake.requests();
    let before_304 = web.site().count(304);
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.hashed_files, 0);
    assert_eq!(web.site().count(304) - before_304, 4);
    assert_eq!(fake.requests(), mark);

    // One page changes: only it is downloaded and re-uploaded.
    web.site().put("/notes.txt", "notes v2", "text/plain");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(r.hashed_files, 1);
    let w = fake.world();
    assert_eq!(w.count_since(mark, "update-by-file"), 1);
    assert_eq!(w.count_since(mark, "create-by-file"), 0);
    assert_eq!(doc(&w, &web, "/notes.txt").unwrap().content, b"notes v2");
}

#[tokio::test]
async fn vanished_pages_follow_the_delete_policy_and_failures_protect() {
    let (fake, web, ws) = setup().await;
    assert!(ws.sync().await.converged());

    {
        let mut s = web.site();
        s.status.insert("/faq".into(), 404);
        s.status.insert("/notes.txt".into(), 410);
        s.status.insert("/handbook.md".into(), 503);
    }
    let r = ws.sync().await;
    assert!(!r.converged(), "a failing page is reported");
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    assert!(r.skipped[0].reason.contains("503"), "{:?}", r.skipped);
    {
        let w = fake.world();
        assert!(!doc(&w, &web, "/faq").unwrap().enabled, "404 → disabled");
        assert!(
            !doc(&w, &web, "/notes.txt").unwrap().enabled,
            "410 → disabled"
        );
        assert!(doc(&w, &web, "/handbook.md").unwrap().enabled, "503 → kept");
    }

    // Back again with the same bytes: re-enabled, not re-uploaded.
    web.site().status.clear();
    let mark = fake.requests();
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    assert!(doc(&w, &web, "/faq").unwrap().enabled);
    assert_eq!(w.count_since(mark, "by-file"), 0);
    assert_eq!(w.docs.len(), 4);
}

#[tokio::test]
async fn an_unreachable_sitemap_removes_nothing() {
    let (fake, web, ws) = setup().await;
    assert!(ws.sync().await.converged());
    web.site().status.insert("/sitemap.xml".into(), 500);
    let r = ws.sync().await;
    assert!(!r.converged());
    assert!(
        r.skipped[0].path.ends_with("/sitemap.xml"),
        "{:?}",
        r.skipped
    );
    let w = fake.world();
    assert!(w.docs.values().all(|d| d.enabled), "sitemap pages kept");
}

/// A sitemap index and a sitemap as XML tools write them: a namespace
/// prefix, spaces inside tags, escaped `&` in a URL, CDATA, a comment, and
/// an image extension whose `<image:loc>` is not a page.
#[tokio::test]
async fn sitemaps_are_read_as_xml() {
    let (fake, web, ws) = setup().await;
    web.site().put("/search", "<h1>Results</h1>", "text/html");
    web.site().put("/cdata", "<h1>CDATA</h1>", "text/html");
    let index = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- generated -->
<sm:sitemapindex xmlns:sm="http://www.sitemaps.org/schemas/sitemap/0.9">
  <sm:sitemap><sm:loc >{}</sm:loc ></sm:sitemap>
</sm:sitemapindex>"#,
        web.url("/pages.xml")
    );
    let pages = format!(
        r#"<?xml version='1.0'?>
<sm:urlset xmlns:sm="http://www.sitemaps.org/schemas/sitemap/0.9"
           xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">
  <sm:url>
    <sm:loc>{search}?q=a&amp;page=2</sm:loc>
    <image:image><image:loc>{img}</image:loc></image:image>
  </sm:url>
  <sm:url><sm:loc><![CDATA[{cdata}]]></sm:loc></sm:url>
</sm:urlset>"#,
        search = web.url("/search"),
        img = web.url("/photo.png"),
        cdata = web.url("/cdata"),
    );
    {
        let mut s = web.site();
        s.custom.insert("/sitemap.xml".into(), (200, vec![], index));
        s.custom.insert("/pages.xml".into(), (200, vec![], pages));
    }
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let search = reqwest::Url::parse(&web.url("/search?q=a&page=2")).unwrap();
    let w = fake.world();
    let found = w
        .doc_by_name(&document_name(&key_of(&search)))
        .unwrap_or_else(|| {
            panic!(
                "{search} not mirrored: {:?}",
                w.docs.values().map(|d| &d.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(found.content, b"<h1>Results</h1>");
    assert!(doc(&w, &web, "/cdata").is_some());
    // The two configured pages and the sitemap's two: no image, no sitemap.
    assert_eq!(
        w.docs.len(),
        4,
        "{:?}",
        w.docs.values().map(|d| &d.name).collect::<Vec<_>>()
    );
    assert!(!web.site().log.iter().any(|(p, _)| p == "/photo.png"));
}

/// A page's `Last-Modified` is its `modified` time, in any of the three
/// forms RFC 9110 has a client accept.
#[tokio::test]
async fn last_modified_dates_in_every_http_form_are_the_pages_time() {
    let (fake, web, ws) = setup().await;
    ws.append_config("modified = { fact = \"modified\" }\n");
    let dated = [
        ("/imf.txt", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("/rfc850.txt", "Sunday, 06-Nov-94 08:49:37 GMT"),
        ("/asctime.txt", "Sun Nov  6 08:49:37 1994"),
    ];
    {
        let mut s = web.site();
        for (path, date) in dated {
            let headers = vec![("last-modified".to_owned(), date.to_owned())];
            s.custom
                .insert(path.into(), (200, headers, format!("{path} body")));
            s.sitemap.push(path.into());
        }
    }
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    for (path, date) in dated {
        let url = reqwest::Url::parse(&web.url(path)).unwrap();
        assert_eq!(
            w.metadata_of(&document_name(&key_of(&url))).get("modified"),
            Some(&serde_json::json!(784_111_777)),
            "{date}"
        );
    }
}
