use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use kbsync::cli::{Cli, Command};
use kbsync::reconcile::{self, RunOptions};
use kbsync::{daemon, logging, report, status};
use tracing_subscriber::EnvFilter;

/// Exit codes: 0 converged (or a clean service stop), 1 some items failed
/// or were skipped, 2 the run could not start (bad config, unusable state
/// file, bad arguments).
const EXIT_NOT_CONVERGED: u8 = 1;
const EXIT_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = cli.log.as_deref().map(EnvFilter::new).unwrap_or_else(|| {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
    });
    logging::init(filter, cli.log_format);

    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    if let Some(Command::Status { json }) = &cli.command {
        let config = daemon::load_config(&cli.config, &cli.jobs)?;
        let Some(summaries) = status::read(&config.state_path, &cli.jobs)? else {
            writeln!(
                stdout,
                "no state file at {} yet: kbsync has not run with this configuration",
                config.state_path.display()
            )?;
            return Ok(ExitCode::SUCCESS);
        };
        if *json {
            writeln!(stdout, "{}", serde_json::to_string_pretty(&summaries)?)?;
        } else {
            status::print(&mut stdout, &summaries)?;
        }
        return Ok(ExitCode::SUCCESS);
    }

    if let Some(Command::Retry {
        items,
        allow_deletes,
    }) = &cli.command
    {
        let config = daemon::load_config(&cli.config, &cli.jobs)?;
        if !config.state_path.exists() {
            writeln!(
                stdout,
                "nothing to retry: kbsync has not run with this configuration"
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        let state = kbsync::state::State::open(&config.state_path)?;
        let mut n = 0;
        for job in &config.jobs {
            n += state.retry_now(Some(&job.name), items)?;
        }
        if *allow_deletes {
            state.allow_deletes(&config.job_names())?;
            writeln!(
                stdout,
                "the next full pass of each job may retire beyond max_delete: the running service starts one within {} s, or run `kbsync --reconcile`",
                daemon::OUTBOX_CHECK.as_secs()
            )?;
        }
        writeln!(
            stdout,
            "{n} step(s) will be tried again: by the running service within {} s, or by the next `kbsync --reconcile`",
            daemon::OUTBOX_CHECK.as_secs()
        )?;
        return Ok(ExitCode::SUCCESS);
    }

    if let Some(Command::Check { json }) = &cli.command {
        let config = daemon::load_config(&cli.config, &cli.jobs)?;
        let opts = RunOptions {
            dry_run: true,
            audit: true,
            ..RunOptions::default()
        };
        let reports = runtime()?.block_on(reconcile::run(&config, &[], opts))?;
        let clean = if *json {
            writeln!(
                stdout,
                "{}",
                serde_json::to_string_pretty(&report::check_json(&reports))?
            )?;
            reports.iter().all(report::in_step)
        } else {
            report::print_check(&mut stdout, &reports)?
        };
        return Ok(if clean {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_NOT_CONVERGED)
        });
    }

    if !cli.reconcile && !cli.dry_run {
        drop(stdout);
        runtime()?.block_on(daemon::run(&cli.config, &cli.jobs))?;
        return Ok(ExitCode::SUCCESS);
    }

    let config = daemon::load_config(&cli.config, &cli.jobs)?;
    let opts = RunOptions {
        dry_run: cli.dry_run,
        honour_backoff: false,
        allow_deletes: cli.allow_deletes,
        checksum: cli.checksum,
        // A dry run plans from the state file alone (it needs no key and
        // sends nothing); `kbsync check` is the dry run with the audit.
        audit: cli.reconcile && !cli.no_audit,
    };
    let reports = runtime()?.block_on(reconcile::run(&config, &[], opts))?;

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
            if let Some(e) = &r.error {
                writeln!(stdout, "error {}: {e}", r.job)?;
            }
            if let Some(refusal) = &r.refused {
                writeln!(stdout, "guard {}: {refusal}", r.job)?;
            }
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
