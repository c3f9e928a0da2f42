//! A fake Dify Knowledge API server, in-process on 127.0.0.1:0. It keeps
//! state (documents, metadata fields, statuses, indexing) and answers with
//! the status codes and error bodies of Dify's published OpenAPI spec
//! (../shared/specs/dify). Faults can be injected per request: an error
//! status, a dropped connection, or a request applied and then answered
//! with a failure (the response is lost).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value as Json};

use super::serve::Huge;

pub const API_KEY: &str = "dataset-TESTKEY0123456789";
pub const DATASET: &str = "6b7c1a2e-0000-4000-8000-00000000d1f7";
/// Dify's default UPLOAD_FILE_SIZE_LIMIT.
pub const MAX_UPLOAD: usize = 15 * 1024 * 1024;
const ALLOWED_EXTENSIONS: &[&str] = &[
    "txt",
    "markdown",
    "md",
    "mdx",
    "pdf",
    "html",
    "htm",
    "xlsx",
    "xls",
    "docx",
    "csv",
    "vtt",
    "properties",
];

#[derive(Debug, Clone)]
pub struct Doc {
    pub id: String,
    pub name: String,
    pub content: Vec<u8>,
    pub enabled: bool,
    pub archived: bool,
    pub indexing_status: String,
    pub polls_left: u32,
    pub batch: String,
    pub position: u64,
    /// field id → (field name, value)
    pub metadata: BTreeMap<String, (String, Json)>,
    /// Status requests still refused with "being indexed" (Dify keeps a
    /// Redis flag while the index task that enable/disable started runs).
    pub being_indexed: u32,
    /// Until when status requests are refused with "being indexed": the
    /// Redis lock as it lasts in time, lifted when the index task ends
    /// (see `World::indexing_lock_for`).
    pub locked_until: Option<std::time::Instant>,
    /// Requests until the indexing worker is done with it (see
    /// `World::indexing_ticks`).
    pub ticks_left: u32,
    /// Why indexing ended in `error` (Dify 1.13.3 lists e.g. "Could not
    /// detect encoding for /tmp/tmpx/x.txt" for a binary file named .txt).
    pub error: Option<String>,
}

impl Doc {
    /// Indexing failed upstream, as Dify lists it.
    pub fn fail_indexing(&mut self, reason: &str) {
        self.indexing_status = "error".into();
        self.error = Some(reason.into());
        self.polls_left = 0;
        self.ticks_left = 0;
    }
}

