//! The `[sync.git]` section: a repository (https, ssh, git:// or a local
//! path), the branch or tag followed, a folder in it, the credential by
//! reference, and what of it to mirror.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::section::{key_fields, Section};
use crate::config::size::size_limit;
use crate::config::ConfigError;
use crate::secret::SecretSource;
use crate::source::registry::At;
use crate::source::s3::config::Filter;

#[derive(Debug, Clone)]
pub struct GitConfig {
    /// As written (never holding a credential), or a local path made
    /// absolute.
    pub url: String,
    pub follow: Follow,
    /// The folder of the repository whose files are mirrored (`docs/`),
    /// or `""` for all of it; keys are paths below it.
    pub path: String,
    pub auth: Auth,
    /// The bare repository fetched into, beside the state file.
    pub cache: PathBuf,
    pub poll_interval: Duration,
    pub filter: Filter,
    pub max_file_size: u64,
    /// `https://git.example.com/org/repo/blob/{commit}/{path}`.
    pub web_url: Option<String>,
    /// "file:line:column: `key`" of `url`, of the branch or tag, and of
    /// the credential setting, for what a server's refusal is about.
    pub places: Places,
}

#[derive(Debug, Clone)]
pub struct Places {
    pub url: String,
    pub follow: String,
    pub credential: String,
    pub path: String,
}

/// What the job follows in the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    Branch(String),
    Tag(String),
    /// The remote's default branch (its `HEAD`).
    Head,
}

impl Follow {
    /// The remote's ref name.
    pub fn remote(&self) -> String {
        match self {
            Follow::Branch(b) => format!("refs/heads/{b}"),
            Follow::Tag(t) => format!("refs/tags/{t}"),
            Follow::Head => "HEAD".to_owned(),
        }
    }

    /// Where the cache keeps what was fetched of it: kbsync's own ref
    /// namespace, so nothing else in the cache moves it.
    pub fn local(&self) -> String {
        match self {
            Follow::Branch(b) => format!("refs/kbsync/heads/{b}"),
            Follow::Tag(t) => format!("refs/kbsync/tags/{t}"),
            Follow::Head => "refs/kbsync/HEAD".to_owned(),
        }
    }

    /// As messages name it.
    pub fn shown(&self) -> String {
        match self {
            Follow::Branch(b) => format!("branch {b:?}"),
            Follow::Tag(t) => format!("tag {t:?}"),
            Follow::Head => "the default branch (HEAD)".to_owned(),
        }
    }
}

/// How the remote is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    /// HTTPS: the token sent as the password of Basic authentication
    /// (GitHub, GitLab, Gitea and Bitbucket all take a token so).
    Token {
        username: String,
        token: SecretSource,
    },
    /// SSH: the private key handed to `ssh -i`.
    SshKey(PathBuf),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGit {
    url: Spanned<String>,
    branch: Option<Spanned<String>>,
    tag: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    username: Option<String>,
    token: Option<Spanned<toml::Value>>,
    token_env: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    token_credential: Option<Spanned<String>>,
    ssh_key_file: Option<Spanned<String>>,
    #[serde(default)]
    allow_insecure_http: bool,
    web_url: Option<Spanned<String>>,
    poll_interval_secs: Option<Spanned<i64>>,
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    max_file_size: Option<Spanned<toml::Value>>,
}

/// How the URL reaches the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Https,
    /// http:// or git://: readable without a login only.
    Plain,
    Ssh,
    /// A path on this machine (`file://` or plain).
    Local,
}

