//! Git source: a branch or tag of a repository (https, ssh, git:// or a
//! local path), fetched by gitoxide into a bare cache beside the state
//! file and polled. Each file is stamped by its blob id: an unmoved blob
//! costs nothing, a moved one is read from the cache's object database
//! (no download of its own, no working tree). A poll that finds the ref
//! where the last converged pass left it lists nothing. A fetch that
//! fails, or a ref that vanished, makes the job unavailable.

mod config;
mod repo;
mod scan;
mod seam;

pub use config::{GitConfig, RawGit};
