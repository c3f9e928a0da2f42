//! What an upstream may send, and how much of it kbsync takes: answers are
//! read up to a cap (a JSON answer 16 MiB, the start of an error answer
//! 64 KiB), never whole, and listings end within a bound derived from what
//! the upstream reported, never acting on half of one.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::Method;
use kbsync::reconcile::JobReport;
use support::fake_dify::{FakeDify, Fault, DATASET};
use support::Workspace;

const MIB: u64 = 1 << 20;

/// A body this large, made as it is sent.
const HUGE: u64 = 64 * MIB;

fn setup(fake: &FakeDify) -> Workspace {
    let ws = Workspace::new(&fake.base_url(), DATASET, "delete", "", "");
    ws.write("a.md", "a");
    ws
}

fn huge(status: u16, announce: bool) -> Fault {
    Fault::Huge {
        status,
        size: HUGE,
        announce,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_answer_past_its_cap_fails_the_call_for_good_without_reading_the_rest() {
    // The listing a first create makes (to adopt what is there) answers
    // 64 MiB of valid JSON: chunked, its length shows only as it arrives
    // (read up to the cap); announced, nothing need be read.
    for (announce, bound) in [(false, 32 * MIB), (true, 16 * MIB)] {
        let fake = FakeDify::start().await;
        let ws = setup(&fake);
        fake.world().inject(
            Some(Method::GET),
            "/documents",
            huge(200, announce),
            u32::MAX,
        );
        let r = ws.sync().await;
        let o = r.outcome.as_ref().unwrap();
        assert_eq!(o.failures.len(), 1, "{:?}", o.failures);
        let e = &o.failures[0].error;
        assert_eq!(e.code, "answer_too_large");
        assert!(
            e.message
                .contains("from Dify exceeds 16 MiB, the most kbsync reads"),
            "{}",
            e.message
        );
        assert!(!r.converged());
        let w = fake.world();
        // Permanent: asked once, and nothing was created blind.
        assert_eq!(w.count_since(0, "/documents"), 1);
        assert!(w.docs.is_empty());
        let sent = w.huge_sent.load(Ordering::Relaxed);
        println!("announced {announce}: {sent} bytes of a {HUGE}-byte answer made");
        assert!(
            sent < bound,
            "announced {announce}: the fake made {sent} bytes of its {HUGE}-byte answer before the client hung up"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_error_answer_is_cut_at_64_kib_on_every_retry() {
    let fake = FakeDify::start().await;
    let ws = setup(&fake);
    // A 500 with 64 MiB of body, to every create: transient, so retried.
    fake.world().inject(
        Some(Method::POST),
        "create-by-file",
        huge(500, false),
        u32::MAX,
    );
    let r = ws.sync().await;
    let o = r.outcome.as_ref().unwrap();
    assert_eq!(o.failures.len(), 1, "{:?}", o.failures);
    let w = fake.world();
    let attempts = w.count_since(0, "create-by-file") as u64;
    assert!(attempts > 1, "retried: {attempts}");
    let sent = w.huge_sent.load(Ordering::Relaxed);
    println!("{sent} bytes of {attempts} answers of {HUGE} bytes made");
    assert!(
        sent < attempts * 16 * MIB,
        "the fake made {sent} bytes for {attempts} answers of {HUGE} bytes"
    );
    let e = &o.failures[0].error;
    assert_eq!(e.status, Some(500));
    // Cut, it is no JSON: the body's start stands in for its message.
    assert!(e.message.starts_with(r#"{"data":[],"#), "{}", e.message);
    assert!(e.message.chars().count() <= 200, "{}", e.message);
}

/// A pass, given `secs` to end: a listing followed forever never would.
async fn reconcile_within(ws: &Workspace, secs: u64, requests: impl Fn() -> usize) -> JobReport {
    tokio::time::timeout(Duration::from_secs(secs), ws.reconcile())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the pass did not end within {secs} s; {} requests so far",
                requests()
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dify_listing_that_never_ends_is_stopped_and_nothing_acts_on_it() {
    // Every page the first again, saying there is more: with an absurd
    // total, and with none.
    for (total, pages) in [(Some(1_000_000_000_000), 1), (None, 2)] {
        let fake = FakeDify::start().await;
        let ws = Workspace::new(&fake.base_url(), DATASET, "delete", "", "");
        for k in ["a.md", "b.md", "c.md"] {
            ws.write(k, k);
        }
        assert!(ws.sync().await.converged());
        // A copy made by hand: an audit that had the whole listing would
        // retire it.
        let copy = fake.world().add_doc("a.md", b"a copy");
        fake.world().endless_listing = Some(total);
        let before = fake.requests();
        let r = reconcile_within(&ws, 20, || fake.requests()).await;
        let err = r.audit_error.as_deref().expect("the audit says why not");
        assert!(
            err.contains("Dify's listing (list documents) does not end: "),
            "{err}"
        );
        assert!(!r.converged(), "{r:?}");
        let w = fake.world();
        assert_eq!(
            w.count_since(before, "/documents?page="),
            pages,
            "{total:?}"
        );
        assert_eq!(w.docs.len(), 4);
        assert!(w.docs[&copy].enabled, "the copy was retired");
    }
}
