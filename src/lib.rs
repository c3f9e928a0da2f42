//! kbsync: mirror local folders into knowledge bases.
//!
//! The data flow is scan → plan → push; see ARCHITECTURE.md for the map.

pub mod audit;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod execute;
pub mod exit;
pub mod guard;
pub mod http_date;
pub mod logging;
pub mod manual;
pub mod metadata;
pub mod model;
pub mod monitor;
pub mod outbox;
pub mod plan;
pub mod progress;
pub mod reconcile;
pub mod report;
pub mod secret;
pub mod sink;
pub mod source;
pub mod state;
pub mod status;
pub mod xml;
