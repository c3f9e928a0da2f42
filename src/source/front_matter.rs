//! Markdown front matter: the flat, scalar part of a YAML (`---`) or TOML
//! (`+++`) header. Nested values are skipped, lists become comma-joined
//! strings; a knowledge base's metadata is flat anyway.

use serde_json::Value as Json;

use crate::metadata::Metadata;

/// How much of a file's head is kept for front matter parsing.
pub const HEAD_BYTES: usize = 64 * 1024;

pub fn is_markdown(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    lower.ends_with(".md") || lower.ends_with(".markdown") || lower.ends_with(".mdx")
}

/// Parses front matter from the first bytes of a file; `None` when there is
/// none (or it is not valid UTF-8 / not terminated within the head).
pub fn parse(head: &[u8]) -> Option<Metadata> {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        // The head may end inside a multi-byte character.
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).ok()?,
    };
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let fence = lines.next()?.trim_end();
    let (body, is_toml) = match fence {
        "---" => (collect_until(&mut lines, &["---", "..."])?, false),
        "+++" => (collect_until(&mut lines, &["+++"])?, true),
        _ => return None,
    };
    Some(if is_toml {
        parse_toml(&body)
    } else {
        parse_yaml(&body)
    })
}

fn collect_until<'a>(
    lines: &mut impl Iterator<Item = &'a str>,
    ends: &[&str],
) -> Option<Vec<&'a str>> {
    let mut body = Vec::new();
    for line in lines {
        if ends.contains(&line.trim_end()) {
            return Some(body);
        }
        body.push(line);
    }
    None
}

fn parse_toml(body: &[&str]) -> Metadata {
    let mut out = Metadata::new();
    let Ok(table) = body.join("\n").parse::<toml::Table>() else {
        return out;
    };
    for (k, v) in table {
        let json = match v {
            toml::Value::String(s) => Json::from(s),
            toml::Value::Integer(i) => Json::from(i),
            toml::Value::Float(f) => Json::from(f),
            toml::Value::Boolean(b) => Json::from(b.to_string()),
            toml::Value::Datetime(d) => Json::from(d.to_string()),
            toml::Value::Array(a) => Json::from(
                a.iter()
                    .filter_map(|x| match x {
                        toml::Value::String(s) => Some(s.clone()),
                        toml::Value::Table(_) | toml::Value::Array(_) => None,
                        other => Some(other.to_string()),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            toml::Value::Table(_) => continue,
        };
        out.insert(k, json);
    }
    out
}

fn parse_yaml(body: &[&str]) -> Metadata {
    let mut out = Metadata::new();
    let mut i = 0;
    while i < body.len() {
        let line = body[i];
        i += 1;
        if line.trim().is_empty() || line.starts_with([' ', '\t', '#']) {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = unquote(key.trim());
        let value = strip_comment(value.trim());
        if value.is_empty() {
            // A block list (`- a`) is joined; a nested map is skipped.
            let mut items = Vec::new();
            while i < body.len()
                && (body[i].starts_with([' ', '\t', '-']) || body[i].trim().is_empty())
            {
                if let Some(item) = body[i].trim().strip_prefix("- ") {
                    items.push(unquote(strip_comment(item.trim())));
                }
                i += 1;
            }
            if !items.is_empty() {
                out.insert(key, Json::from(items.join(", ")));
            }
            continue;
        }
        if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
            let items: Vec<String> = inner
                .split(',')
                .map(|s| unquote(s.trim()))
                .filter(|s| !s.is_empty())
                .collect();
            out.insert(key, Json::from(items.join(", ")));
            continue;
        }
        if value.starts_with('{') || value == "|" || value == ">" {
            continue;
        }
        let quoted = value.starts_with(['"', '\'']);
        let text = unquote(value);
        let json = if quoted {
            Json::from(text)
        } else if let Ok(i) = text.parse::<i64>() {
            Json::from(i)
        } else if let Some(f) = text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
        {
            Json::Number(f)
        } else if text == "~" || text == "null" {
            continue;
        } else {
            Json::from(text)
        };
        out.insert(key, json);
    }
    out
}

fn strip_comment(v: &str) -> &str {
    if v.starts_with(['"', '\'']) {
        return v;
    }
    match v.find(" #") {
        Some(i) => v[..i].trim_end(),
        None => v,
    }
}

fn unquote(s: &str) -> String {
    let bytes = s.as_bytes();
    if bytes.len() >= 2
        && (bytes[0] == b'"' || bytes[0] == b'\'')
        && bytes[bytes.len() - 1] == bytes[0]
    {
        s[1..s.len() - 1].to_owned()
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_scalars_lists_and_nesting() {
        let doc = b"---\ntitle: \"Leave policy\"\nauthor: Ana # owner\npages: 12\nratio: 0.5\ntags: [hr, policy]\nowners:\n  - ana\n  - bo\nnested:\n  a: 1\ndraft: ~\n---\n# Body\n";
        let fm = parse(doc).unwrap();
        assert_eq!(fm["title"], "Leave policy");
        assert_eq!(fm["author"], "Ana");
        assert_eq!(fm["pages"], 12);
        assert_eq!(fm["ratio"], 0.5);
        assert_eq!(fm["tags"], "hr, policy");
        assert_eq!(fm["owners"], "ana, bo");
        assert!(!fm.contains_key("nested") && !fm.contains_key("draft") && !fm.contains_key("a"));
    }

    #[test]
    fn toml_front_matter() {
        let fm = parse(b"+++\ntitle = 'T'\nyear = 2024\n+++\nbody").unwrap();
        assert_eq!(fm["title"], "T");
        assert_eq!(fm["year"], 2024);
    }

    #[test]
    fn none_without_fence_or_terminator() {
        assert!(parse(b"# Just markdown\n").is_none());
        assert!(parse(b"---\ntitle: never closed\n").is_none());
    }
}
