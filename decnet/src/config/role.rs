//! `--role`: which parts of decnet a process runs.

use serde::Deserialize;

/// Which parts of decnet a process runs (`--role`).
#[derive(
    clap::ValueEnum, Deserialize, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Capture, journal and ingest into the (shared) database.
    Sensor,
    /// The profiler: one instance of the fleet at a time, the others stand by.
    Analyst,
    /// The HTTP API and its live streams.
    Api,
    /// Everything in one process.
    #[default]
    All,
}

impl Role {
    pub fn sensor(self) -> bool {
        matches!(self, Role::Sensor | Role::All)
    }
    pub fn analyst(self) -> bool {
        matches!(self, Role::Analyst | Role::All)
    }
    pub fn api(self) -> bool {
        matches!(self, Role::Api | Role::All)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Sensor => "sensor",
            Role::Analyst => "analyst",
            Role::Api => "api",
            Role::All => "all",
        })
    }
}
