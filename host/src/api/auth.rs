//! Authentication: API tokens from `auth.tokens`.
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
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;

/// The hashed tokens and what is public.
#[derive(Debug, Clone)]
pub struct Auth {
    hashes: Vec<[u8; 32]>,
    public_health: bool,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Auth {
    pub fn new(tokens: &[String], public_health: bool) -> Self {
        Self {
            hashes: tokens.iter().map(|t| hash(t)).collect(),
            public_health,
        }
    }

    pub fn enabled(&self) -> bool {
        !self.hashes.is_empty()
    }

    /// Whether `token` is one of ours, looking at every one of them.
    fn accepts(&self, token: &str) -> bool {
        let given = hash(token);
        self.hashes
            .iter()
            .fold(0u8, |ok, h| ok | h.ct_eq(&given).unwrap_u8())
            == 1
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

pub async fn require_token(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    if !auth.enabled()
        || auth.is_public(req.uri().path())
        || req.method() == axum::http::Method::OPTIONS
    {
        return next.run(req).await;
    }
    match presented(&req) {
        Some(token) if auth.accepts(&token) => next.run(req).await,
        given => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_tokens() {
        let auth = Auth::new(
            &[
                "a-long-enough-token-1".into(),
                "another-long-token-2".into(),
            ],
            true,
        );
        assert!(auth.accepts("a-long-enough-token-1"));
        assert!(auth.accepts("another-long-token-2"));
        assert!(!auth.accepts("a-long-enough-token-"));
        assert!(!auth.accepts(""));
        assert!(auth.is_public("/api/health"));
        assert!(!Auth::new(&["x".repeat(16)], false).is_public("/api/health"));
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
