//! Which connections a sandbox may make: host patterns, the operator's
//! policy (`[network]`), a session's own narrowing of it, and the verdict
//! on one connection, first by the name asked for and then by each address
//! it resolves to (so a name that resolves to a private address is refused
//! too).
//!
//! A pattern is `host[:port]`: `pypi.org`, `*.pythonhosted.org` (any
//! subdomain, not the name itself), `*` (any host), an IP address
//! (`203.0.113.7`, `[2001:db8::1]:8443`) or a network (`10.0.0.0/8`,
//! `[fd00::/8]:443`). Without a port it is every port.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::{NetworkConfig, NetworkMode};

/// Most patterns one session may set in each of `allow` and `deny`.
pub const MAX_SESSION_PATTERNS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Any,
    /// This name and nothing else.
    Name(String),
    /// Names ending in `.<suffix>`.
    Suffix(String),
    /// Addresses in this network (a single address is a /32 or /128).
    Net(IpNet),
}

/// One `host[:port]` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    host: HostMatch,
    port: Option<u16>,
}

/// Longest pattern, in characters.
pub const MAX_PATTERN_CHARS: usize = 300;

/// The grammar of a pattern, as one regex (ECMA-262 and Rust's `regex`
/// read it alike; the API's schema states it): a name (labels of letters,
/// digits, `-` and `_`; `*.` before it for subdomains; a trailing dot), `*`,
/// an IPv4 address or network, or an IPv6 address or network in brackets;
/// then an optional port from 1 to 65535.
pub fn pattern_regex() -> String {
    let label = "[A-Za-z0-9_-]{1,63}";
    let name = format!(r"\*|(\*\.)?{label}(\.{label})*\.?");
    let octet = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
    let v4_net = format!(r"{octet}(\.{octet}){{3}}/(3[0-2]|[12]?[0-9])");
    let h = "[0-9A-Fa-f]{1,4}";
    let v6 = format!(
        "({h}:){{7}}{h}|({h}:){{1,7}}:|({h}:){{1,6}}:{h}|({h}:){{1,5}}(:{h}){{1,2}}|\
         ({h}:){{1,4}}(:{h}){{1,3}}|({h}:){{1,3}}(:{h}){{1,4}}|({h}:){{1,2}}(:{h}){{1,5}}|\
         {h}:(:{h}){{1,6}}|:((:{h}){{1,7}}|:)"
    );
    let v6_net = format!(r"\[({v6})(/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))?\]");
    let port = "(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?";
    format!("^({name}|{v4_net}|{v6_net}){port}$")
}

static PATTERN: std::sync::LazyLock<regex::Regex> =
    std::sync::LazyLock::new(|| regex::Regex::new(&pattern_regex()).expect("a valid regex"));

impl FromStr for Pattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let t = text;
        let bad = |why: &str| {
            format!(
                "invalid host pattern {text:?}: {why} (expected e.g. \"pypi.org\", \
                 \"*.example.com:443\", \"10.0.0.0/8\" or \"[::1]:8080\")"
            )
        };
        if t.chars().count() > MAX_PATTERN_CHARS {
            return Err(bad(&format!("longer than {MAX_PATTERN_CHARS} characters")));
        }
        if !PATTERN.is_match(t) {
            return Err(bad(
                "not a host name, `*.suffix`, `*`, an IPv4 address or network, or an IPv6 \
                 one in brackets, with an optional port from 1 to 65535",
            ));
        }
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(|| bad("no closing ]"))?;
            match after {
                "" => (inside, None),
                _ => (
                    inside,
                    Some(after.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
                ),
            }
        } else if t.matches(':').count() > 1 {
            // A bare IPv6 address or network: no port.
            (t, None)
        } else {
            match t.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (t, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?,
            ),
        };
        let host = if host == "*" {
            HostMatch::Any
        } else if let Ok(net) = host.parse::<IpNet>() {
            HostMatch::Net(net.trunc())
        } else if let Ok(addr) = host.parse::<IpAddr>() {
            HostMatch::Net(IpNet::from(canonical(addr)))
        } else {
            let name = host.trim_end_matches('.').to_ascii_lowercase();
            let (wild, name) = match name.strip_prefix("*.") {
                Some(rest) => (true, rest.to_string()),
                None => (false, name),
            };
            if !is_host_name(&name) {
                return Err(bad("not a host name, address or network"));
            }
            if wild {
                HostMatch::Suffix(name)
            } else {
                HostMatch::Name(name)
            }
        };
        Ok(Self {
            text: t.to_string(),
            host,
            port,
        })
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Letters, digits, `-`, `_` and dots, in labels of 1 to 63 characters.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(addr: IpAddr) -> IpAddr {
    addr.to_canonical()
}