impl Doc {
    fn display_status(&self) -> &'static str {
        if self.archived {
            "archived"
        } else if !self.enabled {
            "disabled"
        } else if self.indexing_status == "completed" {
            "available"
        } else if self.indexing_status == "waiting" {
            "queuing"
        } else if self.indexing_status == "error" {
            "error"
        } else {
            "indexing"
        }
    }

    fn to_json(&self, fields: &[Field]) -> Json {
        json!({
            "id": self.id,
            "position": self.position,
            "data_source_type": "upload_file",
            "data_source_info": {"upload_file_id": format!("file-{}", self.id)},
            "dataset_process_rule_id": "rule-1",
            "name": self.name,
            "created_from": "api",
            "created_by": "user-1",
            "created_at": 1_741_267_200,
            "tokens": 0,
            "indexing_status": self.indexing_status,
            "error": self.error,
            "enabled": self.enabled,
            "disabled_at": if self.enabled { Json::Null } else { json!(1_741_267_300) },
            "disabled_by": null,
            "archived": self.archived,
            "display_status": self.display_status(),
            "word_count": self.content.len() / 5,
            "hit_count": 0,
            "doc_form": "text_model",
            "doc_metadata": self.metadata.iter().map(|(id, (name, value))| json!({
                "id": id,
                "name": name,
                "type": fields.iter().find(|f| &f.id == id).map_or("string", |f| f.kind.as_str()),
                "value": value,
            })).collect::<Vec<_>>(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Field {
    pub id: String,
    pub name: String,
    pub kind: String,
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// When the request arrived and when it was answered: the bench reads
    /// from them how many uploads were in flight at each moment.
    pub arrived: std::time::Instant,
    pub answered: std::time::Instant,
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and Dify-style error body, without applying.
    Status {
        status: u16,
        code: String,
        message: String,
        retry_after: Option<String>,
    },
    /// Close the connection without answering, without applying.
    Drop,
    /// Apply the request, then answer 500 (the client never learns it worked).
    ApplyThen500,
    /// Apply the request, then close the connection.
    ApplyThenDrop,
    /// Apply the request, then take this long to answer.
    ApplyThenStall(std::time::Duration),
    /// Take this long, then apply and answer: a slow server (a big file
    /// being parsed) still working on a request its client gave up on.
    StallThenApply(std::time::Duration),
    /// Apply the request, then answer only once the test notifies: a
    /// server busy for as long as a test needs it to be.
    ApplyThenWait(Arc<tokio::sync::Notify>),
    /// Answer with this status and a JSON body of `size` bytes (a valid
    /// empty listing page, or error, padded), without applying: a proxy
    /// or server gone wrong. Made as it is sent (`World::huge_sent`
    /// counts it); with `announce` it has a Content-Length, else it goes
    /// chunked.
    Huge {
        status: u16,
        size: u64,
        announce: bool,
    },
}

impl Fault {
    pub fn status(status: u16, code: &str, message: &str) -> Fault {
        Fault::Status {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn too_many(retry_after: &str) -> Fault {
        Fault::Status {
            status: 429,
            code: "too_many_requests".into(),
            message: "Too many requests.".into(),
            retry_after: Some(retry_after.into()),
        }
    }
}

/// Dify's knowledge rate limit, simulated: at most `limit` requests in any
/// sliding `window`; beyond that, the 403 Dify sends (not applied).
pub struct RateWindow {
    pub limit: usize,
    pub window: std::time::Duration,
    /// Answer as a gateway in front of Dify would: 429 with Retry-After
    /// (whole seconds until the window has room), instead of Dify's own
    /// rate-limit 403.
    pub gateway: bool,
    seen: std::collections::VecDeque<std::time::Instant>,
    /// Requests refused so far.
    pub refused: usize,
}

impl RateWindow {
    pub fn new(limit: usize, window: std::time::Duration) -> RateWindow {
        RateWindow {
            limit,
            window,
            gateway: false,
            seen: Default::default(),
            refused: 0,
        }
    }

    pub fn gateway(limit: usize, window: std::time::Duration) -> RateWindow {
        RateWindow {
            gateway: true,
            ..RateWindow::new(limit, window)
        }
    }

    /// None when admitted, else the refusal to answer with.
    fn admit(&mut self) -> Option<Fault> {
        let now = std::time::Instant::now();
        while self
            .seen
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            self.seen.pop_front();
        }
        if self.seen.len() < self.limit {
            self.seen.push_back(now);
            return None;
        }
        self.refused += 1;
        if !self.gateway {
            return Some(Fault::status(403, "forbidden", RATE_LIMIT_MESSAGE));
        }
        let room_in = self.window.saturating_sub(now.duration_since(self.seen[0]));
        let secs = room_in.as_secs_f64().ceil().max(1.0) as u64;
        Some(Fault::Status {
            status: 429,
            code: "too_many_requests".into(),
            message: "Too many requests".into(),
            retry_after: Some(secs.to_string()),
        })
    }
}

pub const RATE_LIMIT_MESSAGE: &str =
    "Sorry, you have reached the knowledge base request rate limit of your subscription.";

/// Random faults on a share of all requests, from a seeded generator so a
/// failing run can be replayed with its seed.
pub struct Chaos {
    state: u64,
    /// Faulty requests per thousand.
    pub per_mille: u64,
    /// Faults injected so far, by kind.
    pub injected: BTreeMap<&'static str, usize>,
}

impl Chaos {
    pub fn new(seed: u64, per_mille: u64) -> Chaos {
        Chaos {
            state: seed.max(1),
            per_mille,
            injected: BTreeMap::new(),
        }
    }

    /// xorshift64*: plenty for picking faults.
    pub fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick(&mut self, path: &str) -> Option<Fault> {
        if self.next() % 1000 >= self.per_mille {
            return None;
        }
        // Dify's metadata lock only concerns the (few) batch metadata calls:
        // give it a fair share of their faults.
        let pick = if path.ends_with("/documents/metadata") && self.next().is_multiple_of(3) {
            8
        } else {
            self.next() % 9
        };
        let (name, fault) = match pick {
            0 => (
                "503",
                Fault::status(503, "service_unavailable", "Service Unavailable"),
            ),
            1 => ("502", Fault::status(502, "bad_gateway", "Bad Gateway")),
            2 => ("429", Fault::too_many("0")),
            3 => (
                "403 rate limit",
                Fault::status(403, "forbidden", RATE_LIMIT_MESSAGE),
            ),
            4 => ("drop", Fault::Drop),
            5 => ("applied then 500", Fault::ApplyThen500),
            6 => ("applied then drop", Fault::ApplyThenDrop),
            7 => (
                "slow",
                Fault::ApplyThenStall(std::time::Duration::from_millis(20 + self.next() % 200)),
            ),
            _ if path.ends_with("/documents/metadata") => (
                "metadata lock",
                Fault::status(
                    400,
                    "invalid_param",
                    "Another document metadata operation is running, please wait a moment.",
                ),
            ),
            _ => (
                "500",
                Fault::status(500, "internal_server_error", "Internal Server Error"),
            ),
        };
        *self.injected.entry(name).or_default() += 1;
        Some(fault)
    }
}

pub type ArrivalHook = Box<dyn FnMut(&str) + Send>;

/// How long the server takes to answer: a real Dify parses every upload
/// before it answers, and each call crosses a network. Requests are served
/// side by side, each taking its own time.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// create-by-file, update-by-file and the document PATCH.
    pub upload: std::time::Duration,
    /// Every other call.
    pub other: std::time::Duration,
}

impl Latency {
    fn of(&self, method: &Method, path: &str) -> std::time::Duration {
        let upload = path.ends_with("/create-by-file")
            || path.ends_with("/update-by-file")
            || (method == Method::PATCH && path.contains("/documents/"));
        if upload {
            self.upload
        } else {
            self.other
        }
    }
}

pub struct FaultRule {
    pub method: Option<Method>,
    pub path_contains: String,
    pub fault: Fault,
    pub remaining: u32,
}

pub struct World {
    pub docs: BTreeMap<String, Doc>,
    /// Documents the indexing worker still works on, so that a request's
    /// tick touches those, not every document (a million documents would
    /// make a first sync quadratic).
    ticking: std::collections::BTreeSet<String>,
    /// A test had the world (it may have set a document's `ticks_left`):
    /// the next tick looks at every document once.
    rescan: bool,
    pub fields: Vec<Field>,
    pub log: Vec<Logged>,
    pub faults: Vec<FaultRule>,
    /// Indexing-status polls a new upload needs before it is completed
    /// (0: completed at once).
    pub polls_to_complete: u32,
    /// How many status requests on a document are refused with "being
    /// indexed" after each enable or disable of it (0: the index task ends
    /// at once).
    pub indexing_flag_requests: u32,
    /// How long, in time, the index task of an enable or disable holds
    /// its lock (zero: not at all). Dify 1.13.3 on an idle worker lifted
    /// it about 1.8 s after a disable; behind a queue, about 12 s.
    pub indexing_lock_for: std::time::Duration,
    /// Documents the next unfiltered listing leaves out, once each.
    pub skip_once: std::collections::HashSet<String>,
    /// Time passing, counted in requests: a document still indexing is
    /// done after this many more requests arrive, polled or not, as Dify's
    /// worker finishes whether anyone asks (0: only polls finish it).
    pub indexing_ticks: u32,
    /// Serve `PATCH /datasets/{id}/documents/{doc}`, the update route of
    /// Dify after 1.13; when false (1.13.2, the version kbsync was checked
    /// against), it answers 405 as Flask does, and only the
    /// `update-by-file` alias updates.
    pub patch_route: bool,
    /// Dify's create with `duplicate` (its default): a file named as an
    /// enabled upload document re-indexes that document and answers with
    /// its id. Off unless a test asks: the fault suites want a blind
    /// second create to show up as a duplicate, which it is beside a
    /// disabled document, or on a server configured without reuse.
    pub reuse_same_name: bool,
    /// Whether the dataset already has an indexing technique; when not,
    /// create-by-file must send one (as in Dify).
    pub dataset_has_indexing: bool,
    /// "METHOD path" of every request, logged when it arrives (`log` is
    /// written when it is answered).
    pub arrived: Vec<String>,
    pub rate_limit: Option<RateWindow>,
    pub chaos: Option<Chaos>,
    /// A proxy in front that answers some requests with their credentials
    /// repeated (not applied).
    pub echo: Vec<Echo>,
    /// None: answers at once.
    pub latency: Option<Latency>,
    /// Called with "METHOD path" as each request arrives, before it is
    /// applied: lets a test change the world mid-pass at an exact point.
    pub on_arrival: Option<ArrivalHook>,
    next_id: u64,
    /// (page, document id): someone deletes that document just before
    /// that page of a listing is served. Dify pages by offset, so every
    /// later document moves up one place and the listing skips one.
    pub delete_before_page: Option<(usize, String)>,
    /// Document ids newest first, for listing pages, and the (document
    /// count, next id) they were made at: ids are never reused, so those
    /// two change whenever the set of documents does.
    listing: Option<((usize, u64), Vec<String>)>,
    /// Bumped on every arrival and answer, for `FakeDify::wait_until`.
    changed: tokio::sync::watch::Sender<u64>,
    /// A listing that never ends: `Some(total)` makes every page of an
    /// unfiltered listing the first page again, with `has_more` and
    /// `total` as given (`Some(None)`: no `total` at all).
    pub endless_listing: Option<Option<u64>>,
    /// Bytes of `Fault::Huge` bodies the server took to send, all told.
    pub huge_sent: Arc<std::sync::atomic::AtomicU64>,
}

impl World {
    fn new() -> World {
        World {
            docs: BTreeMap::new(),
            ticking: Default::default(),
            rescan: false,
            fields: Vec::new(),
            log: Vec::new(),
            faults: Vec::new(),
            polls_to_complete: 0,
            indexing_flag_requests: 0,
            indexing_lock_for: std::time::Duration::ZERO,
            skip_once: Default::default(),
            indexing_ticks: 0,
            patch_route: false,
            reuse_same_name: false,
            dataset_has_indexing: false,
            arrived: Vec::new(),
            rate_limit: None,
            chaos: None,
            echo: Vec::new(),
            latency: None,
            on_arrival: None,
            next_id: 1,
            delete_before_page: None,
            listing: None,
            changed: tokio::sync::watch::Sender::new(0),
            endless_listing: None,
            huge_sent: Arc::default(),
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    fn next(&mut self, prefix: &str) -> String {
        let n = self.next_id;
        self.next_id += 1;
        format!("{prefix}{n:012x}")
    }

    /// One request's worth of time for the indexing worker.
    fn tick_indexing(&mut self) {
        if std::mem::take(&mut self.rescan) {
            self.ticking = self
                .docs
                .values()
                .filter(|d| d.ticks_left > 0)
                .map(|d| d.id.clone())
                .collect();
        }
        let docs = &mut self.docs;
        self.ticking.retain(|id| {
            let Some(d) = docs.get_mut(id).filter(|d| d.ticks_left > 0) else {
                return false;
            };
            d.ticks_left -= 1;
            if d.ticks_left > 0 {
                return true;
            }
            if d.indexing_status != "error" {
                d.indexing_status = "completed".into();
                d.polls_left = 0;
            }
            false
        });
    }

    /// The worker picks `id` up (its `ticks_left` was just set).
    fn indexes(&mut self, id: &str) {
        if self.docs.get(id).is_some_and(|d| d.ticks_left > 0) {
            self.ticking.insert(id.to_owned());
        }
    }

    /// Adds a document as if uploaded through Dify's UI.
    pub fn add_doc(&mut self, name: &str, content: &[u8]) -> String {
        let id = self.next("doc-");
        let position = self.next_id;
        self.docs.insert(
            id.clone(),
            Doc {
                id: id.clone(),
                name: name.into(),
                content: content.to_vec(),
                enabled: true,
                archived: false,
                indexing_status: "completed".into(),
                polls_left: 0,
                batch: String::new(),
                position,
                metadata: BTreeMap::new(),
                being_indexed: 0,
                locked_until: None,
                ticks_left: 0,
                error: None,
            },
        );
        id
    }

    pub fn doc_by_name(&self, name: &str) -> Option<&Doc> {
        self.docs.values().find(|d| d.name == name)
    }

    /// Names that occur more than once.
    pub fn duplicate_names(&self) -> Vec<String> {
        let mut seen = BTreeMap::<&str, usize>::new();
        for d in self.docs.values() {
            *seen.entry(&d.name).or_default() += 1;
        }
        seen.into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(k, _)| k.to_owned())
            .collect()
    }

    pub fn metadata_of(&self, name: &str) -> BTreeMap<String, Json> {
        self.doc_by_name(name)
            .map(|d| {
                d.metadata
                    .values()
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Requests logged since `from` whose "METHOD path" contains `needle`.
    pub fn count_since(&self, from: usize, needle: &str) -> usize {
        self.log[from..]
            .iter()
            .filter(|l| format!("{} {}", l.method, l.path).contains(needle))
            .count()
    }

    pub fn inject(
        &mut self,
        method: Option<Method>,
        path_contains: &str,
        fault: Fault,
        times: u32,
    ) {
        self.faults.push(FaultRule {
            method,
            path_contains: path_contains.into(),
            fault,
            remaining: times,
        });
    }

    fn take_fault(&mut self, method: &Method, path: &str) -> Option<Fault> {
        let rule = self.faults.iter_mut().find(|r| {
            r.remaining > 0
                && r.method.as_ref().is_none_or(|m| m == method)
                && path.contains(&r.path_contains)
        })?;
        rule.remaining -= 1;
        Some(rule.fault.clone())
    }
}

pub struct FakeDify {
    pub addr: SocketAddr,
    pub world: Arc<Mutex<World>>,
}

impl FakeDify {
    pub async fn start() -> FakeDify {
        let world = Arc::new(Mutex::new(World::new()));
        let addr = super::serve::serve(world.clone(), handle).await;
        FakeDify { addr, world }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        let mut w = self.world.lock().unwrap();
        w.rescan = true;
        w
    }

    pub fn requests(&self) -> usize {
        self.world().log.len()
    }

    /// Waits until `pred` holds, re-checking after every request the fake
    /// receives or answers; fails with `what` and the request log at the
    /// deadline.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: std::time::Duration,
        pred: impl Fn(&World) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.world().changed.subscribe();
        loop {
            {
                let w = self.world();
                if pred(&w) {
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                let w = self.world();
                let tail: Vec<String> = w
                    .log
                    .iter()
                    .rev()
                    .take(20)
                    .map(|l| format!("{} {} -> {}", l.method, l.path, l.status))
                    .collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what}; {} docs: {:?}; last requests (newest first): {tail:#?}",
                    w.docs.len(),
                    w.docs.values().map(|d| &d.name).collect::<Vec<_>>()
                );
            }
        }
    }
}

#[derive(Debug)]
struct Dropped;
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}
impl std::error::Error for Dropped {}

type Resp = Response<Full<Bytes>>;
/// What the server sends: an answer made whole, or a huge one made as it
/// goes.
type Sent = Response<Either<Full<Bytes>, Huge>>;
type Reply = Result<Sent, Dropped>;
/// name, content, the `data` JSON
type CheckedFile = (String, Vec<u8>, Option<Json>);

use super::serve::json_reply as reply;
use super::serve::{take_echo, Echo};

fn bad(status: u16, code: &str, message: &str) -> Box<Resp> {
    Box::new(error(status, code, message))
}

fn error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        json!({"status": status, "code": code, "message": message}),
    )
}

async fn handle(world: Arc<Mutex<World>>, req: Request<Incoming>) -> Reply {
    let arrived = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let logged_path = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{query}")
    };
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let headers = req.headers().clone();
    {
        let mut w = world.lock().unwrap();
        let line = format!("{method} {logged_path}");
        if let Some(hook) = w.on_arrival.as_mut() {
            hook(&line);
        }
        w.arrived.push(line);
        // Time passes for Dify's worker with every request (documents a
        // test set to finish after `ticks_left` requests).
        w.tick_indexing();
        w.bump();
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    let latency = world.lock().unwrap().latency;
    if let Some(l) = latency {
        tokio::time::sleep(l.of(&method, &path)).await;
    }

    let fault = {
        let mut w = world.lock().unwrap();
        if let Some(refusal) = w.rate_limit.as_mut().and_then(RateWindow::admit) {
            Some(refusal)
        } else {
            w.take_fault(&method, &path)
                .or_else(|| w.chaos.as_mut().and_then(|c| c.pick(&path)))
        }
    };
    let logged = |status: u16| log(&world, arrived, &method, &logged_path, status);
    let echoed = take_echo(&mut world.lock().unwrap().echo, &path, &headers);
    if let Some(answer) = echoed {
        logged(answer.status().as_u16());
        return Ok(answer.map(Either::Left));
    }
    let (response, apply_then) = match fault {
        Some(Fault::Drop) => {
            logged(0);
            return Err(Dropped);
        }
        Some(Fault::Huge {
            status,
            size,
            announce,
        }) => {
            logged(status);
            let sent = world.lock().unwrap().huge_sent.clone();
            let body = Huge::new(
                r#"{"data":[],"has_more":false,"total":0,"code":"huge","message":"padded","pad":""#,
                size,
                r#""}"#,
                announce,
                sent,
            );
            return Ok(Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Either::Right(body))
                .unwrap());
        }
        Some(Fault::Status {
            status,
            code,
            message,
            retry_after,
        }) => {
            let mut r = error(status, &code, &message);
            if let Some(ra) = retry_after {
                r.headers_mut().insert("retry-after", ra.parse().unwrap());
            }
            (r, None)
        }
        Some(Fault::StallThenApply(d)) => {
            // Like a real server, it goes on when the client hangs up.
            let (world, method, path, query) =
                (world.clone(), method.clone(), path.clone(), query.clone());
            let work = tokio::spawn(async move {
                tokio::time::sleep(d).await;
                let answer = route(
                    &world,
                    &method,
                    &path,
                    &query,
                    auth.as_deref(),
                    content_type.as_deref(),
                    body,
                )
                .await;
                world.lock().unwrap().bump();
                answer
            });
            (work.await.expect("the fake does not panic"), None)
        }
        // Applied normally; an ApplyThen* fault then spoils the answer.
        apply_then => (
            route(
                &world,
                &method,
                &path,
                &query,
                auth.as_deref(),
                content_type.as_deref(),
                body,
            )
            .await,
            apply_then,
        ),
    };
    let answer = match apply_then {
        Some(Fault::ApplyThenStall(d)) => {
            tokio::time::sleep(d).await;
            logged(response.status().as_u16());
            response
        }
        Some(Fault::ApplyThenDrop) => {
            logged(0);
            return Err(Dropped);
        }
        Some(Fault::ApplyThenWait(go)) => {
            go.notified().await;
            logged(response.status().as_u16());
            response
        }
        Some(_) => {
            logged(500);
            error(
                500,
                "internal_server_error",
                "The server encountered an internal error.",
            )
        }
        None => {
            logged(response.status().as_u16());
            response
        }
    };
    Ok(answer.map(Either::Left))
}

fn log(
    world: &Arc<Mutex<World>>,
    arrived: std::time::Instant,
    method: &Method,
    path: &str,
    status: u16,
) {
    let mut w = world.lock().unwrap();
    w.log.push(Logged {
        method: method.to_string(),
        path: path.to_owned(),
        status,
        arrived,
        answered: std::time::Instant::now(),
    });
    w.bump();
}

async fn route(
    world: &Arc<Mutex<World>>,
    method: &Method,
    path: &str,
    query: &str,
    auth: Option<&str>,
    content_type: Option<&str>,
    body: Bytes,
) -> Response<Full<Bytes>> {
    if auth != Some(&format!("Bearer {API_KEY}")) {
        return error(401, "unauthorized", "Access token is invalid");
    }
    let Some(rest) = path.strip_prefix("/v1/datasets/") else {
        return error(
            404,
            "not_found",
            "The requested URL was not found on the server.",
        );
    };
    let parts: Vec<&str> = rest.split('/').collect();
    if parts[0] != DATASET {
        return error(404, "not_found", "Dataset not found.");
    }
    let parts = &parts[1..];
    // Multipart bodies are parsed before taking the lock.
    let upload = if content_type.is_some_and(|c| c.starts_with("multipart/form-data")) {
        match parse_multipart(content_type.unwrap(), body.clone()).await {
            Ok(u) => Some(u),
            Err(r) => return *r,
        }
    } else {
        None
    };
    let mut w = world.lock().unwrap();
    match (method.clone(), parts) {
        (Method::GET, ["documents"]) => list_documents(&mut w, query),
        (Method::POST, ["document", "create-by-file"]) => create_by_file(&mut w, upload),
        (Method::POST, ["documents", "metadata"]) => batch_metadata(&mut w, &body),
        (Method::PATCH, ["documents", "status", action]) => batch_status(&mut w, action, &body),
        (Method::POST, ["documents", doc, "update-by-file"]) => update_by_file(&mut w, doc, upload),
        (Method::PATCH, ["documents", doc]) if w.patch_route => update_by_file(&mut w, doc, upload),
        (Method::PATCH, ["documents", _]) => error(
            405,
            "method_not_allowed",
            "The method is not allowed for the requested URL.",
        ),
        (Method::GET, ["documents", batch, "indexing-status"]) => indexing_status(&mut w, batch),
        (Method::DELETE, ["documents", doc]) => delete_document(&mut w, doc),
        (Method::GET, ["metadata"]) => reply(
            200,
            json!({
                "doc_metadata": w.fields.iter().map(|f| json!({
                    "id": f.id, "name": f.name, "type": f.kind,
                    "count": w.docs.values().filter(|d| d.metadata.contains_key(&f.id)).count(),
                })).collect::<Vec<_>>(),
                "built_in_field_enabled": false,
            }),
        ),
        (Method::POST, ["metadata"]) => create_field(&mut w, &body),
        _ => error(
            404,
            "not_found",
            "The requested URL was not found on the server.",
        ),
    }
}

struct Upload {
    file: Option<(String, Vec<u8>)>,
    files: usize,
    data: Option<Json>,
}

async fn parse_multipart(content_type: &str, body: Bytes) -> Result<Upload, Box<Resp>> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|_| bad(400, "invalid_param", "Invalid multipart body."))?;
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut up = Upload {
        file: None,
        files: 0,
        data: None,
    };
    while let Some(field) = mp
        .next_field()
        .await
        .map_err(|_| bad(400, "invalid_param", "Invalid multipart body."))?
    {
        match field.name() {
            Some("file") => {
                up.files += 1;
                let name = field.file_name().unwrap_or("").to_owned();
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|_| bad(400, "invalid_param", "Invalid multipart body."))?;
                up.file = Some((name, bytes.to_vec()));
            }
            Some("data") => {
                let text = field
                    .text()
                    .await
                    .map_err(|_| bad(400, "invalid_param", "Invalid multipart body."))?;
                up.data = Some(
                    serde_json::from_str(&text)
                        .map_err(|_| bad(400, "invalid_param", "data is not valid JSON."))?,
                );
            }
            _ => {}
        }
    }
    Ok(up)
}

