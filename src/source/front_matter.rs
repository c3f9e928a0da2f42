//! Markdown front matter: the flat, scalar part of a YAML (`---`) or TOML
//! (`+++`) header. Nested values are skipped, lists become comma-joined
//! strings; a knowledge base's metadata is flat anyway.
//!
//! Both are read by real parsers (`serde-saphyr`, `toml`): quoting, escapes
//! and block scalars mean what they mean to every other tool. A header that
//! does not parse is reported and its file kept, without its values.

use serde_json::{Map, Value as Json};

use crate::metadata::Metadata;

/// How much of a file's head is kept for front matter parsing.
pub const HEAD_BYTES: usize = 64 * 1024;

pub fn is_markdown(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    lower.ends_with(".md") || lower.ends_with(".markdown") || lower.ends_with(".mdx")
}

/// The front matter of the file `key`, from its first bytes; a header that
/// cannot be read is logged as a warning naming the file, and the file
/// goes on without its values.
pub fn read(key: &str, head: &[u8]) -> Option<Metadata> {
    parse(head).unwrap_or_else(|reason| {
        tracing::warn!(%key, "front matter ignored, the file is uploaded without its values: {reason}");
        None
    })
}

/// Parses front matter from the first bytes of a file: `Ok(None)` when
/// there is none, `Err` (with the file's line where known) when there is
/// one that does not parse.
pub fn parse(head: &[u8]) -> Result<Option<Metadata>, String> {
    let full = head.len() >= HEAD_BYTES;
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let text = match std::str::from_utf8(head) {
        Ok(t) => t,
        // The head may end inside a multi-byte character.
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).map_err(|e| e.to_string())?,
    };
    let Some((fence, _)) = text.split_once('\n') else {
        return Ok(None);
    };
    let (ends, is_toml): (&[&str], bool) = match fence.trim_end() {
        "---" => (&["---", "..."], false),
        "+++" => (&["+++"], true),
        _ => return Ok(None),
    };
    let Some(end) = closing_fence(text, fence.len() + 1, ends, full) else {
        // A Markdown file may open with a `---` rule and never close it;
        // only a header cut off by the size bound is worth a word.
        return match full {
            true => Err(format!(
                "no closing `{}` within the first {} KiB: front matter is read up to that size",
                ends[0],
                HEAD_BYTES / 1024
            )),
            false => Ok(None),
        };
    };
    let fields = if is_toml {
        toml_fields(&text[fence.len() + 1..end])?
    } else {
        // From the opening `---` (a YAML document start) on, so that the
        // parser's line numbers are the file's.
        yaml_fields(&text[..end])?
    };
    Ok(Some(flatten(fields)))
}

/// Byte offset of the line that closes the header, searching from `from`.
/// The last line of a head cut off at `HEAD_BYTES` (`cut`) may be the
/// start of a longer one, so it closes nothing.
fn closing_fence(text: &str, from: usize, ends: &[&str], cut: bool) -> Option<usize> {
    let mut at = from;
    for line in text[from..].split_inclusive('\n') {
        let whole = line.ends_with('\n') || !cut;
        if whole && ends.contains(&line.trim_end()) {
            return Some(at);
        }
        at += line.len();
    }
    None
}

/// Limits on what a YAML header may make the parser build: no real header
/// within `HEAD_BYTES` holds more values than it has bytes, so an alias
/// bomb (a few anchors that stand for billions of values) stops there.
fn yaml_options() -> serde_saphyr::Options {
    let mut options = serde_saphyr::options! {
        budget: serde_saphyr::budget! { max_nodes: HEAD_BYTES },
        with_snippet: false,
        // `yes`, `007`, `1_000` and `.inf` stay the text they were written as.
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::AsString,
    };
    options.alias_limits.max_total_replayed_events = HEAD_BYTES;
    options
}

