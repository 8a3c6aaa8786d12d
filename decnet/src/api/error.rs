//! Every error a handler returns, and its JSON body.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

/// Every error body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// `bad_parameter`, `unauthorized`, `not_found`, `conflict`, `unavailable` or `internal`.
    pub error: String,
    /// What was wrong; for `bad_parameter` it starts with the parameter's name.
    pub detail: String,
}

/// Errors as JSON `{"error": ..., "detail": ...}`; internal error text is logged, not sent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("internal error")]
    Internal(String),
    #[error("bad parameter {0}: {1}")]
    BadParameter(&'static str, String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The request cannot apply to how the daemon was started (409).
    #[error("conflict: {0}")]
    Conflict(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadParameter(name, why) => (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "bad_parameter", "detail": format!("{name}: {why}")})),
            )
                .into_response(),
            ApiError::NotFound(what) => (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "not_found", "detail": what})),
            )
                .into_response(),
            ApiError::Unauthorized(why) => (
                StatusCode::UNAUTHORIZED,
                [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({"error": "unauthorized", "detail": why})),
            )
                .into_response(),
            ApiError::Unavailable(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "unavailable", "detail": why})),
            )
                .into_response(),
            ApiError::Conflict(why) => (
                StatusCode::CONFLICT,
                Json(json!({"error": "conflict", "detail": why})),
            )
                .into_response(),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "API internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": "internal", "detail": "see the daemon log"})),
                )
                    .into_response()
            }
        }
    }
}
