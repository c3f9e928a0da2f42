//! A source kind gets triage, slices, the protection of what it could not
//! list and the settled skip by implementing `Stamped` and `ReadChanged`
//! only. The kind here is a bucket of objects stamped by ETag and size, as
//! an S3 or WebDAV listing gives them: it lists in key order, GETs what its
//! stamps cannot vouch for, and writes no triage or slices of its own. Its
//! passes run against a real state file, recording and settling as the
//! pass does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::FutureExt;
use kbsync::source::folder::hash_bytes;
use kbsync::source::{
    sliced, Content, Downloaded, Listed, Observed, OwnFiles, ReadChanged, Recorded, ScanInput,
    ScanResult, Scope, Skipped, Stamped, Trust,
};
use kbsync::state::State;

const JOB: &str = "bucket";

/// An object as a listing names it: key, ETag and size, no body.
struct Object {
    key: Box<str>,
    etag: Box<str>,
    size: u64,
}

impl Stamped for Object {
    fn key(&self) -> &str {
        &self.key
    }

    fn stamped_as(&self, recorded: &impl Recorded) -> bool {
        recorded.tag() == Some(&*self.etag) && recorded.size() == Some(self.size)
    }
}

#[derive(Default)]
struct Store {
    /// key → (ETag, body)
    objects: BTreeMap<String, (String, String)>,
    /// Listed, but every GET fails.
    failing: BTreeSet<String>,
    /// A prefix the listing cannot list (access denied below it).
    unlistable: Option<String>,
    gets: Vec<String>,
}

#[derive(Clone, Default)]
struct Bucket(Arc<Mutex<Store>>);

impl Bucket {
    fn put(&self, key: &str, body: &str) {
        let mut s = self.0.lock().unwrap();
        let etag = format!("\"{}\"", &hash_bytes(body.as_bytes())[..16]);
        s.objects.insert(key.into(), (etag, body.into()));
    }

    /// ListObjectsV2: in key order, what lies under an unlistable prefix
    /// reported and protected.
    fn list(&self) -> Listed<Object> {
        let s = self.0.lock().unwrap();
        let mut listed = Listed::default();
        if let Some(prefix) = &s.unlistable {
            listed.skipped.push(Skipped {
                path: prefix.clone(),
                reason: "AccessDenied".into(),
            });
            listed.protected.push(prefix.clone());
        }
        listed.entries = s
            .objects
            .iter()
            .filter(|(k, _)| s.unlistable.as_ref().is_none_or(|p| !k.starts_with(p)))
            .map(|(k, (etag, body))| Object {
                key: k.as_str().into(),
                etag: etag.as_str().into(),
                size: body.len() as u64,
            })
            .collect();
        listed
    }

    fn gets(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap().gets)
    }
}

impl ReadChanged for Bucket {
    type Entry = Object;

    /// One GET per object.
    fn read(&self, entries: Vec<Object>) -> BoxFuture<'static, ScanResult> {
        let bucket = self.clone();
        async move {
            let mut s = bucket.0.lock().unwrap();
            let mut scan = ScanResult::default();
            for o in entries {
                s.gets.push(o.key.to_string());
                if s.failing.contains(&*o.key) {
                    scan.skipped.push(Skipped {
                        path: o.key.to_string(),
                        reason: "503 Slow Down".into(),
                    });
                    scan.protected.push(o.key.to_string());
                    continue;
                }
                let (etag, body) = &s.objects[&*o.key];
                scan.hashed_files += 1;
                scan.items.push(Observed {
                    key: o.key.to_string(),
                    size: body.len() as u64,
                    mtime_ns: 0,
                    identity: 0,
                    hash: hash_bytes(body.as_bytes()),
                    front_matter: None,
                    rehashed: true,
                    racy: false,
                    validator: Some(etag.clone()),
                });
            }
            scan
        }
        .boxed()
    }

    fn content(&self) -> Box<dyn Content + Send + Sync> {
        Box::new(Downloaded(HashMap::new()))
    }
}

/// What one pass over the bucket did.
#[derive(Debug, Default)]
struct Pass {
    /// Each slice's keys (read or vouched for).
    slices: Vec<Vec<String>>,
    gets: Vec<String>,
    unchanged: usize,
    skipped: Vec<String>,
    /// What the pass would retire.
    gone: BTreeSet<String>,
}

/// A full pass, `slice` keys at a time, under plan fingerprint
/// `fingerprint`: each slice's new facts are recorded, and what it saw
/// settled (the upstream here takes everything as it is planned).
async fn pass(bucket: &Bucket, state: &mut State, fingerprint: &str, slice: usize) -> Pass {
    pass_with(bucket, state, fingerprint, slice, false).await
}

