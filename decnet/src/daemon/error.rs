//! Why `decnet run` could not start.

use crate::sensor::SensorError;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Sensor(#[from] SensorError),
    #[error("data dir {0}: {1}")]
    DataDir(std::path::PathBuf, #[source] std::io::Error),
    #[error("journal {0}: {1}")]
    Journal(std::path::PathBuf, #[source] std::io::Error),
    #[error("database {0}: {1}")]
    Store(String, #[source] crate::store::StoreError),
    #[error("sensor id: {0}")]
    SensorId(#[source] std::io::Error),
    #[error("listening on {0}: {1}")]
    Listen(std::net::SocketAddr, #[source] std::io::Error),
    #[error(
        "refusing to listen on {0} without an API token: set DECNET_API_TOKEN (a long random \
         string) to expose the API beyond loopback, or use --listen 127.0.0.1:PORT"
    )]
    ExposedWithoutToken(std::net::SocketAddr),
    #[error("{0}")]
    Tls(crate::tls::TlsError),
    #[error(
        "data dir {dir} is not decnet's own: it holds `{entry}`; give decnet a directory of its \
         own (it tightens the directory to 0750 and hands it to the daemon user)"
    )]
    DataDirShared {
        dir: std::path::PathBuf,
        entry: String,
    },
    #[error(transparent)]
    Config(crate::config::ConfigError),
    #[error("API token {0}: {1}")]
    Token(std::path::PathBuf, #[source] std::io::Error),
}
