//! A push a git host announced through a webhook, and the one rule for
//! telling whether two spellings of a repository's address are the same
//! repository (`https://host/org/repo.git`, `git@host:org/repo`,
//! `ssh://git@host/org/repo`).

/// What a push webhook says: the pushed repository's addresses (a host
/// gives several: web, https clone, ssh clone) and the ref that moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub urls: Vec<String>,
    /// `refs/heads/main`, `refs/tags/v1`.
    pub git_ref: String,
    /// The repository's default branch, when the host says (a job that
    /// follows the remote's `HEAD` follows it).
    pub default_branch: Option<String>,
}

impl Push {
    /// Whether `url` is one of the pushed repository's addresses.
    pub fn names(&self, url: &str) -> bool {
        let Some(own) = repository(url) else {
            return false;
        };
        self.urls
            .iter()
            .filter_map(|u| repository(u))
            .any(|u| u == own)
    }
}

/// `host/path` of a repository address, lower-cased host, without scheme,
/// user, port, `.git` or trailing slashes; `None` for a local path.
pub fn repository(url: &str) -> Option<String> {
    let url = url.trim();
    let rest = match url.split_once("://") {
        Some((_, rest)) => rest,
        // scp-like `git@host:org/repo`: a colon before any slash.
        None => {
            let colon = url.find(':')?;
            if url[..colon].contains('/') {
                return None;
            }
            return join(&url[..colon], &url[colon + 1..]);
        }
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    join(authority, path)
}

fn join(authority: &str, path: &str) -> Option<String> {
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let host = match host.rsplit_once(':') {
        // A port: the same repository, whichever protocol's port it is.
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let path = path.trim_matches('/');
    let path = path
        .strip_suffix(".git")
        .unwrap_or(path)
        .trim_end_matches('/');
    if host.is_empty() || path.is_empty() {
        return None;
    }
    Some(format!("{}/{path}", host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spellings_of_one_repository_agree_and_others_do_not() {
        let same = [
            "https://GitHub.com/acme/handbook.git",
            "https://github.com/acme/handbook",
            "https://token@github.com/acme/handbook/",
            "git@github.com:acme/handbook.git",
            "ssh://git@github.com:22/acme/handbook.git",
            "git://github.com/acme/handbook.git",
        ];
        for u in same {
            assert_eq!(
                repository(u).as_deref(),
                Some("github.com/acme/handbook"),
                "{u}"
            );
        }
        assert_ne!(
            repository("https://github.com/acme/handbook-old"),
            repository(same[0])
        );
        assert_ne!(
            repository("https://gitlab.com/acme/handbook"),
            repository(same[0])
        );
        assert_eq!(repository("/srv/git/handbook.git"), None);
        assert_eq!(repository("handbook"), None);
        let push = Push {
            urls: vec!["https://github.com/acme/handbook".into()],
            git_ref: "refs/heads/main".into(),
            default_branch: None,
        };
        assert!(push.names("git@github.com:acme/handbook.git"));
        assert!(!push.names("git@github.com:acme/other.git"));
    }
}
