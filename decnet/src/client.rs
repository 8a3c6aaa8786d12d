//! The command-line client of a running daemon (`decnet stats`, `decnet attackers`,
//! `decnet tail`): HTTP/1.1 with the daemon's bearer token, over TLS when given a CA
//! (`--ca`), and an SSE reader that resumes with `Last-Event-ID` after a disconnect or a
//! `reset`.

use std::{net::SocketAddr, path::Path, time::Duration};

use crate::textsafe::sanitize;
use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::TcpStream,
};

pub struct Client {
    addr: SocketAddr,
    token: String,
    /// TLS: the connector (trusting the given CA) and the name the certificate must carry.
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
}

/// A connection to the daemon, plain or TLS.
trait Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Conn for T {}

/// One server-sent event.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

type Body = BufReader<Box<dyn Conn>>;

impl Client {
    /// The token comes from DECNET_API_TOKEN, else from the daemon's data dir.
    pub fn new(addr: SocketAddr, data_dir: &Path) -> anyhow::Result<Client> {
        let token = match std::env::var(crate::api::auth::TOKEN_ENV) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
            _ => {
                let path = data_dir.join(crate::api::auth::TOKEN_FILE);
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "reading the API token {} (set DECNET_API_TOKEN, or point \
                             --data-dir at the daemon's data dir)",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_owned()
            }
        };
        Ok(Client {
            addr,
            token,
            tls: None,
        })
    }

    /// Speaks TLS, trusting the CA(s) in `ca`; the daemon's certificate must name `name`
    /// (default: the address connected to).
    pub fn with_tls(mut self, ca: &Path, name: Option<&str>) -> anyhow::Result<Client> {
        let config = crate::tls::client_config(Some(ca)).map_err(anyhow::Error::msg)?;
        let name = match name {
            Some(n) => rustls_pki_types::ServerName::try_from(n.to_owned())
                .with_context(|| format!("--tls-name `{n}`: not a DNS name or address"))?,
            None => rustls_pki_types::ServerName::IpAddress(self.addr.ip().into()),
        };
        self.tls = Some((tokio_rustls::TlsConnector::from(config), name));
        Ok(self)
    }

    /// Sends a request and reads the status line and headers; returns (status, chunked,
    /// content length, the body reader).
    async fn request(
        &self,
        method: &str,
        path: &str,
        extra: &str,
    ) -> anyhow::Result<(u16, bool, Option<usize>, Body)> {
        let tcp = TcpStream::connect(self.addr).await.with_context(|| {
            format!(
                "connecting to the decnet daemon at {}; is `decnet run` up?",
                self.addr
            )
        })?;
        let mut s: Box<dyn Conn> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .with_context(|| format!("TLS with the decnet daemon at {}", self.addr))?,
            ),
        };
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n{extra}Connection: close\r\n\r\n",
            self.addr, self.token
        );
        s.write_all(req.as_bytes())
            .await
            .context("sending request")?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).await.context("reading response")?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("malformed HTTP status line {line:?}"))?;
        let (mut chunked, mut length) = (false, None);
        loop {
            line.clear();
            if r.read_line(&mut line).await.context("reading headers")? == 0 {
                bail!("connection closed in the headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let v = v.trim();
                if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
                {
                    chunked = true;
                } else if k.eq_ignore_ascii_case("content-length") {
                    length = v.parse().ok();
                }
            }
        }
        Ok((status, chunked, length, r))
    }

    /// GET `path`; the body when the status is 200, else an error carrying the daemon's
    /// JSON error.
    pub async fn get(&self, path: &str) -> anyhow::Result<String> {
        self.call("GET", path).await
    }

    /// POST `path` (no body), as [`get`](Self::get).
    pub async fn post(&self, path: &str) -> anyhow::Result<String> {
        self.call("POST", path).await
    }

    async fn call(&self, method: &str, path: &str) -> anyhow::Result<String> {
        let extra = if method == "POST" {
            "Content-Length: 0\r\n"
        } else {
            ""
        };
        let (status, chunked, length, mut r) = self.request(method, path, extra).await?;
        let mut body = Vec::new();
        if chunked {
            while let Some(chunk) = read_chunk(&mut r).await? {
                body.extend(chunk);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            r.read_exact(&mut body).await.context("reading body")?;
        } else {
            r.read_to_end(&mut body).await.context("reading body")?;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        if status != 200 {
            bail!("daemon answered {status}: {body}");
        }
        Ok(body)
    }

    /// Follows `/api/v1/stream?<query>` (from `resume`, an event id, when given) until
    /// `on_event` returns false; returns the last event id received. Reconnects after a
    /// disconnect or a `reset` event, resuming after the last id received.
    pub async fn tail(
        &self,
        query: &str,
        resume: Option<String>,
        mut on_event: impl FnMut(&SseEvent) -> bool,
    ) -> anyhow::Result<Option<String>> {
        let mut last_id: Option<String> = resume;
        let mut backoff = Duration::from_millis(250);
        loop {
            let resume = last_id
                .as_deref()
                .map(|id| format!("Last-Event-ID: {id}\r\n"))
                .unwrap_or_default();
            let path = format!("/api/v1/stream?{query}");
            let outcome = match self.request("GET", &path, &resume).await {
                Ok((200, chunked, _, r)) => {
                    backoff = Duration::from_millis(250);
                    read_events(r, chunked, &mut last_id, &mut on_event).await
                }
                Ok((401, ..)) => bail!("the daemon refused the API token"),
                Ok((status, ..)) => Err(anyhow::anyhow!("stream answered {status}")),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(false) => return Ok(last_id),
                Ok(true) => {}
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "stream interrupted");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// One chunk of a chunked body; None at the end.
async fn read_chunk(r: &mut Body) -> anyhow::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        bail!("connection closed mid-body");
    }
    let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
        .with_context(|| format!("bad chunk size {line:?}"))?;
    let mut data = vec![0; size + 2];
    r.read_exact(&mut data).await?;
    data.truncate(size);
    Ok((size > 0).then_some(data))
}

/// Reads events until the stream ends (Ok(true): reconnect), or `on_event` says stop
/// (Ok(false)).
async fn read_events(
    mut r: Body,
    chunked: bool,
    last_id: &mut Option<String>,
    on_event: &mut impl FnMut(&SseEvent) -> bool,
) -> anyhow::Result<bool> {
    let mut pending = Vec::<u8>::new();
    let mut ev = SseEvent::default();
    loop {
        let data = if chunked {
            match read_chunk(&mut r).await? {
                Some(d) => d,
                None => return Ok(true),
            }
        } else {
            let mut buf = vec![0; 8192];
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok(true);
            }
            buf.truncate(n);
            buf
        };
        pending.extend(data);
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if !ev.data.is_empty() || !ev.event.is_empty() {
                    if ev.id.is_some() {
                        last_id.clone_from(&ev.id);
                    }
                    // Both end the stream; the caller reconnects and resumes after the id.
                    let reset = ev.event == "reset" || ev.event == "shutdown";
                    if !on_event(&ev) {
                        return Ok(false);
                    }
                    if reset {
                        return Ok(true);
                    }
                }
                ev = SseEvent::default();
            } else if line.starts_with(':') {
                // Comment (keepalive).
            } else {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => ev.event = value.to_owned(),
                    "id" => ev.id = Some(value.to_owned()),
                    "data" => {
                        if !ev.data.is_empty() {
                            ev.data.push('\n');
                        }
                        ev.data.push_str(value);
                    }
                    _ => {}
                }
            }
        }
    }
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => sanitize(s).into_owned(),
        serde_json::Value::Null => "-".into(),
        serde_json::Value::Array(a) if a.is_empty() => "-".into(),
        serde_json::Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(","),
        other => sanitize(&other.to_string()).into_owned(),
    }
}

