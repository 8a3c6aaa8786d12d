//! What a store call can fail with, and which failures are worth retrying.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// From the ingester's SQLite writer (`store::ingest_sqlite`).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "state `{0}` was changed by another writer (is a second ingester running on this database?)"
    )]
    CursorMoved(String),
    #[error("state {key}: {source}")]
    State {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// A write handed to a background task that panicked or was cancelled.
    #[error("{0}")]
    Task(String),
}

impl StoreError {
    /// Worth retrying with the batch kept in memory: the database is busy, locked or full
    /// (SQLite), or unreachable, restarting, out of room or in a lock conflict
    /// (PostgreSQL). Anything else is a bug or a broken schema and ends the run.
    pub(crate) fn is_transient(&self) -> bool {
        if let StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) = self {
            use rusqlite::ErrorCode::*;
            return matches!(e.code, DatabaseBusy | DatabaseLocked | DiskFull);
        }
        let StoreError::Db(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::Database(d) => {
                let code = d.code();
                let code = code.as_deref().unwrap_or("");
                if d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .is_some()
                {
                    // 08: connection exception; 53: insufficient resources (disk full, out
                    // of memory, too many connections); 57P01-03: shutting down, cannot
                    // connect now; 40001/40P01: serialization failure, deadlock; 55P03:
                    // lock not available.
                    code.starts_with("08")
                        || code.starts_with("53")
                        || matches!(
                            code,
                            "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "55P03"
                        )
                } else {
                    // SQLITE_BUSY (5) and SQLITE_LOCKED (6), with or without extended codes,
                    // and SQLITE_FULL (13): the disk fills up and frees again.
                    matches!(code.parse::<i32>().ok().map(|c| c & 0xff), Some(5 | 6 | 13))
                }
            }
            // The server went away (restart, network): the pool reconnects.
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => true,
            _ => false,
        }
    }
}
