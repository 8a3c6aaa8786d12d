//! Where developer traces go, read from the environment.

/// `true` turns developer tracing on.
pub const TRACING_ENV: &str = "DECNET_DEVELOPER_TRACING";
/// The collector's OTLP/gRPC endpoint (falls back to `OTEL_EXPORTER_OTLP_ENDPOINT`).
pub const ENDPOINT_ENV: &str = "DECNET_OTEL_ENDPOINT";
pub const STANDARD_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4317";
/// Log filter (`info` when unset).
pub const LOG_ENV: &str = "DECNET_LOG";

/// Where developer traces go, from the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceConfig {
    pub endpoint: String,
}

/// Reads `DECNET_DEVELOPER_TRACING` and the endpoint variables. None: tracing off.
pub fn config_from_env() -> Result<Option<TraceConfig>, String> {
    config_from(|k| std::env::var(k).ok())
}

pub(super) fn config_from(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Option<TraceConfig>, String> {
    let on = match get(TRACING_ENV).as_deref().map(str::trim) {
        None | Some("") => false,
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err(format!("{TRACING_ENV}={v:?}: expected true or false")),
        },
    };
    if !on {
        return Ok(None);
    }
    let (var, endpoint) = [ENDPOINT_ENV, STANDARD_ENDPOINT_ENV]
        .into_iter()
        .find_map(|k| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .map(|v| (k, v))
        })
        .unwrap_or(("default", DEFAULT_ENDPOINT.to_owned()));
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"));
    if rest.is_none_or(|r| r.trim_matches('/').is_empty()) {
        return Err(format!(
            "{var}={endpoint:?}: expected an OTLP/gRPC URL such as {DEFAULT_ENDPOINT}"
        ));
    }
    if !cfg!(feature = "otel") {
        return Err(format!(
            "{TRACING_ENV} is set, but this build has no tracing support (built without the \
             `otel` feature)"
        ));
    }
    Ok(Some(TraceConfig { endpoint }))
}
