//! The stream a watch returns, the same type for every engine.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use futures::stream::BoxStream;

use crate::{Event, StoreError};

/// A stream of [`Event`]s under one prefix, in revision order, each exactly
/// once. After an error (such as [`StoreError::Compacted`]) the stream ends.
///
/// Read it with `futures::StreamExt::next` or [`Watch::next_event`].
/// Dropping it cancels the watch.
pub struct Watch {
    inner: BoxStream<'static, Result<Event, StoreError>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl Watch {
    pub(crate) fn new(stream: impl Stream<Item = Result<Event, StoreError>> + Send + 'static) -> Watch {
        Watch { inner: Box::pin(stream) }
    }

    /// The next event; `None` once the stream has ended.
    pub async fn next_event(&mut self) -> Option<Result<Event, StoreError>> {
        futures::StreamExt::next(self).await
    }
}

impl Stream for Watch {
    type Item = Result<Event, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}
