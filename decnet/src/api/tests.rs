//! The router end to end: tokens, parameters, pages, tickets and metrics.

use std::{sync::Arc, time::Instant};

use axum::{Router, body::Body, extract::connect_info::MockConnectInfo, http::StatusCode};
use tower::ServiceExt as _;

use super::{AppState, app, auth};
use crate::{stats::PipelineStats, store::Store};
const TOKEN: &str = "test-token-0123456789";

fn state(store: Option<Store>) -> AppState {
    let pipeline = Arc::new(PipelineStats::default());
    PipelineStats::add(&pipeline.journal_written, 42);
    AppState {
        started: Instant::now(),
        kernel: None,
        pipeline,
        attached: None,
        egress: None,
        pin: None,
        iface_status: None,
        ingest: Some(Arc::default()),
        store,
        hub: Default::default(),
        auth: Arc::new(auth::Auth::new(TOKEN)),
        profile: None,
        alerts: None,
        retain: None,
        http: Default::default(),
        role: Default::default(),
    }
}

/// A store with 30 rows from 3 sources, profiled.
async fn seeded() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("decnet.db")).await.unwrap();
    let logs = (0..30)
        .map(|i| crate::row::NewLog {
            ts: crate::timefmt::rfc3339_ns(1_795_723_674_000_000_000 + i * 10_000_000),
            decky: "web".into(),
            service: format!("tcp/{}", 20 + i),
            event_type: if i % 3 == 0 { "tcp_probe" } else { "tcp_syn" }.into(),
            attacker_ip: format!("10.0.0.{}", i % 3 + 1),
            fields: format!(
                r#"{{"dst_port":{},"flags":"S","window":1024,"ttl":50,"options":"M1460"}}"#,
                20 + i
            ),
            trace_id: None,
            span_id: None,
            sensor: Default::default(),
        })
        .collect();
    store
        .commit_batch_copy(&crate::store::Batch {
            logs,
            ..Default::default()
        })
        .await
        .unwrap();
    crate::profile::Profiler::new(store.clone())
        .catch_up()
        .await
        .unwrap();
    (dir, store)
}

