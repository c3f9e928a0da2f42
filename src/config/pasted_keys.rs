//! A key pasted into the config is refused wherever it lands. Secrets are
//! never read inline, so a value shaped like one is a mistake: a key put
//! where a variable name, a file path, an id or a metadata value belongs.
//! Left alone it would be echoed in errors and logs, stored in the state
//! file, or sent upstream as metadata. The error names the setting and its
//! line, never the value.

use toml::Value;

use super::locate::Locator;
use super::ConfigError;
use crate::secret::looks_like_key;

/// Refuses the config if any key or string value in it looks like a key.
pub fn refuse(loc: &Locator, text: &str) -> Result<(), ConfigError> {
    // A document that does not parse is reported by the typed parse.
    let Ok(doc) = text.parse::<toml::Table>() else {
        return Ok(());
    };
    let mut found = None;
    walk(&Value::Table(doc), "", &mut found);
    match found {
        None => Ok(()),
        Some((path, needle)) => {
            let at = text.find(&needle).unwrap_or(0);
            Err(loc.error(
                at..at,
                &path,
                "this value looks like an API key or token, so it is not shown and not used: secrets never go in the config file. Put the key in an environment variable, a file or a systemd credential, and name that here (api_key_env = \"VAR\", api_key_file = \"/path\", api_key_credential = \"name\")",
            ))
        }
    }
}

/// The first key-shaped string: its setting's path, and the text to find
/// its line by.
fn walk(v: &Value, path: &str, found: &mut Option<(String, String)>) {
    if found.is_some() {
        return;
    }
    match v {
        Value::String(s) if looks_like_key(s) => {
            *found = Some((path.to_owned(), s.clone()));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{i}]"), found);
            }
        }
        Value::Table(t) => {
            for (k, item) in t {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if looks_like_key(k) {
                    *found = Some((
                        if path.is_empty() {
                            "(table)".into()
                        } else {
                            path.to_owned()
                        },
                        k.clone(),
                    ));
                    return;
                }
                walk(item, &child, found);
            }
        }
        _ => {}
    }
}