async fn pass_with(
    bucket: &Bucket,
    state: &mut State,
    fingerprint: &str,
    slice: usize,
    deep: bool,
) -> Pass {
    let settled = state.plan_fingerprint(JOB, fingerprint, true).unwrap();
    let own = OwnFiles::default();
    let input = ScanInput {
        job: JOB,
        state,
        scope: &Scope::All,
        own: &own,
        fingerprint,
        record_fingerprint: true,
        checksum: deep,
        stop: Arc::new(AtomicBool::new(false)),
        refuses: &|_| None,
    };
    let mut survey = sliced(
        &input,
        Trust { settled, deep },
        bucket.list(),
        bucket.clone(),
    )
    .unwrap();
    let mut p = Pass {
        gone: survey.gone().into_keys().collect(),
        ..Pass::default()
    };
    while let Some((_scope, scanned)) = survey.next(slice).await {
        let scan = &scanned.scan;
        p.unchanged += scan.unchanged;
        p.skipped
            .extend(scan.skipped.iter().map(|s| s.path.clone()));
        let changed: Vec<&Observed> = scan.items.iter().filter(|o| o.rehashed).collect();
        let absent: Vec<&str> = scanned
            .cached
            .keys()
            .filter(|k| p.gone.contains(*k))
            .map(String::as_str)
            .collect();
        state.save_scan(JOB, &changed, &absent).unwrap();
        let seen: Vec<&str> = scan.items.iter().map(|o| o.key.as_str()).collect();
        state.mark_settled(JOB, &seen).unwrap();
        state.mark_settled(JOB, &absent).unwrap();
        p.slices.push(seen.iter().map(|k| k.to_string()).collect());
    }
    p.gets = bucket.gets();
    p
}

/// A state file whose job is bound to its upstream, as the pass's first
/// step leaves it.
fn bound_state(dir: &tempfile::TempDir) -> State {
    let mut state = State::open(&dir.path().join("s.db")).unwrap();
    state.bind_target(JOB, "the upstream").unwrap();
    state
}

const KEYS: [&str; 5] = ["a.md", "b.md", "c.md", "d.md", "e.md"];

fn filled() -> Bucket {
    let bucket = Bucket::default();
    for key in KEYS {
        bucket.put(key, &format!("{key} v1"));
    }
    bucket
}

fn strings(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

#[tokio::test]
async fn a_listed_kind_is_sliced_in_key_order_and_settles() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = bound_state(&dir);
    let bucket = filled();

    let first = pass(&bucket, &mut state, "fp", 2).await;
    assert_eq!(first.gets, strings(&KEYS), "a first pass reads everything");
    assert_eq!(
        first.slices,
        vec![
            strings(&["a.md", "b.md"]),
            strings(&["c.md", "d.md"]),
            strings(&["e.md"])
        ],
        "slices of 2 keys partition the listing in order"
    );

    // Settled: dropped in the triage, unread and unplanned.
    let noop = pass(&bucket, &mut state, "fp", 2).await;
    assert!(noop.gets.is_empty(), "{noop:?}");
    assert_eq!(noop.unchanged, KEYS.len());
    assert!(noop.slices.iter().all(Vec::is_empty), "{noop:?}");

    // A new ETag: that object alone is read, the others stay settled.
    bucket.put("c.md", "c.md v2");
    let changed = pass(&bucket, &mut state, "fp", 2).await;
    assert_eq!(changed.gets, strings(&["c.md"]));
    assert_eq!(changed.unchanged, KEYS.len() - 1);
    let noop = pass(&bucket, &mut state, "fp", 2).await;
    assert!(noop.gets.is_empty(), "{noop:?}");
}

#[tokio::test]
async fn unsettled_objects_with_their_recorded_stamp_are_planned_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = bound_state(&dir);
    let bucket = filled();
    pass(&bucket, &mut state, "fp", 2).await;

    // Another plan fingerprint (a new mapping) trusts no settled flag:
    // everything is planned again, nothing fetched again.
    let replanned = pass(&bucket, &mut state, "fp2", 2).await;
    assert!(replanned.gets.is_empty(), "{replanned:?}");
    assert_eq!(replanned.unchanged, 0);
    assert_eq!(replanned.slices.concat(), strings(&KEYS));

    // A deep pass trusts no stamp.
    let deep = pass_with(&bucket, &mut state, "fp2", 2, true).await;
    assert_eq!(deep.gets, strings(&KEYS));
}

#[tokio::test]
async fn what_a_listed_kind_cannot_read_or_list_is_protected_and_what_it_lost_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = bound_state(&dir);
    let bucket = filled();
    bucket.put("private/x.md", "x");
    pass(&bucket, &mut state, "fp", 2).await;

    {
        let mut s = bucket.0.lock().unwrap();
        s.objects.remove("e.md");
        s.unlistable = Some("private/".into());
        s.failing.insert("b.md".into());
        let (etag, _) = s.objects["b.md"].clone();
        s.objects
            .insert("b.md".into(), (etag + "2", "b.md v2".into()));
    }
    let p = pass(&bucket, &mut state, "fp", 2).await;
    assert_eq!(p.gets, strings(&["b.md"]));
    assert_eq!(p.skipped, strings(&["b.md", "private/"]));
    assert_eq!(
        p.gone,
        BTreeSet::from(["e.md".to_string()]),
        "neither the unreadable object nor the unlisted prefix is gone"
    );
}
