//! Log output: readable on a terminal, one plain line per event under
//! journald (with the `<N>` priority prefix journald turns into the log
//! level), or JSON lines for log shippers; to stderr, or appended to a
//! file (`--log-file`).

use std::fmt;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// journald when stderr is the journal, colours on a terminal, plain
    /// text otherwise.
    Auto,
    Human,
    Plain,
    Journald,
    Json,
}

/// The log filter: `--log` as given; else what `-v` (kbsync's events at
/// debug, `-vv` trace) or `-q` (warnings and errors) ask for; else
/// RUST_LOG; else `info`.
pub fn filter(log: Option<&str>, verbose: u8, quiet: bool, env: Option<&str>) -> String {
    match (log, verbose, quiet, env) {
        (Some(log), ..) => log.to_owned(),
        (None, 0, true, _) => "warn".to_owned(),
        (None, 1, ..) => "info,kbsync=debug".to_owned(),
        (None, 2.., ..) => "info,kbsync=trace".to_owned(),
        (None, 0, false, Some(env)) => env.to_owned(),
        (None, 0, false, None) => "info".to_owned(),
    }
}

/// Sets the global subscriber. With `file`, events are appended there
/// (created if missing) instead of stderr; one that cannot be opened is
/// an error naming it.
pub fn init(filter: EnvFilter, format: LogFormat, file: Option<&Path>) -> std::io::Result<()> {
    let file = match file {
        Some(path) => Some(Arc::new(
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("log file {}: {e}", path.display()))
                })?,
        )),
        None => None,
    };
    let format = match format {
        LogFormat::Auto if file.is_some() => LogFormat::Plain,
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journald,
        LogFormat::Auto if std::io::stderr().is_terminal() => LogFormat::Human,
        LogFormat::Auto => LogFormat::Plain,
        other => other,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || Scrubbed(file.clone()));
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Journald => builder
            .with_ansi(false)
            .event_format(JournalFormat {
                inner: format::format()
                    .without_time()
                    .with_level(false)
                    .with_target(false)
                    .with_ansi(false),
            })
            .init(),
        LogFormat::Plain => builder.with_ansi(false).init(),
        _ => builder.with_ansi(true).init(),
    }
    Ok(())
}

/// stderr (around the progress bars, which would otherwise be drawn
/// over), or the log file, with every secret a client holds taken out of
/// each line: a library may log what kbsync's own messages never would
/// (its credentials, at debug level). A formatted event comes in one
/// write.
struct Scrubbed(Option<Arc<std::fs::File>>);

impl std::io::Write for Scrubbed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let clean = crate::sink::redact::logged().body(bytes::Bytes::copy_from_slice(buf));
        match &self.0 {
            Some(file) => (&**file).write_all(&clean)?,
            None => crate::progress::around_bars(|| std::io::stderr().write_all(&clean))?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &self.0 {
            Some(file) => (&**file).flush(),
            None => std::io::stderr().flush(),
        }
    }
}

/// systemd sets JOURNAL_STREAM to "device:inode" of the stream it connected
/// to stderr; if they match, journald is reading what we write.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(expected) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    expected.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
}

struct JournalFormat {
    inner: format::Format<format::Full, ()>,
}

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // sd-daemon(3) priorities: err, warning, info, debug.
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.inner.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn log_wins_then_verbosity_then_rust_log_then_info() {
        let env = Some("kbsync=warn");
        assert_eq!(filter(Some("trace"), 2, false, env), "trace");
        assert_eq!(filter(Some("error"), 0, true, env), "error");
        assert_eq!(filter(None, 1, false, env), "info,kbsync=debug");
        assert_eq!(filter(None, 2, false, env), "info,kbsync=trace");
        assert_eq!(filter(None, 3, false, None), "info,kbsync=trace");
        assert_eq!(filter(None, 0, true, env), "warn");
        assert_eq!(filter(None, 0, false, env), "kbsync=warn");
        assert_eq!(filter(None, 0, false, None), "info");
    }
}
