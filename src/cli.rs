//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::logging::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "kbsync",
    version,
    about = "Mirror folders and web pages into knowledge bases (Dify, PAI, Sharely)",
    long_about = "Mirror folders and web pages into knowledge bases (Dify, PAI, Sharely).\n\nWithout a flag or command kbsync runs as a service: a full pass, then it watches the folders and pushes each change as it happens. --reconcile runs one pass and exits; --dry-run prints the plan."
)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(
        short,
        long,
        global = true,
        default_value = "/etc/kbsync/kbsync.toml",
        env = "KBSYNC_CONFIG"
    )]
    pub config: PathBuf,

    /// Run one full pass over every job, push the changes and exit. The exit
    /// code is 0 only when everything converged.
    #[arg(long)]
    pub reconcile: bool,

    /// Print the plan without sending anything upstream or writing the state
    /// file. Implies a single pass; with --reconcile, shows what that pass
    /// would do.
    #[arg(long)]
    pub dry_run: bool,

    /// With --reconcile: retire (delete, disable, archive) whatever the
    /// plan retires, beyond the delete guard (`max_delete`).
    #[arg(long, requires = "reconcile")]
    pub allow_deletes: bool,

    /// With --reconcile or --dry-run: read every file, trusting no recorded
    /// size, mtime or settled flag (a deep verify).
    #[arg(long)]
    pub checksum: bool,

    /// With --reconcile: skip the upstream audit (listing what the
    /// knowledge base holds and repairing drift).
    #[arg(long, requires = "reconcile")]
    pub no_audit: bool,

    /// With --reconcile: show no progress (a bar on a terminal, else a
    /// line every --progress-secs).
    #[arg(long)]
    pub quiet: bool,

    /// With --reconcile, off a terminal: seconds between progress lines.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub progress_secs: u64,

    /// With --dry-run: print the plan as JSON.
    #[arg(long, requires = "dry_run")]
    pub json: bool,

    /// Only run these jobs (repeatable).
    #[arg(long = "job", value_name = "NAME", global = true)]
    pub jobs: Vec<String>,

    /// Log filter, e.g. `debug` or `kbsync=trace` (overrides RUST_LOG).
    #[arg(long, value_name = "FILTER", global = true)]
    pub log: Option<String>,

    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Per job: items tracked, pending and failed (with reasons), last
    /// sync, and a root that is missing or looks unmounted. Reads the
    /// state file; safe while the service runs.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Compare the knowledge base with the source and the state file:
    /// print every difference (drift found by the upstream audit, and what
    /// a pass would do). Changes nothing; exits 1 when there is any, or
    /// when a job's root is missing: its upstream is still compared with
    /// the state file, but nothing vouches for its source.
    Check {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Try again now what failed: steps the upstream refused (parked until
    /// the file changes) and steps waiting out a backoff. Safe while the
    /// service runs; it picks them up within seconds.
    Retry {
        /// Only these items (keys as `status` prints them); all when none.
        #[arg(value_name = "ITEM")]
        items: Vec<String>,
        /// Also let the next full pass of each job retire beyond the delete
        /// guard (`max_delete`), after a pass was refused.
        #[arg(long)]
        allow_deletes: bool,
    },
    /// Print a shell completion script: `kbsync completions bash >
    /// /usr/share/bash-completion/completions/kbsync`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `kbsync man > /usr/share/man/man1/kbsync.1`.
    Man,
    /// Drop from the state file every row of the jobs named with `--job`,
    /// which must be gone from the configuration. Their upstream records
    /// stay as they are. Needs the state file to itself (stop the service
    /// first).
    Forget,
    /// Work with the configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Report every error in the configuration at once (file:line:column,
    /// key path, "did you mean"), as the service would load it; exit 0 when
    /// it is valid, 2 otherwise. Nothing is sent anywhere.
    Validate,
}