/// Checks shared by create and update; returns the file on success. Too
/// large and unsupported are ValueErrors in Dify's file service: create
/// answers them 400 `invalid_param` with an empty message, only update maps
/// them to 413 / 415.
fn check_file(upload: Option<Upload>, create: bool) -> Result<CheckedFile, Box<Resp>> {
    let Some(up) = upload else {
        return Err(bad(400, "no_file_uploaded", "Please upload your file."));
    };
    if up.files > 1 {
        return Err(bad(400, "too_many_files", "Only one file is allowed."));
    }
    let Some((name, content)) = up.file else {
        return Err(bad(400, "no_file_uploaded", "Please upload your file."));
    };
    if name.is_empty() {
        return Err(bad(
            400,
            "filename_not_exists_error",
            "The specified filename does not exist.",
        ));
    }
    if name.contains(['/', '\\', ':', '*', '?', '"', '<', '>', '|']) {
        return Err(bad(
            400,
            "invalid_param",
            "Filename contains invalid characters",
        ));
    }
    if content.len() > MAX_UPLOAD {
        return Err(if create {
            bad(400, "invalid_param", "")
        } else {
            bad(413, "file_too_large", "File size exceeded.")
        });
    }
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    if !ALLOWED_EXTENSIONS.contains(&ext.as_str()) {
        return Err(if create {
            bad(400, "invalid_param", "")
        } else {
            bad(415, "unsupported_file_type", "File type not allowed.")
        });
    }
    Ok((name, content, up.data))
}

