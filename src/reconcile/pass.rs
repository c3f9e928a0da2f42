//! One pass of one job, as its steps: open the source, bind and audit the
//! upstream, survey, guard, then per slice record → plan → queue → push →
//! settle, and log the run.

use std::time::Instant;

use super::{
    adopt_listed, audit, connect, forget_only, guard, needs_upstream, outbox, plan_fingerprint,
    plan_pass, push, queue, record, settle, AuditReport, JobConfig, JobReport, Outcome, Pushed,
    ReconcileError, Refused, Runner, ScanTotals, KEPT_OPS, SLICE,
};
use crate::guard::Refusal;
use crate::plan::{self, Rules};
use crate::sink::PushContext;
use crate::source::{ScanInput, Scanned, Scope, Survey};

/// When a pass began: for its elapsed time and its run log row.
#[derive(Clone, Copy)]
struct Began {
    at: Instant,
    unix: i64,
}

/// What binding and auditing the upstream left for the rest of the pass.
struct Bound {
    requests: u64,
    audit: Option<AuditReport>,
    audit_error: Option<String>,
}

/// What the slices of a pass add up to, beside its report.
struct Slices {
    totals: ScanTotals,
    outcome: Option<Outcome>,
    scan_elapsed: std::time::Duration,
    /// Every slice was pushed (none stopped the pass).
    complete: bool,
    /// The pass read every file (`rehash_interval_secs`) and pushed all.
    rehashed: bool,
}

impl Runner {
    /// One pass: bind, audit, survey, guard, then per slice record → plan →
    /// queue → push → settle, and the run log.
    pub(super) async fn run_one(
        &mut self,
        job: &JobConfig,
        scope: &Scope,
    ) -> Result<JobReport, ReconcileError> {
        let began = Began {
            at: Instant::now(),
            unix: crate::state::unix_now(),
        };
        let bind = |key: &str| job.sink.bound(key);
        let rules = Rules {
            mappings: &job.metadata,
            delete_policy: job.delete_policy,
            caps: job.sink.capabilities(),
            bind: &bind,
        };
        let scope = &self.open_source(job, scope)?;
        if let Some(why) = self.sources[&job.name].unavailable().await {
            return self.unscanned(job, scope, why, began).await;
        }
        let bound = match self.bind_and_audit(job, scope).await? {
            Ok(bound) => bound,
            Err(refused) => return self.stopped(job, scope, began.at, began.unix, refused),
        };
        let mut survey = self.survey(job, scope, &rules).await?;
        let scan_elapsed = began.at.elapsed();
        // A pass over part of the tree spends no allowance: the full pass
        // it was given for may still come.
        let allowance = scope.is_all() && self.state.deletes_allowed(&job.name)?;
        let refused = self.guard(job, &rules, &survey, allowance)?;
        let mut report = JobReport {
            audit: bound.audit,
            audit_error: bound.audit_error,
            requests: bound.requests,
            refused,
            ..JobReport::new(&job.name)
        };
        let mut slices = Slices {
            totals: ScanTotals::default(),
            outcome: None,
            scan_elapsed,
            complete: true,
            rehashed: false,
        };
        let size = if self.opts.slice == 0 {
            SLICE
        } else {
            self.opts.slice
        };
        while let Some((slice_scope, scanned)) = survey.next(size).await {
            let stop = self
                .slice(job, &rules, &slice_scope, scanned, &mut report, &mut slices)
                .await?;
            if stop {
                slices.complete = false;
                break;
            }
        }
        report.scan_elapsed = slices.scan_elapsed;
        slices.totals.log(scope, &report);
        if self.opts.dry_run {
            report.elapsed = began.at.elapsed();
            return Ok(report);
        }
        slices.rehashed = slices.complete && survey.rehashed();
        self.finish(job, scope, report, slices, allowance, began)
    }

