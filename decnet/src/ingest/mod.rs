//! The ingest stage: journal -> SQLite, exactly once.
//!
//! - `tail`: following the journal by (device, inode, offset) across rotation/truncation.
//! - `parse`: one line -> one row, or a dead letter with the reason.
//! - `ingester`: batching (count or time, whichever first) and the commit that writes the
//!   rows and the new cursor in one transaction.
//! - `tally`: bounty counts between tallies, committed with their own cursor.
//!
//! Stage 6 (ingest) of the pipeline: docs/architecture.md.

pub mod bounty;
pub mod ingester;
pub mod parse;

pub mod tail;
mod tally;

pub use ingester::{IngestConfig, IngestStats, Ingester};