impl Pattern {
    fn port_matches(&self, port: u16) -> bool {
        self.port.is_none_or(|p| p == port)
    }

    /// Whether a connection to `host` (a name, lowercase, or an address)
    /// on `port` matches.
    fn matches(&self, host: &Host, port: u16) -> bool {
        self.port_matches(port)
            && match (&self.host, host) {
                (HostMatch::Any, _) => true,
                (HostMatch::Name(n), Host::Name(h)) => n == h,
                (HostMatch::Suffix(s), Host::Name(h)) => is_subdomain(h, s),
                (HostMatch::Net(net), Host::Address(a)) => net.contains(a),
                _ => false,
            }
    }

    /// Whether the pattern names `addr` itself (a network or an address,
    /// not `*`): what opens a private address.
    fn names_address(&self, addr: IpAddr, port: u16) -> bool {
        self.port_matches(port) && matches!(&self.host, HostMatch::Net(net) if net.contains(&addr))
    }

    /// Whether every connection `other` matches, this one matches too.
    fn covers(&self, other: &Pattern) -> bool {
        let ports = match (self.port, other.port) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        };
        ports
            && match (&self.host, &other.host) {
                (HostMatch::Any, _) => true,
                (HostMatch::Name(a), HostMatch::Name(b)) => a == b,
                (HostMatch::Suffix(s), HostMatch::Name(n)) => is_subdomain(n, s),
                (HostMatch::Suffix(s), HostMatch::Suffix(t)) => t == s || is_subdomain(t, s),
                (HostMatch::Net(a), HostMatch::Net(b)) => a.contains(b),
                _ => false,
            }
    }
}

fn is_subdomain(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len() + 1
        && name.ends_with(suffix)
        && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
}

/// What a connection was asked for: a name or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Address(IpAddr),
}

impl Host {
    pub fn parse(host: &str) -> Self {
        match host.parse::<IpAddr>() {
            Ok(addr) => Host::Address(canonical(addr)),
            Err(_) => Host::Name(host.trim_end_matches('.').to_ascii_lowercase()),
        }
    }
}

/// Parses a list of patterns, naming the first bad one.
pub fn parse_patterns(list: &[String]) -> Result<Vec<Pattern>, String> {
    list.iter().map(|p| p.parse()).collect()
}

/// Addresses never dialled unless an `allow` pattern names them: this
/// machine, private networks, link-local (cloud metadata services live at
/// 169.254.169.254 and fd00:ec2::254), and the ranges no public host has.
const SPECIAL: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/3",
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// Whether `addr` is loopback, private, link-local or otherwise not a
/// public host's.
pub fn is_special(addr: IpAddr) -> bool {
    let addr = canonical(addr);
    SPECIAL.iter().any(|net| {
        net.parse::<IpNet>()
            .expect("valid networks")
            .contains(&addr)
    })
}

/// A session's own network settings, as created and changed through the
/// API: `allow` narrows the operator's list (`null`: the operator's list
/// as it is), `deny` adds to the operator's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionNetwork {
    /// Host patterns this session may reach (`host[:port]`, `*.suffix`,
    /// an address or a network). Each must be within the operator's
    /// `allow` unless `[network] sessions_may_widen` is set. `null` or
    /// absent: the operator's list.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// Host patterns this session may never reach, besides the operator's.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// Why settings cannot become a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A pattern does not parse, or there are too many.
    #[error("{0}")]
    Malformed(String),
    /// Well-formed, but beyond what the operator permits.
    #[error("{0}")]
    NotPermitted(String),
}

/// Why a connection is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial(pub String);

/// The policy one session's connections are decided by.
#[derive(Debug, Clone)]
pub struct Policy {
    mode: NetworkMode,
    allow: Vec<Pattern>,
    deny: Vec<Pattern>,
}

