//! Read routes over the store: logs, attackers, campaigns, detections, top services.

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

/// Detections one request reads at most while filtering (a filter that matches nothing
/// still answers quickly; `next_*_id` continues the scan).
const SCAN_MAX: i64 = 10_000;

/// Filters over a detection's body.
struct DetectionFilter {
    class: Option<String>,
    classification: Option<&'static str>,
    tool: Option<String>,
    min_risk: i64,
}

impl DetectionFilter {
    fn any(&self) -> bool {
        self.class.is_some()
            || self.classification.is_some()
            || self.tool.is_some()
            || self.min_risk > 0
    }

    fn matches(&self, body: &str) -> bool {
        if !self.any() {
            return true;
        }
        let Ok(d) = serde_json::from_str::<crate::alert::rule::Detection>(body) else {
            return false;
        };
        self.class.as_deref().is_none_or(|c| d.class == c)
            && self.classification.is_none_or(|c| d.classification == c)
            && self
                .tool
                .as_deref()
                .is_none_or(|t| d.tools.iter().any(|x| x == t))
            && d.risk.score >= self.min_risk
    }
}

/// `GET /api/v1/detections`: detections after an id (oldest first), or before one (newest
/// first), optionally filtered.
#[utoipa::path(get, path = "/api/v1/detections", tag = "data",
    params(
        ("after_id" = Option<i64>, Query, minimum = 0, description = "Detections with a larger id, oldest first (default 0)."),
        ("before_id" = Option<i64>, Query, minimum = 1, description = "Instead: detections with a smaller id, newest first (a large number for the newest)."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "At most (default 100)."),
        ("attacker_ip" = Option<String>, Query, description = "Only this source."),
        ("class" = Option<String>, Query, description = "Only this behavior class (scanning, brute_force, ...)."),
        ("classification" = Option<String>, Query, description = "Only benign, malicious, suspicious or unknown."),
        ("tool" = Option<String>, Query, description = "Only detections naming this tool."),
        ("min_risk" = Option<u32>, Query, minimum = 0, maximum = 100, description = "Only detections with at least this risk score."),
    ),
    responses(
        (status = 200, description = "`{detections: [...], next_after_id}` (or `next_before_id`): the last id read, matching or not", body = Object),
        (status = 400, description = "A bad parameter, named in `detail`", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::error::ErrorBody),
    ))]
pub async fn detections(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(
        q.as_deref(),
        &[
            "after_id",
            "before_id",
            "limit",
            "attacker_ip",
            "class",
            "classification",
            "tool",
            "min_risk",
        ],
    )?;
    let after = p.uint("after_id", 0, i64::MAX as u64)? as i64;
    let before = match p.str("before_id") {
        None => None,
        Some(_) => Some(p.uint("before_id", 0, i64::MAX as u64)? as i64),
    };
    if before.is_some() && p.str("after_id").is_some() {
        return Err(ApiError::BadParameter(
            "before_id",
            "give after_id or before_id, not both".into(),
        ));
    }
    let limit = p.limit(100)? as i64;
    let ip = p.ip("attacker_ip")?;
    let word = |name: &'static str| -> Result<Option<String>, ApiError> {
        match p.str(name) {
            Some(v) if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_graphic()) => {
                Err(ApiError::BadParameter(
                    name,
                    "1-64 printable ASCII characters".into(),
                ))
            }
            v => Ok(v.map(str::to_owned)),
        }
    };
    let filter = DetectionFilter {
        class: word("class")?,
        classification: p.one_of(
            "classification",
            crate::profile::classify::CLASSIFICATIONS,
            None,
        )?,
        tool: word("tool")?,
        min_risk: p.uint("min_risk", 0, 100)? as i64,
    };
    let store = store(&st)?;
    // Read pages until `limit` match or SCAN_MAX were read; the cursor is the last id read.
    let page = if filter.any() { 500 } else { limit };
    let (mut cursor, mut read, mut out) = (before.unwrap_or(after), 0i64, Vec::new());
    loop {
        let rows = match before {
            Some(_) => store.detections_before(cursor, page, ip.as_deref()).await,
            None => store.detections_page(cursor, page, ip.as_deref()).await,
        }
        .map_err(internal)?;
        let done = (rows.len() as i64) < page;
        for d in rows {
            cursor = d.id;
            read += 1;
            if filter.matches(&d.body) {
                out.push(d.body);
                if out.len() as i64 >= limit {
                    break;
                }
            }
        }
        if done || out.len() as i64 >= limit || read >= SCAN_MAX {
            break;
        }
    }
    let next = if before.is_some() {
        "next_before_id"
    } else {
        "next_after_id"
    };
    Ok(json_text(format!(
        r#"{{"detections":[{}],"{next}":{cursor}}}"#,
        out.join(",")
    )))
}

/// `GET /api/v1/services?since&limit`: the services probed most.
#[utoipa::path(get, path = "/api/v1/services", tag = "data",
    params(
        ("since" = Option<String>, Query, description = "Probes at or after: RFC 3339, or an age such as 1h or 24h (default 24h)."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Services at most (default 20)."),
    ),
    responses(
        (status = 200, description = "`{since, services: [{service, probes, sources}]}`, most probed first", body = Object),
        (status = 400, description = "A bad parameter, named in `detail`", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::error::ErrorBody),
    ))]
pub async fn services(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let p = Params::parse(q.as_deref(), &["since", "limit"])?;
    let since = crate::timefmt::rfc3339_ns(p.since("since", "24h")?);
    let limit = p.limit(20)? as i64;
    let rows = store(&st)?
        .top_services(&since, limit)
        .await
        .map_err(internal)?;
    let services: Vec<Value> = rows
        .into_iter()
        .map(|(service, probes, sources)| json!({ "service": service, "probes": probes, "sources": sources }))
        .collect();
    Ok(Json(json!({ "since": since, "services": services })))
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
