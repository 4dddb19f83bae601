//! A TCP proxy in front of a server, which a test can black-hole, cut, or make drop its
//! connections, to play a dead host, a server gone away, or a restart.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A TCP proxy on a port of its own in front of `upstream`.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The bytes forwarded so far, both ways.
    pub forwarded: Arc<AtomicU64>,
    black_hole: Arc<AtomicBool>,
    cut: CancellationToken,
    /// Cancelled to close the connections open now; replaced for the next ones.
    connections: Arc<Mutex<CancellationToken>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let black_hole = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let cut = CancellationToken::new();
        let connections = Arc::new(Mutex::new(cut.child_token()));
        let upstream = upstream.to_owned();
        let (bh, fw, conns) = (black_hole.clone(), forwarded.clone(), connections.clone());
        tokio::spawn(cut.clone().run_until_cancelled_owned(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                let token = conns.lock().unwrap().clone();
                for (from, to) in [
                    (
                        Box::new(client_read) as Box<dyn AsyncRead + Send + Unpin>,
                        Box::new(server_write) as Box<dyn AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(server_read), Box::new(client_write)),
                ] {
                    let pipe = pipe(from, to, bh.clone(), fw.clone());
                    tokio::spawn(token.clone().run_until_cancelled_owned(pipe));
                }
            }
        }));
        Proxy {
            addr,
            forwarded,
            black_hole,
            cut,
            connections,
        }
    }

    /// From now on, no byte goes through in either direction; connections stay open, as with
    /// a host that stopped answering.
    pub fn black_hole(&self) {
        self.black_hole.store(true, Ordering::SeqCst);
    }

    /// Closes every connection open now, as a server restart would; new ones go through.
    pub fn drop_connections(&self) {
        let mut connections = self.connections.lock().unwrap();
        connections.cancel();
        *connections = self.cut.child_token();
    }

    /// Closes every connection and the listener: the server is gone.
    pub fn cut(&self) {
        self.cut.cancel();
    }
}

async fn pipe(
    mut from: Box<dyn AsyncRead + Send + Unpin>,
    mut to: Box<dyn AsyncWrite + Send + Unpin>,
    black_hole: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if black_hole.load(Ordering::SeqCst) {
            // Swallow everything from now on, like a host that stopped answering.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        forwarded.fetch_add(n as u64, Ordering::Relaxed);
    }
}
