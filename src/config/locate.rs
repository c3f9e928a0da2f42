//! Where in the config file a problem is: byte spans → file:line:column and
//! the key, so every validation step can say exactly where to look.

use std::path::Path;

use toml::Spanned;

use super::ConfigError;

/// Turns byte spans into "line:column" and carries the file name, so each
/// validation step can say exactly where the problem is.
pub struct Locator<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Locator<'_> {
    pub fn error(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            column,
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// "file:line:column: `key`", for errors found after loading (an
    /// upstream that refuses the target or key a setting names).
    pub fn place(&self, span: std::ops::Range<usize>, key: &str) -> String {
        match self.error(span, key, "") {
            ConfigError::Invalid {
                path, line, column, ..
            } => format!("{}:{line}:{column}: `{key}`", path.display()),
            _ => format!("`{key}`"),
        }
    }

    pub fn parse_error(&self, err: toml::de::Error) -> ConfigError {
        let span = err.span().unwrap_or(0..0);
        // toml does not report the key path, but the span points at the
        // offending key or value: show the start of that line as the key.
        let line_start = self.text[..span.start.min(self.text.len())]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        let line_text = self.text[line_start..].lines().next().unwrap_or("");
        let key = line_text
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(|c| c == '[' || c == ']');
        let key = if key.is_empty() { "(document)" } else { key };
        self.error(span, key, redact(err.message().trim()))
    }
}

/// A parser message with any quoted key-shaped text (serde quotes the
/// value it could not take) replaced by `"…"`.
pub fn redact(message: &str) -> String {
    message
        .split('"')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 && crate::secret::looks_like_key(part) {
                "…"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("\"")
}

pub type Span = std::ops::Range<usize>;

/// An optional integer key within `lo..=hi`, else `default`.
pub fn bounded(
    loc: &Locator,
    value: &Option<Spanned<i64>>,
    key: &str,
    lo: i64,
    hi: i64,
    default: i64,
) -> Result<i64, ConfigError> {
    match value {
        None => Ok(default),
        Some(s) if (lo..=hi).contains(s.get_ref()) => Ok(*s.get_ref()),
        Some(s) => Err(loc.error(s.span(), key, format!("must be between {lo} and {hi}"))),
    }
}
