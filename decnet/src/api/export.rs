//! Feed routes: the blocklist and the STIX 2.1 bundle (`feed`), behind the token like the
//! rest of the data.

use axum::{
    extract::{RawQuery, State},
    http::header,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{data::store, error::ApiError, params::Params, state::AppState};
use crate::feed::{self, Filter, blocklist, stix::CampaignInfo};

const DAY_NS: i64 = 86_400_000_000_000;
/// The most entries one feed holds.
const MAX_ENTRIES: u64 = 1_000_000;

/// The parameters both feeds take, and the filter they make.
fn filter(p: &Params) -> Result<(Filter, serde_json::Value), ApiError> {
    let min_risk = p.uint("min_risk", 50, 100)? as i64;
    let since_ns = p.since("since", "30d")?;
    let ttl_days = p.uint("ttl_days", 7, 365)?;
    if ttl_days == 0 {
        return Err(ApiError::BadParameter("ttl_days", "at least 1".into()));
    }
    let limit = p.uint("limit", 100_000, MAX_ENTRIES)?;
    if limit == 0 {
        return Err(ApiError::BadParameter("limit", "at least 1".into()));
    }
    let described = json!({
        "min_risk": min_risk,
        "since": crate::timefmt::rfc3339_ns(since_ns),
        "ttl_days": ttl_days,
        "limit": limit,
    });
    Ok((
        Filter {
            min_risk,
            since_ns,
            ttl_ns: ttl_days as i64 * DAY_NS,
            limit: limit as i64,
        },
        described,
    ))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// `GET /api/v1/export/blocklist?min_risk&since&ttl_days&limit&format`.
#[utoipa::path(get, path = "/api/v1/export/blocklist", tag = "feeds",
    params(
        ("min_risk" = Option<u32>, Query, minimum = 0, maximum = 100, description = "Risk score at least (default 50)."),
        ("since" = Option<String>, Query, description = "Seen at or after: RFC 3339, or an age such as 24h or 30d (default 30d)."),
        ("ttl_days" = Option<u32>, Query, minimum = 1, maximum = 365, description = "Each entry expires this many days after the source was last seen (default 7)."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000000, description = "Entries at most, riskiest first (default 100000)."),
        ("format" = Option<String>, Query, description = "txt (default), csv or json."),
    ),
    responses(
        (status = 200, description = "One address per line (txt), row (csv) or entry (json), each with an expiry. Never a benign, spoofable or allow-listed source.",
            content((String = "text/plain"), (String = "text/csv"), (Object = "application/json"))),
        (status = 400, description = "A bad parameter, named in `detail`", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::error::ErrorBody),
    ))]
pub async fn blocklist(
    State(st): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(
        q.as_deref(),
        &["min_risk", "since", "ttl_days", "limit", "format"],
    )?;
    let (f, described) = filter(&p)?;
    let format = p
        .one_of("format", blocklist::FORMATS, Some("txt"))?
        .unwrap_or("txt");
    let sel = feed::select(store(&st)?, &f).await.map_err(internal)?;
    let generated = crate::timefmt::rfc3339_ns(crate::timefmt::unix_now_ns());
    Ok(match format {
        "csv" => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            blocklist::csv(&sel).map_err(internal)?,
        )
            .into_response(),
        "json" => axum::Json(blocklist::json(&sel, &generated, described)).into_response(),
        _ => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            blocklist::txt(
                &sel,
                &generated,
                &format!(
                    "min_risk {}, since {}, ttl {} days",
                    f.min_risk, described["since"], described["ttl_days"]
                ),
            ),
        )
            .into_response(),
    })
}

/// `GET /api/v1/export/stix?min_risk&since&ttl_days&limit`.
#[utoipa::path(get, path = "/api/v1/export/stix", tag = "feeds",
    params(
        ("min_risk" = Option<u32>, Query, minimum = 0, maximum = 100, description = "Risk score at least (default 50)."),
        ("since" = Option<String>, Query, description = "Seen at or after: RFC 3339, or an age such as 24h or 30d (default 30d)."),
        ("ttl_days" = Option<u32>, Query, minimum = 1, maximum = 365, description = "Each indicator's valid_until is this many days after the source was last seen (default 7)."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000000, description = "Sources at most, riskiest first (default 100000)."),
    ),
    responses(
        (status = 200, description = "A STIX 2.1 bundle: an indicator, observed-data and sighting per source, a campaign per decnet campaign (docs/api.md)",
            content((Object = "application/stix+json"))),
        (status = 400, description = "A bad parameter, named in `detail`", body = super::error::ErrorBody),
        (status = 401, description = "Missing or wrong token", body = super::error::ErrorBody),
    ))]
pub async fn stix(State(st): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let p = Params::parse(q.as_deref(), &["min_risk", "since", "ttl_days", "limit"])?;
    let (f, _) = filter(&p)?;
    let store = store(&st)?;
    let sel = feed::select(store, &f).await.map_err(internal)?;
    let campaigns: Vec<CampaignInfo> = store
        .campaigns()
        .await
        .map_err(internal)?
        .iter()
        .filter_map(|(_, s)| CampaignInfo::from_summary(s))
        .collect();
    let bundle = feed::stix::bundle(&sel.entries, &campaigns).map_err(internal)?;
    let body = feed::stix::to_json(&bundle).map_err(internal)?;
    Ok((
        [(header::CONTENT_TYPE, "application/stix+json;version=2.1")],
        body,
    )
        .into_response())
}
