//! Command-line interface.

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "kbsync",
    version,
    about = "Mirror folders into knowledge bases (Dify)"
)]
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(
        short,
        long,
        default_value = "/etc/kbsync/kbsync.toml",
        env = "KBSYNC_CONFIG"
    )]
    pub config: PathBuf,

    /// Run one full pass over every job, push the changes and exit. The exit
    /// code is 0 only when everything converged.
    #[arg(long)]
    pub reconcile: bool,

    /// Print the plan without sending anything upstream or writing the state
    /// file. Implies a single pass.
    #[arg(long)]
    pub dry_run: bool,

    /// With --dry-run: print the plan as JSON.
    #[arg(long, requires = "dry_run")]
    pub json: bool,

    /// Only run these jobs (repeatable).
    #[arg(long = "job", value_name = "NAME")]
    pub jobs: Vec<String>,

    /// Log filter, e.g. `debug` or `kbsync=trace` (overrides RUST_LOG).
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
}
