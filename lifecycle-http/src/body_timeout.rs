//! `TimedBody`: a request body that fails when the client stops sending it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use lifecycle_core::BoxError;
use tokio::time::{Instant, Sleep};

/// The error a [`TimedBody`] fails with; axum's body extractors turn it into a rejection,
/// which the drain layer answers as `408 Request Timeout`.
#[derive(Debug)]
pub(crate) struct BodyTimedOut(Duration);

impl fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no request body data for {:?}", self.0)
    }
}

impl std::error::Error for BodyTimedOut {}

pin_project_lite::pin_project! {
    /// A request body that fails with [`BodyTimedOut`] when no data arrives for its timeout
    /// while the handler waits for it.
    ///
    /// The timer is armed only when the body is polled and has nothing, so requests without
    /// a body, or whose body is already there, cost no timer: the hot path stays timer-free,
    /// as for the header read timeout.
    pub(crate) struct TimedBody<B> {
        #[pin]
        inner: B,
        timeout: Option<Duration>,
        sleep: Option<Pin<Box<Sleep>>>,
        armed: bool,
        timed_out: Option<Arc<AtomicBool>>,
    }
}

impl<B: Body> TimedBody<B> {
    /// Wraps `inner`; `None` for no timeout. The flag returned is set if the body times out
    /// (`None` when it cannot: no timeout, or no body).
    pub(crate) fn new(inner: B, timeout: Option<Duration>) -> (Self, Option<Arc<AtomicBool>>) {
        let timeout = timeout.filter(|_| !inner.is_end_stream());
        let timed_out = timeout.map(|_| Arc::new(AtomicBool::new(false)));
        let body = TimedBody {
            inner,
            timeout,
            sleep: None,
            armed: false,
            timed_out: timed_out.clone(),
        };
        (body, timed_out)
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.armed = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let Some(timeout) = *this.timeout else {
            return Poll::Pending;
        };
        if !*this.armed {
            let deadline = Instant::now() + timeout;
            match this.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => *this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            *this.armed = true;
        }
        if let Some(sleep) = this.sleep {
            ready!(sleep.as_mut().poll(cx));
        }
        if let Some(flag) = this.timed_out {
            flag.store(true, Ordering::Release);
        }
        Poll::Ready(Some(Err(Box::new(BodyTimedOut(timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
