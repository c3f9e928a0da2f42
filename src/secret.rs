//! API keys and other credentials: loaded from the environment or a file,
//! never printed. `Secret` has no `Display` and a redacting `Debug`, so a
//! key cannot end up in a log line or an error message by accident.

use std::path::{Path, PathBuf};

#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The raw value, for the one place that needs it: the HTTP header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Where a credential comes from. Resolved only when a job really talks to
/// its upstream, so a dry run works without any credential present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
    /// A systemd credential: `$CREDENTIALS_DIRECTORY/<name>` (`LoadCredential=`).
    Credential(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set (it should hold the API key)")]
    EnvMissing(String),
    #[error("cannot read the API key file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credential {0:?} requested but $CREDENTIALS_DIRECTORY is not set (is the service started with LoadCredential=?)")]
    NoCredentialsDirectory(String),
    #[error("the API key from {0} is empty")]
    Empty(String),
}

impl SecretSource {
    pub fn describe(&self) -> String {
        match self {
            SecretSource::Env(name) => format!("environment variable {name}"),
            SecretSource::File(path) => format!("file {}", path.display()),
            SecretSource::Credential(name) => format!("systemd credential {name}"),
        }
    }

    pub fn load(&self) -> Result<Secret, SecretError> {
        let raw = match self {
            SecretSource::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::EnvMissing(name.clone()))?
            }
            SecretSource::File(path) => read_file(path)?,
            SecretSource::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .ok_or_else(|| SecretError::NoCredentialsDirectory(name.clone()))?;
                read_file(&Path::new(&dir).join(name))?
            }
        };
        // Files written by editors or `echo` end with a newline that is not
        // part of the key.
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(SecretError::Empty(self.describe()));
        }
        Ok(Secret(trimmed.to_owned()))
    }
}

fn read_file(path: &Path) -> Result<String, SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
        path: path.to_owned(),
        source,
    })?;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                "API key file {} is readable by other users (mode {mode:03o}); restrict it: chmod 600 {}",
                path.display(),
                path.display()
            );
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("dataset-abc123".into());
        assert!(!format!("{s:?}").contains("abc123"));
    }

    /// Loads a key file that holds `text`.
    fn load_file(text: &str) -> Result<Secret, SecretError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, text).unwrap();
        SecretSource::File(p).load()
    }

    #[test]
    fn file_secret_is_trimmed() {
        assert_eq!(load_file("dataset-xyz\n").unwrap().expose(), "dataset-xyz");
    }

    #[test]
    fn empty_file_is_an_error() {
        let err = load_file("\n").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }
}

/// Whether `s` looks like an API key or token rather than a name, path or
/// id: a known key prefix, or a long run of letters and digits in mixed
/// case (ids are UUIDs or short; variable names are upper case).
pub fn looks_like_key(s: &str) -> bool {
    let s = s.trim();
    const PREFIXES: &[&str] = &["dataset-", "app-", "sk-", "LTAI", "Bearer ", "eyJ"];
    if PREFIXES.iter().any(|p| {
        s.len() >= p.len() + 12 && s.starts_with(p) && !s[p.len()..].contains(['/', '.', ' '])
    }) {
        return true;
    }
    if s.len() < 24
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return false;
    }
    if is_uuid(s) {
        return false;
    }
    let digits = s.chars().filter(char::is_ascii_digit).count();
    let upper = s.chars().filter(char::is_ascii_uppercase).count();
    let lower = s.chars().filter(char::is_ascii_lowercase).count();
    digits >= 4 && upper >= 2 && lower >= 2
}

/// 8-4-4-4-12 hexadecimal digits.
fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod key_shape_tests {
    use super::looks_like_key;

    #[test]
    fn keys_are_told_from_names_paths_and_ids() {
        for key in [
            "dataset-0Jx3kQm7vT9pLw2RzA5bNc8d",
            "app-Kf83hfD92jdkLs02",
            "sk-sharely-TESTKEY42abcdef",
            "LTAI5tQ8xZ2vRm9Kp3Lw",
            "eyJhbGciOiJIUzI1NiJ9eyJzdWIiOiJrIn0",
            "Ab3dEf6hIj9kLm2nOp5qRs8t",
        ] {
            assert!(looks_like_key(key), "{key}");
        }
        for other in [
            "DIFY_API_KEY",
            "SHARELY_API_KEY_FOR_THE_HANDBOOK_2024",
            "/etc/kbsync/dify.key",
            "secrets/dify.key",
            "0f4b6c8e-1111-4000-8000-00000000aa01",
            "https://api.dify.ai/v1",
            "handbook/**/*.md",
            "dataset-key",
            "engineering-runbooks-2024",
            "d-abc123",
        ] {
            assert!(!looks_like_key(other), "{other}");
        }
    }
}
