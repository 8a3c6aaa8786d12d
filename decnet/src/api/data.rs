//! Read routes over the store: logs, attackers, campaigns, detections.

use axum::{
    Json,
    extract::{Path, RawQuery, State},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{error::ApiError, params::Params, state::AppState};
use crate::{hub::log_json, store::Store};

/// Event types a record can have (journal contract), for `event_type` filters.
pub(crate) const EVENT_TYPES: &[&str] = &[
    "tcp_syn",
    "tcp_probe",
    "tcp_payload",
    "tcp_segment",
    "udp_probe",
    "icmp_probe",
    "ip_probe",
    "source_suppressed",
    "probe_outcome",
    "tcp_flow",
];

pub(crate) const SORTS: &[&str] = &["risk", "last_seen", "first_seen", "events"];

pub(super) fn store(st: &AppState) -> Result<&Store, ApiError> {
    st.store
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("no database attached".into()))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// Raw JSON text as a response body.
fn json_text(body: String) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// `GET /api/v1/logs?after_id&limit&attacker_ip&event_type`: rows after an id, oldest
/// first; `next_after_id` continues the page.
#[utoipa::path(get, path = "/api/v1/logs", tag = "data",
    params(
        ("after_id" = Option<i64>, Query, minimum = 0, description = "Rows with a larger id (default 0)."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Rows at most (default 100)."),
        ("attacker_ip" = Option<String>, Query, description = "Only this source (IPv4 or IPv6)."),
        ("event_type" = Option<String>, Query, description = "Only this event type: tcp_syn, tcp_probe, tcp_payload, tcp_segment, udp_probe, icmp_probe or ip_probe."),
    ),
    responses(
        (status = 200, description = "`{logs: [...], next_after_id}`", body = Object),
        (status = 400, description = "A bad parameter, named in `detail`", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::error::ErrorBody),
    ))]
pub async fn logs(State(st): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(
        q.as_deref(),
        &["after_id", "limit", "attacker_ip", "event_type"],
    )?;
    let after = p.uint("after_id", 0, i64::MAX as u64)? as i64;
    let limit = p.limit(100)? as i64;
    let ip = p.ip("attacker_ip")?;
    let et = p.one_of("event_type", EVENT_TYPES, None)?;
    let rows = store(&st)?
        .logs_page(after, limit, ip.as_deref(), et)
        .await
        .map_err(internal)?;
    let next = rows.last().map_or(after, |(id, _)| *id);
    let items: Vec<String> = rows.iter().map(|(id, l)| log_json(*id, l)).collect();
    Ok(json_text(format!(
        r#"{{"logs":[{}],"next_after_id":{next}}}"#,
        items.join(",")
    )))
}

/// `GET /api/v1/attackers?limit&offset&sort`: one summary row per source.
#[utoipa::path(get, path = "/api/v1/attackers", tag = "data",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Rows at most (default 100)."),
        ("offset" = Option<u32>, Query, minimum = 0, maximum = 1000000, description = "Rows to skip (default 0)."),
        ("sort" = Option<String>, Query, description = "risk (default), last_seen, first_seen or events."),
    ),
    responses(
        (status = 200, description = "`{attackers: [...], total, limit, offset, sort}`", body = Object),
        (status = 400, description = "A bad parameter, named in `detail`", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::error::ErrorBody),
    ))]
pub async fn attackers(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["limit", "offset", "sort"])?;
    let limit = p.limit(100)?;
    let offset = p.uint("offset", 0, super::params::MAX_OFFSET)?;
    let sort = p.one_of("sort", SORTS, Some("risk"))?.unwrap_or("risk");
    let (rows, total) = store(&st)?
        .attackers_page(sort, limit as i64, offset as i64)
        .await
        .map_err(internal)?;
    // Stored rows go out as they are; only rows from before the summary column are rendered.
    let items: Vec<String> = rows.iter().filter_map(crate::profile::list_row).collect();
    Ok(json_text(format!(
        r#"{{"attackers":[{}],"total":{total},"limit":{limit},"offset":{offset},"sort":"{sort}"}}"#,
        items.join(",")
    )))
}

