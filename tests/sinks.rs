//! One behaviour suite for every sink, in the spirit of rclone's
//! `fstest/fstests`: the scenarios that hold for any upstream are written
//! once against `Harness` and run against each sink's fake, gated by the
//! capabilities the sink declares. A sink added later gets them by adding a
//! harness and one line to `suite!` at the bottom.

mod support;

use std::collections::BTreeMap;

use kbsync::sink::Capabilities;
use serde_json::{json, Value as Json};
use support::fake_dify::{self, FakeDify, Fault};
use support::fake_openwebui::{self, FakeOpenWebUi};
use support::fake_pai::{self, FakePai};
use support::fake_sharely::{self, FakeSharely};
use support::Workspace;

/// The files every scenario starts from.
const KEYS: &[&str] = &["a.md", "d/b.md", "d/c.md"];

/// The metadata mapping every sink gets; `TEAM` is a static value a
/// scenario changes in the config (a metadata-only change).
const MAPPING: &str = r#"
[sync.metadata]
source_path = { fact = "path" }
owner = { front_matter = "owner" }
team = { value = "TEAM" }
"#;

fn body(key: &str, owner: &str) -> String {
    format!("---\nowner: {owner}\n---\nThe text of {key}.\n")
}

/// How an upstream record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    Live,
    Disabled,
    Archived,
}

/// What the upstream holds for one key.
#[derive(Debug, Clone)]
struct Seen {
    /// The uploaded bytes, for sinks that take content.
    content: Option<Vec<u8>>,
    metadata: BTreeMap<String, Json>,
    standing: Standing,
}

/// What the suite needs from a sink's fake.
trait Harness: Sized {
    /// Starts the fake and a workspace whose one job mirrors `KEYS` into it
    /// under `policy`, with the static field `team` set to `team`.
    async fn start(policy: &str, team: &str) -> Self;
    fn ws(&self) -> &Workspace;
    /// The config text with `TEAM` still in it.
    fn template(&self) -> &str;
    /// The upstream record of `key`, if it has one.
    fn seen(&self, key: &str) -> Option<Seen>;
    /// Requests the fake has answered.
    fn requests(&self) -> usize;
    /// Names (or URIs) held more than once.
    fn duplicates(&self) -> Vec<String>;
    /// Makes the upstream misbehave as it can in production: transient
    /// errors on writes, and (where the API allows it) a write applied
    /// whose answer is lost.
    fn inject_faults(&self);
    /// Injected faults not met yet.
    fn faults_left(&self) -> usize;
    /// Adds a second record under `key`'s name, as by hand: its id, or
    /// `None` when the sink's records are named in the config (nothing can
    /// duplicate them).
    fn add_duplicate(&self, key: &str) -> Option<String>;
    /// How the record `id` stands, `None` when it is gone.
    fn standing(&self, id: &str) -> Option<Standing>;
    /// Deletes `key`'s record, as by hand in the upstream's UI; false when
    /// the sink's records are named in the config (kbsync cannot make one).
    fn delete_by_hand(&self, key: &str) -> bool;
    /// The next listing leaves `key`'s record out, once (a page read
    /// while the records moved); false where the audit does not list.
    fn skip_once(&self, key: &str) -> bool;
    /// Records `skip_once` left to leave out.
    fn skips_left(&self) -> usize;

    fn caps(&self) -> Capabilities {
        self.ws().config().jobs[0].sink.capabilities()
    }

    fn set_team(&self, team: &str) {
        std::fs::write(
            &self.ws().config_path,
            self.template().replace("TEAM", team),
        )
        .unwrap();
    }
}

fn write_all(ws: &Workspace) {
    for key in KEYS {
        ws.write(key, &body(key, "ana"));
    }
}

