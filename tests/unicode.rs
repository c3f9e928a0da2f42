//! Names sent upstream are composed (NFC): a file named on macOS
//! (decomposed) and the same name typed elsewhere (composed) are one
//! document, and two files whose names differ only so are a collision,
//! reported, never uploaded twice.

mod support;

use support::with_fake;

const COMPOSED: &str = "caf\u{e9}.md";
const DECOMPOSED: &str = "cafe\u{301}.md";

#[tokio::test]
async fn a_decomposed_name_is_sent_composed() {
    let (fake, ws) = with_fake("disable", "").await;
    ws.write(DECOMPOSED, "menu");
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    let w = fake.world();
    let doc = w.doc_by_name(COMPOSED).expect("named in NFC");
    assert_eq!(doc.content, b"menu");
    assert!(w.doc_by_name(DECOMPOSED).is_none());
}

#[tokio::test]
async fn two_names_equal_once_normalized_are_a_reported_collision() {
    let (fake, ws) = with_fake("disable", "").await;
    ws.write(COMPOSED, "typed on Linux");
    ws.write(DECOMPOSED, "copied from a Mac");
    ws.write("plain.md", "plain");
    let r = ws.sync().await;
    assert!(!r.converged(), "a collision is a problem to fix");
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    let s = &r.skipped[0];
    // The first by key (byte order: the decomposed one) is mirrored.
    assert_eq!(s.path, COMPOSED);
    assert!(s.reason.contains("Unicode-normalized"), "{}", s.reason);
    {
        let w = fake.world();
        assert_eq!(w.docs.len(), 2);
        assert!(w.duplicate_names().is_empty());
        assert_eq!(
            w.doc_by_name(COMPOSED).unwrap().content,
            b"copied from a Mac"
        );
    }
    // Renamed: both are mirrored.
    std::fs::rename(ws.path(COMPOSED), ws.path("cafe-linux.md")).unwrap();
    let r = ws.sync().await;
    assert!(r.converged(), "{r:?}");
    assert_eq!(fake.world().docs.len(), 3);
}

/// A copy from macOS renamed to its composed spelling (or back): the same
/// document name, so the same document, whatever the delete policy.
#[tokio::test]
async fn a_rename_between_spellings_keeps_its_one_document() {
    for policy in ["delete", "disable", "archive"] {
        let (fake, ws) = with_fake(policy, "").await;
        // As Dify does: a create under an enabled document's name reuses it.
        fake.world().reuse_same_name = true;
        ws.write(DECOMPOSED, "menu");
        for other in ["a.md", "b.md", "c.md"] {
            ws.write(other, other);
        }
        assert!(ws.sync().await.converged());
        let id = fake.world().doc_by_name(COMPOSED).unwrap().id.clone();
        std::fs::rename(ws.path(DECOMPOSED), ws.path(COMPOSED)).unwrap();
        ws.write(COMPOSED, "menu, new prices");
        let r = ws.sync().await;
        assert!(r.converged(), "{policy}: {r:?}");
        {
            let w = fake.world();
            let docs: Vec<_> = w
                .docs
                .values()
                .filter(|d| d.name.starts_with("caf"))
                .collect();
            assert_eq!(docs.len(), 1, "{policy}: {docs:?}");
            let doc = docs[0];
            assert_eq!(doc.id, id, "{policy}: the same document, updated");
            assert!(doc.enabled && !doc.archived, "{policy}: {doc:?}");
            assert_eq!(doc.content, b"menu, new prices", "{policy}");
        }
        let again = ws.sync().await;
        assert!(
            again.converged() && again.plan.ops.is_empty(),
            "{policy}: {again:?}"
        );
    }
}
