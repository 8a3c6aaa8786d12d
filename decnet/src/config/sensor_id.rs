//! A sensor's name in a fleet: given, or kept in the data dir, or the hostname.

use std::path::Path;

/// Where the data dir keeps the sensor id it was first given (see [`RunConfig::sensor_id`]).
pub const SENSOR_ID_FILE: &str = "sensor-id";

/// A sensor id: `given`, else the one kept in `data_dir`, else the hostname, which is then
/// kept there (the data dir must exist). Kept, because the ingest cursor is named by it: a
/// host renamed later must not ingest its journal again under a new name.
pub fn resolve_sensor_id(data_dir: &Path, given: Option<&str>) -> std::io::Result<String> {
    if let Some(id) = given {
        return Ok(id.to_owned());
    }
    let kept = data_dir.join(SENSOR_ID_FILE);
    match std::fs::read_to_string(&kept) {
        Ok(id) if valid_sensor_id(id.trim()) => return Ok(id.trim().to_owned()),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} does not hold a valid sensor id", kept.display()),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| valid_sensor_id(h))
        .unwrap_or_else(|| "sensor".to_owned());
    std::fs::write(&kept, format!("{host}\n"))?;
    Ok(host)
}

/// A sensor id: short, printable, safe in a state key and a log line.
pub fn valid_sensor_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
