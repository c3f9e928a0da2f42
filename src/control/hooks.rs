//! Push webhooks from GitHub and GitLab: checked against the secret the
//! config names (GitHub signs the body with HMAC-SHA256; GitLab sends a
//! token), then read for the pushed repository and ref.

use hmac::{Hmac, Mac};
use hyper::HeaderMap;
use serde_json::Value;
use sha2::Sha256;

use super::auth::same;
use crate::secret::Secret;
use crate::source::Push;

/// What a delivery asks.
#[derive(Debug, PartialEq)]
pub enum Hook {
    /// A push: the jobs it moved get a pass.
    Push(Push),
    /// GitHub's `ping` when a hook is made, or an event that is not a push.
    Other(String),
}

#[derive(Debug, PartialEq)]
pub enum HookError {
    /// The signature or token is missing or wrong (401).
    Unauthorized(&'static str),
    /// The body is not a push event's (400).
    Malformed(String),
}

/// A GitHub delivery: `X-Hub-Signature-256: sha256=<hex>` over the body.
pub fn github(headers: &HeaderMap, body: &[u8], secret: &Secret) -> Result<Hook, HookError> {
    let signature = header(headers, "x-hub-signature-256")
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(unhex)
        .ok_or(HookError::Unauthorized(
            "no X-Hub-Signature-256 header: set the webhook's secret on GitHub",
        ))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body);
    mac.verify_slice(&signature).map_err(|_| {
        HookError::Unauthorized("the signature does not match the configured secret")
    })?;
    let event = header(headers, "x-github-event").unwrap_or("");
    if event != "push" {
        return Ok(Hook::Other(event.to_owned()));
    }
    let v = json(body)?;
    let repo = &v["repository"];
    Ok(Hook::Push(Push {
        urls: strings(
            repo,
            &["clone_url", "ssh_url", "git_url", "html_url", "url"],
        ),
        git_ref: text(&v, "ref")?,
        default_branch: repo["default_branch"].as_str().map(str::to_owned),
    }))
}

/// A GitLab delivery: `X-Gitlab-Token` is the configured token.
pub fn gitlab(headers: &HeaderMap, body: &[u8], token: &Secret) -> Result<Hook, HookError> {
    let sent = header(headers, "x-gitlab-token").ok_or(HookError::Unauthorized(
        "no X-Gitlab-Token header: set the webhook's secret token on GitLab",
    ))?;
    if !same(sent.as_bytes(), token.expose().as_bytes()) {
        return Err(HookError::Unauthorized(
            "the token is not the configured one",
        ));
    }
    let event = header(headers, "x-gitlab-event").unwrap_or("");
    if event != "Push Hook" && event != "Tag Push Hook" {
        return Ok(Hook::Other(event.to_owned()));
    }
    let v = json(body)?;
    let project = &v["project"];
    Ok(Hook::Push(Push {
        urls: strings(
            project,
            &[
                "git_http_url",
                "git_ssh_url",
                "web_url",
                "http_url",
                "ssh_url",
            ],
        ),
        git_ref: text(&v, "ref")?,
        default_branch: project["default_branch"].as_str().map(str::to_owned),
    }))
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn json(body: &[u8]) -> Result<Value, HookError> {
    serde_json::from_slice(body)
        .map_err(|e| HookError::Malformed(format!("the body is not JSON: {e}")))
}

fn text(v: &Value, key: &str) -> Result<String, HookError> {
    v[key]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| HookError::Malformed(format!("the push names no `{key}`")))
}

fn strings(v: &Value, keys: &[&str]) -> Vec<String> {
    keys.iter()
        .filter_map(|k| v[*k].as_str().map(str::to_owned))
        .collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(body: &str, key: &str) -> HeaderMap {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut h = HeaderMap::new();
        h.insert(
            "x-hub-signature-256",
            format!("sha256={hex}").parse().unwrap(),
        );
        h.insert("x-github-event", "push".parse().unwrap());
        h
    }

    const PUSH: &str = r#"{"ref":"refs/heads/main","repository":{"clone_url":"https://github.com/acme/handbook.git","ssh_url":"git@github.com:acme/handbook.git","default_branch":"main"}}"#;

    #[test]
    fn a_github_push_is_taken_only_with_the_right_signature() {
        let secret = Secret::new("hook-secret".into());
        let hook = github(&signed(PUSH, "hook-secret"), PUSH.as_bytes(), &secret).unwrap();
        let Hook::Push(push) = hook else {
            panic!("{hook:?}")
        };
        assert_eq!(push.git_ref, "refs/heads/main");
        assert!(push.names("https://github.com/acme/handbook"));
        assert_eq!(push.default_branch.as_deref(), Some("main"));

        let wrong = github(&signed(PUSH, "other"), PUSH.as_bytes(), &secret);
        assert!(
            matches!(wrong, Err(HookError::Unauthorized(_))),
            "{wrong:?}"
        );
        // The body changed after signing.
        let tampered = PUSH.replace("handbook", "handbook2");
        let moved = github(&signed(PUSH, "hook-secret"), tampered.as_bytes(), &secret);
        assert!(
            matches!(moved, Err(HookError::Unauthorized(_))),
            "{moved:?}"
        );
        let unsigned = github(&HeaderMap::new(), PUSH.as_bytes(), &secret);
        assert!(matches!(unsigned, Err(HookError::Unauthorized(_))));
    }

    #[test]
    fn a_gitlab_push_is_taken_only_with_the_right_token() {
        let token = Secret::new("gl-token".into());
        let body = r#"{"ref":"refs/tags/v1","project":{"git_http_url":"https://gitlab.example.com/docs/handbook.git"}}"#;
        let mut h = HeaderMap::new();
        h.insert("x-gitlab-event", "Tag Push Hook".parse().unwrap());
        h.insert("x-gitlab-token", "gl-token".parse().unwrap());
        let Ok(Hook::Push(push)) = gitlab(&h, body.as_bytes(), &token) else {
            panic!()
        };
        assert_eq!(push.git_ref, "refs/tags/v1");
        h.insert("x-gitlab-token", "gl-tokem".parse().unwrap());
        assert!(matches!(
            gitlab(&h, body.as_bytes(), &token),
            Err(HookError::Unauthorized(_))
        ));
    }
}
