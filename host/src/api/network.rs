//! A session's network policy.
//!
//! - `GET /api/sessions/{session_id}/network` — the session's own settings,
//!   the operator's policy they narrow, and what the session uses now.
//! - `PUT /api/sessions/{session_id}/network` — `{"allow": [...] | null,
//!   "deny": [...]}`: new settings, for connections asked for from now on
//!   (open ones are left alone). 422 when a pattern is malformed, 403 when
//!   one reaches past the operator's policy.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, ApiPath};
use super::types::HostPattern;
use super::{ApiError, SessionPath};
use crate::config::NetworkMode;
use crate::session::{Session, SessionNetwork};
use crate::state::AppState;

/// A session's own network settings, as created or changed.
#[derive(Debug, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSettings {
    /// Host patterns this session may reach, each within the operator's
    /// `allow` (unless the operator lets sessions widen it). `null` or
    /// absent: the operator's list.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub allow: Option<Vec<HostPattern>>,
    /// Host patterns this session may never reach, besides the operator's.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub deny: Vec<HostPattern>,
}

/// Read only from a JSON object, as the document says: serde's derived
/// form also takes an array of the fields in order (`[]` would pass as
/// `{}`), which the extractor's check sees only at the top of a body.
impl<'de> Deserialize<'de> for NetworkSettings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            #[serde(default)]
            allow: Option<Vec<HostPattern>>,
            #[serde(default)]
            deny: Vec<HostPattern>,
        }
        struct Object;
        impl<'de> serde::de::Visitor<'de> for Object {
            type Value = NetworkSettings;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object with `allow` and `deny`")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let Fields { allow, deny } =
                    Fields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(NetworkSettings { allow, deny })
            }
        }
        d.deserialize_map(Object)
    }
}

impl From<NetworkSettings> for SessionNetwork {
    fn from(s: NetworkSettings) -> Self {
        Self {
            allow: s
                .allow
                .map(|list| list.into_iter().map(HostPattern::into_inner).collect()),
            deny: s.deny.into_iter().map(HostPattern::into_inner).collect(),
        }
    }
}

/// A session's network: its settings, the operator's, and its use.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NetworkInfo {
    /// The operator's mode: `allowlist` (hosts an allow pattern matches),
    /// `open` (any public host) or `none`.
    pub mode: String,
    /// The session's own allow patterns; `null`: the operator's.
    pub allow: Option<Vec<String>>,
    /// The session's own deny patterns (the operator's apply too).
    pub deny: Vec<String>,
    /// The operator's allow patterns.
    pub operator_allow: Vec<String>,
    /// The operator's deny patterns.
    pub operator_deny: Vec<String>,
    /// Whether the session's `allow` may name hosts beyond the operator's.
    pub sessions_may_widen: bool,
    /// Connections open now, and the most the session may hold.
    pub open_connections: usize,
    pub max_connections: usize,
    /// Bytes moved while the server runs, and the most the session may move.
    pub bytes_used: u64,
    pub max_bytes: u64,
}

impl NetworkInfo {
    fn new(session: &Session) -> Self {
        let network = &session.network;
        let own = network.settings();
        let config = network.config();
        Self {
            mode: match config.mode {
                NetworkMode::Allowlist => "allowlist",
                NetworkMode::Open => "open",
                NetworkMode::None => "none",
            }
            .into(),
            allow: own.allow,
            deny: own.deny,
            operator_allow: config.allow.clone(),
            operator_deny: config.deny.clone(),
            sessions_may_widen: config.sessions_may_widen,
            open_connections: network.open_connections(),
            max_connections: config.max_connections,
            bytes_used: network.bytes_used(),
            max_bytes: config.max_bytes.bytes(),
        }
    }
}

pub fn routes() -> ApiRouter<Arc<AppState>> {
    ApiRouter::new().api_route(
        "/api/sessions/{session_id}/network",
        get_with(get, |op| {
            op.summary("Get a session's network policy").tag("network")
        })
        .put_with(put, |op| {
            op.summary("Change a session's network policy (new connections follow it)")
                .tag("network")
        }),
    )
}

async fn get(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
) -> Result<Json<NetworkInfo>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    Ok(Json(NetworkInfo::new(&session)))
}

async fn put(
    State(state): State<Arc<AppState>>,
    ApiPath(path): ApiPath<SessionPath>,
    ApiJson(settings): ApiJson<NetworkSettings>,
) -> Result<Json<NetworkInfo>, ApiError> {
    let session = state.sessions.get(&path.session_id)?;
    state
        .sessions
        .set_network(&session, settings.into())
        .await?;
    Ok(Json(NetworkInfo::new(&session)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_only_from_an_object_of_known_fields() {
        let parse = |v: serde_json::Value| serde_json::from_value::<NetworkSettings>(v);
        let s = parse(serde_json::json!({"allow": ["pypi.org"]})).unwrap();
        assert_eq!(s.allow.map(|a| a.len()), Some(1));
        assert!(s.deny.is_empty());
        assert!(parse(serde_json::json!({})).unwrap().allow.is_none());
        // The fuzzer's find: an array was taken as the empty object.
        for bad in [
            serde_json::json!([]),
            serde_json::json!([null, []]),
            serde_json::json!({"allow": [], "other": 1}),
            serde_json::json!("allow"),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }
}
