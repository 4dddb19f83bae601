//! Accepting: connections arriving as the listener closes are served or refused, never reset;
//! the connection limit leaves the ones beyond it waiting in the backlog.

use crate::harness;

use std::time::Duration;

use harness::start;
use lifecycle_core::exit_code;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one connect came to.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Answered,
    Refused,
    /// Accepted by the kernel, then reset or closed without an answer.
    Dropped(String),
}

async fn one_request(addr: std::net::SocketAddr) -> Fate {
    let mut stream = match TcpStream::connect(addr).await {
        Ok(stream) => stream,
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Fate::Refused
        }
        Err(error) => return Fate::Dropped(format!("connect: {error}")),
    };
    if let Err(error) = stream
        .write_all(b"GET /work HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
    {
        return Fate::Dropped(format!("write: {error}"));
    }
    let mut answer = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await {
        Err(_) => Fate::Dropped("no answer in 5 s".into()),
        Ok(Err(error)) => Fate::Dropped(format!("read: {error}")),
        Ok(Ok(_)) if answer.starts_with(b"HTTP/1.1 200") => Fate::Answered,
        Ok(Ok(_)) => Fate::Dropped(format!("answer: {:?}", String::from_utf8_lossy(&answer))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_racing_the_listeners_close_are_served_or_refused_never_reset() {
    for _ in 0..5 {
        let server = start(Duration::ZERO, Duration::from_secs(5)).await;
        let addr = server.addr;
        // A burst of 200 connects at the moment of the stop turn (drain delay 0).
        server.handle.shutdown("deploy");
        let clients: Vec<_> = (0..200).map(|_| tokio::spawn(one_request(addr))).collect();
        let mut fates = Vec::new();
        for client in clients {
            fates.push(client.await.unwrap());
        }
        let dropped: Vec<_> = fates
            .iter()
            .filter(|f| matches!(f, Fate::Dropped(_)))
            .collect();
        assert!(dropped.is_empty(), "{} dropped: {dropped:?}", dropped.len());
        let report = server.report.await.unwrap();
        assert_eq!(report.exit_code(), exit_code::SUCCESS, "{report}");
    }
}
