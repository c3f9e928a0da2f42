//! Bounds on a listing that pages. An upstream that always says "more"
//! (Dify's `has_more` with a `total` of 10^12, a `NextToken` that leads
//! back to the same page) would be followed forever, its records piling
//! up. A listing ends within what its first page reported (`total` over
//! the page size, plus a margin for records added meanwhile), within an
//! absolute ceiling, and as soon as a page repeats the one before; past
//! that it is an error, so nothing acts on half a listing.

use super::{ErrorClass, SinkError};

/// The most records kbsync lists of one dataset or workspace: ten times
/// the largest it is measured with.
pub const MAX_LISTED: u64 = 10_000_000;

/// The error code of a listing stopped by its bound.
pub const ENDLESS: &str = "endless_listing";

/// One listing's pages so far, and how many it may take.
pub struct Pages {
    title: &'static str,
    op: &'static str,
    size: u64,
    taken: u64,
    limit: u64,
    /// What the upstream said the listing holds, once it did.
    total: Option<u64>,
    /// A digest of the last page's record ids.
    last: Option<blake3::Hash>,
}

impl Pages {
    /// A listing of `op` from `title` (Dify, PAI, Sharely), `size` records
    /// a page.
    pub fn new(title: &'static str, op: &'static str, size: usize) -> Pages {
        let size = size.max(1) as u64;
        Pages {
            title,
            op,
            size,
            taken: 0,
            limit: MAX_LISTED.div_ceil(size),
            total: None,
            last: None,
        }
    }

    /// Takes in one page: the record ids it held and the total it reported.
    /// An error when the listing went on past its bound or repeats itself.
    pub fn took<'a>(
        &mut self,
        ids: impl IntoIterator<Item = &'a str>,
        total: Option<u64>,
    ) -> Result<(), SinkError> {
        self.taken += 1;
        if self.taken == 1 {
            if let Some(t) = total {
                if t > MAX_LISTED {
                    return Err(self.endless(format!(
                        "it reports {t} records, more than kbsync lists ({MAX_LISTED})"
                    )));
                }
                // Records added while it pages shift later pages: a tenth
                // more, and ten pages, are allowed for.
                let pages = t.div_ceil(self.size);
                self.limit = self.limit.min(pages + pages / 10 + 10);
                self.total = Some(t);
            }
        }
        let mut digest = blake3::Hasher::new();
        let mut any = false;
        for id in ids {
            digest.update(id.as_bytes());
            digest.update(b"\0");
            any = true;
        }
        let digest = digest.finalize();
        if any && self.last == Some(digest) {
            return Err(self.endless(format!(
                "page {} holds the same records as page {}",
                self.taken,
                self.taken - 1
            )));
        }
        self.last = Some(digest);
        Ok(())
    }

    /// Whether another page may be asked for; an error when the listing
    /// says there is more past its bound.
    pub fn more(&self) -> Result<(), SinkError> {
        if self.taken < self.limit {
            return Ok(());
        }
        let reported = self
            .total
            .map_or_else(String::new, |t| format!(" (it reported {t} records)"));
        Err(self.endless(format!(
            "it still says there is more after {} pages of {}{reported}",
            self.taken, self.size
        )))
    }

    fn endless(&self, why: String) -> SinkError {
        SinkError::local(
            ErrorClass::Transient,
            ENDLESS,
            format!(
                "{}'s listing ({}) does not end: {why}; it was stopped there and nothing acts on part of it (retried on a later pass)",
                self.title,
                self.op.replace('_', " ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u64, from: u64) -> Vec<String> {
        (from..from + n).map(|i| format!("doc-{i}")).collect()
    }

    #[test]
    fn a_listing_ends_within_its_reported_total_and_a_margin() {
        let mut p = Pages::new("Dify", "list_documents", 100);
        // 1,000 records: 10 pages, plus 1 and 10 of margin.
        for page in 0..21 {
            let page_ids = ids(100, page * 100);
            p.took(page_ids.iter().map(String::as_str), Some(1_000))
                .unwrap();
            if page < 20 {
                p.more().unwrap();
            }
        }
        let e = p.more().unwrap_err();
        assert_eq!(e.code, ENDLESS);
        assert_eq!(
            e.message,
            "Dify's listing (list documents) does not end: it still says there is more after 21 pages of 100 (it reported 1000 records); it was stopped there and nothing acts on part of it (retried on a later pass)"
        );
    }

    #[test]
    fn without_a_total_the_ceiling_bounds_it() {
        let mut p = Pages::new("PAI", "ListDatasetFileMetas", 100_000);
        for page in 0..100 {
            let page_ids = ids(1, page);
            p.took(page_ids.iter().map(String::as_str), None).unwrap();
        }
        assert!(p.more().unwrap_err().message.contains("after 100 pages"));
    }

    #[test]
    fn an_absurd_total_or_a_repeated_page_stops_it_at_once() {
        let mut p = Pages::new("Sharely", "list_knowledge", 1000);
        let e = p.took(["a"], Some(1_000_000_000_000)).unwrap_err();
        assert!(
            e.message
                .contains("it reports 1000000000000 records, more than kbsync lists (10000000)"),
            "{e}"
        );
        let mut p = Pages::new("Dify", "find_document", 100);
        p.took(["a", "b"], None).unwrap();
        let e = p.took(["a", "b"], None).unwrap_err();
        assert!(
            e.message
                .contains("page 2 holds the same records as page 1"),
            "{e}"
        );
        // Empty pages end a listing elsewhere; they are no repetition.
        let mut p = Pages::new("Dify", "find_document", 100);
        p.took([], None).unwrap();
        p.took([], None).unwrap();
    }
}
