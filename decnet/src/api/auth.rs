//! API authentication: one bearer token, and single-use tickets for browser streams.
//!
//! The token comes from `DECNET_API_TOKEN`, else from `<data-dir>/api-token`, generated once
//! (32 random bytes, hex, mode 0600). Its path is logged, never its value. Comparison is in
//! constant time. `EventSource` cannot send headers, so a browser first trades its token for
//! a ticket (`POST /api/v1/stream/ticket`) that opens one stream within 30 s.
//! `POST /api/v1/token/rotate` (`decnet token rotate`) replaces a file token without a
//! restart: the new one is written to the file first, then takes over; the old one, its
//! tickets and the streams it opened end there.

use std::{
    collections::HashMap,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    http::header::AUTHORIZATION,
    middleware::Next,
    response::Response,
};

use super::error::ApiError;

pub(crate) const TOKEN_ENV: &str = "DECNET_API_TOKEN";
pub(crate) const TOKEN_FILE: &str = "api-token";
pub(crate) const TICKET_TTL: Duration = Duration::from_secs(30);
/// Outstanding tickets at most (expired ones are purged first).
const MAX_TICKETS: usize = 10_000;

/// Where the token came from (for the log line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenSource {
    Env,
    File(PathBuf),
    Generated(PathBuf),
}

pub struct Auth {
    token: RwLock<String>,
    tickets: Mutex<HashMap<String, Instant>>,
    /// The token file a rotation writes (None: the token came from DECNET_API_TOKEN, which
    /// only its owner can change).
    file: Option<PathBuf>,
}

/// Why a rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("the token comes from DECNET_API_TOKEN: change it there and restart the daemon")]
    FromEnv,
    #[error("writing the new token to {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// 32 random bytes from the kernel, hex.
