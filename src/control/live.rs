//! What the control API shares with the service's loop: the secrets it
//! checks requests against, the jobs it may name, which are paused, and
//! the passes as they start and finish. The listener never runs a pass
//! itself: it hands the loop an `Order`, so passes stay one at a time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{broadcast, mpsc};

use crate::config::Config;
use crate::secret::Secret;
use crate::source::{Push, Scope, SourceConfig};

/// What the listener asks of the loop.
#[derive(Debug)]
pub enum Order {
    /// A pass of `job` over `scope`, now.
    Pass { job: String, scope: Scope },
    /// `job` was resumed: a full pass catches up on what it missed.
    Resumed { job: String },
}

/// A pass the loop finished, for a request that waits for it.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The pass's number: passes are counted as they start.
    pub seq: u64,
    pub job: String,
    pub scope: Scope,
    /// The run as `/jobs/{name}/runs` shows it.
    pub run: serde_json::Value,
}

/// The secrets requests are checked against, loaded when the service
/// starts and at each reload.
#[derive(Default)]
pub(super) struct Secrets {
    pub token: Option<Secret>,
    pub github: Option<Secret>,
    pub gitlab: Option<Secret>,
}

pub struct Control {
    pub state_path: PathBuf,
    pub(super) secrets: RwLock<Secrets>,
    jobs: RwLock<Vec<(String, Arc<dyn SourceConfig>)>>,
    paused: Mutex<BTreeMap<String, i64>>,
    orders: mpsc::UnboundedSender<Order>,
    started: AtomicU64,
    finished: broadcast::Sender<Finished>,
}

impl Control {
    /// The control surface of `config`'s jobs; `paused` as the state file
    /// has it. Fails when a secret it names cannot be read.
    pub fn new(
        config: &Config,
        paused: BTreeMap<String, i64>,
    ) -> anyhow::Result<(Arc<Control>, mpsc::UnboundedReceiver<Order>)> {
        let (orders, rx) = mpsc::unbounded_channel();
        let control = Control {
            state_path: config.state_path.clone(),
            secrets: RwLock::new(Secrets::default()),
            jobs: RwLock::new(Vec::new()),
            paused: Mutex::new(paused),
            orders,
            started: AtomicU64::new(0),
            finished: broadcast::channel(256).0,
        };
        control.reconfigure(config)?;
        Ok((Arc::new(control), rx))
    }

    /// Takes the secrets and jobs of a (re)loaded config; on an error the
    /// previous ones stay.
    pub fn reconfigure(&self, config: &Config) -> anyhow::Result<()> {
        let load = |source: &Option<crate::secret::SecretSource>, key: &str| {
            source
                .as_ref()
                .map(|s| {
                    s.load().map_err(|e| {
                        anyhow::anyhow!("`daemon.{key}` in {}: {e}", config.path.display())
                    })
                })
                .transpose()
        };
        let c = &config.control;
        let secrets = Secrets {
            token: load(&c.api_token, "api_token_file")?,
            github: load(&c.github_secret, "webhooks.github_secret_file")?,
            gitlab: load(&c.gitlab_token, "webhooks.gitlab_token_file")?,
        };
        *self.secrets.write().unwrap_or_else(|p| p.into_inner()) = secrets;
        *self.jobs.write().unwrap_or_else(|p| p.into_inner()) = config
            .jobs
            .iter()
            .map(|j| (j.name.clone(), j.source.clone()))
            .collect();
        Ok(())
    }

    pub fn has_job(&self, job: &str) -> bool {
        self.job_names().iter().any(|j| j == job)
    }

    pub fn job_names(&self) -> Vec<String> {
        let jobs = self.jobs.read().unwrap_or_else(|p| p.into_inner());
        jobs.iter().map(|(name, _)| name.clone()).collect()
    }

    /// The jobs a push moved.
    pub fn pushed(&self, push: &Push) -> Vec<String> {
        let jobs = self.jobs.read().unwrap_or_else(|p| p.into_inner());
        jobs.iter()
            .filter(|(_, source)| source.pushed(push))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Why the job's source cannot be looked at now (a root that is
    /// missing or looks unmounted).
    pub fn source_problem(&self, job: &str) -> Option<String> {
        let jobs = self.jobs.read().unwrap_or_else(|p| p.into_inner());
        jobs.iter()
            .find(|(name, _)| name == job)
            .and_then(|(_, source)| source.unavailable())
    }

    fn paused_jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, i64>> {
        self.paused.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_paused(&self, job: &str) -> bool {
        self.paused_jobs().contains_key(job)
    }

    /// Since when `job` is paused (Unix seconds).
    pub fn paused_since(&self, job: &str) -> Option<i64> {
        self.paused_jobs().get(job).copied()
    }

    pub(super) fn set_paused(&self, job: &str, since: Option<i64>) {
        let mut paused = self.paused_jobs();
        match since {
            Some(at) => {
                paused.entry(job.to_owned()).or_insert(at);
            }
            None => {
                paused.remove(job);
            }
        }
    }

    /// Hands `order` to the loop; false when the service is stopping.
    pub(super) fn order(&self, order: Order) -> bool {
        self.orders.send(order).is_ok()
    }

    /// The number of passes started so far; a pass that starts later has
    /// a greater `seq`.
    pub(super) fn passes_started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Finished> {
        self.finished.subscribe()
    }

    /// A pass starts: its number.
    pub fn pass_started(&self) -> u64 {
        self.started.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// A pass ended; requests waiting for one hear of it.
    pub fn pass_finished(&self, finished: Finished) {
        // No one waiting is the usual case, not an error.
        let _ = self.finished.send(finished);
    }
}
