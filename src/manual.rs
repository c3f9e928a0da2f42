//! The manual page (`kbsync man`, shipped as kbsync.1): clap_mangen's
//! sections from the CLI definition, then what the definition cannot say
//! (exit status, environment, files, signals). The commands are described
//! on this page itself: clap_mangen would point at a page per command
//! (`kbsync-status(1)`), and none is installed.

use std::io::{self, Write};

use clap::{Arg, Command};
use clap_mangen::Man;
use roff::{bold, roman, Roff};

use crate::exit;

/// One part of the page, written as roff.
type Part<'a> = &'a dyn Fn(&mut dyn Write) -> io::Result<()>;

/// Writes the whole page for `cmd` (the CLI definition) to `w`.
pub fn render(cmd: Command, w: &mut dyn Write) -> io::Result<()> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let man = Man::new(cmd.clone());
    let mut ours = Roff::new();
    commands(&mut ours, &cmd);
    exit_status(&mut ours);
    list(&mut ours, "ENVIRONMENT", ENVIRONMENT);
    list(&mut ours, "FILES", FILES);
    list(&mut ours, "SIGNALS", SIGNALS);
    let mut see_also = Roff::new();
    see_also.control("SH", ["SEE ALSO"]).text([roman(SEE_ALSO)]);
    let parts: [Part; 8] = [
        &|w| man.render_title(w),
        &|w| man.render_name_section(w),
        &|w| man.render_synopsis_section(w),
        &|w| man.render_description_section(w),
        &|w| man.render_options_section(w),
        &|w| ours.to_writer(w),
        &|w| man.render_version_section(w),
        &|w| see_also.to_writer(w),
    ];

    // Every part starts with the same definition of `\*(Aq` (an upright
    // apostrophe); the page needs it once.
    let preamble = Roff::new().render();
    let mut page = preamble.clone();
    for part in parts {
        let mut roff = Vec::new();
        part(&mut roff)?;
        let roff =
            String::from_utf8(roff).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        page.push_str(roff.strip_prefix(&preamble).unwrap_or(&roff));
    }
    w.write_all(page.as_bytes())
}

/// COMMANDS: each subcommand (and theirs, as `kbsync config validate`)
/// with its own arguments; the global options are under OPTIONS.
fn commands(roff: &mut Roff, cmd: &Command) {
    let visible = |c: &Command| c.get_subcommands().any(|s| !s.is_hide_set());
    if visible(cmd) {
        roff.control("SH", ["COMMANDS"]);
        subcommands(roff, cmd.get_name(), cmd);
    }
}

fn subcommands(roff: &mut Roff, parent: &str, cmd: &Command) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{parent} {}", sub.get_name());
        let args: Vec<&Arg> = sub.get_arguments().filter(|a| own(a)).collect();
        let mut term = vec![bold(name.as_str())];
        term.extend(args.iter().map(|a| match a.is_required_set() {
            true => roman(format!(" {}", usage(a))),
            false => roman(format!(" [{}]", usage(a))),
        }));
        roff.control("TP", []).text(term);
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            roff.text([roman(about.to_string())]);
        }
        if !args.is_empty() {
            roff.control("RS", []);
            for arg in &args {
                roff.control("TP", []).text([bold(usage(arg))]);
                if let Some(help) = help(arg) {
                    roff.text([roman(help)]);
                }
            }
            roff.control("RE", []);
        }
        subcommands(roff, &name, sub);
    }
}

/// An argument's help, with the values it takes when it names them.
fn help(arg: &Arg) -> Option<String> {
    let help = arg
        .get_long_help()
        .or(arg.get_help())
        .map(|h| h.to_string());
    let possible = arg.get_possible_values();
    let values: Vec<&str> = possible
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name())
        .collect();
    match (help, values.is_empty()) {
        (help, true) => help,
        (Some(help), false) => Some(format!("{help} (one of: {})", values.join(", "))),
        (None, false) => Some(format!("One of: {}.", values.join(", "))),
    }
}

/// An argument of this subcommand alone: not a global option, not `--help`.
fn own(arg: &Arg) -> bool {
    !arg.is_global_set() && !arg.is_hide_set() && arg.get_id() != "help"
}

