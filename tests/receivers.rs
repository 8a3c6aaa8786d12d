//! Real receivers for the alert sinks: an HTTP webhook server on loopback that records every
//! request (and can fail on purpose), and Debian's rsyslog listening on loopback UDP and TCP.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;

/// One request a [`Webhook`] received.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: Instant,
    /// Unix ns when it arrived (to compare with the detection's time).
    pub at_unix_ns: i64,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub body: Value,
    /// The status it was answered with.
    pub status: u16,
    /// Messages in the POST it came in (an NDJSON body is recorded one line each).
    pub batch: usize,
}

/// An HTTP/1.1 server on 127.0.0.1 (keep-alive, Content-Length bodies) that records each
/// request and answers `status` (200 unless set).
pub struct Webhook {
    pub addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    /// Non-zero: the answer to any POST of more than one message (a receiver that takes
    /// one event per request, or a body over its size limit: 413).
    batch_status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
}

impl Webhook {
    pub fn start() -> Webhook {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind webhook");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let batch_status = Arc::new(AtomicU16::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, st, sp) = (got.clone(), status.clone(), stop.clone());
        let bs = batch_status.clone();
        std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let (g, st, sp) = (g.clone(), st.clone(), sp.clone());
                        let bs = bs.clone();
                        std::thread::spawn(move || serve(s, &g, &st, &bs, &sp));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Webhook {
            addr,
            got,
            status,
            batch_status,
            stop,
        }
    }

    /// Answers every later POST of more than one message with `code` (0: as any other).
    pub fn answer_batches(&self, code: u16) {
        self.batch_status.store(code, Ordering::SeqCst);
    }

    /// Answers every later request with `code`.
    pub fn answer(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (bounded) until `pred` holds for the requests so far.
    pub fn wait(&self, within: Duration, what: &str, pred: impl Fn(&[Received]) -> bool) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if pred(&self.requests()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "webhook on {}: {what} did not happen within {within:?}; got {:?}",
            self.addr,
            self.requests()
        );
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    s: TcpStream,
    got: &Mutex<Vec<Received>>,
    status: &AtomicU16,
    batch_status: &AtomicU16,
    stop: &AtomicBool,
) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut w = match s.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(s);
    while !stop.load(Ordering::Relaxed) {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let (mut len, mut key, mut ndjson) = (0usize, None, false);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    "idempotency-key" => key = Some(v.trim().to_owned()),
                    "content-type" => ndjson = v.trim() == "application/x-ndjson",
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let mut code = status.load(Ordering::SeqCst);
        let bodies: Vec<Value> = if ndjson {
            body.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).unwrap_or(Value::Null))
                .collect()
        } else {
            vec![serde_json::from_slice(&body).unwrap_or(Value::Null)]
        };
        let (at, at_unix_ns, batch) = (Instant::now(), unix_ns(), bodies.len());
        let refuse = batch_status.load(Ordering::SeqCst);
        if batch > 1 && refuse != 0 {
            code = refuse;
        }
        got.lock()
            .unwrap()
            .extend(bodies.into_iter().map(|body| Received {
                at,
                at_unix_ns,
                path: path.clone(),
                idempotency_key: key.clone(),
                body,
                status: code,
                batch,
            }));
        // One write: `write!` on the bare stream sends each piece as its own segment, and
        // Nagle's algorithm then holds the rest for the client's delayed ACK (~40 ms a
        // request), which would be the receiver's cost measured as decnet's.
        let answer =
            format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n");
        let _ = w.write_all(answer.as_bytes());
    }
}

pub fn unix_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Debian's rsyslogd in the foreground, receiving on 127.0.0.1 UDP and TCP (octet-counted
/// or newline framing) and writing each message as rsyslog's RFC 5424 parser read it:
/// `RECEIVED|INPUT|VERSION|APP|MSGID|STRUCTURED-DATA|MSG` (RECEIVED: rsyslog's receive
/// time; INPUT: imudp or imtcp), one per line, into `out`. Killed on drop.
pub struct Rsyslog {
    child: Child,
    pub udp: u16,
    pub tcp: u16,
    /// The TLS input's port (RFC 5425, GnuTLS), INPUT `imtls`; see [`Rsyslog::start_tls`].
    pub tls: Option<u16>,
    pub out: PathBuf,
}

impl Rsyslog {
    pub fn start(dir: &Path) -> Rsyslog {
        Self::start_with(dir, None)
    }

    /// [`Rsyslog::start`] with a TLS input too, serving `cert` (needs Debian's
    /// rsyslog-gnutls).
    pub fn start_tls(dir: &Path, cert: &crate::certs::ServerCert) -> Rsyslog {
        Self::start_with(dir, Some(cert))
    }

    fn start_with(dir: &Path, cert: Option<&crate::certs::ServerCert>) -> Rsyslog {
        let udp = crate::free_udp_port();
        let tcp = crate::free_port();
        let tls = cert.map(|_| crate::free_port());
        let tls_input = match (cert, tls) {
            (Some(c), Some(port)) => format!(
                r#"input(type="imtcp" name="imtls" address="127.0.0.1" port="{port}" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon" streamDriver.CertFile="{cert}" streamDriver.KeyFile="{key}")"#,
                cert = c.cert.display(),
                key = c.key.display()
            ),
            _ => String::new(),
        };
        let out = dir.join("received.log");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{dir}")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="{udp}")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
{tls_input}
template(name="parsed" type="string" string="%timegenerated:::date-rfc3339%|%inputname%|%protocol-version%|%app-name%|%msgid%|%structured-data%|%msg%\n")
*.* action(type="omfile" file="{out}" template="parsed")
"#,
                dir = dir.display(),
                out = out.display()
            ),
        )
        .expect("rsyslog.conf");
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting rsyslogd");
        let r = Rsyslog {
            child,
            udp,
            tcp,
            tls,
            out,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [Some(tcp), tls].into_iter().flatten() {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "rsyslogd did not listen on {port}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        r
    }

    /// Every message received so far, split into its fields (from INPUT on).
    pub fn messages(&self) -> Vec<Vec<String>> {
        self.received().into_iter().map(|(_, m)| m).collect()
    }

    /// Every message received so far with rsyslog's receive time (RFC 3339).
    pub fn received(&self) -> Vec<(String, Vec<String>)> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (at, rest) = l.split_once('|')?;
                Some((
                    at.to_owned(),
                    rest.splitn(6, '|').map(str::to_owned).collect(),
                ))
            })
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
