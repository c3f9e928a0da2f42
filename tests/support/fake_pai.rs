//! A fake PAI AIWorkSpace dataset-file-metadata API (2021-02-04), on
//! 127.0.0.1:0. It checks every request's V3 signature against the secret
//! it knows, from the headers and body as they arrived (a wrong secret, a
//! body that does not match x-acs-content-sha256, an unsigned x-acs header
//! or a reused nonce are refused as Alibaba Cloud refuses them), and keeps
//! records: list with NextToken paging, batch create (SucceedDetails /
//! FailedDetails), batch update and delete (Status false + FailedDetails
//! "Not Found"). A listing filtered by `QueryFileName` holds the records
//! whose file name contains it (the API's fuzzy match); `DatasetFileMetaIds`
//! of a delete is a comma-separated list, as the SDK joins that parameter
//! of the same API family.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use kbsync::sink::pai::acs3;
use serde_json::{json, Value as Json};

pub const KEY_ID: &str = "LTAI5tTESTKEYID";
pub const SECRET: &str = "TestSecret0123456789abcdef";
pub const WORKSPACE: &str = "796123";
pub const DATASET: &str = "d-lfd60v0ptestdx";

#[derive(Debug, Clone)]
pub struct Record {
    pub uri: String,
    pub file_name: String,
    pub meta_attributes: String,
    /// FileFingerPrint as last sent.
    pub fingerprint: String,
}

impl Record {
    pub fn attributes(&self) -> Json {
        serde_json::from_str(&self.meta_attributes).unwrap_or(Json::Null)
    }
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub action: String,
    pub status: u16,
    pub body: Json,
    /// The query parameters, decoded.
    pub params: BTreeMap<String, String>,
}

#[derive(Default)]
pub struct World {
    pub records: BTreeMap<String, Record>,
    pub log: Vec<Logged>,
    nonces: HashSet<String>,
    next_id: u64,
    /// Answer the next N calls of an action with this status (not applied).
    pub fail_next: Vec<(String, u16, u32)>,
    pub page_size_cap: usize,
    /// A proxy in front that answers some requests with their credentials
    /// repeated (not applied).
    pub echo: Vec<Echo>,
    /// A listing that never ends: every page is the first again, with a
    /// NextToken and no TotalCount.
    pub endless_listing: bool,
    /// Records the next unfiltered listing page that holds them leaves out,
    /// as a listing that pages while records come and go can.
    pub skip_once: HashSet<String>,
    /// Take a delete's `DatasetFileMetaIds` for one id, commas and all, as
    /// a server that does not split the list would.
    pub ids_as_one: bool,
}

impl World {
    pub fn add_record(&mut self, uri: &str) -> String {
        self.next_id += 1;
        let id = format!("{:064x}", self.next_id);
        self.records.insert(
            id.clone(),
            Record {
                uri: uri.to_owned(),
                file_name: uri.rsplit('/').next().unwrap().to_owned(),
                meta_attributes: String::new(),
                fingerprint: String::new(),
            },
        );
        id
    }

    pub fn by_uri(&self, uri: &str) -> Vec<&Record> {
        self.records.values().filter(|r| r.uri == uri).collect()
    }

    pub fn count(&self, action: &str) -> usize {
        self.log.iter().filter(|l| l.action == action).count()
    }

    /// The requests of `action` that were answered 200.
    pub fn answered(&self, action: &str) -> Vec<&Logged> {
        self.log
            .iter()
            .filter(|l| l.action == action && l.status == 200)
            .collect()
    }
}

pub struct FakePai {
    pub addr: SocketAddr,
    pub world: Arc<Mutex<World>>,
}

impl FakePai {
    pub async fn start() -> FakePai {
        let world = Arc::new(Mutex::new(World {
            page_size_cap: 100,
            ..World::default()
        }));
        let addr = super::serve::serve(world.clone(), handle).await;
        FakePai { addr, world }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }
}

use super::serve::json_reply as reply;
use super::serve::{take_echo, Echo};

fn error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        json!({"RequestId": "5A14FA81-DD4E-0000-0000-6343FE44B941", "Code": code, "Message": message}),
    )
}

