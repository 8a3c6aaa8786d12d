//! Request durations per route, as a Prometheus histogram (`decnet_http_request_duration_seconds`).
//! Measured to the response head: a stream's duration is how long it took to open.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};

/// Upper bounds of the buckets, in seconds.
const BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

#[derive(Default, Clone)]
struct Hist {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// (method, route) -> histogram. Routes are the router's patterns (`/api/v1/attackers/{ip}`),
/// so a scanner of the API cannot grow this map without bound.
#[derive(Default)]
pub struct HttpMetrics {
    routes: Mutex<BTreeMap<(String, String), Hist>>,
}

impl HttpMetrics {
    pub fn observe(&self, method: &str, route: &str, secs: f64) {
        let mut m = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let h = m.entry((method.to_owned(), route.to_owned())).or_default();
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Appends the Prometheus exposition.
    pub(crate) fn render(&self, out: &mut String) {
        let name = "decnet_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP request duration to the response head, by route.\n# TYPE {name} histogram"
        );
        let m = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        for ((method, route), h) in m.iter() {
            let labels = format!("method=\"{method}\",route=\"{route}\"");
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {}", h.counts[i]);
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
        }
    }
}

pub(crate) async fn track(
    State(http): State<Arc<HttpMetrics>>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let t = Instant::now();
    let res = next.run(req).await;
    http.observe(&method, &route, t.elapsed().as_secs_f64());
    res
}
