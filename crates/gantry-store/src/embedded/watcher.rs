//! Embedded watches: catch up from the persisted history, then follow the
//! broadcast of committed events; fall back to the history when the
//! broadcast buffer overflows, and report `Compacted` only when the history
//! no longer reaches back far enough.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::sync::broadcast;

use super::Inner;
use crate::{Event, StoreError, Watch};

/// Most revisions read from the history in one go (under the state's read
/// lock)...
const CHUNK_REVISIONS: u64 = 1024;
/// ...and about this many bytes of events, bounding a catch-up's memory.
const CHUNK_BYTES: usize = 8 << 20;

pub(crate) fn watch(inner: &Arc<Inner>, prefix: String, from_revision: u64) -> Watch {
    // Subscribe before reading anything: every commit the history read does
    // not see is then in the broadcast.
    let live = inner.events.subscribe();
    let (next, phase) = if from_revision == 0 {
        (inner.revision.load(Ordering::SeqCst) + 1, Phase::Live)
    } else {
        (from_revision, Phase::CatchUp)
    };
    let state = Follower {
        inner: Arc::downgrade(inner),
        prefix: Arc::from(prefix),
        next,
        live,
        pending: VecDeque::new(),
        phase,
    };
    Watch::new(futures::stream::unfold(state, |mut state| async move {
        let item = state.next_event().await?;
        Some((item, state))
    }))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    CatchUp,
    Live,
    Ended,
}

struct Follower {
    /// Weak, so that a forgotten watch does not keep the file open.
    inner: Weak<Inner>,
    prefix: Arc<str>,
    /// The next revision this watcher has not delivered.
    next: u64,
    live: broadcast::Receiver<Arc<[Event]>>,
    pending: VecDeque<Event>,
    phase: Phase,
}

/// One read of the history.
struct Chunk {
    events: Vec<Event>,
    /// The first revision not read.
    next: u64,
    oldest: u64,
    revision: u64,
}

impl Follower {
    async fn next_event(&mut self) -> Option<Result<Event, StoreError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            let step = match self.phase {
                Phase::Ended => return None,
                Phase::CatchUp => self.catch_up(),
                Phase::Live => self.follow().await,
            };
            if let Err(error) = step {
                self.phase = Phase::Ended;
                return Some(Err(error));
            }
        }
    }

    fn catch_up(&mut self) -> Result<(), StoreError> {
        let inner = self.inner.upgrade().ok_or(StoreError::Closed)?;
        let from = self.next;
        let chunk = read_history(&inner, &self.prefix, from);
        drop(inner);
        if from < chunk.oldest {
            return Err(StoreError::Compacted { requested: from, oldest_available: chunk.oldest });
        }
        self.pending.extend(chunk.events);
        self.next = chunk.next;
        if self.next > chunk.revision {
            self.phase = Phase::Live;
        }
        Ok(())
    }

    async fn follow(&mut self) -> Result<(), StoreError> {
        match self.live.recv().await {
            Ok(events) => {
                for event in events.iter() {
                    if event.mod_revision >= self.next && event.key.starts_with(&*self.prefix) {
                        self.pending.push_back(event.clone());
                    }
                }
                if let Some(last) = events.last() {
                    self.next = self.next.max(last.mod_revision + 1);
                }
                Ok(())
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Too slow for the buffer: start over from the history, after
                // subscribing anew so nothing falls between the two.
                self.live = self.live.resubscribe();
                self.phase = Phase::CatchUp;
                Ok(())
            }
            Err(broadcast::error::RecvError::Closed) => Err(StoreError::Closed),
        }
    }
}

fn read_history(inner: &Inner, prefix: &str, from: u64) -> Chunk {
    let state = inner.state();
    let mut chunk = Chunk { events: Vec::new(), next: from, oldest: state.oldest, revision: state.revision };
    if from < state.oldest || from > state.revision {
        chunk.next = chunk.next.max(state.revision + 1);
        return chunk;
    }
    let end = state.revision.min(from + CHUNK_REVISIONS - 1);
    chunk.next = end + 1;
    let first = state.history.partition_point(|past| past.revision < from);
    let mut bytes = 0;
    for past in state.history.range(first..) {
        if past.revision > end {
            break;
        }
        for event in &past.events {
            if event.key.starts_with(prefix) {
                bytes += event.key.len() + event.value.len();
                chunk.events.push(event.clone());
            }
        }
        if bytes >= CHUNK_BYTES {
            chunk.next = past.revision + 1;
            break;
        }
    }
    chunk
}
