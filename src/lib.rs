//! kbsync: mirror local folders into knowledge bases.
//!
//! The data flow is scan → plan → push; see ARCHITECTURE.md for the map.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod logging;
pub mod metadata;
pub mod plan;
pub mod push;
pub mod reconcile;
pub mod report;
pub mod secret;
pub mod source;
pub mod state;
pub mod status;
pub mod target;
pub mod triage;
