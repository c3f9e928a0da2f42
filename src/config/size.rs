//! File sizes as every source section writes them (`max_file_size`).

use toml::Spanned;

use super::locate::Locator;
use super::ConfigError;

/// Dify's default upload limit (UPLOAD_FILE_SIZE_LIMIT) is 15 MB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 15 * 1024 * 1024;

pub fn size_limit(
    loc: &Locator,
    key: &str,
    v: &Option<Spanned<toml::Value>>,
) -> Result<u64, ConfigError> {
    match v {
        None => Ok(DEFAULT_MAX_FILE_SIZE),
        Some(v) => parse_size(v.get_ref()).ok_or_else(|| {
            loc.error(
                v.span(),
                key,
                "expected a positive size in bytes, or a string such as \"15MB\" or \"512KiB\"",
            )
        }),
    }
}

/// Accepts `1048576`, `"15MB"`, `"512 KiB"`, `"1G"`; decimal and binary units.
pub fn parse_size(v: &toml::Value) -> Option<u64> {
    match v {
        toml::Value::Integer(i) if *i > 0 => Some(*i as u64),
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: u64 = num.parse().ok()?;
            let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "k" | "kb" => 1_000,
                "kib" => 1 << 10,
                "m" | "mb" => 1_000_000,
                "mib" => 1 << 20,
                "g" | "gb" => 1_000_000_000,
                "gib" => 1 << 30,
                _ => return None,
            };
            n.checked_mul(mult).filter(|&b| b > 0)
        }
        _ => None,
    }
}
