//! The REST and WebSocket API. One module per resource, each owning its
//! request and response types and its `routes()`; merged in [`router`].

mod error;
mod health;
mod tools;

use std::sync::Arc;

use axum::Router;

pub use error::ApiError;

use crate::server::AppState;

/// Every route of the API, with its state.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(tools::routes())
        .with_state(state)
}
