//! A fake Open WebUI knowledge/files API, in-process on 127.0.0.1:0,
//! answering as the real Open WebUI 0.12.4 server did request by request in
//! ../shared/specs/openwebui/NOTES.md: API-key auth and its three 401
//! texts; uploads that answer 200 `pending` at once and only later end
//! `completed` or `failed` (empty text, images, duplicate text in the KB,
//! a broken embedding backend), linking themselves to the upload's
//! `knowledge_id` only when the key may write that KB; the KB file listing
//! (30 a page, `limit` for admins only, directories); file/add, file/remove
//! (deletes the file by default), sync/cleanup and dirs/create, each with
//! the status codes the real server uses for it (they differ by endpoint,
//! NOTES §7) and the doubled "400: " prefixes.
//!
//! Time is counted in requests, not seconds, so tests need no sleeps: every
//! request moves every file still being processed one step on.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, Response};
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};

use super::serve::json_reply;

pub const API_KEY: &str = "sk-0penwebui7e5t0000000000000000a1";
/// The KB kbsync mirrors into; the key's user can read and write it.
pub const KNOWLEDGE: &str = "6f1d0c3e-8a2b-4c1d-9e0f-0000000000a1";
/// A KB shared with the key's user for reading only.
pub const READ_ONLY: &str = "6f1d0c3e-8a2b-4c1d-9e0f-0000000000b2";

const USER_ID: &str = "3b9d0a1e-7c44-4f2e-9a61-0000000000c3";
const OTHER_USER: &str = "3b9d0a1e-7c44-4f2e-9a61-0000000000d4";
/// When the two KBs were made (epoch seconds, as the server counts).
const KB_TIME: i64 = 1_796_455_292;

const NOT_FOUND: &str = "We could not find what you're looking for :/";
const ACCESS_PROHIBITED: &str = "You do not have permission to access this resource. Please contact your administrator for assistance.";
const EMPTY_CONTENT: &str =
    "The content provided is empty. Please ensure that there is text or data present before proceeding.";
const DUPLICATE_CONTENT: &str =
    "Duplicate content detected. Please provide unique content to proceed.";

type Reply = Response<Full<Bytes>>;

#[derive(Debug, Clone)]
pub struct File {
    pub id: String,
    pub filename: String,
    pub content: Vec<u8>,
    pub content_type: String,
    /// The upload's `metadata` object verbatim (the server's `meta.data`).
    pub meta_data: Map<String, Json>,
    /// `meta.file_hash`: the client's value if it sent one, else SHA-256
    /// hex of the bytes.
    pub file_hash: String,
    /// "pending" | "processing" | "completed" | "failed".
    pub status: String,
    pub error: Option<String>,
    /// The top-level `hash`: SHA-256 of the extracted text; None until
    /// completed, and after a failure.
    pub text_hash: Option<String>,
    /// The KB it is linked to (one at most here: only KNOWLEDGE is
    /// writable).
    pub knowledge: Option<String>,
    pub directory_id: Option<String>,
    pub created_at: i64,
    updated_at: i64,
    /// Requests left before processing ends. 0 while still `pending`: an
    /// upload with `process=false`, which the server never processes.
    steps_left: u32,
    /// The upload's `metadata.knowledge_id`.
    wanted_kb: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Dir {
    pub id: String,
    pub knowledge: String,
    pub parent_id: Option<String>,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
}

/// A way for a write to go wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status without applying the request.
    Refuse(u16),
    /// Apply the request, then answer 500: the answer is lost.
    ApplyThen500,
}

#[derive(Default)]
pub struct World {
    pub files: BTreeMap<String, File>,
    pub dirs: BTreeMap<String, Dir>,
    pub log: Vec<Logged>,
    /// Consumed in order by the next uploads.
    pub upload_faults: Vec<Fault>,
    /// Consumed in order by the next other writes (sync/cleanup, file/add,
    /// file/remove, DELETE /files/{id}, dirs/create).
    pub write_faults: Vec<Fault>,
    /// File ids the next KB listing leaves out, once each (a listing that
    /// races with writes).
    pub skip_once: HashSet<String>,
    /// Requests a new upload takes to end (start() sets 2: one poll sees
    /// `processing`, the next the outcome).
    pub processing_steps: u32,
    /// The key's user is an admin: `limit` is honoured on listings
    /// (others always get 30).
    pub admin: bool,
    /// Every upload ends `failed` with this error (an embedding backend
    /// that is down).
    pub uploads_fail_with: Option<String>,
    /// The next uploads answered 400 "[ERROR: Error uploading file]"
    /// without a file made, as a real server with its SQLite database
    /// locked did under 50 uploads at once.
    pub busy_uploads: u32,
    /// The next files to complete lose their text: completed and linked,
    /// with the hash of empty text (seen under the same load).
    pub lose_text: u32,
    next_id: u64,
}

