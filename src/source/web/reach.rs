//! Where a web job may fetch from. A sitemap is written by whoever runs
//! the site, and a redirect by whoever answers: followed blindly, either
//! could make kbsync fetch an intranet admin page or a cloud metadata
//! endpoint and upload it into the knowledge base. So pages, sitemaps and
//! redirects stay on the hosts the config names (`urls`, `sitemap`, and
//! `allow_hosts`), and loopback, private and link-local addresses are
//! refused unless a configured URL is itself on one (or
//! `allow_private_addresses`) — checked on the address a name resolves to,
//! so DNS cannot bring them in either.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{redirect, Url};

use super::WebConfig;

#[derive(Debug, Clone)]
pub struct Reach {
    hosts: HashSet<String>,
    private_ok: bool,
}

impl Reach {
    pub fn of(cfg: &WebConfig) -> Reach {
        let configured: Vec<&Url> = cfg.urls.iter().chain(cfg.sitemap.as_ref()).collect();
        let mut hosts: HashSet<String> = configured
            .iter()
            .filter_map(|u| u.host_str())
            .map(str::to_ascii_lowercase)
            .collect();
        hosts.extend(cfg.allow_hosts.iter().map(|h| h.to_ascii_lowercase()));
        let private_ok = cfg.allow_private_addresses
            || configured
                .iter()
                .any(|u| match (ip_literal(u), u.host_str()) {
                    (Some(ip), _) => is_private(ip),
                    (None, Some(d)) => {
                        d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost")
                    }
                    (None, None) => false,
                });
        Reach { hosts, private_ok }
    }

    /// Why `url` may not be fetched, if it may not.
    pub fn refuses(&self, url: &Url) -> Option<String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Some(format!("{} URLs are not fetched", url.scheme()));
        }
        let host = url.host_str()?.to_ascii_lowercase();
        if !self.hosts.contains(&host) {
            return Some(format!(
                "host {host} is not one the job names; add it to allow_hosts to fetch from it"
            ));
        }
        if let Some(ip) = ip_literal(url).filter(|ip| !self.private_ok && is_private(*ip)) {
            return Some(format!(
                "{ip} is a loopback, private or link-local address; set allow_private_addresses = true to fetch from it"
            ));
        }
        None
    }

    /// Redirects are followed (at most 10) only where a page may be fetched.
    pub fn redirects(&self) -> redirect::Policy {
        let reach = self.clone();
        redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > 10 {
                return attempt.error("more than 10 redirects");
            }
            match reach.refuses(attempt.url()) {
                None => attempt.follow(),
                Some(why) => {
                    let to = attempt.url().to_string();
                    attempt.error(format!("redirected to {to}: {why}"))
                }
            }
        })
    }

    /// A resolver that drops private addresses unless they are allowed.
    pub fn resolver(&self) -> Guarded {
        Guarded {
            private_ok: self.private_ok,
        }
    }
}

/// The system resolver, with private answers refused where not allowed.
pub struct Guarded {
    private_ok: bool,
}

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let private_ok = self.private_ok;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept = keep_public(found, private_ok).map_err(|ip| {
                format!("{host} resolves to {ip}, a loopback, private or link-local address; set allow_private_addresses = true to fetch from it")
            })?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// The host of `url` when it is an IP address.
fn ip_literal(url: &Url) -> Option<IpAddr> {
    url.host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// The addresses that may be used; the first refused one when none may.
fn keep_public(found: Vec<SocketAddr>, private_ok: bool) -> Result<Vec<SocketAddr>, IpAddr> {
    if private_ok {
        return Ok(found);
    }
    let first_private = found.iter().map(SocketAddr::ip).find(|ip| is_private(*ip));
    let kept: Vec<SocketAddr> = found.into_iter().filter(|a| !is_private(a.ip())).collect();
    match (kept.is_empty(), first_private) {
        (true, Some(ip)) => Err(ip),
        _ => Ok(kept),
    }
}

/// Loopback, private, link-local, shared (CGNAT), unspecified, multicast
/// or broadcast: not a public web server.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_told_from_public_ones() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "172.32.0.1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_name_resolving_only_to_private_addresses_is_refused() {
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        assert_eq!(
            keep_public(vec![a("169.254.169.254:0")], false),
            Err("169.254.169.254".parse().unwrap())
        );
        assert_eq!(
            keep_public(vec![a("10.0.0.1:0"), a("93.184.216.34:0")], false),
            Ok(vec![a("93.184.216.34:0")])
        );
        assert_eq!(
            keep_public(vec![a("10.0.0.1:0")], true),
            Ok(vec![a("10.0.0.1:0")])
        );
    }
}
