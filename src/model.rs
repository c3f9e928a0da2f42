//! Nouns every layer shares (the config, the planner, sources and sinks),
//! kept below all of them so that none imports another for a word.

use std::fmt;

use serde::Deserialize;

/// What an upstream supports. The config is checked against it at load
/// time and the planner plans nothing a target cannot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Uploads, updates and creates documents from content.
    pub content: bool,
    /// Several items' metadata per call (else one call per item).
    pub batch_metadata: bool,
    /// Enable / disable / archive.
    pub status: bool,
    pub delete: bool,
    /// Without content: an item with no upstream record gets one (looked up,
    /// else created) by the executor; otherwise it must be mapped in config.
    pub create_records: bool,
    /// Metadata travels only with an upload (Open WebUI keeps what the
    /// upload carried and has no call to change it): new metadata means
    /// the content goes up again with it.
    pub metadata_with_content: bool,
}

/// What becomes of an upstream record whose source item is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeletePolicy {
    Delete,
    #[default]
    Disable,
    Archive,
    /// Leave the upstream item as it is; only forget it locally.
    Keep,
}

/// How much one pass may retire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxDelete {
    /// At most this many records.
    Count(u64),
    /// At most this share of the job's records, in percent.
    Percent(u8),
}

impl Default for MaxDelete {
    fn default() -> Self {
        MaxDelete::Percent(50)
    }
}

impl fmt::Display for MaxDelete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxDelete::Count(n) => write!(f, "{n}"),
            MaxDelete::Percent(p) => write!(f, "{p}%"),
        }
    }
}