impl Policy {
    /// The policy of a session with `own` settings under `config`; an
    /// error (for the client) when `own` is malformed or reaches past what
    /// the operator allows.
    pub fn new(config: &NetworkConfig, own: &SessionNetwork) -> Result<Self, PolicyError> {
        let malformed = |what: &str| {
            let what = what.to_string();
            move |e: String| PolicyError::Malformed(format!("{what}: {e}"))
        };
        let operator_allow = parse_patterns(&config.allow).map_err(malformed("allow"))?;
        let mut deny = parse_patterns(&config.deny).map_err(malformed("deny"))?;
        for (name, list) in [
            ("allow", own.allow.as_deref().unwrap_or(&[])),
            ("deny", &own.deny),
        ] {
            if list.len() > MAX_SESSION_PATTERNS {
                return Err(PolicyError::Malformed(format!(
                    "network.{name}: at most {MAX_SESSION_PATTERNS} patterns, got {}",
                    list.len()
                )));
            }
        }
        deny.extend(parse_patterns(&own.deny).map_err(malformed("network.deny"))?);
        let allow = match &own.allow {
            None => match config.mode {
                // Any host, and the private addresses the operator named.
                NetworkMode::Open => std::iter::once("*".parse().expect("a pattern"))
                    .chain(operator_allow)
                    .collect(),
                _ => operator_allow,
            },
            Some(list) => {
                let own_allow = parse_patterns(list).map_err(malformed("network.allow"))?;
                if config.mode == NetworkMode::None && !own_allow.is_empty() {
                    return Err(PolicyError::NotPermitted(
                        "network.allow: the operator turned the sandboxes' network off \
                         ([network] mode = \"none\")"
                            .into(),
                    ));
                }
                if !config.sessions_may_widen {
                    let within = |p: &Pattern| {
                        (config.mode == NetworkMode::Open && !matches!(p.host, HostMatch::Net(_)))
                            || operator_allow.iter().any(|o| o.covers(p))
                    };
                    if let Some(outside) = own_allow.iter().find(|p| !within(p)) {
                        return Err(PolicyError::NotPermitted(format!(
                            "network.allow: {outside} is not within the operator's network policy; \
                             a session may only narrow it (unless [network] sessions_may_widen is set)"
                        )));
                    }
                }
                own_allow
            }
        };
        Ok(Self {
            mode: config.mode,
            allow,
            deny,
        })
    }

    /// The verdict on `host:port` by what was asked for, before any name
    /// is resolved.
    /// Allowed: which pattern allows it.
    pub fn check_host(&self, host: &Host, port: u16) -> Result<String, Denial> {
        if self.mode == NetworkMode::None {
            return Err(Denial(
                "the sandboxes' network is off ([network] mode = \"none\")".into(),
            ));
        }
        if let Some(p) = self.deny.iter().find(|p| p.matches(host, port)) {
            return Err(Denial(format!("it matches the deny pattern {p}")));
        }
        match self.allow.iter().find(|p| p.matches(host, port)) {
            Some(p) => Ok(format!("allowed by {p}")),
            None => Err(Denial("it is not on the session's allow list".into())),
        }
    }

    /// Whether a person may be asked about `host`: the network is on, no
    /// deny pattern matches it, no allow pattern names it, and it is not a
    /// loopback, private or link-local address (which only the operator's
    /// patterns open; a name is checked again once resolved).
    pub fn unlisted(&self, host: &Host, port: u16) -> bool {
        let special = matches!(host, Host::Address(a) if is_special(*a));
        self.mode == NetworkMode::Allowlist
            && !special
            && !self.deny.iter().any(|p| p.matches(host, port))
            && !self.allow.iter().any(|p| p.matches(host, port))
    }