/// Why the request's signature is refused, if it is, checked as the server
/// would: canonical request
/// from what arrived, the secret it holds for the key id.
fn refusal(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Option<Response<Full<Bytes>>> {
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    let Some(auth) = get("authorization") else {
        return Some(error(
            400,
            "MissingAuthorization",
            "Authorization is mandatory for this action.",
        ));
    };
    let Some(rest) = auth.strip_prefix("ACS3-HMAC-SHA256 ") else {
        return Some(error(
            400,
            "IncompleteSignature",
            "Unsupported signature algorithm.",
        ));
    };
    let fields: BTreeMap<&str, &str> = rest.split(',').filter_map(|p| p.split_once('=')).collect();
    if fields.get("Credential") != Some(&KEY_ID) {
        return Some(error(
            404,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        ));
    }
    let hashed = acs3::sha256_hex(body);
    if get("x-acs-content-sha256") != Some(hashed.as_str()) {
        return Some(error(
            400,
            "InvalidParameter.ContentSha256",
            "x-acs-content-sha256 does not match the body.",
        ));
    }
    for required in [
        "x-acs-action",
        "x-acs-version",
        "x-acs-date",
        "x-acs-signature-nonce",
    ] {
        if get(required).is_none() {
            return Some(error(
                400,
                "MissingParameter",
                &format!("{required} is mandatory."),
            ));
        }
    }
    let signed_list = fields.get("SignedHeaders").copied().unwrap_or("");
    // Every x-acs-* header sent must be signed.
    for (k, _) in headers.iter().filter(|(k, _)| acs3::is_signed_header(k)) {
        if !signed_list.split(';').any(|s| s == k) {
            return Some(error(
                400,
                "IncompleteSignature",
                &format!("header {k} is not signed."),
            ));
        }
    }
    let query_pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();
    let (canonical, signed) = acs3::canonical_request(method, path, &query_pairs, headers, &hashed);
    if signed != signed_list {
        return Some(error(
            400,
            "IncompleteSignature",
            "SignedHeaders does not match the headers sent.",
        ));
    }
    let expected = acs3::authorization(KEY_ID, SECRET, &canonical, &signed);
    if expected != auth {
        return Some(error(
            400,
            "SignatureDoesNotMatch",
            "Specified signature does not match our calculation.",
        ));
    }
    None
}

fn params(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(
    world: Arc<Mutex<World>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    if let Some(answer) = take_echo(&mut world.lock().unwrap().echo, &path, req.headers()) {
        return Ok(answer);
    }
    let query = req.uri().query().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let action = headers
        .iter()
        .find(|(k, _)| k == "x-acs-action")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let json_body: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
    let mut w = world.lock().unwrap();
    let resp = match refusal(&method, &path, &query, &headers, &body) {
        Some(r) => r,
        None => {
            let nonce = headers
                .iter()
                .find(|(k, _)| k == "x-acs-signature-nonce")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            if !w.nonces.insert(nonce) {
                error(
                    400,
                    "SignatureNonceUsed",
                    "Specified signature nonce was used already.",
                )
            } else {
                route(&mut w, &method, &path, &query, &action, &json_body)
            }
        }
    };
    w.log.push(Logged {
        action,
        status: resp.status().as_u16(),
        body: json_body,
        params: params(&query),
    });
    Ok(resp)
}

fn route(
    w: &mut World,
    method: &str,
    path: &str,
    query: &str,
    action: &str,
    body: &Json,
) -> Response<Full<Bytes>> {
    if let Some(pos) = w.fail_next.iter().position(|(a, _, _)| a == action) {
        let status = w.fail_next[pos].1;
        w.fail_next[pos].2 -= 1;
        if w.fail_next[pos].2 == 0 {
            w.fail_next.remove(pos);
        }
        return match status {
            429 => error(
                429,
                "Throttling.User",
                "Request was denied due to user flow control.",
            ),
            400 => error(
                400,
                "InvalidParameter",
                "The specified parameter is invalid.",
            ),
            _ => error(
                status,
                "InternalError",
                "The request processing has failed due to some unknown error.",
            ),
        };
    }
    let expected = format!("/api/v1/datasets/{DATASET}/datasetfilemetas");
    if path != expected {
        return error(404, "DatasetNotFound", "The dataset does not exist.");
    }
    let params = params(query);
    match (method, action) {
        ("GET", "ListDatasetFileMetas") => {
            if params.get("WorkspaceId").map(String::as_str) != Some(WORKSPACE) {
                return error(400, "InvalidParameter", "WorkspaceId is invalid.");
            }
            list(w, &params)
        }
        ("POST", "CreateDatasetFileMetas") | ("PUT", "UpdateDatasetFileMetas") => {
            if body.get("WorkspaceId").and_then(Json::as_str) != Some(WORKSPACE) {
                return error(400, "InvalidParameter", "WorkspaceId is invalid.");
            }
            let Some(metas) = body.get("DatasetFileMetas").and_then(Json::as_array) else {
                return error(400, "MissingParameter", "DatasetFileMetas is mandatory.");
            };
            for m in metas {
                if let Some(a) = m.get("MetaAttributes") {
                    if !a.is_string() {
                        return error(
                            400,
                            "InvalidParameter",
                            "MetaAttributes must be a JSON string.",
                        );
                    }
                }
            }
            if action.starts_with("Create") {
                create(w, metas)
            } else {
                update(w, metas)
            }
        }
        ("DELETE", "DeleteDatasetFileMetas") => {
            if params.get("WorkspaceId").map(String::as_str) != Some(WORKSPACE) {
                return error(400, "InvalidParameter", "WorkspaceId is invalid.");
            }
            let Some(ids) = params.get("DatasetFileMetaIds").filter(|v| !v.is_empty()) else {
                return error(400, "MissingParameter", "DatasetFileMetaIds is mandatory.");
            };
            let mut failed = Vec::new();
            let ids: Vec<&str> = if w.ids_as_one {
                vec![ids.as_str()]
            } else {
                ids.split(',').collect()
            };
            for id in ids {
                if w.records.remove(id).is_none() {
                    failed.push(json!({"DatasetFileMetaId": id, "Result": "Not Found", "Uri": ""}));
                }
            }
            reply(
                200,
                json!({"RequestId": "r", "Status": failed.is_empty(), "FailedDetails": failed}),
            )
        }
        _ => error(
            400,
            "InvalidAction",
            "The action does not match the request.",
        ),
    }
}

/// One page of ListDatasetFileMetas.
fn list(w: &mut World, params: &BTreeMap<String, String>) -> Response<Full<Bytes>> {
    let max: usize = params
        .get("MaxResults")
        .and_then(|m| m.parse().ok())
        .unwrap_or(10)
        .min(w.page_size_cap);
    let start: usize = params
        .get("NextToken")
        .and_then(|t| t.strip_prefix("tok-"))
        .and_then(|t| t.parse().ok())
        .filter(|_| !w.endless_listing)
        .unwrap_or(0);
    // Fuzzy, as the API's: a part of the file name matches.
    let name = params.get("QueryFileName").cloned().unwrap_or_default();
    let all: Vec<(String, Record)> = w
        .records
        .iter()
        .filter(|(_, r)| r.file_name.contains(&name))
        .map(|(id, r)| (id.clone(), r.clone()))
        .collect();
    let mut held: Vec<&(String, Record)> = all.iter().skip(start).take(max).collect();
    if name.is_empty() {
        held.retain(|(id, _)| !w.skip_once.remove(id));
    }
    let page: Vec<Json> = held
        .iter()
        .map(|(id, r)| {
            json!({"DatasetFileMetaId": id, "Uri": r.uri, "FileName": r.file_name,
                   "MetaAttributes": r.meta_attributes})
        })
        .collect();
    if w.endless_listing {
        return reply(
            200,
            json!({"RequestId": "r", "DatasetFileMetas": page, "NextToken": "tok-again"}),
        );
    }
    let next = (start + max < all.len()).then(|| format!("tok-{}", start + max));
    reply(
        200,
        json!({"RequestId": "r", "DatasetFileMetas": page, "TotalCount": all.len(), "NextToken": next}),
    )
}

fn create(w: &mut World, metas: &[Json]) -> Response<Full<Bytes>> {
    // What the SDK's model marks required on create.
    for (n, m) in metas.iter().enumerate() {
        for field in [
            "ContentType",
            "FileFingerPrint",
            "FileType",
            "FileUpdateTime",
        ] {
            if m.get(field)
                .and_then(Json::as_str)
                .is_none_or(str::is_empty)
            {
                return error(
                    400,
                    "MissingParameter",
                    &format!(
                        "DatasetFileMetas.{}.{field} is mandatory for this action.",
                        n + 1
                    ),
                );
            }
        }
        let t = m["FileUpdateTime"].as_str().unwrap_or("");
        // yyyy-MM-ddTHH:mmZ
        let shape = t.len() == 17 && t.as_bytes()[10] == b'T' && t.ends_with('Z');
        if !shape {
            return error(
                400,
                "InvalidParameter",
                &format!("FileUpdateTime {t:?} is not yyyy-MM-ddTHH:mmZ."),
            );
        }
    }
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for m in metas {
        let uri = m.get("Uri").and_then(Json::as_str).unwrap_or("").to_owned();
        if !uri.starts_with("oss://") && !uri.starts_with("nas://") {
            failed.push(json!({"Uri": uri, "Result": "Invalid Uri"}));
            continue;
        }
        if !w.by_uri(&uri).is_empty() {
            failed.push(json!({"Uri": uri, "Result": "Already Exists"}));
            continue;
        }
        let id = w.add_record(&uri);
        let r = w.records.get_mut(&id).unwrap();
        r.meta_attributes = m
            .get("MetaAttributes")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_owned();
        r.fingerprint = m["FileFingerPrint"].as_str().unwrap_or("").to_owned();
        ok.push(json!({"DatasetFileMetaId": id, "Uri": uri}));
    }
    reply(
        200,
        json!({"RequestId": "r", "Status": failed.is_empty(), "FailedDetails": failed, "SucceedDetails": ok}),
    )
}

fn update(w: &mut World, metas: &[Json]) -> Response<Full<Bytes>> {
    let mut failed = Vec::new();
    for m in metas {
        let id = m
            .get("DatasetFileMetaId")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_owned();
        match w.records.get_mut(&id) {
            None => failed.push(json!({"DatasetFileMetaId": id, "Result": "Not Found", "Uri": ""})),
            Some(r) => {
                if let Some(a) = m.get("MetaAttributes").and_then(Json::as_str) {
                    r.meta_attributes = a.to_owned();
                }
                if let Some(n) = m.get("FileName").and_then(Json::as_str) {
                    r.file_name = n.to_owned();
                }
                if let Some(f) = m.get("FileFingerPrint").and_then(Json::as_str) {
                    r.fingerprint = f.to_owned();
                }
            }
        }
    }
    reply(
        200,
        json!({"RequestId": "r", "Status": failed.is_empty(), "FailedDetails": failed}),
    )
}
