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

use axum::body::Body;
use axum::extract::RawQuery;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use gantry_api::{ErrorCode, ResetEvent, WATCH_RESET_EVENT, WatchEvent, WatchKind};
use gantry_store::{Event, EventKind, StoreError};

use crate::error::{ApiError, ApiResult};
use crate::gate::{Gate, Watcher};
use crate::hub::{Follower, Frame, FrameOwner, Item, KEEP_ALIVE, Position};
use crate::openapi::{Errors, WatchStream};
use crate::query;

/// Every change under a key prefix, as Server-Sent Events; resumable.
#[utoipa::path(get, path = "/v1/watch", tag = "watch",
    params(
        ("prefix" = Option<String>, Query, description = "Store keys to follow: `kv/...`, `machines/`, `instances/SERVICE/`, `services/`, `agents/` (default: every key)."),
        ("from" = Option<u64>, Query, description = "Start with the changes at this revision (0 or absent: only changes from now on)."),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (`REVISION.INDEX`, the `id` of the last event seen); wins over `from`."),
    ),
    responses(
        (status = 200, description = "The changes, as Server-Sent Events, until the client hangs up or a `reset` event.",
            content_type = "text/event-stream", body = WatchStream),
        Errors,
    ),
)]
pub async fn watch(gate: Gate, RawQuery(raw): RawQuery, headers: HeaderMap) -> ApiResult<Response> {
    let q = query::parse(raw.as_deref())?;
    let prefix = q.get("prefix").map(String::as_str).unwrap_or("");
    // Resume after the last event seen, or start at `from` (0: from now).
    let start = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(id) => Some(parse_event_id(id)?.next()),
        None => query::number(&q, "from")?.filter(|&from| from > 0).map(|revision| Position { revision, index: 0 }),
    };
    let (followed, watcher) = gate.follow(prefix, start).await?;
    let frames: futures::stream::BoxStream<'static, Bytes> = match followed {
        Ok(follower) => Box::pin(frames(follower, watcher)),
        // A start outside the history is told to re-read the same way as a
        // watcher that falls behind later.
        Err(e @ StoreError::Compacted { .. }) => Box::pin(futures::stream::once(std::future::ready(reset(e)))),
        Err(e) => return Err(e.into()),
    };
    let mut response = Body::from_stream(futures::StreamExt::map(frames, Ok::<_, Infallible>)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// The follower's frames, an SSE comment every [`KEEP_ALIVE`], and a
/// `reset` event before the end.
fn frames(follower: Follower, watcher: Watcher) -> impl futures::Stream<Item = Bytes> + Send {
    // Ticks every KEEP_ALIVE whatever happens: moving a timer at every
    // event would cost more, per watcher, than the comment does.
    let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The watcher (counted until the stream is dropped) goes with it.
    futures::stream::unfold(Some((follower, watcher, keep_alive)), |state| async move {
        let (mut follower, watcher, mut keep_alive) = state?;
        loop {
            let item = tokio::select! {
                item = follower.next() => item,
                _ = keep_alive.tick() => {
                    return Some((Bytes::from_static(b":\n\n"), Some((follower, watcher, keep_alive))));
                }
            };
            match item {
                // An event of a key the caller may not read is not sent
                // (another federation's instance, another node's datastore).
                Item::Frame(frame) if !watcher.visibility.shows(&frame) => continue,
                Item::Frame(frame) => {
                    return Some((frame.bytes.clone(), Some((follower, watcher, keep_alive))));
                }
                Item::End(error) => return Some((reset(error), None)),
            }
        }
    })
}

/// One event as an SSE frame (`id: REVISION.INDEX`, the event as JSON),
/// with whom its document belongs to.
pub(crate) fn encode(event: &Event, position: Position) -> Frame {
    Frame { position, bytes: sse(event, position), key: event.key.as_str().into(), owner: owner_of(event) }
}

/// The owner fields of a machine, service or instance document (a
/// definition without a federation is in `default`).
fn owner_of(event: &Event) -> FrameOwner {
    #[derive(serde::Deserialize)]
    struct Fields {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        machine: Option<String>,
        #[serde(default)]
        federation: Option<String>,
        #[serde(default)]
        address: Option<String>,
    }
    let is_machine = event.key.starts_with(gantry_api::keys::MACHINES);
    let is_service = event.key.starts_with(gantry_api::keys::SERVICES);
    if event.kind == EventKind::Delete
        || !(is_machine || is_service || event.key.starts_with(gantry_api::keys::INSTANCES))
    {
        return FrameOwner::default();
    }
    let Ok(fields) = serde_json::from_slice::<Fields>(&event.value) else { return FrameOwner::default() };
    let federation = match (is_service, fields.federation) {
        (true, None) => Some(gantry_api::DEFAULT_FEDERATION.to_owned()),
        (_, federation) => federation,
    };
    let machine = if is_machine { fields.id } else { fields.machine };
    FrameOwner {
        machine: machine.map(Into::into),
        federation: federation.map(Into::into),
        address: fields.address.map(Into::into),
    }
}

fn sse(event: &Event, position: Position) -> Bytes {
    let (kind, value) = match event.kind {
        EventKind::Put => (WatchKind::Put, Some(String::from_utf8_lossy(&event.value).into_owned())),
        EventKind::Delete => (WatchKind::Delete, None),
    };
    let body = WatchEvent { kind, key: event.key.clone(), value, revision: event.mod_revision };
    let mut frame = format!("id: {}.{}\ndata: ", position.revision, position.index).into_bytes();
    serde_json::to_writer(&mut frame, &body).expect("plain data");
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

/// The `reset` event that ends a watch which cannot go on.
fn reset(e: StoreError) -> Bytes {
    let oldest_available = match &e {
        StoreError::Compacted { oldest_available, .. } => *oldest_available,
        _ => 0,
    };
    let body =
        ResetEvent { oldest_available, message: format!("{e}; re-read, then watch from the read's revision + 1") };
    let data = serde_json::to_string(&body).expect("plain data");
    Bytes::from(format!("event: {WATCH_RESET_EVENT}\ndata: {data}\n\n"))
}

/// `REVISION.INDEX` of the last event seen.
fn parse_event_id(id: &str) -> ApiResult<Position> {
    let bad = || ApiError::new(ErrorCode::InvalidEventId, format!("Last-Event-ID {id:?} is not REVISION.INDEX"));
    let (rev, index) = id.split_once('.').ok_or_else(bad)?;
    let revision = rev.parse::<u64>().map_err(|_| bad())?;
    let index = index.parse::<u64>().map_err(|_| bad())?;
    Ok(Position { revision, index })
}
