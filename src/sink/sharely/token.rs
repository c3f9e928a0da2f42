//! How long a Sharely access token may be used. The token is a JWT valid
//! for 24 hours; a call made with an expired one costs a 401 and a second
//! round trip, and a long upload made near the end of its life could fail
//! outright. So the token is bought again a few minutes before its `exp`
//! claim says it runs out (or 24 hours after it was bought, when it carries
//! no readable claim).

use std::time::Duration;

/// Sharely's documented lifetime, for tokens without a readable `exp`.
const LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Renewed this long before it expires.
pub const MARGIN: Duration = Duration::from_secs(5 * 60);

/// How long a token bought at `now` (Unix seconds) may be used.
pub fn usable_for(token: &str, now: i64) -> Duration {
    let expires_in = match expiry(token) {
        Some(exp) => Duration::from_secs(u64::try_from(exp - now).unwrap_or(0)),
        None => LIFETIME,
    };
    expires_in.saturating_sub(MARGIN)
}

/// The `exp` claim of a JWT (`header.payload.signature`, base64url).
fn expiry(token: &str) -> Option<i64> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = base64url(payload)?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_i64()
}

/// Decodes base64url (RFC 4648 §5), padded or not as JWTs write it;
/// `None` for anything else, a truncated payload included.
fn base64url(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD_INDIFFERENT
        .decode(text)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JWT whose payload is `{"sub":"k","exp":1800086400}`.
    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJrIiwiZXhwIjoxODAwMDg2NDAwfQ.c2ln";
    const EXP: i64 = 1_800_086_400;

    #[test]
    fn a_jwt_is_renewed_five_minutes_before_its_exp() {
        assert_eq!(
            usable_for(JWT, EXP - 24 * 3600),
            Duration::from_secs(24 * 3600 - 300)
        );
        assert_eq!(usable_for(JWT, EXP - 600), Duration::from_secs(300));
        // Inside the margin, or expired already: bought again at once.
        assert_eq!(usable_for(JWT, EXP - 120), Duration::ZERO);
        assert_eq!(usable_for(JWT, EXP + 10), Duration::ZERO);
    }

    #[test]
    fn an_opaque_token_lasts_the_documented_day() {
        for token in ["opaque-token", "a.b!.c", "a.e30.c"] {
            assert_eq!(
                usable_for(token, 0),
                Duration::from_secs(24 * 3600 - 300),
                "{token}"
            );
        }
    }

    #[test]
    fn base64url_decodes_every_tail_length() {
        // RFC 4648's test vectors, unpadded.
        for (text, plain) in [
            ("", ""),
            ("Zg", "f"),
            ("Zm8", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg", "foob"),
            ("Zm9vYmE", "fooba"),
            ("Zm9vYmFy", "foobar"),
            ("Zm9vYg==", "foob"),
        ] {
            assert_eq!(base64url(text).unwrap(), plain.as_bytes(), "{text}");
        }
        assert_eq!(base64url("_-8"), Some(vec![0xff, 0xef]));
        assert_eq!(base64url("a+b"), None);
        // Five characters cannot encode whole bytes: a truncated payload,
        // not one whose last bits may be dropped.
        assert_eq!(base64url("Zm9vY"), None);
    }
}