pub(crate) fn random_hex() -> std::io::Result<String> {
    let mut buf = [0u8; 32];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: writes at most the remaining length into our buffer.
        let n = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), buf.len() - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        got += n as usize;
    }
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equal in constant time for equal lengths (the length itself is not secret).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl Auth {
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: RwLock::new(token.into()),
            tickets: Mutex::new(HashMap::new()),
            file: None,
        }
    }

    fn with_file(mut self, path: PathBuf) -> Self {
        self.file = Some(path);
        self
    }

    /// A new random token, written to the token file (a new file renamed over the old, mode
    /// 0600, synced) before it takes over; every ticket of the old one is void. Returns the
    /// file's path.
    pub fn rotate(&self) -> Result<PathBuf, RotateError> {
        let path = self.file.clone().ok_or(RotateError::FromEnv)?;
        let err = |e| RotateError::Write(path.clone(), e);
        let token = random_hex().map_err(err)?;
        let tmp = path.with_file_name(format!(".{TOKEN_FILE}.new"));
        let write = || -> std::io::Result<()> {
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(token.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(err)?;
        *self.token.write().unwrap_or_else(|p| p.into_inner()) = token;
        self.tickets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(path)
    }

    /// The token from the environment, else the data dir's token file (created if missing).
    pub(crate) fn load_or_create(data_dir: &Path) -> std::io::Result<(Auth, TokenSource)> {
        if let Ok(t) = std::env::var(TOKEN_ENV)
            && !t.trim().is_empty()
        {
            return Ok((Auth::new(t.trim()), TokenSource::Env));
        }
        let path = data_dir.join(TOKEN_FILE);
        match std::fs::read_to_string(&path) {
            Ok(t) if !t.trim().is_empty() => {
                let auth = Auth::new(t.trim()).with_file(path.clone());
                return Ok((auth, TokenSource::File(path)));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let token = random_hex()?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(token.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        Ok((
            Auth::new(token).with_file(path.clone()),
            TokenSource::Generated(path),
        ))
    }

    pub(crate) fn token_matches(&self, presented: &str) -> bool {
        let token = self.token.read().unwrap_or_else(|p| p.into_inner());
        ct_eq(presented.as_bytes(), token.as_bytes())
    }

    /// A ticket good for one stream within [`TICKET_TTL`].
    pub(crate) fn issue_ticket(&self) -> Result<String, ApiError> {
        let ticket = random_hex().map_err(|e| ApiError::Internal(e.to_string()))?;
        let now = Instant::now();
        let mut t = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        t.retain(|_, exp| *exp > now);
        if t.len() >= MAX_TICKETS {
            return Err(ApiError::Unavailable(
                "too many outstanding stream tickets".into(),
            ));
        }
        t.insert(ticket.clone(), now + TICKET_TTL);
        Ok(ticket)
    }

    /// Uses a ticket up: true once, within its life.
    pub(crate) fn redeem(&self, ticket: &str) -> bool {
        let mut t = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        matches!(t.remove(ticket), Some(exp) if exp > Instant::now())
    }
}

/// The bearer token of a request, if it carries one.
fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Middleware for every protected route: a valid bearer token, or (for the stream only) a
/// valid ticket in `?ticket=`.
pub(crate) async fn require(
    State(auth): State<Arc<Auth>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(t) = bearer(&req) {
        if auth.token_matches(t) {
            return Ok(next.run(req).await);
        }
        return Err(ApiError::Unauthorized("wrong token"));
    }
    if req.uri().path() == "/api/v1/stream"
        && let Some(ticket) = req.uri().query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "ticket")
                .map(|(_, v)| v.into_owned())
        })
    {
        if auth.redeem(&ticket) {
            return Ok(next.run(req).await);
        }
        return Err(ApiError::Unauthorized("unknown, used or expired ticket"));
    }
    Err(ApiError::Unauthorized(
        "missing `Authorization: Bearer <token>` (the token is in <data-dir>/api-token or DECNET_API_TOKEN)",
    ))
}

/// `/metrics`: open to scrapers on loopback (docs/api.md), the token elsewhere.
pub(crate) async fn require_unless_loopback(
    State(auth): State<Arc<Auth>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    use axum::extract::{ConnectInfo, connect_info::MockConnectInfo};
    let ext = req.extensions();
    // The server records the peer as ConnectInfo; router tests as MockConnectInfo.
    let peer = ext
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0)
        .or_else(|| {
            ext.get::<MockConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0)
        });
    let local = peer.is_some_and(|p| p.ip().to_canonical().is_loopback());
    if local {
        return Ok(next.run(req).await);
    }
    require(State(auth), req, next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_tickets() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: test-only; no other thread reads this variable.
        unsafe { std::env::remove_var(TOKEN_ENV) };
        let (a, src) = Auth::load_or_create(dir.path()).unwrap();
        assert!(matches!(src, TokenSource::Generated(_)));
        let path = dir.path().join(TOKEN_FILE);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Generated once: the second start reads the same token.
        let (b, src) = Auth::load_or_create(dir.path()).unwrap();
        assert_eq!(src, TokenSource::File(path.clone()));
        let old = a.token.read().unwrap().clone();
        assert_eq!(old, *b.token.read().unwrap());
        assert_eq!(old.len(), 64);
        let t = a.issue_ticket().unwrap();
        assert!(a.redeem(&t));
        assert!(!a.redeem(&t), "a ticket works once");
        assert!(!a.redeem("nope"));

        // Rotation: the file holds the new token (0600) before it takes over; the old one
        // and its tickets are void.
        let t = a.issue_ticket().unwrap();
        assert_eq!(a.rotate().unwrap(), path);
        let new = std::fs::read_to_string(&path).unwrap().trim().to_owned();
        assert_ne!(new, old);
        assert!(a.token_matches(&new) && !a.token_matches(&old));
        assert!(!a.redeem(&t));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A token from the environment cannot be rotated here.
        assert!(matches!(
            Auth::new("from-env").rotate(),
            Err(RotateError::FromEnv)
        ));
    }
}
