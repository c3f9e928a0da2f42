//! `kbsync config validate`: every error in the config at once, each with
//! its file, line, column and key path, or "ok" and what it holds. It
//! validates as the service would load the file (a folder root must
//! exist) and sends nothing anywhere.

use std::io::Write;
use std::path::Path;

use super::{Config, ConfigError, Roots};

/// What the check found: `Ok(jobs)` when the config would load.
pub fn validate(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        vec![ConfigError::Read {
            path: path.to_owned(),
            source,
        }]
    })?;
    Config::check(path, &text, Roots::MustExist)
}

/// Prints the verdict: "ok: …" on `out`, or each error on `err` and a
/// count. Returns whether the config is valid.
pub fn report(path: &Path, out: &mut impl Write, err: &mut impl Write) -> std::io::Result<bool> {
    match validate(path) {
        Ok(config) => {
            writeln!(
                out,
                "ok: {} is valid, {} job(s): {}",
                path.display(),
                config.jobs.len(),
                config.job_names().join(", ")
            )?;
            Ok(true)
        }
        Err(errors) => {
            for e in &errors {
                writeln!(err, "{e}")?;
            }
            writeln!(err, "{} error(s) in {}", errors.len(), path.display())?;
            Ok(false)
        }
    }
}