pub fn validate(at: &At, raw: Spanned<RawGit>) -> Result<GitConfig, ConfigError> {
    let s = Section::new(at.loc, at.base, at.index, "git", raw.span());
    let raw = raw.into_inner();
    let (url, reach) = url(&s, at.base, &raw.url, raw.allow_insecure_http)?;
    let (follow, follow_place) = follow(&s, &raw)?;
    let (auth, credential) = auth(&s, &raw, reach)?;
    let web_url = raw
        .web_url
        .as_ref()
        .map(|t| web_url(&s, t, raw.allow_insecure_http))
        .transpose()?;
    Ok(GitConfig {
        cache: cache_for(at.state, &url),
        url,
        follow,
        path: folder(raw.path.as_ref().map_or("", |p| p.get_ref())),
        auth,
        poll_interval: Duration::from_secs(s.int(
            &raw.poll_interval_secs,
            "poll_interval_secs",
            1..=30 * 86_400,
            300,
        )? as u64),
        filter: Filter::read(&s, &raw.include, &raw.exclude)?,
        max_file_size: size_limit(at.loc, &s.key("max_file_size"), &raw.max_file_size)?,
        web_url,
        places: Places {
            url: at.loc.place(raw.url.span(), &s.key("url")),
            follow: follow_place,
            credential,
            path: match &raw.path {
                Some(p) => at.loc.place(p.span(), &s.key("path")),
                None => format!("`{}`", s.key("path")),
            },
        },
    })
}

/// `url` checked: no credential inside it (it would be logged and kept
/// in the cache's config), plain transports only to loopback, a local
/// path made absolute.
fn url(
    s: &Section,
    base: &Path,
    raw: &Spanned<String>,
    allow_insecure_http: bool,
) -> Result<(String, Reach), ConfigError> {
    let text = raw.get_ref().trim();
    let err = |m: &str| s.error(raw.span(), "url", m);
    if text.is_empty() {
        return Err(err(
            "expected the repository's URL (https://…, ssh://…, git@host:path) or a local path",
        ));
    }
    if let Some((user, _)) = scp_like(text) {
        if user.contains(':') {
            return Err(err("a credential inside the URL is refused (it would be logged and stored); use ssh_key_file"));
        }
        return Ok((text.to_owned(), Reach::Ssh));
    }
    if !text.contains("://") {
        return Ok((local(base, text), Reach::Local));
    }
    let parsed = url::Url::parse(text).map_err(|e| err(&format!("not a URL: {e}")))?;
    // git:// is no special scheme to the URL parser: its host stays text.
    let loopback = match parsed.host_str() {
        Some("localhost") => true,
        Some(h) => h
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    let reach = match parsed.scheme() {
        "https" => Reach::Https,
        "http" | "git" if allow_insecure_http || loopback => Reach::Plain,
        "http" | "git" => {
            return Err(err(
                "a plain transport (http, git://) can be tampered with on the way; use https or ssh, or set allow_insecure_http = true if the network is trusted",
            ))
        }
        "ssh" => Reach::Ssh,
        "file" => return Ok((text.to_owned(), Reach::Local)),
        other => return Err(err(&format!("unsupported scheme {other:?}; use https, ssh, git or a local path"))),
    };
    let credential =
        parsed.password().is_some() || (reach != Reach::Ssh && !parsed.username().is_empty());
    if credential {
        return Err(err(
            "a credential inside the URL is refused (it would be logged and stored); use token_env, token_file or token_credential (and username)",
        ));
    }
    Ok((text.to_owned(), reach))
}

/// `user@host:path` (scp-like ssh): the user part, and the rest. The
/// user part may hold a `:` (a password pasted in), which is refused.
fn scp_like(text: &str) -> Option<(&str, &str)> {
    if text.contains("://") || text.starts_with('/') || text.starts_with('.') {
        return None;
    }
    let (user, rest) = text.split_once('@')?;
    let (host, path) = rest.split_once(':')?;
    (!user.contains('/') && !host.is_empty() && !host.contains('/') && !path.is_empty())
        .then_some((user, path))
}

fn local(base: &Path, text: &str) -> String {
    base.join(text).to_string_lossy().into_owned()
}

/// One of `branch` and `tag`, or neither (the remote's default branch).
fn follow(s: &Section, raw: &RawGit) -> Result<(Follow, String), ConfigError> {
    let name = |v: &Spanned<String>, key: &str| {
        let n = v
            .get_ref()
            .trim()
            .trim_start_matches("refs/heads/")
            .trim_start_matches("refs/tags/");
        let plain = !n.is_empty()
            && !n.starts_with('-')
            && !n.contains("..")
            && !n.ends_with('/')
            && n.chars()
                .all(|c| !c.is_whitespace() && !"~^:?*[\\".contains(c));
        if plain {
            Ok(n.to_owned())
        } else {
            Err(s.error(
                v.span(),
                key,
                "expected a branch or tag name such as \"main\" or \"v1.2\"",
            ))
        }
    };
    match (&raw.branch, &raw.tag) {
        (Some(_), Some(t)) => Err(s.error(t.span(), "tag", "set branch or tag, not both")),
        (Some(b), None) => Ok((
            Follow::Branch(name(b, "branch")?),
            s.place_of(b.span(), "branch"),
        )),
        (None, Some(t)) => Ok((Follow::Tag(name(t, "tag")?), s.place_of(t.span(), "tag"))),
        (None, None) => Ok((Follow::Head, s.place_of(s.span(), "branch"))),
    }
}

/// The token (https) or the key file (ssh), each only where it applies.
fn auth(s: &Section, raw: &RawGit, reach: Reach) -> Result<(Auth, String), ConfigError> {
    let tokened = raw.token.is_some()
        || raw.token_env.is_some()
        || raw.token_file.is_some()
        || raw.token_credential.is_some();
    if let Some(key) = &raw.ssh_key_file {
        if reach != Reach::Ssh {
            return Err(s.error(
                key.span(),
                "ssh_key_file",
                "ssh_key_file is for an ssh URL (ssh://… or git@host:path)",
            ));
        }
        if tokened {
            return Err(s.error(
                key.span(),
                "ssh_key_file",
                "set ssh_key_file or a token, not both",
            ));
        }
        let path = s.base().join(key.get_ref());
        return Ok((Auth::SshKey(path), s.place_of(key.span(), "ssh_key_file")));
    }
    if !tokened {
        return Ok((Auth::None, format!("`{}` (none set)", s.key("token_env"))));
    }
    let (token, place) = s.secret(key_fields!(
        raw.token,
        token_env,
        token_file,
        token_credential
    ))?;
    match reach {
        Reach::Https => {}
        Reach::Plain => {
            return Err(s.table_error(
                "token_env",
                "a token is sent only over https, never in clear text over http or git://",
            ))
        }
        _ => {
            return Err(s.table_error(
                "token_env",
                "a token is sent to an https server; an ssh URL takes ssh_key_file",
            ))
        }
    }
    let username = raw
        .username
        .clone()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "git".to_owned());
    Ok((Auth::Token { username, token }, place))
}

