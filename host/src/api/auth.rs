//! Authentication: each request's token names its principal
//! (`auth.tokens`, `[[auth.users]]`; see [`crate::principal`]), which the
//! handlers get as an `Extension<Arc<Principal>>`; without tokens every
//! request is `local`'s, an admin. Then [`session_access`]: a request about
//! a session its principal may not see is answered as if there were no
//! such session.
//!
//! Every request except `GET /api/health` (when `auth.public_health`) and the
//! documentation pages and the web console's static files must carry a token:
//! `Authorization: Bearer <token>`, or `?token=<token>` on a WebSocket upgrade
//! only (browsers' WebSockets cannot set headers; anywhere else a token in a
//! URL would only end up in logs and browser history). The check runs before
//! routing, so a 401 never reveals whether a session exists.
//! Tokens are compared in constant time, after hashing so that their lengths
//! do not show either.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::principal::{Principal, Principals};
use crate::state::AppState;

/// The principals and what is public.
#[derive(Debug, Clone)]
pub struct Auth {
    principals: Arc<Principals>,
    /// Every request's principal when there are no tokens.
    local: Arc<Principal>,
    public_health: bool,
}

impl Auth {
    pub fn new(principals: Arc<Principals>, public_health: bool) -> Self {
        Self {
            principals,
            local: Arc::new(Principal::local()),
            public_health,
        }
    }

    pub fn enabled(&self) -> bool {
        self.principals.enabled()
    }

    fn is_public(&self, path: &str) -> bool {
        // The console's static files hold no data; it asks for a token itself.
        matches!(path, "/" | "/docs" | "/redoc" | "/openapi.json")
            || path.starts_with("/console/")
            || (self.public_health && path == "/api/health")
    }
}

/// The paths where a token may come as `?token=`: the WebSocket.
fn takes_query_token(path: &str) -> bool {
    path.starts_with("/ws/")
}

/// The token a request carries, if any.
fn presented(req: &Request) -> Option<String> {
    if let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
    {
        return Some(token.trim().to_string());
    }
    if !takes_query_token(req.uri().path()) {
        return None;
    }
    let query = req.uri().query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
}

pub async fn require_token(
    State(auth): State<Arc<Auth>>,
    mut req: Request,
    next: Next,
) -> Response {
    if !auth.enabled() {
        req.extensions_mut().insert(auth.local.clone());
        return next.run(req).await;
    }
    if auth.is_public(req.uri().path()) || req.method() == axum::http::Method::OPTIONS {
        return next.run(req).await;
    }
    match presented(&req).and_then(|token| auth.principals.authenticate(&token)) {
        Some(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        None => {
            let given = presented(&req);
            let detail = if given.is_some() {
                "Invalid token"
            } else {
                "Not authenticated"
            };
            let mut response = ApiError::new(StatusCode::UNAUTHORIZED, detail).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

/// The session a path is about: `/api/sessions/{id}...`, `/ws/{id}...`
/// or `/mcp/{id}...`.
fn session_in_path(path: &str) -> Option<&str> {
    ["/api/sessions/", "/ws/", "/mcp/"]
        .iter()
        .find_map(|prefix| {
            let id = path.strip_prefix(prefix)?.split('/').next()?;
            (!id.is_empty()).then_some(id)
        })
}

/// A request about a session its principal may not see is a 404, as for a
/// session that does not exist (one that does not is left to the handler,
/// which says the same). The event WebSocket closes with 4004 instead, by
/// its own check, as it does for an unknown session.
pub async fn session_access(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let (Some(id), Some(principal)) = (
        session_in_path(path),
        req.extensions().get::<Arc<Principal>>(),
    ) else {
        return next.run(req).await;
    };
    let hidden = state
        .sessions
        .get(id)
        .is_ok_and(|s| !principal.may_see(&s.owner));
    let events_socket = path
        .strip_prefix("/ws/")
        .is_some_and(|rest| !rest.contains('/'));
    if hidden && !events_socket {
        return ApiError::not_found("Session not found").into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthConfig;

    #[test]
    fn only_configured_tokens_name_a_principal() {
        let auth = Auth::new(
            Arc::new(Principals::new(&AuthConfig {
                tokens: vec![
                    "a-long-enough-token-1".into(),
                    "another-long-token-2".into(),
                ],
                ..AuthConfig::default()
            })),
            true,
        );
        assert!(auth.enabled());
        assert!(
            auth.principals
                .authenticate("a-long-enough-token-1")
                .is_some()
        );
        assert!(
            auth.principals
                .authenticate("another-long-token-2")
                .is_some()
        );
        assert!(
            auth.principals
                .authenticate("a-long-enough-token-")
                .is_none()
        );
        assert!(auth.is_public("/api/health"));
        let private = Auth::new(Arc::new(Principals::new(&AuthConfig::default())), false);
        assert!(!private.is_public("/api/health"));
    }

    #[test]
    fn the_session_a_path_is_about() {
        assert_eq!(session_in_path("/api/sessions/abcd0123"), Some("abcd0123"));
        assert_eq!(
            session_in_path("/api/sessions/abcd0123/files/content"),
            Some("abcd0123")
        );
        assert_eq!(session_in_path("/ws/abcd0123"), Some("abcd0123"));
        assert_eq!(session_in_path("/ws/abcd0123/pty"), Some("abcd0123"));
        assert_eq!(session_in_path("/mcp/abcd0123"), Some("abcd0123"));
        assert_eq!(session_in_path("/api/sessions"), None);
        assert_eq!(session_in_path("/api/sessions/"), None);
        assert_eq!(session_in_path("/api/usage"), None);
    }

    /// Every route about one session is under a prefix [`session_access`]
    /// checks, so none can reach another principal's session.
    #[test]
    fn every_session_route_is_under_a_checked_prefix() {
        let api = crate::api::openapi();
        for (path, _) in api.paths.iter().flat_map(|p| p.paths.iter()) {
            if path.contains("{session_id}") {
                assert!(
                    session_in_path(&path.replace("{session_id}", "abcd0123")) == Some("abcd0123"),
                    "{path} is about a session but not checked"
                );
            }
        }
    }

    #[test]
    fn a_query_token_counts_only_on_the_websocket() {
        let token = "a-long-enough-token-1";
        let request = |uri: &str| {
            Request::builder()
                .uri(uri)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        assert_eq!(
            presented(&request(&format!("/ws/abcd0123?since=3&token={token}"))).as_deref(),
            Some(token)
        );
        for uri in [
            format!("/api/sessions?token={token}"),
            format!("/metrics?token={token}"),
            format!("/wsx?token={token}"),
        ] {
            assert_eq!(presented(&request(&uri)), None, "{uri}");
        }
    }
}
