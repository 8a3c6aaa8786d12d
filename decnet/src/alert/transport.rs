//! Sending one message to one sink: an HTTP POST, a syslog datagram or framed TCP/TLS
//! message, or a line appended to a file. A failure says whether trying again can help.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::AsyncWriteExt,
    net::{TcpStream, UdpSocket},
};

use super::{
    render::Message,
    spec::{Format, Sink, SyslogProto, Target},
};

/// How long one delivery may take before it counts as failed.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The longest syslog message sent over UDP (RFC 5426 receivers take at least 2048 octets;
/// IPv4's datagram limit is this).
const UDP_MAX: usize = 65_000;

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct SendError {
    /// False when the receiver refused this message for good (an HTTP 4xx): retrying it
    /// would block the sink behind it forever.
    pub retry: bool,
    pub msg: String,
}

impl SendError {
    fn again(msg: impl std::fmt::Display) -> Self {
        Self {
            retry: true,
            msg: msg.to_string(),
        }
    }
}

/// A sink's open connection (or what it needs to open one).
pub enum Transport {
    Webhook {
        client: reqwest::Client,
        url: reqwest::Url,
        format: Format,
    },
    Syslog {
        proto: SyslogProto,
        host: String,
        port: u16,
        facility: u8,
        tls: Option<Arc<rustls::ClientConfig>>,
        conn: Option<Conn>,
        hostname: String,
    },
    File {
        path: std::path::PathBuf,
        format: Format,
    },
}

/// An open syslog connection.
pub enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Transport {
    /// Prepares `sink`'s transport (nothing is connected yet). Fails on a CA file that
    /// does not load, or headers that are not HTTP (both checked by `check-config` too).
    pub fn new(sink: &Sink) -> Result<Self, String> {
        // reqwest builds its TLS on the process's default provider: make it aws-lc-rs.
        // (Installing fails only when one is installed already.)
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let needs_tls = match &sink.target {
            Target::Webhook { url, .. } => url.scheme() == "https",
            Target::Syslog { proto, .. } => *proto == SyslogProto::Tls,
            Target::File { .. } => false,
        };
        let tls = if needs_tls {
            Some(crate::tls::client_config(sink.ca.as_deref())?)
        } else {
            None
        };
        Ok(match &sink.target {
            Target::Webhook { url, headers } => {
                let mut map = reqwest::header::HeaderMap::new();
                for (k, v) in headers {
                    let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| format!("header name `{k}`"))?;
                    let mut value = reqwest::header::HeaderValue::from_str(v)
                        .map_err(|_| format!("header `{k}`: invalid value"))?;
                    value.set_sensitive(true);
                    map.insert(name, value);
                }
                let mut b = reqwest::Client::builder()
                    .timeout(TIMEOUT)
                    .connect_timeout(Duration::from_secs(5))
                    .user_agent(concat!("decnet/", env!("CARGO_PKG_VERSION")))
                    .default_headers(map)
                    // A webhook that redirects is misconfigured; following it could send
                    // the alert (and its headers) elsewhere.
                    .redirect(reqwest::redirect::Policy::none());
                if let Some(tls) = tls {
                    b = b.tls_backend_preconfigured((*tls).clone());
                }
                Transport::Webhook {
                    client: b.build().map_err(|e| format!("HTTP client: {e}"))?,
                    url: url.clone(),
                    format: sink.format,
                }
            }
            Target::Syslog {
                proto,
                host,
                port,
                facility,
            } => Transport::Syslog {
                proto: *proto,
                host: host.clone(),
                port: *port,
                facility: *facility,
                tls,
                conn: None,
                hostname: hostname(),
            },
            Target::File { path } => Transport::File {
                path: path.clone(),
                format: sink.format,
            },
        })
    }

    /// A webhook's client and address, for requests sent side by side (None for the
    /// others: a syslog stream and a file take one write at a time, in order).
    pub fn webhook(&self) -> Option<(reqwest::Client, reqwest::Url, Format)> {
        match self {
            Transport::Webhook {
                client,
                url,
                format,
            } => Some((client.clone(), url.clone(), *format)),
            _ => None,
        }
    }

    /// Delivers `ms` in order; Ok once the receiver has them all (HTTP 2xx; written to the
    /// socket or file). A syslog stream or a file takes them in one write; a webhook in
    /// one POST (NDJSON when more than one: the caller keeps to the sink's `batch`); UDP
    /// one datagram each. On an error none counts as delivered: at least once.
    pub async fn send_many(&mut self, ms: &[Message]) -> Result<(), SendError> {
        match self {
            Transport::Webhook {
                client,
                url,
                format,
            } => post(client, url, *format, ms).await,
            Transport::Syslog {
                proto,
                host,
                port,
                facility,
                tls,
                conn,
                hostname,
            } => {
                let pid = std::process::id();
                let lines: Vec<String> = ms
                    .iter()
                    .map(|m| m.syslog(*facility, hostname, pid))
                    .collect();
                if conn.as_ref().is_some_and(|c| c.peer_closed()) {
                    *conn = None;
                }
                if conn.is_none() {
                    *conn = Some(connect(*proto, host, *port, tls.as_ref()).await?);
                }
                let Some(c) = conn.as_mut() else {
                    return Err(SendError::again("not connected"));
                };
                let r = tokio::time::timeout(TIMEOUT, c.write(&lines)).await;
                match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => {
                        *conn = None;
                        Err(SendError::again(format!("syslog write: {e}")))
                    }
                    Err(_) => {
                        *conn = None;
                        Err(SendError::again("syslog write timed out"))
                    }
                }
            }
            Transport::File { path, format } => {
                let mut text = String::new();
                for m in ms {
                    match format {
                        Format::Ecs => text.push_str(&m.ecs().to_string()),
                        _ => text.push_str(&m.json_string()),
                    }
                    text.push('\n');
                }
                // Opened per write: a rotated file (logrotate) is followed at once.
                let mut f = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .await
                    .map_err(|e| SendError::again(format!("{}: {e}", path.display())))?;
                f.write_all(text.as_bytes())
                    .await
                    .map_err(|e| SendError::again(format!("{}: {e}", path.display())))?;
                f.flush()
                    .await
                    .map_err(|e| SendError::again(format!("{}: {e}", path.display())))?;
                Ok(())
            }
        }
    }
}