impl World {
    /// Files linked to KNOWLEDGE, by created_at then id.
    pub fn linked(&self) -> Vec<&File> {
        let mut v: Vec<&File> = self
            .files
            .values()
            .filter(|f| f.knowledge.as_deref() == Some(KNOWLEDGE))
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        v
    }

    /// Linked files whose `kbsync_path` metadata is `key`.
    pub fn by_path(&self, key: &str) -> Vec<&File> {
        self.linked()
            .into_iter()
            .filter(|f| f.meta_data.get("kbsync_path").and_then(Json::as_str) == Some(key))
            .collect()
    }

    /// A file uploaded and added by hand in the web UI: completed, linked
    /// to KNOWLEDGE at the root. Returns its id.
    pub fn add_file(&mut self, key: &str, text: &str) -> String {
        let id = self.new_id();
        let filename = key.rsplit('/').next().unwrap_or(key).to_owned();
        let content_type = if filename.ends_with(".md") {
            "text/markdown"
        } else {
            "text/plain"
        };
        let mut meta_data = Map::new();
        meta_data.insert("kbsync_path".into(), json!(key));
        let now = now();
        self.files.insert(
            id.clone(),
            File {
                id: id.clone(),
                filename,
                content: text.as_bytes().to_vec(),
                content_type: content_type.into(),
                meta_data,
                file_hash: sha256_hex(text.as_bytes()),
                status: "completed".into(),
                error: None,
                text_hash: Some(sha256_hex(text.as_bytes())),
                knowledge: Some(KNOWLEDGE.into()),
                directory_id: None,
                created_at: now,
                updated_at: now,
                steps_left: 0,
                wanted_kb: None,
            },
        );
        id
    }

    /// A file deleted by hand (its links go with it).
    pub fn remove_file(&mut self, id: &str) -> bool {
        self.files.remove(id).is_some()
    }

    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.log
            .iter()
            .filter(|l| l.method == method && l.path.contains(path_contains))
            .count()
    }

    /// "a/b" for the directory `b` under `a`; "" for an unknown id.
    pub fn dir_path(&self, id: &str) -> String {
        let mut names = Vec::new();
        let mut at = Some(id.to_owned());
        while let Some(d) = at.and_then(|i| self.dirs.get(&i)) {
            names.push(d.name.clone());
            at = d.parent_id.clone();
            if names.len() > self.dirs.len() {
                break; // a loop made by hand
            }
        }
        names.reverse();
        names.join("/")
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("0e5f7c2a-91d4-4b6e-8c3f-{:012x}", self.next_id)
    }

    /// One request's worth of background processing.
    fn advance(&mut self) {
        let busy: Vec<String> = self
            .files
            .values()
            .filter(|f| f.steps_left > 0 && (f.status == "pending" || f.status == "processing"))
            .map(|f| f.id.clone())
            .collect();
        for id in busy {
            let f = self.files.get_mut(&id).unwrap();
            f.steps_left -= 1;
            if f.steps_left > 0 {
                f.status = "processing".into();
            } else {
                self.finish(&id);
            }
        }
    }

    /// The end of processing, in the order the server checks (NOTES §3.4).
    fn finish(&mut self, id: &str) {
        let f = &self.files[id];
        let text = String::from_utf8_lossy(&f.content);
        let hash = sha256_hex(text.as_bytes());
        let outcome: Result<Option<Option<String>>, String> =
            if let Some(e) = &self.uploads_fail_with {
                Err(e.clone())
            } else if text.trim().is_empty() {
                Err(EMPTY_CONTENT.into())
            } else if f.content_type.starts_with("image/") {
                Err(format!(
                    "File type {} is not supported for processing",
                    f.content_type
                ))
            } else if f.wanted_kb.as_deref() != Some(KNOWLEDGE) {
                // No KB, or one the key cannot write: silently not linked.
                Ok(None)
            } else if self.duplicate(KNOWLEDGE, &hash, id) {
                Err(DUPLICATE_CONTENT.into())
            } else {
                let dir = f.meta_data.get("directory_id").and_then(Json::as_str);
                Ok(Some(self.dir_in(KNOWLEDGE, dir)))
            };
        let f = self.files.get_mut(id).unwrap();
        f.steps_left = 0;
        f.updated_at = now();
        match outcome {
            Err(e) => {
                f.status = "failed".into();
                f.error = Some(e);
                f.text_hash = None;
            }
            Ok(link) => {
                f.status = "completed".into();
                f.text_hash = Some(hash);
                if self.lose_text > 0 {
                    self.lose_text -= 1;
                    f.text_hash = Some(sha256_hex(b""));
                }
                if let Some(dir) = link {
                    f.knowledge = Some(KNOWLEDGE.into());
                    f.directory_id = dir;
                }
            }
        }
    }

    /// Another file linked to `kb` has this text hash.
    fn duplicate(&self, kb: &str, hash: &str, except: &str) -> bool {
        self.files.values().any(|f| {
            f.id != except
                && f.knowledge.as_deref() == Some(kb)
                && f.text_hash.as_deref() == Some(hash)
        })
    }

    /// `dir` if it is a directory of `kb`, else None (the root).
    fn dir_in(&self, kb: &str, dir: Option<&str>) -> Option<String> {
        dir.filter(|d| self.dirs.get(*d).is_some_and(|d| d.knowledge == kb))
            .map(str::to_owned)
    }

    fn linked_to(&self, kb: &str) -> Vec<&File> {
        let mut v: Vec<&File> = self
            .files
            .values()
            .filter(|f| f.knowledge.as_deref() == Some(kb))
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        v
    }
}

