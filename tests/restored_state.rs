//! A state file restored from a backup (or copied from another machine)
//! knows less than the upstream holds: documents created after the copy
//! was taken are adopted by name, never created a second time.

mod support;

use kbsync::sink::dify::document_name;
use support::{set_mtime, with_fake, Workspace};

fn state_files(ws: &Workspace) -> Vec<std::path::PathBuf> {
    let dir = ws.dir.path().join("state");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with(".lock"))
        .collect();
    files.sort();
    files
}

fn write_old(ws: &Workspace, key: &str, text: &str) {
    ws.write(key, text);
    set_mtime(&ws.path(key), 1_600_000_000);
}

#[tokio::test]
async fn documents_made_after_the_backup_are_adopted_not_created_again() {
    for policy in ["disable", "delete"] {
        let (fake, ws) = with_fake(policy, "").await;
        for k in ["a.md", "b.md"] {
            write_old(&ws, k, k);
        }
        assert!(ws.reconcile().await.converged());
        let backup = tempfile::tempdir().unwrap();
        let saved: Vec<_> = state_files(&ws)
            .into_iter()
            .map(|p| {
                let to = backup.path().join(p.file_name().unwrap());
                std::fs::copy(&p, &to).unwrap();
                (to, p)
            })
            .collect();

        for k in ["c.md", "d.md", "e.md"] {
            write_old(&ws, k, k);
        }
        assert!(ws.reconcile().await.converged());
        assert_eq!(fake.world().docs.len(), 5);
        // One of them disabled by hand since: Dify would not reuse it.
        let d = fake.world().doc_by_name("d.md").unwrap().id.clone();
        fake.world().docs.get_mut(&d).unwrap().enabled = false;

        for p in state_files(&ws) {
            std::fs::remove_file(p).unwrap();
        }
        for (from, to) in &saved {
            std::fs::copy(from, to).unwrap();
        }
        let mark = fake.requests();
        let r = ws.reconcile().await;
        assert!(r.converged(), "{policy}: {r:?}");
        let w = fake.world();
        assert!(w.duplicate_names().is_empty(), "{policy}: {:?}", w.docs);
        assert_eq!(w.docs.len(), 5, "{policy}");
        assert_eq!(w.count_since(mark, "create-by-file"), 0, "{policy}");
        // Adopted, then given the file's bytes (not known to be there).
        let o = r.outcome.as_ref().unwrap();
        assert_eq!((o.created, o.updated), (0, 3), "{policy}: {o:?}");
        // Adopted as it stands upstream: the disabled one enabled again.
        assert!(w.doc_by_name(&document_name("d.md")).unwrap().enabled);
    }
}
