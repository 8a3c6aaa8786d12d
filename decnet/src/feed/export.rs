//! `decnet export`: the stored logs and detections as NDJSON, in decnet's JSON or in
//! Elastic Common Schema, for backfilling a SIEM. Reads the database in pages by id, so a
//! large store streams in constant memory.

use std::io::Write;

use serde_json::{Value, json};

use crate::{
    alert::{render, rule::Detection},
    hub::log_json,
    row::NewLog,
    store::{Store, StoreError},
};

/// Rows read per query.
const PAGE: i64 = 1000;

/// How each line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The API's objects, each with `"record": "log"` or `"detection"`.
    Json,
    /// ECS documents: logs as `event.kind: event`, detections as `event.kind: alert`.
    Ecs,
}

/// What is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    Logs,
    Detections,
    All,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the store: {0}")]
    Store(#[from] StoreError),
    #[error("writing: {0}")]
    Write(#[from] std::io::Error),
}

/// Lines written, per kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub logs: u64,
    pub detections: u64,
}

/// Writes every log and/or detection whose time is at or after `since_ns`, oldest first.
pub async fn write(
    store: &Store,
    what: What,
    format: Format,
    since_ns: i64,
    out: &mut impl Write,
) -> Result<Counts, ExportError> {
    let mut n = Counts::default();
    if what != What::Detections {
        let mut after = 0;
        loop {
            let rows = store.logs_after(after, PAGE).await?;
            let Some((last, _)) = rows.last() else { break };
            after = *last;
            for (id, l) in &rows {
                if crate::timefmt::parse_rfc3339_ns(&l.ts).is_some_and(|t| t < since_ns) {
                    continue;
                }
                let v = match format {
                    Format::Json => tagged(&log_json(*id, l), "log"),
                    Format::Ecs => log_ecs(*id, l),
                };
                writeln!(out, "{v}")?;
                n.logs += 1;
            }
        }
    }
    if what != What::Logs {
        let mut after = 0;
        loop {
            let rows = store.detections_after(after, PAGE).await?;
            let Some(last) = rows.last() else { break };
            after = last.id;
            for r in &rows {
                let Ok(d) = Detection::from_row(r) else {
                    continue;
                };
                if d.ts_ns() < since_ns {
                    continue;
                }
                let v = match format {
                    Format::Json => tagged(&r.body, "detection"),
                    Format::Ecs => render::detection_ecs(
                        &d,
                        &format!("decnet:detection:{}", d.id),
                        "decnet.detection",
                        render::describe_detection(&d),
                    ),
                };
                writeln!(out, "{v}")?;
                n.detections += 1;
            }
        }
    }
    out.flush()?;
    Ok(n)
}

/// The object `json` with `"record": kind` added.
fn tagged(json: &str, kind: &str) -> Value {
    let mut v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("record".into(), kind.into());
    }
    v
}

/// One journal row as an ECS event: the probe's source, destination and transport.
pub fn log_ecs(id: i64, l: &NewLog) -> Value {
    let f: Value = serde_json::from_str(&l.fields).unwrap_or(Value::Null);
    let dst_ip = f["dst_ip"].as_str();
    let mut related = vec![l.attacker_ip.clone()];
    if let Some(d) = dst_ip {
        related.push(d.to_owned());
    }
    let kind = match l.event_type.as_str() {
        "tcp_flow" => "end",
        "probe_outcome" => "info",
        _ => "connection",
    };
    json!({
        "@timestamp": l.ts,
        "ecs": { "version": render::ECS_VERSION },
        "event": {
            "kind": "event",
            "category": ["network", "intrusion_detection"],
            "type": [kind],
            "action": l.event_type,
            "id": format!("decnet:log:{}:{id}", l.sensor),
            "sequence": id,
            "module": "decnet",
            "dataset": "decnet.probe",
            "provider": "decnet",
        },
        "source": { "ip": l.attacker_ip, "port": f["src_port"] },
        "destination": { "ip": dst_ip, "port": f["dst_port"] },
        "network": {
            "transport": f["proto"],
            "type": if l.attacker_ip.contains(':') { "ipv6" } else { "ipv4" },
            "protocol": l.service,
        },
        "observer": {
            "vendor": "decnet", "product": "decnet", "type": "honeypot",
            "name": if l.sensor.is_empty() { None } else { Some(l.sensor.to_string()) },
        },
        "related": { "ip": related },
        "trace": { "id": l.trace_id },
        "decnet": { "decky": l.decky, "service": l.service, "event_type": l.event_type, "fields": f },
    })
}
