//! The store: SQLite (WAL) or PostgreSQL through sqlx, migrations embedded per engine.
//! [`Store`] owns every query;
//! no SQL lives outside this module.
//!
//! - `engine`: the pool of either engine, opening, multi-row statements, the `state` table;
//! - `rows`: the rows written and read; `error`: what calls fail with;
//! - `ingest`: the ingester's batch commit; `profile`: the profiler's commit and loads;
//! - `fleet`: the analyst and shard locks and commit notifications (PostgreSQL);
//! - `shard`: sharded analysts' reads: a shard's rows, the campaign pass's sources, moves;
//! - `sinks`: the alert sinks' cursors, re-arm windows and open digests;
//! - `prune`: retention's batched deletes and the database's size;
//! - `backup`: a consistent copy of the SQLite file while it is written;
//! - `read`: the pages and counts the API, stream and relay read.
//!
//! Stage 4 (store) of the pipeline: docs/architecture.md.

mod backup;
mod engine;
mod error;
mod fleet;
mod ingest;
mod ingest_sqlite;
mod profile;
mod prune;
mod read;
mod rows;
mod shard;
mod sinks;

pub use backup::{BackupError, backup};
pub use engine::{Backend, Store};
pub use error::StoreError;
pub use fleet::{
    AnalystLock, CAMPAIGNS_CHANNEL, Change, Changes, DETECTIONS_CHANNEL, LOGS_CHANNEL,
};
pub use prune::{DbSize, PRUNED_DETECTIONS_KEY, PRUNED_LOGS_KEY, Pruned, Reach};
pub use rows::{
    AttackerRow, Batch, BountyCount, CursorUpdate, DeadLetter, DetectionRow, NewBounty,
    ProfileCommit, ProfileRow, SinkCommit, SinkSaved, SinkWindow, Tally,
};
pub use shard::Shard;
pub use sinks::{sink_cursor_key, sink_digest_key};
