//! The web console at `/`: plain HTML, CSS and an ES module, embedded in the
//! binary (no build step, no CDN). It uses the same API as any client.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::state::AppState;

const INDEX: &str = include_str!("../../console/index.html");
const APP: &str = include_str!("../../console/app.js");
const STYLE: &str = include_str!("../../console/style.css");
// xterm.js, vendored (see console/vendor/README.md); loaded by the Terminal tab.
const XTERM: &str = include_str!("../../console/vendor/xterm.js");
const XTERM_FIT: &str = include_str!("../../console/vendor/xterm-addon-fit.js");
const XTERM_STYLE: &str = include_str!("../../console/vendor/xterm.css");

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP) }),
        )
        .route(
            "/console/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/console/vendor/xterm.js",
            get(|| async { asset("text/javascript; charset=utf-8", XTERM) }),
        )
        .route(
            "/console/vendor/xterm-addon-fit.js",
            get(|| async { asset("text/javascript; charset=utf-8", XTERM_FIT) }),
        )
        .route(
            "/console/vendor/xterm.css",
            get(|| async { asset("text/css; charset=utf-8", XTERM_STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
