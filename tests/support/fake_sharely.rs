//! A fake Sharely.ai knowledge API, in-process on 127.0.0.1:0, answering as
//! ../shared/specs/sharely/ and Sharely's public API reference describe:
//! two-step auth (API key → a JWT access token that expires), the
//! `organizationid` header; list (`limit`/`offset`, `total`), get, upload
//! (multipart, 201 with the new id), delete; metadata with strings and
//! numbers only, reserved fields refused, merge semantics with
//! removeMetadataKeys, 403 for items not COMPLETED, 404 unknown item, 422
//! type mismatch.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{json, Value as Json};

use super::serve::{take_echo, Echo};

pub const API_KEY: &str = "sk-sharely-TESTKEY42";
pub const WORKSPACE: &str = "0f4b6c8e-1111-4000-8000-00000000aa01";
pub const ORG: &str = "0f4b6c8e-2222-4000-8000-00000000bb02";

const TYPES: &[&str] = &[
    "URL",
    "FILE",
    "LINK",
    "STRING",
    "WEBSITE",
    "ELASTICSEARCH_INDEX",
];

#[derive(Debug, Clone)]
pub struct Item {
    pub kind: String,
    pub status: String,
    pub title: String,
    pub filename: Option<String>,
    pub content: Option<Vec<u8>>,
    pub metadata: BTreeMap<String, Json>,
    /// Metadata calls refused with 403 before it is COMPLETED.
    processing_left: u32,
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub body: Json,
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
    pub items: BTreeMap<String, Item>,
    /// Items the next listing leaves out, once each.
    pub skip_once: std::collections::HashSet<String>,
    pub log: Vec<Logged>,
    valid_tokens: Vec<String>,
    issued: usize,
    next_id: u64,
    /// Every token becomes invalid after this many calls (0: never).
    pub token_lifetime_calls: usize,
    /// Seconds a token is valid for; 0: Sharely's 24 hours.
    pub token_lifetime_secs: i64,
    /// Hand out the last token again while it is valid, as a server that
    /// keeps one token per key does.
    pub reissue_valid_token: bool,
    calls_on_token: usize,
    /// Faults for the next metadata calls: (status, how many).
    pub fail_next: Vec<(u16, u32)>,
    /// Faults for the next uploads, in order.
    pub upload_faults: Vec<Fault>,
    /// Faults for the next deletes, in order.
    pub delete_faults: Vec<Fault>,
    /// New uploads stay PROCESSING for this many metadata calls.
    pub processing_calls: u32,
    /// Calls answered 401 for a token that had expired.
    pub expired_refusals: usize,
    /// A proxy in front that answers some requests with their credentials
    /// repeated (not applied).
    pub echo: Vec<Echo>,
    /// A listing that never ends: every page is full of made-up items and
    /// the total says 10^12.
    pub endless_listing: bool,
}

impl World {
    pub fn add_item(&mut self, id: &str, kind: &str, status: &str) {
        self.items.insert(
            id.to_owned(),
            Item {
                kind: kind.to_owned(),
                status: status.to_owned(),
                title: format!("item {id}"),
                filename: None,
                content: None,
                metadata: BTreeMap::new(),
                processing_left: 0,
            },
        );
    }

    /// Adds a FILE item as if uploaded by hand; returns its id.
    pub fn add_file(&mut self, title: &str, content: &[u8]) -> String {
        let id = self.new_id();
        self.items.insert(
            id.clone(),
            Item {
                kind: "FILE".into(),
                status: "COMPLETED".into(),
                title: title.to_owned(),
                filename: Some(title.rsplit('/').next().unwrap_or(title).to_owned()),
                content: Some(content.to_vec()),
                metadata: BTreeMap::new(),
                processing_left: 0,
            },
        );
        id
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("5a1e0000-0000-4000-8000-{:012x}", self.next_id)
    }

    pub fn tokens_issued(&self) -> usize {
        self.issued
    }

    /// The access tokens handed out (and not revoked).
    pub fn tokens(&self) -> &[String] {
        &self.valid_tokens
    }

    pub fn count(&self, method: &str, needle: &str) -> usize {
        self.log
            .iter()
            .filter(|l| l.method == method && l.path.contains(needle))
            .count()
    }

