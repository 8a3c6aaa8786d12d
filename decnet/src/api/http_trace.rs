//! Developer tracing for the API: one server span per request, named `<METHOD> <route>`
//! with OpenTelemetry's HTTP semantic-convention fields, continuing the caller's trace when
//! the request carries a W3C `traceparent` header. The layer is only added when developer
//! tracing is on, so the API pays nothing otherwise.

use axum::Router;
#[cfg(feature = "otel")]
use axum::{extract::MatchedPath, http::Request};

use super::state::AppState;

/// `router` with the server-span layer when developer tracing is on, else unchanged.
pub(super) fn layer(router: Router<AppState>) -> Router<AppState> {
    #[cfg(feature = "otel")]
    if crate::telemetry::enabled() {
        use tower_http::trace::TraceLayer;
        return router.layer(
            TraceLayer::new_for_http()
                .make_span_with(make_span)
                .on_response(on_response)
                // Failures show as the span's status; the console has its own log lines.
                .on_failure(()),
        );
    }
    router
}

#[cfg(feature = "otel")]
fn make_span<B>(req: &Request<B>) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str());
    let method = req.method().as_str();
    // No query string: it may carry a stream ticket.
    let span = tracing::info_span!(
        "http.server",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        url.path = req.uri().path(),
        url.scheme = "http",
        network.protocol.version = ?req.version(),
        http.response.status_code = tracing::field::Empty,
    );
    let parent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::ingest::parse::split_traceparent);
    if let Some((trace_id, span_id)) = parent {
        crate::telemetry::set_parent(&span, Some(&trace_id), Some(&span_id));
    }
    span
}

#[cfg(feature = "otel")]
fn on_response<B>(
    res: &axum::http::Response<B>,
    _latency: std::time::Duration,
    span: &tracing::Span,
) {
    let status = res.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}
