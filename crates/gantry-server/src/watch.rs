//! `GET /v1/watch?prefix=P&from=REV`: every change under a prefix as
//! Server-Sent Events, resumable.
//!
//! Each event's SSE `id` is `REVISION.INDEX` (INDEX counts events within one
//! revision, since a transaction or a lease's end changes several keys at
//! once). A client that reconnects with `Last-Event-ID` (browsers'
//! EventSource do it by themselves) or `?from=` resumes exactly after the
//! last event it saw: nothing is missed and nothing is seen twice. When the
//! history it needs is gone the stream sends one `reset` event (re-read,
//! then watch again from the read's revision + 1) and ends.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt, stream};
use gantry_api::{ResetEvent, WATCH_RESET_EVENT, WatchEvent, WatchKind};
use gantry_store::{EventKind, StoreError};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::query;

/// Where a watch starts: events of `revision` onwards, skipping the first
/// `skip` events of that revision (already seen before a reconnect).
#[derive(Debug, Clone, Copy)]
struct Start {
    revision: u64,
    skip: u64,
}

pub async fn watch(
    State(s): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let q = query::parse(raw.as_deref())?;
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    gantry_store::validate_prefix(&prefix).map_err(ApiError::from)?;
    let start = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(id) => parse_event_id(id)?,
        None => Start { revision: query::number(&q, "from")?.unwrap_or(0), skip: 0 },
    };

    let store = s.store.clone();
    let watchers = Arc::clone(&s.metrics);
    let stream: stream::BoxStream<'static, Result<SseEvent, Infallible>> =
        match store.watch(&prefix, start.revision).await {
            Ok(watch) => {
                let guard = WatcherGuard::new(watchers);
                let mut current = (start.revision, 0u64);
                watch
                    .filter_map(move |item| {
                        let _keep = &guard;
                        let out = match item {
                            Ok(event) => {
                                if event.mod_revision == current.0 {
                                    current.1 += 1;
                                } else {
                                    current = (event.mod_revision, 1);
                                }
                                let index = current.1 - 1;
                                if event.mod_revision == start.revision && index < start.skip {
                                    None
                                } else {
                                    Some(to_sse(event, index))
                                }
                            }
                            Err(e) => Some(reset(e)),
                        };
                        std::future::ready(out.map(Ok))
                    })
                    .boxed()
            }
            // A start revision outside the history is told to re-read the
            // same way as a watcher that fell behind later.
            Err(e @ StoreError::Compacted { .. }) => stream::once(std::future::ready(Ok(reset(e)))).boxed(),
            Err(e) => return Err(e.into()),
        };
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn to_sse(event: gantry_store::Event, index: u64) -> SseEvent {
    let (kind, value) = match event.kind {
        EventKind::Put => (WatchKind::Put, Some(String::from_utf8_lossy(&event.value).into_owned())),
        EventKind::Delete => (WatchKind::Delete, None),
    };
    let body = WatchEvent { kind, key: event.key, value, revision: event.mod_revision };
    SseEvent::default()
        .id(format!("{}.{index}", event.mod_revision))
        .data(serde_json::to_string(&body).expect("plain data"))
}

fn reset(e: StoreError) -> SseEvent {
    let oldest_available = match &e {
        StoreError::Compacted { oldest_available, .. } => *oldest_available,
        _ => 0,
    };
    let body = ResetEvent { oldest_available, message: format!("{e}; re-read, then watch from the read's revision + 1") };
    SseEvent::default().event(WATCH_RESET_EVENT).data(serde_json::to_string(&body).expect("plain data"))
}

/// `REVISION.INDEX` of the last event seen: resume after it.
fn parse_event_id(id: &str) -> ApiResult<Start> {
    let bad = || ApiError::bad_request("invalid_event_id", format!("Last-Event-ID {id:?} is not REVISION.INDEX"));
    let (rev, index) = id.split_once('.').ok_or_else(bad)?;
    let revision = rev.parse::<u64>().map_err(|_| bad())?;
    let index = index.parse::<u64>().map_err(|_| bad())?;
    Ok(Start { revision, skip: index + 1 })
}

/// Counts open watch streams for /metrics.
struct WatcherGuard(Arc<Metrics>);

impl WatcherGuard {
    fn new(metrics: Arc<Metrics>) -> WatcherGuard {
        metrics.watchers.fetch_add(1, Ordering::Relaxed);
        WatcherGuard(metrics)
    }
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}
