//! Where the profiler's rows come from: the ingester's announcements on the hub, in one
//! process ([`Feed`]), or the database, read and parsed ahead of the folding
//! ([`ReadAhead`]; a shard's analyst reads only its shard's rows).

use std::sync::Arc;

use tracing::Instrument as _;

use crate::{
    hub::{Hub, HubMsg, LogBatch},
    ingest::bounty,
    row::{Facts, NewLog},
    store::{Shard, Store, StoreError},
};

/// Committed log batches as the ingester announced them, in id order, kept until profiled.
pub(super) struct Feed {
    rx: tokio::sync::broadcast::Receiver<HubMsg>,
    pending: std::collections::VecDeque<Arc<LogBatch>>,
    /// Rows in `pending`.
    held: usize,
}

/// A row to fold: its id, the row, and its fields when the ingester parsed them already.
pub(super) type Row<'a> = (i64, &'a NewLog, Option<&'a Facts>);

/// Rows of one announced batch: the batch, the first row taken and how many.
pub(super) type Segment = (Arc<LogBatch>, usize, usize);

/// Rows the feed holds at most. When the ingester runs ahead (catching up a long journal
/// after a restart), batches past this are dropped and read from the database when their
/// turn comes, so memory stays bounded whatever the backlog.
const FEED_MAX_ROWS: usize = 20_000;

impl Feed {
    /// Announcements on `hub` from now on.
    pub(super) fn new(hub: &Hub) -> Feed {
        Feed {
            rx: hub.subscribe(),
            pending: Default::default(),
            held: 0,
        }
    }

    /// Up to `max` rows right after `cursor`, as (batch, first row in it, rows) segments; or,
    /// where the feed does not hold row `cursor + 1`, how many rows to read from the
    /// database before the feed has them (None: all `max`).
    pub(super) fn after(&mut self, cursor: i64, max: usize) -> Result<Vec<Segment>, Option<i64>> {
        use tokio::sync::broadcast::error::TryRecvError;
        let done = |b: &LogBatch| b.first_id + b.logs.len() as i64 <= cursor + 1;
        while self.pending.front().is_some_and(|b| done(b)) {
            if let Some(b) = self.pending.pop_front() {
                self.held -= b.logs.len();
            }
        }
        loop {
            match self.rx.try_recv() {
                Ok(HubMsg::Logs(b)) => {
                    if !done(&b) && self.held + b.logs.len() <= FEED_MAX_ROWS {
                        self.held += b.logs.len();
                        self.pending.push_back(b);
                    }
                }
                Ok(_) => {}
                // Batches lost to the lag leave a gap the database fills.
                Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        let Some(b) = self.pending.front() else {
            return Err(None);
        };
        // A hole before the first batch held (rows committed before the feed began, or
        // announcements lost to a lag): the database has it.
        if b.first_id > cursor + 1 {
            return Err(Some(b.first_id - cursor - 1));
        }
        // The rows from `cursor + 1` on, across batches while their ids run on, up to `max`
        // (as a read from the database would group them).
        let mut segments = Vec::new();
        let (mut next, mut left) = (cursor + 1, max);
        for b in &self.pending {
            if left == 0 || b.first_id > next {
                break;
            }
            let at = (next - b.first_id) as usize;
            let n = b.logs.len().saturating_sub(at).min(left);
            if n == 0 {
                break;
            }
            segments.push((b.clone(), at, n));
            next += n as i64;
            left -= n;
        }
        Ok(segments)
    }
}

/// Rows read from the database, each with its parsed fields.
pub(super) type Parsed = Vec<(i64, NewLog, Facts)>;

/// Rows after `after`, read from the database and parsed by a task of their own, with the
/// id through which they are all the rows there are (a shard's reader passes over the
/// other shards' rows) and whether more follow.
pub(super) struct ReadAhead {
    pub(super) after: i64,
    pub(super) limit: i64,
    task: tokio::task::JoinHandle<Result<Read, StoreError>>,
}

/// What a [`ReadAhead`] read: the rows, the id through which they are all there are, and
/// whether more follow (a full batch, or a shard's window short of the newest row).
pub(super) type Read = (Parsed, i64, bool);

impl ReadAhead {
    pub(super) fn start(store: &Store, shard: Option<Shard>, after: i64, limit: i64) -> ReadAhead {
        let store = store.clone();
        let task = tokio::spawn(
            async move {
                let (rows, through, more) = match shard {
                    Some(shard) => store.shard_logs_after(shard, after, limit).await?,
                    None => {
                        let rows = store.logs_after(after, limit).await?;
                        let through = rows.last().map_or(after, |(id, _)| *id);
                        let full = rows.len() as i64 == limit;
                        (rows, through, full)
                    }
                };
                // Parsing 2,000 rows' fields takes milliseconds: off the runtime's workers.
                let parsed = tokio::task::spawn_blocking(move || {
                    rows.into_iter()
                        .map(|(id, l)| {
                            let f = bounty::facts(&l);
                            (id, l, f)
                        })
                        .collect()
                })
                .await
                .map_err(|e| StoreError::Task(format!("profile read: {e}")))?;
                Ok((parsed, through, more))
            }
            // Its `db.logs_after` belongs to the profiler's run, as when it was read in line.
            .instrument(tracing::Span::current()),
        );
        ReadAhead { after, limit, task }
    }

    pub(super) async fn rows(mut self) -> Result<Read, StoreError> {
        (&mut self.task)
            .await
            .map_err(|e| StoreError::Task(format!("profile read: {e}")))?
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // A read nobody will take (the pass ended or failed): stop it.
        self.task.abort();
    }
}