fn assert_mirrors<H: Harness>(h: &H, key: &str, owner: &str, team: &str) {
    let seen = h
        .seen(key)
        .unwrap_or_else(|| panic!("{key}: no upstream record"));
    assert_eq!(seen.standing, Standing::Live, "{key}");
    assert_eq!(seen.metadata.get("source_path"), Some(&json!(key)), "{key}");
    assert_eq!(seen.metadata.get("owner"), Some(&json!(owner)), "{key}");
    assert_eq!(seen.metadata.get("team"), Some(&json!(team)), "{key}");
    if h.caps().content {
        let bytes = seen.content.expect("a content sink keeps the bytes");
        assert_eq!(String::from_utf8(bytes).unwrap(), body(key, owner), "{key}");
    }
}

/// A pass over an unchanged tree converges without one request.
async fn assert_rests<H: Harness>(h: &H) {
    let before = h.requests();
    let r = h.ws().sync().await;
    assert!(r.converged(), "{r:?}");
    assert!(r.plan.ops.is_empty(), "{:?}", r.plan.ops);
    assert_eq!(h.requests(), before, "a no-op pass sent requests");
}

async fn first_sync_then_rest<H: Harness>() {
    let h = H::start("keep", "blue").await;
    write_all(h.ws());
    let r = h.ws().sync().await;
    assert!(r.converged(), "{r:?}");
    for key in KEYS {
        assert_mirrors(&h, key, "ana", "blue");
    }
    assert_rests(&h).await;
}

async fn change<H: Harness>() {
    let h = H::start("keep", "blue").await;
    write_all(h.ws());
    assert!(h.ws().sync().await.converged());
    h.ws().write("d/b.md", &body("d/b.md", "bo"));
    let r = h.ws().sync().await;
    assert!(r.converged(), "{r:?}");
    assert_mirrors(&h, "d/b.md", "bo", "blue");
    assert_mirrors(&h, "a.md", "ana", "blue");
    assert!(h.duplicates().is_empty(), "{:?}", h.duplicates());
    assert_rests(&h).await;
}

async fn metadata_only_change<H: Harness>() {
    let h = H::start("keep", "blue").await;
    write_all(h.ws());
    assert!(h.ws().sync().await.converged());
    h.set_team("green");
    let before = h.requests();
    let r = h.ws().sync().await;
    assert!(r.converged(), "{r:?}");
    let outcome = r.outcome.as_ref().unwrap();
    // Where metadata travels only with content, the content goes again;
    // elsewhere nothing is uploaded for metadata.
    let uploads = if h.caps().metadata_with_content {
        KEYS.len()
    } else {
        0
    };
    assert_eq!(outcome.created + outcome.updated, uploads, "{outcome:?}");
    assert_eq!(outcome.metadata, KEYS.len());
    for key in KEYS {
        assert_mirrors(&h, key, "ana", "green");
    }
    let sent = h.requests() - before;
    if h.caps().metadata_with_content {
        // No call sets metadata there: each file goes up again with it
        // (upload, a few status polls, the link check, the swap).
        assert!(sent <= KEYS.len() * 12, "{sent} requests");
    } else if h.caps().batch_metadata {
        // One batch (plus, at most, a look at the fields or a token).
        assert!(sent <= 2, "{sent} requests for one batch of metadata");
    } else {
        // One call per item, plus at most a token and a listing (Sharely:
        // the items' types, once per process).
        assert!(sent <= KEYS.len() + 2, "{sent} requests");
    }
    assert_rests(&h).await;
}

/// A declared capability has its verb, and a verb its capability: what
/// the config tells the planner is what the connected sink can do.
async fn declared_capabilities_are_its_verbs<H: Harness>() {
    let h = H::start("keep", "blue").await;
    let config = h.ws().config();
    let sink = config.jobs[0].sink.connect().unwrap();
    assert_eq!(sink.verbs().capabilities(), h.caps());
}