pub struct FakeOpenWebUi {
    pub addr: SocketAddr,
    pub world: Arc<Mutex<World>>,
}

impl FakeOpenWebUi {
    pub async fn start() -> FakeOpenWebUi {
        let world = World {
            processing_steps: 2,
            admin: true,
            ..World::default()
        };
        let world = Arc::new(Mutex::new(world));
        let addr = super::serve::serve(world.clone(), handle).await;
        FakeOpenWebUi { addr, world }
    }

    /// The server's root; the client adds /api/v1.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn detail(status: u16, text: &str) -> Reply {
    json_reply(status, json!({ "detail": text }))
}

/// FastAPI's validation error: 422 with the list of problems.
fn invalid(errors: Vec<Json>) -> Reply {
    json_reply(422, json!({ "detail": errors }))
}

fn missing(loc: Json, input: Json) -> Json {
    json!({"type": "missing", "loc": loc, "msg": "Field required", "input": input})
}

/// What an unhandled exception looks like behind uvicorn.
fn internal_error() -> Reply {
    Response::builder()
        .status(500)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(b"Internal Server Error")))
        .unwrap()
}

fn refused(status: u16) -> Reply {
    let reason = hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    detail(status, reason)
}

enum Route {
    Version,
    Upload,
    Status(String),
    GetFile(String),
    Content(String),
    DeleteFile(String),
    Kb(String),
    KbFiles(String),
    KbPending(String),
    FileAdd(String),
    FileRemove(String),
    Cleanup(String),
    DirCreate(String),
    Diff(String),
}

fn parse_route(method: &Method, path: &str) -> Option<Route> {
    if path == "/api/version" && method == Method::GET {
        return Some(Route::Version);
    }
    let parts: Vec<&str> = path.strip_prefix("/api/v1/")?.split('/').collect();
    if parts != ["files", ""] && parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let s = |p: &&str| p.to_string();
    Some(match (method.as_str(), parts.as_slice()) {
        ("POST", ["files", ""]) => Route::Upload,
        ("GET", ["files", f, "process", "status"]) => Route::Status(s(f)),
        ("GET", ["files", f]) => Route::GetFile(s(f)),
        ("GET", ["files", f, "content"]) => Route::Content(s(f)),
        ("DELETE", ["files", f]) => Route::DeleteFile(s(f)),
        ("GET", ["knowledge", k]) => Route::Kb(s(k)),
        ("GET", ["knowledge", k, "files"]) => Route::KbFiles(s(k)),
        ("GET", ["knowledge", k, "files", "pending"]) => Route::KbPending(s(k)),
        ("POST", ["knowledge", k, "file", "add"]) => Route::FileAdd(s(k)),
        ("POST", ["knowledge", k, "file", "remove"]) => Route::FileRemove(s(k)),
        ("POST", ["knowledge", k, "sync", "cleanup"]) => Route::Cleanup(s(k)),
        ("POST", ["knowledge", k, "sync", "diff"]) => Route::Diff(s(k)),
        ("POST", ["knowledge", k, "dirs", "create"]) => Route::DirCreate(s(k)),
        _ => return None,
    })
}

struct Upload {
    /// (basename, the part's Content-Type or "", bytes)
    file: Option<(String, String, Vec<u8>)>,
    metadata: Option<String>,
}

async fn parse_upload(content_type: Option<&str>, body: Bytes) -> Upload {
    let mut up = Upload {
        file: None,
        metadata: None,
    };
    let Some(boundary) = content_type.and_then(|c| multer::parse_boundary(c).ok()) else {
        return up;
    };
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    while let Ok(Some(field)) = mp.next_field().await {
        match field.name() {
            Some("file") => {
                // os.path.basename: only '/' separates.
                let name = field.file_name().unwrap_or("");
                let name = name.rsplit('/').next().unwrap_or(name).to_owned();
                let ctype = field
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                if let Ok(bytes) = field.bytes().await {
                    up.file = Some((name, ctype, bytes.to_vec()));
                }
            }
            Some("metadata") => up.metadata = field.text().await.ok(),
            _ => {}
        }
    }
    up
}