/// `GET /api/v1/attackers` as a table.
pub fn attackers_table(body: &str) -> anyhow::Result<String> {
    let v: serde_json::Value = serde_json::from_str(body).context("attackers JSON")?;
    let rows = v["attackers"].as_array().context("no `attackers` array")?;
    let mut out = attackers_header();
    for a in rows {
        out.push_str(&attackers_line(a));
    }
    out.push_str(&attackers_footer(
        rows.len(),
        v["total"].as_u64().unwrap_or(0),
    ));
    Ok(out)
}

/// The attackers table's header line.
pub fn attackers_header() -> String {
    format!(
        "{:<39} {:>5} {:<8} {:<10} {:<16} {:<12} {:>8} {:<18} {:<22} {:<16} {:<8} {}\n",
        "IP",
        "RISK",
        "BAND",
        "VERDICT",
        "ACTOR",
        "CLASS",
        "EVENTS",
        "TOOLS",
        "SCAN KINDS",
        "OS",
        "CAMPAIGN",
        "DECOYS"
    )
}

/// One attackers-list row (as `GET /api/v1/attackers` gives it) as a table line. Kept apart
/// from [`attackers_table`] so a long list is written row by row, never held whole.
pub fn attackers_line(a: &serde_json::Value) -> String {
    format!(
        "{:<39} {:>5} {:<8} {:<10} {:<16} {:<12} {:>8} {:<18} {:<22} {:<16} {:<8} {}\n",
        text(&a["ip"]),
        text(&a["risk"]["score"]),
        text(&a["risk"]["band"]),
        text(&a["classification"]),
        text(&a["actor"]),
        text(&a["class"]),
        text(&a["event_count"]),
        text(&a["tools"]),
        text(&a["scan_kinds"]),
        text(&a["os_guess"]),
        text(&a["campaign_id"]),
        text(&a["deckies"]),
    )
}