/// The policies a sink can serve, with what a retired record looks like
/// (`None`: gone).
fn policies(caps: Capabilities) -> Vec<(&'static str, Option<Standing>)> {
    let mut p = vec![("keep", Some(Standing::Live))];
    if caps.delete {
        p.push(("delete", None));
    }
    if caps.status {
        p.push(("disable", Some(Standing::Disabled)));
        p.push(("archive", Some(Standing::Archived)));
    }
    p
}

async fn retirement_and_revival<H: Harness>() {
    let probe = H::start("keep", "blue").await;
    let all = policies(probe.caps());
    drop(probe);
    for (policy, retired) in all {
        let h = H::start(policy, "blue").await;
        write_all(h.ws());
        assert!(h.ws().sync().await.converged(), "{policy}");
        h.ws().remove("d/c.md");
        let r = h.ws().sync().await;
        assert!(r.converged(), "{policy}: {r:?}");
        assert_eq!(
            h.seen("d/c.md").map(|s| s.standing),
            retired,
            "{policy}: the retired record"
        );
        assert_mirrors(&h, "a.md", "ana", "blue");
        assert_rests(&h).await;

        h.ws().write("d/c.md", &body("d/c.md", "cy"));
        let r = h.ws().sync().await;
        assert!(r.converged(), "{policy}: {r:?}");
        assert_mirrors(&h, "d/c.md", "cy", "blue");
        assert!(h.duplicates().is_empty(), "{policy}: {:?}", h.duplicates());
        assert_rests(&h).await;
    }
}

/// A sink that declares it can retire (delete, or disable and archive)
/// has the verb the audit retires with: under each such policy a second
/// record under an item's name is retired by the audit (not merely
/// reported so), and the next audit finds nothing.
async fn audit_retires_duplicates<H: Harness>() {
    let probe = H::start("keep", "blue").await;
    let all = policies(probe.caps());
    drop(probe);
    for (policy, retired) in all.into_iter().filter(|(p, _)| *p != "keep") {
        let h = H::start(policy, "blue").await;
        write_all(h.ws());
        assert!(h.ws().reconcile().await.converged(), "{policy}");
        let Some(extra) = h.add_duplicate("d/b.md") else {
            return;
        };
        let r = h.ws().reconcile().await;
        assert!(r.converged(), "{policy}: {r:?}");
        let audit = r.audit.as_ref().expect("the audit ran");
        assert_eq!(audit.retired, 1, "{policy}: {audit:?}");
        assert_eq!(h.standing(&extra), retired, "{policy}: the duplicate");
        assert!(h.seen("d/b.md").is_some(), "{policy}: the tracked record");
        let r = h.ws().reconcile().await;
        assert!(r.converged(), "{policy}: {r:?}");
        let audit = r.audit.as_ref().expect("the audit ran");
        assert!(audit.findings.is_empty(), "{policy}: {audit:?}");
    }
}

/// A record deleted by hand is found missing by the audit, made again in
/// the same pass, and the next audit finds nothing.
async fn audit_repairs_a_record_deleted_by_hand<H: Harness>() {
    let h = H::start("keep", "blue").await;
    write_all(h.ws());
    assert!(h.ws().reconcile().await.converged());
    if !h.delete_by_hand("d/b.md") {
        return;
    }
    assert!(h.seen("d/b.md").is_none(), "deleted");
    let r = h.ws().reconcile().await;
    assert!(r.converged(), "{r:?}");
    let audit = r.audit.as_ref().expect("the audit ran");
    let missing: Vec<&str> = audit
        .findings
        .iter()
        .filter(|f| f.drift == kbsync::audit::Drift::Missing)
        .map(|f| f.key.as_str())
        .collect();
    assert_eq!(missing, ["d/b.md"], "{audit:?}");
    for key in KEYS {
        assert_mirrors(&h, key, "ana", "blue");
    }
    assert!(h.duplicates().is_empty(), "{:?}", h.duplicates());
    let r = h.ws().reconcile().await;
    assert!(r.converged(), "{r:?}");
    let audit = r.audit.as_ref().expect("the audit ran");
    assert!(audit.findings.is_empty(), "{audit:?}");
}