async fn handle(
    world: Arc<Mutex<World>>,
    req: Request<Incoming>,
) -> Result<Reply, std::convert::Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let headers = req.headers().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let route = parse_route(&method, &path);
    let upload = match route {
        Some(Route::Upload) => {
            let ctype = headers.get("content-type").and_then(|v| v.to_str().ok());
            Some(parse_upload(ctype, body.clone()).await)
        }
        _ => None,
    };
    let mut w = world.lock().unwrap();
    w.advance();
    let resp = match route {
        Some(route) => answer(&mut w, route, &query, &headers, &body, upload),
        None => {
            redirect(&method, &path, &query, &headers).unwrap_or_else(|| detail(404, "Not Found"))
        }
    };
    w.log.push(Logged {
        method: method.to_string(),
        path,
        query,
        status: resp.status().as_u16(),
    });
    Ok(resp)
}

/// Starlette's redirect_slashes: the path with or without its trailing
/// slash names a route → 307 there.
fn redirect(method: &Method, path: &str, query: &str, headers: &HeaderMap) -> Option<Reply> {
    let other = match path.strip_suffix('/') {
        Some(p) => p.to_owned(),
        None => format!("{path}/"),
    };
    parse_route(method, &other)?;
    let host = headers.get("host").and_then(|v| v.to_str().ok())?;
    let q = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let resp = Response::builder()
        .status(307)
        .header("location", format!("http://{host}{other}{q}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    Some(resp)
}

/// Who the request is (NOTES §2): Ok for the one valid key.
fn authenticate(headers: &HeaderMap) -> Result<(), Box<Reply>> {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let bearer = header("authorization").and_then(|a| a.strip_prefix("Bearer "));
    let Some(token) = bearer.or_else(|| header("x-api-key")) else {
        return Err(Box::new(detail(401, "Not authenticated")));
    };
    if token == API_KEY {
        Ok(())
    } else if token.starts_with("sk-") {
        Err(Box::new(detail(
            401,
            "Your session has expired or the token is invalid. Please sign in again.",
        )))
    } else {
        Err(Box::new(detail(401, "401 Unauthorized")))
    }
}

fn answer(
    w: &mut World,
    route: Route,
    query: &str,
    headers: &HeaderMap,
    body: &Bytes,
    upload: Option<Upload>,
) -> Reply {
    if let Route::Version = route {
        return json_reply(200, json!({"version": "0.12.4", "deployment_id": ""}));
    }
    if let Err(refusal) = authenticate(headers) {
        return *refusal;
    }
    let faults = match route {
        Route::Upload => Some(&mut w.upload_faults),
        Route::FileAdd(_)
        | Route::FileRemove(_)
        | Route::Cleanup(_)
        | Route::DirCreate(_)
        | Route::DeleteFile(_) => Some(&mut w.write_faults),
        _ => None,
    };
    let fault = faults.and_then(|f| (!f.is_empty()).then(|| f.remove(0)));
    if let Some(Fault::Refuse(status)) = fault {
        return refused(status);
    }
    let resp = match route {
        Route::Version => unreachable!(),
        Route::Upload => upload_file(w, query, upload.expect("parsed above")),
        Route::Status(id) => match w.files.get(&id) {
            Some(f) => json_reply(200, json!({ "status": f.status })),
            None => detail(404, NOT_FOUND),
        },
        Route::GetFile(id) => match w.files.get(&id) {
            Some(f) => json_reply(200, file_record(f)),
            None => detail(404, NOT_FOUND),
        },
        Route::Content(id) => match w.files.get(&id) {
            Some(f) => Response::builder()
                .status(200)
                .header("content-type", non_empty(&f.content_type))
                .body(Full::new(Bytes::from(f.content.clone())))
                .unwrap(),
            None => detail(404, NOT_FOUND),
        },
        Route::DeleteFile(id) => match w.files.remove(&id) {
            Some(_) => json_reply(200, json!({"message": "File deleted successfully"})),
            None => detail(404, NOT_FOUND),
        },
        Route::Kb(kb) => match kb_json(&kb, None) {
            Some(v) => json_reply(200, v),
            None => detail(404, NOT_FOUND),
        },
        Route::KbFiles(kb) => list_files(w, &kb, query),
        Route::KbPending(kb) => pending(w, &kb),
        Route::FileAdd(kb) => file_add(w, &kb, body),
        Route::FileRemove(kb) => file_remove(w, &kb, query, body),
        Route::Cleanup(kb) => cleanup(w, &kb, body),
        Route::DirCreate(kb) => dir_create(w, &kb, body),
        Route::Diff(_) => detail(501, "sync/diff is not faked: kbsync does not use it"),
    };
    if fault == Some(Fault::ApplyThen500) {
        return internal_error();
    }
    resp
}

/// `GET knowledge/{id}/files/pending`: a plain array of the files
/// uploaded naming this knowledge base that are still being processed
/// (failed ones are not listed, linked ones are in the listing).
fn pending(w: &World, kb: &str) -> Reply {
    if kb_json(kb, None).is_none() {
        return detail(404, NOT_FOUND);
    }
    let files: Vec<Json> = w
        .files
        .values()
        .filter(|f| f.wanted_kb.as_deref() == Some(kb) && f.knowledge.is_none())
        .filter(|f| f.status == "pending" || f.status == "processing")
        .map(file_record)
        .collect();
    json_reply(200, Json::Array(files))
}

fn non_empty(content_type: &str) -> &str {
    if content_type.is_empty() {
        "application/octet-stream"
    } else {
        content_type
    }
}

fn params(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A FastAPI bool query parameter; anything it would not read as false
/// counts as `default`.
fn flag(query: &str, name: &str, default: bool) -> bool {
    let ps = params(query);
    match param(&ps, name).map(str::to_ascii_lowercase).as_deref() {
        Some("false" | "0" | "no" | "off" | "f" | "n") => false,
        Some("true" | "1" | "yes" | "on" | "t" | "y") => true,
        _ => default,
    }
}

fn upload_file(w: &mut World, query: &str, up: Upload) -> Reply {
    let Some((name, content_type, content)) = up.file else {
        return invalid(vec![missing(json!(["body", "file"]), Json::Null)]);
    };
    let meta_data = match up.metadata.as_deref().filter(|m| !m.is_empty()) {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Json>(text) {
            Ok(Json::Object(m)) => m,
            Ok(Json::Null) => Map::new(),
            _ => return detail(400, "[ERROR: Invalid metadata format]"),
        },
    };
    if w.busy_uploads > 0 {
        w.busy_uploads -= 1;
        return detail(400, "[ERROR: Error uploading file]");
    }
    if content.is_empty() {
        return detail(400, EMPTY_CONTENT);
    }
    let process = flag(query, "process", true);
    let id = w.new_id();
    let file_hash = match meta_data.get("file_hash").and_then(Json::as_str) {
        Some(h) => h.to_owned(),
        None => sha256_hex(&content),
    };
    let now = now();
    let file = File {
        id: id.clone(),
        filename: name,
        content,
        content_type,
        wanted_kb: meta_data
            .get("knowledge_id")
            .and_then(Json::as_str)
            .map(str::to_owned),
        meta_data,
        file_hash,
        status: "pending".into(),
        error: None,
        text_hash: None,
        knowledge: None,
        directory_id: None,
        created_at: now,
        updated_at: now,
        steps_left: if process { w.processing_steps } else { 0 },
    };
    // The answer is a snapshot taken before processing, whatever it did.
    let mut answer = json!({
        "id": id,
        "user_id": USER_ID,
        "hash": null,
        "filename": file.filename,
        "data": if process { json!({"status": "pending"}) } else { json!({}) },
        "meta": {
            "name": file.filename,
            "content_type": ctype_json(&file.content_type),
            "size": file.content.len(),
            "file_hash": file.file_hash,
            "data": file.meta_data,
        },
        "created_at": now,
        "updated_at": now,
        "path": format!("/app/backend/data/uploads/{id}_{}", file.filename),
    });
    if process {
        answer["status"] = json!(true);
    }
    w.files.insert(id.clone(), file);
    if process && w.processing_steps == 0 {
        w.finish(&id);
    }
    json_reply(200, answer)
}

/// A part sent without a Content-Type is stored as None by the server.
fn ctype_json(content_type: &str) -> Json {
    if content_type.is_empty() {
        Json::Null
    } else {
        json!(content_type)
    }
}

fn collection_name(f: &File) -> String {
    f.knowledge
        .clone()
        .unwrap_or_else(|| format!("file-{}", f.id))
}

fn meta_json(f: &File) -> Json {
    json!({
        "name": f.filename,
        "content_type": ctype_json(&f.content_type),
        "size": f.content.len(),
        "file_hash": f.file_hash,
        "data": f.meta_data,
        "collection_name": collection_name(f),
    })
}

/// `GET /files/{id}` (NOTES §3.5, §5).
fn file_record(f: &File) -> Json {
    let mut data = Map::new();
    if f.status != "pending" || f.steps_left > 0 {
        data.insert("status".into(), json!(f.status));
    }
    if f.status == "completed" {
        data.insert("content".into(), json!(String::from_utf8_lossy(&f.content)));
    }
    if let Some(e) = &f.error {
        data.insert("error".into(), json!(e));
    }
    json!({
        "id": f.id,
        "user_id": USER_ID,
        "hash": f.text_hash,
        "filename": f.filename,
        "path": format!("/app/backend/data/uploads/{}_{}", f.id, f.filename),
        "data": data,
        "meta": meta_json(f),
        "created_at": f.created_at,
        "updated_at": f.updated_at,
    })
}

/// The KB object; with `files` (file/add and file/remove answers) the
/// server does not work out `write_access` and says false.
fn kb_json(kb: &str, files: Option<Vec<&File>>) -> Option<Json> {
    let (name, description, owner, write) = match kb {
        KNOWLEDGE => ("kbsync-test", "mirror of ./docs", USER_ID, true),
        READ_ONLY => ("shared handbook", "read-only for kbsync", OTHER_USER, false),
        _ => return None,
    };
    let files = files.map(|fs| {
        fs.iter()
            .map(|f| {
                json!({
                    "id": f.id, "hash": f.text_hash, "meta": meta_json(f),
                    "created_at": f.created_at, "updated_at": f.updated_at,
                })
            })
            .collect::<Vec<_>>()
    });
    Some(json!({
        "id": kb,
        "user_id": owner,
        "name": name,
        "description": description,
        "meta": null,
        "access_grants": [],
        "created_at": KB_TIME,
        "updated_at": KB_TIME,
        "write_access": write && files.is_none(),
        "files": files,
    }))
}

fn dir_json(d: &Dir) -> Json {
    json!({
        "id": d.id, "knowledge_id": d.knowledge, "parent_id": d.parent_id, "name": d.name,
        "user_id": USER_ID, "created_at": KB_TIME, "updated_at": KB_TIME,
    })
}

/// `GET /knowledge/{id}/files` (NOTES §3.2).
fn list_files(w: &mut World, kb: &str, query: &str) -> Reply {
    if kb_json(kb, None).is_none() {
        return detail(400, NOT_FOUND);
    }
    let ps = params(query);
    let mut errors = Vec::new();
    let mut int = |name: &str| {
        let v = param(&ps, name)?;
        match v.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                errors.push(json!({
                    "type": "int_parsing", "loc": ["query", name],
                    "msg": "Input should be a valid integer, unable to parse string as an integer",
                    "input": v,
                }));
                None
            }
        }
    };
    let page = int("page").unwrap_or(1).max(1) as usize;
    let limit = int("limit");
    if !errors.is_empty() {
        return invalid(errors);
    }
    let limit = match limit {
        Some(n) if w.admin && n > 0 => n as usize,
        _ => 30,
    };
    let needle = param(&ps, "query").unwrap_or("").to_lowercase();
    // Absent: every directory; "": the root only.
    let dir = param(&ps, "directory_id").map(|d| (!d.is_empty()).then_some(d));
    let mut found: Vec<&File> = w
        .files
        .values()
        .filter(|f| f.knowledge.as_deref() == Some(kb))
        .filter(|f| f.filename.to_lowercase().contains(&needle))
        .filter(|f| dir.is_none_or(|d| f.directory_id.as_deref() == d))
        .collect();
    let desc = param(&ps, "direction") != Some("asc");
    let order_by = param(&ps, "order_by").unwrap_or("updated_at");
    found.sort_by(|a, b| {
        let by = match order_by {
            "name" => a.filename.cmp(&b.filename),
            "created_at" => a.created_at.cmp(&b.created_at),
            _ => a.updated_at.cmp(&b.updated_at),
        };
        let by = if desc { by.reverse() } else { by };
        by.then_with(|| a.id.cmp(&b.id))
    });
    let total = found.len();
    let page_ids: Vec<String> = found
        .iter()
        .skip((page - 1).saturating_mul(limit))
        .take(limit)
        .map(|f| f.id.clone())
        .collect();
    let shown: Vec<&String> = page_ids
        .iter()
        .filter(|id| !w.skip_once.remove(*id))
        .collect();
    let items: Vec<Json> = shown
        .into_iter()
        .map(|id| {
            let f = &w.files[id];
            let path = f.directory_id.as_deref().map(|d| w.dir_path(d));
            json!({
                "id": f.id, "user_id": USER_ID, "hash": f.text_hash, "filename": f.filename,
                "data": null, "meta": meta_json(f),
                "created_at": f.created_at, "updated_at": f.updated_at,
                "directory_id": f.directory_id, "directory_path": path,
                "has_original": true,
                "user": {
                    "id": USER_ID, "name": "kbsync",
                    "role": if w.admin { "admin" } else { "user" },
                    "email": "kbsync@example.com",
                },
            })
        })
        .collect();
    let parent = dir.flatten();
    let mut dirs: Vec<&Dir> = w
        .dirs
        .values()
        .filter(|d| d.knowledge == kb && d.parent_id.as_deref() == parent)
        .collect();
    dirs.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    let directories: Vec<Json> = dirs.into_iter().map(dir_json).collect();
    json_reply(
        200,
        json!({"items": items, "directories": directories, "breadcrumbs": [], "total": total}),
    )
}

/// A JSON body's fields as FastAPI validates them: every problem is
/// collected into one 422.
struct Fields {
    obj: Map<String, Json>,
    errors: Vec<Json>,
}

impl Fields {
    fn parse(body: &Bytes) -> Fields {
        let mut errors = Vec::new();
        let obj = match serde_json::from_slice::<Json>(body) {
            Ok(Json::Object(m)) => m,
            _ if body.is_empty() => {
                errors.push(missing(json!(["body"]), Json::Null));
                Map::new()
            }
            Ok(other) => {
                errors.push(json!({
                    "type": "model_attributes_type", "loc": ["body"],
                    "msg": "Input should be a valid dictionary or object to extract fields from",
                    "input": other,
                }));
                Map::new()
            }
            Err(e) => {
                errors.push(json!({
                    "type": "json_invalid", "loc": ["body", e.column()],
                    "msg": "JSON decode error", "input": {}, "ctx": {"error": e.to_string()},
                }));
                Map::new()
            }
        };
        Fields { obj, errors }
    }

    fn wrong(&mut self, kind: &str, what: &str, loc: Json, input: &Json) {
        self.errors.push(json!({
            "type": format!("{kind}_type"), "loc": loc,
            "msg": format!("Input should be a valid {what}"), "input": input,
        }));
    }

    fn string(&mut self, name: &str, required: bool) -> Option<String> {
        match self.obj.get(name).cloned() {
            Some(Json::String(s)) => Some(s),
            None | Some(Json::Null) if !required => None,
            None => {
                let input = Json::Object(self.obj.clone());
                self.errors.push(missing(json!(["body", name]), input));
                None
            }
            Some(other) => {
                self.wrong("string", "string", json!(["body", name]), &other);
                None
            }
        }
    }

    fn strings(&mut self, name: &str) -> Vec<String> {
        match self.obj.get(name).cloned() {
            Some(Json::Array(items)) => {
                let mut out = Vec::new();
                for (i, v) in items.iter().enumerate() {
                    match v.as_str() {
                        Some(s) => out.push(s.to_owned()),
                        None => self.wrong("string", "string", json!(["body", name, i]), v),
                    }
                }
                out
            }
            None => {
                let input = Json::Object(self.obj.clone());
                self.errors.push(missing(json!(["body", name]), input));
                Vec::new()
            }
            Some(other) => {
                self.wrong("list", "list", json!(["body", name]), &other);
                Vec::new()
            }
        }
    }

    fn check(self) -> Result<(), Box<Reply>> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(Box::new(invalid(self.errors)))
        }
    }
}

