//! What the request handlers share: the application's services, built once
//! by [`crate::server::App`] and handed to the API as its state.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::plugins::PluginRuntime;
use crate::sandbox::Sandbox;
use crate::service::SessionService;
use crate::session::SessionManager;
use crate::store::Store;

/// Everything the request handlers share.
#[derive(Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub sandbox: Sandbox,
    pub plugins: Arc<PluginRuntime>,
    /// Finds sessions and reports on them (reads).
    pub sessions: Arc<SessionManager>,
    /// Creates and deletes sessions, submits and cancels tasks: every
    /// sequence that changes more than one part of the application.
    pub service: SessionService,
    pub agent: Arc<Agent>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server begins to stop (WebSocket clients close).
    pub shutdown: CancellationToken,
}
