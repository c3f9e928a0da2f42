use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use kbsync::cli::{Cli, Command};
use kbsync::config::Roots;
use kbsync::reconcile::{self, JobReport, RunOptions};
use kbsync::state::{State, StateError, StateLock};
use kbsync::{daemon, exit, logging, report, status};
use tracing_subscriber::EnvFilter;

/// Exit codes (README, "Exit codes"): `kbsync::exit`'s, chosen from the
/// reports by `report::exit_code`; a pass stopped by Ctrl-C exits 130.
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = std::env::var("RUST_LOG").ok();
    let filter = logging::filter(cli.log.as_deref(), cli.verbose, cli.quiet, env.as_deref());
    if let Err(e) = logging::init(
        EnvFilter::new(filter),
        cli.log_format,
        cli.log_file.as_deref(),
    ) {
        eprintln!("error: {e}");
        return ExitCode::from(exit::COULD_NOT_START);
    }

    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::COULD_NOT_START)
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// One match dispatches the commands; without one, the service runs, or
/// one pass with `--reconcile` / `--dry-run`.
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match &cli.command {
        // Generated from the CLI definition itself; no config is read.
        Some(Command::Completions { shell }) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "kbsync", &mut stdout);
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Man) => {
            let cmd = <Cli as clap::CommandFactory>::command();
            kbsync::manual::render(cmd, &mut stdout)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Status { json }) => show_status(&cli, *json, &mut stdout),
        Some(Command::Retry {
            items,
            allow_deletes,
        }) => retry(&cli, items, *allow_deletes, &mut stdout),
        Some(Command::Forget) => forget(&cli, &mut stdout),
        Some(Command::Check { json }) => check(&cli, *json, &mut stdout),
        Some(Command::Config { .. }) => Ok(ExitCode::from(match kbsync::config::validate::report(
            &cli.config,
            &mut stdout,
            &mut std::io::stderr(),
        )? {
            true => 0,
            false => exit::COULD_NOT_START,
        })),
        None if cli.reconcile || cli.dry_run => one_pass(&cli, &mut stdout),
        None => {
            drop(stdout);
            serve(&cli)
        }
    }
}