/// A record a listing misses is looked up again before it is taken for
/// gone: nothing is made again, and no finding stands.
async fn audit_looks_again_before_taking_a_record_for_gone<H: Harness>() {
    let h = H::start("keep", "blue").await;
    write_all(h.ws());
    assert!(h.ws().reconcile().await.converged());
    if !h.skip_once("d/b.md") {
        return;
    }
    let before = h.requests();
    let r = h.ws().reconcile().await;
    assert!(r.converged(), "{r:?}");
    let audit = r.audit.as_ref().expect("the audit ran");
    assert!(audit.findings.is_empty(), "{audit:?}");
    let outcome = r.outcome.as_ref().unwrap();
    assert_eq!(outcome.created + outcome.updated, 0, "{outcome:?}");
    assert!(h.duplicates().is_empty(), "{:?}", h.duplicates());
    assert_eq!(h.skips_left(), 0, "the listing did miss it");
    assert!(h.requests() > before + 1, "the record was looked up again");
    for key in KEYS {
        assert_mirrors(&h, key, "ana", "blue");
    }
}

async fn faults_converge_without_duplicates<H: Harness>() {
    let h = H::start("keep", "blue").await;
    write_all(h.ws());
    h.inject_faults();
    // Transient failures may take a pass or two; nothing may need a hand.
    let mut converged = false;
    for _ in 0..3 {
        if h.ws().sync().await.converged() {
            converged = true;
            break;
        }
    }
    assert!(converged, "not converged after 3 passes");
    assert_eq!(h.faults_left(), 0, "every injected fault was met");
    for key in KEYS {
        assert_mirrors(&h, key, "ana", "blue");
    }
    assert!(h.duplicates().is_empty(), "{:?}", h.duplicates());
    assert_rests(&h).await;
}

// --- Dify ---------------------------------------------------------------

struct Dify {
    fake: FakeDify,
    ws: Workspace,
    template: String,
}

impl Harness for Dify {
    async fn start(policy: &str, team: &str) -> Dify {
        let fake = FakeDify::start().await;
        let template = format!(
            r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "suite"
delete_policy = "{policy}"

[sync.folder]
root = "docs"

[sync.dify]
base_url = "{}"
dataset_id = "{}"
api_key_file = "api.key"
retry_min_delay_ms = 1
retry_max_delay_secs = 1
max_retries = 3
{MAPPING}"#,
            fake.base_url(),
            fake_dify::DATASET,
        );
        let ws = Workspace::raw(&template.replace("TEAM", team));
        Dify { fake, ws, template }
    }

    fn ws(&self) -> &Workspace {
        &self.ws
    }

    fn template(&self) -> &str {
        &self.template
    }

    fn seen(&self, key: &str) -> Option<Seen> {
        let w = self.fake.world();
        let doc = w.doc_by_name(&kbsync::sink::dify::document_name(key))?;
        Some(Seen {
            content: Some(doc.content.clone()),
            metadata: doc.metadata.values().cloned().collect(),
            standing: match (doc.archived, doc.enabled) {
                (true, _) => Standing::Archived,
                (false, false) => Standing::Disabled,
                (false, true) => Standing::Live,
            },
        })
    }

    fn requests(&self) -> usize {
        self.fake.requests()
    }

    fn duplicates(&self) -> Vec<String> {
        self.fake.world().duplicate_names()
    }

    fn inject_faults(&self) {
        let mut w = self.fake.world();
        w.inject(None, "create-by-file", Fault::ApplyThen500, 1);
        w.inject(
            None,
            "create-by-file",
            Fault::status(503, "unavailable", "Service Unavailable"),
            1,
        );
        w.inject(
            None,
            "documents/metadata",
            Fault::status(502, "bad_gateway", "Bad Gateway"),
            1,
        );
    }

