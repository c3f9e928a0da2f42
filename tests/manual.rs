//! The manual page as `kbsync man` prints it and the package installs it:
//! the sections an operator looks for, only references to pages that
//! exist, and the packaged copies of the page and the completions equal
//! to what the binary prints.

use std::path::Path;
use std::process::Command;

use clap::CommandFactory;
use kbsync::cli::Cli;
use kbsync::exit;

/// `kbsync ARGS…`'s standard output; no config is read.
fn kbsync(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kbsync"))
        .args(args)
        .env("KBSYNC_CONFIG", "/nonexistent/kbsync.toml")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kbsync {args:?}: {err}");
    String::from_utf8(out.stdout).unwrap()
}

/// The page's roff with the escaped hyphens plain, as a reader sees them.
fn manual() -> String {
    kbsync(&["man"]).replace("\\-", "-")
}

/// The roff between `.SH TITLE` and the next section.
fn section<'a>(page: &'a str, title: &str) -> &'a str {
    let heading = match title.contains(' ') {
        true => format!(".SH \"{title}\"\n"),
        false => format!(".SH {title}\n"),
    };
    let start = page
        .find(&heading)
        .unwrap_or_else(|| panic!("the manual has no {title} section:\n{page}"))
        + heading.len();
    let end = page[start..]
        .find("\n.SH ")
        .map_or(page.len(), |e| start + e);
    &page[start..end]
}

#[test]
fn exit_status_lists_every_code_with_its_meaning() {
    // The codes a script may test for; the binary exits with the constants.
    let documented = [
        (0, exit::CONVERGED, "Converged"),
        (1, exit::NOT_CONVERGED, "Some items failed or were skipped"),
        (2, exit::COULD_NOT_START, "Could not start: a bad config, an unusable state file, bad arguments"),
        (3, exit::GUARD_REFUSED, "The delete guard refused to retire"),
        (4, exit::UPSTREAM_REFUSED, "The upstream refused the credentials, or the target (dataset or knowledge base) was not found"),
    ];
    let page = manual();
    let status = section(&page, "EXIT STATUS");
    let terms: Vec<&str> = status
        .split(".TP\n")
        .skip(1)
        .map(|entry| entry.lines().next().unwrap())
        .collect();
    let codes: Vec<String> = documented
        .iter()
        .map(|(code, _, _)| format!("\\fB{code}\\fR"))
        .collect();
    assert_eq!(terms, codes, "{status}");
    for (code, constant, meaning) in documented {
        assert_eq!(constant, code, "exit code for {meaning:?}");
        let entry = status.split(".TP\n").nth(usize::from(code) + 1).unwrap();
        assert!(entry.contains(meaning), "code {code}: {entry}");
    }
}

#[test]
fn files_environment_and_signals_are_documented() {
    let page = manual();
    let expected = [
        (
            "FILES",
            &[
                "/etc/kbsync/kbsync.toml",
                "/etc/kbsync/credentials/",
                "0700",
                "[state] path",
                "/var/lib/kbsync/kbsync.db",
                "/usr/lib/systemd/system/kbsync.service",
            ][..],
        ),
        (
            "ENVIRONMENT",
            &[
                "KBSYNC_CONFIG",
                "RUST_LOG",
                "NOTIFY_SOCKET",
                "WATCHDOG_USEC",
                "CREDENTIALS_DIRECTORY",
                "STATE_DIRECTORY",
                "api_key_env",
                "_file",
                "_credential",
            ][..],
        ),
        (
            "SIGNALS",
            &[
                "SIGTERM",
                "SIGINT",
                "shutdown_timeout_secs",
                "exits 0",
                "A second signal",
                "SIGHUP",
                "the running one stays",
            ][..],
        ),
    ];
    for (title, words) in expected {
        let text = section(&page, title);
        for word in words {
            assert!(text.contains(word), "{title} lacks {word:?}:\n{text}");
        }
    }
}

/// Pages the page may name: itself and those of Debian's `systemd`
/// package (`dpkg -L systemd`), which the service runs under.
const PAGES: &[&str] = &[
    "kbsync(1)",
    "systemctl(1)",
    "journalctl(1)",
    "systemd.service(5)",
    "systemd.exec(5)",
];

/// Every `name(N)` in `text`: a page reference.
fn references(text: &str) -> Vec<String> {
    let page_char = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
    let mut found = Vec::new();
    for (open, _) in text.match_indices('(') {
        let name_start = text[..open]
            .rfind(|c: char| !page_char(c))
            .map_or(0, |i| i + 1);
        let name = &text[name_start..open];
        let rest = &text[open + 1..];
        let section: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let is_page = name.starts_with(|c: char| c.is_ascii_alphabetic())
            && !section.is_empty()
            && rest[section.len()..].starts_with(')');
        if is_page {
            found.push(format!("{name}({section})"));
        }
    }
    found
}

#[test]
fn the_manual_names_only_pages_that_exist() {
    let page = manual();
    let named = references(&page);
    for reference in &named {
        assert!(
            PAGES.contains(&reference.as_str()),
            "the manual points to {reference}, which is not installed"
        );
    }
    assert!(named.contains(&"systemd.exec(5)".to_owned()), "{named:?}");
    // The scanner finds what clap_mangen writes for a command by default.
    assert_eq!(references("see kbsync-status(1)."), ["kbsync-status(1)"]);
}

#[test]
fn every_command_is_described_on_the_page() {
    let page = manual();
    let commands = section(&page, "COMMANDS");
    let cli = Cli::command();
    for sub in cli.get_subcommands() {
        let name = format!("\\fBkbsync {}\\fR", sub.get_name());
        assert!(commands.contains(&name), "no {name}:\n{commands}");
    }
    // A command's own options are with it: `retry --allow-deletes`.
    let retry = commands
        .split(".TP\n\\fBkbsync ")
        .find(|c| c.starts_with("retry"))
        .unwrap();
    assert!(
        retry.contains("--allow-deletes") && retry.contains("<ITEM>"),
        "{retry}"
    );
}

/// The generated files the package installs (Cargo.toml's assets), and the
/// command that prints each.
const GENERATED: &[(&str, &[&str])] = &[
    ("debian/generated/kbsync.1", &["man"]),
    ("debian/generated/kbsync.bash", &["completions", "bash"]),
    ("debian/generated/_kbsync", &["completions", "zsh"]),
    ("debian/generated/kbsync.fish", &["completions", "fish"]),
];

#[test]
fn the_packaged_manual_and_completions_are_what_the_binary_prints() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let regenerate = std::env::var_os("KBSYNC_REGENERATE").is_some();
    for (file, args) in GENERATED {
        let path = root.join(file);
        let printed = kbsync(args);
        if regenerate {
            std::fs::write(&path, &printed).unwrap();
        }
        let packaged = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            packaged == printed,
            "{file} is not what `kbsync {}` prints; write it again with \
             `KBSYNC_REGENERATE=1 cargo test --test manual` and commit it",
            args.join(" ")
        );
    }
}
