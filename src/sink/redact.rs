//! Keeping secrets out of what an upstream says. Some upstreams, and the
//! proxies and gateways in front of them, repeat the request's
//! credentials in their error answers (a debug page, a JSON `message`);
//! kbsync prints, logs and stores those messages. So every secret a
//! transport sends (the API key, each access token once obtained, PAI's
//! key id) is replaced by `[redacted]` in every answer body it reads,
//! before anything is parsed from it: as it was sent, JSON-escaped and
//! URL-encoded. An error body also loses whatever follows `Bearer `,
//! whoever's token it is.

use std::collections::VecDeque;
use std::sync::{LazyLock, RwLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use bytes::Bytes;

use crate::secret::Secret;

pub const REDACTED: &str = "[redacted]";

/// Shorter secrets are not searched for: as substrings they would mangle
/// ordinary text, and no real key or token is that short.
pub const MIN_LEN: usize = 8;

/// Secrets obtained along the way (access tokens) that are remembered:
/// the current one and those calls still in flight may carry.
const KEPT_TOKENS: usize = 8;

/// The secrets of one transport, and a searcher for every form of them.
pub struct Redactor {
    state: RwLock<Known>,
}

struct Known {
    /// The configured credentials, for the client's life.
    keys: Vec<String>,
    /// Tokens bought since, oldest first.
    tokens: VecDeque<String>,
    /// Every form of every secret; `None` when there is none.
    searcher: Option<AhoCorasick>,
}

impl Redactor {
    /// A redactor for the credentials a client was configured with.
    pub fn new(keys: &[&Secret]) -> Redactor {
        let mut known = Known {
            keys: Vec::new(),
            tokens: VecDeque::new(),
            searcher: None,
        };
        for key in keys {
            let value = key.expose();
            if value.len() >= MIN_LEN && !known.keys.iter().any(|k| k == value) {
                known.keys.push(value.to_owned());
            }
            logged().add_key(key);
        }
        known.build();
        Redactor {
            state: RwLock::new(known),
        }
    }

    /// A configured credential, kept for the redactor's life.
    fn add_key(&self, key: &Secret) {
        let value = key.expose();
        if value.len() < MIN_LEN {
            return;
        }
        let mut known = self.state.write().unwrap_or_else(|p| p.into_inner());
        if !known.keys.iter().any(|k| k == value) {
            known.keys.push(value.to_owned());
            known.build();
        }
    }

    /// A secret obtained later (an access token): redacted from now on.
    pub fn add(&self, token: &Secret) {
        let value = token.expose();
        if value.len() < MIN_LEN {
            return;
        }
        if !std::ptr::eq(self, logged()) {
            logged().add(token);
        }
        let mut known = self.state.write().unwrap_or_else(|p| p.into_inner());
        if known.keys.iter().chain(&known.tokens).any(|k| k == value) {
            return;
        }
        known.tokens.push_back(value.to_owned());
        if known.tokens.len() > KEPT_TOKENS {
            known.tokens.pop_front();
        }
        known.build();
    }

    /// `body` without any known secret (the same bytes, not copied, when
    /// there is none).
    pub fn body(&self, body: Bytes) -> Bytes {
        let known = self.state.read().unwrap_or_else(|p| p.into_inner());
        match &known.searcher {
            Some(s) if s.is_match(body.as_ref()) => {
                let replaced = s.replace_all_bytes(&body, &vec![REDACTED; s.patterns_len()]);
                Bytes::from(replaced)
            }
            _ => body,
        }
    }

    /// An error answer's body without any known secret, nor any bearer
    /// token.
    pub fn error_body(&self, body: Bytes) -> Bytes {
        without_bearer_tokens(self.body(body))
    }

    /// `text` without any known secret, nor any bearer token.
    pub fn text(&self, text: &str) -> String {
        let clean = self.error_body(Bytes::copy_from_slice(text.as_bytes()));
        String::from_utf8_lossy(&clean).into_owned()
    }
}

/// Every secret any client holds, for the log writer (`logging`): a
/// library's own debug line (the S3 signing library prints its
/// credentials) is cleaned as an upstream's answer is.
pub fn logged() -> &'static Redactor {
    static LOGGED: LazyLock<Redactor> = LazyLock::new(|| Redactor::new(&[]));
    &LOGGED
}

impl Known {
    fn build(&mut self) {
        let mut forms: Vec<String> = Vec::new();
        for secret in self.keys.iter().chain(&self.tokens) {
            for form in forms_of(secret) {
                if !forms.contains(&form) {
                    forms.push(form);
                }
            }
        }
        self.searcher = (!forms.is_empty()).then(|| {
            AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&forms)
                .expect("a few literal patterns always build")
        });
    }
}

