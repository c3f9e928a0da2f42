//! The settings of the service's control surface: the API's bearer token
//! (`[daemon] api_token_file`), where job events are posted
//! (`[daemon.notify]`) and the secrets git hosts sign their push webhooks
//! with (`[daemon.webhooks]`). Every secret is kept by reference, as the
//! upstreams' keys are.

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::Url;
use serde::Deserialize;
use toml::Spanned;

use super::locate::{Locator, Span};
use super::section::{key_fields, KeyFields, Section};
use super::ConfigError;
use crate::secret::SecretSource;

/// A job's change of state that `[daemon.notify]` can post.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A pass failed as a whole after one that did not.
    Failing,
    /// A pass ran clean after failing ones.
    Recovered,
    /// The delete guard kept a pass from retiring anything.
    GuardRefused,
    /// Steps the upstream refused for good now wait for a change.
    Parked,
}

impl Event {
    pub const ALL: [Event; 4] = [
        Event::Failing,
        Event::Recovered,
        Event::GuardRefused,
        Event::Parked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Failing => "failing",
            Event::Recovered => "recovered",
            Event::GuardRefused => "guard_refused",
            Event::Parked => "parked",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ControlConfig {
    /// The bearer token every POST to the control API needs (and every
    /// route, when the listener is not on loopback). `None`: POSTs are
    /// refused.
    pub api_token: Option<SecretSource>,
    pub notify: Option<NotifyConfig>,
    /// The secret GitHub signs push deliveries with (HMAC-SHA256);
    /// `None`: `/hooks/github` answers 404.
    pub github_secret: Option<SecretSource>,
    /// The token GitLab sends with push deliveries; `None`: `/hooks/gitlab`
    /// answers 404.
    pub gitlab_token: Option<SecretSource>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    pub url: Url,
    /// A header sent with every event, its value a secret (an
    /// `Authorization` for the receiver, say).
    pub header: Option<(String, SecretSource)>,
    pub on: BTreeSet<Event>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    url: Spanned<String>,
    header_name: Option<Spanned<String>>,
    header_value: Option<Spanned<toml::Value>>,
    header_value_env: Option<Spanned<String>>,
    header_value_file: Option<Spanned<String>>,
    header_value_credential: Option<Spanned<String>>,
    on: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    allow_insecure_http: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhooks {
    github_secret: Option<Spanned<toml::Value>>,
    github_secret_env: Option<Spanned<String>>,
    github_secret_file: Option<Spanned<String>>,
    github_secret_credential: Option<Spanned<String>>,
    gitlab_token: Option<Spanned<toml::Value>>,
    gitlab_token_env: Option<Spanned<String>>,
    gitlab_token_file: Option<Spanned<String>>,
    gitlab_token_credential: Option<Spanned<String>>,
}

/// The raw settings, as `[daemon]` holds them.
pub(super) struct Raw<'r> {
    /// `api_token`, `api_token_env`, `api_token_file`, `api_token_credential`.
    pub token: KeyFields<'r>,
    pub notify: Option<&'r Spanned<RawNotify>>,
    pub webhooks: Option<&'r Spanned<RawWebhooks>>,
    /// The listener's address: the API is served there.
    pub listen: Option<&'r Spanned<String>>,
    pub remote: bool,
}

pub(super) fn validate(
    loc: &Locator,
    base: &Path,
    daemon: Span,
    raw: Raw,
) -> Result<ControlConfig, ConfigError> {
    let section = Section::named(loc, base, "daemon", daemon);
    let t = raw.token;
    let api_token = (t.inline.is_some() || any_set(&[t.env, t.file, t.credential]))
        .then(|| section.secret(t))
        .transpose()?
        .map(|(source, _)| source);
    if api_token.is_some() && raw.listen.is_none() {
        return Err(section.table_error(
            "api_token_file",
            "the control API is served on the metrics listener: set metrics_listen = \"127.0.0.1:9477\" as well",
        ));
    }
    if let (true, None, Some(listen)) = (raw.remote, &api_token, raw.listen) {
        return Err(loc.error(
            listen.span(),
            "daemon.metrics_listen",
            "beyond loopback every route asks for the API token: set api_token_file = \"/etc/kbsync/credentials/api-token\" as well",
        ));
    }
    let notify = raw.notify.map(|n| notify(loc, base, n)).transpose()?;
    let (github_secret, gitlab_token) = match raw.webhooks {
        None => (None, None),
        Some(w) => webhooks(loc, base, w)?,
    };
    if (github_secret.is_some() || gitlab_token.is_some()) && raw.listen.is_none() {
        return Err(section.table_error(
            "webhooks",
            "webhooks are served on the metrics listener: set metrics_listen as well",
        ));
    }
    Ok(ControlConfig {
        api_token,
        notify,
        github_secret,
        gitlab_token,
    })
}

fn any_set(v: &[&Option<Spanned<String>>]) -> bool {
    v.iter().any(|o| o.is_some())
}

fn notify(
    loc: &Locator,
    base: &Path,
    raw: &Spanned<RawNotify>,
) -> Result<NotifyConfig, ConfigError> {
    let section = Section::named(loc, base, "daemon.notify", raw.span());
    let n = raw.get_ref();
    let mut url = section.url_named(&n.url, "url", n.allow_insecure_http)?;
    // `url_named` makes a base URL of it; the receiver's path is taken as given.
    if !n.url.get_ref().ends_with('/') {
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&path);
    }
    let value_set = n.header_value.is_some()
        || any_set(&[
            &n.header_value_env,
            &n.header_value_file,
            &n.header_value_credential,
        ]);
    let header = match (&n.header_name, value_set) {
        (None, false) => None,
        (Some(name), true) => {
            if reqwest::header::HeaderName::from_bytes(name.get_ref().as_bytes()).is_err() {
                return Err(section.error(name.span(), "header_name", format!("{:?} is not an HTTP header name", name.get_ref())));
            }
            let (source, _) = section.secret(key_fields!(n.header_value, header_value_env, header_value_file, header_value_credential))?;
            Some((name.get_ref().clone(), source))
        }
        (None, true) => return Err(section.table_error("header_name", "header_value_* is set without the header_name it goes in")),
        (Some(name), false) => {
            return Err(section.error(name.span(), "header_value_file", "set one of header_value_env, header_value_file or header_value_credential: the header's value is a secret"))
        }
    };
    let on = match &n.on {
        None => Event::ALL.into_iter().collect(),
        Some(list) => {
            let mut on = BTreeSet::new();
            for name in list.get_ref() {
                let event = Event::ALL
                    .into_iter()
                    .find(|e| e.as_str() == name)
                    .ok_or_else(|| {
                        let known: Vec<&str> = Event::ALL.iter().map(|e| e.as_str()).collect();
                        section.error(
                            list.span(),
                            "on",
                            format!(
                                "unknown event {name:?}; the events are {}",
                                known.join(", ")
                            ),
                        )
                    })?;
                on.insert(event);
            }
            on
        }
    };
    Ok(NotifyConfig { url, header, on })
}

type HookSecrets = (Option<SecretSource>, Option<SecretSource>);

fn webhooks(
    loc: &Locator,
    base: &Path,
    raw: &Spanned<RawWebhooks>,
) -> Result<HookSecrets, ConfigError> {
    let section = Section::named(loc, base, "daemon.webhooks", raw.span());
    let w = raw.get_ref();
    let github = (w.github_secret.is_some()
        || any_set(&[
            &w.github_secret_env,
            &w.github_secret_file,
            &w.github_secret_credential,
        ]))
    .then(|| {
        section.secret(key_fields!(
            w.github_secret,
            github_secret_env,
            github_secret_file,
            github_secret_credential
        ))
    })
    .transpose()?;
    let gitlab = (w.gitlab_token.is_some()
        || any_set(&[
            &w.gitlab_token_env,
            &w.gitlab_token_file,
            &w.gitlab_token_credential,
        ]))
    .then(|| {
        section.secret(key_fields!(
            w.gitlab_token,
            gitlab_token_env,
            gitlab_token_file,
            gitlab_token_credential
        ))
    })
    .transpose()?;
    if github.is_none() && gitlab.is_none() {
        return Err(section.table_error(
            "github_secret_file",
            "set github_secret_file (GitHub) or gitlab_token_file (GitLab): a webhook is only taken with its secret",
        ));
    }
    Ok((github.map(|(s, _)| s), gitlab.map(|(s, _)| s)))
}