/// The table's last line: how many rows it showed of how many attackers.
pub fn attackers_footer(shown: usize, total: u64) -> String {
    format!("{shown} of {total} attackers\n")
}

/// One stream event as a line for people (None for events not worth a line).
pub fn event_line(ev: &SseEvent) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&ev.data).ok()?;
    match ev.event.as_str() {
        "log" => Some(format!(
            "{} {:<15} -> {} {:<10} {:<11} {}",
            text(&v["ts"]),
            text(&v["attacker_ip"]),
            text(&v["decky"]),
            text(&v["service"]),
            text(&v["event_type"]),
            // The answer for an outcome, how it ended for a flow, the kind for a probe.
            match v["event_type"].as_str() {
                Some("probe_outcome") => text(&v["fields"]["outcome"]),
                Some("tcp_flow") => text(&v["fields"]["end"]),
                _ => text(&v["fields"]["probe"]),
            },
        )),
        "detection" => Some(format!(
            "{} DETECTION {} [{}] {} actor={} class={} tools={} risk={} ({}) campaign={}",
            text(&v["ts"]),
            text(&v["ip"]),
            text(&v["changes"]),
            text(&v["classification"]),
            text(&v["actor"]),
            text(&v["class"]),
            text(&v["tools"]),
            text(&v["risk"]["score"]),
            text(&v["risk"]["band"]),
            text(&v["campaign_id"]),
        )),
        "reset" => Some(format!("(stream reset, resuming: {})", text(&v["reason"]))),
        "shutdown" => Some("(daemon stopping; reconnecting until it is back)".to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_cannot_drive_the_terminal() {
        let line = event_line(&SseEvent {
            event: "log".into(),
            id: Some("1-0".into()),
            data: r#"{"ts":"t","attacker_ip":"10.0.0.1","decky":"web\u001b]0;pwned\u0007","service":"ssh","event_type":"tcp_syn","fields":{}}"#.into(),
        })
        .unwrap();
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        let table = attackers_table(
            r#"{"attackers":[{"ip":"10.0.0.1","risk":{"score":60,"band":"high"},"class":"scanning","event_count":3,"tools":["nmap"],"scan_kinds":["syn"],"os_guess":null,"campaign_id":null,"deckies":["web"]}],"total":1}"#,
        )
        .unwrap();
        assert!(table.contains("10.0.0.1") && table.contains("nmap") && table.contains("1 of 1"));
    }
}
