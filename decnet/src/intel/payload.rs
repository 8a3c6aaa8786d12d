//! What a probe's first payload says: HTTP request lines, user agents and credentials, SSH
//! banners, SMTP/FTP/Redis/Telnet commands and logins, and the JA4 hash of a TLS ClientHello.
//!
//! Every parser is a pure function over a byte slice and returns nothing on anything it does
//! not understand: payloads come from attackers and are cut at 128 bytes by the sensor. The
//! fuzz test at the bottom feeds them random and mutated input to prove they never panic.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// Longest artifact value kept.
pub const VALUE_MAX: usize = 256;

fn cap(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(VALUE_MAX) {
        Some((i, _)) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

fn text_lines(p: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(p)
        .split('\n')
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect()
}

/// First-payload artifacts by content, with the port as a hint where content is ambiguous.
pub fn payload_artifacts(p: &[u8], port: u16, out: &mut Vec<(&'static str, String)>) {
    if p.is_empty() {
        return;
    }
    if let Some(ja4) = ja4(p) {
        out.push(("ja4", ja4));
        return;
    }
    if p.starts_with(b"SSH-") {
        if let Some(first) = text_lines(p).first() {
            out.push(("ssh_client_banner", cap(first)));
        }
        return;
    }
    if http(p, out) {
        return;
    }
    if let Some(cmd) = redis_command(p, port) {
        out.push(("redis_command", cmd));
        return;
    }
    match port {
        25 | 465 | 587 | 2525 => words(p, SMTP_WORDS, "smtp_command", out),
        21 | 2121 => {
            words(p, FTP_WORDS, "ftp_command", out);
            ftp_credentials(p, out);
        }
        23 | 2323 => telnet(p, out),
        _ => {}
    }
}

const HTTP_METHODS: &[&str] = &[
    "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "CONNECT", "PATCH", "TRACE",
];

/// HTTP request line, User-Agent, and Basic credentials. True when it was HTTP.
fn http(p: &[u8], out: &mut Vec<(&'static str, String)>) -> bool {
    let lines = text_lines(p);
    let Some(first) = lines.first() else {
        return false;
    };
    let mut parts = first.split(' ');
    let (Some(method), Some(_target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    if !HTTP_METHODS.contains(&method) || !version.starts_with("HTTP/") {
        return false;
    }
    out.push(("http_request", cap(first)));
    for l in &lines[1..] {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("user-agent") {
            out.push(("http_user_agent", cap(value)));
        } else if name.eq_ignore_ascii_case("authorization")
            && let Some(b64) = value
                .strip_prefix("Basic ")
                .or_else(|| value.strip_prefix("basic "))
            && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim())
            && let Ok(pair) = String::from_utf8(raw)
            && pair.contains(':')
        {
            out.push(("credential", cap(&format!("http_basic:{pair}"))));
        }
    }
    true
}

const SMTP_WORDS: &[&str] = &[
    "HELO", "EHLO", "MAIL", "RCPT", "DATA", "AUTH", "STARTTLS", "RSET", "VRFY", "EXPN", "NOOP",
    "QUIT",
];
const FTP_WORDS: &[&str] = &[
    "USER", "PASS", "ACCT", "CWD", "PWD", "LIST", "NLST", "RETR", "STOR", "PORT", "PASV", "EPSV",
    "SYST", "FEAT", "AUTH", "TYPE", "QUIT", "SITE", "MKD", "DELE",
];
const REDIS_WORDS: &[&str] = &[
    "PING",
    "INFO",
    "CONFIG",
    "SET",
    "GET",
    "KEYS",
    "FLUSHALL",
    "FLUSHDB",
    "SLAVEOF",
    "REPLICAOF",
    "MODULE",
    "EVAL",
    "AUTH",
    "SAVE",
    "CLIENT",
    "COMMAND",
    "DBSIZE",
    "SCAN",
    "HELLO",
    "QUIT",
];

/// Known command words at the start of lines, in order, deduplicated.
fn words(p: &[u8], known: &[&str], kind: &'static str, out: &mut Vec<(&'static str, String)>) {
    let mut seen: Vec<String> = Vec::new();
    for l in text_lines(p) {
        let w = l.split(' ').next().unwrap_or("").to_ascii_uppercase();
        if known.contains(&w.as_str()) && !seen.contains(&w) {
            seen.push(w.clone());
            out.push((kind, w));
        }
    }
}

fn ftp_credentials(p: &[u8], out: &mut Vec<(&'static str, String)>) {
    let lines = text_lines(p);
    let arg = |cmd: &str| {
        lines.iter().find_map(|l| {
            let (w, rest) = l.split_once(' ')?;
            w.eq_ignore_ascii_case(cmd).then(|| rest.trim().to_owned())
        })
    };
    if let (Some(u), Some(pw)) = (arg("USER"), arg("PASS")) {
        out.push(("credential", cap(&format!("ftp:{u}:{pw}"))));
    }
}

/// RESP array (`*N\r\n$len\r\nCMD...`) on any port, or an inline command on the Redis port.
fn redis_command(p: &[u8], port: u16) -> Option<String> {
    let lines = text_lines(p);
    let word = if p.first() == Some(&b'*') {
        // *<n>, $<len>, <word>
        let w = lines.get(2)?;
        lines.get(1).filter(|l| l.starts_with('$'))?;
        w.to_ascii_uppercase()
    } else if port == 6379 {
        lines.first()?.split(' ').next()?.to_ascii_uppercase()
    } else {
        return None;
    };
    REDIS_WORDS.contains(&word.as_str()).then_some(word)
}

/// Telnet: strips IAC negotiation, keeps the first typed line; two typed lines are the
/// classic login/password pair of bots.
fn telnet(p: &[u8], out: &mut Vec<(&'static str, String)>) {
    let mut clean = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        if p[i] == 255 {
            // IAC: WILL/WONT/DO/DONT take an option byte; SB .. SE is skipped whole.
            match p.get(i + 1) {
                Some(250) => {
                    i += 2;
                    while i + 1 < p.len() && !(p[i] == 255 && p[i + 1] == 240) {
                        i += 1;
                    }
                    i += 2;
                }
                Some(251..=254) => i += 3,
                Some(_) => i += 2,
                None => i += 1,
            }
            continue;
        }
        clean.push(p[i]);
        i += 1;
    }
    let typed: Vec<String> = text_lines(&clean)
        .into_iter()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty() && l.chars().all(|c| !c.is_control()))
        .collect();
    if let Some(first) = typed.first() {
        out.push(("telnet_input", cap(first)));
    }
    if typed.len() >= 2 {
        out.push((
            "credential",
            cap(&format!("telnet:{}:{}", typed[0], typed[1])),
        ));
    }
}

fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (b[0] as usize) << 16 | (b[1] as usize) << 8 | b[2] as usize)
    }
}

fn hash12(items: &str) -> String {
    let d = Sha256::digest(items.as_bytes());
    d.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn hex_list(v: &[u16]) -> String {
    v.iter()
        .map(|x| format!("{x:04x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// JA4 (TLS over TCP) of a complete ClientHello; `None` when the bytes are not one or are
/// cut short (the sensor keeps 128 payload bytes, less than most ClientHellos; other
/// writers may supply complete ones).
pub fn ja4(p: &[u8]) -> Option<String> {
    let mut r = Reader(p);
    if r.u8()? != 0x16 {
        return None;
    }
    let _record_version = r.u16()?;
    let rec_len = r.u16()? as usize;
    let mut r = Reader(r.take(rec_len)?);
    if r.u8()? != 0x01 {
        return None;
    }
    let hs_len = r.u24()?;
    let mut r = Reader(r.take(hs_len)?);
    let legacy_version = r.u16()?;
    r.take(32)?;
    let sid = r.u8()? as usize;
    r.take(sid)?;
    let cs_len = r.u16()? as usize;
    let mut cs = Reader(r.take(cs_len)?);
    let mut ciphers = Vec::new();
    while let Some(c) = cs.u16() {
        if !is_grease(c) {
            ciphers.push(c);
        }
    }
    let comp = r.u8()? as usize;
    r.take(comp)?;
    let mut exts = Vec::new();
    let mut sni = false;
    let mut alpn = String::new();
    let mut versions: Vec<u16> = Vec::new();
    let mut sigs: Vec<u16> = Vec::new();
    if let Some(ext_len) = r.u16() {
        let mut e = Reader(r.take(ext_len as usize)?);
        while !e.0.is_empty() {
            let ty = e.u16()?;
            let len = e.u16()? as usize;
            let body = e.take(len)?;
            if is_grease(ty) {
                continue;
            }
            exts.push(ty);
            let mut b = Reader(body);
            match ty {
                0x0000 => sni = true,
                0x0010 => {
                    // ALPN: list length, then (len, name)*; the first name counts.
                    let _ = b.u16();
                    if let Some(n) = b.u8()
                        && let Some(name) = b.take(n as usize)
                    {
                        alpn = String::from_utf8_lossy(name).into_owned();
                    }
                }
                0x002b => {
                    if let Some(n) = b.u8() {
                        let mut v = Reader(b.take(n as usize)?);
                        while let Some(x) = v.u16() {
                            if !is_grease(x) {
                                versions.push(x);
                            }
                        }
                    }
                }
                0x000d => {
                    if let Some(n) = b.u16() {
                        let mut v = Reader(b.take(n as usize)?);
                        while let Some(x) = v.u16() {
                            sigs.push(x);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let version = versions.iter().copied().max().unwrap_or(legacy_version);
    let ver = match version {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        _ => "00",
    };
    let alpn_code = match (alpn.chars().next(), alpn.chars().last()) {
        (Some(a), Some(b)) if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() => {
            format!("{a}{b}")
        }
        (Some(_), Some(_)) => {
            let h = alpn.as_bytes();
            format!("{:x}{:x}", h[0] >> 4, h[h.len() - 1] & 0x0f)
        }
        _ => "00".to_owned(),
    };
    let a = format!(
        "t{ver}{}{:02}{:02}{alpn_code}",
        if sni { 'd' } else { 'i' },
        ciphers.len().min(99),
        exts.len().min(99)
    );
    let mut sorted_c = ciphers.clone();
    sorted_c.sort_unstable();
    let b = if sorted_c.is_empty() {
        "000000000000".to_owned()
    } else {
        hash12(&hex_list(&sorted_c))
    };
    let mut sorted_e: Vec<u16> = exts
        .iter()
        .copied()
        .filter(|&e| e != 0x0000 && e != 0x0010)
        .collect();
    sorted_e.sort_unstable();
    let c_input = if sigs.is_empty() {
        hex_list(&sorted_e)
    } else {
        format!("{}_{}", hex_list(&sorted_e), hex_list(&sigs))
    };
    let c = if sorted_e.is_empty() {
        "000000000000".to_owned()
    } else {
        hash12(&c_input)
    };
    Some(format!("{a}_{b}_{c}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(p: &[u8], port: u16) -> Vec<(&'static str, String)> {
        let mut out = vec![];
        payload_artifacts(p, port, &mut out);
        out
    }

    /// A ClientHello with the cipher, extension and signature lists of a published JA4
    /// example (Chrome 143), plus GREASE values that must be ignored.
    pub(super) fn client_hello() -> Vec<u8> {
        let ciphers: [u16; 16] = [
            0x2a2a, 0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013,
            0xc014, 0x009c, 0x009d, 0x002f, 0x0035,
        ];
        let sigs: [u16; 8] = [
            0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
        ];
        let ext_order: [u16; 17] = [
            0x3a3a, 0x002d, 0x0033, 0x0010, 0xfe0d, 0x0017, 0x44cd, 0x0000, 0x000b, 0x000a, 0x002b,
            0xff01, 0x0023, 0x0012, 0x0005, 0x000d, 0x001b,
        ];
        let mut exts = Vec::new();
        for ty in ext_order {
            let body: Vec<u8> = match ty {
                0x0000 => {
                    let name = b"decoy.example";
                    let mut b = vec![];
                    b.extend(((name.len() + 3) as u16).to_be_bytes());
                    b.push(0);
                    b.extend((name.len() as u16).to_be_bytes());
                    b.extend(name);
                    b
                }
                0x0010 => vec![
                    0, 12, 2, b'h', b'2', 8, b'h', b't', b't', b'p', b'/', b'1', b'.', b'1',
                ],
                0x002b => vec![6, 0x7a, 0x7a, 0x03, 0x04, 0x03, 0x03],
                0x000d => {
                    let mut b = ((sigs.len() * 2) as u16).to_be_bytes().to_vec();
                    for s in sigs {
                        b.extend(s.to_be_bytes());
                    }
                    b
                }
                _ => vec![],
            };
            exts.extend(ty.to_be_bytes());
            exts.extend((body.len() as u16).to_be_bytes());
            exts.extend(body);
        }
        let mut hs = vec![0x03, 0x03];
        hs.extend([7u8; 32]);
        hs.push(0);
        hs.extend(((ciphers.len() * 2) as u16).to_be_bytes());
        for c in ciphers {
            hs.extend(c.to_be_bytes());
        }
        hs.extend([1, 0]);
        hs.extend((exts.len() as u16).to_be_bytes());
        hs.extend(exts);
        let mut msg = vec![0x01];
        msg.extend(&(hs.len() as u32).to_be_bytes()[1..]);
        msg.extend(hs);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend((msg.len() as u16).to_be_bytes());
        rec.extend(msg);
        rec
    }

    #[test]
    fn ja4_matches_the_published_example() {
        assert_eq!(
            ja4(&client_hello()).as_deref(),
            Some("t13d1516h2_8daaf6152771_d8a2da3f94cd")
        );
        // Cut short (the sensor's 128-byte prefix): no fingerprint rather than a wrong one.
        assert_eq!(ja4(&client_hello()[..128]), None);
    }

    #[test]
    fn http_request_agent_and_basic_credentials() {
        let p = b"GET /admin HTTP/1.1\r\nHost: x\r\nUser-Agent: Mozilla/5.0 zgrab/0.x\r\nAuthorization: Basic YWRtaW46YWRtaW4=\r\n\r\n";
        let k = kinds(p, 80);
        assert_eq!(k[0], ("http_request", "GET /admin HTTP/1.1".into()));
        assert_eq!(k[1], ("http_user_agent", "Mozilla/5.0 zgrab/0.x".into()));
        assert_eq!(k[2], ("credential", "http_basic:admin:admin".into()));
        assert!(kinds(b"GET nothing\r\n", 80).is_empty());
    }

    #[test]
    fn ssh_banner() {
        assert_eq!(
            kinds(b"SSH-2.0-libssh_0.9.6\r\n", 22),
            vec![("ssh_client_banner", "SSH-2.0-libssh_0.9.6".into())]
        );
    }

    #[test]
    fn redis_smtp_ftp_telnet() {
        assert_eq!(
            kinds(b"*1\r\n$4\r\nINFO\r\n", 6379),
            vec![("redis_command", "INFO".into())]
        );
        assert_eq!(
            kinds(b"*3\r\n$6\r\nCONFIG\r\n$3\r\nSET\r\n", 7000),
            vec![("redis_command", "CONFIG".into())]
        );
        assert_eq!(
            kinds(b"PING\r\n", 6379),
            vec![("redis_command", "PING".into())]
        );
        assert!(kinds(b"PING\r\n", 7000).is_empty());
        assert_eq!(
            kinds(b"EHLO x\r\nAUTH LOGIN\r\n", 25),
            vec![
                ("smtp_command", "EHLO".into()),
                ("smtp_command", "AUTH".into())
            ]
        );
        let k = kinds(b"USER anonymous\r\nPASS a@b\r\n", 21);
        assert!(k.contains(&("ftp_command", "USER".into())));
        assert!(k.contains(&("credential", "ftp:anonymous:a@b".into())));
        let k = kinds(b"\xff\xfb\x01\xff\xfd\x03root\r\nxc3511\r\n", 23);
        assert_eq!(
            k,
            vec![
                ("telnet_input", "root".into()),
                ("credential", "telnet:root:xc3511".into())
            ]
        );
    }

    /// Bounded fuzz smoke: random bytes and mutations of valid inputs never panic.
    #[test]
    fn parsers_never_panic_on_hostile_bytes() {
        let mut s: u64 = 0x243f6a8885a308d3;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let seeds: Vec<Vec<u8>> = vec![
            client_hello(),
            b"GET / HTTP/1.1\r\nUser-Agent: x\r\nAuthorization: Basic YTpi\r\n\r\n".to_vec(),
            b"SSH-2.0-x\r\n".to_vec(),
            b"*2\r\n$4\r\nAUTH\r\n$1\r\nx\r\n".to_vec(),
            b"\xff\xfa\x18\x01\xff\xf0root\r\npw\r\n".to_vec(),
            b"USER a\r\nPASS b\r\n".to_vec(),
        ];
        let ports = [0u16, 21, 23, 25, 80, 443, 6379, 2323];
        for i in 0..60_000u32 {
            let mut buf = if i % 2 == 0 {
                let len = (next() % 300) as usize;
                (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                let mut b = seeds[(next() % seeds.len() as u64) as usize].clone();
                for _ in 0..1 + next() % 4 {
                    if b.is_empty() {
                        break;
                    }
                    let at = (next() % b.len() as u64) as usize;
                    match next() % 3 {
                        0 => b[at] = next() as u8,
                        1 => b.truncate(at),
                        _ => b.insert(at, next() as u8),
                    }
                }
                b
            };
            buf.truncate(4096);
            let mut out = vec![];
            payload_artifacts(
                &buf,
                ports[(next() % ports.len() as u64) as usize],
                &mut out,
            );
            let _ = ja4(&buf);
        }
    }
}
