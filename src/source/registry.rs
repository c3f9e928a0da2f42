//! The one place that names every source kind: which `[sync.X]` tables
//! are sources, and how each is read. Adding a kind means its folder under
//! `src/source/` and one line in `KINDS`.

use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use toml::de::{DeValue, ValueDeserializer};
use toml::Spanned;

use super::{folder, git, s3, web, webdav, SourceConfig};
use crate::config::locate::{Locator, Span};
use crate::config::{ConfigError, Roots};

/// Reads a job's section of one kind, as written (shape and types only).
pub type Read = fn(Spanned<DeValue<'_>>) -> Result<Box<dyn RawSource>, toml::de::Error>;

/// The source kinds, by the section name a `[[sync]]` job spells.
pub const KINDS: &[(&str, Read)] = &[
    ("folder", read::<Spanned<folder::RawFolder>>),
    ("web", read::<Spanned<web::RawWeb>>),
    ("s3", read::<Spanned<s3::RawS3>>),
    ("webdav", read::<Spanned<webdav::RawWebdav>>),
    ("git", read::<Spanned<git::RawGit>>),
];

/// A source section as read, before validation.
pub trait RawSource {
    /// Where the section is in the config file.
    fn span(&self) -> Span;

    /// The section checked and resolved: its errors name `at`'s file,
    /// position and key.
    fn validate(self: Box<Self>, at: &At) -> Result<Arc<dyn SourceConfig>, ConfigError>;
}

/// Where a source section is validated: the file, the folder relative
/// paths resolve against, whether a root must exist, and the job's number.
pub struct At<'a> {
    pub loc: &'a Locator<'a>,
    pub base: &'a Path,
    pub roots: Roots,
    pub index: usize,
    /// The state file: a source that keeps a cache keeps it beside.
    pub state: &'a Path,
}

fn read<T: RawSource + DeserializeOwned + 'static>(
    value: Spanned<DeValue<'_>>,
) -> Result<Box<dyn RawSource>, toml::de::Error> {
    Ok(Box::new(T::deserialize(ValueDeserializer::from(value))?))
}

/// What the kinds' section tests share: a section validated alone as
/// job 0's in `/etc/kbsync/kbsync.toml`, or in a whole config.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    use serde::de::DeserializeOwned;
    use toml::Spanned;

    use super::At;
    use crate::config::locate::Locator;
    use crate::config::{Config, ConfigError, Roots};

    const SINK: &str = "[sync.dify]\nbase_url = \"https://dify.example.com/v1\"\ndataset_id = \"abc\"\napi_key_env = \"K\"\n";
    const PATH: &str = "/etc/kbsync/kbsync.toml";

    /// A config whose one job reads `section` as `[sync.KIND]`.
    pub fn load(kind: &str, section: &str) -> Result<Config, ConfigError> {
        let text = format!("[[sync]]\nname = \"j\"\n[sync.{kind}]\n{section}\n{SINK}");
        Config::parse_with(Path::new(PATH), &text, Roots::MustExist)
    }

    /// Why that config is refused.
    pub fn refused(kind: &str, section: &str) -> String {
        load(kind, section).unwrap_err().to_string()
    }

    /// The section alone, validated by `validate` as job 0's, the state
    /// file at `/etc/kbsync/kbsync.db`.
    pub fn alone<R: DeserializeOwned, T>(
        section: &str,
        validate: fn(&At, Spanned<R>) -> Result<T, ConfigError>,
    ) -> T {
        let path = Path::new(PATH);
        let loc = Locator {
            path,
            text: section,
        };
        let at = At {
            loc: &loc,
            base: path.parent().unwrap(),
            roots: Roots::MustExist,
            index: 0,
            state: Path::new("/etc/kbsync/kbsync.db"),
        };
        validate(&at, toml::from_str(section).unwrap()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{Config, Roots};
    use crate::source::Trigger;

    /// Each registered section loads as its kind (the name a config error
    /// gives as the key), and declares what schedules its passes.
    #[test]
    fn each_kind_loads_under_its_key_and_declares_its_trigger() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        let path = dir.path().join("kbsync.toml");
        let sink = "[sync.dify]\nbase_url = \"https://dify.example.com/v1\"\ndataset_id = \"abc\"\napi_key_env = \"K\"\n";
        let sections = [
            ("folder", "root = \"docs\"\n"),
            (
                "web",
                "urls = [\"https://docs.example.com/a.md\"]\npoll_interval_secs = 42\n",
            ),
            (
                "s3",
                "bucket = \"docs\"\nanonymous = true\npoll_interval_secs = 42\n",
            ),
            (
                "webdav",
                "url = \"https://cloud.example.com/dav/docs\"\npoll_interval_secs = 42\n",
            ),
            (
                "git",
                "url = \"https://git.example.com/docs.git\"\npoll_interval_secs = 42\n",
            ),
        ];
        assert_eq!(
            super::KINDS.len(),
            sections.len(),
            "a kind without a case here"
        );
        for (key, body) in sections {
            let text = format!("[[sync]]\nname = \"j\"\n[sync.{key}]\n{body}{sink}");
            let config = Config::parse_with(&path, &text, Roots::MustExist).unwrap();
            let source = &config.jobs[0].source;
            assert_eq!(source.kind(), key);
            match (key, source.trigger()) {
                ("folder", Trigger::Watch(spec)) => {
                    assert_eq!(spec.root, dir.path().canonicalize().unwrap().join("docs"));
                    let walked: Vec<_> = spec
                        .walk_from(&spec.root)
                        .build()
                        .filter_map(Result::ok)
                        .map(|e| e.into_path())
                        .collect();
                    assert_eq!(walked, std::slice::from_ref(&spec.root));
                }
                ("web" | "s3" | "webdav" | "git", Trigger::Poll(every)) => {
                    assert_eq!(every, Duration::from_secs(42))
                }
                (key, _) => panic!("{key}: not the trigger its kind declares"),
            }
        }
    }
}