    fn faults_left(&self) -> usize {
        let w = self.fake.world();
        w.faults.iter().map(|f| f.remaining as usize).sum()
    }

    fn add_duplicate(&self, key: &str) -> Option<String> {
        let name = kbsync::sink::dify::document_name(key);
        Some(self.fake.world().add_doc(&name, b"a second copy"))
    }

    fn delete_by_hand(&self, key: &str) -> bool {
        let name = kbsync::sink::dify::document_name(key);
        let mut w = self.fake.world();
        w.docs.retain(|_, d| d.name != name);
        true
    }

    fn skip_once(&self, key: &str) -> bool {
        let name = kbsync::sink::dify::document_name(key);
        let mut w = self.fake.world();
        let id = w.doc_by_name(&name).expect("mirrored").id.clone();
        w.skip_once.insert(id);
        true
    }

    fn skips_left(&self) -> usize {
        self.fake.world().skip_once.len()
    }

    fn standing(&self, id: &str) -> Option<Standing> {
        let w = self.fake.world();
        let doc = w.docs.get(id)?;
        Some(match (doc.archived, doc.enabled) {
            (true, _) => Standing::Archived,
            (false, false) => Standing::Disabled,
            (false, true) => Standing::Live,
        })
    }
}

// --- PAI ----------------------------------------------------------------

const PAI_BASE: &str = "oss://kb-bucket/suite/";

struct Pai {
    fake: FakePai,
    ws: Workspace,
    template: String,
}

impl Harness for Pai {
    async fn start(policy: &str, team: &str) -> Pai {
        let fake = FakePai::start().await;
        let template = format!(
            r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "suite"
delete_policy = "{policy}"

[sync.folder]
root = "docs"

[sync.pai]
endpoint = "{}"
workspace_id = "{}"
dataset_id = "{}"
uri_base = "{PAI_BASE}"
access_key_id_file = "pai.id"
access_key_secret_file = "pai.secret"
retry_min_delay_ms = 1
retry_max_delay_secs = 1
max_retries = 3
{MAPPING}"#,
            fake.endpoint(),
            fake_pai::WORKSPACE,
            fake_pai::DATASET,
        );
        let ws = Workspace::raw(&template.replace("TEAM", team));
        support::write_key(&ws.dir.path().join("pai.id"), fake_pai::KEY_ID);
        support::write_key(&ws.dir.path().join("pai.secret"), fake_pai::SECRET);
        Pai { fake, ws, template }
    }

    fn ws(&self) -> &Workspace {
        &self.ws
    }

    fn template(&self) -> &str {
        &self.template
    }

    fn seen(&self, key: &str) -> Option<Seen> {
        let w = self.fake.world();
        let record = w.by_uri(&format!("{PAI_BASE}{key}")).first().cloned()?;
        let metadata = match record.attributes() {
            Json::Object(m) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        Some(Seen {
            content: None,
            metadata,
            standing: Standing::Live,
        })
    }

    fn requests(&self) -> usize {
        self.fake.world().log.len()
    }

    fn duplicates(&self) -> Vec<String> {
        let w = self.fake.world();
        let mut seen = BTreeMap::<&str, usize>::new();
        for r in w.records.values() {
            *seen.entry(&r.uri).or_default() += 1;
        }
        seen.into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(u, _)| u.to_owned())
            .collect()
    }

    fn inject_faults(&self) {
        let mut w = self.fake.world();
        w.fail_next.push(("ListDatasetFileMetas".into(), 503, 1));
        w.fail_next.push(("CreateDatasetFileMetas".into(), 500, 1));
    }

    fn faults_left(&self) -> usize {
        self.fake.world().fail_next.len()
    }

    fn add_duplicate(&self, key: &str) -> Option<String> {
        Some(self.fake.world().add_record(&format!("{PAI_BASE}{key}")))
    }