async fn call(app: Router, method: &str, uri: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut req = axum::http::Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 1 << 22)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn health_is_public_metrics_public_on_loopback_only() {
    let (status, body) = call(app(state(None)), "GET", "/api/v1/health", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["status"], "ok");
    // No peer address known (or a remote one): the token is required.
    let (status, _) = call(app(state(None)), "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let remote = app(state(None)).layer(MockConnectInfo(std::net::SocketAddr::from((
        [192, 0, 2, 1],
        4000,
    ))));
    assert_eq!(
        call(remote, "GET", "/metrics", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = call(app(state(None)), "GET", "/metrics", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let local = app(state(None)).layer(MockConnectInfo(std::net::SocketAddr::from((
        [127, 0, 0, 1],
        4000,
    ))));
    let (status, local_body) = call(local, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    for b in [&body, &local_body] {
        assert!(
            b.contains(
                "# TYPE decnet_journal_written_total counter\ndecnet_journal_written_total 42\n"
            ),
            "{b}"
        );
        assert!(b.contains("decnet_ingest_rows_total 0"));
    }
}

#[tokio::test]
async fn metrics_carry_lags_stream_clients_and_request_durations() {
    let st = state(None);
    st.ingest
        .as_ref()
        .unwrap()
        .lag_bytes
        .store(1234, std::sync::atomic::Ordering::Relaxed);
    let _rx = st.hub.subscribe();
    call(app(st.clone()), "GET", "/api/v1/health", None).await;
    call(app(st.clone()), "GET", "/api/v1/attackers/x", Some(TOKEN)).await;
    let (status, body) = call(app(st), "GET", "/metrics", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    for want in [
        "# TYPE decnet_ingest_lag_bytes gauge\ndecnet_ingest_lag_bytes 1234\n",
        "decnet_ingest_lag_seconds ",
        "decnet_stream_clients 1\n",
        "# TYPE decnet_http_request_duration_seconds histogram",
        "decnet_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/health\"} 1\n",
        // Routes are patterns, not the paths asked for.
        "route=\"/api/v1/attackers/{ip}\"",
    ] {
        assert!(body.contains(want), "{want} missing:\n{body}");
    }
}

#[tokio::test]
async fn every_protected_route_needs_the_token() {
    let (_d, store) = seeded().await;
    let routes = [
        ("GET", "/api/v1/stats"),
        ("GET", "/api/v1/logs"),
        ("GET", "/api/v1/attackers"),
        ("GET", "/api/v1/attackers/10.0.0.1"),
        ("GET", "/api/v1/campaigns"),
        ("GET", "/api/v1/detections"),
        ("GET", "/api/v1/services"),
        ("POST", "/api/v1/stream/ticket"),
    ];
    for (method, uri) in routes {
        let st = state(Some(store.clone()));
        let (status, body) = call(app(st.clone()), method, uri, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {body}");
        assert_eq!(json(&body)["error"], "unauthorized");
        let (status, _) = call(app(st.clone()), method, uri, Some("wrong-token")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
        let (status, body) = call(app(st), method, uri, Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        json(&body);
    }
    // The stream with neither token nor ticket.
    let (status, _) = call(app(state(Some(store))), "GET", "/api/v1/stream", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn bad_parameters_are_json_400s_naming_the_parameter() {
    let (_d, store) = seeded().await;
    let cases = [
        ("/api/v1/logs?limit=0", "limit"),
        ("/api/v1/logs?limit=1001", "limit"),
        ("/api/v1/logs?limit=abc", "limit"),
        ("/api/v1/logs?after_id=-1", "after_id"),
        ("/api/v1/logs?attacker_ip=10.0.0.999", "attacker_ip"),
        ("/api/v1/logs?event_type=nope", "event_type"),
        ("/api/v1/logs?limit=1&limit=2", "limit"),
        ("/api/v1/logs?bogus=1", "query"),
        ("/api/v1/attackers?sort=name", "sort"),
        ("/api/v1/attackers?offset=99999999", "offset"),
        ("/api/v1/attackers/not-an-ip", "ip"),
        ("/api/v1/campaigns/abc", "id"),
        ("/api/v1/campaigns/0", "id"),
        ("/api/v1/detections?after_id=x", "after_id"),
        ("/api/v1/detections?after_id=1&before_id=5", "before_id"),
        ("/api/v1/detections?tool=a%20b", "tool"),
        ("/api/v1/detections?classification=evil", "classification"),
        ("/api/v1/detections?min_risk=101", "min_risk"),
        ("/api/v1/services?since=yesterday", "since"),
        ("/api/v1/services?limit=0", "limit"),
        ("/api/v1/stream?last_event_id=nope", "last_event_id"),
        ("/api/v1/stream?min_risk=101", "min_risk"),
    ];
    for (uri, param) in cases {
        let (status, body) = call(app(state(Some(store.clone()))), "GET", uri, Some(TOKEN)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        let v = json(&body);
        assert_eq!(v["error"], "bad_parameter", "{uri}");
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{param}:")),
            "{uri}: {v}"
        );
    }
    for uri in [
        "/api/v1/attackers/10.9.9.9",
        "/api/v1/campaigns/999",
        "/nope",
    ] {
        let (status, body) = call(app(state(Some(store.clone()))), "GET", uri, Some(TOKEN)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(json(&body)["error"], "not_found");
    }
}

#[tokio::test]
async fn pages_cover_everything_once() {
    let (_d, store) = seeded().await;
    let st = state(Some(store));
    let mut after = 0;
    let mut ids = vec![];
    loop {
        let (status, body) = call(
            app(st.clone()),
            "GET",
            &format!("/api/v1/logs?after_id={after}&limit=7"),
            Some(TOKEN),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let v = json(&body);
        let page = v["logs"].as_array().unwrap();
        if page.is_empty() {
            assert_eq!(v["next_after_id"], after);
            break;
        }
        assert!(page.len() <= 7);
        ids.extend(page.iter().map(|l| l["id"].as_i64().unwrap()));
        assert!(
            page[0]["fields"]["dst_port"].is_u64(),
            "fields is an object"
        );
        after = v["next_after_id"].as_i64().unwrap();
    }
    assert_eq!(ids, (1..=30).collect::<Vec<_>>());
    let (_, body) = call(
        app(st.clone()),
        "GET",
        "/api/v1/logs?attacker_ip=10.0.0.2&event_type=tcp_syn&limit=1000",
        Some(TOKEN),
    )
    .await;
    let v = json(&body);
    let rows = v["logs"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(
        rows.iter()
            .all(|r| r["attacker_ip"] == "10.0.0.2" && r["event_type"] == "tcp_syn")
    );
    let (_, body) = call(
        app(st.clone()),
        "GET",
        "/api/v1/attackers?limit=2&offset=1&sort=events",
        Some(TOKEN),
    )
    .await;
    let v = json(&body);
    assert_eq!(v["total"], 3);
    assert_eq!(v["attackers"].as_array().unwrap().len(), 2);
    assert_eq!(v["attackers"][0]["event_count"], 10);
    assert_eq!(v["attackers"][0]["class"], "scanning");
}

#[tokio::test]
async fn detections_read_backwards_and_filter() {
    let (_d, store) = seeded().await;
    let st = state(Some(store));
    let get = |uri: String| {
        let st = st.clone();
        async move {
            let (status, body) = call(app(st), "GET", &uri, Some(TOKEN)).await;
            assert_eq!(status, StatusCode::OK, "{uri}: {body}");
            json(&body)
        }
    };
    let all = get("/api/v1/detections?limit=1000".into()).await;
    let all = all["detections"].as_array().unwrap().clone();
    assert!(!all.is_empty(), "the seeded scans raise detections");
    let back = get("/api/v1/detections?before_id=999999&limit=1000".into()).await;
    let ids = |v: &serde_json::Value, k: &str| -> Vec<i64> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_i64().unwrap())
            .collect()
    };
    let mut forward = ids(&serde_json::json!({ "d": all }), "d");
    forward.reverse();
    assert_eq!(ids(&back, "detections"), forward, "newest first, every one");
    // A page of one, then the next from its cursor.
    let first = get("/api/v1/detections?before_id=999999&limit=1".into()).await;
    let next = first["next_before_id"].as_i64().unwrap();
    assert_eq!(next, forward[0]);
    if forward.len() > 1 {
        let second = get(format!("/api/v1/detections?before_id={next}&limit=1")).await;
        assert_eq!(ids(&second, "detections"), vec![forward[1]]);
    }
    // Filters: a class that some have, a risk none reaches, a tool none names.
    let class = all[0]["class"].as_str().unwrap().to_owned();
    let by_class = get(format!("/api/v1/detections?class={class}&limit=1000")).await;
    let rows = by_class["detections"].as_array().unwrap();
    assert!(!rows.is_empty() && rows.iter().all(|d| d["class"] == class.as_str()));
    let none = get("/api/v1/detections?before_id=999999&min_risk=100".into()).await;
    assert!(none["detections"].as_array().unwrap().is_empty());
    assert_eq!(
        none["next_before_id"].as_i64().unwrap(),
        *forward.last().unwrap(),
        "the cursor is the last detection read, so a client can go on"
    );
    let none = get("/api/v1/detections?tool=no-such-tool".into()).await;
    assert!(none["detections"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn services_count_the_sources_probes() {
    let (_d, store) = seeded().await;
    let st = state(Some(store));
    let (status, body) = call(
        app(st.clone()),
        "GET",
        "/api/v1/services?since=2026-11-01T00:00:00Z&limit=1000",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v = json(&body);
    let services = v["services"].as_array().unwrap();
    assert_eq!(services.len(), 30, "{v}");
    assert!(
        services
            .iter()
            .all(|s| s["probes"] == 1 && s["sources"] == 1),
        "{v}"
    );
    // The seeded rows are from November: none in the last 24 hours.
    let (_, body) = call(app(st), "GET", "/api/v1/services", Some(TOKEN)).await;
    assert!(json(&body)["services"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_stream_ticket_works_once() {
    let (_d, store) = seeded().await;
    let st = state(Some(store));
    let (status, body) = call(
        app(st.clone()),
        "POST",
        "/api/v1/stream/ticket",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&body);
    assert_eq!(v["expires_in_s"], 30);
    let uri = format!("/api/v1/stream?ticket={}", v["ticket"].as_str().unwrap());
    let res = app(st.clone())
        .oneshot(axum::http::Request::get(&uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["cache-control"], "no-cache");
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    drop(res);
    let (status, body) = call(app(st), "GET", &uri, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}