/// `kbsync status`: read-only, also while the service runs.
fn show_status(cli: &Cli, json: bool, stdout: &mut impl Write) -> anyhow::Result<ExitCode> {
    let config = daemon::load_config(&cli.config, &cli.jobs, Roots::MayBeMissing)?;
    let Some(summaries) = status::read(&config, &cli.jobs)? else {
        writeln!(
            stdout,
            "no state file at {} yet: kbsync has not run with this configuration",
            config.state_path.display()
        )?;
        for (job, problem) in status::unmounted(&config) {
            writeln!(stdout, "{job}: {problem}")?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    if json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&summaries)?)?;
    } else {
        status::print(stdout, &summaries)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `kbsync retry`: parked and waiting steps are due now.
fn retry(
    cli: &Cli,
    items: &[String],
    allow_deletes: bool,
    stdout: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let config = daemon::load_config(&cli.config, &cli.jobs, Roots::MayBeMissing)?;
    if !config.state_path.exists() {
        writeln!(
            stdout,
            "nothing to retry: kbsync has not run with this configuration"
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    // With the lock, the file is opened (and upgraded) as by a pass.
    // Held by the running service, it is written as it stands: the
    // service picks the steps up; its schema is never changed under it.
    let (_lock, state) = match StateLock::acquire(&config.state_path) {
        Ok(lock) => (Some(lock), State::open(&config.state_path)?),
        Err(StateError::Busy { .. }) => (None, State::open_held(&config.state_path)?),
        Err(e) => return Err(e.into()),
    };
    let mut n = 0;
    for job in &config.jobs {
        n += state.retry_now(Some(&job.name), items)?;
    }
    if allow_deletes {
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
    for (job, problem) in status::unmounted(&config) {
        writeln!(stdout, "{job}: {problem}: its steps wait until it is back")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `kbsync forget --job NAME`: a job removed from the config leaves the
/// state file; its upstream records stay.
fn forget(cli: &Cli, stdout: &mut impl Write) -> anyhow::Result<ExitCode> {
    if cli.jobs.is_empty() {
        anyhow::bail!("name the job to forget: kbsync forget --job NAME");
    }
    let config = daemon::load_config(&cli.config, &[], Roots::MayBeMissing)?;
    if let Some(job) = cli
        .jobs
        .iter()
        .find(|j| config.jobs.iter().any(|c| &c.name == *j))
    {
        anyhow::bail!(
            "job {job:?} is still in {}; remove it from the configuration first",
            cli.config.display()
        );
    }
    if !config.state_path.exists() {
        writeln!(stdout, "nothing to forget: there is no state file yet")?;
        return Ok(ExitCode::SUCCESS);
    }
    let _lock = StateLock::acquire(&config.state_path)?;
    let state = State::open(&config.state_path)?;
    let known = state.jobs()?;
    if let Some(job) = cli.jobs.iter().find(|j| !known.contains(j)) {
        anyhow::bail!(
            "the state file holds no job {job:?} (it holds: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    }
    for job in &cli.jobs {
        let items = state.forget_job(job)?;
        writeln!(
            stdout,
            "forgot job {job:?}: {items} item(s) and their history; its upstream records were left as they are"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `kbsync check`: the dry run with the audit. A job whose root is missing
/// is still audited (upstream against the state file); its report says the
/// source was not looked at, which is a difference: the exit code is not 0.
fn check(cli: &Cli, json: bool, stdout: &mut impl Write) -> anyhow::Result<ExitCode> {
    let config = daemon::load_config(&cli.config, &cli.jobs, Roots::MayBeMissing)?;
    let opts = RunOptions {
        dry_run: true,
        audit: true,
        ..RunOptions::default()
    };
    let reports = runtime()?.block_on(reconcile::run(&config, &[], opts))?;
    if json {
        writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&report::check_json(&reports))?
        )?;
    } else {
        report::print_check(stdout, &reports)?;
    }
    Ok(ExitCode::from(report::exit_code(&reports, report::in_step)))
}

/// The service: watches and polls until SIGTERM.
fn serve(cli: &Cli) -> anyhow::Result<ExitCode> {
    let rt = runtime()?;
    let ran = rt.block_on(daemon::run(&cli.config, &cli.jobs));
    // A blocking task still running (a read that was told to stop, a
    // slow disk) must not hold the exit past the shutdown timeout.
    rt.shutdown_timeout(std::time::Duration::from_millis(250));
    ran?;
    Ok(ExitCode::SUCCESS)
}

/// `--reconcile` (one pass, with the audit unless `--no-audit`) or
/// `--dry-run` (the plan from the state file alone).
fn one_pass(cli: &Cli, stdout: &mut impl Write) -> anyhow::Result<ExitCode> {
    let config = daemon::load_config(&cli.config, &cli.jobs, Roots::MustExist)?;
    let pushes = cli.reconcile && !cli.dry_run;
    let opts = RunOptions {
        dry_run: cli.dry_run,
        honour_backoff: false,
        allow_deletes: cli.allow_deletes,
        checksum: cli.checksum,
        // A dry run plans from the state file alone (it needs no key and
        // sends nothing), also as `--reconcile --dry-run`; `kbsync check`
        // is the dry run with the audit.
        audit: pushes && !cli.no_audit,
        slice: 0,
    };
    let show_progress = pushes && !cli.quiet;
    let every = std::time::Duration::from_secs(cli.progress_secs);
    let (reports, interrupted) = runtime()?.block_on(async {
        let progress = show_progress.then(|| tokio::spawn(kbsync::progress::report(every)));
        let passes = passes(&config, opts, pushes).await;
        if let Some(p) = progress {
            p.abort();
            let _ = p.await;
        }
        passes
    })?;
    if cli.dry_run {
        print_dry_run(cli, &config, &reports, stdout)?;
        // A plan made without looking at a source (unreachable, refused)
        // is not what a pass would do (1), nor one the delete guard would
        // refuse (3): the exit code says so, as a pass's would.
        return Ok(ExitCode::from(report::exit_code(&reports, |r| {
            r.error.is_none()
        })));
    }
    if cli.json {
        let json = report::reconcile_json(&reports);
        writeln!(stdout, "{}", serde_json::to_string_pretty(&json)?)?;
    } else {
        report::print_summary(stdout, &reports)?;
    }
    Ok(ExitCode::from(if interrupted {
        EXIT_INTERRUPTED
    } else {
        report::exit_code(&reports, JobReport::converged)
    }))
}

/// One pass per job, in order. With `stoppable`, a first Ctrl-C lets the
/// running pass finish the upstream calls under way and start no other,
/// and no later job starts (true is returned with the reports); a second
/// one exits at once.
async fn passes(
    config: &kbsync::config::Config,
    opts: RunOptions,
    stoppable: bool,
) -> anyhow::Result<(Vec<JobReport>, bool)> {
    let mut runner = reconcile::Runner::open(config.clone(), opts)?;
    let stop = runner.stop_flag();
    let watcher = stoppable.then(|| tokio::spawn(interrupts(stop.clone())));
    let mut reports = Vec::new();
    for job in &config.jobs {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        kbsync::progress::start(&job.name);
        let scope = kbsync::source::Scope::All;
        reports.push(runner.run_job(&job.name, &scope).await?);
    }
    if let Some(w) = watcher {
        w.abort();
    }
    Ok((reports, stop.load(std::sync::atomic::Ordering::SeqCst)))
}

/// Ctrl-C: the first stops the pass gracefully, the second abandons it
/// (what was confirmed is in the state file; the rest is replayed on the
/// next run).
async fn interrupts(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    tracing::warn!(
        "interrupted: starting no new upstream call, waiting for those under way (Ctrl-C again to abandon them)"
    );
    if tokio::signal::ctrl_c().await.is_ok() {
        tracing::warn!(
            "interrupted again: abandoning the calls under way; they are replayed on the next run"
        );
        kbsync::progress::clear();
        std::process::exit(i32::from(EXIT_INTERRUPTED));
    }
}

/// What a dry run would do, as text or JSON.
fn print_dry_run(
    cli: &Cli,
    config: &kbsync::config::Config,
    reports: &[reconcile::JobReport],
    stdout: &mut impl Write,
) -> anyhow::Result<()> {
    if cli.json {
        writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&report::plan_json(reports))?
        )?;
        return Ok(());
    }
    report::print_plan(stdout, reports, config)?;
    for r in reports {
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
    Ok(())
}