    fn delete_by_hand(&self, key: &str) -> bool {
        let uri = format!("{PAI_BASE}{key}");
        self.fake.world().records.retain(|_, r| r.uri != uri);
        true
    }

    fn skip_once(&self, key: &str) -> bool {
        let uri = format!("{PAI_BASE}{key}");
        let mut w = self.fake.world();
        let ids: Vec<String> = w
            .records
            .iter()
            .filter(|(_, r)| r.uri == uri)
            .map(|(id, _)| id.clone())
            .collect();
        w.skip_once.extend(ids);
        true
    }

    fn skips_left(&self) -> usize {
        self.fake.world().skip_once.len()
    }

    fn standing(&self, id: &str) -> Option<Standing> {
        let w = self.fake.world();
        w.records.contains_key(id).then_some(Standing::Live)
    }
}

// --- Sharely ------------------------------------------------------------

/// Knowledge ids the config maps `KEYS` to.
const SHARELY_IDS: &[&str] = &[
    "22222222-0000-4000-8000-00000000000a",
    "22222222-0000-4000-8000-00000000000b",
    "22222222-0000-4000-8000-00000000000c",
];

struct Sharely {
    fake: FakeSharely,
    ws: Workspace,
    template: String,
}

impl Harness for Sharely {
    async fn start(policy: &str, team: &str) -> Sharely {
        let fake = FakeSharely::start().await;
        for id in SHARELY_IDS {
            fake.world().add_item(id, "FILE", "COMPLETED");
        }
        let knowledge: String = KEYS
            .iter()
            .zip(SHARELY_IDS)
            .map(|(k, id)| format!("\"{k}\" = \"{id}\"\n"))
            .collect();
        let template = format!(
            r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "suite"
delete_policy = "{policy}"

[sync.folder]
root = "docs"

[sync.sharely]
base_url = "{}"
workspace_id = "{}"
organization_id = "{}"
api_key_file = "sharely.key"
upload = false
retry_min_delay_ms = 1
retry_max_delay_secs = 1
max_retries = 3

[sync.sharely.knowledge]
{knowledge}
{MAPPING}"#,
            fake.base_url(),
            fake_sharely::WORKSPACE,
            fake_sharely::ORG,
        );
        let ws = Workspace::raw(&template.replace("TEAM", team));
        support::write_key(&ws.dir.path().join("sharely.key"), fake_sharely::API_KEY);
        Sharely { fake, ws, template }
    }

    fn ws(&self) -> &Workspace {
        &self.ws
    }

    fn template(&self) -> &str {
        &self.template
    }

    /// Sharely's items exist before kbsync: one "has a record" for the
    /// suite once kbsync set metadata on it.
    fn seen(&self, key: &str) -> Option<Seen> {
        let i = KEYS.iter().position(|k| *k == key)?;
        let w = self.fake.world();
        let item = w.items.get(SHARELY_IDS[i])?;
        if item.metadata.is_empty() {
            return None;
        }
        Some(Seen {
            content: None,
            metadata: item.metadata.clone(),
            standing: Standing::Live,
        })
    }

    fn requests(&self) -> usize {
        self.fake.world().log.len()
    }

    /// Ids come from the config: there is nothing to duplicate.
    fn duplicates(&self) -> Vec<String> {
        Vec::new()
    }

    fn inject_faults(&self) {
        self.fake.world().fail_next.push((503, 2));
    }

    fn faults_left(&self) -> usize {
        self.fake.world().fail_next.len()
    }

    fn add_duplicate(&self, _key: &str) -> Option<String> {
        None
    }

    /// The items are the config's: gone, there is nothing kbsync may make.
    fn delete_by_hand(&self, _key: &str) -> bool {
        false
    }

    /// Mapped items are not listed by the audit.
    fn skip_once(&self, _key: &str) -> bool {
        false
    }

    fn skips_left(&self) -> usize {
        0
    }