fn yaml_fields(yaml: &str) -> Result<Map<String, Json>, String> {
    match serde_saphyr::from_str_with_options::<Json>(yaml, yaml_options()) {
        Ok(Json::Object(map)) => Ok(map),
        // `---` then `---`: a header with nothing in it.
        Ok(Json::Null) => Ok(Map::new()),
        Ok(_) => Err("not a list of `key: value` lines".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn toml_fields(body: &str) -> Result<Map<String, Json>, String> {
    let table = body.parse::<toml::Table>().map_err(|e| {
        // The body starts on the file's second line.
        let line = e
            .span()
            .map_or(0, |s| body[..s.start].matches('\n').count() + 2);
        format!("line {line}: {}", e.message().trim_end())
    })?;
    Ok(table
        .into_iter()
        .map(|(k, v)| (k, toml_to_json(v)))
        .collect())
}

fn toml_to_json(v: toml::Value) -> Json {
    match v {
        toml::Value::String(s) => Json::from(s),
        toml::Value::Integer(i) => Json::from(i),
        toml::Value::Float(f) => {
            serde_json::Number::from_f64(f).map_or_else(|| Json::from(f.to_string()), Json::Number)
        }
        toml::Value::Boolean(b) => Json::from(b),
        toml::Value::Datetime(d) => Json::from(d.to_string()),
        toml::Value::Array(a) => Json::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => {
            Json::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect())
        }
    }
}

/// The header's top level as metadata: strings and numbers as they are,
/// booleans as `true`/`false` text, lists of scalars joined with `, `;
/// nulls and nested maps are left out.
fn flatten(fields: Map<String, Json>) -> Metadata {
    let mut out = Metadata::with_capacity(fields.len());
    for (key, value) in fields {
        let value = match value {
            Json::Array(items) => Json::from(
                items
                    .into_iter()
                    .filter_map(scalar_text)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Json::Bool(b) => Json::from(b.to_string()),
            Json::Null | Json::Object(_) => continue,
            scalar => scalar,
        };
        out.insert(key, value);
    }
    out
}

fn scalar_text(v: Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        Json::Null | Json::Array(_) | Json::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(doc: &[u8]) -> Metadata {
        parse(doc).unwrap().unwrap()
    }

    #[test]
    fn yaml_scalars_lists_and_nesting() {
        let doc = b"---\ntitle: \"Leave policy\"\nauthor: Ana # owner\npages: 12\nratio: 0.5\ntags: [hr, policy]\nowners:\n  - ana\n  - bo\nnested:\n  a: 1\ndraft: ~\n---\n# Body\n";
        let fm = fields(doc);
        assert_eq!(fm["title"], "Leave policy");
        assert_eq!(fm["author"], "Ana");
        assert_eq!(fm["pages"], 12);
        assert_eq!(fm["ratio"], 0.5);
        assert_eq!(fm["tags"], "hr, policy");
        assert_eq!(fm["owners"], "ana, bo");
        assert!(!fm.contains_key("nested") && !fm.contains_key("draft") && !fm.contains_key("a"));
    }

    #[test]
    fn yaml_plain_scalars_keep_their_text() {
        let fm = fields(b"---\nzip: 01234\nbig: 1_000\ndraft: yes\npublished: true\nmax: .inf\nday: 2026-02-31\nmixed: [1, 'two', false, [x], ~]\n...\n");
        assert_eq!(fm["zip"], "01234");
        assert_eq!(fm["big"], "1_000");
        assert_eq!(fm["draft"], "yes");
        assert_eq!(fm["published"], "true");
        assert_eq!(fm["max"], ".inf");
        // Dates are text here; the mapping's `time` type reads them.
        assert_eq!(fm["day"], "2026-02-31");
        assert_eq!(fm["mixed"], "1, two, false");
    }

    #[test]
    fn toml_front_matter() {
        let fm = fields(b"+++\r\ntitle = 'T'\r\nyear = 2024\r\nday = 2024-02-29\r\ndraft = false\r\ntags = ['a', 1]\r\n[extra]\r\nx = 1\r\n+++\r\nbody");
        assert_eq!(fm["title"], "T");
        assert_eq!(fm["year"], 2024);
        assert_eq!(fm["day"], "2024-02-29");
        assert_eq!(fm["draft"], "false");
        assert_eq!(fm["tags"], "a, 1");
        assert!(!fm.contains_key("extra"));
    }

    #[test]
    fn yaml_quoted_scalars_are_unescaped() {
        let fm =
            fields(b"---\ntitle: 'It''s here'\nquote: \"Say \\\"hi\\\"\"\ntab: \"a\\tb\"\n---\n");
        assert_eq!(fm["title"], "It's here");
        assert_eq!(fm["quote"], "Say \"hi\"");
        assert_eq!(fm["tab"], "a\tb");
    }

    #[test]
    fn yaml_block_scalars_are_kept() {
        let doc =
            b"---\nsummary: >\n  Folded\n  onto one line\nnotes: |-\n  line one\n  line two\n---\n";
        let fm = fields(doc);
        assert_eq!(fm["summary"], "Folded onto one line\n");
        assert_eq!(fm["notes"], "line one\nline two");
    }

    #[test]
    fn none_without_fence_or_terminator() {
        assert_eq!(parse(b"# Just markdown\n"), Ok(None));
        assert_eq!(parse(b"---\ntitle: never closed\n"), Ok(None));
        assert_eq!(parse(b"---\n---\nbody"), Ok(Some(Metadata::new())));
        assert_eq!(fields(b"\xEF\xBB\xBF---\ntitle: T\n---")["title"], "T");
    }

    #[test]
    fn a_header_that_does_not_parse_is_an_error_with_the_files_line() {
        let yaml = parse(b"---\nowner: ana\ntitle: \"never closed\n---\n").unwrap_err();
        assert!(yaml.contains("line 3"), "{yaml}");
        let toml = parse(b"+++\ntitle = 'T'\nowner =\n+++\n").unwrap_err();
        assert!(toml.starts_with("line 3: "), "{toml}");
        for doc in [&b"---\n- a\n- b\n---\n"[..], b"---\na: 1\na: 2\n---\n"] {
            assert!(parse(doc).is_err(), "{}", String::from_utf8_lossy(doc));
        }
    }

    #[test]
    fn alias_bombs_stop_at_the_budget() {
        let mut doc = String::from("---\nl0: &l0 [lol]\n");
        for i in 1..=12 {
            let refs = vec![format!("*l{}", i - 1); 10].join(",");
            doc.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
        }
        doc.push_str("---\n");
        let started = std::time::Instant::now();
        let e = parse(doc.as_bytes()).unwrap_err();
        assert!(e.contains("budget") || e.contains("alias"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Aliases within the budget are values like any other.
        assert_eq!(fields(b"---\na: &x A\nb: *x\n---\n")["b"], "A");
    }

    #[test]
    fn a_header_cut_off_by_the_size_bound_is_reported() {
        let mut doc = b"---\ntitle: T\nsummary: ".to_vec();
        doc.resize(HEAD_BYTES, b'x');
        let e = parse(&doc).unwrap_err();
        assert!(e.contains("64 KiB"), "{e}");
        // A cut-off last line is no fence either.
        let mut doc = b"---\ntitle: T\n".to_vec();
        doc.resize(HEAD_BYTES - 3, b'\n');
        doc.extend_from_slice(b"---");
        assert!(parse(&doc).is_err());
        assert_eq!(fields(b"---\ntitle: T\n---")["title"], "T");
    }
}