    /// Items with this title.
    pub fn titled(&self, title: &str) -> Vec<(&String, &Item)> {
        self.items
            .iter()
            .filter(|(_, i)| i.title == title)
            .collect()
    }

    /// Titles held by more than one item.
    pub fn duplicate_titles(&self) -> Vec<String> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for i in self.items.values() {
            *seen.entry(i.title.as_str()).or_default() += 1;
        }
        seen.into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(t, _)| t.to_owned())
            .collect()
    }
}

pub struct FakeSharely {
    pub addr: SocketAddr,
    pub world: Arc<Mutex<World>>,
}

impl FakeSharely {
    pub async fn start() -> FakeSharely {
        let world = Arc::new(Mutex::new(World::default()));
        let addr = super::serve::serve(world.clone(), handle).await;
        FakeSharely { addr, world }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }
}

fn reply(status: u16, body: Json) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-api-version", "v1")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn error(status: u16, error: &str, message: &str) -> Response<Full<Bytes>> {
    reply(status, json!({"error": error, "message": message}))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A JWT-shaped token (unsigned: only its `exp` claim matters here).
fn jwt(n: usize, exp: i64) -> String {
    let payload = format!("{{\"sub\":\"key\",\"n\":{n},\"exp\":{exp}}}");
    format!(
        "eyJhbGciOiJIUzI1NiJ9.{}.c2lnbmF0dXJl",
        b64url(payload.as_bytes())
    )
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// The `exp` the fake put in its own token.
fn exp_of(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let mut bits = 0u32;
    let mut acc = 0u32;
    let mut out = Vec::new();
    for c in payload.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            _ => 63,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    let claims: Json = serde_json::from_slice(&out).ok()?;
    claims.get("exp")?.as_i64()
}

struct Upload {
    file: Option<(String, Vec<u8>)>,
    title: Option<String>,
}

async fn parse_multipart(content_type: &str, body: Bytes) -> Option<Upload> {
    let boundary = multer::parse_boundary(content_type).ok()?;
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut up = Upload {
        file: None,
        title: None,
    };
    while let Some(field) = mp.next_field().await.ok()? {
        match field.name() {
            Some("file") => {
                let name = field.file_name().unwrap_or("").to_owned();
                up.file = Some((name, field.bytes().await.ok()?.to_vec()));
            }
            Some("title") => up.title = Some(field.text().await.ok()?),
            _ => {}
        }
    }
    Some(up)
}

async fn handle(
    world: Arc<Mutex<World>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let headers = req.headers().clone();
    let api_key = header("x-api-key");
    let auth = header("authorization");
    let org = header("organizationid");
    let content_type = header("content-type");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let upload = match content_type.as_deref() {
        Some(c) if c.starts_with("multipart/form-data") => {
            match parse_multipart(c, body.clone()).await {
                Some(u) => Some(u),
                None => return Ok(error(400, "Bad Request", "Invalid multipart body.")),
            }
        }
        _ => None,
    };
    let json_body: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
    let mut w = world.lock().unwrap();
    if let Some(answer) = take_echo(&mut w.echo, &path, &headers) {
        return Ok(answer);
    }
    let call = Call {
        method: &method,
        path: &path,
        query: &query,
        api_key,
        auth,
        org,
        body: &json_body,
    };
    let resp = route(&mut w, call, upload);
    w.log.push(Logged {
        method: method.to_string(),
        path: path.clone(),
        status: resp.status().as_u16(),
        body: json_body,
    });
    Ok(resp)
}

struct Call<'a> {
    method: &'a Method,
    path: &'a str,
    query: &'a str,
    api_key: Option<String>,
    auth: Option<String>,
    org: Option<String>,
    body: &'a Json,
}