/// `GET /api/v1/attackers/{ip}`: the profile, rendered from the stored state.
#[utoipa::path(get, path = "/api/v1/attackers/{ip}", tag = "data",
    params(("ip" = String, Path, description = "The source, IPv4 or IPv6.")),
    responses(
        (status = 200, description = "The attacker profile (docs/api.md)", body = Object),
        (status = 400, description = "Not an IP address", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::error::ErrorBody),
        (status = 404, description = "Never profiled", body = super::error::ErrorBody),
    ))]
pub async fn attacker(
    State(st): State<AppState>,
    Path(ip): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let addr: std::net::IpAddr = ip
        .parse()
        .map_err(|_| ApiError::BadParameter("ip", "not an IPv4 or IPv6 address".into()))?;
    let addr = addr.to_canonical();
    crate::profile::load(store(&st)?, &addr.to_string())
        .await
        .map_err(internal)?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no profile for {addr}")))
}

/// `GET /api/v1/campaigns`: every campaign's summary, newest id first.
#[utoipa::path(get, path = "/api/v1/campaigns", tag = "data",
    responses(
        (status = 200, description = "`{campaigns: [...]}`", body = Object),
        (status = 400, description = "An unknown parameter", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::error::ErrorBody),
    ))]
pub async fn campaigns(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    Params::parse(q.as_deref(), &[])?;
    let mut all: Vec<Value> = store(&st)?
        .campaigns()
        .await
        .map_err(internal)?
        .into_iter()
        .filter_map(|(_, s)| serde_json::from_str(&s).ok())
        .collect();
    all.reverse();
    Ok(Json(json!({ "campaigns": all })))
}

/// `GET /api/v1/campaigns/{id}`.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}", tag = "data",
    params(("id" = i64, Path, minimum = 1, description = "Campaign id.")),
    responses(
        (status = 200, description = "The campaign summary", body = Object),
        (status = 400, description = "Not a positive integer", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::error::ErrorBody),
        (status = 404, description = "No such campaign", body = super::error::ErrorBody),
    ))]
pub async fn campaign(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: i64 = id
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::BadParameter("id", "not a positive integer".into()))?;
    store(&st)?
        .campaign(id)
        .await
        .map_err(internal)?
        .map(json_text)
        .ok_or_else(|| ApiError::NotFound(format!("no campaign {id}")))
}

/// `GET /api/v1/detections?after_id&limit&attacker_ip`: detections after an id.
#[utoipa::path(get, path = "/api/v1/detections", tag = "data",
    params(
        ("after_id" = Option<i64>, Query, minimum = 0, description = "Detections with a larger id (default 0)."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "At most (default 100)."),
        ("attacker_ip" = Option<String>, Query, description = "Only this source."),
    ),
    responses(
        (status = 200, description = "`{detections: [...], next_after_id}`", body = Object),
        (status = 400, description = "A bad parameter, named in `detail`", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::error::ErrorBody),
    ))]
pub async fn detections(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["after_id", "limit", "attacker_ip"])?;
    let after = p.uint("after_id", 0, i64::MAX as u64)? as i64;
    let limit = p.limit(100)? as i64;
    let ip = p.ip("attacker_ip")?;
    let rows = store(&st)?
        .detections_page(after, limit, ip.as_deref())
        .await
        .map_err(internal)?;
    let next = rows.last().map_or(after, |d| d.id);
    let items: Vec<&str> = rows.iter().map(|d| d.body.as_str()).collect();
    Ok(json_text(format!(
        r#"{{"detections":[{}],"next_after_id":{next}}}"#,
        items.join(",")
    )))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_sensor_event_type_can_be_filtered_on() {
        for id in 0..=255 {
            if let Some(kind) = decnet_common::EventKind::from_u32(id) {
                let t = crate::sensor::decode::event_type(kind);
                assert!(
                    super::EVENT_TYPES.contains(&t),
                    "{t} missing from EVENT_TYPES"
                );
            }
        }
    }
}
