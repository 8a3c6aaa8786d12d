//! `GET /`: the live dashboard, one self-contained page embedded in the binary (no CDN, no
//! build step). The page asks for the API token (or takes it from `#token=` in the URL,
//! which never reaches the server) and opens the stream with a single-use ticket.

use std::sync::OnceLock;

use axum::{
    http::header,
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

const PAGE: &str = include_str!("dashboard.html");

/// The Content-Security-Policy: only the page's own inline script (by hash) runs, and it
/// may talk to this origin only. A payload that slipped into the DOM as markup still
/// could not execute.
fn csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let script = PAGE
            .split_once("<script>")
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map_or("", |(s, _)| s);
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script));
        format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        )
    })
}

pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, csp()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
        .into_response()
}
