//! `decnet backup`: a consistent copy of the SQLite file while the daemon writes to it.

use std::path::Path;

use sqlx::{ConnectOptions as _, Connection as _, sqlite::SqliteConnectOptions};

/// Why a backup failed; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}: no database there (is --data-dir right?)")]
    NoDatabase(std::path::PathBuf),
    #[error("{0}: exists already; give a new file (a backup never overwrites)")]
    Exists(std::path::PathBuf),
    #[error("{path}: {err}")]
    Io {
        path: std::path::PathBuf,
        err: std::io::Error,
    },
    #[error("copying {db} to {out}: {err}")]
    Copy {
        db: std::path::PathBuf,
        out: std::path::PathBuf,
        err: sqlx::Error,
    },
}

/// Copies `db` to `out` with SQLite's `VACUUM INTO`: one read transaction, so the copy is
/// the database as of one commit (rows, profiles and every cursor together), compacted.
/// The daemon goes on writing meanwhile (WAL). Written to a temporary file beside `out`
/// and renamed, so a failure (a full disk) leaves no partial copy; readable by its owner
/// only. Returns the copy's size.
pub async fn backup(db: &Path, out: &Path) -> Result<u64, BackupError> {
    if !db.is_file() {
        return Err(BackupError::NoDatabase(db.to_owned()));
    }
    if out.exists() {
        return Err(BackupError::Exists(out.to_owned()));
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |err| BackupError::Io { path, err }
    };
    let name = out
        .file_name()
        .ok_or_else(|| BackupError::Exists(out.to_owned()))?;
    let partial = out.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    // A partial file of an earlier failed run.
    let _ = std::fs::remove_file(&partial);
    let copy_err = |err| BackupError::Copy {
        db: db.to_owned(),
        out: out.to_owned(),
        err,
    };
    // Read-only: a backup must never create, migrate or write the live file.
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .busy_timeout(std::time::Duration::from_secs(30))
        .connect()
        .await
        .map_err(copy_err)?;
    let r = sqlx::query("VACUUM INTO $1")
        .bind(partial.to_string_lossy().into_owned())
        .execute(&mut conn)
        .await;
    let _ = conn.close().await;
    if let Err(e) = r {
        let _ = std::fs::remove_file(&partial);
        return Err(copy_err(e));
    }
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))
        .map_err(io(&partial))?;
    std::fs::rename(&partial, out).map_err(io(out))?;
    Ok(std::fs::metadata(out).map_err(io(out))?.len())
}