    fn standing(&self, id: &str) -> Option<Standing> {
        let w = self.fake.world();
        w.items.contains_key(id).then_some(Standing::Live)
    }
}

/// Sharely with uploads: items are kbsync's own, titled by path.
struct SharelyFiles {
    fake: FakeSharely,
    ws: Workspace,
    template: String,
}

impl Harness for SharelyFiles {
    async fn start(policy: &str, team: &str) -> SharelyFiles {
        let fake = FakeSharely::start().await;
        let template = format!(
            r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "suite"
delete_policy = "{policy}"

[sync.folder]
root = "docs"

[sync.sharely]
base_url = "{}"
workspace_id = "{}"
organization_id = "{}"
api_key_file = "sharely.key"
retry_min_delay_ms = 1
retry_max_delay_secs = 1
max_retries = 3
{MAPPING}"#,
            fake.base_url(),
            fake_sharely::WORKSPACE,
            fake_sharely::ORG,
        );
        let ws = Workspace::raw(&template.replace("TEAM", team));
        support::write_key(&ws.dir.path().join("sharely.key"), fake_sharely::API_KEY);
        SharelyFiles { fake, ws, template }
    }

    fn ws(&self) -> &Workspace {
        &self.ws
    }

    fn template(&self) -> &str {
        &self.template
    }

    fn seen(&self, key: &str) -> Option<Seen> {
        let w = self.fake.world();
        let (_, item) = w.titled(key).into_iter().next()?;
        Some(Seen {
            content: item.content.clone(),
            metadata: item.metadata.clone(),
            standing: Standing::Live,
        })
    }

    fn requests(&self) -> usize {
        self.fake.world().log.len()
    }

    fn duplicates(&self) -> Vec<String> {
        self.fake.world().duplicate_titles()
    }

    /// An upload applied whose answer is lost, one refused, and a failing
    /// metadata call.
    fn inject_faults(&self) {
        let mut w = self.fake.world();
        w.upload_faults = vec![
            fake_sharely::Fault::ApplyThen500,
            fake_sharely::Fault::Refuse(503),
        ];
        w.fail_next.push((503, 1));
    }

    fn faults_left(&self) -> usize {
        let w = self.fake.world();
        w.upload_faults.len() + w.fail_next.len()
    }

    fn add_duplicate(&self, key: &str) -> Option<String> {
        Some(self.fake.world().add_file(key, b"a second copy"))
    }

    fn delete_by_hand(&self, key: &str) -> bool {
        let mut w = self.fake.world();
        let ids: Vec<String> = w
            .titled(key)
            .into_iter()
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            w.items.remove(&id);
        }
        true
    }

    fn skip_once(&self, key: &str) -> bool {
        let mut w = self.fake.world();
        let ids: Vec<String> = w
            .titled(key)
            .into_iter()
            .map(|(id, _)| id.clone())
            .collect();
        w.skip_once.extend(ids);
        true
    }

    fn skips_left(&self) -> usize {
        self.fake.world().skip_once.len()
    }

    fn standing(&self, id: &str) -> Option<Standing> {
        let w = self.fake.world();
        w.items.contains_key(id).then_some(Standing::Live)
    }
}

// --- Open WebUI -----------------------------------------------------------

struct OpenWebUi {
    fake: FakeOpenWebUi,
    ws: Workspace,
    template: String,
}

impl Harness for OpenWebUi {
    async fn start(policy: &str, team: &str) -> OpenWebUi {
        let fake = FakeOpenWebUi::start().await;
        let template = format!(
            r#"
[state]
path = "state/kbsync.db"

[[sync]]
name = "suite"
delete_policy = "{policy}"

[sync.folder]
root = "docs"

[sync.openwebui]
base_url = "{}"
knowledge_id = "{}"
api_key_file = "owui.key"
retry_min_delay_ms = 1
retry_max_delay_secs = 1
max_retries = 3
{MAPPING}"#,
            fake.base_url(),
            fake_openwebui::KNOWLEDGE,
        );
        let ws = Workspace::raw(&template.replace("TEAM", team));
        support::write_key(&ws.dir.path().join("owui.key"), fake_openwebui::API_KEY);
        OpenWebUi { fake, ws, template }
    }

