//! A service with no graceful shutdown, for the drill's negative control: a plain threaded
//! HTTP/1.1 server (keep-alive, every answer after 50 ms) that SIGTERM kills where it stands,
//! requests in flight and all. `lifecycle-drill` must report its dropped requests.
//!
//! Run: `drill-naive-service 127.0.0.1:8080`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        // Skip the headers; these clients send no body.
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" {
                break;
            }
        }
        if !request_line.contains("/readyz") {
            std::thread::sleep(Duration::from_millis(50));
        }
        writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")?;
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener = TcpListener::bind(addr).expect("the address is free");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || serve(stream));
    }
}
