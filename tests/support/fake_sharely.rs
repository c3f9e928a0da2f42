//! A fake Sharely.ai knowledge API, in-process on 127.0.0.1:0, answering as
//! ../shared/specs/sharely/update-metadata.md describes: two-step auth
//! (API key → access token), `organizationid` header, strings and numbers
//! only, reserved fields refused, merge semantics with removeMetadataKeys,
//! 403 for items not COMPLETED, 404 unknown item, 422 type mismatch.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{json, Value as Json};

pub const API_KEY: &str = "sk-sharely-TESTKEY42";
pub const WORKSPACE: &str = "0f4b6c8e-1111-4000-8000-00000000aa01";
pub const ORG: &str = "0f4b6c8e-2222-4000-8000-00000000bb02";

#[derive(Debug, Clone)]
pub struct Item {
    pub kind: String,
    pub status: String,
    pub metadata: BTreeMap<String, Json>,
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub body: Json,
}

#[derive(Default)]
pub struct World {
    pub items: BTreeMap<String, Item>,
    pub log: Vec<Logged>,
    valid_tokens: Vec<String>,
    issued: usize,
    /// Every token becomes invalid after this many metadata calls (0: never).
    pub token_lifetime_calls: usize,
    calls_on_token: usize,
    /// Answer the next N metadata calls with this status (not applied).
    pub fail_next: Vec<(u16, u32)>,
}

impl World {
    pub fn add_item(&mut self, id: &str, kind: &str, status: &str) {
        self.items.insert(
            id.to_owned(),
            Item {
                kind: kind.to_owned(),
                status: status.to_owned(),
                metadata: BTreeMap::new(),
            },
        );
    }

    pub fn tokens_issued(&self) -> usize {
        self.issued
    }

    pub fn count(&self, method: &str, needle: &str) -> usize {
        self.log
            .iter()
            .filter(|l| l.method == method && l.path.contains(needle))
            .count()
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

async fn handle(
    world: Arc<Mutex<World>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let api_key = header("x-api-key");
    let auth = header("authorization");
    let org = header("organizationid");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let json_body: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
    let mut w = world.lock().unwrap();
    let resp = route(&mut w, &method, &path, api_key, auth, org, &json_body);
    w.log.push(Logged {
        method: method.to_string(),
        path: path.clone(),
        status: resp.status().as_u16(),
        body: json_body,
    });
    Ok(resp)
}

fn route(
    w: &mut World,
    method: &Method,
    path: &str,
    api_key: Option<String>,
    auth: Option<String>,
    org: Option<String>,
    body: &Json,
) -> Response<Full<Bytes>> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (&Method::POST, ["workspaces", ws, "generate-access-key-token"]) => {
            if api_key.as_deref() != Some(API_KEY) {
                return error(401, "Unauthorized", "Invalid API key.");
            }
            if *ws != WORKSPACE {
                return error(404, "Not Found", "Workspace not found.");
            }
            w.issued += 1;
            let token = format!("tok-{}", w.issued);
            w.valid_tokens.push(token.clone());
            w.calls_on_token = 0;
            reply(200, json!({"token": token}))
        }
        (&Method::PUT, ["v1", "workspaces", ws, "knowledge", id, "metadata"]) => {
            let token = auth.as_deref().and_then(|a| a.strip_prefix("Bearer "));
            if !token.is_some_and(|t| w.valid_tokens.iter().any(|v| v == t)) {
                return error(401, "Unauthorized", "Invalid or expired access token.");
            }
            if w.token_lifetime_calls > 0 {
                w.calls_on_token += 1;
                if w.calls_on_token > w.token_lifetime_calls {
                    w.valid_tokens.clear();
                    return error(401, "Unauthorized", "Invalid or expired access token.");
                }
            }
            if org.as_deref() != Some(ORG) {
                return error(
                    400,
                    "Bad Request",
                    "Missing or invalid organizationid header.",
                );
            }
            if *ws != WORKSPACE {
                return error(404, "Not Found", "Workspace not found.");
            }
            if let Some((status, left)) = w.fail_next.first_mut() {
                let status = *status;
                *left -= 1;
                if *left == 0 {
                    w.fail_next.remove(0);
                }
                return error(status, "Internal Server Error", "Something went wrong.");
            }
            update_metadata(w, id, body)
        }
        _ => error(404, "Not Found", "No such route."),
    }
}

fn update_metadata(w: &mut World, id: &str, body: &Json) -> Response<Full<Bytes>> {
    let (Some(kind), Some(metadata)) = (
        body.get("type").and_then(Json::as_str),
        body.get("metadata").and_then(Json::as_object),
    ) else {
        return error(400, "Bad Request", "type and metadata are required.");
    };
    if ![
        "URL",
        "FILE",
        "LINK",
        "STRING",
        "WEBSITE",
        "ELASTICSEARCH_INDEX",
    ]
    .contains(&kind)
    {
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
