//! lifecycle-http's integration tests, one binary: a module per topic, each serving through a real
//! `HttpServer` on loopback to real clients (hyper, tonic, raw sockets), under the testing kit.

mod accept;
mod admin;
mod bind;
mod drain;
mod grpc;
mod harness;
mod health;
mod http2;
mod http2_drain;
mod idle_connections;
mod limits;
mod long_lived;
mod services;
mod slow_readers;
mod tls;
mod upgrades;