/// The KB checks of file/add and file/remove: both answer 400.
fn writable_for_files(kb: &str) -> Result<(), Box<Reply>> {
    match kb {
        KNOWLEDGE => Ok(()),
        READ_ONLY => Err(Box::new(detail(400, ACCESS_PROHIBITED))),
        _ => Err(Box::new(detail(400, NOT_FOUND))),
    }
}

/// The KB checks of sync/* and dirs/*: 404 and 403.
fn writable_for_sync(kb: &str) -> Result<(), Box<Reply>> {
    match kb {
        KNOWLEDGE => Ok(()),
        READ_ONLY => Err(Box::new(detail(403, ACCESS_PROHIBITED))),
        _ => Err(Box::new(detail(404, NOT_FOUND))),
    }
}

fn kb_with_files(w: &World, kb: &str) -> Reply {
    json_reply(200, kb_json(kb, Some(w.linked_to(kb))).unwrap())
}

/// `POST /knowledge/{id}/file/add` (NOTES §3.6).
fn file_add(w: &mut World, kb: &str, body: &Bytes) -> Reply {
    let mut fields = Fields::parse(body);
    let file_id = fields.string("file_id", true);
    let dir = fields.string("directory_id", false);
    if let Err(r) = fields.check() {
        return *r;
    }
    let file_id = file_id.unwrap_or_default();
    if let Err(r) = writable_for_files(kb) {
        return *r;
    }
    let Some(f) = w.files.get(&file_id) else {
        return detail(400, NOT_FOUND);
    };
    if f.knowledge.as_deref() == Some(kb) {
        return kb_with_files(w, kb); // added twice: no error, one link
    }
    if f.status == "pending" && f.steps_left == 0 {
        return detail(400, "Extracted content is not available for this file. Please ensure that the file is processed before proceeding.");
    }
    let Some(hash) = f.text_hash.clone().filter(|_| f.status == "completed") else {
        return detail(400, &format!("400: {EMPTY_CONTENT}"));
    };
    if w.duplicate(kb, &hash, &file_id) {
        // The refusal marks the (sound) file itself failed.
        let f = w.files.get_mut(&file_id).unwrap();
        f.status = "failed".into();
        f.error = Some(DUPLICATE_CONTENT.into());
        f.text_hash = None;
        return detail(400, &format!("400: {DUPLICATE_CONTENT}"));
    }
    let dir = w.dir_in(kb, dir.as_deref());
    let f = w.files.get_mut(&file_id).unwrap();
    f.knowledge = Some(kb.to_owned());
    f.directory_id = dir;
    kb_with_files(w, kb)
}

