//! `GET /metrics` — Prometheus metrics in the OpenMetrics text format
//! (additive; behind the same token as the API when auth is on, and for
//! admins only: they name every principal and what it used).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use super::ApiError;
use crate::principal::Principal;
use crate::state::AppState;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Arc<Principal>>,
) -> Response {
    if !principal.is_admin() {
        return ApiError::new(StatusCode::FORBIDDEN, "Metrics are for admins").into_response();
    }
    state.metrics.set_sessions(&state.sessions.status_counts());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
