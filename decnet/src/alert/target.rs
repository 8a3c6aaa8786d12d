//! Where a sink delivers: a webhook URL, a syslog server or a file, parsed from the
//! `[[sink]]` table and shown with its secrets redacted.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use reqwest::Url;

/// A syslog connection's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogProto {
    Udp,
    Tcp,
    Tls,
}

/// Where a sink delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Webhook {
        url: Url,
        headers: Vec<(String, String)>,
    },
    /// RFC 5424 messages; over TCP and TLS framed by octet counting (RFC 6587, RFC 5425).
    Syslog {
        proto: SyslogProto,
        host: String,
        port: u16,
        facility: u8,
    },
    File {
        path: PathBuf,
    },
}

impl Target {
    /// Where it delivers, with every secret replaced by `***` (logs, check-config, API).
    pub fn display(&self) -> String {
        match self {
            Target::Webhook { url, .. } => redact_webhook(url),
            Target::Syslog {
                proto, host, port, ..
            } => {
                let scheme = match proto {
                    SyslogProto::Udp => "udp",
                    SyslogProto::Tcp => "tcp",
                    SyslogProto::Tls => "tls",
                };
                if host.contains(':') {
                    format!("{scheme}://[{host}]:{port}")
                } else {
                    format!("{scheme}://{host}:{port}")
                }
            }
            Target::File { path } => path.display().to_string(),
        }
    }
}

/// A webhook URL without its secrets: a password, and any path or query (Slack and others
/// put the secret in the path). `https://hooks.slack.com/services/T/B/x` ->
/// `https://hooks.slack.com/***`.
pub fn redact_webhook(url: &Url) -> String {
    let mut out = format!("{}://", url.scheme());
    if !url.username().is_empty() {
        out.push_str(url.username());
        if url.password().is_some() {
            out.push_str(":***");
        }
        out.push('@');
    }
    out.push_str(url.host_str().unwrap_or(""));
    if let Some(p) = url.port() {
        out.push_str(&format!(":{p}"));
    }
    if url.path() != "/" || url.query().is_some() {
        out.push_str("/***");
    } else {
        out.push('/');
    }
    out
}

/// The target of a `[[sink]]` table: its URL or path, headers and facility, checked.
pub(super) fn parse(
    webhook: Option<&str>,
    headers: &BTreeMap<String, String>,
    syslog: Option<&str>,
    facility_name: Option<&str>,
    file: Option<&Path>,
) -> Result<Target, String> {
    Ok(if let Some(w) = webhook {
        let url = Url::parse(w).map_err(|e| format!("webhook URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "webhook URL `{}`: expected http://HOST/... or https://HOST/...",
                redact_webhook(&url)
            ));
        }
        for (k, v) in headers {
            reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("header name `{k}` is not a valid HTTP header name"))?;
            reqwest::header::HeaderValue::from_str(v)
                .map_err(|_| format!("header `{k}`: the value is not a valid HTTP header value"))?;
        }
        Target::Webhook {
            url,
            headers: headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    } else if let Some(u) = syslog {
        let url = Url::parse(u).map_err(|e| format!("syslog `{u}`: {e}"))?;
        let proto = match url.scheme() {
            "udp" => SyslogProto::Udp,
            "tcp" => SyslogProto::Tcp,
            "tls" => SyslogProto::Tls,
            other => {
                return Err(format!(
                    "syslog `{u}`: scheme `{other}`; expected udp://, tcp:// or tls://"
                ));
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("syslog `{u}`: no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = url.port().unwrap_or(match proto {
            SyslogProto::Tls => 6514,
            _ => 514,
        });
        if url.path() != "" && url.path() != "/" {
            return Err(format!(
                "syslog `{u}`: expected SCHEME://HOST[:PORT], no path"
            ));
        }
        let facility = match facility_name {
            None => 16,
            Some(f) => facility(f).ok_or_else(|| {
                format!("facility `{f}`: expected kern, user, daemon, auth, authpriv, security, local0..local7, ...")
            })?,
        };
        Target::Syslog {
            proto,
            host,
            port,
            facility,
        }
    } else {
        let path = file.map(Path::to_path_buf).unwrap_or_default();
        if path.as_os_str().is_empty() {
            return Err("`file` is empty".into());
        }
        Target::File { path }
    })
}

/// RFC 5424's facility numbers by their usual names.
fn facility(name: &str) -> Option<u8> {
    let n = match name {
        "kern" => 0,
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" | "security" => 4,
        "syslog" => 5,
        "authpriv" => 10,
        "ftp" => 11,
        "audit" => 13,
        "alert" => 14,
        _ => {
            let d = name.strip_prefix("local")?;
            let n: u8 = d.parse().ok().filter(|n| *n <= 7)?;
            16 + n
        }
    };
    Some(n)
}
