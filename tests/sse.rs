//! An SSE client of `/api/v1/stream` that checks every log id arrives once and in order.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::Duration,
};

use crate::API_TOKEN;

/// What one SSE client saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub logs: u64,
    pub first: Option<i64>,
    pub last: Option<i64>,
    /// Log ids skipped (the id went up by more than one).
    pub gaps: u64,
    /// Log ids seen again (the id did not go up).
    pub dups: u64,
    pub reconnects: u64,
    /// `reset` (too slow) and `shutdown` (restart) events received.
    pub resets: u64,
    pub shutdowns: u64,
}

/// Follows `/api/v1/stream` over HTTP/1.0 (no chunking: the body is the event stream),
/// resuming with Last-Event-ID after every cut, until `stop`.
pub fn sse_client(api: Arc<Mutex<SocketAddr>>, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let mut last_id: Option<String> = None;
    let mut first_connect = true;
    while !stop.load(Relaxed) {
        let addr = *api.lock().expect("api addr");
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        if !first_connect {
            seen.lock().expect("seen").reconnects += 1;
        }
        first_connect = false;
        let resume = last_id
            .as_deref()
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        if write!(
            s,
            "GET /api/v1/stream HTTP/1.0\r\nAuthorization: Bearer {API_TOKEN}\r\n{resume}\r\n"
        )
        .is_err()
        {
            continue;
        }
        let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
        let mut buf = vec![0u8; 1 << 16];
        let mut pending: Vec<u8> = Vec::new();
        let mut in_body = false;
        'conn: while !stop.load(Relaxed) {
            let n = match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(_) => break,
            };
            pending.extend_from_slice(&buf[..n]);
            if !in_body {
                let Some(p) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&pending[..p]).into_owned();
                assert!(head.contains(" 200 "), "stream refused: {head}");
                pending.drain(..p + 4);
                in_body = true;
            }
            while let Some(p) = pending.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = pending.drain(..p + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let field = |k: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(k))
                        .map(str::to_owned)
                };
                let (Some(event), Some(id)) = (field("event: "), field("id: ")) else {
                    continue;
                };
                last_id = Some(id.clone());
                let mut seen = seen.lock().expect("seen");
                match event.as_str() {
                    "log" => {
                        let l: i64 = id
                            .split_once('-')
                            .and_then(|(l, _)| l.parse().ok())
                            .expect("log id");
                        match seen.last {
                            Some(prev) if l <= prev => seen.dups += 1,
                            Some(prev) => seen.gaps += (l - prev - 1) as u64,
                            None => seen.first = Some(l),
                        }
                        seen.last = Some(l);
                        seen.logs += 1;
                    }
                    "reset" => {
                        seen.resets += 1;
                        break 'conn;
                    }
                    "shutdown" => {
                        seen.shutdowns += 1;
                        break 'conn;
                    }
                    _ => {}
                }
            }
        }
    }
}