fn new_indexing(w: &mut World) -> (String, u32, String) {
    let batch = w.next("batch-");
    let polls = w.polls_to_complete;
    let status = if polls == 0 { "completed" } else { "indexing" };
    (status.to_owned(), polls, batch)
}

fn create_by_file(w: &mut World, upload: Option<Upload>) -> Response<Full<Bytes>> {
    let (name, content, data) = match check_file(upload, true) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let data = data.unwrap_or(Json::Null);
    if !w.dataset_has_indexing {
        if data
            .get("indexing_technique")
            .and_then(Json::as_str)
            .is_none()
        {
            return error(400, "invalid_param", "indexing_technique is required.");
        }
        if data.get("process_rule").is_none() {
            return error(400, "invalid_param", "process_rule is required.");
        }
    }
    let reused = w
        .reuse_same_name
        .then(|| w.docs.values().find(|d| d.enabled && d.name == name))
        .flatten()
        .map(|d| d.id.clone());
    if let Some(id) = reused {
        let (indexing_status, polls_left, batch) = new_indexing(w);
        let ticks = w.indexing_ticks;
        let fields = w.fields.clone();
        let doc = w.docs.get_mut(&id).unwrap();
        doc.content = content;
        doc.indexing_status = indexing_status;
        doc.polls_left = polls_left;
        doc.ticks_left = if polls_left > 0 { ticks } else { 0 };
        doc.batch = batch.clone();
        let body = json!({"document": doc.to_json(&fields), "batch": batch});
        w.indexes(&id);
        return reply(200, body);
    }
    let id = w.next("doc-");
    let (indexing_status, polls_left, batch) = new_indexing(w);
    // Dify gives a new document the dataset's highest position + 1; a
    // counter gives the same order, as ids are made in it too.
    let position = w.next_id;
    let doc = Doc {
        id: id.clone(),
        name,
        content,
        enabled: true,
        archived: false,
        indexing_status,
        polls_left,
        batch: batch.clone(),
        position,
        metadata: BTreeMap::new(),
        being_indexed: 0,
        locked_until: None,
        ticks_left: if polls_left > 0 { w.indexing_ticks } else { 0 },
        error: None,
    };
    let body = json!({"document": doc.to_json(&w.fields), "batch": batch});
    w.docs.insert(id.clone(), doc);
    w.indexes(&id);
    reply(200, body)
}