    fn ws(&self) -> &Workspace {
        &self.ws
    }

    fn template(&self) -> &str {
        &self.template
    }

    fn seen(&self, key: &str) -> Option<Seen> {
        let w = self.fake.world();
        let file = w.by_path(key).into_iter().next()?;
        Some(Seen {
            content: Some(file.content.clone()),
            metadata: file.meta_data.clone().into_iter().collect(),
            standing: Standing::Live,
        })
    }

    fn requests(&self) -> usize {
        self.fake.world().log.len()
    }

    fn duplicates(&self) -> Vec<String> {
        let w = self.fake.world();
        let mut paths: BTreeMap<String, usize> = BTreeMap::new();
        for f in w.linked() {
            if let Some(p) = f.meta_data.get("kbsync_path").and_then(Json::as_str) {
                *paths.entry(p.to_owned()).or_default() += 1;
            }
        }
        paths
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(p, _)| p)
            .collect()
    }

    /// An upload applied whose answer is lost, one refused, and a failing
    /// cleanup.
    fn inject_faults(&self) {
        let mut w = self.fake.world();
        w.upload_faults = vec![
            fake_openwebui::Fault::ApplyThen500,
            fake_openwebui::Fault::Refuse(503),
        ];
    }

    fn faults_left(&self) -> usize {
        let w = self.fake.world();
        w.upload_faults.len() + w.write_faults.len()
    }

    fn add_duplicate(&self, key: &str) -> Option<String> {
        Some(self.fake.world().add_file(key, "a second copy"))
    }

    fn delete_by_hand(&self, key: &str) -> bool {
        let mut w = self.fake.world();
        let ids: Vec<String> = w.by_path(key).iter().map(|f| f.id.clone()).collect();
        for id in ids {
            w.remove_file(&id);
        }
        true
    }

    fn skip_once(&self, key: &str) -> bool {
        let mut w = self.fake.world();
        let ids: Vec<String> = w.by_path(key).iter().map(|f| f.id.clone()).collect();
        w.skip_once.extend(ids);
        true
    }

    fn skips_left(&self) -> usize {
        self.fake.world().skip_once.len()
    }

    fn standing(&self, id: &str) -> Option<Standing> {
        let w = self.fake.world();
        w.files
            .get(id)
            .filter(|f| f.knowledge.is_some())
            .map(|_| Standing::Live)
    }
}

/// One test per scenario and sink.
macro_rules! suite {
    ($($sink:ident: $harness:ty),* $(,)?) => {
        $(
            mod $sink {
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn first_sync_then_rest() {
                    super::first_sync_then_rest::<$harness>().await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn change() {
                    super::change::<$harness>().await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn metadata_only_change() {
                    super::metadata_only_change::<$harness>().await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn declared_capabilities_are_its_verbs() {
                    super::declared_capabilities_are_its_verbs::<$harness>().await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn retirement_and_revival() {
                    super::retirement_and_revival::<$harness>().await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn audit_retires_duplicates() {
                    super::audit_retires_duplicates::<$harness>().await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn audit_repairs_a_record_deleted_by_hand() {
                    super::audit_repairs_a_record_deleted_by_hand::<$harness>().await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn audit_looks_again_before_taking_a_record_for_gone() {
                    super::audit_looks_again_before_taking_a_record_for_gone::<$harness>().await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn faults_converge_without_duplicates() {
                    super::faults_converge_without_duplicates::<$harness>().await
                }
            }
        )*
    };
}

suite!(
    dify: Dify,
    pai: Pai,
    sharely_mapped: Sharely,
    sharely: SharelyFiles,
    openwebui: OpenWebUi,
);