/// reqwest's message without the URL it appends.
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

async fn connect(
    proto: SyslogProto,
    host: &str,
    port: u16,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Conn, SendError> {
    let addr = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| SendError::again(format!("resolving {host}: {e}")))?
        .next()
        .ok_or_else(|| SendError::again(format!("{host}: no address")))?;
    match proto {
        SyslogProto::Udp => {
            let local: std::net::SocketAddr = if addr.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let s = UdpSocket::bind(local)
                .await
                .map_err(|e| SendError::again(format!("udp socket: {e}")))?;
            s.connect(addr)
                .await
                .map_err(|e| SendError::again(format!("udp {addr}: {e}")))?;
            Ok(Conn::Udp(s))
        }
        SyslogProto::Tcp | SyslogProto::Tls => {
            let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                .await
                .map_err(|_| SendError::again(format!("connecting to {addr} timed out")))?
                .map_err(|e| SendError::again(format!("connecting to {addr}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            if proto == SyslogProto::Tcp {
                return Ok(Conn::Tcp(tcp));
            }
            let Some(cfg) = tls else {
                return Err(SendError::again("internal: TLS without a configuration"));
            };
            let name = rustls_pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| SendError::again(format!("server name {host}: {e}")))?;
            let s = tokio::time::timeout(
                Duration::from_secs(5),
                tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, tcp),
            )
            .await
            .map_err(|_| SendError::again(format!("TLS handshake with {addr} timed out")))?
            .map_err(|e| SendError::again(format!("TLS handshake with {addr}: {e}")))?;
            Ok(Conn::Tls(Box::new(s)))
        }
    }
}

impl Conn {
    /// A TCP peer that has closed its end: a write would still succeed into the socket's
    /// buffer and be lost, so reconnect first. (Not looked for under TLS: the bytes below
    /// it belong to the TLS session, and a TLS 1.3 server sends tickets after the
    /// handshake.)
    fn peer_closed(&self) -> bool {
        let Conn::Tcp(tcp) = self else {
            return false;
        };
        let mut b = [0u8; 1];
        // A syslog receiver never sends: readable means closed (0) or reset (an error).
        match tcp.try_read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        }
    }

    /// One datagram per line over UDP; one write of every framed line over TCP and TLS.
    async fn write(&mut self, lines: &[String]) -> std::io::Result<()> {
        let stream = |lines: &[String]| lines.iter().map(|l| framed(l)).collect::<String>();
        match self {
            Conn::Udp(s) => {
                for line in lines {
                    let b = line.as_bytes();
                    s.send(&b[..b.len().min(UDP_MAX)]).await?;
                }
                Ok(())
            }
            Conn::Tcp(s) => {
                s.write_all(stream(lines).as_bytes()).await?;
                s.flush().await
            }
            Conn::Tls(s) => {
                s.write_all(stream(lines).as_bytes()).await?;
                s.flush().await
            }
        }
    }
}

/// Octet-counting framing (RFC 6587 3.4.1, RFC 5425 4.3): `LEN SP MSG`.
fn framed(line: &str) -> String {
    format!("{} {line}", line.len())
}

/// One webhook POST of `ms`; Ok on a 2xx. One message is a JSON body with its
/// idempotency key; several are NDJSON, one message per line, keyed `FIRST..LAST` (each
/// line carries its own key too).
pub async fn post(
    client: &reqwest::Client,
    url: &reqwest::Url,
    format: Format,
    ms: &[Message],
) -> Result<(), SendError> {
    let doc = |m: &Message| match format {
        Format::Json => m.json_string(),
        Format::Slack => m.slack().to_string(),
        Format::Ecs => m.ecs().to_string(),
    };
    let (body, key, kind) = match ms {
        [] => return Ok(()),
        [m] => (doc(m), m.idempotency_key(), "application/json"),
        [first, .., last] => {
            let mut body = String::new();
            for m in ms {
                body.push_str(&doc(m));
                body.push('\n');
            }
            let key = format!("{}..{}", first.idempotency_key(), last.idempotency_key());
            (body, key, "application/x-ndjson")
        }
    };
    let r = client
        .post(url.clone())
        .header("Idempotency-Key", key)
        .header(reqwest::header::CONTENT_TYPE, kind)
        .body(body)
        .send()
        .await
        // reqwest's error names the URL: keep only the cause (the URL may hold a secret).
        .map_err(|e| SendError::again(without_url(e)))?;
    let status = r.status();
    if status.is_success() {
        return Ok(());
    }
    // Timeouts and throttling pass; other 4xx refuse this message for good.
    let retry = status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429);
    Err(SendError {
        retry,
        msg: format!("HTTP {status}"),
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}