fn update_by_file(w: &mut World, doc_id: &str, upload: Option<Upload>) -> Response<Full<Bytes>> {
    let Some(doc) = w.docs.get(doc_id) else {
        return error(404, "not_found", "Document not found.");
    };
    // Archived, disabled, queuing, indexing or errored: Dify's update wants
    // `display_status == "available"` and says only this (a 403 comes for
    // DELETE of an archived document, not here).
    if doc.display_status() != "available" {
        return error(400, "invalid_param", "Document is not available");
    }
    let (name, content, _) = match check_file(upload, false) {
        Ok(f) => f,
        Err(r) => return *r,
    };
    let (indexing_status, polls_left, batch) = new_indexing(w);
    let ticks = w.indexing_ticks;
    let fields = w.fields.clone();
    let doc = w.docs.get_mut(doc_id).unwrap();
    doc.name = name;
    doc.content = content;
    doc.indexing_status = indexing_status;
    doc.polls_left = polls_left;
    doc.ticks_left = if polls_left > 0 { ticks } else { 0 };
    doc.batch = batch.clone();
    let body = json!({"document": doc.to_json(&fields), "batch": batch});
    w.indexes(doc_id);
    reply(200, body)
}

fn delete_document(w: &mut World, doc_id: &str) -> Response<Full<Bytes>> {
    match w.docs.get(doc_id) {
        None => error(404, "not_found", "Document Not Exists."),
        Some(d) if d.archived => error(
            403,
            "archived_document_immutable",
            "The archived document is not editable.",
        ),
        Some(_) => {
            w.docs.remove(doc_id);
            Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Full::new(Bytes::new()))
                .unwrap()
        }
    }
}

