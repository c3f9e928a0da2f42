//! The bound of a store's listing, as `sink::paging` bounds a sink's. A
//! server that always says "more" (S3's `IsTruncated` with ever new
//! continuation tokens, or one it gave before; a WebDAV share whose
//! folders name each other) would be followed forever, its entries piling
//! up. A listing asks for each page (a continuation token, a folder) at
//! most once and takes at most `MAX_LISTED` entries and its kind's number
//! of pages; past that it is stopped, and nothing acts on it. OpenDAL's
//! pages are hidden behind its lister, so the bound is kept where every
//! request passes: the HTTP client (`http.rs`), which also notes a
//! listing request the server refused, since OpenDAL's folder-by-folder
//! lister skips a folder answered 403 or 404 as if it were empty.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use opendal::Buffer;

/// The most entries kbsync lists of one store: the sinks' ceiling.
pub(crate) const MAX_LISTED: u64 = crate::sink::paging::MAX_LISTED;

/// What a request is as a page of a listing: `None` for any other
/// request, else how a message names the page (each is asked for once).
pub(crate) type PageOf = fn(&hyper::Request<Buffer>) -> Option<String>;

/// One store's listing requests since its listing began.
#[derive(Clone)]
pub(crate) struct Bound {
    page_of: PageOf,
    max_pages: u64,
    seen: Arc<Mutex<Seen>>,
}

#[derive(Default)]
struct Seen {
    pages: u64,
    asked: HashSet<String>,
    ended: Option<Ended>,
}

/// Why a listing is not to be trusted although OpenDAL may have ended it
/// without an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// It was stopped at its bound: why.
    Endless(String),
    /// The server refused a page (its name, the HTTP status); `first`
    /// when it was the listing's first page (the bucket, the folder).
    Refused {
        page: String,
        status: u16,
        first: bool,
    },
}

impl Bound {
    /// A bound of `max_pages` pages, each named by `page_of`.
    pub(crate) fn new(max_pages: u64, page_of: PageOf) -> Bound {
        Bound {
            page_of,
            max_pages,
            seen: Arc::default(),
        }
    }

    /// A listing begins: nothing asked yet.
    pub(crate) fn begin(&self) {
        *self.seen() = Seen::default();
    }

    /// How the listing ended, when not as OpenDAL says; the first reason
    /// found stands.
    pub(crate) fn ended(&self) -> Option<Ended> {
        self.seen().ended.clone()
    }

    /// More than `MAX_LISTED` entries were listed.
    pub(crate) fn too_many(&self) {
        self.end(Ended::Endless(format!(
            "it names more than {MAX_LISTED} entries"
        )));
    }

    /// The page `req` asks for, when it is one; an error when the listing
    /// is past its bound (the request is then not sent).
    pub(crate) fn ask(&self, req: &hyper::Request<Buffer>) -> Result<Option<String>, String> {
        let Some(page) = (self.page_of)(req) else {
            return Ok(None);
        };
        let mut seen = self.seen();
        seen.pages += 1;
        let why = if !seen.asked.insert(page.clone()) {
            format!("it asks for {page} again (it repeats or cycles)")
        } else if seen.pages > self.max_pages {
            format!("it still asks for more after {} pages", self.max_pages)
        } else {
            return Ok(Some(page));
        };
        drop(seen);
        self.end(Ended::Endless(why.clone()));
        Err(why)
    }

    /// The server answered the listing request for `page` with `status`.
    pub(crate) fn answered(&self, page: String, status: u16) {
        if (200..300).contains(&status) {
            return;
        }
        let first = self.seen().pages == 1;
        self.end(Ended::Refused {
            page,
            status,
            first,
        });
    }

    fn end(&self, ended: Ended) {
        self.seen().ended.get_or_insert(ended);
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(req: &hyper::Request<Buffer>) -> Option<String> {
        (req.method() == "PROPFIND").then(|| req.uri().path().to_owned())
    }

    fn propfind(path: &str) -> hyper::Request<Buffer> {
        hyper::Request::builder()
            .method("PROPFIND")
            .uri(format!("http://share{path}"))
            .body(Buffer::new())
            .unwrap()
    }

    #[test]
    fn a_page_asked_again_or_past_the_bound_ends_the_listing() {
        let b = Bound::new(3, page);
        b.begin();
        assert_eq!(b.ask(&propfind("/a/")), Ok(Some("/a/".into())));
        let get = hyper::Request::get("http://share/a/x.md")
            .body(Buffer::new())
            .unwrap();
        assert_eq!(b.ask(&get), Ok(None), "a GET is no page");
        b.ask(&propfind("/a/b/")).unwrap();
        let e = b.ask(&propfind("/a/")).unwrap_err();
        assert_eq!(e, "it asks for /a/ again (it repeats or cycles)");
        assert_eq!(b.ended(), Some(Ended::Endless(e)));

        b.begin();
        assert_eq!(b.ended(), None, "a new listing starts afresh");
        for p in ["/1/", "/2/", "/3/"] {
            b.ask(&propfind(p)).unwrap();
        }
        let e = b.ask(&propfind("/4/")).unwrap_err();
        assert_eq!(e, "it still asks for more after 3 pages");
    }

    #[test]
    fn a_refused_page_is_noted_with_whether_it_was_the_first() {
        let b = Bound::new(10, page);
        b.begin();
        b.ask(&propfind("/a/")).unwrap();
        b.answered("/a/".into(), 207);
        assert_eq!(b.ended(), None);
        b.ask(&propfind("/a/locked/")).unwrap();
        b.answered("/a/locked/".into(), 403);
        b.answered("/a/gone/".into(), 404);
        assert_eq!(
            b.ended(),
            Some(Ended::Refused {
                page: "/a/locked/".into(),
                status: 403,
                first: false
            })
        );
        b.begin();
        b.ask(&propfind("/a/")).unwrap();
        b.answered("/a/".into(), 404);
        assert!(matches!(
            b.ended(),
            Some(Ended::Refused { first: true, .. })
        ));
    }
}
