//! What a task serving requests holds, while it runs: the server's [`ShutdownSignal`] (what
//! handlers take) and the name of the request it serves now.
//!
//! The name is written in place at each dispatch and read only if the request makes its
//! handler or body wait (`requests.rs` lists it then), so neither a request's future nor its
//! body carries it: moved with them through hyper, it cost every request about 250
//! instructions (BENCHMARKS section 9). A connection's future is wrapped in [`InServing`]:
//! HTTP/1 requests are dispatched and their handlers run in its task, one at a time. So is each
//! HTTP/2 stream's: hyper dispatches a stream's request in the connection's task (which names
//! it there) and hands the stream to the executor right after, which starts the stream's task
//! with that name.
//!
//! A scoped thread-local (`scoped-tls`, rust-lang's), not tokio's `task_local!`: the value
//! stays where it is, pinned in the task's future, and each poll sets one pointer to it; a
//! tokio task-local moves its value in and out of the thread-local at every poll, which cost
//! about 70 instructions per HTTP/1 request, and kept the name behind a box so that the move
//! stayed small (BENCHMARKS section 9).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::Request;

use crate::requests::Summary;
use crate::shutdown_signal::ShutdownSignal;

/// What a connection's or an HTTP/2 stream's task holds while it runs.
#[derive(Debug)]
pub(crate) struct Serving {
    signal: ShutdownSignal,
    request: RefCell<Summary>,
}

scoped_tls::scoped_thread_local!(static SERVING: Serving);

pin_project_lite::pin_project! {
    /// A future (a connection, or an HTTP/2 stream) run with its [`Serving`] as the current one
    /// at each poll.
    pub(crate) struct InServing<F> {
        serving: Serving,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for InServing<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        SERVING.set(this.serving, || this.future.poll(cx))
    }
}

impl Serving {
    /// Runs `future` (a connection, or an HTTP/2 stream serving `request`) with `signal` as
    /// its [`ShutdownSignal::current`].
    pub(crate) fn scope<F: Future>(
        signal: ShutdownSignal,
        request: Summary,
        future: F,
    ) -> InServing<F> {
        InServing {
            serving: Serving {
                signal,
                request: RefCell::new(request),
            },
            future,
        }
    }

    /// Notes `request` as the one the calling task serves now. Outside a server's task (the
    /// service called directly), nothing: the request is then listed without its name.
    pub(crate) fn dispatching<B>(request: &Request<B>) {
        if SERVING.is_set() {
            SERVING.with(|serving| {
                if let Ok(mut current) = serving.request.try_borrow_mut() {
                    current.set(request);
                }
            });
        }
    }

    /// The request the calling task serves now: in an HTTP/2 connection's task, the one it
    /// dispatched last, whose stream hyper hands the executor right after.
    pub(crate) fn request() -> Summary {
        if SERVING.is_set() {
            SERVING.with(|serving| serving.request.borrow().clone())
        } else {
            Summary::default()
        }
    }
}

// Here rather than in `shutdown_signal.rs`, beside the thread-local it reads.
impl ShutdownSignal {
    /// The signal of the server whose connection or HTTP/2 stream the calling task serves:
    /// what a handler that has no extractors (a tonic service) takes. `None` outside a
    /// server's connection, in a task the handler spawned for instance: take the signal in the
    /// handler and move it there.
    pub fn current() -> Option<ShutdownSignal> {
        SERVING
            .is_set()
            .then(|| SERVING.with(|serving| serving.signal.clone()))
    }
}
