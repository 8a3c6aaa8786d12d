//! The fleet's live feed: on a shared PostgreSQL the rows and detections an API instance
//! streams are committed by other processes (every sensor's ingester, the analyst), so
//! this task reads them from the database and announces them on the local hub, in id
//! order, woken by LISTEN/NOTIFY and, in case a notification was lost while the listening
//! connection was re-made, by a timer.
//!
//! Gap-free resume still holds: ingest commits become visible in id order (see
//! `Store::commit_batch`), the relay announces only ids after the last it announced, and a
//! stream client subscribes before it replays from the database, skipping what it replayed.
//!
//! Stage 5 (live) of the pipeline: docs/architecture.md.

use std::time::Duration;

use tokio::sync::watch;

use crate::{
    hub::Hub,
    store::{Change, Store, StoreError},
};

/// Look even without a notification this often.
const POLL: Duration = Duration::from_secs(1);
const PAGE: i64 = 1000;

/// Feeds `hub` until `shutdown`.
pub(crate) async fn run(store: Store, hub: Hub, mut shutdown: watch::Receiver<bool>) {
    let mut changes = None;
    let mut log = None;
    let mut det = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        if changes.is_none() {
            match store.changes().await {
                Ok(c) => changes = c,
                Err(e) => tracing::warn!(error = %e, "LISTEN failed; polling until it works"),
            }
        }
        match step(&store, &hub, &mut log, &mut det).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "reading new rows for the streams failed; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        let wait = if backoff > Duration::from_millis(100) {
            backoff
        } else {
            POLL
        };
        let lost = tokio::select! {
            r = async {
                match changes.as_mut() {
                    Some(c) => c.next().await.map(|_: Change| ()),
                    None => std::future::pending().await,
                }
            } => r.is_err(),
            _ = tokio::time::sleep(wait) => false,
            _ = shutdown.wait_for(|v| *v) => return,
        };
        if lost {
            tracing::warn!("LISTEN connection lost; reconnecting");
            changes = None;
        }
    }
}

/// Announces what was committed after the last announced ids. The first call only notes
/// where the database stands: clients replay history themselves.
async fn step(
    store: &Store,
    hub: &Hub,
    log: &mut Option<i64>,
    det: &mut Option<i64>,
) -> Result<(), StoreError> {
    let (Some(last_log), Some(last_det)) = (*log, *det) else {
        *log = Some(store.last_log_id().await?);
        *det = Some(store.last_detection_id().await?);
        return Ok(());
    };
    if hub.subscribers() == 0 {
        // Nobody listens: skip ahead. The tops are read before the check, so a client that
        // subscribed after it replays at least up to them, and takes the hub from there.
        let (top_log, top_det) = (store.last_log_id().await?, store.last_detection_id().await?);
        if hub.subscribers() == 0 {
            *log = Some(top_log);
            *det = Some(top_det);
            return Ok(());
        }
    }
    let mut after = last_log;
    loop {
        let rows = store.logs_after(after, PAGE).await?;
        let full = rows.len() as i64 == PAGE;
        // A hub batch holds consecutive ids; ids skipped by a rolled-back transaction split it.
        let mut run: Vec<crate::row::NewLog> = Vec::new();
        let mut first = 0;
        for (id, l) in rows {
            if !run.is_empty() && id != first + run.len() as i64 {
                let batch = std::mem::take(&mut run);
                hub.logs(first, move || batch);
            }
            if run.is_empty() {
                first = id;
            }
            run.push(l);
            after = id;
        }
        if !run.is_empty() {
            hub.logs(first, move || run);
        }
        if !full {
            break;
        }
    }
    *log = Some(after);
    let mut after = last_det;
    loop {
        let rows = store.detections_after(after, PAGE).await?;
        let full = rows.len() as i64 == PAGE;
        if let Some(d) = rows.last() {
            after = d.id;
        }
        hub.detections(rows);
        if !full {
            break;
        }
    }
    *det = Some(after);
    Ok(())
}