/// `POST /knowledge/{id}/file/remove?delete_file=` (NOTES §3.6).
fn file_remove(w: &mut World, kb: &str, query: &str, body: &Bytes) -> Reply {
    let mut fields = Fields::parse(body);
    let file_id = fields.string("file_id", true);
    if let Err(r) = fields.check() {
        return *r;
    }
    let file_id = file_id.unwrap_or_default();
    if let Err(r) = writable_for_files(kb) {
        return *r;
    }
    if w.files
        .get(&file_id)
        .is_none_or(|f| f.knowledge.as_deref() != Some(kb))
    {
        return detail(400, NOT_FOUND);
    }
    if flag(query, "delete_file", true) {
        w.files.remove(&file_id);
    } else {
        let f = w.files.get_mut(&file_id).unwrap();
        f.knowledge = None;
        f.directory_id = None;
    }
    kb_with_files(w, kb)
}

/// `POST /knowledge/{id}/sync/cleanup` (NOTES §4).
fn cleanup(w: &mut World, kb: &str, body: &Bytes) -> Reply {
    let mut fields = Fields::parse(body);
    let file_ids = fields.strings("file_ids");
    let dir_ids = fields.strings("dir_ids");
    if let Err(r) = fields.check() {
        return *r;
    }
    if let Err(r) = writable_for_sync(kb) {
        return *r;
    }
    for id in &file_ids {
        // Nothing else links it in this fake, so the file goes too.
        if w.files
            .get(id)
            .is_some_and(|f| f.knowledge.as_deref() == Some(kb))
        {
            w.files.remove(id);
        }
    }
    // The server walks the list backwards; children go with their parent.
    for id in dir_ids.iter().rev() {
        if w.dirs.get(id).is_none_or(|d| d.knowledge != kb) {
            continue;
        }
        let mut gone = vec![id.clone()];
        let mut i = 0;
        while i < gone.len() {
            let children: Vec<String> = w
                .dirs
                .values()
                .filter(|d| d.parent_id.as_ref() == Some(&gone[i]))
                .map(|d| d.id.clone())
                .filter(|c| !gone.contains(c))
                .collect();
            gone.extend(children);
            i += 1;
        }
        for d in &gone {
            w.dirs.remove(d);
        }
        // Files still linked in them are only unlinked, not deleted.
        for f in w.files.values_mut() {
            if f.directory_id.as_ref().is_some_and(|d| gone.contains(d)) {
                f.knowledge = None;
                f.directory_id = None;
            }
        }
    }
    json_reply(200, json!({"status": true}))
}

/// `POST /knowledge/{id}/dirs/create` (NOTES §3.7).
fn dir_create(w: &mut World, kb: &str, body: &Bytes) -> Reply {
    let mut fields = Fields::parse(body);
    let name = fields.string("name", true);
    let parent = fields.string("parent_id", false);
    if let Err(r) = fields.check() {
        return *r;
    }
    let name = name.unwrap_or_default();
    if let Err(r) = writable_for_sync(kb) {
        return *r;
    }
    if let Some(p) = &parent {
        if w.dirs.get(p).is_none_or(|d| d.knowledge != kb) {
            return detail(404, "Parent directory not found.");
        }
        // Only checked under a parent: at the root the real server takes
        // the same name twice.
        let taken = w
            .dirs
            .values()
            .any(|d| d.knowledge == kb && d.parent_id.as_ref() == Some(p) && d.name == name);
        if taken {
            return detail(
                400,
                "Failed to create directory. A directory with this name may already exist at this level.",
            );
        }
    }
    let dir = Dir {
        id: w.new_id(),
        knowledge: kb.to_owned(),
        parent_id: parent,
        name,
    };
    let answer = dir_json(&dir);
    w.dirs.insert(dir.id.clone(), dir);
    json_reply(200, answer)
}