/// `--json`, `--since <SECS>`, `<ITEM>...`, as `--help` writes them.
fn usage(arg: &Arg) -> String {
    let value = arg
        .get_value_names()
        .map(|names| names.iter().map(|n| format!("<{n}>")).collect::<Vec<_>>())
        .unwrap_or_else(|| vec![format!("<{}>", arg.get_id().as_str().to_uppercase())]);
    let takes = arg.get_num_args().is_some_and(|n| n.takes_values());
    let repeats = arg.get_num_args().is_some_and(|n| n.max_values() > 1);
    let dots = if repeats { "..." } else { "" };
    match (arg.get_long(), arg.get_short()) {
        (Some(long), _) if takes => format!("--{long} {}{dots}", value.join(" ")),
        (Some(long), _) => format!("--{long}"),
        (None, Some(short)) if takes => format!("-{short} {}{dots}", value.join(" ")),
        (None, Some(short)) => format!("-{short}"),
        (None, None) => format!("{}{dots}", value.join(" ")),
    }
}

/// EXIT STATUS, from the constants the binary exits with.
fn exit_status(roff: &mut Roff) {
    let codes: [(u8, &str); 5] = [
        (
            exit::CONVERGED,
            "Converged: every job's upstream matches its source; or the service stopped cleanly.",
        ),
        (exit::NOT_CONVERGED, "Some items failed or were skipped."),
        (
            exit::COULD_NOT_START,
            "Could not start: a bad config, an unusable state file, bad arguments.",
        ),
        (exit::GUARD_REFUSED, "The delete guard refused to retire."),
        (
            exit::UPSTREAM_REFUSED,
            "The upstream refused the credentials, or the target (dataset or knowledge base) was not found.",
        ),
    ];
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in codes {
        roff.control("TP", [])
            .text([bold(code.to_string())])
            .text([roman(meaning)]);
    }
}

/// A section of terms, each with its paragraph.
fn list(roff: &mut Roff, title: &str, entries: &[(&str, &str)]) {
    roff.control("SH", [title]);
    for (term, text) in entries {
        roff.control("TP", [])
            .text([bold(*term)])
            .text([roman(*text)]);
    }
}

const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "KBSYNC_CONFIG",
        "The configuration file when --config is not given (default /etc/kbsync/kbsync.toml).",
    ),
    (
        "RUST_LOG",
        "The log filter, e.g. info or kbsync=debug, when --log is not given (default info).",
    ),
    (
        "*_env settings",
        "A secret is never written in the configuration: a setting such as api_key_env, token_env, password_env, secret_access_key_env, api_token_env or github_secret_env names the environment variable that holds it. Its *_file twin names a file instead, its *_credential twin a systemd credential.",
    ),
    (
        "CREDENTIALS_DIRECTORY",
        "Set by systemd for a unit with LoadCredential=: a *_credential = \"name\" setting reads the file name in this folder.",
    ),
    (
        "STATE_DIRECTORY",
        "Set by systemd for a unit with StateDirectory=: without [state] path, the state file is kbsync.db in the first folder it names.",
    ),
    (
        "NOTIFY_SOCKET, WATCHDOG_USEC",
        "Set by systemd for Type=notify and WatchdogSec=: the service reports READY=1, its status and stopping there, and pings the watchdog every half interval. Outside systemd they are unset and nothing is sent.",
    ),
    (
        "JOURNAL_STREAM",
        "Set by systemd when standard error goes to the journal: --log-format auto then writes the journal's format.",
    ),
];

const FILES: &[(&str, &str)] = &[
    (
        "/etc/kbsync/kbsync.toml",
        "The default configuration (--config, KBSYNC_CONFIG). The package installs /etc/kbsync/example.toml beside it, with every key explained.",
    ),
    (
        "/etc/kbsync/credentials/",
        "API keys and tokens, one file each, in a folder only root may enter (0700); the unit hands them to the service with LoadCredential=. Purging the package removes it.",
    ),
    (
        "/var/lib/kbsync/kbsync.db",
        "The state file (SQLite, with -wal, -shm and .lock files beside it), set by [state] path (relative to the configuration's folder). Without it: kbsync.db in $STATE_DIRECTORY (this path, under the unit), else beside the configuration.",
    ),
    (
        "/usr/lib/systemd/system/kbsync.service",
        "The unit that runs the service as the kbsync user; systemctl reload kbsync sends SIGHUP.",
    ),
];

const SIGNALS: &[(&str, &str)] = &[
    (
        "SIGTERM, SIGINT",
        "The service starts no new upstream call, gives the calls in flight [daemon] shutdown_timeout_secs (30 s) to finish, and exits 0. A second signal abandons them at once; what was not confirmed is planned again on the next start.",
    ),
    (
        "SIGHUP",
        "The service reads its configuration again and runs a full pass of every job. A configuration that does not load is logged and the running one stays in effect.",
    ),
];

const SEE_ALSO: &str = "systemctl(1), journalctl(1), systemd.service(5), systemd.exec(5), and /usr/share/doc/kbsync/README.md";
