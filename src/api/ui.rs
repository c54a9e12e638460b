//! The web UI at `/`: one HTML page, a script and a style sheet, embedded in the binary
//! (no build step, nothing fetched from elsewhere). The page is a client of the API like
//! any other: it polls `/api/node`, `/api/files`, `/api/downloads`, `/api/peers` and
//! `/metrics` once a second, and pauses, resumes or cancels downloads with the bearer
//! token it is given in its address's fragment (`/#token=…`, never sent to the server).
//!
//! The three files carry no data, so they need no token even off loopback; a strict
//! Content-Security-Policy lets the page load only its own script and style and talk only
//! to this origin.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

/// Only this origin's script, style and API; no framing (clickjacking), no plugins.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The UI's routes, merged into the API router without the token check (public: the
/// files hold no node data).
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route("/ui/app.js", get(|| asset("text/javascript; charset=utf-8", APP_JS)))
        .route("/ui/app.css", get(|| asset("text/css; charset=utf-8", APP_CSS)))
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