fn route(w: &mut World, call: Call<'_>, upload: Option<Upload>) -> Response<Full<Bytes>> {
    let parts: Vec<&str> = call.path.trim_start_matches('/').split('/').collect();
    if let (&Method::POST, ["workspaces", ws, "generate-access-key-token"]) =
        (call.method, parts.as_slice())
    {
        if call.api_key.as_deref() != Some(API_KEY) {
            return error(401, "Unauthorized", "Invalid API key.");
        }
        if *ws != WORKSPACE {
            return error(404, "Not Found", "Workspace not found.");
        }
        let valid = w
            .valid_tokens
            .last()
            .filter(|t| exp_of(t).is_some_and(|e| e > now()));
        if let Some(token) = valid.filter(|_| w.reissue_valid_token) {
            return reply(200, json!({"token": token}));
        }
        w.issued += 1;
        let lifetime = match w.token_lifetime_secs {
            0 => 24 * 3600,
            s => s,
        };
        let token = jwt(w.issued, now() + lifetime);
        w.valid_tokens.push(token.clone());
        w.calls_on_token = 0;
        return reply(200, json!({"token": token}));
    }
    let ["v1", "workspaces", ws, "knowledge", rest @ ..] = parts.as_slice() else {
        return error(404, "Not Found", "No such route.");
    };
    let token = call.auth.as_deref().and_then(|a| a.strip_prefix("Bearer "));
    let Some(token) = token.filter(|t| w.valid_tokens.iter().any(|v| v == t)) else {
        return error(401, "Unauthorized", "Invalid or expired access token.");
    };
    if exp_of(token).is_some_and(|exp| exp <= now()) {
        w.expired_refusals += 1;
        return error(401, "Unauthorized", "Invalid or expired access token.");
    }
    if w.token_lifetime_calls > 0 {
        w.calls_on_token += 1;
        if w.calls_on_token > w.token_lifetime_calls {
            w.valid_tokens.clear();
            return error(401, "Unauthorized", "Invalid or expired access token.");
        }
    }
    if call.org.as_deref() != Some(ORG) {
        return error(
            400,
            "Bad Request",
            "Missing or invalid organizationid header.",
        );
    }
    if *ws != WORKSPACE {
        return error(404, "Not Found", "Workspace not found.");
    }
    match (call.method, rest) {
        (&Method::GET, []) => list(w, call.query),
        (&Method::POST, ["file"]) => upload_file(w, upload),
        (&Method::GET, [id]) => match w.items.get(*id) {
            Some(item) => reply(200, view(id, item)),
            None => error(404, "Not Found", "Knowledge item not found."),
        },
        (&Method::DELETE, [id]) => delete(w, id),
        (&Method::PUT, [id, "metadata"]) => {
            if let Some((status, left)) = w.fail_next.first_mut() {
                let status = *status;
                *left -= 1;
                if *left == 0 {
                    w.fail_next.remove(0);
                }
                return error(status, "Internal Server Error", "Something went wrong.");
            }
            update_metadata(w, id, call.body)
        }
        _ => error(404, "Not Found", "No such route."),
    }
}

/// An item as list and get show it.
fn view(id: &str, item: &Item) -> Json {
    let mut metadata = serde_json::Map::new();
    for (k, v) in &item.metadata {
        metadata.insert(k.clone(), v.clone());
    }
    if let Some(f) = &item.filename {
        metadata.insert("filename".into(), json!(f));
        metadata.insert(
            "fileSize".into(),
            json!(item.content.as_ref().map_or(0, Vec::len)),
        );
    }
    json!({
        "id": id,
        "workspaceId": WORKSPACE,
        "title": item.title,
        "type": item.kind,
        "status": item.status,
        "metadata": metadata,
        "createdAt": "2026-11-24T10:30:00Z",
        "updatedAt": "2026-11-24T10:30:00Z",
    })
}

fn list(w: &mut World, query: &str) -> Response<Full<Bytes>> {
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let limit = param("limit").unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return error(400, "Bad Request", "limit must be between 1 and 1000.");
    }
    let offset = param("offset").unwrap_or(0);
    if w.endless_listing {
        let page: Vec<Json> = (offset..offset + limit)
            .map(|n| json!({"id": format!("made-up-{n}"), "title": format!("made-up {n}"), "type": "FILE", "status": "COMPLETED"}))
            .collect();
        return reply(
            200,
            json!({"knowledge": page, "total": 1_000_000_000_000u64}),
        );
    }
    let World {
        items, skip_once, ..
    } = w;
    let page: Vec<Json> = items
        .iter()
        .skip(offset)
        .take(limit)
        .filter(|(id, _)| !skip_once.remove(*id))
        .map(|(id, i)| view(id, i))
        .collect();
    reply(200, json!({"knowledge": page, "total": w.items.len()}))
}

