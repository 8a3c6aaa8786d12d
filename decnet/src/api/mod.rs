//! The HTTP API (docs/api.md): `app(state)` builds the router, so tests can drive
//! it without a socket.
//!
//! - `state`: what handlers share; `error`: what they return when they fail;
//! - `auth`: bearer token and stream tickets; `params`: query validation;
//! - `status`: health, stats, metrics; `data`: logs, attackers, campaigns, detections,
//!   services;
//!   `export`: the blocklist and STIX feeds; `stream`: the SSE stream; `openapi`: the document, generated from all of them.
//!
//! Public: `/` (the dashboard page, which then asks for the token), `/api/v1/health`,
//! `/api/v1/openapi.json` (`openapi`, generated from the handlers' annotations), and
//! `/metrics` from loopback. Everything else needs the token.
//!
//! Stage 12 (serve) of the pipeline: docs/architecture.md.

pub mod auth;
pub mod dashboard;
pub mod data;
mod error;
pub mod export;
pub(crate) mod http_metrics;
mod http_trace;
pub mod openapi;
pub mod params;
mod state;
pub mod status;
pub mod stream;

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;

pub use error::{ApiError, ErrorBody};
pub use state::AppState;
use status::{health, metrics, stats};

pub fn app(state: AppState) -> Router {
    let protected = Router::new()
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/logs", get(data::logs))
        .route("/api/v1/attackers", get(data::attackers))
        .route("/api/v1/attackers/{ip}", get(data::attacker))
        .route("/api/v1/campaigns", get(data::campaigns))
        .route("/api/v1/campaigns/{id}", get(data::campaign))
        .route("/api/v1/detections", get(data::detections))
        .route("/api/v1/services", get(data::services))
        .route("/api/v1/export/blocklist", get(export::blocklist))
        .route("/api/v1/export/stix", get(export::stix))
        .route("/api/v1/stream/ticket", post(ticket))
        .route("/api/v1/token/rotate", post(rotate_token))
        .route("/api/v1/stream", get(stream::stream))
        .route_layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            auth::require,
        ));
    let metrics = Router::new().route("/metrics", get(metrics)).route_layer(
        axum::middleware::from_fn_with_state(state.auth.clone(), auth::require_unless_loopback),
    );
    let app = Router::new()
        .route("/", get(dashboard::page))
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(openapi::document))
        .merge(protected)
        .merge(metrics)
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.http.clone(),
            http_metrics::track,
        ));
    http_trace::layer(app).with_state(state)
}

/// `POST /api/v1/stream/ticket`: a single-use ticket for `GET /api/v1/stream?ticket=`.
#[utoipa::path(post, path = "/api/v1/stream/ticket", tag = "stream",
    responses(
        (status = 200, description = "`{ticket, expires_in_s}`: opens one stream within 30 s", body = Object),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 503, description = "Too many outstanding tickets", body = ErrorBody),
    ))]
pub(crate) async fn ticket(
    State(st): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let t = st.auth.issue_ticket()?;
    Ok(Json(json!({
        "ticket": t,
        "expires_in_s": auth::TICKET_TTL.as_secs(),
    })))
}

/// `POST /api/v1/token/rotate`: a new API token, written to the data dir's token file
/// before it takes over; the old one, its tickets and its open streams end.
#[utoipa::path(post, path = "/api/v1/token/rotate", tag = "status",
    responses(
        (status = 200, description = "`{rotated: true, token_file}`: read the new token there", body = Object),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 409, description = "The token comes from DECNET_API_TOKEN: its owner changes it there", body = ErrorBody),
        (status = 503, description = "The new token could not be written", body = ErrorBody),
    ))]
pub(crate) async fn rotate_token(
    State(st): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let auth = st.auth.clone();
    let path = tokio::task::spawn_blocking(move || auth.rotate())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| match e {
            auth::RotateError::FromEnv => ApiError::Conflict(e.to_string()),
            auth::RotateError::Write(..) => ApiError::Unavailable(e.to_string()),
        })?;
    tracing::info!(path = %path.display(), "API token rotated; open streams end");
    st.hub.token_rotated();
    Ok(Json(json!({"rotated": true, "token_file": path})))
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "not_found", "detail": "no such route"})),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
