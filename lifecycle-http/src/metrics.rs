//! The server's metrics through the `metrics` facade, with handles registered once, when the
//! server starts: a request updates a counter and a gauge it already holds, with no registry
//! lookup. The names and labels are listed in `lifecycle_core`'s "Metrics" table.

use metrics::{Counter, Gauge};

/// How a connection ended, for `http_connections_closed_total{reason}`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Closed {
    /// Closed before the drain began (by the client, or as idle).
    Served,
    /// Closed once the drain had begun: told to go away, or closed idle at the stop turn.
    Drained,
    /// The client vanished (no FIN, no reset): the kernel gave up on it, as the TCP keep-alive
    /// or the user timeout found ([`HttpServer::vanished_peer_timeout`](crate::HttpServer::vanished_peer_timeout)).
    Vanished,
}

/// The metric handles of one server, labelled with its component's name.
#[derive(Debug)]
pub(crate) struct HttpMetrics {
    pub(crate) requests: Counter,
    pub(crate) in_progress: Gauge,
    pub(crate) open: Gauge,
    /// Indexed by `[protocol (0: HTTP/1, 1: HTTP/2)][Closed as usize]`.
    closed: [[Counter; 3]; 2],
    pub(crate) force_closed: Counter,
    pub(crate) limit_reached: Counter,
}

impl HttpMetrics {
    /// Registers the server's metrics with the installed recorder (or none: then every handle
    /// is a no-op) and sets the gauges to the counts already open.
    pub(crate) fn register(server: &str, open: usize, in_progress: usize) -> Self {
        let server = server.to_owned();
        let closed = |protocol: &'static str, reason: &'static str| {
            metrics::counter!(
                "http_connections_closed_total",
                "server" => server.clone(),
                "protocol" => protocol,
                "reason" => reason
            )
        };
        let metrics = HttpMetrics {
            requests: metrics::counter!("http_requests_total", "server" => server.clone()),
            in_progress: metrics::gauge!("http_requests_in_progress", "server" => server.clone()),
            open: metrics::gauge!("http_connections_open", "server" => server.clone()),
            closed: [
                [
                    closed("http1", "served"),
                    closed("http1", "drain"),
                    closed("http1", "vanished"),
                ],
                [
                    closed("http2", "served"),
                    closed("http2", "drain"),
                    closed("http2", "vanished"),
                ],
            ],
            force_closed: metrics::counter!(
                "http_connections_force_closed_total",
                "server" => server.clone()
            ),
            limit_reached: metrics::counter!(
                "http_connection_limit_reached_total",
                "server" => server.clone()
            ),
        };
        metrics.open.set(open as f64);
        metrics.in_progress.set(in_progress as f64);
        metrics
    }

    /// A connection closed gracefully.
    pub(crate) fn closed(&self, http2: bool, how: Closed) {
        self.closed[usize::from(http2)][how as usize].increment(1);
    }
}