fn list_documents(w: &mut World, query: &str) -> Response<Full<Bytes>> {
    let q: BTreeMap<String, String> = url_pairs(query);
    let page: usize = q
        .get("page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let limit: usize = q
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    if w.delete_before_page
        .as_ref()
        .is_some_and(|(p, _)| *p == page)
    {
        let (_, id) = w.delete_before_page.take().expect("checked");
        w.docs.remove(&id);
    }
    // Newest first, as Dify orders by position descending. Ids are made
    // in position order, so the map's reverse order is that order. The
    // order is kept between pages: a bench lists 100,000 documents page by
    // page and must time kbsync, not the fake.
    let at = (w.docs.len(), w.next_id);
    if w.listing.as_ref().is_none_or(|(made, _)| *made != at) {
        w.listing = Some((at, w.docs.keys().rev().cloned().collect()));
    }
    let order = &w.listing.as_ref().expect("made above").1;
    let wanted = |d: &&Doc| {
        q.get("keyword").is_none_or(|k| d.name.contains(k.as_str()))
            && q.get("status").is_none_or(|s| d.display_status() == s)
    };
    let filtered = q.contains_key("keyword") || q.contains_key("status");
    let (total, data): (usize, Vec<Json>) = if filtered {
        let all: Vec<&Doc> = order.iter().map(|id| &w.docs[id]).filter(wanted).collect();
        let page_docs = all.iter().skip((page - 1) * limit).take(limit);
        (all.len(), page_docs.map(|d| d.to_json(&w.fields)).collect())
    } else if let Some(total) = w.endless_listing {
        let ids = order.iter().take(limit);
        let data: Vec<Json> = ids.map(|id| w.docs[id].to_json(&w.fields)).collect();
        let mut answer = json!({"data": data, "has_more": true, "limit": limit, "page": page});
        if let Some(t) = total {
            answer["total"] = json!(t);
        }
        return reply(200, answer);
    } else {
        let total = order.len();
        let ids: Vec<String> = order
            .iter()
            .skip((page - 1) * limit)
            .take(limit)
            .cloned()
            .collect();
        // A listing that misses a document (a page read while another
        // moved the order): a later listing has it again.
        let ids: Vec<String> = ids
            .into_iter()
            .filter(|id| !w.skip_once.remove(id))
            .collect();
        (
            total,
            ids.iter().map(|id| w.docs[id].to_json(&w.fields)).collect(),
        )
    };
    reply(
        200,
        // Dify's has_more is only "this page is full" (len(items) == limit).
        json!({"data": data, "has_more": data.len() == limit, "limit": limit, "total": total, "page": page}),
    )
}

fn url_pairs(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn batch_metadata(w: &mut World, body: &[u8]) -> Response<Full<Bytes>> {
    let Ok(v) = serde_json::from_slice::<Json>(body) else {
        return error(400, "invalid_param", "Invalid JSON body.");
    };
    let Some(ops) = v.get("operation_data").and_then(Json::as_array) else {
        return error(400, "invalid_param", "operation_data is required.");
    };
    // Validate everything first: Dify fails the whole request.
    for op in ops {
        let Some(id) = op.get("document_id").and_then(Json::as_str) else {
            return error(400, "invalid_param", "document_id is required.");
        };
        if !w.docs.contains_key(id) {
            return error(400, "invalid_param", "Document not found.");
        }
        let Some(list) = op.get("metadata_list").and_then(Json::as_array) else {
            return error(400, "invalid_param", "metadata_list is required.");
        };
        for m in list {
            let fid = m.get("id").and_then(Json::as_str).unwrap_or("");
            let Some(field) = w.fields.iter().find(|f| f.id == fid) else {
                return error(400, "invalid_param", "Metadata not found.");
            };
            if m.get("name").and_then(Json::as_str) != Some(field.name.as_str()) {
                return error(400, "invalid_param", "Metadata name does not match its id.");
            }
            let value = m.get("value").unwrap_or(&Json::Null);
            let ok = match field.kind.as_str() {
                "string" => value.is_string() || value.is_null(),
                _ => value.is_number() || value.is_null(),
            };
            if !ok {
                return error(400, "invalid_param", "Invalid metadata value type.");
            }
        }
    }
    for op in ops {
        let id = op["document_id"].as_str().unwrap();
        let partial = op
            .get("partial_update")
            .and_then(Json::as_bool)
            .unwrap_or(false);
        let doc = w.docs.get_mut(id).unwrap();
        if !partial {
            doc.metadata.clear();
        }
        for m in op["metadata_list"].as_array().unwrap() {
            let fid = m["id"].as_str().unwrap().to_owned();
            let name = m["name"].as_str().unwrap().to_owned();
            doc.metadata
                .insert(fid, (name, m.get("value").cloned().unwrap_or(Json::Null)));
        }
    }
    reply(200, json!({"result": "success"}))
}

fn batch_status(w: &mut World, action: &str, body: &[u8]) -> Response<Full<Bytes>> {
    if !["enable", "disable", "archive", "un_archive"].contains(&action) {
        return error(400, "invalid_action", "Invalid action.");
    }
    let Some(ids) = serde_json::from_slice::<Json>(body)
        .ok()
        .and_then(|v| v.get("document_ids").and_then(Json::as_array).cloned())
    else {
        return error(400, "invalid_param", "document_ids is required.");
    };
    let ids: Vec<String> = ids
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    // The whole batch fails on the first document that refuses, as in
    // Dify's batch_update_document_status.
    for id in &ids {
        if let Some(d) = w.docs.get_mut(id) {
            let held = d
                .locked_until
                .is_some_and(|t| std::time::Instant::now() < t);
            if d.being_indexed > 0 || held {
                d.being_indexed = d.being_indexed.saturating_sub(1);
                return error(
                    400,
                    "invalid_action",
                    &format!(
                        "Document: {} is being indexed, please try again later",
                        d.name
                    ),
                );
            }
            if action == "disable" && d.indexing_status != "completed" {
                return error(
                    400,
                    "invalid_action",
                    &format!("Document: {} is not completed.", d.name),
                );
            }
        }
    }
    let flag = w.indexing_flag_requests;
    let lock =
        (!w.indexing_lock_for.is_zero()).then(|| std::time::Instant::now() + w.indexing_lock_for);
    for id in &ids {
        // Unknown ids are skipped, as Dify does.
        if let Some(d) = w.docs.get_mut(id) {
            match action {
                "enable" if !d.enabled => {
                    d.enabled = true;
                    d.being_indexed = flag;
                    d.locked_until = lock;
                }
                "disable" if d.enabled => {
                    d.enabled = false;
                    d.being_indexed = flag;
                    d.locked_until = lock;
                }
                "archive" => d.archived = true,
                "un_archive" => d.archived = false,
                _ => {}
            }
        }
    }
    reply(200, json!({"result": "success"}))
}

fn indexing_status(w: &mut World, batch: &str) -> Response<Full<Bytes>> {
    let mut data = Vec::new();
    for d in w.docs.values_mut().filter(|d| d.batch == batch) {
        if d.polls_left > 0 {
            d.polls_left -= 1;
            if d.polls_left == 0 {
                d.indexing_status = "completed".into();
            }
        }
        data.push(json!({
            "id": d.id,
            "indexing_status": d.indexing_status,
            "processing_started_at": 1_741_267_200,
            "parsing_completed_at": null,
            "cleaning_completed_at": null,
            "splitting_completed_at": null,
            "completed_at": null,
            "paused_at": null,
            "error": d.error,
            "stopped_at": null,
            "completed_segments": 0,
            "total_segments": 0,
        }));
    }
    if data.is_empty() {
        return error(404, "not_found", "Documents not found.");
    }
    reply(200, json!({"data": data}))
}

fn create_field(w: &mut World, body: &[u8]) -> Response<Full<Bytes>> {
    let Ok(v) = serde_json::from_slice::<Json>(body) else {
        return error(400, "invalid_param", "Invalid JSON body.");
    };
    let (Some(kind), Some(name)) = (
        v.get("type").and_then(Json::as_str),
        v.get("name").and_then(Json::as_str),
    ) else {
        return error(400, "invalid_param", "type and name are required.");
    };
    if !["string", "number", "time"].contains(&kind) {
        return error(400, "invalid_param", "Invalid metadata type.");
    }
    if name.chars().count() > 255 {
        return error(
            400,
            "invalid_param",
            "Metadata name cannot exceed 255 characters.",
        );
    }
    if [
        "document_name",
        "uploader",
        "upload_date",
        "last_update_date",
        "source",
    ]
    .contains(&name)
    {
        return error(
            400,
            "invalid_param",
            "Metadata name already exists in Built-in fields.",
        );
    }
    if w.fields.iter().any(|f| f.name == name) {
        return error(400, "invalid_param", "Metadata name already exists.");
    }
    let id = w.next("field-");
    w.fields.push(Field {
        id: id.clone(),
        name: name.to_owned(),
        kind: kind.to_owned(),
    });
    reply(201, json!({"id": id, "name": name, "type": kind}))
}
