//! The `[sync.webdav]` section: the share's folder URL, who reads it, and
//! what of it to mirror.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use toml::Spanned;

use crate::config::section::{key_fields, Section};
use crate::config::size::size_limit;
use crate::config::ConfigError;
use crate::secret::SecretSource;
use crate::source::registry::At;
use crate::source::s3::config::Filter;

#[derive(Debug, Clone)]
pub struct WebdavConfig {
    /// The folder whose files are mirrored; keys are paths below it.
    pub url: Url,
    /// `None`: the share is read without signing in.
    pub login: Option<Login>,
    pub poll_interval: Duration,
    pub filter: Filter,
    pub max_file_size: u64,
    /// "file:line:column: `key`" of `url` and of the password setting.
    pub url_place: String,
    pub login_place: String,
}

#[derive(Debug, Clone)]
pub struct Login {
    pub username: String,
    pub password: SecretSource,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebdav {
    url: Spanned<String>,
    username: Option<String>,
    password: Option<Spanned<toml::Value>>,
    password_env: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    password_credential: Option<Spanned<String>>,
    #[serde(default)]
    allow_insecure_http: bool,
    poll_interval_secs: Option<Spanned<i64>>,
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    max_file_size: Option<Spanned<toml::Value>>,
}

pub fn validate(at: &At, raw: Spanned<RawWebdav>) -> Result<WebdavConfig, ConfigError> {
    let s = Section::new(at.loc, at.base, at.index, "webdav", raw.span());
    let raw = raw.into_inner();
    let url = s.url_named(&raw.url, "url", raw.allow_insecure_http)?;
    let (login, login_place) = match &raw.username {
        None if raw.password_env.is_none()
            && raw.password_file.is_none()
            && raw.password_credential.is_none()
            && raw.password.is_none() =>
        {
            (None, format!("`{}` (none set)", s.key("username")))
        }
        None => {
            return Err(s.table_error(
                "username",
                "a password needs a username (set username = \"…\")",
            ))
        }
        Some(name) => {
            let (password, place) = s.secret(key_fields!(
                raw.password,
                password_env,
                password_file,
                password_credential
            ))?;
            (
                Some(Login {
                    username: name.clone(),
                    password,
                }),
                place,
            )
        }
    };
    let places = s.places(&raw.url, "url", login_place);
    Ok(WebdavConfig {
        url,
        login,
        poll_interval: Duration::from_secs(s.int(
            &raw.poll_interval_secs,
            "poll_interval_secs",
            1..=30 * 86_400,
            300,
        )? as u64),
        filter: Filter::read(&s, &raw.include, &raw.exclude)?,
        max_file_size: size_limit(at.loc, &s.key("max_file_size"), &raw.max_file_size)?,
        url_place: places.target,
        login_place: places.credential,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, Roots};

    fn load(section: &str) -> Result<Config, String> {
        let sink = "[sync.dify]\nbase_url = \"https://dify.example.com/v1\"\ndataset_id = \"abc\"\napi_key_env = \"K\"\n";
        let text = format!("[[sync]]\nname = \"j\"\n[sync.webdav]\n{section}\n{sink}");
        Config::parse_with(
            std::path::Path::new("/etc/kbsync/kbsync.toml"),
            &text,
            Roots::MustExist,
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_url_rule_and_the_login_settings() {
        load("url = \"https://cloud.example.com/dav/\"\nusername = \"me\"\npassword_env = \"DAV\"")
            .unwrap();
        load("url = \"http://127.0.0.1:8080/\"").unwrap();
        let e = load("url = \"http://cloud.lan/dav/\"\nusername = \"me\"\npassword_env = \"DAV\"")
            .unwrap_err();
        assert!(
            e.contains("sync[0].webdav.url") && e.contains("plain http"),
            "{e}"
        );
        let e = load("url = \"https://cloud.example.com/\"\npassword_env = \"DAV\"").unwrap_err();
        assert!(e.contains("sync[0].webdav.username"), "{e}");
        let e = load("url = \"https://cloud.example.com/\"\nusername = \"me\"\npassword = \"hunter2hunter2\"")
            .unwrap_err();
        assert!(
            e.contains("not accepted inline") && !e.contains("hunter2"),
            "{e}"
        );
    }
}
