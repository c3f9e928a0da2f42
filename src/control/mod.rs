//! Operating the service from outside: the control API on the metrics
//! listener (jobs' status and runs, a pass now, pause and resume, git
//! hosts' push webhooks) and notifications of jobs' changes of state.
//! The listener answers from the state file and hands orders to the
//! service's loop, which alone runs passes.

mod auth;
mod hooks;
mod live;
pub mod notify;
mod routes;

pub use auth::Refused;
pub use live::{Control, Finished, Order};
pub use routes::{answer, refuse, serves};

/// Whether a request may read what the listener serves: on loopback
/// anyone on this machine may; beyond it, only with the API token.
pub fn may_read(
    control: &Control,
    headers: &hyper::HeaderMap,
    remote: bool,
) -> Result<(), Refused> {
    if !remote {
        return Ok(());
    }
    let token = control
        .secrets
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .token
        .clone();
    auth::check(headers, token.as_ref())
}