/// A link template: `{commit}` and `{path}` (the path in the repository)
/// are filled in per document; the rest is a URL as the sinks take them.
fn web_url(
    s: &Section,
    t: &Spanned<String>,
    allow_insecure_http: bool,
) -> Result<String, ConfigError> {
    let text = t.get_ref().trim();
    let sample = text.replace("{commit}", "0").replace("{path}", "p");
    if sample.contains('{') || sample.contains('}') {
        return Err(s.error(
            t.span(),
            "web_url",
            "only {commit} and {path} are filled in",
        ));
    }
    let probe = Spanned::new(t.span(), sample);
    s.url_named(&probe, "web_url", allow_insecure_http)?;
    Ok(text.to_owned())
}

/// `docs`, `/docs/` → `docs/`: keys are what follows it.
fn folder(raw: &str) -> String {
    let p = raw.trim().trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

/// The bare cache of `url`: beside the state file, one per repository
/// (jobs that follow branches of one repository share its objects).
fn cache_for(state: &Path, url: &str) -> PathBuf {
    let mut name = state.file_name().unwrap_or_default().to_os_string();
    name.push(".git-cache");
    let id = blake3::hash(url.as_bytes()).to_hex();
    state
        .with_file_name(name)
        .join(format!("{}.git", &id[..16]))
}

#[cfg(test)]
mod tests {
    use crate::source::git::config::{Auth, Follow, GitConfig};
    use crate::source::registry::testing;

    fn git(section: &str) -> GitConfig {
        testing::alone(section, super::validate)
    }

    fn refused(section: &str) -> String {
        testing::refused("git", section)
    }

    #[test]
    fn a_branch_a_folder_and_a_token_from_a_file() {
        let c = git("url = \"https://git.example.com/org/handbook.git\"\nbranch = \"main\"\npath = \"/docs/\"\ntoken_file = \"git.token\"\ninclude = [\"**/*.md\"]");
        assert_eq!(c.follow, Follow::Branch("main".into()));
        assert_eq!(
            (c.follow.remote(), c.follow.local()),
            ("refs/heads/main".into(), "refs/kbsync/heads/main".into())
        );
        assert_eq!(c.path, "docs/");
        assert_eq!(c.poll_interval.as_secs(), 300);
        assert!(matches!(&c.auth, Auth::Token { username, .. } if username == "git"));
        assert!(
            c.cache.starts_with("/etc/kbsync/kbsync.db.git-cache"),
            "{:?}",
            c.cache
        );
        assert_eq!(
            c.places.credential,
            "/etc/kbsync/kbsync.toml:4:14: `sync[0].git.token_file`"
        );
        assert!(c.filter.selects("a/b.md") && !c.filter.selects("a/b.txt"));
    }

    #[test]
    fn credentials_inside_the_url_are_refused_naming_the_key_never_echoed() {
        for url in [
            "https://ghp_secret123@github.com/org/repo.git",
            "https://user:ghp_secret123@github.com/org/repo.git",
            "ssh://git:ghp_secret123@host/repo.git",
            "git:ghp_secret123@host:org/repo.git",
        ] {
            let e = refused(&format!("url = \"{url}\""));
            assert!(
                e.contains("`sync[0].git.url`") && e.contains("credential"),
                "{url}: {e}"
            );
            assert!(!e.contains("ghp_secret123"), "{e}");
        }
        let e = refused("url = \"https://h/r.git\"\ntoken = \"ghp_secret123\"");
        assert!(
            e.contains("sync[0].git.token") && !e.contains("ghp_secret123"),
            "{e}"
        );
        // A user name alone is how ssh URLs are written.
        git("url = \"git@github.com:org/repo.git\"\nssh_key_file = \"/etc/kbsync/deploy-key\"");
        git("url = \"ssh://git@github.com/org/repo.git\"");
    }

    #[test]
    fn plain_transports_only_to_loopback_and_settings_only_where_they_apply() {
        git("url = \"git://127.0.0.1:9418/repo.git\"");
        git("url = \"http://localhost:8080/repo.git\"");
        let e = refused("url = \"git://git.lan/repo.git\"");
        assert!(
            e.contains("sync[0].git.url") && e.contains("allow_insecure_http"),
            "{e}"
        );
        git("url = \"git://git.lan/repo.git\"\nallow_insecure_http = true");
        let e = refused("url = \"https://h/r.git\"\nssh_key_file = \"k\"");
        assert!(e.contains("sync[0].git.ssh_key_file"), "{e}");
        let e = refused("url = \"git@h:r.git\"\ntoken_env = \"T\"");
        assert!(e.contains("ssh_key_file"), "{e}");
        let e = refused("url = \"http://127.0.0.1:8080/r.git\"\ntoken_env = \"T\"");
        assert!(
            e.contains("sync[0].git.token_env") && e.contains("only over https"),
            "{e}"
        );
        let e = refused("url = \"https://h/r.git\"\nbranch = \"main\"\ntag = \"v1\"");
        assert!(e.contains("sync[0].git.tag"), "{e}");
        let e = refused("url = \"https://h/r.git\"\nbranch = \"a..b\"");
        assert!(e.contains("sync[0].git.branch"), "{e}");
        let e = refused("url = \"https://h/r.git\"\nweb_url = \"https://h/{sha}/{path}\"");
        assert!(e.contains("sync[0].git.web_url"), "{e}");
    }

    #[test]
    fn a_local_path_is_made_absolute_and_follows_the_default_branch() {
        let c = git("url = \"repos/handbook.git\"\ntag = \"v1.2\"");
        assert_eq!(c.url, "/etc/kbsync/repos/handbook.git");
        assert_eq!(c.follow, Follow::Tag("v1.2".into()));
        let c = git("url = \"file:///srv/git/handbook.git\"");
        assert_eq!(
            (c.url.as_str(), c.follow),
            ("file:///srv/git/handbook.git", Follow::Head)
        );
    }
}
