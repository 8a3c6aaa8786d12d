//! The collector stage: decoded probes -> journal records -> `events.jsonl`.
//!
//! - `record`: the journal record format (one JSON object per line, see DESIGN.md).
//! - `journal`: the writer thread that owns the file.

pub mod journal;
pub mod record;

pub use journal::{JournalConfig, JournalHandle, JournalWriter};
pub use record::{JournalRecord, write_probe_record};
