//! What a task serving requests holds, as a task-local: the server's [`ShutdownSignal`] (what
//! handlers take) and the name of the request it serves now.
//!
//! The name is written in place at each dispatch and read only if the request makes its
//! handler or body wait (`requests.rs` lists it then), so neither a request's future nor its
//! body carries it: moved with them through hyper, it cost every request about 250
//! instructions (BENCHMARKS section 9). The connection's task is scoped with it (HTTP/1
//! requests are dispatched and their handlers run there, one at a time), and so is each
//! HTTP/2 stream's task, where hyper-util's adapter dispatches the stream's request (it calls
//! the service on the stream future's first poll).

use std::cell::RefCell;
use std::future::Future;

use axum::http::Request;
use tokio::task::futures::TaskLocalFuture;

use crate::requests::Summary;
use crate::shutdown_signal::ShutdownSignal;

/// The task-local value of a connection's or an HTTP/2 stream's task. Two pointers: tokio
/// moves the value in and out of the thread-local at every poll of the task, so the name lives
/// behind a box (one allocation per connection or stream, none per request).
#[derive(Debug)]
pub(crate) struct Serving {
    signal: ShutdownSignal,
    request: Box<RefCell<Summary>>,
}

tokio::task_local! {
    static SERVING: Serving;
}

impl Serving {
    /// Runs `future` (a connection, or an HTTP/2 stream serving `request`) with `signal` as its
    /// [`ShutdownSignal::current`].
    pub(crate) fn scope<F: Future>(
        signal: ShutdownSignal,
        request: Summary,
        future: F,
    ) -> TaskLocalFuture<Serving, F> {
        let serving = Serving {
            signal,
            request: Box::new(RefCell::new(request)),
        };
        SERVING.scope(serving, future)
    }

    /// Notes `request` as the one the calling task serves now. Outside a server's task (the
    /// service called directly), nothing: the request is then listed without its name.
    pub(crate) fn dispatching<B>(request: &Request<B>) {
        let _ = SERVING.try_with(|serving| {
            if let Ok(mut current) = serving.request.try_borrow_mut() {
                current.set(request);
            }
        });
    }

    /// The request the calling task serves now.
    pub(crate) fn request() -> Summary {
        SERVING
            .try_with(|serving| serving.request.borrow().clone())
            .unwrap_or_default()
    }
}

// Here rather than in `shutdown_signal.rs`, beside the task-local it reads.
impl ShutdownSignal {
    /// The signal of the server whose connection or HTTP/2 stream the calling task serves:
    /// what a handler that has no extractors (a tonic service) takes. `None` outside a
    /// server's connection, in a task the handler spawned for instance: take the signal in the
    /// handler and move it there.
    pub fn current() -> Option<ShutdownSignal> {
        SERVING.try_with(|serving| serving.signal.clone()).ok()
    }
}