    /// The job's source, opened on first use, and the scope it reads.
    fn open_source(&mut self, job: &JobConfig, scope: &Scope) -> Result<Scope, ReconcileError> {
        let source = match self.sources.entry(job.name.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(job.source.open().map_err(ReconcileError::Http)?)
            }
        };
        Ok(source.scope(scope))
    }

    /// A pass whose source cannot be looked at, logged as a run.
    async fn unscanned(
        &mut self,
        job: &JobConfig,
        scope: &Scope,
        why: String,
        began: Began,
    ) -> Result<JobReport, ReconcileError> {
        let mut report = self.without_source(job, scope, why).await?;
        report.elapsed = began.at.elapsed();
        if !self.opts.dry_run {
            super::log_run(&self.state, scope, began.unix, &report)?;
        }
        Ok(report)
    }

    /// Checks the target once per run, claims it and audits it when an
    /// audit is due; `Err` when the upstream refused the job's target.
    async fn bind_and_audit(
        &mut self,
        job: &JobConfig,
        scope: &Scope,
    ) -> Result<Result<Bound, Refused>, ReconcileError> {
        let dry_run = self.opts.dry_run;
        let mut requests = 0;
        if !dry_run && !self.bound.contains(&job.name) {
            let (bound, sent) = self.bind(job).await?;
            if let Err(refused) = bound {
                return Ok(Err(refused));
            }
            requests = sent;
            self.bound.insert(job.name.clone());
        }
        let auditing = scope.is_all() && self.audit_due(job);
        if !auditing {
            return Ok(Ok(Bound {
                requests,
                audit: None,
                audit_error: None,
            }));
        }
        if !dry_run {
            let (refused, sent) = self.claim(job).await;
            if let Some(refused) = refused {
                return Ok(Err(refused));
            }
            requests += sent;
        }
        let (audit, failure, sent) = self.audit(job).await?;
        if let Some(refused) = failure.as_ref().and_then(|e| e.refused.clone()) {
            return Ok(Err(refused));
        }
        Ok(Ok(Bound {
            requests: requests + sent,
            audit,
            audit_error: failure.map(|e| e.message),
        }))
    }

    /// Walks the source (what changed since the state file's last look)
    /// and records respelled paths as the same items.
    async fn survey(
        &mut self,
        job: &JobConfig,
        scope: &Scope,
        rules: &Rules<'_>,
    ) -> Result<Survey, ReconcileError> {
        let source = self.sources.get(&job.name).expect("opened first");
        let mut survey = source
            .survey(ScanInput {
                job: &job.name,
                state: &mut self.state,
                scope,
                own: &self.own,
                fingerprint: &plan_fingerprint(job, rules),
                record_fingerprint: !self.opts.dry_run,
                checksum: self.opts.checksum,
                stop: self.stop.clone(),
                refuses: &|key| job.sink.refuses_item(key),
            })
            .await?;
        // Before the guard counts what is gone: a path respelled is the
        // same item, never a retirement beside a create.
        let respelled = survey.pair_respellings();
        if !self.opts.dry_run {
            for (old, new) in &respelled {
                tracing::info!(from = %old, to = %new, "the same path respelled (Unicode normalization): its document follows");
                self.state.rename_item(&job.name, old, new)?;
            }
        }
        Ok(survey)
    }

    /// The delete guard, judging the whole pass before any slice retires:
    /// a mass deletion cut into slices is still one. Counting the job's
    /// records scans its rows: only when something would be retired.
    fn guard(
        &self,
        job: &JobConfig,
        rules: &Rules<'_>,
        survey: &Survey,
        allowance: bool,
    ) -> Result<Option<Refusal>, ReconcileError> {
        if self.opts.allow_deletes || allowance {
            return Ok(None);
        }
        let gone = survey.gone();
        let mut retiring = plan::plan(std::iter::empty(), &gone, rules, &|_| false);
        if !guard::retires_any(&retiring) {
            return Ok(None);
        }
        let refused = guard::check(
            &mut retiring,
            self.state.tracked_records(&job.name)?,
            job.max_delete,
            // Retired before: gone from the source at an earlier pass and
            // switched off upstream then. A record a refused pass left
            // enabled was never retired, only held back.
            &|key| {
                gone.get(key)
                    .is_some_and(|c| !c.present && c.status != crate::state::RemoteStatus::Enabled)
            },
        );
        if let Some(r) = &refused {
            tracing::error!("{r}");
        }
        Ok(refused)
    }

    /// One slice: record what was read, plan, queue, push, settle. True
    /// when the pass must stop (a fatal answer, an interruption).
    async fn slice(
        &mut self,
        job: &JobConfig,
        rules: &Rules<'_>,
        slice_scope: &Scope,
        mut scanned: Scanned,
        report: &mut JobReport,
        slices: &mut Slices,
    ) -> Result<bool, ReconcileError> {
        let read_from = Instant::now();
        slices.totals.add(&scanned);
        report.scanned += scanned.scan.items.len() + scanned.scan.unchanged;
        report.hashed_files += scanned.scan.hashed_files;
        report.unchanged += scanned.scan.unchanged;
        if !self.opts.dry_run {
            record(&mut self.state, &job.name, &scanned)?;
            if let (Some(_), Some(sink)) = (&report.audit, self.sinks.get(&job.name)) {
                adopt_listed(&self.state, &job.name, &**sink, &mut scanned)?;
            }
        }
        slices.scan_elapsed += read_from.elapsed();

        let (mut plan, skipped) = plan_pass(job, rules, &scanned);
        if report.refused.is_some() {
            guard::strip(&mut plan);
        }
        report.skipped.extend(skipped);
        if self.opts.dry_run {
            // Show what the outbox would hold back, without writing it.
            let rows = self.state.outbox_in(&job.name, slice_scope)?;
            report
                .held
                .extend(outbox::hold(&plan, &rows, crate::state::unix_now(), false).1);
            report.plan.absorb(plan, usize::MAX);
            return Ok(false);
        }
        let pushed = self
            .execute(job, slice_scope, &scanned, &plan, report)
            .await?;
        let mut stop = report.error.is_some();
        if let Some(p) = pushed {
            report.requests += p.requests;
            stop |= p.outcome.fatal.is_some() || p.outcome.interrupted;
            match &mut slices.outcome {
                Some(o) => o.absorb(p.outcome),
                None => slices.outcome = Some(p.outcome),
            }
        }
        if self.sources[&job.name].settles() {
            settle(&mut self.state, &job.name, &scanned, rules)?;
        }
        report.plan.absorb(plan, KEPT_OPS);
        Ok(stop)
    }

    /// Queues a slice's plan in the outbox and pushes what it lets through
    /// (`None`: the upstream could not be connected, `report.error` says).
    async fn execute(
        &mut self,
        job: &JobConfig,
        slice_scope: &Scope,
        scanned: &Scanned,
        plan: &plan::Plan,
        report: &mut JobReport,
    ) -> Result<Option<Pushed>, ReconcileError> {
        let queued = queue(
            &mut self.state,
            &job.name,
            slice_scope,
            plan,
            self.opts.honour_backoff,
        )?;
        report.held.extend(queued.held);
        let to_push = queued.filtered.as_ref().unwrap_or(plan);
        if !needs_upstream(to_push, &queued.suspects) {
            return Ok(Some(Pushed {
                outcome: forget_only(&self.state, &job.name, to_push)?,
                requests: 0,
            }));
        }
        match connect(&mut self.sinks, job) {
            Ok(sink) => {
                let ctx = PushContext {
                    job,
                    state: &mut self.state,
                    cached: &scanned.cached,
                    stop: &self.stop,
                    suspects: &queued.suspects,
                    audited: report.audit.is_some(),
                    content: scanned.content.as_ref(),
                };
                Ok(Some(push(sink, ctx, to_push).await?))
            }
            Err(e) => {
                report.error = Some(e);
                Ok(None)
            }
        }
    }

    /// The pass's end: its outcome in the report, the audit's findings
    /// settled against what the pass did, the state file's marks, the run
    /// log.
    fn finish(
        &mut self,
        job: &JobConfig,
        scope: &Scope,
        mut report: JobReport,
        slices: Slices,
        allowance: bool,
        began: Began,
    ) -> Result<JobReport, ReconcileError> {
        if let Some(o) = &slices.outcome {
            if let Some(f) = &o.fatal {
                report.error = Some(format!("stopped: {f}"));
            }
            for line in o.failure_summary() {
                tracing::error!("{line}");
            }
        }
        report.outcome = slices.outcome;
        if let Some(a) = report.audit.as_mut() {
            audit::settle(a, &self.state, &job.name)?;
        }
        self.state.drop_unclaimed()?;
        if slices.rehashed {
            self.state.mark_rehashed(&job.name)?;
        }
        if allowance {
            self.state.spend_delete_allowance(&job.name)?;
        }
        report.elapsed = began.at.elapsed();
        super::log_run(&self.state, scope, began.unix, &report)?;
        Ok(report)
    }
}
