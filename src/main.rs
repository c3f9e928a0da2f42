use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use kbsync::cli::Cli;
use kbsync::config::Config;
use kbsync::reconcile::{self, RunOptions};
use kbsync::report;
use tracing_subscriber::EnvFilter;

/// Exit codes: 0 converged, 1 some items failed or were skipped, 2 the run
/// could not start (bad config, unusable state file, bad arguments).
const EXIT_NOT_CONVERGED: u8 = 1;
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = cli.log.as_deref().map(EnvFilter::new).unwrap_or_else(|| {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load(&cli.config)?;
    for name in &cli.jobs {
        if !config.jobs.iter().any(|j| &j.name == name) {
            anyhow::bail!("no job named {name:?} in {}", cli.config.display());
        }
    }
    if !cli.reconcile && !cli.dry_run {
        anyhow::bail!("daemon mode is not available yet: run with --reconcile (one pass) or --dry-run (plan only)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let opts = RunOptions {
        dry_run: cli.dry_run,
    };
    let reports = runtime.block_on(reconcile::run(&config, &cli.jobs, opts))?;

    let mut stdout = std::io::stdout().lock();
    if cli.dry_run {
        if cli.json {
            writeln!(
                stdout,
                "{}",
                serde_json::to_string_pretty(&report::plan_json(&reports))?
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        report::print_plan(&mut stdout, &reports)?;
        for r in &reports {
            for s in &r.skipped {
                writeln!(stdout, "skipped {}: {}", s.path, s.reason)?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    report::print_summary(&mut stdout, &reports)?;
    Ok(if reports.iter().all(|r| r.converged()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_CONVERGED)
    })
}