    /// The verdict on dialling `addr` (what `host` resolved to, or the
    /// address asked for) on `port`.
    pub fn check_address(&self, addr: IpAddr, port: u16) -> Result<(), Denial> {
        let addr = canonical(addr);
        let host = Host::Address(addr);
        if let Some(p) = self.deny.iter().find(|p| p.matches(&host, port)) {
            return Err(Denial(format!("{addr} matches the deny pattern {p}")));
        }
        if is_special(addr) && !self.allow.iter().any(|p| p.names_address(addr, port)) {
            return Err(Denial(format!(
                "{addr} is a loopback, private or link-local address, which only an allow \
                 pattern naming the address opens"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mode: NetworkMode, allow: &[&str]) -> NetworkConfig {
        NetworkConfig {
            mode,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            ..NetworkConfig::default()
        }
    }

    fn own(allow: Option<&[&str]>, deny: &[&str]) -> SessionNetwork {
        SessionNetwork {
            allow: allow.map(|a| a.iter().map(|s| s.to_string()).collect()),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn allowed(policy: &Policy, host: &str, port: u16) -> bool {
        policy.check_host(&Host::parse(host), port).is_ok()
    }

    #[test]
    fn patterns_parse_names_wildcards_addresses_networks_and_ports() {
        for good in [
            "pypi.org",
            "PyPI.org.",
            "*.pythonhosted.org:443",
            "*",
            "*:8080",
            "10.0.0.0/8",
            "127.0.0.1:9000",
            "[::1]:8080",
            "[fd00::/8]",
            "[1:2:3:4:5:6:7::]:65535",
        ] {
            assert!(good.parse::<Pattern>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "pypi.org:0",
            "pypi.org:99999",
            "exa mple.org",
            "[::1",
            "[::1]x",
            "a..b",
            "http://pypi.org",
            " pypi.org",
            "fd00::1",
            "10.0.0.0/33",
            "[fd00::1/129]",
            "pypi.org:65536",
        ] {
            assert!(bad.parse::<Pattern>().is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// Whatever the grammar's regex accepts parses, so the API's schema
        /// and the server agree.
        #[test]
        fn every_string_the_regex_accepts_parses(
            text in proptest::string::string_regex(
                pattern_regex().trim_start_matches('^').trim_end_matches('$')
            ).unwrap()
        ) {
            proptest::prop_assume!(text.chars().count() <= MAX_PATTERN_CHARS);
            proptest::prop_assert!(text.parse::<Pattern>().is_ok(), "{:?}", text);
        }
    }

    #[test]
    fn a_wildcard_matches_subdomains_but_not_the_name_itself() {
        let p = Policy::new(
            &config(NetworkMode::Allowlist, &["*.example.com:443"]),
            &own(None, &[]),
        )
        .unwrap();
        assert!(allowed(&p, "files.example.com", 443));
        assert!(allowed(&p, "A.B.Example.COM.", 443));
        assert!(!allowed(&p, "example.com", 443));
        assert!(!allowed(&p, "evilexample.com", 443));
        assert!(!allowed(&p, "files.example.com", 80));
    }

    #[test]
    fn deny_wins_over_allow_and_none_refuses_everything() {
        let p = Policy::new(
            &NetworkConfig {
                deny: vec!["bad.example.com".into()],
                ..config(NetworkMode::Open, &[])
            },
            &own(None, &["worse.example.com:443"]),
        )
        .unwrap();
        assert!(allowed(&p, "good.example.com", 443));
        assert!(!allowed(&p, "bad.example.com", 443));
        assert!(!allowed(&p, "worse.example.com", 443));
        assert!(allowed(&p, "worse.example.com", 80));
        let none = Policy::new(&config(NetworkMode::None, &["*"]), &own(None, &[])).unwrap();
        assert!(!allowed(&none, "pypi.org", 443));
    }

    #[test]
    fn a_session_may_narrow_but_not_widen_unless_permitted() {
        let operator = config(
            NetworkMode::Allowlist,
            &["*.pythonhosted.org", "pypi.org:443"],
        );
        let p = Policy::new(&operator, &own(Some(&["files.pythonhosted.org:443"]), &[])).unwrap();
        assert!(allowed(&p, "files.pythonhosted.org", 443));
        assert!(!allowed(&p, "pypi.org", 443), "narrowed away");
        assert!(Policy::new(&operator, &own(Some(&["pypi.org"]), &[])).is_err());
        assert!(Policy::new(&operator, &own(Some(&["example.com"]), &[])).is_err());
        let widen = NetworkConfig {
            sessions_may_widen: true,
            ..operator.clone()
        };
        let p = Policy::new(&widen, &own(Some(&["example.com"]), &[])).unwrap();
        assert!(allowed(&p, "example.com", 443));
        // Open: any name is within, an address is not.
        let open = config(NetworkMode::Open, &[]);
        assert!(Policy::new(&open, &own(Some(&["example.com"]), &[])).is_ok());
        assert!(Policy::new(&open, &own(Some(&["10.0.0.1"]), &[])).is_err());
    }

    #[test]
    fn private_addresses_need_an_allow_pattern_naming_them() {
        let p = Policy::new(&config(NetworkMode::Open, &[]), &own(None, &[])).unwrap();
        for addr in [
            "127.0.0.1",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "::1",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            let a: IpAddr = addr.parse().unwrap();
            assert!(p.check_address(a, 80).is_err(), "{addr}");
        }
        assert!(
            p.check_address("151.101.0.223".parse().unwrap(), 443)
                .is_ok()
        );
        let named = Policy::new(
            &config(NetworkMode::Allowlist, &["127.0.0.1:8080", "localhost"]),
            &own(None, &[]),
        )
        .unwrap();
        assert!(
            named
                .check_address("127.0.0.1".parse().unwrap(), 8080)
                .is_ok()
        );
        assert!(
            named
                .check_address("127.0.0.1".parse().unwrap(), 8081)
                .is_err()
        );
        // A name is not an address: `localhost` resolving to 127.0.0.1 stays refused.
        assert!(allowed(&named, "localhost", 80));
        assert!(
            named
                .check_address("127.0.0.2".parse().unwrap(), 80)
                .is_err()
        );
    }
}
