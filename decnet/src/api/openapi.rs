//! `GET /api/v1/openapi.json`: the OpenAPI 3 document, generated from the `#[utoipa::path]`
//! annotations next to each handler, so it cannot drift from the routes.

use std::sync::OnceLock;

use axum::{
    http::header,
    response::{IntoResponse, Response},
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "decnet",
        description = "Sensor and analyst of a deception network: probes, attacker profiles, campaigns and a live stream. Every route but health and this document needs `Authorization: Bearer <token>`."
    ),
    paths(
        super::status::health,
        super::status::stats,
        super::status::metrics,
        super::ticket,
        super::rotate_token,
        super::data::logs,
        super::data::attackers,
        super::data::attacker,
        super::data::campaigns,
        super::data::campaign,
        super::data::detections,
        super::data::services,
        super::export::blocklist,
        super::export::stix,
        super::stream::stream,
    ),
    components(schemas(super::error::ErrorBody)),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
pub(crate) struct ApiDoc;

pub fn json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".into()))
}

pub async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json()).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_lists_every_route_and_the_bearer_scheme() {
        let v: serde_json::Value = serde_json::from_str(super::json()).unwrap();
        assert!(v["openapi"].as_str().unwrap().starts_with("3."));
        assert_eq!(
            v["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let paths = v["paths"].as_object().unwrap();
        for p in [
            "/api/v1/health",
            "/api/v1/stats",
            "/metrics",
            "/api/v1/logs",
            "/api/v1/attackers",
            "/api/v1/attackers/{ip}",
            "/api/v1/campaigns",
            "/api/v1/campaigns/{id}",
            "/api/v1/detections",
            "/api/v1/services",
            "/api/v1/export/blocklist",
            "/api/v1/export/stix",
            "/api/v1/stream/ticket",
            "/api/v1/stream",
        ] {
            assert!(paths.contains_key(p), "{p} missing");
        }
        // Health needs no token; the data routes do.
        assert_eq!(
            paths["/api/v1/health"]["get"]["security"],
            serde_json::json!([{}])
        );
        let limit = &paths["/api/v1/logs"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap()["schema"];
        assert_eq!(
            (&limit["minimum"], &limit["maximum"]),
            (&1.into(), &1000.into())
        );
    }
}
