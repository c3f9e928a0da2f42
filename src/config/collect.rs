//! Reading a piece of the config so that every mistake in it is found in
//! one go: the piece is deserialized, and after each error the entry the
//! error points into is taken out of a copy and the piece is read again.
//! Each error names the full key path (`sync[0].metadata.section`), found
//! from its position in the document, and an unknown key gets a "did you
//! mean" from the keys the place has (never an inline-secret key, which
//! exists only to be refused).

use toml::de::{DeValue, ValueDeserializer};
use toml::Spanned;

use super::locate::{Locator, Span};
use super::ConfigError;

/// At most this many errors are reported from one piece.
const MAX_ERRORS: usize = 50;

/// Reads `value` with `read`, each error into `errors` (with its key
/// path: `base` is the path of `value` itself); `None` when any error
/// was found.
pub fn read<'a, T>(
    loc: &Locator,
    base: &str,
    value: &Spanned<DeValue<'a>>,
    read: impl Fn(Spanned<DeValue<'a>>) -> Result<T, toml::de::Error>,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let mut value = value.clone();
    let mut found = 0;
    loop {
        let err = match read(value.clone()) {
            Ok(t) if found == 0 => return Some(t),
            Ok(_) => return None,
            Err(e) => e,
        };
        found += 1;
        let span = err.span().unwrap_or_else(|| value.span());
        errors.push(error(loc, base, &value, span.clone(), err.message()));
        if found == MAX_ERRORS || !take_out(&mut value, &span) {
            return None;
        }
    }
}

/// `T` as a serde type, from a piece of the document.
pub fn typed<T: serde::de::DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
) -> Result<T, toml::de::Error> {
    T::deserialize(ValueDeserializer::from(value))
}

/// An error at `span` within `value` (whose path is `base`), its message
/// told as a config error: the key path, a suggestion for an unknown key,
/// key-shaped text redacted.
pub fn error(
    loc: &Locator,
    base: &str,
    value: &Spanned<DeValue<'_>>,
    span: Span,
    message: &str,
) -> ConfigError {
    let key = path_at(value, base, span.start);
    let key = if key.is_empty() { "(document)" } else { &key };
    loc.error(span, key, super::locate::redact(&explain(message.trim())))
}

/// Whether `span` covers the position `at`.
fn inside(span: Span, at: usize) -> bool {
    span.start <= at && at < span.end.max(span.start + 1)
}

/// Whether `value` or anything in it is at `at`: a table written as a
/// `[header]` spans its header only, not the keys under it.
fn holds(value: &Spanned<DeValue<'_>>, at: usize) -> bool {
    inside(value.span(), at)
        || match value.get_ref() {
            DeValue::Table(table) => table
                .iter()
                .any(|(k, v)| inside(k.span(), at) || holds(v, at)),
            DeValue::Array(items) => items.iter().any(|v| holds(v, at)),
            _ => false,
        }
}

/// The path of the deepest key or array element at `at`.
pub fn path_at(value: &Spanned<DeValue<'_>>, base: &str, at: usize) -> String {
    match value.get_ref() {
        DeValue::Table(table) => {
            for (k, v) in table.iter() {
                if inside(k.span(), at) || holds(v, at) {
                    let path = if base.is_empty() {
                        k.get_ref().to_string()
                    } else {
                        format!("{base}.{}", k.get_ref())
                    };
                    return path_at(v, &path, at);
                }
            }
        }
        DeValue::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                if holds(v, at) {
                    return path_at(v, &format!("{base}[{i}]"), at);
                }
            }
        }
        _ => {}
    }
    base.to_owned()
}

/// Takes out of `value` the deepest table entry at `span`, so that reading
/// again goes past that error; `false` when there is none (the error is
/// about the piece as a whole, e.g. a missing key). Array elements are
/// never taken out: the indexes in later paths would shift.
fn take_out(value: &mut Spanned<DeValue<'_>>, span: &Span) -> bool {
    let at = span.start;
    match value.get_mut() {
        DeValue::Table(table) => {
            let Some(key) = table
                .iter()
                .find(|(k, v)| inside(k.span(), at) || holds(v, at))
                .map(|(k, _)| k.get_ref().clone())
            else {
                return false;
            };
            let taken = table
                .get_mut(key.as_ref())
                .is_some_and(|v| take_out(v, span));
            taken || table.remove(key.as_ref()).is_some()
        }
        DeValue::Array(items) => items
            .iter_mut()
            .find(|v| holds(v, at))
            .is_some_and(|v| take_out(v, span)),
        _ => false,
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`" as "unknown field
/// `x`: did you mean `a`?", listing the keys the place takes. A key that
/// exists only to refuse an inline secret (`api_key` beside `api_key_env`)
/// is never offered.
fn explain(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_owned();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_owned();
    };
    let named: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let offered: Vec<&str> = named
        .iter()
        .copied()
        .filter(|k| !named.contains(&format!("{k}_env").as_str()))
        .collect();
    let mut text = format!("unknown field `{unknown}`");
    if let Some(best) = suggest(unknown, &offered) {
        text.push_str(&format!(": did you mean `{best}`?"));
    }
    if offered.is_empty() {
        text.push_str("; this table takes no keys");
    } else {
        let list: Vec<String> = offered.iter().map(|k| format!("`{k}`")).collect();
        text.push_str(&format!(" (this table takes {})", list.join(", ")));
    }
    text
}

/// The known key most like `unknown`, if one is close enough to be a typo.
pub fn suggest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(unknown, k), *k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_key_gets_the_closest_known_one() {
        let m = explain("unknown field `debounce_msec`, expected one of `debounce_ms`, `max_delay_ms`, `metrics_listen`");
        assert!(
            m.starts_with("unknown field `debounce_msec`: did you mean `debounce_ms`?"),
            "{m}"
        );
        let m = explain("unknown field `zzz`, expected `name`");
        assert_eq!(m, "unknown field `zzz` (this table takes `name`)");
    }

    #[test]
    fn an_inline_secret_key_is_never_offered() {
        let m = explain("unknown field `apikey`, expected one of `base_url`, `api_key`, `api_key_env`, `api_key_file`, `api_key_credential`");
        assert!(!m.contains("`api_key`"), "{m}");
        assert!(m.contains("did you mean `api_key_"), "{m}");
    }
}
