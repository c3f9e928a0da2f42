//! Document names for Dify. Dify names a document after its uploaded file
//! and rejects file names containing `/ \ : * ? " < > |`, and shortens
//! names over 200 characters. kbsync's key is a relative path, so the name
//! encodes it reversibly: `/` becomes `∕` (U+2215, which reads like a
//! slash), the other forbidden characters and `%` are percent-encoded, and
//! an over-long name is shortened with a hash of the key so it stays unique.

const FORBIDDEN: &[char] = &['\\', ':', '*', '?', '"', '<', '>', '|', '%', '\u{2215}'];
const MAX_CHARS: usize = 200;
pub const SLASH: char = '\u{2215}';

pub fn document_name(key: &str) -> String {
    // Composed (NFC), whatever the file system gave: "é" from macOS and
    // from Linux is one name upstream.
    let composed: String;
    let key = if key.is_ascii() {
        key
    } else {
        use unicode_normalization::UnicodeNormalization;
        composed = key.nfc().collect();
        &composed
    };
    let mut name = String::with_capacity(key.len() + 8);
    for c in key.chars() {
        if c == '/' {
            name.push(SLASH);
        } else if FORBIDDEN.contains(&c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                name.push_str(&format!("%{b:02X}"));
            }
        } else {
            name.push(c);
        }
    }
    if name.chars().count() <= MAX_CHARS {
        return name;
    }
    // Keep the extension: Dify picks the parser by it.
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e)
        .filter(|e| e.chars().count() <= 16 && !e.contains(SLASH))
        .unwrap_or("");
    let tag = &blake3::hash(key.as_bytes()).to_hex()[..12];
    let room = MAX_CHARS - ext.chars().count() - tag.len() - 2;
    let head: String = name.chars().take(room).collect();
    if ext.is_empty() {
        format!("{head}~{tag}")
    } else {
        format!("{head}~{tag}.{ext}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_forbidden_characters() {
        assert_eq!(document_name("a/b/c.md"), "a∕b∕c.md");
        assert_eq!(document_name("q?a:1%.txt"), "q%3Fa%3A1%25.txt");
        assert_ne!(document_name("a/b.md"), document_name("a∕b.md"));
    }

    #[test]
    fn long_names_stay_unique_and_keep_extension() {
        let a = format!("{}/x.pdf", "d".repeat(300));
        let b = format!("{}/y.pdf", "d".repeat(300));
        let (na, nb) = (document_name(&a), document_name(&b));
        assert!(na.chars().count() <= 200 && na.ends_with(".pdf"));
        assert_ne!(na, nb);
    }
}
