//! Who may use the control API: a bearer token from the file `[daemon]
//! api_token_file` names, compared in constant time so the answer's
//! timing says nothing of how much of a guess was right.

use hyper::HeaderMap;
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// Why a request was refused: said to the client and logged, never with
/// what the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No token is configured: nothing may be asked that needs one.
    NoTokenConfigured,
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A token that is not the configured one.
    Wrong,
}

impl Refused {
    pub fn message(self) -> &'static str {
        match self {
            Refused::NoTokenConfigured => {
                "this route needs the API token, and none is configured: set `[daemon] api_token_file`"
            }
            Refused::Missing => "send the API token: `Authorization: Bearer <token>`",
            Refused::Wrong => "the API token is not the configured one",
        }
    }
}

/// Checks the request's `Authorization: Bearer` header against `token`.
pub fn check(headers: &HeaderMap, token: Option<&Secret>) -> Result<(), Refused> {
    let token = token.ok_or(Refused::NoTokenConfigured)?;
    let sent = headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .ok_or(Refused::Missing)?;
    if same(sent.as_bytes(), token.expose().as_bytes()) {
        Ok(())
    } else {
        Err(Refused::Wrong)
    }
}

/// Constant-time equality; only the lengths' difference shows.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(hyper::header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_the_configured_bearer_token_passes() {
        let token = Secret::new("s3cret-token".into());
        assert_eq!(
            check(&headers(Some("Bearer s3cret-token")), Some(&token)),
            Ok(())
        );
        assert_eq!(
            check(&headers(Some("bearer  s3cret-token ")), Some(&token)),
            Ok(())
        );
        assert_eq!(
            check(&headers(Some("Bearer s3cret-toke")), Some(&token)),
            Err(Refused::Wrong)
        );
        assert_eq!(
            check(&headers(Some("Bearer s3cret-token2")), Some(&token)),
            Err(Refused::Wrong)
        );
        assert_eq!(
            check(&headers(Some("Basic s3cret-token")), Some(&token)),
            Err(Refused::Missing)
        );
        assert_eq!(check(&headers(None), Some(&token)), Err(Refused::Missing));
        assert_eq!(
            check(&headers(Some("Bearer s3cret-token")), None),
            Err(Refused::NoTokenConfigured)
        );
    }
}