/// How a secret may appear in a body: as sent, JSON-escaped (with `/` as
/// `\/` too, as some encoders write it), URL-encoded (upper- or lower-case
/// hex digits).
fn forms_of(secret: &str) -> Vec<String> {
    let json = serde_json::to_string(secret).expect("a string serialises");
    let json = json[1..json.len() - 1].to_owned();
    let url: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let mut forms = vec![
        secret.to_owned(),
        json.replace('/', "\\/"),
        json,
        lower_hex_escapes(&url),
        url.replace('+', "%20"),
        url,
    ];
    forms.dedup();
    forms
}

/// `%2F` → `%2f`.
fn lower_hex_escapes(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut left = 0;
    for c in encoded.chars() {
        if c == '%' {
            left = 2;
            out.push(c);
        } else if left > 0 {
            left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `Bearer ` in any case: what follows it is a token, whoever's.
static BEARER: LazyLock<AhoCorasick> = LazyLock::new(|| {
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .build(["bearer "])
        .expect("a literal pattern builds")
});

/// The characters of a bearer token (RFC 6750's b64token).
fn in_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)
}

fn without_bearer_tokens(body: Bytes) -> Bytes {
    let mut out: Vec<u8> = Vec::new();
    let mut copied = 0;
    for m in BEARER.find_iter(body.as_ref()) {
        let start = m.end();
        let len = body[start..].iter().take_while(|b| in_token(**b)).count();
        if len == 0 || start < copied {
            continue;
        }
        out.extend_from_slice(&body[copied..start]);
        out.extend_from_slice(REDACTED.as_bytes());
        copied = start + len;
    }
    if copied == 0 {
        return body;
    }
    out.extend_from_slice(&body[copied..]);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(keys: &[&str]) -> Redactor {
        let secrets: Vec<Secret> = keys.iter().map(|k| Secret::new(k.to_string())).collect();
        Redactor::new(&secrets.iter().collect::<Vec<_>>())
    }

    #[test]
    fn a_key_goes_as_sent_json_escaped_and_url_encoded() {
        let key = "k3y/with+\"odd\"=chars";
        let r = redactor(&[key]);
        for shown in [
            key.to_owned(),
            serde_json::to_string(key).unwrap(),
            r#"k3y\/with+\"odd\"=chars"#.to_owned(),
            "k3y%2Fwith%2B%22odd%22%3Dchars".to_owned(),
            "k3y%2fwith%2b%22odd%22%3dchars".to_owned(),
        ] {
            let text = format!("before {shown} after");
            let clean = r.text(&text);
            assert!(!clean.contains("k3y"), "{shown} → {clean}");
            assert!(
                clean.starts_with("before ") && clean.ends_with(" after"),
                "{clean}"
            );
        }
    }

    #[test]
    fn json_stays_json_and_says_where_the_key_was() {
        let key = "dataset-TESTKEY0123456789";
        let r = redactor(&[key]);
        let body =
            serde_json::json!({"message": format!("bad header Authorization: Bearer {key}")});
        let clean = r.body(Bytes::from(body.to_string()));
        let parsed: serde_json::Value = serde_json::from_slice(&clean).unwrap();
        assert_eq!(
            parsed["message"],
            "bad header Authorization: Bearer [redacted]"
        );
    }

    #[test]
    fn short_secrets_are_left_alone_and_text_without_secrets_is_not_copied() {
        let r = redactor(&["abc", "1234567"]);
        assert_eq!(r.text("abc 1234567 abcdef"), "abc 1234567 abcdef");
        let body = Bytes::from_static(b"nothing secret here");
        let clean = r.body(body.clone());
        assert_eq!(clean.as_ptr(), body.as_ptr());
    }

    #[test]
    fn tokens_added_later_are_redacted_and_the_oldest_forgotten() {
        let r = redactor(&["the-api-key-0001"]);
        for i in 0..=KEPT_TOKENS {
            r.add(&Secret::new(format!("token-number-{i:04}")));
        }
        let text = "the-api-key-0001 token-number-0000 token-number-0001";
        assert_eq!(r.text(text), "[redacted] token-number-0000 [redacted]");
        let last = format!("token-number-{KEPT_TOKENS:04}");
        assert_eq!(r.text(&last), REDACTED);
    }

    #[test]
    fn any_bearer_token_goes_from_error_text() {
        let r = redactor(&[]);
        assert_eq!(
            r.text("Authorization: Bearer eyJh.bGci-Oi_J9= was refused; bearer abc"),
            "Authorization: Bearer [redacted] was refused; bearer [redacted]"
        );
        assert_eq!(
            r.text(r#"{"auth":"BEARER x1\"y"}"#),
            r#"{"auth":"BEARER [redacted]\"y"}"#
        );
        assert_eq!(r.text("a bearer  of news"), "a bearer  of news");
    }
}
