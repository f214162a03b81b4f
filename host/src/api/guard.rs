//! What keeps web pages from driving a server that has no API tokens.
//!
//! Without tokens, anything that can reach the port is trusted, and a web
//! page the operator opens can reach it too: by DNS rebinding (a name the
//! page controls re-resolves to 127.0.0.1, so its scripts talk to us as a
//! "same-origin" server) or by cross-site requests (a form or `fetch` posting
//! to `http://127.0.0.1:8000`). So while `auth.tokens` is empty:
//!
//! - the `Host` header must name this server: a loopback name or address
//!   (`localhost`, `*.localhost`, `127.0.0.0/8`, `[::1]`), the address it is
//!   bound to, or one of `server.allowed_hosts`; anything else is a 403;
//! - a request that changes state (any method but GET, HEAD and OPTIONS) or
//!   opens a WebSocket, and that carries an `Origin` header, must come from
//!   the server's own pages (the console) or from one of `auth.cors_origins`;
//!   anything else is a 403. Programs (curl, the CLI, the contract's example
//!   clients) send no `Origin` and are not affected.
//!
//! Bodies must also be `application/json` (see `extract::ApiJson`), which a
//! page cannot send cross-site without a CORS preflight that we refuse.
//!
//! With tokens set, a page cannot present one (they travel in a header, not
//! a cookie), so these checks step aside and CORS applies as configured.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::config::Config;

/// The names and origins this server answers to while it has no tokens.
#[derive(Debug, Clone)]
pub struct BrowserGuard {
    /// Off when tokens are configured.
    enabled: bool,
    bind: IpAddr,
    allowed_hosts: Vec<String>,
    cors_origins: Vec<String>,
    any_origin: bool,
}

impl BrowserGuard {
    pub fn new(config: &Config) -> Self {
        Self {
            enabled: !config.auth.enabled(),
            bind: config.server.bind.ip(),
            allowed_hosts: config
                .server
                .allowed_hosts
                .iter()
                .map(|h| h.trim().to_string())
                .collect(),
            cors_origins: config
                .auth
                .cors_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            any_origin: config.auth.cors_origins.iter().any(|o| o == "*"),
        }
    }

    /// Whether `host` (a `Host` header value, with or without a port) names
    /// this server.
    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        let bytes = name.as_bytes();
        if name.eq_ignore_ascii_case("localhost")
            || (bytes.len() > 10 && bytes[bytes.len() - 10..].eq_ignore_ascii_case(b".localhost"))
        {
            return true;
        }
        if let Ok(ip) = name.parse::<IpAddr>() {
            return ip.is_loopback() || (!self.bind.is_unspecified() && ip == self.bind);
        }
        self.allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
    }

    /// Whether a request carrying `Origin: origin` to `host` may change
    /// state: it comes from a page this server served, or from a configured
    /// CORS origin.
    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if self.any_origin || self.cors_origins.contains(&origin) {
            return true;
        }
        origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .zip(host)
            .is_some_and(|(authority, host)| authority.eq_ignore_ascii_case(host))
    }

    /// Why `req` is refused, if it is. Reads the request in place: the
    /// common case (a request that passes) allocates nothing.
    fn refusal(&self, req: &Request) -> Option<String> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        if let Some(host) = host
            && !self.host_allowed(host)
        {
            tracing::warn!(%host, "refused a request for a host name this server does not answer to");
            return Some(format!(
                "Host {host:?} is not allowed: without auth tokens this server answers only to \
                 loopback names, its bind address and server.allowed_hosts"
            ));
        }
        let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        let websocket = req
            .headers()
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
        if !(changes_state || websocket) {
            return None;
        }
        let origin = String::from_utf8_lossy(req.headers().get(header::ORIGIN)?.as_bytes());
        if self.origin_allowed(&origin, host) {
            return None;
        }
        tracing::warn!(%origin, method = %req.method(), path = %req.uri().path(), "refused a cross-origin request");
        Some(format!(
            "Origin {origin:?} is not allowed: without auth tokens only this server's own \
             pages and auth.cors_origins may send requests that change state"
        ))
    }
}

/// The host part of a `Host` header value: `[::1]:8000` → `::1`,
/// `localhost:8000` → `localhost`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match host.split_once(':') {
        // One colon: `name:port`. More would be a bare IPv6 address.
        Some((name, port)) if !port.contains(':') => name,
        _ => host,
    }
}

pub async fn check(State(guard): State<Arc<BrowserGuard>>, req: Request, next: Next) -> Response {
    if guard.enabled
        && let Some(detail) = guard.refusal(&req)
    {
        return ApiError::new(StatusCode::FORBIDDEN, detail).into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(adjust: impl FnOnce(&mut Config)) -> BrowserGuard {
        let mut config = Config::default();
        adjust(&mut config);
        BrowserGuard::new(&config)
    }

    #[test]
    fn only_loopback_names_the_bind_address_and_allowed_hosts_pass() {
        let g = guard(|c| c.server.allowed_hosts = vec!["DevBox.lan".into()]);
        for ok in [
            "localhost",
            "localhost:8000",
            "app.localhost:8000",
            "127.0.0.1:8000",
            "127.1.2.3",
            "[::1]:8000",
            "[::1]",
            "devbox.lan:8000",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8000",
            "localhost.evil.example",
            "10.0.0.5:8000",
            "0.0.0.0:8000",
            "",
        ] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
        let g = guard(|c| c.server.bind = "10.0.0.5:8000".parse().unwrap());
        assert!(g.host_allowed("10.0.0.5:8000"));
        let g = guard(|c| c.server.bind = "0.0.0.0:8000".parse().unwrap());
        assert!(!g.host_allowed("0.0.0.0:8000"));
    }

    #[test]
    fn only_same_origin_and_configured_origins_may_change_state() {
        let g = guard(|c| c.auth.cors_origins = vec!["https://console.example/".into()]);
        assert!(g.origin_allowed("http://127.0.0.1:8000", Some("127.0.0.1:8000")));
        assert!(g.origin_allowed("https://console.example", Some("127.0.0.1:8000")));
        assert!(!g.origin_allowed("http://evil.example", Some("127.0.0.1:8000")));
        assert!(!g.origin_allowed("http://127.0.0.1:9999", Some("127.0.0.1:8000")));
        assert!(!g.origin_allowed("null", Some("127.0.0.1:8000")));
        assert!(!g.origin_allowed("http://127.0.0.1:8000", None));
        assert!(guard(|c| c.auth.cors_origins = vec!["*".into()]).origin_allowed("null", None));
    }

    #[test]
    fn tokens_turn_the_guard_off() {
        assert!(guard(|_| {}).enabled);
        assert!(!guard(|c| c.auth.tokens = vec!["x".repeat(16)]).enabled);
    }
}