fn next_fault(faults: &mut Vec<Fault>) -> Option<Fault> {
    (!faults.is_empty()).then(|| faults.remove(0))
}

fn upload_file(w: &mut World, upload: Option<Upload>) -> Response<Full<Bytes>> {
    let fault = next_fault(&mut w.upload_faults);
    if let Some(Fault::Refuse(status)) = fault {
        return error(status, "Service Unavailable", "Try again later.");
    }
    let Some(Upload {
        file: Some((name, content)),
        title,
    }) = upload
    else {
        return error(400, "Bad Request", "A file is required.");
    };
    let id = w.new_id();
    let processing_left = w.processing_calls;
    let item = Item {
        kind: "FILE".into(),
        status: if processing_left > 0 {
            "PROCESSING".into()
        } else {
            "COMPLETED".into()
        },
        title: title.unwrap_or_else(|| name.clone()),
        filename: Some(name),
        content: Some(content),
        metadata: BTreeMap::new(),
        processing_left,
    };
    let answer = json!({
        "id": id, "knowledgeId": id, "title": item.title, "type": "FILE",
        "status": if processing_left > 0 { "BACKGROUND_START" } else { "PROCESSED" },
    });
    w.items.insert(id, item);
    if fault == Some(Fault::ApplyThen500) {
        return error(500, "Internal Server Error", "Something went wrong.");
    }
    reply(201, answer)
}

fn delete(w: &mut World, id: &str) -> Response<Full<Bytes>> {
    let fault = next_fault(&mut w.delete_faults);
    if let Some(Fault::Refuse(status)) = fault {
        return error(status, "Service Unavailable", "Try again later.");
    }
    if w.items.remove(id).is_none() {
        return error(404, "Not Found", "Knowledge item not found.");
    }
    if fault == Some(Fault::ApplyThen500) {
        return error(500, "Internal Server Error", "Something went wrong.");
    }
    reply(200, json!({"message": "Knowledge deleted successfully."}))
}

fn update_metadata(w: &mut World, id: &str, body: &Json) -> Response<Full<Bytes>> {
    let (Some(kind), Some(metadata)) = (
        body.get("type").and_then(Json::as_str),
        body.get("metadata").and_then(Json::as_object),
    ) else {
        return error(400, "Bad Request", "type and metadata are required.");
    };
    if !TYPES.contains(&kind) {
        return error(400, "Bad Request", "Invalid knowledge type.");
    }
    for (k, v) in metadata {
        if ["title", "language"].contains(&k.to_lowercase().as_str()) {
            return error(
                400,
                "Bad Request",
                &format!("Cannot update reserved field: {k}"),
            );
        }
        if !(v.is_string() || v.is_number()) {
            return error(
                400,
                "Bad Request",
                "Metadata values must be strings or numbers.",
            );
        }
    }
    let remove: Vec<String> = match body.get("removeMetadataKeys") {
        None => Vec::new(),
        Some(Json::Array(a)) if a.iter().all(Json::is_string) => {
            a.iter().map(|v| v.as_str().unwrap().to_owned()).collect()
        }
        Some(_) => {
            return error(
                400,
                "Bad Request",
                "removeMetadataKeys must be an array of strings.",
            )
        }
    };
    let Some(item) = w.items.get_mut(id) else {
        return error(404, "Not Found", "Knowledge item not found.");
    };
    if item.kind != kind {
        return error(
            422,
            "Unprocessable Entity",
            &format!("Type mismatch: item is {}, request says {kind}.", item.kind),
        );
    }
    if item.processing_left > 0 {
        item.processing_left -= 1;
        if item.processing_left == 0 {
            item.status = "COMPLETED".into();
        }
        return error(
            403,
            "Forbidden",
            "Knowledge item is not in COMPLETED status.",
        );
    }
    if item.status != "COMPLETED" {
        return error(
            403,
            "Forbidden",
            "Knowledge item is not in COMPLETED status.",
        );
    }
    for (k, v) in metadata {
        item.metadata.insert(k.clone(), v.clone());
    }
    for k in remove {
        item.metadata.remove(&k);
    }
    reply(200, json!({"knowledgeId": id}))
}
